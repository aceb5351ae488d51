//! Unix signals as [`Control`] messages: `SIGHUP` reloads, `SIGTERM`/`SIGINT` shut down
//! (a second one skips the drain).

use futures_util::StreamExt as _;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::sync::mpsc;

use crate::app::Control;

/// Installs the handlers and forwards signals to `control` until it closes.
pub fn forward(control: mpsc::Sender<Control>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    Ok(tokio::spawn(async move {
        while let Some(signal) = signals.next().await {
            let message = match signal {
                SIGHUP => Control::Reload,
                _ => Control::Shutdown,
            };
            tracing::info!(signal, ?message, "signal received");
            if control.send(message).await.is_err() {
                break;
            }
        }
    }))
}

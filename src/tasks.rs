//! Background tasks. Each owns a shutdown receiver and says when it stops.

use std::time::Duration;

use tokio::sync::watch;

use crate::store::Store;

/// How often expired revocations, sessions and refresh tokens are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Purges expired entries every [`PURGE_INTERVAL`] until `stop` turns true.
pub async fn purge(store: Store, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(PURGE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            _ = interval.tick() => {}
        }
        let store = store.clone();
        let now = crate::app::unix_now();
        match tokio::task::spawn_blocking(move || store.purge_expired(now)).await {
            Ok(Ok(counts)) if counts != Default::default() => {
                tracing::info!(?counts, "purged expired entries")
            }
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::error!(error = %err, "purge failed"),
            Err(err) => tracing::error!(error = %err, "purge task panicked"),
        }
    }
    tracing::debug!("purge task stopped");
}

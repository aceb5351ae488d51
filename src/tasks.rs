//! Background tasks. Each owns a shutdown receiver and says when it stops.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::state::AppState;

/// How often expired revocations, sessions and refresh tokens are purged: a quarter of the
/// shortest lifetime an entry can have, between 1 s and 60 s, so short test TTLs purge
/// quickly and production TTLs cost one scan a minute.
pub fn purge_interval(config: &Config) -> Duration {
    let shortest = (config.jwt.access_ttl + config.jwt.leeway).min(config.jwt.refresh_ttl);
    (shortest / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Purges expired entries on [`purge_interval`] until `stop` turns true.
pub async fn purge(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    loop {
        let interval = purge_interval(&state.settings().config);
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            _ = tokio::time::sleep(interval) => {}
        }
        let now = state.clock().now();
        match state.authority.purge_expired(now).await {
            Ok(counts) if counts != Default::default() => {
                tracing::info!(?counts, "purged expired entries")
            }
            Ok(_) => {}
            Err(err) => tracing::error!(error = %err, "purge failed"),
        }
    }
    tracing::debug!("purge task stopped");
}

/// Tells systemd the daemon is alive every `interval`, but only while the public listener
/// really answers its own health check: a wedged daemon stops pinging and gets restarted.
pub async fn watchdog(
    public: std::net::SocketAddr,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            _ = ticks.tick() => {}
        }
        match tokio::time::timeout(interval, health_check(public)).await {
            Ok(Ok(())) => crate::notify::notify("WATCHDOG=1"),
            Ok(Err(err)) => tracing::warn!(error = %err, "own health check failed"),
            Err(_) => tracing::warn!("own health check timed out"),
        }
    }
    tracing::debug!("watchdog task stopped");
}

async fn health_check(public: std::net::SocketAddr) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(public).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: authd\r\nConnection: close\r\n\r\n")
        .await?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await?;
    if head.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other("health check did not answer 200"))
    }
}

/// Runs the metrics recorder's upkeep until `stop` turns true.
pub async fn metrics_upkeep(mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            _ = tokio::time::sleep(crate::metrics::UPKEEP_INTERVAL) => crate::metrics::upkeep(),
        }
    }
}

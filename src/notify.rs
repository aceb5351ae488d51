//! systemd's notification protocol (`sd_notify`): `READY=1`, `RELOADING=1`, `STOPPING=1`,
//! `STATUS=…` and `WATCHDOG=1` datagrams to `$NOTIFY_SOCKET`. Without that variable every
//! call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` (newline-separated `KEY=value` lines) to systemd, if it listens.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(err) = send(&path, state) {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    match bytes.strip_prefix(b"@") {
        // A Linux abstract socket: the name follows a leading NUL instead of '@'.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(state.as_bytes(), path)?;
        }
    }
    Ok(())
}

/// `RELOADING=1` with the `MONOTONIC_USEC` systemd asks for since v253.
pub fn reloading() {
    let mut now = libc_free_monotonic_usec();
    if now == 0 {
        now = 1;
    }
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={now}"));
}

/// CLOCK_MONOTONIC in microseconds, read without `unsafe` through /proc/uptime's clock
/// (the same clock, lower resolution: 10 ms, enough for systemd's ordering check).
fn libc_free_monotonic_usec() -> u128 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .and_then(|secs| secs.parse::<f64>().ok())
        .map_or(0, |secs| Duration::from_secs_f64(secs).as_micros())
}

/// Half of `$WATCHDOG_USEC`, when systemd asks for keep-alives.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

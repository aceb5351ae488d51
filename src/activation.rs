//! systemd socket activation: listeners passed in as `LISTEN_FDS`, picked by their
//! `FileDescriptorName=` (`public`, `admin`). Read once, before any thread starts, because
//! taking them clears the variables from the environment.

use std::net::TcpListener;

/// Listeners handed over by systemd, if any.
#[derive(Debug, Default)]
pub struct InheritedListeners {
    pub public: Option<TcpListener>,
    pub admin: Option<TcpListener>,
}

/// Takes the passed listeners named `public` and `admin`. Without names (a single
/// unnamed socket), the first is the public listener and the second the admin listener.
pub fn inherited_listeners() -> std::io::Result<InheritedListeners> {
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|names| names.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut fds = listenfd::ListenFd::from_env();
    let mut inherited = InheritedListeners::default();
    for index in 0..fds.len() {
        let role = match names.get(index).map(String::as_str) {
            Some("public") => Some(true),
            Some("admin") => Some(false),
            Some(_) => None,
            None => Some(index == 0),
        };
        let Some(is_public) = role else {
            continue;
        };
        if let Some(listener) = fds.take_tcp_listener(index)? {
            listener.set_nonblocking(true)?;
            if is_public {
                inherited.public = Some(listener);
            } else {
                inherited.admin = Some(listener);
            }
        }
    }
    Ok(inherited)
}

//! The shared state of a running daemon — the domain service, the current settings
//! snapshot, the clock, the draining flag and the feed's clients — made from ready parts, so that handlers and
//! tasks can be built (and tested) without binding sockets or opening files.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::auth::{Authority, Settings};
use crate::clock::Clock;

/// What every request and background task of a daemon shares.
#[derive(Debug)]
pub struct AppState {
    pub authority: Authority,
    /// Where the admin listener really listens (a passed socket may differ from the
    /// configuration): decides whether `/metrics` needs a credential.
    pub admin_addr: SocketAddr,
    /// Who this instance is (`GET /admin/v1/cluster`); set once at start.
    pub instance: std::sync::OnceLock<crate::cluster::Instance>,
    /// The revocation feed's clients, counted against `feed.max_clients`.
    pub feed_clients: crate::feed::Clients,
    settings: ArcSwap<Settings>,
    /// Set once the daemon is shutting down; streams end when it is.
    draining: watch::Sender<bool>,
    clock: Clock,
}

impl AppState {
    /// The state of a daemon serving `settings` through `authority`, not draining.
    pub fn new(
        authority: Authority,
        settings: Settings,
        admin_addr: SocketAddr,
        clock: Clock,
    ) -> AppState {
        AppState {
            authority,
            admin_addr,
            instance: std::sync::OnceLock::new(),
            feed_clients: crate::feed::Clients::default(),
            settings: ArcSwap::from_pointee(settings),
            draining: watch::Sender::new(false),
            clock,
        }
    }

    /// The current settings snapshot; a request takes it once and keeps it.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// Replaces the settings snapshot (a reload); requests already running keep theirs.
    pub fn swap_settings(&self, settings: Settings) {
        self.settings.store(Arc::new(settings));
    }

    /// Whether the daemon is shutting down (`/readyz` answers `503`).
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Marks the daemon as shutting down; there is no way back.
    pub fn set_draining(&self) {
        self.draining.send_replace(true);
    }

    /// Resolves once the daemon is shutting down.
    pub fn drained(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut draining = self.draining.subscribe();
        async move {
            let _ = draining.wait_for(|draining| *draining).await;
        }
    }

    /// The daemon's clock: the only source of "now" for requests and tasks.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
}

//! Handler tests without sockets: an [`AppState`] made from ready parts in a temporary
//! folder (the shipped `config.toml`, fast hashing, a fresh key, admin token and store),
//! on a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use crate::auth::Authority;
use crate::auth::password::Hasher;
use crate::clock::Clock;
use crate::state::AppState;

pub use crate::testing::START;

/// A daemon's state and the folder its files live in (removed on drop).
pub struct TestState {
    pub state: Arc<AppState>,
    pub clock: Clock,
    _dir: tempfile::TempDir,
}

/// The state of a daemon on the shipped configuration, with `overrides` as `AUTHD__…`
/// variables (e.g. `("AUTHD__COOKIE__ENABLED", "true")`).
pub async fn test_state(overrides: &[(&str, &str)]) -> TestState {
    let parts = crate::testing::parts(overrides).await;
    let state = AppState::new(
        Authority::new(
            parts.store,
            Hasher::new(1),
            parts.clock.clone(),
            parts.mfa_key,
        ),
        parts.settings,
        "127.0.0.1:8081".parse().unwrap(),
        parts.clock.clone(),
    );
    TestState {
        state: Arc::new(state),
        clock: parts.clock,
        _dir: parts.dir,
    }
}

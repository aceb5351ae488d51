//! Handler tests without sockets: an [`AppState`] made from ready parts in a temporary
//! folder (the shipped `config.toml`, fast hashing, a fresh key, admin token and store),
//! on a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::auth::admin_token::AdminToken;
use crate::auth::password::Hasher;
use crate::auth::{Authority, Settings, create_private_dir, keys};
use crate::clock::Clock;
use crate::config::Config;
use crate::state::AppState;
use crate::store::Store;

/// When a test daemon's clock starts: 2027-01-15T08:00:00Z.
pub const START: i64 = 1_800_000_000;

/// A daemon's state and the folder its files live in (removed on drop).
pub struct TestState {
    pub state: Arc<AppState>,
    pub clock: Clock,
    _dir: tempfile::TempDir,
}

/// The state of a daemon on the shipped configuration, with `overrides` as `AUTHD__…`
/// variables (e.g. `("AUTHD__COOKIE__ENABLED", "true")`).
pub fn test_state(overrides: &[(&str, &str)]) -> TestState {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let mut env: HashMap<String, String> = [
        ("AUTHD__STORAGE__PATH", path("data")),
        ("AUTHD__JWT__KEYS_DIR", path("keys")),
        ("AUTHD__ADMIN__TOKEN_FILE", path("admin.token")),
        ("AUTHD__PASSWORD__ARGON2_MEMORY_KIB", "64".to_owned()),
        ("AUTHD__PASSWORD__ARGON2_ITERATIONS", "1".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect();
    for (key, value) in overrides {
        env.insert((*key).to_owned(), (*value).to_owned());
    }
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let config = Config::load_with_env(&shipped, env).expect("the shipped config.toml loads");
    let clock = Clock::manual(START);
    create_private_dir(&config.storage.path).unwrap();
    keys::ensure_key(
        &config.jwt.keys_dir,
        config.jwt.algorithm,
        clock.system_time(),
    )
    .unwrap();
    AdminToken::create_if_missing(&config.admin.token_file).unwrap();
    let store = Store::open(&config.storage.path).unwrap();
    let settings = Settings::load(config).unwrap();
    let state = AppState::new(
        Authority::new(store, Hasher::new(1)),
        settings,
        "127.0.0.1:8081".parse().unwrap(),
        clock.clone(),
    );
    TestState {
        state: Arc::new(state),
        clock,
        _dir: dir,
    }
}

//! Test parts without sockets, shared by the domain's and the handlers' unit tests: the
//! shipped `config.toml` (cheap argon2, files in a temporary folder, `AUTHD__…` overrides),
//! a fresh key and admin token, an open store and a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;

use crate::auth::Settings;
use crate::auth::mfa::MfaKey;
use crate::clock::Clock;
use crate::config::Config;
use crate::store::{Store, UnixSeconds};

/// When a test's clock starts: 2027-01-15T08:00:00Z.
pub const START: UnixSeconds = 1_800_000_000;

/// The password test users get.
pub const PASSWORD: &str = "correct horse battery";

/// Everything a test daemon is made of; its files live as long as `dir`.
pub struct Parts {
    pub settings: Settings,
    pub store: Store,
    pub mfa_key: MfaKey,
    pub clock: Clock,
    pub dir: tempfile::TempDir,
}

/// The parts of a daemon on the shipped configuration with `overrides` as `AUTHD__…`
/// variables (e.g. `("AUTHD__COOKIE__ENABLED", "true")`), its clock at [`START`].
pub async fn parts(overrides: &[(&str, &str)]) -> Parts {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let mut env: HashMap<String, String> = [
        ("AUTHD__STORAGE__PATH", path("data")),
        ("AUTHD__JWT__KEYS_DIR", path("keys")),
        ("AUTHD__ADMIN__TOKEN_FILE", path("admin.token")),
        ("AUTHD__FEED__TOKEN_FILE", path("feed.token")),
        ("AUTHD__MFA__KEY_FILE", path("mfa.key")),
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
    crate::app::prepare_files(&config, &clock).unwrap();
    let store = Store::open_sled(&config.storage.path).await.unwrap();
    let mfa_key = MfaKey::read(&config.mfa.key_file).unwrap();
    let settings = Settings::load(config).unwrap();
    Parts {
        settings,
        store,
        mfa_key,
        clock,
        dir,
    }
}

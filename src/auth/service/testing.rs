//! A domain under test: an [`Authority`] on a sled store in a temporary folder, with the
//! shipped configuration (cheap argon2) and a fixed clock — no HTTP, no sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::{Authority, TokenPair};
use crate::auth::Settings;
use crate::auth::password::{Hasher, Password};
use crate::config::Config;
use crate::store::{Store, UnixSeconds};

/// The time every domain test starts at.
pub(crate) const NOW: UnixSeconds = 1_800_000_000;

pub(crate) const PASSWORD: &str = "correct horse battery";

pub(crate) struct Domain {
    pub authority: Authority,
    pub settings: Settings,
    _dir: tempfile::TempDir,
}

/// The shipped `config.toml` with cheap argon2 and the given `[section] key = value`
/// overrides, as the file `dir/config.toml`.
fn write_config(dir: &Path, overrides: &[(&str, &str)]) -> std::path::PathBuf {
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml")).unwrap();
    let all = [("argon2_memory_kib", "64"), ("argon2_iterations", "1")];
    let text = all
        .iter()
        .chain(overrides)
        .fold(shipped, |text, (key, value)| {
            let prefix = format!("{key} = ");
            text.lines()
                .map(|line| {
                    if line.starts_with(&prefix) {
                        format!("{prefix}{value}")
                    } else {
                        line.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
    let file = dir.join("config.toml");
    std::fs::write(&file, text).unwrap();
    file
}

impl Domain {
    pub(crate) async fn new() -> Domain {
        Domain::with(&[]).await
    }

    /// A domain whose configuration differs from the shipped one by `overrides`.
    pub(crate) async fn with(overrides: &[(&str, &str)]) -> Domain {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load(&write_config(dir.path(), overrides)).unwrap();
        crate::files::create_private_dir(&config.storage.path).unwrap();
        crate::auth::keys::ensure_key(
            &config.jwt.keys_dir,
            config.jwt.algorithm,
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(NOW as u64),
        )
        .unwrap();
        crate::auth::admin_token::AdminToken::create_if_missing(&config.admin.token_file).unwrap();
        let store = Store::open_sled(&config.storage.path).await.unwrap();
        let settings = Settings::load(config).unwrap();
        Domain {
            authority: Authority::new(store, Hasher::new(1)),
            settings,
            _dir: dir,
        }
    }

    pub(crate) async fn create_user(&self, username: &str, roles: &[&str]) {
        self.authority
            .create_user(
                &self.settings,
                username,
                &Password::new(PASSWORD.into()),
                roles.iter().map(|r| (*r).to_owned()).collect(),
                NOW,
            )
            .await
            .unwrap();
    }

    pub(crate) async fn login_at(&self, username: &str, now: UnixSeconds) -> TokenPair {
        self.authority
            .login(
                &self.settings,
                username,
                &Password::new(PASSWORD.into()),
                None,
                now,
            )
            .await
            .unwrap()
    }

    pub(crate) async fn login(&self, username: &str) -> TokenPair {
        self.login_at(username, NOW).await
    }
}

//! A domain under test: an [`Authority`] on a sled store in a temporary folder, with the
//! shipped configuration (cheap argon2) and a fixed clock — no HTTP, no sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::{Authority, TokenPair};
use crate::auth::Settings;
use crate::auth::password::{Hasher, Password};
use crate::store::UnixSeconds;

pub(crate) use crate::testing::PASSWORD;

/// The time every domain test starts at.
pub(crate) const NOW: UnixSeconds = crate::testing::START;

pub(crate) struct Domain {
    pub authority: Authority,
    pub settings: Arc<Settings>,
    _dir: tempfile::TempDir,
}

impl Domain {
    pub(crate) async fn new() -> Domain {
        Domain::with(&[]).await
    }

    /// A domain whose configuration differs from the shipped one by `overrides`
    /// (`AUTHD__SECTION__KEY`, value).
    pub(crate) async fn with(overrides: &[(&str, &str)]) -> Domain {
        let parts = crate::testing::parts(overrides).await;
        Domain {
            authority: Authority::new(parts.store, Hasher::new(1), parts.clock, parts.mfa_key),
            settings: Arc::new(parts.settings),
            _dir: parts.dir,
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
                super::Channel::Api,
                now,
            )
            .await
            .unwrap()
    }

    pub(crate) async fn login(&self, username: &str) -> TokenPair {
        self.login_at(username, NOW).await
    }

    /// Applies an admin's `changes` to `username`.
    pub(crate) async fn update(&self, username: &str, changes: super::UserChanges) {
        self.authority
            .update_user(&self.settings, username, changes, NOW)
            .await
            .unwrap();
    }

    /// Disables `username` (a revoke-all).
    pub(crate) async fn disable(&self, username: &str) {
        let changes = super::UserChanges {
            disabled: Some(true),
            ..Default::default()
        };
        self.update(username, changes).await;
    }

    /// Revokes `target` at `now`.
    pub(crate) async fn revoke(
        &self,
        target: super::RevocationTarget,
        now: UnixSeconds,
    ) -> crate::store::RevocationRecord {
        self.authority
            .revoke(&self.settings, target, None, now)
            .await
            .unwrap()
    }
}

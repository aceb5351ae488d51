//! The caller's own sessions: logout (one or all), listing, ending one, and changing the
//! password (which ends every other session).

use std::net::IpAddr;

use super::{
    ATTEMPTS, AuthError, Authority, Principal, TokenRejection, user_not_found, user_revocation,
};
use crate::auth::Settings;
use crate::auth::names::Username;
use crate::auth::password::{Password, Verification};
use crate::auth::throttle::{Attempt, Outcome};
use crate::store::{Key, RevocationRecord, SessionRecord, StoreError, Txn, UnixSeconds};

impl Authority {
    /// Ends the caller's session, or with `all` every session of the account.
    pub async fn logout(
        &self,
        settings: &Settings,
        principal: &Principal,
        all: bool,
        now: UnixSeconds,
    ) -> Result<RevocationRecord, AuthError> {
        if all {
            let revocation =
                user_revocation(settings, principal.username(), "logout (all sessions)", now);
            self.revoke_all(principal.username(), &revocation, |_| {})
                .await?
                .map(|(_, entry)| entry)
                .ok_or(AuthError::InvalidToken(TokenRejection::UserGone))
        } else {
            self.revoke_session(settings, &principal.claims.sid, Some("logout".into()), now)
                .await
        }
    }

    /// The live sessions of `username`: not expired, not revoked, of the current account,
    /// oldest first.
    pub fn sessions(
        &self,
        username: &str,
        now: UnixSeconds,
    ) -> Result<Vec<SessionRecord>, AuthError> {
        self.check_current()?;
        let name = Username::parse(username).ok_or_else(|| user_not_found(username))?;
        let user = self
            .store
            .user(name.as_str())
            .ok_or_else(|| user_not_found(username))?;
        let mut sessions: Vec<SessionRecord> = self
            .store
            .sessions_of(name.as_str())
            .into_iter()
            .map(|s| (*s.record).clone())
            .filter(|s| {
                s.account_id == user.record.account_id
                    && s.generation == user.record.generation
                    && s.expires_at > now
            })
            .collect();
        sessions.sort_by(|a, b| (a.created_at, &a.sid).cmp(&(b.created_at, &b.sid)));
        Ok(sessions)
    }

    /// Ends one of the caller's own sessions; another user's (or an unknown) sid is
    /// `NotFound`, so sids of others cannot be probed.
    pub async fn end_own_session(
        &self,
        settings: &Settings,
        principal: &Principal,
        sid: &str,
        now: UnixSeconds,
    ) -> Result<(), AuthError> {
        let owned = self
            .sessions(principal.username(), now)?
            .iter()
            .any(|s| s.sid == sid);
        if !owned {
            return Err(AuthError::NotFound("no such session".into()));
        }
        self.revoke_session(settings, sid, Some("session ended by its user".into()), now)
            .await?;
        Ok(())
    }

    /// Changes the caller's password after checking the current one; every other session
    /// of the user ends, in the same commit (each listed one with a sid entry; one that a
    /// racing login committed meanwhile by the account's new generation). A wrong current
    /// password changes nothing and counts as a failed login of the user from `client`
    /// (API.md "Login throttling"); while that pair, the username or the address is
    /// throttled, nothing is hashed or changed.
    pub async fn change_password(
        &self,
        settings: &Settings,
        principal: &Principal,
        current: &Password,
        new: &Password,
        client: Option<IpAddr>,
        now: UnixSeconds,
    ) -> Result<(), AuthError> {
        let limits = &settings.config.login;
        let attempt = Attempt::new(principal.username(), client);
        // A stolen access token must not become an unthrottled password oracle; checked
        // first, so a throttled guess costs no hashing. Monotonic clock as in `login`.
        self.throttle
            .check(limits, &attempt, self.clock.instant())?;
        super::users::check_password(settings, new)?;
        let user = self
            .store
            .user(principal.username())
            .ok_or(AuthError::InvalidToken(TokenRejection::UserGone))?;
        let verification = self
            .hasher
            .verify(&settings.cost, current, &user.record.password_hash)
            .await?;
        let outcome = match verification {
            Verification::Match { .. } => Outcome::Success,
            Verification::Mismatch => Outcome::Failure,
        };
        // Checks the limits again, as a login does: concurrent guesses reveal no more.
        self.throttle
            .record(limits, &attempt, outcome, self.clock.instant())?;
        self.share_outcome(settings, &attempt, outcome, now).await?;
        if outcome == Outcome::Failure {
            return Err(AuthError::WrongCurrentPassword);
        }
        let new_hash = self.hasher.hash(&settings.cost, new).await?;
        let checked = user;
        for _ in 0..ATTEMPTS {
            // Only the account whose password was checked: a concurrent delete (and
            // re-create) or another password change wins.
            let user = match self.store.user(principal.username()) {
                Some(user)
                    if user.record.account_id == checked.record.account_id
                        && user.record.password_hash == checked.record.password_hash =>
                {
                    user
                }
                _ => return Err(AuthError::InvalidToken(TokenRejection::UserGone)),
            };
            // The generation moves on, so a session begun under the old password ends even
            // if it was committed after the sessions below were listed; the caller's own
            // session moves to the new generation in the same commit and lives on.
            let mut updated = (*user.record).clone();
            updated.password_hash = new_hash.clone();
            updated.generation += 1;
            let own = self
                .store
                .session(&principal.claims.sid)
                .filter(|s| {
                    s.record.account_id == user.record.account_id
                        && s.record.generation == user.record.generation
                })
                .ok_or(AuthError::InvalidToken(TokenRejection::Revoked))?;
            let mut moved = (*own.record).clone();
            moved.generation = updated.generation;
            let mut txn = Txn::default();
            txn.expect_user(principal.username(), Some(&user))
                .expect(Key::Session(moved.sid.clone()), Some(own.version))
                .put_user(updated)
                .put_session(moved);
            for session in self.sessions(principal.username(), now)? {
                if session.sid == principal.claims.sid {
                    continue;
                }
                let key = Key::Session(session.sid.clone());
                let revocation =
                    self.session_revocation(settings, &session.sid, "password changed", now);
                let stored = self.store.session(&session.sid).map(|s| s.version);
                txn.expect(key.clone(), stored).delete(key);
                // The first entry of a sid revoked before stays.
                if self
                    .store
                    .revocation(revocation.kind, &revocation.id)
                    .await?
                    .is_none()
                {
                    txn.expect(
                        Key::Revocation(revocation.kind, revocation.id.clone()),
                        None,
                    )
                    .revoke(&revocation);
                }
            }
            match self.store.commit(txn).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testing::{Domain, NOW, PASSWORD};
    use super::*;

    #[tokio::test]
    async fn a_password_change_ends_every_other_session_even_one_committed_after_the_listing() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let mine = domain.login("alice").await;
        let other = domain.login("alice").await;
        let principal = domain
            .authority
            .authenticate(&domain.settings, &mine.access_token, NOW)
            .unwrap();
        let before = domain.authority.store.user("alice").unwrap();
        domain
            .authority
            .change_password(
                &domain.settings,
                &principal,
                &Password::new(PASSWORD.into()),
                &Password::new("a brand new password".into()),
                None,
                NOW,
            )
            .await
            .unwrap();
        // What a login that checked the old password leaves when its commit lands between
        // the change's listing of sessions and the change's commit: a session of the old
        // generation that no sid entry names. It must be dead all the same.
        let racing_sid = "racing-session".to_owned();
        let mut txn = Txn::default();
        txn.put_session(SessionRecord {
            sid: racing_sid.clone(),
            username: "alice".into(),
            account_id: before.record.account_id,
            generation: before.record.generation,
            created_at: NOW,
            last_refreshed_at: NOW,
            expires_at: NOW + 3600,
            access_expires_at: NOW + 900,
            with_otp: false,
        });
        domain.authority.store.commit(txn).await.unwrap();
        let racing = domain
            .settings
            .tokens
            .issue(
                &domain.settings.keys,
                "alice",
                &racing_sid,
                &[],
                crate::auth::token::Amr::Password,
                NOW,
            )
            .unwrap();
        for dead in [&other.access_token, &racing.token] {
            assert!(
                domain
                    .authority
                    .authenticate(&domain.settings, dead, NOW)
                    .is_err()
            );
        }
        domain
            .authority
            .authenticate(&domain.settings, &mine.access_token, NOW)
            .unwrap();
        let left: Vec<_> = domain
            .authority
            .sessions("alice", NOW)
            .unwrap()
            .into_iter()
            .map(|s| s.sid)
            .collect();
        assert_eq!(left, vec![mine.sid.clone()]);
        let (entries, _) = domain.authority.list_revocations(None, 10).await.unwrap();
        assert!(
            entries.iter().any(|e| e.id == other.sid),
            "the listed session's sid entry"
        );
    }

    const NEW_PASSWORD: &str = "a brand new passphrase";

    fn password(text: &str) -> Password {
        Password::new(text.into())
    }

    fn stored_hash(domain: &Domain) -> String {
        domain
            .authority
            .store
            .user("alice")
            .unwrap()
            .record
            .password_hash
            .clone()
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[tokio::test]
    async fn guessing_the_current_password_is_throttled_per_pair_and_changes_nothing() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let pair = domain.login("alice").await;
        let thief = domain
            .authority
            .authenticate(&domain.settings, &pair.access_token, NOW)
            .unwrap();
        let hash_before = stored_hash(&domain);
        let change = |current: &'static str, client: &'static str| {
            let (domain, thief) = (&domain, &thief);
            async move {
                domain
                    .authority
                    .change_password(
                        &domain.settings,
                        thief,
                        &password(current),
                        &password(NEW_PASSWORD),
                        ip(client),
                        NOW,
                    )
                    .await
            }
        };

        let max_failures = domain.settings.config.login.max_failures;
        for guess in 0..max_failures {
            let result = change("a wrong guess", "198.51.100.66").await;
            assert!(
                matches!(result, Err(AuthError::WrongCurrentPassword)),
                "{guess}: {result:?}"
            );
        }
        for current in ["another guess", PASSWORD] {
            let result = change(current, "198.51.100.66").await;
            assert!(
                matches!(result, Err(AuthError::TooManyRequests { .. })),
                "{result:?}"
            );
        }
        let hash_after = stored_hash(&domain);
        assert_eq!(hash_before, hash_after, "nothing changed");
        // The guesses counted as failed logins of that pair: logging in from there is refused too.
        let login = domain
            .authority
            .login(
                &domain.settings,
                "alice",
                &password(PASSWORD),
                ip("198.51.100.66"),
                crate::auth::service::Channel::Api,
                NOW,
            )
            .await;
        assert!(
            matches!(login, Err(AuthError::TooManyRequests { .. })),
            "{login:?}"
        );

        // Only that pair: from elsewhere the right current password still works.
        change(PASSWORD, "192.0.2.1").await.unwrap();
        let hash_changed = stored_hash(&domain);
        assert_ne!(hash_before, hash_changed);
    }
}

//! Logging in: throttle, argon2 check (unknown users cost the same as wrong passwords),
//! re-hash under new parameters, and the new session — created only if the account is
//! still exactly as checked.

use std::net::IpAddr;

use super::{ATTEMPTS, AuthError, Authority, Channel, RefreshToken, TokenPair, refresh_ttl};
use crate::auth::Settings;
use crate::auth::mfa::Code;
use crate::auth::names::Username;
use crate::auth::password::{Password, Verification};
use crate::auth::throttle::{Attempt, Outcome};
use crate::store::{
    Key, RefreshRecord, SessionRecord, Shared, StoreError, Txn, UnixSeconds, UserRecord,
};

impl Authority {
    /// Checks the credentials and starts a session. Unknown users and malformed names
    /// cost one argon2 verification, like a wrong password. Attempts are throttled per
    /// (username, `client` address) pair, per username and per address (API.md "Login
    /// throttling"): a throttled attempt is refused before any hashing, only wrong
    /// credentials are counted, and a success resets its own pair only.
    pub async fn login(
        &self,
        settings: &Settings,
        username: &str,
        password: &Password,
        client: Option<IpAddr>,
        channel: Channel,
        now: UnixSeconds,
    ) -> Result<TokenPair, AuthError> {
        self.login_with_code(settings, username, password, None, client, channel, now)
            .await
    }

    /// [`Authority::login`] with the second factor (API.md "Second factor"): for an
    /// account with TOTP on, a right password without `code` answers
    /// [`AuthError::MfaRequired`] (counted neither way) with a token for the second step; a
    /// wrong `code` is a failed login. A `code` for an account without TOTP is ignored, and
    /// a wrong password is refused exactly as for any account.
    #[allow(clippy::too_many_arguments)]
    pub async fn login_with_code(
        &self,
        settings: &Settings,
        username: &str,
        password: &Password,
        code: Option<&str>,
        client: Option<IpAddr>,
        channel: Channel,
        now: UnixSeconds,
    ) -> Result<TokenPair, AuthError> {
        self.check_current()?;
        let limits = &settings.config.login;
        let attempt = Attempt::new(username, client);
        // The throttle measures its window on the monotonic clock: `now` has whole
        // seconds only and follows wall-clock jumps.
        self.throttle
            .check(limits, &attempt, self.clock.instant())?;
        let checked = self.check_credentials(settings, username, password).await;
        let step = match &checked {
            Ok((user, _)) if user.record.has_totp() => Some(match code {
                None => SecondStep::Missing,
                Some(code) => match Code::parse(code) {
                    Some(code) if self.take_code(&user.record, &code, now).is_ok() => {
                        SecondStep::Given(code)
                    }
                    _ => SecondStep::Wrong,
                },
            }),
            _ => None,
        };
        let outcome = match (&checked, &step) {
            (Ok(_), Some(SecondStep::Missing)) => Some(Outcome::NotCounted),
            (Ok(_), Some(SecondStep::Wrong)) => Some(Outcome::Failure),
            (Ok(_), _) => Some(Outcome::Success),
            (Err(AuthError::InvalidCredentials), _) => Some(Outcome::Failure),
            (Err(AuthError::AccountDisabled), _) => Some(Outcome::NotCounted),
            // An internal error says nothing about the password: nothing to count.
            (Err(_), _) => None,
        };
        if let Some(outcome) = outcome {
            // Checks the limits again: concurrent attempts may have reached one meanwhile.
            self.throttle
                .record(limits, &attempt, outcome, self.clock.instant())?;
            self.share_outcome(settings, &attempt, outcome, now).await?;
        }
        let (user, needs_rehash) = checked?;
        if matches!(step, Some(SecondStep::Wrong)) {
            return Err(AuthError::InvalidCredentials);
        }
        let user = if needs_rehash {
            self.rehash(settings, user, password).await?
        } else {
            user
        };
        match step {
            Some(SecondStep::Missing) => Err(AuthError::MfaRequired(
                self.begin_second_step(&user.record, now).await?,
            )),
            Some(SecondStep::Given(code)) => {
                self.start_session_with(settings, user, channel, Some(&code), now)
                    .await
            }
            _ => self.start_session(settings, user, channel, now).await,
        }
    }

    /// The enabled user `username` names, when `password` is theirs, and whether the
    /// stored hash needs the current parameters.
    async fn check_credentials(
        &self,
        settings: &Settings,
        username: &str,
        password: &Password,
    ) -> Result<(Shared<UserRecord>, bool), AuthError> {
        let name = Username::parse(username);
        let mut user = name
            .as_ref()
            .and_then(|name| self.store.user(name.as_str()));
        if user.is_none()
            && let Some(name) = &name
        {
            // Cluster mode: the account may have been created on another instance a moment
            // ago; read it from the store itself before calling it unknown.
            self.store.catch_up_user(name.as_str()).await?;
            user = self.store.user(name.as_str());
        }
        let stored_hash = user.as_ref().map_or(settings.dummy_hash.as_str(), |u| {
            u.record.password_hash.as_str()
        });
        let verification = self
            .hasher
            .verify(&settings.cost, password, stored_hash)
            .await?;
        let (user, needs_rehash) = match (user, verification) {
            (Some(user), Verification::Match { needs_rehash }) => (user, needs_rehash),
            _ => return Err(AuthError::InvalidCredentials),
        };
        if user.record.disabled {
            return Err(AuthError::AccountDisabled);
        }
        Ok((user, needs_rehash))
    }

    /// Replaces the hash just verified with one of the current cost. A concurrent change
    /// of the account wins: the hash stays, and the session is decided on the new record.
    async fn rehash(
        &self,
        settings: &Settings,
        user: Shared<UserRecord>,
        password: &Password,
    ) -> Result<Shared<UserRecord>, AuthError> {
        let new_hash = self.hasher.hash(&settings.cost, password).await?;
        let mut updated = (*user.record).clone();
        updated.password_hash = new_hash;
        let mut txn = Txn::default();
        txn.expect_user(&updated.username, Some(&user))
            .put_user(updated.clone());
        match self.store.commit(txn).await {
            Ok(_) | Err(StoreError::Conflict) => {}
            Err(err) => return Err(err.into()),
        }
        // The committed record (or the concurrent one) with its version.
        Ok(self.store.user(&updated.username).unwrap_or(user))
    }

    /// Stores the new session, on condition that the account still has the password hash
    /// and generation that were checked: a login that raced a password change or a
    /// revoke-all leaves no session (`InvalidCredentials`, not counted). The refresh token's
    /// record remembers the `channel` it is handed out in.
    pub(super) async fn start_session(
        &self,
        settings: &Settings,
        checked: Shared<UserRecord>,
        channel: Channel,
        now: UnixSeconds,
    ) -> Result<TokenPair, AuthError> {
        self.start_session_with(settings, checked, channel, None, now)
            .await
    }

    /// [`Authority::start_session`] for a login that gave a second factor: `code` is taken
    /// against the account's second factor as it is at the commit (the step it matched, or
    /// the recovery code it was, recorded in the same commit), so a code is never taken
    /// twice, even by logins racing on two instances.
    pub(super) async fn start_session_with(
        &self,
        settings: &Settings,
        checked: Shared<UserRecord>,
        channel: Channel,
        code: Option<&Code>,
        now: UnixSeconds,
    ) -> Result<TokenPair, AuthError> {
        let refresh_ttl = refresh_ttl(settings);
        let sid = crate::random::random_id(16);
        let refresh_token = RefreshToken::generate();
        let mut user = checked.clone();
        for _ in 0..ATTEMPTS {
            let proven = code
                .map(|code| self.take_code(&user.record, code, now))
                .transpose()?;
            let session = SessionRecord {
                sid: sid.clone(),
                username: user.record.username.clone(),
                account_id: user.record.account_id,
                generation: user.record.generation,
                created_at: now,
                last_refreshed_at: now,
                expires_at: now + refresh_ttl,
                access_expires_at: now + settings.tokens.access_ttl(),
                with_otp: proven.is_some(),
            };
            let refresh = RefreshRecord {
                sid: sid.clone(),
                issued_at: now,
                expires_at: now + refresh_ttl,
                rotated_at: None,
                issued_in_cookie: channel == Channel::Cookie,
            };
            let mut txn = Txn::default();
            txn.expect_user(&user.record.username, Some(&user))
                .put_session(session.clone())
                .put_refresh(refresh_token.hash(), refresh);
            if let Some(proven) = &proven {
                txn.put_user(proven.user.clone());
            }
            self.end_sessions_over_the_cap(settings, &user.record, now, &mut txn)
                .await?;
            match self.store.commit(txn).await {
                Ok(_) => {
                    let mut pair =
                        self.token_pair(settings, &user.record, &session, refresh_token, now)?;
                    pair.recovery_codes_left = proven.and_then(|p| p.recovery_codes_left);
                    return Ok(pair);
                }
                Err(StoreError::Conflict) => {}
                Err(err) => return Err(err.into()),
            }
            // Something else changed the account (roles, say): fine, unless it is no longer
            // the account, the password or the generation that was checked.
            user = match self.store.user(&checked.record.username) {
                Some(current) if still_as_checked(&checked.record, &current.record) => current,
                _ => return Err(AuthError::InvalidCredentials),
            };
        }
        Err(StoreError::Conflict.into())
    }
}

impl Authority {
    /// Adds to `txn` the end of the user's least recently refreshed live sessions (never
    /// refreshed: by login time), as many as a new session would take past
    /// `login.max_sessions_per_user`, each with its sid entry. Each is expected at the
    /// version read, so a session refreshed meanwhile makes the commit retry.
    async fn end_sessions_over_the_cap(
        &self,
        settings: &Settings,
        user: &UserRecord,
        now: UnixSeconds,
        txn: &mut Txn,
    ) -> Result<(), AuthError> {
        let cap = settings.config.login.max_sessions_per_user;
        let mut live: Vec<_> = self
            .store
            .sessions_of(&user.username)
            .into_iter()
            .filter(|s| {
                s.record.account_id == user.account_id
                    && s.record.generation == user.generation
                    && s.record.expires_at > now
            })
            .collect();
        let Some(excess) = (live.len() + 1).checked_sub(cap).filter(|&n| n > 0) else {
            return Ok(());
        };
        // Whole seconds tie; the version (the revision of the session's last write: its
        // login or its latest refresh) orders them exactly.
        live.sort_by_key(|s| (s.record.last_refreshed_at, s.version));
        for oldest in live.iter().take(excess) {
            let sid = &oldest.record.sid;
            let key = Key::Session(sid.clone());
            txn.expect(key.clone(), Some(oldest.version)).delete(key);
            let revocation = self.session_revocation(settings, sid, "session limit reached", now);
            if self
                .store
                .revocation(revocation.kind, &revocation.id)
                .await?
                .is_none()
            {
                txn.expect(Key::Revocation(revocation.kind, sid.clone()), None)
                    .revoke(&revocation);
            }
        }
        Ok(())
    }
}

/// Where a login with a right password stands with the account's second factor.
enum SecondStep {
    /// No code was given: the login continues at `/v1/login/mfa`.
    Missing,
    Wrong,
    Given(Code),
}

pub(super) fn still_as_checked(checked: &UserRecord, current: &UserRecord) -> bool {
    current.account_id == checked.account_id
        && current.password_hash == checked.password_hash
        && current.generation == checked.generation
        && !current.disabled
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testing::{Domain, NOW, PASSWORD};
    use super::*;
    use crate::auth::service::user_revocation;

    fn password(text: &str) -> Password {
        Password::new(text.into())
    }

    #[tokio::test]
    async fn a_right_password_starts_a_session_whose_token_authenticates() {
        let domain = Domain::new().await;
        domain.create_user("alice", &["admin"]).await;
        let pair = domain.login("alice").await;
        let principal = domain
            .authority
            .authenticate(&domain.settings, &pair.access_token, NOW)
            .unwrap();
        assert_eq!(principal.username(), "alice");
        assert_eq!(principal.claims.sid, pair.sid);
        assert!(principal.has_role("admin"));
        let sessions = domain.authority.sessions("alice", NOW).unwrap();
        assert_eq!(sessions.len(), 1);
    }

    #[tokio::test]
    async fn wrong_passwords_unknown_and_malformed_names_are_the_same_refusal() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        for (name, pass) in [
            ("alice", "wrong password"),
            ("nobody", PASSWORD),
            ("Not A Name!", PASSWORD),
        ] {
            let result = domain
                .authority
                .login(
                    &domain.settings,
                    name,
                    &password(pass),
                    None,
                    Channel::Api,
                    NOW,
                )
                .await;
            assert!(
                matches!(result, Err(AuthError::InvalidCredentials)),
                "{name}: {result:?}"
            );
        }
        assert!(domain.authority.sessions("alice", NOW).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_disabled_account_is_refused_after_its_password_checks() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        domain.disable("alice").await;
        let result = domain
            .authority
            .login(
                &domain.settings,
                "alice",
                &password(PASSWORD),
                None,
                Channel::Api,
                NOW,
            )
            .await;
        assert!(
            matches!(result, Err(AuthError::AccountDisabled)),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_login_checked_before_a_revoke_all_leaves_no_session() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let checked = domain.authority.store.user("alice").unwrap();
        let revocation = user_revocation(&domain.settings, "alice", "test", NOW);
        domain
            .authority
            .revoke_all("alice", &revocation, |_| {})
            .await
            .unwrap();
        let result = domain
            .authority
            .start_session(&domain.settings, checked, Channel::Api, NOW)
            .await;
        assert!(
            matches!(result, Err(AuthError::InvalidCredentials)),
            "{result:?}"
        );
        assert!(domain.authority.store.sessions_of("alice").is_empty());
    }

    #[tokio::test]
    async fn a_login_checked_before_a_role_change_still_starts_its_session() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let checked = domain.authority.store.user("alice").unwrap();
        domain
            .update(
                "alice",
                crate::auth::service::UserChanges {
                    roles: Some(vec!["ops".into()]),
                    ..Default::default()
                },
            )
            .await;
        let pair = domain
            .authority
            .start_session(&domain.settings, checked, Channel::Api, NOW)
            .await
            .unwrap();
        let principal = domain
            .authority
            .authenticate(&domain.settings, &pair.access_token, NOW)
            .unwrap();
        assert!(principal.has_role("ops"));
    }

    #[tokio::test]
    async fn a_login_under_new_argon2_parameters_rehashes_the_password() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let before = domain.authority.store.user("alice").unwrap();
        let cheaper = Domain::with(&[("AUTHD__PASSWORD__ARGON2_MEMORY_KIB", "128")]).await;
        // The same account, logged into under other parameters.
        domain
            .authority
            .login(
                &cheaper.settings,
                "alice",
                &password(PASSWORD),
                None,
                Channel::Api,
                NOW,
            )
            .await
            .unwrap();
        let after = domain.authority.store.user("alice").unwrap();
        assert_ne!(before.record.password_hash, after.record.password_hash);
        assert!(after.record.password_hash.contains("m=128"));
    }

    #[tokio::test]
    async fn a_locked_pair_leaves_the_user_free_to_log_in_from_another_address() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let login = |pass: &'static str, client: &'static str| {
            let domain = &domain;
            async move {
                domain
                    .authority
                    .login(
                        &domain.settings,
                        "alice",
                        &password(pass),
                        Some(client.parse().unwrap()),
                        crate::auth::service::Channel::Api,
                        NOW,
                    )
                    .await
            }
        };
        for _ in 0..domain.settings.config.login.max_failures {
            let result = login("a wrong guess", "198.51.100.66").await;
            assert!(
                matches!(result, Err(AuthError::InvalidCredentials)),
                "{result:?}"
            );
        }
        let result = login(PASSWORD, "198.51.100.66").await;
        assert!(
            matches!(result, Err(AuthError::TooManyRequests { .. })),
            "{result:?}"
        );
        login(PASSWORD, "192.0.2.1").await.unwrap();
    }

    #[tokio::test]
    async fn a_login_past_the_cap_ends_the_least_recently_refreshed_session() {
        let domain = Domain::with(&[("AUTHD__LOGIN__MAX_SESSIONS_PER_USER", "3")]).await;
        domain.create_user("alice", &[]).await;
        let first = domain.login_at("alice", NOW).await;
        let second = domain.login_at("alice", NOW + 1).await;
        let third = domain.login_at("alice", NOW + 2).await;
        // The first session is refreshed: now the second is the least recently refreshed.
        let refreshed = domain
            .authority
            .refresh_pair(&domain.settings, &first.refresh_token, NOW + 3)
            .await
            .unwrap();
        let fourth = domain.login_at("alice", NOW + 4).await;

        let live: Vec<_> = domain
            .authority
            .sessions("alice", NOW + 4)
            .unwrap()
            .into_iter()
            .map(|s| s.sid)
            .collect();
        assert_eq!(
            live,
            vec![first.sid.clone(), third.sid.clone(), fourth.sid.clone()]
        );
        let ended = domain
            .authority
            .authenticate(&domain.settings, &second.access_token, NOW + 4);
        assert!(ended.is_err(), "its tokens die at once");
        domain
            .authority
            .authenticate(&domain.settings, &refreshed.access_token, NOW + 4)
            .unwrap();
        let (entries, _) = domain.authority.list_revocations(None, 10).await.unwrap();
        let sids: Vec<_> = entries.iter().map(|e| (e.kind, e.id.clone())).collect();
        assert_eq!(
            sids,
            vec![(crate::store::RevocationKind::Sid, second.sid.clone())]
        );
    }
}

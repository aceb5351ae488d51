//! The operations of authd, one file per area: [`login`], [`refresh`], [`verify`]
//! (authenticating a bearer token), the caller's own [`sessions`], the admin's [`users`]
//! and [`revocations`]. Each takes the settings snapshot of its request and the current
//! time, and returns only once its changes are durable.
//!
//! Every change is one conditional store commit built from what the operation read: when a
//! concurrent change wins ([`StoreError::Conflict`]), the operation reads again and decides
//! again, at most [`ATTEMPTS`] times.

mod error;
mod login;
mod mfa;
mod refresh;
mod revocations;
mod second_step;
mod sessions;
mod users;
mod verify;

use std::sync::Arc;

use sha2::{Digest as _, Sha256};

pub use error::{AuthError, TokenRejection};
pub use mfa::{Enrolment, OwnerProof};
pub use refresh::{Channel, Refreshed};
pub use revocations::RevocationTarget;
pub use second_step::MfaToken;
pub use users::{User, UserChanges};
pub use verify::Principal;

use super::Settings;
use super::password::Hasher;
use super::throttle::{self, LoginThrottle};
use crate::auth::mfa::MfaKey;
use crate::auth::token::Amr;
use crate::clock::Clock;
use crate::config::{MAX_ACCESS_TTL, MAX_LEEWAY};
use crate::store::{
    LoginEvent, NewRevocation, RefreshHash, RevocationKind, RevocationRecord, SessionRecord, Store,
    StoreError, Txn, UnixSeconds, UserRecord,
};

/// How often an operation re-reads and retries after losing a race to a concurrent commit.
const ATTEMPTS: usize = 8;

/// An opaque refresh token; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    pub fn new(token: String) -> RefreshToken {
        RefreshToken(token)
    }

    /// A fresh random token (256 bits).
    fn generate() -> RefreshToken {
        RefreshToken(crate::random::random_id(32))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    fn hash(&self) -> RefreshHash {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken([redacted])")
    }
}

/// What a successful login or refresh hands out.
#[derive(Debug)]
pub struct TokenPair {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: RefreshToken,
    pub refresh_expires_in: i64,
    pub username: String,
    pub sid: String,
    /// The login used a recovery code: how many are left.
    pub recovery_codes_left: Option<usize>,
}

/// The domain service: the store, the bounded hashing pool and the login throttle (which
/// lives as long as the daemon; its limits come from each call's settings snapshot). The
/// clock gives the throttle its monotonic instants; wall-clock `now` is each call's
/// parameter.
#[derive(Clone)]
pub struct Authority {
    store: Store,
    hasher: Hasher,
    throttle: Arc<LoginThrottle>,
    clock: Clock,
    /// Seals TOTP secrets and keys the recovery codes' MACs (`mfa.key_file`).
    mfa_key: Arc<MfaKey>,
    /// Sessions already read from the engine after a miss (cluster mode): a session that
    /// was not there then never appears later (its tokens come after it), so one read each.
    caught_up: Arc<quick_cache::sync::Cache<String, ()>>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// How many sessions [`Authority`] remembers having read after a miss.
const CAUGHT_UP_ENTRIES: usize = 100_000;

impl Authority {
    pub fn new(store: Store, hasher: Hasher, clock: Clock, mfa_key: MfaKey) -> Authority {
        Authority {
            store,
            hasher,
            throttle: Arc::new(LoginThrottle::new()),
            clock,
            mfa_key: Arc::new(mfa_key),
            caught_up: Arc::new(quick_cache::sync::Cache::new(CAUGHT_UP_ENTRIES)),
        }
    }

    /// `Ok` while the store's view may answer (always on sled; cluster mode: loaded and
    /// confirmed current within `etcd.max_staleness`), else `503`.
    pub fn check_current(&self) -> Result<(), AuthError> {
        Ok(self.store.check_current()?)
    }

    /// The store (for its currency and limits).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Shares a counted login outcome with the deployment's other instances (cluster mode),
    /// so N instances allow no more guesses than one. A failure that cannot be shared fails
    /// the request (`503`): an instance cut off from the others must not become the one
    /// that counts nothing.
    async fn share_outcome(
        &self,
        settings: &Settings,
        attempt: &throttle::Attempt,
        outcome: throttle::Outcome,
        now: UnixSeconds,
    ) -> Result<(), AuthError> {
        let success = match outcome {
            throttle::Outcome::Failure => false,
            throttle::Outcome::Success => true,
            throttle::Outcome::NotCounted => return Ok(()),
        };
        let window = i64::try_from(settings.config.login.window.as_secs()).unwrap_or(i64::MAX);
        let event = LoginEvent {
            user: attempt.user_key(),
            address: attempt.address_key(),
            success,
            at: now,
        };
        match self
            .store
            .share_login_event(event, now.saturating_add(window))
            .await
        {
            Ok(()) => Ok(()),
            Err(err) if success => {
                tracing::warn!(error = %err, "a successful login was not shared with the other instances");
                Ok(())
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Counts a login outcome another instance of the deployment saw (cluster mode).
    pub fn count_shared_login(&self, settings: &Settings, event: &LoginEvent) {
        let now = self.clock.instant();
        let age = u64::try_from(self.clock.now().saturating_sub(event.at)).unwrap_or(0);
        let at = now
            .checked_sub(std::time::Duration::from_secs(age))
            .unwrap_or(now);
        let outcome = if event.success {
            throttle::Outcome::Success
        } else {
            throttle::Outcome::Failure
        };
        self.throttle.record_shared(
            &settings.config.login,
            &throttle::Attempt::from_keys(event.user, event.address),
            outcome,
            at,
            now,
        );
    }

    /// The fingerprint of `mfa.key_file` (backups name it; never the key).
    pub fn mfa_key_fingerprint(&self) -> &str {
        self.mfa_key.fingerprint()
    }

    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// The login throttle (for its table sizes).
    pub fn throttle(&self) -> &LoginThrottle {
        &self.throttle
    }

    /// Issues an access token for `sid` and pairs it with `refresh_token`.
    fn token_pair(
        &self,
        settings: &Settings,
        user: &UserRecord,
        session: &SessionRecord,
        refresh_token: RefreshToken,
        now: UnixSeconds,
    ) -> Result<TokenPair, AuthError> {
        let access = settings.tokens.issue(
            &settings.keys,
            &user.username,
            &session.sid,
            &user.roles,
            Amr::of(session.with_otp),
            now,
        )?;
        Ok(TokenPair {
            access_token: access.token,
            expires_in: settings.tokens.access_ttl(),
            refresh_token,
            refresh_expires_in: refresh_ttl(settings),
            username: user.username.clone(),
            sid: session.sid.clone(),
            recovery_codes_left: None,
        })
    }

    /// A sid entry. Revoking deletes the session, so only its access tokens remain to be
    /// blocked: until the latest `exp` issued in it, plus the largest leeway any
    /// configuration can have (see [`blocked_until`]). An unknown sid (never seen, or its
    /// session already purged) gets the longest lifetime a token could have. Neither
    /// depends on the current `access_ttl` or `leeway`, so no reload shortens it.
    fn session_revocation(
        &self,
        // Kept for the callers' sake: no setting enters an entry's lifetime any more.
        _settings: &Settings,
        sid: &str,
        reason: &str,
        now: UnixSeconds,
    ) -> NewRevocation {
        let expires_at = match self.store.session(sid) {
            Some(session) => blocked_until(session.record.access_expires_at, now),
            None => longest_token_lifetime(now),
        };
        NewRevocation {
            kind: RevocationKind::Sid,
            id: sid.to_owned(),
            revoked_at: now,
            expires_at,
            reason: (!reason.is_empty()).then(|| reason.to_owned()),
            ended_sessions: Vec::new(),
            serial: None,
        }
    }

    /// The existing account `username` names (normalised), `None` for anything else: what a
    /// failed login may log as its username. Whatever a client typed that names no account
    /// (e.g. a password typed into the username field) must not reach the logs (API.md rev 4).
    pub fn account_name(&self, username: &str) -> Option<String> {
        let name = super::names::Username::parse(username)?;
        self.store
            .user(name.as_str())
            .map(|user| user.record.username.clone())
    }

    /// Ends the session `sid` (if it exists) and records its sid entry. Revoking the same
    /// sid again keeps the first entry.
    async fn revoke_session(
        &self,
        settings: &Settings,
        sid: &str,
        reason: Option<String>,
        now: UnixSeconds,
    ) -> Result<RevocationRecord, AuthError> {
        let mut revocation = self.session_revocation(settings, sid, "", now);
        revocation.reason = reason;
        self.record_once(&revocation, |txn| {
            txn.delete(crate::store::Key::Session(sid.to_owned()));
        })
        .await
    }

    /// Stores a jti or sid entry unless one exists (then that one is the answer), in one
    /// commit with the writes `also` adds.
    async fn record_once(
        &self,
        revocation: &NewRevocation,
        also: impl Fn(&mut Txn),
    ) -> Result<RevocationRecord, AuthError> {
        let key = crate::store::Key::Revocation(revocation.kind, revocation.id.clone());
        for _ in 0..ATTEMPTS {
            let existing = self
                .store
                .revocation(revocation.kind, &revocation.id)
                .await?;
            let mut txn = Txn::default();
            also(&mut txn);
            match existing {
                Some(entry) => {
                    if txn.writes.is_empty() {
                        return Ok(entry.record);
                    }
                    txn.expect(key.clone(), Some(entry.version));
                    match self.store.commit(txn).await {
                        Ok(_) => return Ok(entry.record),
                        Err(StoreError::Conflict) => continue,
                        Err(err) => return Err(err.into()),
                    }
                }
                None => {
                    txn.expect(key.clone(), None).revoke(revocation);
                    match self.store.commit(txn).await {
                        Ok(committed) => return first_entry(committed.revocations),
                        Err(StoreError::Conflict) => continue,
                        Err(err) => return Err(err.into()),
                    }
                }
            }
        }
        Err(StoreError::Conflict.into())
    }
}

/// The one revocation entry a commit stored.
fn first_entry(entries: Vec<RevocationRecord>) -> Result<RevocationRecord, AuthError> {
    entries.into_iter().next().ok_or_else(|| {
        StoreError::Unavailable("the commit stored no revocation entry".into()).into()
    })
}

fn refresh_ttl(settings: &Settings) -> i64 {
    i64::try_from(settings.config.jwt.refresh_ttl.as_secs()).unwrap_or(i64::MAX / 4)
}

/// A user entry. In authd the account's generation, bumped in the same commit, blocks
/// every earlier session for good; the entry is what the list shows, and the sessions it
/// ended (filled in by the commit's builder, see [`ended_sessions`]) are what the revocation
/// feed sends. Each revoke-all is an entry of its own (a random serial). It lives as long as anything it blocks could be accepted: the
/// access tokens already issued (at most [`MAX_ACCESS_TTL`] from now, whatever
/// `access_ttl` says now: a reload may have shortened it since they were issued) and the
/// refresh tokens (`refresh_ttl`), plus the largest possible leeway.
fn user_revocation(
    settings: &Settings,
    username: &str,
    reason: &str,
    now: UnixSeconds,
) -> NewRevocation {
    let longest = refresh_ttl(settings).max(secs(MAX_ACCESS_TTL));
    NewRevocation {
        kind: RevocationKind::User,
        id: username.to_owned(),
        revoked_at: now,
        expires_at: now.saturating_add(longest).saturating_add(secs(MAX_LEEWAY)),
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
        ended_sessions: Vec::new(),
        serial: Some(crate::auth::random_id(9)),
    }
}

/// The sids of `user`'s sessions that a revoke-all at `now` ends: those of the account's
/// current generation that could still be used (an access token or the refresh token not
/// yet expired).
fn ended_sessions(
    user: &UserRecord,
    sessions: &[crate::store::Shared<crate::store::SessionRecord>],
    now: UnixSeconds,
) -> Vec<String> {
    sessions
        .iter()
        .map(|session| &session.record)
        .filter(|session| {
            session.account_id == user.account_id
                && session.generation == user.generation
                && session.expires_at.max(session.access_expires_at) >= now
        })
        .map(|session| session.sid.clone())
        .collect()
}

/// When an entry blocking a token that expires at `exp` may go: `exp` plus the largest
/// `jwt.leeway` any configuration can have. API.md (rev 4) asks for the largest leeway in
/// force since the entry was made; a reload (or a restart on an edited file) can raise the
/// leeway after the entry was written, and only the bound covers every future one. Never
/// before `now` plus that leeway, and without overflow on a forged `exp`.
fn blocked_until(exp: UnixSeconds, now: UnixSeconds) -> UnixSeconds {
    exp.max(now).saturating_add(secs(MAX_LEEWAY))
}

/// When an entry for a token authd knows nothing about (an unknown jti or sid) may go: the
/// longest lifetime a token could have. authd signs with `iat` = its own now and the
/// verifier refuses `exp - iat` above [`MAX_ACCESS_TTL`], so no token existing now expires
/// later than `now + MAX_ACCESS_TTL`.
fn longest_token_lifetime(now: UnixSeconds) -> UnixSeconds {
    blocked_until(now.saturating_add(secs(MAX_ACCESS_TTL)), now)
}

fn secs(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX / 4)
}

fn user_not_found(username: &str) -> AuthError {
    let shown: String = username.chars().take(64).collect();
    AuthError::NotFound(format!("user {shown:?} not found"))
}

#[cfg(test)]
mod second_factor_tests;
#[cfg(test)]
pub(crate) mod testing;

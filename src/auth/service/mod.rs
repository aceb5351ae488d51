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
mod refresh;
mod revocations;
mod sessions;
mod users;
mod verify;

use std::sync::Arc;

use sha2::{Digest as _, Sha256};

pub use error::{AuthError, TokenRejection};
pub use refresh::{Channel, Refreshed};
pub use revocations::RevocationTarget;
pub use users::{User, UserChanges};
pub use verify::Principal;

use super::Settings;
use super::password::Hasher;
use super::throttle::LoginThrottle;
use crate::clock::Clock;
use crate::store::{
    NewRevocation, RefreshHash, RevocationKind, RevocationRecord, Store, StoreError, Txn,
    UnixSeconds, UserRecord,
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
}

/// The domain service: the store, the bounded hashing pool and the login throttle (which
/// lives as long as the daemon; its limits come from each call's settings snapshot). The
/// clock gives the throttle its monotonic instants; wall-clock `now` is each call's
/// parameter.
#[derive(Debug, Clone)]
pub struct Authority {
    store: Store,
    hasher: Hasher,
    throttle: Arc<LoginThrottle>,
    clock: Clock,
}

impl Authority {
    pub fn new(store: Store, hasher: Hasher, clock: Clock) -> Authority {
        Authority {
            store,
            hasher,
            throttle: Arc::new(LoginThrottle::new()),
            clock,
        }
    }

    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// The login throttle (for its table sizes).
    pub fn throttle(&self) -> &LoginThrottle {
        &self.throttle
    }

    /// Makes everything durable (blocking; at shutdown).
    pub fn close_store(&self) -> Result<(), StoreError> {
        self.store.close()
    }

    /// Issues an access token for `sid` and pairs it with `refresh_token`.
    fn token_pair(
        &self,
        settings: &Settings,
        user: &UserRecord,
        sid: &str,
        refresh_token: RefreshToken,
        now: UnixSeconds,
    ) -> Result<TokenPair, AuthError> {
        let access =
            settings
                .tokens
                .issue(&settings.keys, &user.username, sid, &user.roles, now)?;
        Ok(TokenPair {
            access_token: access.token,
            expires_in: settings.tokens.access_ttl(),
            refresh_token,
            refresh_expires_in: refresh_ttl(settings),
            username: user.username.clone(),
            sid: sid.to_owned(),
        })
    }

    /// A sid entry. Revoking deletes the session, so only its access tokens remain to be
    /// blocked: until the latest `exp` issued in it (which a reload that shortened
    /// `access_ttl` does not shorten), or a full `access_ttl` from now for unknown sids.
    fn session_revocation(
        &self,
        settings: &Settings,
        sid: &str,
        reason: &str,
        now: UnixSeconds,
    ) -> NewRevocation {
        let issued_until = self
            .store
            .session(sid)
            .map_or(0, |session| session.record.access_expires_at);
        NewRevocation {
            kind: RevocationKind::Sid,
            id: sid.to_owned(),
            revoked_at: now,
            expires_at: issued_until.max(now + settings.tokens.access_ttl())
                + settings.tokens.leeway(),
            reason: (!reason.is_empty()).then(|| reason.to_owned()),
        }
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

/// A user entry: it blocks refresh tokens too, so it lives as long as the longest of them.
fn user_revocation(
    settings: &Settings,
    username: &str,
    reason: &str,
    now: UnixSeconds,
) -> NewRevocation {
    let longest = refresh_ttl(settings).max(settings.tokens.access_ttl());
    NewRevocation {
        kind: RevocationKind::User,
        id: username.to_owned(),
        revoked_at: now,
        expires_at: now + longest + settings.tokens.leeway(),
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
    }
}

fn user_not_found(username: &str) -> AuthError {
    let shown: String = username.chars().take(64).collect();
    AuthError::NotFound(format!("user {shown:?} not found"))
}

#[cfg(test)]
pub(crate) mod testing;

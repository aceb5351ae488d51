//! The second step of a login (API.md "Second factor"): the `mfa_token` a right password
//! earns for an account with TOTP on, stored (so the step works on any instance) with the
//! account as checked, and the code that finishes the login — throttled like a password,
//! and counted against the token, which dies at the fifth wrong one.

use std::net::IpAddr;

use sha2::{Digest as _, Sha256};

use super::{ATTEMPTS, AuthError, Authority, TokenPair};
use crate::auth::Settings;
use crate::auth::mfa::Code;
use crate::auth::throttle::{Attempt, Outcome};
use crate::store::{
    Key, MfaTokenRecord, RefreshHash, StoreError, Txn, UnixSeconds, UserRecord, Versioned,
};

/// How long an `mfa_token` lives.
const MFA_TOKEN_TTL: UnixSeconds = 5 * 60;
/// Wrong codes that kill an `mfa_token`.
const MFA_TOKEN_FAILURES: u32 = 5;

const DEAD_TOKEN: &str = "mfa_token is unknown, used, expired or dead";

/// An opaque token for a login's second step (256 bits); never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct MfaToken(String);

impl MfaToken {
    pub fn new(token: String) -> MfaToken {
        MfaToken(token)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    fn hash(&self) -> RefreshHash {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

impl std::fmt::Debug for MfaToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MfaToken([redacted])")
    }
}

impl Authority {
    /// Stores a new `mfa_token` for `user`, whose password was just checked.
    pub(super) async fn begin_second_step(
        &self,
        user: &UserRecord,
        now: UnixSeconds,
    ) -> Result<MfaToken, AuthError> {
        let token = MfaToken(crate::random::random_id(32));
        let record = MfaTokenRecord {
            username: user.username.clone(),
            account_id: user.account_id,
            generation: user.generation,
            password_hash: user.password_hash.clone(),
            expires_at: now + MFA_TOKEN_TTL,
            failures: 0,
        };
        let mut txn = Txn::default();
        txn.expect(Key::MfaToken(token.hash()), None)
            .put_mfa_token(token.hash(), record);
        self.store.commit(txn).await?;
        Ok(token)
    }

    /// The second step of a login (`POST /v1/login/mfa`): `code` for the account the
    /// `mfa_token` was given to. Throttled and counted like a login; a wrong code also
    /// counts against the token, which dies at the fifth. A right code uses the token up.
    pub async fn login_second_step(
        &self,
        settings: &Settings,
        mfa_token: &MfaToken,
        code: &str,
        client: Option<IpAddr>,
        channel: super::Channel,
        now: UnixSeconds,
    ) -> Result<TokenPair, AuthError> {
        self.check_current()?;
        let hash = mfa_token.hash();
        let read = self.live_mfa_token(&hash, now).await?;
        let limits = &settings.config.login;
        let attempt = Attempt::new(&read.record.username, client);
        self.throttle
            .check(limits, &attempt, self.clock.instant())?;
        let user = self
            .store
            .user(&read.record.username)
            .filter(|user| bound_to(&read.record, &user.record) && user.record.has_totp())
            .ok_or(AuthError::InvalidGrant(DEAD_TOKEN))?;
        let code = Code::parse(code);
        let right = code
            .as_ref()
            .is_some_and(|code| self.take_code(&user.record, code, now).is_ok());
        let outcome = if right {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        self.throttle
            .record(limits, &attempt, outcome, self.clock.instant())?;
        self.share_outcome(settings, &attempt, outcome, now).await?;
        match code {
            Some(code) if right => {
                self.use_mfa_token(hash, read).await?;
                self.start_session_with(settings, user, channel, Some(&code), now)
                    .await
            }
            _ => {
                self.count_wrong_code(hash, read, now).await?;
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// The `mfa_token` stored under `hash`, unless it is gone or expired.
    async fn live_mfa_token(
        &self,
        hash: &RefreshHash,
        now: UnixSeconds,
    ) -> Result<Versioned<MfaTokenRecord>, AuthError> {
        self.store
            .mfa_token(hash)
            .await?
            .filter(|token| {
                token.record.expires_at > now && token.record.failures < MFA_TOKEN_FAILURES
            })
            .ok_or(AuthError::InvalidGrant(DEAD_TOKEN))
    }

    /// Deletes the `mfa_token` as read: single use. A concurrent use wins.
    async fn use_mfa_token(
        &self,
        hash: RefreshHash,
        read: Versioned<MfaTokenRecord>,
    ) -> Result<(), AuthError> {
        let mut txn = Txn::default();
        txn.expect(Key::MfaToken(hash), Some(read.version))
            .delete(Key::MfaToken(hash));
        match self.store.commit(txn).await {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict) => Err(AuthError::InvalidGrant(DEAD_TOKEN)),
            Err(err) => Err(err.into()),
        }
    }

    /// Counts a wrong code against the `mfa_token`; the fifth kills it.
    async fn count_wrong_code(
        &self,
        hash: RefreshHash,
        mut read: Versioned<MfaTokenRecord>,
        now: UnixSeconds,
    ) -> Result<(), AuthError> {
        for _ in 0..ATTEMPTS {
            let mut counted = read.record.clone();
            counted.failures += 1;
            let mut txn = Txn::default();
            txn.expect(Key::MfaToken(hash), Some(read.version));
            if counted.failures >= MFA_TOKEN_FAILURES {
                txn.delete(Key::MfaToken(hash));
            } else {
                txn.put_mfa_token(hash, counted);
            }
            match self.store.commit(txn).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict) => match self.live_mfa_token(&hash, now).await {
                    Ok(again) => read = again,
                    // Used or killed meanwhile: nothing left to count against.
                    Err(_) => return Ok(()),
                },
                Err(err) => return Err(err.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }
}

/// Whether `user` is still the account as the `mfa_token`'s password check found it.
fn bound_to(token: &MfaTokenRecord, user: &UserRecord) -> bool {
    user.account_id == token.account_id
        && user.generation == token.generation
        && user.password_hash == token.password_hash
        && !user.disabled
}

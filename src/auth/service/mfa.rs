//! The second factor (API.md "Second factor"): taking a code, enrolling TOTP, confirming
//! it, turning it off, new recovery codes, the admin's reset and the `mfa.required_roles`
//! policy (the login's second step is [`super::second_step`]). Every change is one
//! conditional commit on the user record, so a code is taken once even by requests racing
//! on two instances.

use std::net::IpAddr;

use subtle::ConstantTimeEq as _;

use super::login::still_as_checked;
use super::{ATTEMPTS, AuthError, Authority, Principal, user_not_found, user_revocation};
use crate::auth::Settings;
use crate::auth::mfa::{Code, otpauth_uri, recovery, totp};
use crate::auth::password::{Password, Verification};
use crate::auth::throttle::{Attempt, Outcome};
use crate::store::{SecondFactor, Shared, StoreError, Txn, UnixSeconds, UserRecord};

/// A pending enrolment, shown once: the secret for manual entry and the URI for a QR code.
#[derive(Debug)]
pub struct Enrolment {
    pub secret: String,
    pub otpauth_uri: String,
}

/// The account after a code was taken: the step recorded, or the recovery code gone.
pub(super) struct Proven {
    pub user: UserRecord,
    /// A recovery code was used: how many are left.
    pub recovery_codes_left: Option<usize>,
}

impl Authority {
    /// Takes `code` against `user`'s confirmed TOTP secret (a step after the last one used)
    /// or its unused recovery codes. A wrong code is `InvalidCredentials`.
    pub(super) fn take_code(
        &self,
        user: &UserRecord,
        code: &Code,
        now: UnixSeconds,
    ) -> Result<Proven, AuthError> {
        let factor = user
            .second_factor
            .as_ref()
            .filter(|factor| factor.totp.is_some())
            .ok_or(AuthError::InvalidCredentials)?;
        let mut updated = factor.clone();
        let recovery_codes_left = match code {
            Code::Totp(digits) => {
                let sealed = factor.totp.as_deref().unwrap_or_default();
                let secret = self.mfa_key.open(user.account_id, sealed)?;
                updated.last_step = totp::matching_step(&secret, digits, now, factor.last_step)
                    .ok_or(AuthError::InvalidCredentials)?;
                None
            }
            Code::Recovery(text) => {
                let mac = self.mfa_key.recovery_mac(user.account_id, text);
                let found = factor
                    .recovery_codes
                    .iter()
                    .position(|stored| bool::from(stored.ct_eq(&mac)))
                    .ok_or(AuthError::InvalidCredentials)?;
                updated.recovery_codes.remove(found);
                Some(updated.recovery_codes.len())
            }
        };
        Ok(Proven {
            user: UserRecord {
                second_factor: Some(updated),
                ..user.clone()
            },
            recovery_codes_left,
        })
    }

    /// Starts an enrolment (`POST /v1/mfa/totp`): a new secret, pending until confirmed,
    /// replacing a pending one. A wrong `current_password` counts as a failed login.
    pub async fn begin_totp(
        &self,
        settings: &Settings,
        principal: &Principal,
        current_password: &Password,
        client: Option<IpAddr>,
        now: UnixSeconds,
    ) -> Result<Enrolment, AuthError> {
        let user = self
            .check_owner(settings, principal, current_password, None, client, now)
            .await
            .map_err(|err| match err {
                AuthError::WrongPasswordOrCode => AuthError::WrongCurrentPassword,
                err => err,
            })?;
        let secret = totp::new_secret();
        let sealed = self.mfa_key.seal(user.record.account_id, &secret);
        self.change_factor(&user.record, |factor| {
            if factor.as_ref().is_some_and(|f| f.totp.is_some()) {
                return Err(totp_already_on());
            }
            let last_step = factor.as_ref().map_or(0, |f| f.last_step);
            *factor = Some(SecondFactor {
                totp: None,
                pending: Some(sealed.clone()),
                last_step,
                recovery_codes: Vec::new(),
            });
            Ok(())
        })
        .await?;
        let secret = totp::base32(&secret);
        Ok(Enrolment {
            otpauth_uri: otpauth_uri(&settings.config.mfa.issuer, principal.username(), &secret),
            secret,
        })
    }

    /// Confirms a pending enrolment with its first code (`POST /v1/mfa/totp/confirm`):
    /// TOTP is on, and the first set of recovery codes is answered.
    pub async fn confirm_totp(
        &self,
        principal: &Principal,
        code: &str,
        now: UnixSeconds,
    ) -> Result<Vec<String>, AuthError> {
        self.check_current()?;
        let account_id = principal.user().account_id;
        let (codes, macs) = self.recovery_set(account_id);
        let digits = match Code::parse(code) {
            Some(Code::Totp(digits)) => Some(digits),
            _ => None,
        };
        self.change_factor(principal.user(), |factor| {
            let Some(current) = factor.as_mut() else {
                return Err(nothing_pending());
            };
            let Some(pending) = current
                .pending
                .as_deref()
                .filter(|_| current.totp.is_none())
            else {
                return Err(nothing_pending());
            };
            let secret = self.mfa_key.open(account_id, pending)?;
            let step = digits
                .as_deref()
                .and_then(|digits| totp::matching_step(&secret, digits, now, current.last_step))
                .ok_or_else(|| AuthError::InvalidRequest("the code is wrong".into()))?;
            current.totp = current.pending.take();
            current.last_step = step;
            current.recovery_codes = macs.clone();
            Ok(())
        })
        .await?;
        Ok(codes)
    }

    /// Turns TOTP off (`DELETE /v1/mfa/totp`), recovery codes with it, after the current
    /// password and a code.
    pub async fn disable_totp(
        &self,
        settings: &Settings,
        principal: &Principal,
        proof: OwnerProof<'_>,
        now: UnixSeconds,
    ) -> Result<(), AuthError> {
        self.change_proven_factor(settings, principal, proof, now, |factor| *factor = None)
            .await
    }

    /// A new set of recovery codes (`POST /v1/mfa/recovery-codes`), after the current
    /// password and a code; the old set stops working.
    pub async fn new_recovery_codes(
        &self,
        settings: &Settings,
        principal: &Principal,
        proof: OwnerProof<'_>,
        now: UnixSeconds,
    ) -> Result<Vec<String>, AuthError> {
        let (codes, macs) = self.recovery_set(principal.user().account_id);
        self.change_proven_factor(settings, principal, proof, now, |factor| {
            if let Some(factor) = factor.as_mut() {
                factor.recovery_codes = macs.clone();
            }
        })
        .await?;
        Ok(codes)
    }

    /// Applies `change` to the caller's second factor once the current password and a code
    /// check (see [`Authority::check_owner`]); a concurrent change in between refuses it, as
    /// the code was taken against what it replaced.
    async fn change_proven_factor(
        &self,
        settings: &Settings,
        principal: &Principal,
        proof: OwnerProof<'_>,
        now: UnixSeconds,
        change: impl Fn(&mut Option<SecondFactor>),
    ) -> Result<(), AuthError> {
        let proven = self
            .check_owner(
                settings,
                principal,
                proof.password,
                Some(proof.code),
                proof.client,
                now,
            )
            .await?;
        let checked = proven.record.second_factor.clone();
        self.change_factor(&proven.record, |factor| {
            if *factor != checked {
                return Err(AuthError::WrongPasswordOrCode);
            }
            change(factor);
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// A fresh set of recovery codes for the account: as shown, and as stored.
    fn recovery_set(&self, account_id: u64) -> (Vec<String>, Vec<[u8; 32]>) {
        let codes = recovery::new_set();
        let macs = codes
            .iter()
            .map(|code| {
                self.mfa_key
                    .recovery_mac(account_id, &code.replace('-', ""))
            })
            .collect();
        (codes, macs)
    }

    /// The admin's reset (`DELETE /admin/v1/users/{u}/mfa`): every bit of second-factor
    /// state goes, and every session of the user with it (a revoke-all), also when TOTP
    /// was off.
    pub async fn reset_second_factor(
        &self,
        settings: &Settings,
        username: &str,
        now: UnixSeconds,
    ) -> Result<(), AuthError> {
        self.check_current()?;
        let name = crate::auth::names::Username::parse(username)
            .ok_or_else(|| user_not_found(username))?;
        let revocation = user_revocation(settings, name.as_str(), "second factor reset", now);
        self.revoke_all(name.as_str(), &revocation, |user| {
            user.second_factor = None;
        })
        .await?
        .ok_or_else(|| user_not_found(username))?;
        Ok(())
    }

    /// `Ok` unless `mfa.required_roles` asks a second factor of the caller and the session
    /// has none (`403`, saying to enrol). Enrolling does not lift it for that session.
    pub fn check_second_factor_policy(
        &self,
        settings: &Settings,
        principal: &Principal,
    ) -> Result<(), AuthError> {
        let required = &settings.config.mfa.required_roles;
        if principal.with_otp() || !principal.roles().iter().any(|r| required.contains(r)) {
            return Ok(());
        }
        Err(AuthError::InsufficientScope(
            "your role requires a second factor: enrol at /account, then log in again",
        ))
    }

    /// The caller's account after checking `password` (and `code`, when given, which is
    /// recorded as taken): throttled and counted like a login; a wrong one answers
    /// `WrongPasswordOrCode` and changes nothing. With a code TOTP must be on, without one
    /// off (else `409`, after the throttle and before any hashing).
    async fn check_owner(
        &self,
        settings: &Settings,
        principal: &Principal,
        password: &Password,
        code: Option<&str>,
        client: Option<IpAddr>,
        now: UnixSeconds,
    ) -> Result<Shared<UserRecord>, AuthError> {
        self.check_current()?;
        let limits = &settings.config.login;
        let attempt = Attempt::new(principal.username(), client);
        self.throttle
            .check(limits, &attempt, self.clock.instant())?;
        let user = self
            .store
            .user(principal.username())
            .filter(|user| user.record.account_id == principal.user().account_id)
            .ok_or(AuthError::InvalidToken(super::TokenRejection::UserGone))?;
        // With a code TOTP must be on (to disable it, or for new codes); without, off (to
        // enrol).
        match (code.is_some(), user.record.has_totp()) {
            (true, false) => {
                return Err(AuthError::Conflict(
                    "two-factor authentication is off".into(),
                ));
            }
            (false, true) => return Err(totp_already_on()),
            _ => {}
        }
        let verification = self
            .hasher
            .verify(&settings.cost, password, &user.record.password_hash)
            .await?;
        let proven = match (verification, code) {
            (Verification::Mismatch, _) => None,
            (Verification::Match { .. }, None) => Some(None),
            (Verification::Match { .. }, Some(code)) => Code::parse(code)
                .and_then(|code| self.take_code(&user.record, &code, now).ok())
                .map(Some),
        };
        let outcome = match proven {
            Some(_) => Outcome::Success,
            None => Outcome::Failure,
        };
        self.throttle
            .record(limits, &attempt, outcome, self.clock.instant())?;
        self.share_outcome(settings, &attempt, outcome, now).await?;
        match proven {
            None => Err(AuthError::WrongPasswordOrCode),
            Some(None) => Ok(user),
            // Record the code as taken before anything else changes.
            Some(Some(proven)) => {
                let mut txn = Txn::default();
                txn.expect_user(principal.username(), Some(&user))
                    .put_user(proven.user);
                match self.store.commit(txn).await {
                    Ok(_) => {}
                    Err(StoreError::Conflict) => return Err(AuthError::WrongPasswordOrCode),
                    Err(err) => return Err(err.into()),
                }
                self.store
                    .user(principal.username())
                    .ok_or(AuthError::InvalidToken(super::TokenRejection::UserGone))
            }
        }
    }

    /// Applies `change` to the second factor of the account `checked` is (its password
    /// and generation unchanged), retrying on concurrent commits.
    async fn change_factor(
        &self,
        checked: &UserRecord,
        change: impl Fn(&mut Option<SecondFactor>) -> Result<(), AuthError>,
    ) -> Result<UserRecord, AuthError> {
        for _ in 0..ATTEMPTS {
            let user = self
                .store
                .user(&checked.username)
                .filter(|user| still_as_checked(checked, &user.record))
                .ok_or(AuthError::InvalidToken(super::TokenRejection::Revoked))?;
            let mut updated = (*user.record).clone();
            change(&mut updated.second_factor)?;
            let mut txn = Txn::default();
            txn.expect_user(&checked.username, Some(&user))
                .put_user(updated.clone());
            match self.store.commit(txn).await {
                Ok(_) => return Ok(updated),
                Err(StoreError::Conflict) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }
}

/// What the owner of an account gives to change its second factor: the current password
/// and a code, from the client's address (both are counted like a login).
#[derive(Debug, Clone, Copy)]
pub struct OwnerProof<'a> {
    pub password: &'a Password,
    pub code: &'a str,
    pub client: Option<IpAddr>,
}

fn totp_already_on() -> AuthError {
    AuthError::Conflict("two-factor authentication is already on".into())
}

fn nothing_pending() -> AuthError {
    AuthError::Conflict("no enrolment is pending".into())
}

//! The domain's errors: why an operation failed, and why a bearer token was refused. The
//! HTTP layer maps each to API.md's status and code, in one place.

use super::super::password::PasswordError;
use super::super::throttle::Throttled;
use super::super::token::TokenError;
use crate::store::StoreError;

/// Why an operation failed, in the domain's terms; the HTTP layer maps each to API.md.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("{0}")]
    InvalidToken(TokenRejection),
    #[error("{0}")]
    InvalidGrant(&'static str),
    #[error("account is disabled")]
    AccountDisabled,
    #[error("too many failed logins; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{0}")]
    InsufficientScope(&'static str),
    #[error("current password is wrong")]
    WrongCurrentPassword,
    /// A wrong `current_password` or `code` where both are asked for (which one is not said).
    #[error("current password or code is wrong")]
    WrongPasswordOrCode,
    /// A right password for an account with TOTP on, and no code: the login continues at
    /// the second step with this token.
    #[error("a second factor is required")]
    MfaRequired(super::MfaToken),
    #[error(transparent)]
    SecondFactorKey(#[from] crate::auth::mfa::key::Unsealable),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("cannot sign token: {0}")]
    Signing(#[from] jsonwebtoken::errors::Error),
}

impl From<Throttled> for AuthError {
    fn from(throttled: Throttled) -> Self {
        AuthError::TooManyRequests {
            retry_after_secs: throttled.retry_after_secs(),
        }
    }
}

/// Why a bearer token was refused: its own defects, or the revocation state behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("token has been revoked")]
    Revoked,
    #[error("user no longer exists")]
    UserGone,
    #[error("account is disabled")]
    Disabled,
}

impl TokenRejection {
    /// A short stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            TokenRejection::Token(err) => err.label(),
            TokenRejection::Revoked => "revoked",
            TokenRejection::UserGone => "user_gone",
            TokenRejection::Disabled => "disabled",
        }
    }
}

impl From<TokenError> for AuthError {
    fn from(err: TokenError) -> Self {
        AuthError::InvalidToken(TokenRejection::Token(err))
    }
}

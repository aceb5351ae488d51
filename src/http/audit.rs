//! The audit lines and outcome counters of logins and refreshes, shared by the API routes
//! (`POST /v1/login`, `POST /v1/token/refresh`) and the browser's (`POST /login`, the
//! silent refresh of `GET /login`), so that both count and log an attempt the same way.

use super::request::Ctx;
use crate::auth::AuthError;
use crate::auth::password::Password;
use crate::auth::service::{Channel, MfaToken, TokenPair};
use crate::metrics::{LOGINS, REFRESHES, count_outcome};

/// The client address for audit lines (`-` when unknown).
pub fn client(ctx: &Ctx) -> String {
    ctx.client_ip()
        .map_or_else(|| "-".to_owned(), |ip| ip.to_string())
}

/// A login attempt through the (throttled) domain, counted in the metrics and audited;
/// its refresh token is handed out by `channel`.
pub async fn attempt_login(
    ctx: &Ctx,
    username: &str,
    password: &Password,
    code: Option<&str>,
    channel: Channel,
) -> Result<TokenPair, AuthError> {
    let client_ip = ctx.client_ip();
    let result = ctx
        .state
        .authority
        .login_with_code(
            &ctx.settings,
            username,
            password,
            code,
            client_ip,
            channel,
            ctx.now,
        )
        .await;
    // Only an existing account's name reaches the log: what was typed into the username
    // field may be a password (API.md Conventions).
    let shown = ctx.state.authority.account_name(username);
    audit_login(ctx, "login", shown.as_deref().unwrap_or("-"), &result);
    result
}

/// The second step of a login (`POST /v1/login/mfa`, the browser's code form), counted
/// and audited like the first.
pub async fn attempt_second_step(
    ctx: &Ctx,
    mfa_token: &MfaToken,
    code: &str,
    channel: Channel,
) -> Result<TokenPair, AuthError> {
    let result = ctx
        .state
        .authority
        .login_second_step(
            &ctx.settings,
            mfa_token,
            code,
            ctx.client_ip(),
            channel,
            ctx.now,
        )
        .await;
    audit_login(ctx, "login_second_step", "-", &result);
    result
}

fn audit_login(ctx: &Ctx, event: &str, shown: &str, result: &Result<TokenPair, AuthError>) {
    let client = client(ctx);
    let outcome = match result {
        Ok(_) => "success",
        Err(AuthError::TooManyRequests { .. }) => "throttled",
        Err(AuthError::AccountDisabled) => "disabled",
        Err(AuthError::InvalidCredentials) => "invalid_credentials",
        Err(AuthError::MfaRequired(_)) => "mfa_required",
        Err(AuthError::InvalidGrant(_)) => "invalid_grant",
        Err(_) => "error",
    };
    count_outcome(LOGINS, outcome);
    match result {
        Ok(pair) => {
            tracing::info!(target: "audit", event, username = %pair.username, sid = %pair.sid, client = %client, outcome = "success", recovery_code = pair.recovery_codes_left.is_some())
        }
        Err(err @ AuthError::TooManyRequests { .. }) => {
            tracing::info!(target: "audit", event, username = %shown, client = %client, outcome = "throttled", reason = %err)
        }
        Err(AuthError::MfaRequired(_)) => {
            tracing::info!(target: "audit", event, username = %shown, client = %client, outcome = "mfa_required")
        }
        Err(err) => {
            tracing::info!(target: "audit", event, username = %shown, client = %client, outcome = "failure", reason = %err)
        }
    }
}

/// How a refresh token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshVia {
    /// In the body of `POST /v1/token/refresh`.
    Body,
    /// In the browser's refresh cookie.
    Cookie,
}

/// What became of a refresh.
#[derive(Debug)]
pub enum RefreshOutcome<'a> {
    /// A new token pair: the refresh token rotated.
    Rotated {
        username: &'a str,
        sid: &'a str,
    },
    /// A browser's refresh within the grace after a rotation: a new access token only.
    Grace {
        username: &'a str,
        sid: &'a str,
    },
    Failed(&'a AuthError),
}

/// Counts a refresh and writes its audit line.
pub fn record_refresh(ctx: &Ctx, via: RefreshVia, outcome: RefreshOutcome<'_>) {
    let label = match &outcome {
        RefreshOutcome::Rotated { .. } => "success",
        RefreshOutcome::Grace { .. } => "grace",
        RefreshOutcome::Failed(AuthError::InvalidGrant(_)) => "invalid_grant",
        RefreshOutcome::Failed(_) => "error",
    };
    count_outcome(REFRESHES, label);
    let client = client(ctx);
    match (via, outcome) {
        (
            RefreshVia::Body,
            RefreshOutcome::Rotated { username, sid } | RefreshOutcome::Grace { username, sid },
        ) => {
            tracing::info!(target: "audit", event = "refresh", username = %username, sid = %sid, client = %client, outcome = label)
        }
        (RefreshVia::Body, RefreshOutcome::Failed(err)) => {
            tracing::info!(target: "audit", event = "refresh", client = %client, outcome = "failure", reason = %err)
        }
        (
            RefreshVia::Cookie,
            RefreshOutcome::Rotated { username, sid } | RefreshOutcome::Grace { username, sid },
        ) => {
            tracing::info!(target: "audit", event = "refresh", via = "cookie", username = %username, sid = %sid, client = %client, outcome = label)
        }
        (RefreshVia::Cookie, RefreshOutcome::Failed(err @ AuthError::InvalidGrant(_))) => {
            tracing::info!(target: "audit", event = "refresh", via = "cookie", client = %client, outcome = "failure", reason = %err)
        }
        // Any other error is internal: it is logged where it becomes the `500`.
        (RefreshVia::Cookie, RefreshOutcome::Failed(_)) => {}
    }
}

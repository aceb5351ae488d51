//! Handlers of the public listener: login, refresh, verify, me, JWKS, health. Each decodes
//! its input, calls the domain, and shapes the answer; nothing else.

use http::StatusCode;
use http::header::{CACHE_CONTROL, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use warp::reply::Response;

use super::error::ApiError;
use super::request::{Accepts, Ctx, RawBody, decode_body, decode_optional_body};
use super::{json, rfc3339};
use crate::auth::password::Password;
use crate::auth::service::{RefreshToken, TokenPair};
use crate::auth::{AuthError, Principal};
use crate::store::SessionRecord;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    username: String,
    password: String,
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
}

impl From<LoginForm> for LoginBody {
    fn from(form: LoginForm) -> Self {
        LoginBody {
            username: form.username,
            password: form.password,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    refresh_token: String,
}

#[derive(Deserialize)]
pub struct RefreshForm {
    refresh_token: String,
}

impl From<RefreshForm> for RefreshBody {
    fn from(form: RefreshForm) -> Self {
        RefreshBody {
            refresh_token: form.refresh_token,
        }
    }
}

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: i64,
    refresh_token: &'a str,
    refresh_expires_in: i64,
}

/// A token answer: never cached.
fn token_response(pair: &TokenPair) -> Response {
    let mut response = json(
        StatusCode::OK,
        &TokenResponse {
            access_token: &pair.access_token,
            token_type: "Bearer",
            expires_in: pair.expires_in,
            refresh_token: pair.refresh_token.expose(),
            refresh_expires_in: pair.refresh_expires_in,
        },
    );
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The client address for audit lines (`-` when unknown).
pub(super) fn client(ctx: &Ctx) -> String {
    ctx.client_ip()
        .map_or_else(|| "-".to_owned(), |ip| ip.to_string())
}

pub async fn login(ctx: Ctx, raw: RawBody) -> Result<Response, ApiError> {
    let body: LoginBody = decode_body::<LoginBody, LoginForm>(&ctx, raw, Accepts::JsonOrForm)?;
    let pair = attempt_login(&ctx, &body.username, &Password::new(body.password)).await?;
    Ok(token_response(&pair))
}

/// A login attempt through the (throttled) domain, counted in the metrics and audited;
/// shared by `POST /v1/login` and the browser's `POST /login`.
pub(super) async fn attempt_login(
    ctx: &Ctx,
    username: &str,
    password: &Password,
) -> Result<TokenPair, AuthError> {
    let client_ip = ctx.client_ip();
    let result = ctx
        .state
        .authority
        .login(&ctx.settings, username, password, client_ip, ctx.now)
        .await;
    let shown: String = username.chars().take(64).collect();
    let client = client_ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
    let outcome = match &result {
        Ok(_) => "success",
        Err(AuthError::TooManyRequests { .. }) => "throttled",
        Err(AuthError::AccountDisabled) => "disabled",
        Err(AuthError::InvalidCredentials) => "invalid_credentials",
        Err(_) => "error",
    };
    crate::metrics::count_outcome(crate::metrics::LOGINS, outcome);
    match &result {
        Ok(pair) => {
            tracing::info!(target: "audit", event = "login", username = %pair.username, sid = %pair.sid, client = %client, outcome = "success")
        }
        Err(err @ AuthError::TooManyRequests { .. }) => {
            tracing::info!(target: "audit", event = "login", username = ?shown, client = %client, outcome = "throttled", reason = %err)
        }
        Err(err) => {
            tracing::info!(target: "audit", event = "login", username = ?shown, client = %client, outcome = "failure", reason = %err)
        }
    }
    result
}

pub async fn refresh(ctx: Ctx, raw: RawBody) -> Result<Response, ApiError> {
    let body: RefreshBody =
        decode_body::<RefreshBody, RefreshForm>(&ctx, raw, Accepts::JsonOrForm)?;
    let presented = RefreshToken::new(body.refresh_token);
    let result = ctx
        .state
        .authority
        .refresh_pair(&ctx.settings, &presented, ctx.now)
        .await;
    let outcome = match &result {
        Ok(_) => "success",
        Err(AuthError::InvalidGrant(_)) => "invalid_grant",
        Err(_) => "error",
    };
    crate::metrics::count_outcome(crate::metrics::REFRESHES, outcome);
    match &result {
        Ok(pair) => {
            tracing::info!(target: "audit", event = "refresh", username = %pair.username, sid = %pair.sid, client = %client(&ctx), outcome = "success")
        }
        Err(err) => {
            tracing::info!(target: "audit", event = "refresh", client = %client(&ctx), outcome = "failure", reason = %err)
        }
    }
    Ok(token_response(&result?))
}

#[derive(Serialize)]
struct VerifyResponse<'a> {
    sub: &'a str,
    roles: &'a [String],
    exp: i64,
    jti: &'a str,
    sid: &'a str,
}

pub fn verify(
    ctx: &Ctx,
    query: &std::collections::HashMap<String, String>,
) -> Result<Response, ApiError> {
    let count = |outcome: &'static str| {
        crate::metrics::count_outcome(crate::metrics::VERIFICATIONS, outcome);
    };
    let token = ctx
        .access_token()
        .inspect_err(|err| {
            count(if err.code() == "forbidden" {
                "forbidden"
            } else {
                "missing"
            })
        })?
        .token;
    let result = ctx
        .state
        .authority
        .authenticate(&ctx.settings, token, ctx.now);
    let outcome = match &result {
        Ok(principal) => match query.get("role") {
            Some(role) if !principal.has_role(role) => "insufficient_scope",
            _ => "valid",
        },
        Err(AuthError::InvalidToken(reason)) => reason.label(),
        Err(_) => "error",
    };
    count(outcome);
    let principal = result?;
    if outcome == "insufficient_scope" {
        return Err(ApiError::insufficient_scope(
            "the session lacks the required role",
        ));
    }
    let mut response = json(
        StatusCode::OK,
        &VerifyResponse {
            sub: principal.username(),
            roles: principal.roles(),
            exp: principal.claims.exp,
            jti: &principal.claims.jti,
            sid: &principal.claims.sid,
        },
    );
    let headers = response.headers_mut();
    if let Ok(user) = HeaderValue::from_str(principal.username()) {
        headers.insert(X_AUTH_USER, user);
    }
    if let Ok(roles) = HeaderValue::from_str(&principal.roles().join(",")) {
        headers.insert(X_AUTH_ROLES, roles);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

const X_AUTH_USER: HeaderName = HeaderName::from_static("x-auth-user");
const X_AUTH_ROLES: HeaderName = HeaderName::from_static("x-auth-roles");

#[derive(Serialize)]
struct MeResponse<'a> {
    username: &'a str,
    roles: &'a [String],
    created_at: String,
}

pub async fn me(ctx: Ctx) -> Result<Response, ApiError> {
    let principal = principal(&ctx)?;
    Ok(json(
        StatusCode::OK,
        &MeResponse {
            username: principal.username(),
            roles: principal.roles(),
            created_at: rfc3339(principal.created_at()),
        },
    ))
}

pub async fn jwks(ctx: Ctx) -> Result<Response, ApiError> {
    let mut response = json(StatusCode::OK, &ctx.settings.keys.jwks());
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    Ok(response)
}

pub async fn healthz() -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"})))
}

pub async fn readyz(ctx: Ctx) -> Result<Response, ApiError> {
    if ctx.state.is_draining() {
        return Err(ApiError::unavailable("authd is shutting down"));
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"status": "ready"}),
    ))
}

/// The caller of a bearer-protected route.
fn principal(ctx: &Ctx) -> Result<Principal, ApiError> {
    Ok(ctx
        .state
        .authority
        .authenticate(&ctx.settings, ctx.access_token()?.token, ctx.now)?)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogoutBody {
    #[serde(default)]
    all: bool,
}

pub async fn logout(ctx: Ctx, raw: RawBody) -> Result<Response, ApiError> {
    let principal = principal(&ctx)?;
    let body = decode_optional_body::<LogoutBody, LogoutBody>(&ctx, raw, Accepts::Json)?
        .unwrap_or_default();
    ctx.state
        .authority
        .logout(&ctx.settings, &principal, body.all, ctx.now)
        .await?;
    tracing::info!(target: "audit", event = "logout", username = %principal.username(), sid = %principal.claims.sid, all = body.all, client = %client(&ctx), outcome = "success");
    Ok(super::no_content())
}

#[derive(Serialize)]
struct SessionView<'a> {
    sid: &'a str,
    created_at: String,
    last_refreshed_at: String,
    current: bool,
}

/// `{"sessions": [...]}`, marking the caller's own session when there is one.
pub fn sessions_response(sessions: &[SessionRecord], current_sid: Option<&str>) -> Response {
    let sessions: Vec<_> = sessions
        .iter()
        .map(|s| SessionView {
            sid: &s.sid,
            created_at: rfc3339(s.created_at),
            last_refreshed_at: rfc3339(s.last_refreshed_at),
            current: current_sid == Some(s.sid.as_str()),
        })
        .collect();
    json(StatusCode::OK, &serde_json::json!({ "sessions": sessions }))
}

pub async fn sessions(ctx: Ctx) -> Result<Response, ApiError> {
    let principal = principal(&ctx)?;
    let sessions = ctx
        .state
        .authority
        .sessions(principal.username(), ctx.now)?;
    Ok(sessions_response(&sessions, Some(&principal.claims.sid)))
}

pub async fn end_session(sid: String, ctx: Ctx) -> Result<Response, ApiError> {
    let principal = principal(&ctx)?;
    ctx.state
        .authority
        .end_own_session(&ctx.settings, &principal, &sid, ctx.now)
        .await?;
    tracing::info!(target: "audit", event = "session_ended", username = %principal.username(), sid = %sid, client = %client(&ctx), outcome = "success");
    Ok(super::no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    current_password: String,
    new_password: String,
}

pub async fn change_password(ctx: Ctx, raw: RawBody) -> Result<Response, ApiError> {
    let principal = principal(&ctx)?;
    let body = decode_body::<PasswordBody, PasswordBody>(&ctx, raw, Accepts::Json)?;
    let result = ctx
        .state
        .authority
        .change_password(
            &ctx.settings,
            &principal,
            &Password::new(body.current_password),
            &Password::new(body.new_password),
            ctx.client_ip(),
            ctx.now,
        )
        .await;
    let outcome = if result.is_ok() { "success" } else { "failure" };
    tracing::info!(target: "audit", event = "password_changed", username = %principal.username(), client = %client(&ctx), outcome);
    result?;
    Ok(super::no_content())
}

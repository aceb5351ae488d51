//! The caller's own account: `GET /v1/me`, `GET /v1/sessions`, `DELETE /v1/sessions/{sid}`
//! and `POST /v1/password`. Every route is bearer-protected (or cookie, see
//! [`super::request::Ctx::access_token`]).

use http::StatusCode;
use serde::{Deserialize, Serialize};
use warp::reply::Response;

use super::audit::client;
use super::error::ApiError;
use super::reply::{json, no_content, rfc3339};
use super::request::{Accepts, Ctx, RawBody, decode_body};
use super::views::sessions_response;
use crate::auth::password::Password;

#[derive(Serialize)]
struct MeResponse<'a> {
    username: &'a str,
    roles: &'a [String],
    created_at: String,
    mfa: bool,
}

pub async fn me(ctx: Ctx) -> Result<Response, ApiError> {
    let principal = ctx.principal_enrolling().await?;
    Ok(json(
        StatusCode::OK,
        &MeResponse {
            username: principal.username(),
            roles: principal.roles(),
            created_at: rfc3339(principal.created_at()),
            mfa: principal.has_totp(),
        },
    ))
}

pub async fn sessions(ctx: Ctx) -> Result<Response, ApiError> {
    let principal = ctx.principal().await?;
    let sessions = ctx
        .state
        .authority
        .sessions(principal.username(), ctx.now)?;
    Ok(sessions_response(&sessions, Some(&principal.claims.sid)))
}

pub async fn end_session(sid: String, ctx: Ctx) -> Result<Response, ApiError> {
    let principal = ctx.principal().await?;
    ctx.state
        .authority
        .end_own_session(&ctx.settings, &principal, &sid, ctx.now)
        .await?;
    tracing::info!(target: "audit", event = "session_ended", username = %principal.username(), sid = %sid, client = %client(&ctx), outcome = "success");
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    current_password: String,
    new_password: String,
}

pub async fn change_password(ctx: Ctx, raw: RawBody) -> Result<Response, ApiError> {
    let principal = ctx.principal().await?;
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
    Ok(no_content())
}

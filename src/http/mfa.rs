//! The caller's second factor: `POST /v1/mfa/totp` (enrol), `POST /v1/mfa/totp/confirm`,
//! `DELETE /v1/mfa/totp` and `POST /v1/mfa/recovery-codes`. Bearer-protected (or cookie),
//! open to a user who must still enrol; answers with a secret or codes are never cached.

use http::StatusCode;
use http::header::{CACHE_CONTROL, HeaderValue};
use serde::{Deserialize, Serialize};
use warp::reply::Response;

use super::audit::client;
use super::error::ApiError;
use super::reply::{json, no_content};
use super::request::{Accepts, Ctx, RawBody, decode_body};
use crate::auth::Principal;
use crate::auth::password::Password;
use crate::auth::service::OwnerProof;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    current_password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordAndCodeBody {
    current_password: String,
    code: String,
}

#[derive(Serialize)]
struct EnrolmentResponse<'a> {
    secret: &'a str,
    otpauth_uri: &'a str,
}

#[derive(Serialize)]
struct RecoveryCodesResponse<'a> {
    recovery_codes: &'a [String],
}

pub async fn begin_totp(ctx: Ctx, raw: RawBody) -> Result<Response, ApiError> {
    let principal = ctx.principal_enrolling().await?;
    let body = decode_body::<PasswordBody, PasswordBody>(&ctx, raw, Accepts::Json)?;
    let result = ctx
        .state
        .authority
        .begin_totp(
            &ctx.settings,
            &principal,
            &Password::new(body.current_password),
            ctx.client_ip(),
            ctx.now,
        )
        .await;
    audit(
        &ctx,
        "totp_enrolment_started",
        principal.username(),
        result.is_ok(),
    );
    let enrolment = result?;
    Ok(secret_answer(json(
        StatusCode::OK,
        &EnrolmentResponse {
            secret: &enrolment.secret,
            otpauth_uri: &enrolment.otpauth_uri,
        },
    )))
}

pub async fn confirm_totp(ctx: Ctx, raw: RawBody) -> Result<Response, ApiError> {
    let principal = ctx.principal_enrolling().await?;
    let body = decode_body::<CodeBody, CodeBody>(&ctx, raw, Accepts::Json)?;
    let result = ctx
        .state
        .authority
        .confirm_totp(&principal, &body.code, ctx.now)
        .await;
    audit(&ctx, "totp_enabled", principal.username(), result.is_ok());
    Ok(codes_answer(&result?))
}

pub async fn disable_totp(ctx: Ctx, raw: RawBody) -> Result<Response, ApiError> {
    let (principal, body) = owner_form(&ctx, raw).await?;
    let password = Password::new(body.current_password.clone());
    let result = ctx
        .state
        .authority
        .disable_totp(
            &ctx.settings,
            &principal,
            proof(&ctx, &password, &body),
            ctx.now,
        )
        .await;
    audit(&ctx, "totp_disabled", principal.username(), result.is_ok());
    result?;
    Ok(no_content())
}

pub async fn new_recovery_codes(ctx: Ctx, raw: RawBody) -> Result<Response, ApiError> {
    let (principal, body) = owner_form(&ctx, raw).await?;
    let password = Password::new(body.current_password.clone());
    let result = ctx
        .state
        .authority
        .new_recovery_codes(
            &ctx.settings,
            &principal,
            proof(&ctx, &password, &body),
            ctx.now,
        )
        .await;
    audit(
        &ctx,
        "recovery_codes_renewed",
        principal.username(),
        result.is_ok(),
    );
    Ok(codes_answer(&result?))
}

fn proof<'a>(ctx: &Ctx, password: &'a Password, body: &'a PasswordAndCodeBody) -> OwnerProof<'a> {
    OwnerProof {
        password,
        code: &body.code,
        client: ctx.client_ip(),
    }
}

/// The caller and the body of a change that takes the current password and a code.
async fn owner_form(ctx: &Ctx, raw: RawBody) -> Result<(Principal, PasswordAndCodeBody), ApiError> {
    let principal = ctx.principal_enrolling().await?;
    let body = decode_body::<PasswordAndCodeBody, PasswordAndCodeBody>(ctx, raw, Accepts::Json)?;
    Ok((principal, body))
}

fn audit(ctx: &Ctx, event: &str, username: &str, ok: bool) {
    let outcome = if ok { "success" } else { "failure" };
    tracing::info!(target: "audit", event, username = %username, client = %client(ctx), outcome);
}

fn codes_answer(codes: &[String]) -> Response {
    secret_answer(json(
        StatusCode::OK,
        &RecoveryCodesResponse {
            recovery_codes: codes,
        },
    ))
}

fn secret_answer(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

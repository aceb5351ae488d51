//! The token routes of the API: `POST /v1/login`, `POST /v1/token/refresh` and
//! `POST /v1/logout`. Each decodes its body, calls the domain and answers; counting and
//! auditing live in [`super::audit`], the token answer in [`super::views`].

use serde::Deserialize;
use warp::reply::Response;

use super::audit::{
    RefreshOutcome, RefreshVia, attempt_login, attempt_second_step, client, record_refresh,
};
use super::error::ApiError;
use super::reply::no_content;
use super::request::{Accepts, Ctx, RawBody, decode_body, decode_optional_body};
use super::views::token_response;
use crate::auth::password::Password;
use crate::auth::service::{Channel, MfaToken, RefreshToken};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    username: String,
    password: String,
    /// The second factor, for an account with TOTP on (ignored for others).
    code: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    code: Option<String>,
}

impl From<LoginForm> for LoginBody {
    fn from(form: LoginForm) -> Self {
        LoginBody {
            username: form.username,
            password: form.password,
            // An HTML form sends an empty field it has.
            code: form.code.filter(|code| !code.is_empty()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondStepBody {
    mfa_token: String,
    code: String,
}

#[derive(Deserialize)]
pub struct SecondStepForm {
    mfa_token: String,
    code: String,
}

impl From<SecondStepForm> for SecondStepBody {
    fn from(form: SecondStepForm) -> Self {
        SecondStepBody {
            mfa_token: form.mfa_token,
            code: form.code,
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogoutBody {
    #[serde(default)]
    all: bool,
}

pub async fn login(ctx: Ctx, raw: RawBody) -> Result<Response, ApiError> {
    let body: LoginBody = decode_body::<LoginBody, LoginForm>(&ctx, raw, Accepts::JsonOrForm)?;
    let pair = attempt_login(
        &ctx,
        &body.username,
        &Password::new(body.password),
        body.code.as_deref(),
        Channel::Api,
    )
    .await?;
    Ok(token_response(&pair))
}

/// `POST /v1/login/mfa`: the second step of a login that answered `mfa_required`.
pub async fn login_second_step(ctx: Ctx, raw: RawBody) -> Result<Response, ApiError> {
    let body: SecondStepBody =
        decode_body::<SecondStepBody, SecondStepForm>(&ctx, raw, Accepts::JsonOrForm)?;
    let pair = attempt_second_step(
        &ctx,
        &MfaToken::new(body.mfa_token),
        &body.code,
        Channel::Api,
    )
    .await?;
    Ok(token_response(&pair))
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
        Ok(pair) => RefreshOutcome::Rotated {
            username: &pair.username,
            sid: &pair.sid,
        },
        Err(err) => RefreshOutcome::Failed(err),
    };
    record_refresh(&ctx, RefreshVia::Body, outcome);
    Ok(token_response(&result?))
}

pub async fn logout(ctx: Ctx, raw: RawBody) -> Result<Response, ApiError> {
    let principal = ctx.principal_enrolling().await?;
    let body = decode_optional_body::<LogoutBody, LogoutBody>(&ctx, raw, Accepts::Json)?
        .unwrap_or_default();
    ctx.state
        .authority
        .logout(&ctx.settings, &principal, body.all, ctx.now)
        .await?;
    tracing::info!(target: "audit", event = "logout", username = %principal.username(), sid = %principal.claims.sid, all = body.all, client = %client(&ctx), outcome = "success");
    Ok(no_content())
}

//! The self-service account page: `GET /account` and its forms, `POST /account/{password,
//! sessions/end, totp, totp/confirm, totp/disable, recovery-codes}`. A browser route like
//! `/login`: cookie session (none: `303` to the login page), form bodies, answers as pages
//! (errors too, with their 4xx), the login page's headers, `/logout`'s cross-site rule. A
//! user whom `mfa.required_roles` holds to a second factor may use it to enrol.

use http::StatusCode;
use http::header::{HeaderValue, LOCATION, RETRY_AFTER};
use serde::Deserialize;
use warp::reply::Response;

use super::account_html::{AccountView, Notice, account_page};
use super::audit::client;
use super::browser::clear_session_cookies;
use super::error::ApiError;
use super::pages::{add_page_headers, error_page};
use super::request::{Accepts, Ctx, RawBody, decode_body};
use crate::auth::password::Password;
use crate::auth::redirect::{RedirectTarget, check_redirect, login_url_with_rd};
use crate::auth::service::OwnerProof;
use crate::auth::{AuthError, Principal};

/// What a post to the account page asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Show,
    Password,
    EndSession,
    BeginTotp,
    ConfirmTotp,
    DisableTotp,
    RecoveryCodes,
}

/// The fields of every account form (each form sends its own; others are ignored).
#[derive(Debug, Default, Deserialize)]
pub struct Fields {
    current_password: Option<String>,
    new_password: Option<String>,
    new_password_again: Option<String>,
    code: Option<String>,
    sid: Option<String>,
}

/// `/account` and `/account/…`, every method: `404` while cookies are disabled, `405` as a
/// page for a method the route does not take.
pub async fn account(ctx: Ctx, raw: RawBody, action: Action, allow: &'static str) -> Response {
    if !ctx.settings.config.cookie.enabled {
        return ApiError::not_found().into_response();
    }
    let method_ok = match action {
        Action::Show => ctx.method == http::Method::GET || ctx.method == http::Method::HEAD,
        _ => ctx.method == http::Method::POST,
    };
    if !method_ok {
        return error_page(ApiError::method_not_allowed(allow));
    }
    // A post from another site is refused before the session is even looked at.
    let principal = match ctx.principal_on_own_page().await {
        Ok(principal) => principal,
        Err(err) if err.code() == "invalid_token" => return to_login(&ctx),
        Err(err) => return error_page(err),
    };
    let answer = match action {
        Action::Show => Ok(Answer::page(StatusCode::OK, Done::Nothing)),
        _ => match decode_body::<Fields, Fields>(&ctx, raw, Accepts::JsonOrForm) {
            Ok(fields) => act(&ctx, &principal, action, fields).await,
            Err(err) => Ok(Answer::refused(err.status(), "The form could not be read.")),
        },
    };
    match answer {
        Ok(Answer::Page(status, done, retry_after)) => {
            let mut response = render(&ctx, &principal, status, done);
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
        Ok(Answer::SignedOut) => {
            let mut response = to_login(&ctx);
            clear_session_cookies(&ctx, &mut response);
            response
        }
        Err(err) => error_page(err),
    }
}

/// What a form's handling ends in.
enum Answer {
    /// The page, with what the form did (and `Retry-After` for a throttled one).
    Page(StatusCode, Done, Option<u64>),
    /// The form ended this very session (the page's sign-out): the cookies go, and the
    /// browser on to the login page.
    SignedOut,
}

impl Answer {
    fn page(status: StatusCode, done: Done) -> Answer {
        Answer::Page(status, done, None)
    }

    fn refused(status: StatusCode, message: &'static str) -> Answer {
        Answer::Page(status, Done::Refused(message), None)
    }
}

/// What the page says about the last form.
enum Done {
    Nothing,
    Refused(&'static str),
    Changed(&'static str),
    Enrolment(crate::auth::service::Enrolment),
    RecoveryCodes(Vec<String>, bool),
}

async fn act(
    ctx: &Ctx,
    principal: &Principal,
    action: Action,
    fields: Fields,
) -> Result<Answer, ApiError> {
    let authority = &ctx.state.authority;
    let settings = &ctx.settings;
    let password = |field: Option<String>| Password::new(field.unwrap_or_default());
    let code = fields.code.clone().unwrap_or_default();
    let current = password(fields.current_password.clone());
    let owner = |password| OwnerProof {
        password,
        code: &code,
        client: ctx.client_ip(),
    };
    let result = match action {
        Action::Show => return Ok(Answer::page(StatusCode::OK, Done::Nothing)),
        Action::Password => {
            if fields.new_password_again.is_some()
                && fields.new_password_again != fields.new_password
            {
                return Ok(Answer::refused(
                    StatusCode::BAD_REQUEST,
                    "The new passwords do not match.",
                ));
            }
            authority
                .change_password(
                    settings,
                    principal,
                    &password(fields.current_password),
                    &password(fields.new_password),
                    ctx.client_ip(),
                    ctx.now,
                )
                .await
                .map(|()| Done::Changed("Your password is changed; every other session has ended."))
        }
        Action::EndSession => {
            let sid = fields.sid.unwrap_or_default();
            let own = sid == principal.claims.sid;
            let ended = authority
                .end_own_session(settings, principal, &sid, ctx.now)
                .await;
            if ended.is_ok() && own {
                return Ok(Answer::SignedOut);
            }
            ended.map(|()| Done::Changed("The session has ended."))
        }
        Action::BeginTotp => authority
            .begin_totp(
                settings,
                principal,
                &password(fields.current_password),
                ctx.client_ip(),
                ctx.now,
            )
            .await
            .map(Done::Enrolment),
        Action::ConfirmTotp => authority
            .confirm_totp(principal, &code, ctx.now)
            .await
            .map(|codes| Done::RecoveryCodes(codes, true)),
        Action::DisableTotp => authority
            .disable_totp(settings, principal, owner(&current), ctx.now)
            .await
            .map(|()| Done::Changed("Two-factor authentication is off.")),
        Action::RecoveryCodes => authority
            .new_recovery_codes(settings, principal, owner(&current), ctx.now)
            .await
            .map(|codes| Done::RecoveryCodes(codes, false)),
    };
    let outcome = if result.is_ok() { "success" } else { "failure" };
    tracing::info!(target: "audit", event = "account_page", action = ?action, username = %principal.username(), client = %client(ctx), outcome);
    match result {
        Ok(done) => Ok(Answer::page(StatusCode::OK, done)),
        Err(err) => refusal(err),
    }
}

/// A refused form as the page with a 4xx and a message that names no secret; server
/// errors stay errors.
fn refusal(err: AuthError) -> Result<Answer, ApiError> {
    let (status, message) = match &err {
        AuthError::WrongCurrentPassword | AuthError::WrongPasswordOrCode => (
            StatusCode::FORBIDDEN,
            "The password or code is incorrect. Nothing was changed.",
        ),
        AuthError::TooManyRequests { retry_after_secs } => {
            return Ok(Answer::Page(
                StatusCode::TOO_MANY_REQUESTS,
                Done::Refused("Too many failed attempts. Nothing was changed; try again later."),
                Some(*retry_after_secs),
            ));
        }
        AuthError::InvalidRequest(_) => (
            StatusCode::BAD_REQUEST,
            "That did not work: check what you typed and try again.",
        ),
        AuthError::Conflict(_) => (
            StatusCode::CONFLICT,
            "That cannot be done now: the page was out of date. Here it is again.",
        ),
        AuthError::NotFound(_) => (StatusCode::NOT_FOUND, "There is no such session."),
        _ => return Err(err.into()),
    };
    Ok(Answer::refused(status, message))
}

/// The page as the account is now (after the form's change).
fn render(ctx: &Ctx, principal: &Principal, status: StatusCode, done: Done) -> Response {
    let authority = &ctx.state.authority;
    let user = authority.get_user(principal.username()).ok();
    let sessions = authority
        .sessions(principal.username(), ctx.now)
        .unwrap_or_default();
    let must_enrol = authority
        .check_second_factor_policy(&ctx.settings, principal)
        .is_err();
    let notice = match &done {
        Done::Nothing => Notice::None,
        Done::Refused(message) => Notice::Error(message),
        Done::Changed(message) => Notice::Done(message),
        Done::Enrolment(enrolment) => Notice::Enrolment {
            secret: &enrolment.secret,
            otpauth_uri: &enrolment.otpauth_uri,
        },
        Done::RecoveryCodes(codes, first) => Notice::RecoveryCodes {
            codes,
            first: *first,
        },
    };
    account_page(
        status,
        &AccountView {
            username: principal.username(),
            roles: principal.roles(),
            sessions: &sessions,
            current_sid: &principal.claims.sid,
            totp_on: user.as_ref().is_some_and(|user| user.has_totp()),
            pending: user
                .as_ref()
                .and_then(|user| user.second_factor.as_ref())
                .is_some_and(|factor| factor.totp.is_none() && factor.pending.is_some()),
            must_enrol,
            notice,
        },
    )
}

/// This page's own address as an `rd`, when the rules allow it (its host inside
/// `cookie.allowed_redirect_domains`).
fn account_rd(ctx: &Ctx) -> Option<RedirectTarget> {
    let config = &ctx.settings.config.cookie;
    let host = ctx.headers.get(http::header::HOST)?.to_str().ok()?;
    let scheme = if config.secure { "https" } else { "http" };
    check_redirect(
        &format!("{scheme}://{host}/account"),
        &config.allowed_redirect_domains,
    )
    .ok()
}

/// `303` to the login page (which refreshes a session silently where it can), coming back
/// here when this page's address is an allowed `rd`.
fn to_login(ctx: &Ctx) -> Response {
    let location = login_url_with_rd("/login", account_rd(ctx).as_ref());
    let mut response = Response::new(Default::default());
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, location);
    }
    add_page_headers(&mut response);
    response
}

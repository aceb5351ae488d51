//! The browser routes of API.md "Browser sessions and forward-auth": `GET /login` (silent
//! refresh, else the form), `POST /login` (sets the session cookies) and `POST /logout`
//! (revokes the session, clears the cookies). They exist only while `cookie.enabled`,
//! answer errors as HTML pages, refuse to act on tossed cookies and expire the refresh
//! cookie of rev 3.

use std::collections::HashMap;

use http::header::{AUTHORIZATION, HeaderValue, LOCATION, SET_COOKIE};
use http::{Method, StatusCode};
use serde::Deserialize;
use warp::reply::Response;

use super::audit::{
    RefreshOutcome, RefreshVia, attempt_login, attempt_second_step, client, record_refresh,
};
use super::cookies::{
    Presented, carries_rev3_refresh_cookie, check_own_form_origin, check_same_site,
    clear_access_cookie, clear_refresh_cookie, cookie, presented, refresh_cookie_name,
    rev3_refresh_expiry, set_access_cookie, set_refresh_cookie, tossed,
};
use super::error::ApiError;
use super::pages::{CodeForm, LoginForm, add_page_headers, code_page, error_page, login_page};
use super::reply::no_content;
use super::request::{Accepts, Ctx, RawBody, decode_optional_body};
use crate::auth::AuthError;
use crate::auth::password::Password;
use crate::auth::redirect::{RedirectTarget, check_redirect};
use crate::auth::service::{Channel, MfaToken, RefreshToken, Refreshed, TokenPair};

/// `/login`, every method: `404` while cookies are disabled and `405` (as a page, with
/// `allow`) for a method it does not take, so the path never reaches the JSON fallback.
pub async fn login(
    ctx: Ctx,
    raw: RawBody,
    query: HashMap<String, String>,
    allow: &'static str,
) -> Response {
    if !ctx.settings.config.cookie.enabled {
        return ApiError::not_found().into_response();
    }
    let result = match ctx.method {
        Method::GET => login_page_or_refresh(&ctx, &query).await,
        Method::POST => login_submit(&ctx, raw, &query).await,
        _ => Err(ApiError::method_not_allowed(allow)),
    };
    finish(&ctx, result)
}

/// `/logout`, every method, as [`login`] does.
pub async fn logout(
    ctx: Ctx,
    raw: RawBody,
    query: HashMap<String, String>,
    allow: &'static str,
) -> Response {
    if !ctx.settings.config.cookie.enabled {
        return ApiError::not_found().into_response();
    }
    let result = match ctx.method {
        Method::POST => logout_submit(&ctx, raw, &query).await,
        _ => Err(ApiError::method_not_allowed(allow)),
    };
    finish(&ctx, result)
}

/// The answer of a browser route: errors as pages, and the refresh cookie of rev 3 expired
/// when the request carried one.
fn finish(ctx: &Ctx, result: Result<Response, ApiError>) -> Response {
    let mut response = result.unwrap_or_else(error_page);
    expire_rev3_refresh_cookie(ctx, &mut response);
    response
}

/// Adds a `Set-Cookie` removing the rev-3 refresh cookie (`Domain=<cookie.domain>`, sent to
/// every sibling) when the request carried it, in front of the answer's other cookies.
///
/// Under `Secure` it has a name of its own, so seeing it is knowing it. Without, it shares
/// the current refresh cookie's name and one such cookie may well be the current one: then
/// it is expired only where the current one is set or cleared, or when two of the name
/// arrive (an upgraded browser holding both), so the answers that leave the refresh cookie
/// alone (the grace, the form) stay free of it. Either way the expiry comes first: where the
/// two are one cookie in the browser (the login host is `cookie.domain` itself), the cookie
/// set after it is the one that stays.
fn expire_rev3_refresh_cookie(ctx: &Ctx, response: &mut Response) {
    let config = &ctx.settings.config.cookie;
    let Some(expiry) = rev3_refresh_expiry(config) else {
        return;
    };
    if !carries_rev3_refresh_cookie(&ctx.headers, config) {
        return;
    }
    let headers = response.headers_mut();
    if !config.secure {
        let name = format!("{}=", refresh_cookie_name(config));
        let sets_refresh_cookie = headers
            .get_all(SET_COOKIE)
            .iter()
            .any(|value| value.as_bytes().starts_with(name.as_bytes()));
        let both_arrived =
            presented(&ctx.headers, &refresh_cookie_name(config)) == Presented::Several;
        if !sets_refresh_cookie && !both_arrived {
            return;
        }
    }
    let others: Vec<HeaderValue> = headers.get_all(SET_COOKIE).iter().cloned().collect();
    headers.remove(SET_COOKIE);
    headers.append(SET_COOKIE, expiry);
    for value in others {
        headers.append(SET_COOKIE, value);
    }
}

/// Refuses a request carrying two cookies of the access or the refresh cookie's name: one
/// of them was planted by a sibling sub-domain (cookie tossing) and there is no telling
/// which. Answering with anything that leads back to an app (a silent refresh, a login)
/// would loop — the app's `/v1/verify` sees the pair again and sends the browser back here —
/// and clearing our cookies would leave the planted one alone in charge. So: a `400` page
/// saying what to do; the session cookies stay as they are.
fn check_not_tossed(ctx: &Ctx) -> Result<(), ApiError> {
    if !tossed(&ctx.headers, &ctx.settings.config.cookie) {
        return Ok(());
    }
    tracing::warn!(target: "audit", event = "cookie_tossing", client = %client(ctx), "two session cookies of one name: refused");
    Err(ApiError::invalid_request(
        "Your browser sent two session cookies of the same name; another site under this \
         domain may have set one. Delete this site's cookies, then sign in again.",
    ))
}

/// The `rd` of a request, checked: `None` when absent or empty, `400` when not allowed.
fn redirect_target(ctx: &Ctx, rd: Option<&str>) -> Result<Option<RedirectTarget>, ApiError> {
    match rd.filter(|rd| !rd.is_empty()) {
        None => Ok(None),
        Some(rd) => check_redirect(rd, &ctx.settings.config.cookie.allowed_redirect_domains)
            .map(Some)
            .map_err(|err| ApiError::invalid_request(err.to_string())),
    }
}

/// `303 See Other` to `rd`, or to `/` without one.
fn see_other(rd: Option<&RedirectTarget>) -> Response {
    see_other_location(rd.map_or("/", RedirectTarget::as_str))
}

fn see_other_location(location: &str) -> Response {
    let mut response = Response::new(Default::default());
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, location);
    }
    add_page_headers(&mut response);
    response
}

/// Sets both session cookies from a new token pair.
fn set_session_cookies(ctx: &Ctx, response: &mut Response, pair: &TokenPair) {
    let config = &ctx.settings.config.cookie;
    let headers = response.headers_mut();
    headers.append(
        SET_COOKIE,
        set_access_cookie(config, &pair.access_token, pair.expires_in),
    );
    headers.append(
        SET_COOKIE,
        set_refresh_cookie(config, pair.refresh_token.expose(), pair.refresh_expires_in),
    );
}

pub(super) fn clear_session_cookies(ctx: &Ctx, response: &mut Response) {
    let config = &ctx.settings.config.cookie;
    let headers = response.headers_mut();
    headers.append(SET_COOKIE, clear_access_cookie(config));
    headers.append(SET_COOKIE, clear_refresh_cookie(config));
}

/// `GET /login`: with a valid refresh cookie, refresh silently and go back to `rd`;
/// otherwise the form.
async fn login_page_or_refresh(
    ctx: &Ctx,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    check_not_tossed(ctx)?;
    let rd = redirect_target(ctx, query.get("rd").map(String::as_str))?;
    let form = LoginForm {
        rd: rd.as_ref(),
        ..LoginForm::default()
    };
    let config = &ctx.settings.config.cookie;
    let Some(presented) = cookie(&ctx.headers, &refresh_cookie_name(config)) else {
        return Ok(login_page(StatusCode::OK, &form));
    };
    let presented = RefreshToken::new(presented.to_owned());
    let result = ctx
        .state
        .authority
        .refresh(&ctx.settings, &presented, Channel::Cookie, ctx.now)
        .await;
    let outcome = match &result {
        Ok(Refreshed::Rotated(pair)) => RefreshOutcome::Rotated {
            username: &pair.username,
            sid: &pair.sid,
        },
        Ok(Refreshed::Grace { username, sid, .. }) => RefreshOutcome::Grace { username, sid },
        Err(err) => RefreshOutcome::Failed(err),
    };
    record_refresh(ctx, RefreshVia::Cookie, outcome);
    match result {
        Ok(Refreshed::Rotated(pair)) => {
            let mut response = see_other(rd.as_ref());
            set_session_cookies(ctx, &mut response, &pair);
            Ok(response)
        }
        Ok(Refreshed::Grace {
            access_token,
            expires_in,
            ..
        }) => {
            let mut response = see_other(rd.as_ref());
            response.headers_mut().append(
                SET_COOKIE,
                set_access_cookie(config, &access_token, expires_in),
            );
            Ok(response)
        }
        Err(AuthError::InvalidGrant(_)) => {
            // The cookies name a dead session: drop them and ask for the password.
            let mut response = login_page(StatusCode::OK, &form);
            clear_session_cookies(ctx, &mut response);
            Ok(response)
        }
        Err(err) => Err(err.into()),
    }
}

/// The fields of the login form (`rd` optional; other fields ignored): `username` and
/// `password` (and an optional `code`), or, for the second step, `mfa_token` and `code`.
#[derive(Deserialize)]
pub struct LoginFields {
    username: Option<String>,
    password: Option<String>,
    code: Option<String>,
    mfa_token: Option<String>,
    #[serde(default)]
    rd: Option<String>,
}

/// The same fields as JSON, where unknown fields are refused (API.md "Conventions").
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginJson {
    username: Option<String>,
    password: Option<String>,
    code: Option<String>,
    mfa_token: Option<String>,
    #[serde(default)]
    rd: Option<String>,
}

impl From<LoginFields> for LoginJson {
    fn from(form: LoginFields) -> Self {
        LoginJson {
            username: form.username,
            password: form.password,
            // An HTML form sends the empty fields it has.
            code: form.code.filter(|code| !code.is_empty()),
            mfa_token: form.mfa_token,
            rd: form.rd,
        }
    }
}

/// `POST /login`: checks the credentials like `/v1/login`; success sets both cookies and
/// goes to `rd` (or `/`), failure shows the form again. For an account with TOTP on, a
/// right password leads to the code form, whose post finishes the login.
async fn login_submit(
    ctx: &Ctx,
    raw: RawBody,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    // A login form posted from another site would sign the browser in as someone else.
    // The login page's own post carries `Origin: null` (see `check_own_form_origin`).
    check_own_form_origin(&ctx.headers, &ctx.settings.config.cookie)?;
    // Signing in here would send the browser back to an app that still sees both.
    check_not_tossed(ctx)?;
    let body = match decode_optional_body::<LoginJson, LoginFields>(ctx, raw, Accepts::JsonOrForm) {
        Ok(Some(body)) => body,
        Ok(None) => return Err(ApiError::invalid_request("request body is required")),
        Err(err) => return Err(err),
    };
    let rd = redirect_target(
        ctx,
        body.rd.as_deref().or(query.get("rd").map(String::as_str)),
    )?;
    if let Some(mfa_token) = &body.mfa_token {
        let code = body.code.as_deref().unwrap_or_default();
        return second_step_submit(ctx, mfa_token, code, rd.as_ref()).await;
    }
    let (Some(username), Some(password)) = (&body.username, body.password) else {
        return Err(ApiError::invalid_request(
            "username and password are required",
        ));
    };
    let password = Password::new(password);
    let attempt = attempt_login(
        ctx,
        username,
        &password,
        body.code.as_deref(),
        Channel::Cookie,
    )
    .await;
    match attempt {
        Ok(pair) => Ok(signed_in(ctx, rd.as_ref(), &pair)),
        Err(AuthError::MfaRequired(token)) => Ok(code_page(
            StatusCode::OK,
            &CodeForm {
                rd: rd.as_ref(),
                mfa_token: token.expose(),
                message: None,
            },
        )),
        Err(err) => {
            let shown: String = username.chars().take(64).collect();
            refused_login(err, rd.as_ref(), &shown)
        }
    }
}

/// The code form's post: a right code signs the browser in; a wrong one shows the form
/// again (`401`), a throttled one too (`429`); a dead `mfa_token` goes back to the login
/// form (`400`).
async fn second_step_submit(
    ctx: &Ctx,
    mfa_token: &str,
    code: &str,
    rd: Option<&RedirectTarget>,
) -> Result<Response, ApiError> {
    let token = MfaToken::new(mfa_token.to_owned());
    let (status, message) = match attempt_second_step(ctx, &token, code, Channel::Cookie).await {
        Ok(pair) => return Ok(signed_in(ctx, rd, &pair)),
        Err(AuthError::InvalidCredentials) => (
            StatusCode::UNAUTHORIZED,
            "The code is incorrect.".to_owned(),
        ),
        Err(AuthError::TooManyRequests { retry_after_secs }) => {
            let mut response = code_page(
                StatusCode::TOO_MANY_REQUESTS,
                &CodeForm {
                    rd,
                    mfa_token,
                    message: Some(&throttled_text(retry_after_secs)),
                },
            );
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs),
            );
            return Ok(response);
        }
        Err(AuthError::InvalidGrant(_)) => {
            return Ok(login_page(
                StatusCode::BAD_REQUEST,
                &LoginForm {
                    rd,
                    username: "",
                    message: Some(
                        "The sign-in expired or had too many wrong codes. Sign in again.",
                    ),
                },
            ));
        }
        Err(err) => return Err(err.into()),
    };
    Ok(code_page(
        status,
        &CodeForm {
            rd,
            mfa_token,
            message: Some(&message),
        },
    ))
}

/// `303` to `rd` (or `/`) with the session cookies of `pair` — or to the account page
/// when `mfa.required_roles` holds the user to a second factor this login did not use
/// (nothing else would let the session in).
fn signed_in(ctx: &Ctx, rd: Option<&RedirectTarget>, pair: &TokenPair) -> Response {
    let authority = &ctx.state.authority;
    let must_enrol = authority
        .authenticate(&ctx.settings, &pair.access_token, ctx.now)
        .is_ok_and(|principal| {
            authority
                .check_second_factor_policy(&ctx.settings, &principal)
                .is_err()
        });
    let mut response = if must_enrol {
        see_other_location("/account")
    } else {
        see_other(rd)
    };
    set_session_cookies(ctx, &mut response, pair);
    response
}

/// The login form again after a refused attempt, saying nothing about which part was wrong.
fn refused_login(
    err: AuthError,
    rd: Option<&RedirectTarget>,
    shown: &str,
) -> Result<Response, ApiError> {
    let (status, message) = match &err {
        // A disabled account gets the very page a wrong password gets: anything
        // else would tell whoever typed the password that it was right (API.md:
        // the failed form reveals neither which part was wrong nor the password).
        // The domain still leaves it out of the throttle counts, as for
        // `/v1/login`, whose JSON `account_disabled` is for API clients.
        AuthError::InvalidCredentials | AuthError::AccountDisabled => (
            StatusCode::UNAUTHORIZED,
            "The username or password is incorrect.".to_owned(),
        ),
        AuthError::TooManyRequests { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            throttled_text(*retry_after_secs),
        ),
        _ => return Err(err.into()),
    };
    let mut response = login_page(
        status,
        &LoginForm {
            rd,
            username: shown,
            message: Some(&message),
        },
    );
    if let AuthError::TooManyRequests { retry_after_secs } = err {
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs),
        );
    }
    Ok(response)
}

fn throttled_text(retry_after_secs: u64) -> String {
    format!(
        "Too many failed sign-in attempts. Try again in {}.",
        wait_text(retry_after_secs)
    )
}

/// "42 seconds", "3 minutes".
fn wait_text(seconds: u64) -> String {
    match seconds {
        0 | 1 => "a second".to_owned(),
        2..=90 => format!("{seconds} seconds"),
        _ => format!("{} minutes", seconds.div_ceil(60)),
    }
}

/// The optional body of `POST /logout`.
#[derive(Deserialize, Default)]
pub struct LogoutFields {
    #[serde(default)]
    rd: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogoutJson {
    #[serde(default)]
    rd: Option<String>,
}

impl From<LogoutFields> for LogoutJson {
    fn from(form: LogoutFields) -> Self {
        LogoutJson { rd: form.rd }
    }
}

/// `POST /logout`: revokes the session named by the bearer token, the access cookie or —
/// when that has expired — the refresh cookie; clears both cookies; `303` to `rd` or `204`.
///
/// Without a bearer token the answer is the same whether or not the cookies still named a
/// live session: the browser ends up logged out either way.
async fn logout_submit(
    ctx: &Ctx,
    raw: RawBody,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    // Which session the cookies name cannot be told, and clearing ours would leave the
    // planted ones in charge.
    check_not_tossed(ctx)?;
    let body = decode_optional_body::<LogoutJson, LogoutFields>(ctx, raw, Accepts::JsonOrForm)?
        .unwrap_or_default();
    let rd = redirect_target(
        ctx,
        body.rd.as_deref().or(query.get("rd").map(String::as_str)),
    )?;
    let authority = &ctx.state.authority;
    let config = &ctx.settings.config.cookie;
    if ctx.headers.contains_key(AUTHORIZATION) {
        let principal = authority
            .authenticate_fresh(&ctx.settings, ctx.bearer()?, ctx.now)
            .await?;
        end_session(ctx, &principal).await?;
    } else {
        check_same_site(&ctx.headers, config)?;
        let access = match cookie(&ctx.headers, &config.name) {
            Some(token) => Some(
                authority
                    .authenticate_fresh(&ctx.settings, token, ctx.now)
                    .await,
            ),
            None => None,
        };
        match access {
            Some(Ok(principal)) => end_session(ctx, &principal).await?,
            None | Some(Err(AuthError::InvalidToken(_))) => logout_by_refresh_cookie(ctx).await?,
            Some(Err(err)) => return Err(err.into()),
        }
    }
    let mut response = match &rd {
        Some(rd) => see_other(Some(rd)),
        None => {
            let mut response = no_content();
            add_page_headers(&mut response);
            response
        }
    };
    clear_session_cookies(ctx, &mut response);
    Ok(response)
}

async fn end_session(ctx: &Ctx, principal: &crate::auth::Principal) -> Result<(), ApiError> {
    ctx.state
        .authority
        .logout(&ctx.settings, principal, false, ctx.now)
        .await?;
    tracing::info!(target: "audit", event = "logout", via = "browser", username = %principal.username(), sid = %principal.claims.sid, all = false, client = %client(ctx), outcome = "success");
    Ok(())
}

async fn logout_by_refresh_cookie(ctx: &Ctx) -> Result<(), ApiError> {
    let config = &ctx.settings.config.cookie;
    let Some(presented) = cookie(&ctx.headers, &refresh_cookie_name(config)) else {
        return Ok(());
    };
    let presented = RefreshToken::new(presented.to_owned());
    if let Some(sid) = ctx
        .state
        .authority
        .logout_by_refresh(&ctx.settings, &presented, ctx.now)
        .await?
    {
        tracing::info!(target: "audit", event = "logout", via = "refresh_cookie", sid = %sid, all = false, client = %client(ctx), outcome = "success");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_said_in_words() {
        assert_eq!(wait_text(1), "a second");
        assert_eq!(wait_text(42), "42 seconds");
        assert_eq!(wait_text(900), "15 minutes");
    }
}

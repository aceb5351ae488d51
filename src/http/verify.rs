//! `/v1/verify`, the hot path of every app behind authd: checks the presented access token
//! (and `?role=`) and answers `200` with the caller in `X-Auth-User`/`X-Auth-Roles`. As a
//! reverse proxy's forward-auth target, a `401` while browser sessions are enabled also
//! shows the way to the login page: `X-Auth-Login` for proxies that build the redirect
//! themselves (nginx), or the `302` itself with `?redirect=1` for proxies that pass a failed
//! answer straight on (Caddy, Traefik). `X-Auth-MFA` says whether the session used a second
//! factor (`?mfa=1` demands one). Verify never sets cookies and never reads a body.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use http::header::{ACCEPT, CACHE_CONTROL, HeaderMap, HeaderName, HeaderValue, LOCATION};
use serde::Serialize;
use warp::reply::Response;

use super::error::ApiError;
use super::reply::json;
use super::request::Ctx;
use crate::auth::AuthError;
use crate::auth::redirect::{check_redirect, login_url_with_rd, original_url};
use crate::metrics::{VERIFICATIONS, count_outcome};
use crate::state::AppState;

const X_AUTH_LOGIN: &str = "x-auth-login";
const X_AUTH_USER: HeaderName = HeaderName::from_static("x-auth-user");
const X_AUTH_ROLES: HeaderName = HeaderName::from_static("x-auth-roles");
const X_AUTH_MFA: HeaderName = HeaderName::from_static("x-auth-mfa");

/// Answers `/v1/verify` (any method) from the request itself. [`super::Routes`] calls
/// it before warp's filter chain: this is the hot path. The body is dropped unread. An
/// internal error comes back unanswered, so that the caller logs it in the request's span.
pub async fn answer<B>(
    state: Arc<AppState>,
    request: http::Request<B>,
    peer: SocketAddr,
) -> Result<Response, ApiError> {
    let (parts, _body) = request.into_parts();
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|raw| serde_urlencoded::from_str(raw).unwrap_or_default())
        .unwrap_or_default();
    verify(&Ctx::from_parts(state, parts, Some(peer)), &query).await
}

async fn verify(ctx: &Ctx, query: &HashMap<String, String>) -> Result<Response, ApiError> {
    let err = match check_token(ctx, query).await {
        Ok(response) => return Ok(response),
        Err(Refusal::Api(err)) if err.status().is_server_error() => return Err(err),
        Err(Refusal::Api(err)) => err,
        Err(Refusal::MustEnrol(err)) => {
            let redirect =
                query.get("redirect").is_some_and(|v| v == "1") && accepts_html(&ctx.headers);
            return Ok(match HeaderValue::from_str(&account_location(ctx)) {
                Ok(account) if redirect => found(account),
                _ => err.into_response(),
            });
        }
    };
    let redirect = query.get("redirect").is_some_and(|v| v == "1") && accepts_html(&ctx.headers);
    let login = login_location(ctx).and_then(|url| HeaderValue::from_str(&url).ok());
    Ok(match login {
        Some(login) if err.status() == StatusCode::UNAUTHORIZED => {
            if redirect {
                found(login)
            } else {
                let mut response = err.into_response();
                response.headers_mut().insert(X_AUTH_LOGIN, login);
                response
            }
        }
        _ => err.into_response(),
    })
}

#[derive(Serialize)]
struct VerifyResponse<'a> {
    sub: &'a str,
    roles: &'a [String],
    exp: i64,
    jti: &'a str,
    sid: &'a str,
}

/// Why verify refused.
enum Refusal {
    Api(ApiError),
    /// `mfa.required_roles` holds the caller to a second factor the session lacks: with
    /// `?redirect=1` a browser goes to the account page to enrol.
    MustEnrol(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(err: ApiError) -> Refusal {
        Refusal::Api(err)
    }
}

impl From<AuthError> for Refusal {
    fn from(err: AuthError) -> Refusal {
        Refusal::Api(err.into())
    }
}

/// The token check itself, counted by outcome: `200` with the caller, or the error.
async fn check_token(ctx: &Ctx, query: &HashMap<String, String>) -> Result<Response, Refusal> {
    let count = |outcome: &'static str| count_outcome(VERIFICATIONS, outcome);
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
        .authenticate_fresh(&ctx.settings, token, ctx.now)
        .await;
    let wants_otp = query.get("mfa").is_some_and(|v| v == "1");
    let policy = result.as_ref().ok().map(|principal| {
        ctx.state
            .authority
            .check_second_factor_policy(&ctx.settings, principal)
    });
    let outcome = match (&result, &policy) {
        (Ok(_), Some(Err(_))) => "mfa_required",
        (Ok(principal), _) => match query.get("role") {
            Some(role) if !principal.has_role(role) => "insufficient_scope",
            _ if wants_otp && !principal.with_otp() => "insufficient_scope",
            _ => "valid",
        },
        (Err(AuthError::InvalidToken(reason)), _) => reason.label(),
        (Err(_), _) => "error",
    };
    count(outcome);
    let principal = result?;
    if let Some(Err(err)) = policy {
        return Err(Refusal::MustEnrol(err.into()));
    }
    if outcome == "insufficient_scope" {
        let missing = if query
            .get("role")
            .is_some_and(|role| !principal.has_role(role))
        {
            "the session lacks the required role"
        } else {
            "the session did not use a second factor"
        };
        return Err(ApiError::insufficient_scope(missing).into());
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
    headers.insert(
        X_AUTH_MFA,
        HeaderValue::from_static(if principal.with_otp() {
            "true"
        } else {
            "false"
        }),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A `302` to `location`, never cached.
fn found(location: HeaderValue) -> Response {
    let mut response = Response::new(Default::default());
    *response.status_mut() = StatusCode::FOUND;
    response.headers_mut().insert(LOCATION, location);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The account page, where a user held to a second factor enrols: next to the login page
/// (`cookie.login_url`'s origin), else authd's own `/account`.
fn account_location(ctx: &Ctx) -> String {
    let login_url = ctx.settings.config.cookie.login_url.as_deref();
    let origin = login_url.and_then(|url| {
        let (scheme, rest) = url.split_once("://")?;
        let host = rest.split(['/', '?', '#']).next()?;
        Some(format!("{scheme}://{host}"))
    });
    format!("{}/account", origin.unwrap_or_default())
}

/// `cookie.login_url` with the original URL as `rd` when the proxy named one that the
/// `rd` rules allow; `None` unless browser sessions are enabled with a login URL.
fn login_location(ctx: &Ctx) -> Option<String> {
    let config = &ctx.settings.config.cookie;
    if !config.enabled {
        return None;
    }
    let login_url = config.login_url.as_deref()?;
    let header = |name: &str| ctx.headers.get(name).and_then(|v| v.to_str().ok());
    let rd = original_url(
        header("x-original-url"),
        header("x-forwarded-proto"),
        header("x-forwarded-host"),
        header("x-forwarded-uri"),
    )
    .and_then(|url| check_redirect(&url, &config.allowed_redirect_domains).ok());
    Some(login_url_with_rd(login_url, rd.as_ref()))
}

/// Whether `Accept` lists `text/html` (with a non-zero quality): a browser navigating.
fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let refused = parts.any(|param| {
                param.split_once('=').is_some_and(|(key, value)| {
                    key.trim().eq_ignore_ascii_case("q")
                        && value.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                })
            });
            media.eq_ignore_ascii_case("text/html") && !refused
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::auth::password::Password;
    use crate::auth::service::Channel;
    use crate::http::testing::{START, test_state};

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn verify_request(token: Option<&str>) -> http::Request<()> {
        let mut request = http::Request::builder().uri("/v1/verify");
        if let Some(token) = token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(()).unwrap()
    }

    fn peer() -> SocketAddr {
        "192.0.2.1:40000".parse().unwrap()
    }

    #[tokio::test]
    async fn no_token_is_401_with_a_bearer_challenge() {
        let test = test_state(&[]).await;

        let response = answer(test.state.clone(), verify_request(None), peer())
            .await
            .unwrap();

        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[http::header::WWW_AUTHENTICATE],
            "Bearer realm=\"authd\""
        );
    }

    #[tokio::test]
    async fn a_token_stops_verifying_once_the_clock_passes_its_expiry() {
        let test = test_state(&[]).await;
        let settings = test.state.settings();
        let authority = &test.state.authority;
        let password = Password::new("correct horse battery".to_owned());
        authority
            .create_user(&settings, "alice", &password, vec![], START)
            .await
            .unwrap();
        let pair = authority
            .login(&settings, "alice", &password, None, Channel::Api, START)
            .await
            .unwrap();
        let token = Some(pair.access_token.as_str());

        let fresh = answer(test.state.clone(), verify_request(token), peer())
            .await
            .unwrap();
        let lifetime = settings.tokens.access_ttl() + settings.tokens.leeway();
        test.clock
            .advance(Duration::from_secs(u64::try_from(lifetime).unwrap() + 1));
        let expired = answer(test.state.clone(), verify_request(token), peer())
            .await
            .unwrap();

        assert_eq!(fresh.status(), StatusCode::OK);
        assert_eq!(fresh.headers()[X_AUTH_USER], "alice");
        assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn browsers_accept_html_and_api_clients_do_not() {
        assert!(accepts_html(&accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
        assert!(accepts_html(&accept("TEXT/HTML; q=0.5")));
        assert!(!accepts_html(&accept("application/json")));
        assert!(!accepts_html(&accept("*/*")));
        assert!(!accepts_html(&accept("text/html;q=0")));
        assert!(!accepts_html(&HeaderMap::new()));
    }
}

//! The HTTP API of API.md: the route tables of both listeners, the 404/405 fallback, and
//! small reply helpers. Handlers live in [`public`] and [`admin`]; errors become responses
//! in [`error`]; [`server`] runs a listener.

pub mod admin;
pub mod browser;
pub mod client_addr;
pub mod cookies;
pub mod error;
pub mod forward_auth;
pub mod pages;
pub mod public;
pub mod request;
pub mod server;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::state::AppState;
use error::ApiError;
use request::{PeerAddr, ctx, ctx_with_body, query};
use std::net::SocketAddr;
use tower_service::Service as _;

/// The media type of every JSON response (API.md "Conventions").
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// A JSON response.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(bytes.into());
    *response.status_mut() = status;
    // Room for the usual few (type, cache, request id, verify's X-Auth-*) without regrowing.
    response.headers_mut().reserve(8);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
    response
}

pub fn no_content() -> Response {
    let mut response = Response::new(Default::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// Seconds since the epoch as an RFC 3339 UTC string (clamped to 1970…9999: humantime
/// cannot format later years, and a token's `exp` can be anything up to i64::MAX).
pub fn rfc3339(seconds: i64) -> String {
    const LAST_SECOND_OF_9999: i64 = 253_402_300_799;
    let seconds = seconds.clamp(0, LAST_SECOND_OF_9999) as u64;
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    humantime::format_rfc3339_seconds(time).to_string()
}

async fn respond<F>(result: F) -> Response
where
    F: Future<Output = Result<Response, ApiError>>,
{
    result.await.unwrap_or_else(ApiError::into_response)
}

/// A route of a listener: its path template (also its metrics label) and the methods
/// it answers (for 405 and `Allow`).
struct KnownRoute {
    template: &'static str,
    allow: &'static str,
}

impl KnownRoute {
    fn matches(&self, path: &str) -> bool {
        if !self.template.contains('{') {
            return self.template == path;
        }
        let mut want = self.template.split('/');
        let mut have = path.split('/');
        loop {
            match (want.next(), have.next()) {
                (None, None) => return true,
                (Some(w), Some(h)) if w == h || (w.starts_with('{') && !h.is_empty()) => {}
                _ => return false,
            }
        }
    }
}

const PUBLIC_ROUTES: &[KnownRoute] = &[
    KnownRoute {
        template: "/v1/login",
        allow: "POST",
    },
    KnownRoute {
        template: "/v1/token/refresh",
        allow: "POST",
    },
    KnownRoute {
        template: "/v1/verify",
        allow: "GET, HEAD, POST, PUT, PATCH, DELETE",
    },
    KnownRoute {
        template: "/v1/logout",
        allow: "POST",
    },
    KnownRoute {
        template: "/v1/me",
        allow: "GET",
    },
    KnownRoute {
        template: "/v1/sessions",
        allow: "GET",
    },
    KnownRoute {
        template: "/v1/sessions/{sid}",
        allow: "DELETE",
    },
    KnownRoute {
        template: "/v1/password",
        allow: "POST",
    },
    KnownRoute {
        template: "/.well-known/jwks.json",
        allow: "GET",
    },
    KnownRoute {
        template: "/healthz",
        allow: "GET",
    },
    KnownRoute {
        template: "/readyz",
        allow: "GET",
    },
    // Browser routes: `browser::routes` answers every method on them itself (404 while
    // cookies are disabled), so these entries only name them for the metrics.
    KnownRoute {
        template: "/login",
        allow: "GET, POST",
    },
    KnownRoute {
        template: "/logout",
        allow: "POST",
    },
];

const ADMIN_ROUTES: &[KnownRoute] = &[
    KnownRoute {
        template: "/admin/v1/users",
        allow: "GET, POST",
    },
    KnownRoute {
        template: "/admin/v1/users/{username}",
        allow: "GET, PATCH, DELETE",
    },
    KnownRoute {
        template: "/admin/v1/users/{username}/sessions",
        allow: "GET",
    },
    KnownRoute {
        template: "/admin/v1/revocations",
        allow: "GET, POST",
    },
    KnownRoute {
        template: "/metrics",
        allow: "GET",
    },
];

fn find_route(routes: &'static [KnownRoute], path: &str) -> Option<&'static KnownRoute> {
    routes.iter().find(|route| route.matches(path))
}

/// Answers what no route took: `405` with `Allow` for a known path, else `404`.
fn fallback(
    routes: &'static [KnownRoute],
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    warp::path::full().map(move |path: warp::path::FullPath| {
        match find_route(routes, path.as_str()) {
            Some(route) => ApiError::method_not_allowed(route.allow).into_response(),
            None => ApiError::not_found().into_response(),
        }
    })
}

/// What a listener answers: warp's filter chain, plus `/v1/verify` on the public listener,
/// dispatched before the chain because every protected request of every app behind authd
/// comes through it (any method: nginx `auth_request` keeps the client's).
#[derive(Clone)]
pub struct Routes {
    filter: BoxedFilter<(Response,)>,
    verify: Option<Arc<AppState>>,
    known: &'static [KnownRoute],
}

const VERIFY_PATH: &str = "/v1/verify";

impl Routes {
    /// Any other warp filter served by [`server::serve`] (e.g. a test upstream): no direct
    /// routes, every request labelled `other`.
    pub fn from_filter(filter: BoxedFilter<(Response,)>) -> Routes {
        Routes {
            filter,
            verify: None,
            known: &[],
        }
    }

    pub fn public(state: Arc<AppState>) -> Routes {
        Routes {
            filter: public_routes(state.clone()),
            verify: Some(state),
            known: PUBLIC_ROUTES,
        }
    }

    pub fn admin(state: Arc<AppState>) -> Routes {
        Routes {
            filter: admin_routes(state),
            verify: None,
            known: ADMIN_ROUTES,
        }
    }

    /// Whether `request` is for a route answered before the filter chain (`/v1/verify`):
    /// see [`Routes::answer_directly`].
    pub fn is_direct<B>(&self, request: &http::Request<B>) -> bool {
        self.verify.is_some() && request.uri().path() == VERIFY_PATH
    }

    /// Answers a request for which [`Routes::is_direct`] holds, synchronously. `Err` is an
    /// internal error, still to be answered (and logged).
    pub fn answer_directly(
        &self,
        request: http::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> Result<Response, ApiError> {
        match &self.verify {
            Some(state) => forward_auth::answer(state.clone(), request, peer),
            None => Ok(ApiError::not_found().into_response()),
        }
    }

    /// Answers one request from `peer` through warp's filter chain.
    pub async fn answer(
        &self,
        mut request: http::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> Response {
        request.extensions_mut().insert(PeerAddr(peer));
        match warp::service(self.filter.clone()).call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// The metrics label of a path: its route template, or `other`.
    pub fn label(&self, path: &str) -> &'static str {
        if self.verify.is_some() && path == VERIFY_PATH {
            return VERIFY_PATH;
        }
        find_route(self.known, path).map_or("other", |r| r.template)
    }
}

/// The routes of the public listener (but `/v1/verify`, see [`Routes`]).
fn public_routes(state: Arc<AppState>) -> BoxedFilter<(Response,)> {
    let s = || state.clone();
    let login = warp::path!("v1" / "login")
        .and(warp::post())
        .and(ctx_with_body(s()))
        .then(|c, b| respond(public::login(c, b)));
    let refresh = warp::path!("v1" / "token" / "refresh")
        .and(warp::post())
        .and(ctx_with_body(s()))
        .then(|c, b| respond(public::refresh(c, b)));
    let me = warp::path!("v1" / "me")
        .and(warp::get())
        .and(ctx(s()))
        .then(|c| respond(public::me(c)));
    let logout = warp::path!("v1" / "logout")
        .and(warp::post())
        .and(ctx_with_body(s()))
        .then(|c, b| respond(public::logout(c, b)));
    let sessions = warp::path!("v1" / "sessions")
        .and(warp::get())
        .and(ctx(s()))
        .then(|c| respond(public::sessions(c)));
    let end_session = warp::path!("v1" / "sessions" / String)
        .and(warp::delete())
        .and(ctx(s()))
        .then(|sid, c| respond(public::end_session(sid, c)));
    let password = warp::path!("v1" / "password")
        .and(warp::post())
        .and(ctx_with_body(s()))
        .then(|c, b| respond(public::change_password(c, b)));
    let jwks = warp::path!(".well-known" / "jwks.json")
        .and(warp::get())
        .and(ctx(s()))
        .then(|c| respond(public::jwks(c)));
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .then(|| respond(public::healthz()));
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(ctx(s()))
        .then(|c| respond(public::readyz(c)));
    login
        .or(refresh)
        .unify()
        .or(me)
        .unify()
        .or(logout)
        .unify()
        .or(sessions)
        .unify()
        .or(end_session)
        .unify()
        .or(password)
        .unify()
        .or(jwks)
        .unify()
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(browser::routes(s()))
        .unify()
        .or(fallback(PUBLIC_ROUTES))
        .unify()
        .boxed()
}

/// The routes of the admin listener.
fn admin_routes(state: Arc<AppState>) -> BoxedFilter<(Response,)> {
    let s = || state.clone();
    let create_user = warp::path!("admin" / "v1" / "users")
        .and(warp::post())
        .and(ctx_with_body(s()))
        .then(|c, b| respond(admin::create_user(c, b)));
    let list_users = warp::path!("admin" / "v1" / "users")
        .and(warp::get())
        .and(ctx(s()))
        .and(query())
        .then(|c, q| respond(admin::list_users(c, q)));
    let get_user = warp::path!("admin" / "v1" / "users" / String)
        .and(warp::get())
        .and(ctx(s()))
        .then(|u, c| respond(admin::get_user(u, c)));
    let update_user = warp::path!("admin" / "v1" / "users" / String)
        .and(warp::patch())
        .and(ctx_with_body(s()))
        .then(|u, c, b| respond(admin::update_user(u, c, b)));
    let delete_user = warp::path!("admin" / "v1" / "users" / String)
        .and(warp::delete())
        .and(ctx(s()))
        .then(|u, c| respond(admin::delete_user(u, c)));
    let user_sessions = warp::path!("admin" / "v1" / "users" / String / "sessions")
        .and(warp::get())
        .and(ctx(s()))
        .then(|u, c| respond(admin::user_sessions(u, c)));
    let revoke = warp::path!("admin" / "v1" / "revocations")
        .and(warp::post())
        .and(ctx_with_body(s()))
        .then(|c, b| respond(admin::revoke(c, b)));
    let list_revocations = warp::path!("admin" / "v1" / "revocations")
        .and(warp::get())
        .and(ctx(s()))
        .and(query())
        .then(|c, q| respond(admin::list_revocations(c, q)));
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(ctx(s()))
        .then(|c| respond(admin::metrics(c)));
    create_user
        .or(list_users)
        .unify()
        .or(get_user)
        .unify()
        .or(update_user)
        .unify()
        .or(delete_user)
        .unify()
        .or(user_sessions)
        .unify()
        .or(revoke)
        .unify()
        .or(list_revocations)
        .unify()
        .or(metrics)
        .unify()
        .or(fallback(ADMIN_ROUTES))
        .unify()
        .boxed()
}

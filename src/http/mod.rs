//! The HTTP API of API.md: the route tables of both listeners, the 404/405 fallback, and
//! small reply helpers. Handlers live in [`public`] and [`admin`]; errors become responses
//! in [`error`]; [`server`] runs a listener.

pub mod admin;
pub mod error;
pub mod public;
pub mod request;
pub mod server;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

use crate::app::AppState;
use error::ApiError;
use request::{ctx, ctx_with_body, query};

/// A JSON response.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(bytes.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn no_content() -> Response {
    let mut response = Response::new(Default::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// Seconds since the epoch as an RFC 3339 UTC string.
pub fn rfc3339(seconds: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

async fn respond<F>(result: F) -> Response
where
    F: Future<Output = Result<Response, ApiError>>,
{
    result.await.unwrap_or_else(ApiError::into_response)
}

/// A known path and the methods it answers (for 405 and `Allow`).
struct KnownPath {
    segments: &'static [&'static str],
    allow: &'static str,
}

const PARAM: &str = "{}";

const PUBLIC_PATHS: &[KnownPath] = &[
    KnownPath { segments: &["v1", "login"], allow: "POST" },
    KnownPath { segments: &["v1", "token", "refresh"], allow: "POST" },
    KnownPath { segments: &["v1", "logout"], allow: "POST" },
    KnownPath { segments: &["v1", "me"], allow: "GET" },
    KnownPath { segments: &["v1", "sessions"], allow: "GET" },
    KnownPath { segments: &["v1", "sessions", PARAM], allow: "DELETE" },
    KnownPath { segments: &["v1", "password"], allow: "POST" },
    KnownPath { segments: &[".well-known", "jwks.json"], allow: "GET" },
    KnownPath { segments: &["healthz"], allow: "GET" },
    KnownPath { segments: &["readyz"], allow: "GET" },
];

const ADMIN_PATHS: &[KnownPath] = &[
    KnownPath { segments: &["admin", "v1", "users"], allow: "GET, POST" },
    KnownPath { segments: &["admin", "v1", "users", PARAM], allow: "GET, PATCH, DELETE" },
    KnownPath { segments: &["admin", "v1", "users", PARAM, "sessions"], allow: "GET" },
    KnownPath { segments: &["admin", "v1", "revocations"], allow: "GET, POST" },
];

/// Answers what no route took: `405` with `Allow` for a known path, else `404`.
fn fallback(known: &'static [KnownPath]) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    warp::path::full().map(move |path: warp::path::FullPath| {
        let segments: Vec<&str> = path.as_str().trim_matches('/').split('/').collect();
        let hit = known.iter().find(|known| {
            known.segments.len() == segments.len()
                && known
                    .segments
                    .iter()
                    .zip(&segments)
                    .all(|(k, s)| *k == PARAM || k == s)
        });
        match hit {
            Some(known) => ApiError::method_not_allowed(known.allow).into_response(),
            None => ApiError::not_found().into_response(),
        }
    })
}

/// The routes of the public listener.
pub fn public_routes(state: Arc<AppState>) -> BoxedFilter<(Response,)> {
    let s = || state.clone();
    let login = warp::path!("v1" / "login")
        .and(warp::post())
        .and(ctx_with_body(s()))
        .then(|c, b| respond(public::login(c, b)));
    let refresh = warp::path!("v1" / "token" / "refresh")
        .and(warp::post())
        .and(ctx_with_body(s()))
        .then(|c, b| respond(public::refresh(c, b)));
    // Any method: nginx auth_request keeps the client's method. The body is never read.
    let verify = warp::path!("v1" / "verify")
        .and(ctx(s()))
        .and(query())
        .then(|c, q| respond(public::verify(c, q)));
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
        .or(verify)
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
        .or(fallback(PUBLIC_PATHS))
        .unify()
        .boxed()
}

/// The routes of the admin listener.
pub fn admin_routes(state: Arc<AppState>) -> BoxedFilter<(Response,)> {
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
        .or(fallback(ADMIN_PATHS))
        .unify()
        .boxed()
}

//! The unauthenticated probes of the public listener: `GET /healthz` (the process
//! answers), `GET /readyz` (`503` while draining) and `GET /.well-known/jwks.json` (the
//! public verification keys).

use http::StatusCode;
use http::header::{CACHE_CONTROL, HeaderValue};
use warp::reply::Response;

use super::error::ApiError;
use super::reply::json;
use super::request::Ctx;

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
    if let Err(err) = ctx.state.authority.store().check_current() {
        return Err(ApiError::unavailable(err.to_string()));
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"status": "ready"}),
    ))
}

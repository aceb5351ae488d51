//! Small reply builders shared by every handler: JSON with API.md's media type, `204`, and
//! the RFC 3339 form of the times in JSON bodies.

use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use warp::reply::Response;

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

/// `204 No Content`.
pub fn no_content() -> Response {
    let mut response = Response::new(Default::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

pub use crate::clock::rfc3339;

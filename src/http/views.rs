//! The response shapes that more than one route answers with: a token pair, a session
//! list, a user and a revocation — so that the API and the admin API spell them one way.

use http::StatusCode;
use http::header::{CACHE_CONTROL, HeaderValue};
use serde::Serialize;
use warp::reply::Response;

use super::reply::{json, rfc3339};
use crate::auth::service::{TokenPair, User};
use crate::store::{RevocationRecord, SessionRecord};

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: i64,
    refresh_token: &'a str,
    refresh_expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery_codes_left: Option<usize>,
}

/// A token answer (login, refresh): never cached.
pub fn token_response(pair: &TokenPair) -> Response {
    let mut response = json(
        StatusCode::OK,
        &TokenResponse {
            access_token: &pair.access_token,
            token_type: "Bearer",
            expires_in: pair.expires_in,
            refresh_token: pair.refresh_token.expose(),
            refresh_expires_in: pair.refresh_expires_in,
            recovery_codes_left: pair.recovery_codes_left,
        },
    );
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Serialize)]
struct SessionView<'a> {
    sid: &'a str,
    created_at: String,
    last_refreshed_at: String,
    current: bool,
}

/// `{"sessions": [...]}`, marking the caller's own session when there is one.
pub fn sessions_response(sessions: &[SessionRecord], current_sid: Option<&str>) -> Response {
    let sessions: Vec<_> = sessions
        .iter()
        .map(|s| SessionView {
            sid: &s.sid,
            created_at: rfc3339(s.created_at),
            last_refreshed_at: rfc3339(s.last_refreshed_at),
            current: current_sid == Some(s.sid.as_str()),
        })
        .collect();
    json(StatusCode::OK, &serde_json::json!({ "sessions": sessions }))
}

/// A user as the admin API shows it.
#[derive(Serialize)]
pub struct UserView<'a> {
    username: &'a str,
    roles: &'a [String],
    disabled: bool,
    created_at: String,
    /// TOTP is on.
    mfa: bool,
}

impl<'a> From<&'a User> for UserView<'a> {
    fn from(user: &'a User) -> Self {
        UserView {
            username: &user.username,
            roles: &user.roles,
            disabled: user.disabled,
            created_at: rfc3339(user.created_at),
            mfa: user.has_totp(),
        }
    }
}

/// A revocation as the admin API lists it.
#[derive(Serialize)]
pub struct RevocationView<'a> {
    kind: &'static str,
    id: &'a str,
    expires_at: String,
    revoked_at: String,
    reason: Option<&'a str>,
}

impl<'a> From<&'a RevocationRecord> for RevocationView<'a> {
    fn from(entry: &'a RevocationRecord) -> Self {
        RevocationView {
            kind: entry.kind.as_str(),
            id: &entry.id,
            expires_at: rfc3339(entry.expires_at),
            revoked_at: rfc3339(entry.revoked_at),
            reason: entry.reason.as_deref(),
        }
    }
}

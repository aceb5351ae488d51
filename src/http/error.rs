//! The one place where errors become HTTP: API.md's status codes and OAuth-shaped JSON
//! (`{"error", "error_description"}`), with `WWW-Authenticate`, `Allow` and `Retry-After`
//! where the contract asks for them. Unexpected errors are logged and answered generically.

use http::StatusCode;
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE,
};
use serde::Serialize;
use warp::reply::Response;

use crate::auth::AuthError;
use crate::auth::service::MfaToken;
use crate::store::StoreError;

/// An error response of the HTTP API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    description: String,
    /// `Some(presented)` on a 401 of a bearer-protected route.
    bearer_challenge: Option<bool>,
    allow: Option<&'static str>,
    retry_after: Option<u64>,
    /// `401 mfa_required`: the token of the login's second step, in the body.
    mfa_token: Option<MfaToken>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mfa_token: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            description: description.into(),
            bearer_challenge: None,
            allow: None,
            retry_after: None,
            mfa_token: None,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub fn missing_token() -> ApiError {
        ApiError {
            bearer_challenge: Some(false),
            ..ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "missing bearer token",
            )
        }
    }

    /// `401 invalid_token` for a presented credential that is not the one the route takes.
    pub fn invalid_token(description: impl Into<String>) -> ApiError {
        ApiError {
            bearer_challenge: Some(true),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", description)
        }
    }

    pub fn insufficient_scope(description: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", description)
    }

    /// `403 forbidden`: a cookie-authenticated state change from another site.
    pub fn forbidden(description: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", description)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    pub fn method_not_allowed(allow: &'static str) -> ApiError {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        }
    }

    pub fn payload_too_large(limit: u64) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    }

    pub fn unsupported_media_type(accepted: &str) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content type must be {accepted}"),
        )
    }

    pub fn unavailable(description: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", description)
        }
    }

    fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The one-sentence `error_description` (for the HTML pages of the browser routes).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The second step's token of a `401 mfa_required`.
    pub fn mfa_token(&self) -> Option<&MfaToken> {
        self.mfa_token.as_ref()
    }

    pub fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            error: self.code,
            error_description: &self.description,
            mfa_token: self.mfa_token.as_ref().map(MfaToken::expose),
        })
        .unwrap_or_default();
        let mut response = Response::new(body.into());
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(super::reply::JSON_CONTENT_TYPE),
        );
        if let Some(presented) = self.bearer_challenge {
            let challenge = if presented {
                format!(
                    "Bearer realm=\"authd\", error=\"{}\", error_description=\"{}\"",
                    self.code,
                    self.description.replace(['"', '\\'], "'")
                )
            } else {
                "Bearer realm=\"authd\"".to_owned()
            };
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                headers.insert(WWW_AUTHENTICATE, value);
            }
        }
        if let Some(allow) = self.allow {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.mfa_token.is_some() {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> ApiError {
        use StatusCode as S;
        match err {
            AuthError::InvalidRequest(d) => ApiError::invalid_request(d),
            AuthError::InvalidCredentials => ApiError::new(
                S::UNAUTHORIZED,
                "invalid_credentials",
                "invalid username or password",
            ),
            AuthError::InvalidToken(reason) => ApiError {
                bearer_challenge: Some(true),
                ..ApiError::new(S::UNAUTHORIZED, "invalid_token", reason.to_string())
            },
            AuthError::InvalidGrant(d) => ApiError::new(S::BAD_REQUEST, "invalid_grant", d),
            AuthError::AccountDisabled => {
                ApiError::new(S::FORBIDDEN, "account_disabled", "account is disabled")
            }
            AuthError::TooManyRequests { retry_after_secs } => ApiError {
                retry_after: Some(retry_after_secs),
                ..ApiError::new(
                    S::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    "too many failed logins; try again later",
                )
            },
            AuthError::InsufficientScope(d) => ApiError::insufficient_scope(d),
            AuthError::WrongCurrentPassword => ApiError::new(
                S::FORBIDDEN,
                "invalid_credentials",
                "current password is wrong",
            ),
            AuthError::WrongPasswordOrCode => ApiError::new(
                S::FORBIDDEN,
                "invalid_credentials",
                "current password or code is wrong",
            ),
            AuthError::MfaRequired(token) => ApiError {
                mfa_token: Some(token),
                ..ApiError::new(
                    S::UNAUTHORIZED,
                    "mfa_required",
                    "a second factor is required: send the code with the mfa_token",
                )
            },
            AuthError::NotFound(d) => ApiError::new(S::NOT_FOUND, "not_found", d),
            AuthError::Conflict(d) => ApiError::new(S::CONFLICT, "conflict", d),
            AuthError::Store(StoreError::Unavailable(reason)) => {
                // No quorum, a stale view, a store still loading: the client may retry.
                tracing::warn!(reason = %reason, "the store is unavailable");
                ApiError::unavailable("the store is unavailable; try again shortly")
            }
            err @ (AuthError::Store(_)
            | AuthError::Password(_)
            | AuthError::Signing(_)
            | AuthError::SecondFactorKey(_)) => {
                tracing::error!(error = %err, "request failed");
                ApiError::internal()
            }
        }
    }
}

impl From<crate::feed::CursorError> for ApiError {
    fn from(err: crate::feed::CursorError) -> ApiError {
        match err {
            crate::feed::CursorError::Malformed => ApiError::invalid_request(err.to_string()),
            crate::feed::CursorError::OtherEpoch => {
                ApiError::new(StatusCode::GONE, "cursor_expired", err.to_string())
            }
        }
    }
}

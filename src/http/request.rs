//! What handlers get from a request: one settings snapshot and the time ([`Ctx`]), the body
//! read under the size limit and decoded by content type, the bearer token, the query.
//! These filters never reject: problems travel to the handler as [`ApiError`] values.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use http::HeaderMap;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use warp::Filter;

use super::error::ApiError;
use crate::auth::{Principal, Settings};
use crate::state::AppState;
use crate::store::UnixSeconds;

/// The peer address of the connection, put into the request by the server loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// One request's view of the daemon: a single settings snapshot, the time, the headers.
pub struct Ctx {
    pub state: Arc<AppState>,
    pub settings: Arc<Settings>,
    pub now: UnixSeconds,
    pub headers: HeaderMap,
    pub peer: Option<SocketAddr>,
    pub method: http::Method,
}

/// An access token as a request presented it.
#[derive(Debug, Clone, Copy)]
pub struct PresentedToken<'a> {
    pub token: &'a str,
    /// It came from the session cookie, not from `Authorization`.
    pub from_cookie: bool,
}

impl Ctx {
    /// The context of a request taken apart: its headers move in, nothing is copied.
    pub fn from_parts(
        state: Arc<AppState>,
        parts: http::request::Parts,
        peer: Option<SocketAddr>,
    ) -> Ctx {
        Ctx {
            settings: state.settings(),
            now: state.clock().now(),
            state,
            headers: parts.headers,
            peer,
            method: parts.method,
        }
    }

    /// The client's address: the peer, or the `X-Forwarded-For` address a trusted proxy
    /// vouches for (see [`super::client_addr`]).
    pub fn client_ip(&self) -> Option<IpAddr> {
        super::client_addr::client_ip(
            self.peer.map(|peer| peer.ip()),
            &self.headers,
            &self.settings.config.server.trusted_proxies,
        )
    }

    /// The access token of a bearer-protected public route: the `Authorization` header's,
    /// or — when browser sessions are enabled and no `Authorization` header was sent — the
    /// session cookie's. A cookie-borne token of a state change must pass the cross-site
    /// check (`403 forbidden`).
    pub fn access_token(&self) -> Result<PresentedToken<'_>, ApiError> {
        self.access_token_checked(super::cookies::check_same_site)
    }

    /// [`Ctx::access_token`] for the forms of authd's own pages (the account page), whose
    /// posts carry `Origin: null` (see [`super::cookies::check_own_form_origin`]).
    fn own_page_access_token(&self) -> Result<PresentedToken<'_>, ApiError> {
        self.access_token_checked(super::cookies::check_own_form_origin)
    }

    fn access_token_checked(
        &self,
        cross_site_check: fn(&HeaderMap, &crate::config::CookieConfig) -> Result<(), ApiError>,
    ) -> Result<PresentedToken<'_>, ApiError> {
        let cookies = &self.settings.config.cookie;
        if !cookies.enabled || self.headers.contains_key(AUTHORIZATION) {
            return self.bearer().map(|token| PresentedToken {
                token,
                from_cookie: false,
            });
        }
        let token = super::cookies::cookie(&self.headers, &cookies.name)
            .ok_or_else(ApiError::missing_token)?;
        if super::cookies::is_state_change(&self.method, &self.headers) {
            cross_site_check(&self.headers, cookies)?;
        }
        Ok(PresentedToken {
            token,
            from_cookie: true,
        })
    }

    /// The caller of a bearer-protected route: the access token of [`Ctx::access_token`],
    /// verified, and held to `mfa.required_roles` (a session without a second factor of a
    /// user who must have one: `403`).
    pub async fn principal(&self) -> Result<Principal, ApiError> {
        let principal = self.principal_enrolling().await?;
        self.state
            .authority
            .check_second_factor_policy(&self.settings, &principal)?;
        Ok(principal)
    }

    /// [`Ctx::principal`] for the routes a user who must enrol a second factor may still
    /// use (`/v1/me`, `/v1/mfa/*`, logout, the account page).
    pub async fn principal_enrolling(&self) -> Result<Principal, ApiError> {
        self.authenticate(self.access_token()?.token).await
    }

    /// The caller of the account page: as [`Ctx::principal_enrolling`], its forms checked
    /// with [`Ctx::own_page_access_token`].
    pub async fn principal_on_own_page(&self) -> Result<Principal, ApiError> {
        self.authenticate(self.own_page_access_token()?.token).await
    }

    async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        Ok(self
            .state
            .authority
            .authenticate_fresh(&self.settings, token, self.now)
            .await?)
    }

    /// The bearer token of the `Authorization` header.
    pub fn bearer(&self) -> Result<&str, ApiError> {
        let Some(value) = self.headers.get(AUTHORIZATION) else {
            return Err(ApiError::missing_token());
        };
        // A header value holds no control characters; `from_utf8` checks the rest far
        // faster than `to_str`'s byte-by-byte scan of a long token.
        let value = std::str::from_utf8(value.as_bytes()).map_err(|_| ApiError::missing_token())?;
        match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                let token = token.trim();
                if token.is_empty() {
                    Err(ApiError::missing_token())
                } else {
                    Ok(token)
                }
            }
            _ => Err(ApiError::missing_token()),
        }
    }
}

/// Extracts the [`Ctx`] of a request.
pub fn ctx(state: Arc<AppState>) -> impl Filter<Extract = (Ctx,), Error = Infallible> + Clone {
    warp::any()
        .map(move || state.clone())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<PeerAddr>())
        .and(warp::method())
        .map(
            |state: Arc<AppState>, headers, peer: Option<PeerAddr>, method| Ctx {
                settings: state.settings(),
                now: state.clock().now(),
                state,
                headers,
                peer: peer.map(|p| p.0),
                method,
            },
        )
}

/// The raw body, read up to the configured limit (chunked bodies included).
pub type RawBody = Result<Bytes, ApiError>;

/// Extracts the [`Ctx`] and the body read under `server.max_body_bytes`.
pub fn ctx_with_body(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Ctx, RawBody), Error = warp::Rejection> + Clone {
    ctx(state)
        .and(warp::body::stream())
        .then(|ctx: Ctx, body| async move {
            let limit = ctx.settings.config.server.max_body_bytes;
            let raw =
                tokio::time::timeout(BODY_READ_TIMEOUT, read_limited(&ctx.headers, body, limit))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ApiError::invalid_request(
                            "request body was not received in time",
                        ))
                    });
            (ctx, raw)
        })
        .untuple_one()
}

/// How long a client may take to send a body (at most `max_body_bytes`): a slow client
/// cannot hold a connection, and the shutdown drain, open by trickling bytes.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn read_limited<S, B>(headers: &HeaderMap, body: S, limit: u64) -> RawBody
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let mut body = std::pin::pin!(body);
    let mut collected = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|_| ApiError::invalid_request("request body could not be read"))?;
        if (collected.len() + chunk.remaining()) as u64 > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            collected.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(collected.freeze())
}

/// How a route accepts its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    Json,
    JsonOrForm,
}

enum MediaType {
    Json,
    Form,
}

fn media_type(headers: &HeaderMap) -> Option<Result<MediaType, ()>> {
    let value = headers.get(CONTENT_TYPE)?;
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Some(match essence.as_str() {
        "application/json" => Ok(MediaType::Json),
        "application/x-www-form-urlencoded" => Ok(MediaType::Form),
        _ => Err(()),
    })
}

/// Decodes a required body: `J` from JSON (which should deny unknown fields), or `F` from
/// a form when the route accepts forms (unknown form fields are ignored).
pub fn decode_body<J, F>(ctx: &Ctx, raw: RawBody, accepts: Accepts) -> Result<J, ApiError>
where
    J: DeserializeOwned + From<F>,
    F: DeserializeOwned,
{
    decode_optional_body::<J, F>(ctx, raw, accepts)?
        .ok_or_else(|| ApiError::invalid_request("request body is required"))
}

/// As [`decode_body`], but an empty body is `None`.
pub fn decode_optional_body<J, F>(
    ctx: &Ctx,
    raw: RawBody,
    accepts: Accepts,
) -> Result<Option<J>, ApiError>
where
    J: DeserializeOwned + From<F>,
    F: DeserializeOwned,
{
    let raw = raw?;
    let accepted = match accepts {
        Accepts::Json => "application/json",
        Accepts::JsonOrForm => "application/json or application/x-www-form-urlencoded",
    };
    match media_type(&ctx.headers) {
        None if raw.is_empty() => Ok(None),
        None | Some(Err(())) => Err(ApiError::unsupported_media_type(accepted)),
        Some(Ok(MediaType::Form)) if accepts == Accepts::Json => {
            Err(ApiError::unsupported_media_type(accepted))
        }
        Some(Ok(_)) if raw.is_empty() => Ok(None),
        // serde would also read a struct from an array of its fields: only objects count.
        Some(Ok(MediaType::Json))
            if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') =>
        {
            Err(ApiError::invalid_request(
                "request body must be a JSON object",
            ))
        }
        Some(Ok(MediaType::Json)) => serde_json::from_slice::<J>(&raw)
            .map(Some)
            .map_err(|err| ApiError::invalid_request(json_problem(&err))),
        Some(Ok(MediaType::Form)) => serde_urlencoded::from_bytes::<F>(&raw)
            .map(|form| Some(J::from(form)))
            .map_err(|err| {
                ApiError::invalid_request(format!(
                    "invalid form body: {}",
                    field_problem(&err.to_string())
                ))
            }),
    }
}

/// A one-sentence description of a JSON error that never echoes a submitted value.
fn json_problem(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            "request body is not valid JSON".to_owned()
        }
        Category::Data => format!("invalid request body: {}", field_problem(&err.to_string())),
    }
}

/// Keeps what a parser message says about fields (names are the client's own keys or ours)
/// and drops any value it quotes: "invalid type: string \"…\", expected a boolean" becomes
/// "wrong type or value, expected a boolean".
fn field_problem(message: &str) -> String {
    // Drop serde_json's " at line 1 column 7" tail: it means nothing to a client.
    let message = message.split(" at line ").next().unwrap_or(message);
    let about_fields = ["unknown field", "missing field", "duplicate field"];
    if let Some(prefix) = about_fields
        .iter()
        .find(|prefix| message.starts_with(**prefix))
    {
        // A field name is echoed only when it looks like one (a typo of ours, `pasword`):
        // a key is the client's text too, and a crafted one can carry a password, a
        // backtick or a line break. The sentence is rebuilt from checked parts.
        let quoted = message[prefix.len()..].trim_start();
        let (name, tail) = split_field_name(quoted);
        return match name {
            Some(name) if looks_like_a_field_name(name) && !tail.contains('\n') => {
                format!("{prefix} `{name}`{tail}")
            }
            _ => format!("{prefix} (its name is not shown)"),
        };
    }
    match message.rsplit_once(", expected ") {
        Some((_, expected)) if !expected.contains('"') => {
            format!("wrong type or value, expected {expected}")
        }
        _ => "a field has the wrong type or value".to_owned(),
    }
}

/// Splits serde's "`NAME`, expected …" (or "`NAME`") into the name and what follows it. The
/// name may itself hold backticks, so the split is at serde's own suffix, from the end.
fn split_field_name(quoted: &str) -> (Option<&str>, &str) {
    let Some(inner) = quoted.strip_prefix('`') else {
        return (None, "");
    };
    if let Some(at) = inner.rfind("`, expected ") {
        return (Some(&inner[..at]), &inner[at + 1..]);
    }
    (inner.strip_suffix('`'), "")
}

/// 1–64 ASCII letters, digits, `_` or `-`: what a field name of any API looks like.
fn looks_like_a_field_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The query string as key/value pairs (empty when absent or unparsable).
pub fn query() -> impl Filter<Extract = (HashMap<String, String>,), Error = Infallible> + Clone {
    warp::query::raw()
        .map(|raw: String| serde_urlencoded::from_str(&raw).unwrap_or_default())
        .or(warp::any().map(HashMap::new))
        .unify()
}

/// `limit` and `after` of a list route: default 100, clamped to 1000; 0, negative or
/// non-numeric is refused.
pub fn paging(query: &HashMap<String, String>) -> Result<(usize, Option<String>), ApiError> {
    let limit = match query.get("limit") {
        None => 100,
        Some(raw) => {
            let digits = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
            if !digits || raw.bytes().all(|b| b == b'0') {
                return Err(ApiError::invalid_request(
                    "limit must be a positive integer",
                ));
            }
            // Any positive number past the cap, however long, is just "the most".
            raw.parse::<usize>().map_or(1000, |n| n.min(1000))
        }
    };
    Ok((limit, query.get("after").cloned()))
}

#[cfg(test)]
mod tests {
    use super::field_problem;

    #[test]
    fn a_field_name_is_echoed_only_when_it_looks_like_one() {
        assert_eq!(
            field_problem("unknown field `pasword`, expected `username` or `password`"),
            "unknown field `pasword`, expected `username` or `password`"
        );
        // A key that carries a form body (and its password) is not repeated.
        let crafted =
            "unknown field `a&password=hunter2hunter2`, expected `username` or `password`";
        let described = field_problem(crafted);
        assert!(!described.contains("hunter2"), "{described}");
        assert_eq!(described, "unknown field (its name is not shown)");
        assert_eq!(
            field_problem("duplicate field `the password is hunter2`"),
            "duplicate field (its name is not shown)"
        );
        assert_eq!(
            field_problem("missing field `password` at line 1 column 20"),
            "missing field `password`"
        );
        // A name with a backtick and a line break of its own (found by the fuzz target).
        assert_eq!(
            field_problem("unknown field `m`\nbophud`, expected `username` or `password`"),
            "unknown field (its name is not shown)"
        );
    }

    #[test]
    fn quoted_values_are_never_repeated() {
        let described = field_problem(
            "invalid type: string \"hunter2\", expected a boolean at line 1 column 9",
        );
        assert_eq!(described, "wrong type or value, expected a boolean");
    }
}

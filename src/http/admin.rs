//! Handlers of the admin listener: users, revocations, the cluster's members, backups
//! and `/metrics`. Every route first
//! checks the admin credential: the admin API token or an access token with the `admin`
//! role (`/metrics` only when the listener is not on loopback).

use std::collections::HashMap;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use warp::Reply as _;
use warp::reply::Response;

use super::error::ApiError;
use super::reply::{json, no_content, rfc3339};
use super::request::{Accepts, Ctx, RawBody, decode_body, paging};
use super::server::Streaming;
use super::views::{RevocationView, UserView, sessions_response};
use crate::auth::AuthError;
use crate::auth::password::Password;
use crate::auth::service::{RevocationTarget, UserChanges};
use crate::store::MemberRecord;

/// Who is acting through the admin API, for the audit log.
async fn authorize(ctx: &Ctx) -> Result<String, ApiError> {
    let credential = ctx.bearer()?;
    if ctx.settings.admin_token.matches(credential) {
        return Ok("admin-token".to_owned());
    }
    let principal = ctx
        .state
        .authority
        .authenticate_fresh(&ctx.settings, credential, ctx.now)
        .await?;
    if principal.has_role("admin") {
        ctx.state
            .authority
            .check_second_factor_policy(&ctx.settings, &principal)?;
        Ok(principal.username().to_owned())
    } else {
        Err(ApiError::insufficient_scope("the admin role is required"))
    }
}

/// JSON bodies only: the admin API has no form clients.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    username: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserBody {
    password: Option<String>,
    roles: Option<Vec<String>>,
    disabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    jti: Option<String>,
    token: Option<String>,
    sid: Option<String>,
    username: Option<String>,
    reason: Option<String>,
}

pub async fn create_user(ctx: Ctx, raw: RawBody) -> Result<Response, ApiError> {
    let actor = authorize(&ctx).await?;
    let body: CreateUserBody = decode_body::<_, CreateUserBody>(&ctx, raw, Accepts::Json)?;
    let user = ctx
        .state
        .authority
        .create_user(
            &ctx.settings,
            &body.username,
            &Password::new(body.password),
            body.roles,
            ctx.now,
        )
        .await?;
    tracing::info!(target: "audit", event = "user_created", username = %user.username, actor = %actor);
    Ok(json(StatusCode::CREATED, &UserView::from(&user)))
}

pub async fn list_users(ctx: Ctx, query: HashMap<String, String>) -> Result<Response, ApiError> {
    authorize(&ctx).await?;
    let (limit, after) = paging(&query)?;
    let (users, next) = ctx
        .state
        .authority
        .list_users(after.as_deref(), limit)
        .await?;
    let users: Vec<_> = users.iter().map(UserView::from).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "users": users, "next": next }),
    ))
}

pub async fn get_user(username: String, ctx: Ctx) -> Result<Response, ApiError> {
    authorize(&ctx).await?;
    let user = ctx.state.authority.get_user(&percent_decode(&username))?;
    Ok(json(StatusCode::OK, &UserView::from(&user)))
}

pub async fn update_user(username: String, ctx: Ctx, raw: RawBody) -> Result<Response, ApiError> {
    let actor = authorize(&ctx).await?;
    let body: UpdateUserBody = decode_body::<_, UpdateUserBody>(&ctx, raw, Accepts::Json)?;
    let changes = UserChanges {
        password: body.password.map(Password::new),
        roles: body.roles,
        disabled: body.disabled,
    };
    let user = ctx
        .state
        .authority
        .update_user(&ctx.settings, &percent_decode(&username), changes, ctx.now)
        .await?;
    tracing::info!(target: "audit", event = "user_updated", username = %user.username, actor = %actor);
    Ok(json(StatusCode::OK, &UserView::from(&user)))
}

pub async fn delete_user(username: String, ctx: Ctx) -> Result<Response, ApiError> {
    let actor = authorize(&ctx).await?;
    let username = percent_decode(&username);
    ctx.state
        .authority
        .delete_user(&ctx.settings, &username, ctx.now)
        .await?;
    tracing::info!(target: "audit", event = "user_deleted", username = %username.to_ascii_lowercase(), actor = %actor);
    Ok(no_content())
}

/// `DELETE /admin/v1/users/{username}/mfa`: removes every bit of the user's second factor
/// and ends every session (also when TOTP was off).
pub async fn reset_mfa(username: String, ctx: Ctx) -> Result<Response, ApiError> {
    let actor = authorize(&ctx).await?;
    let username = percent_decode(&username);
    ctx.state
        .authority
        .reset_second_factor(&ctx.settings, &username, ctx.now)
        .await?;
    tracing::info!(target: "audit", event = "mfa_reset", username = %username.to_ascii_lowercase(), actor = %actor);
    Ok(no_content())
}

pub async fn revoke(ctx: Ctx, raw: RawBody) -> Result<Response, ApiError> {
    let actor = authorize(&ctx).await?;
    let body: RevokeBody = decode_body::<_, RevokeBody>(&ctx, raw, Accepts::Json)?;
    let target = match (body.jti, body.token, body.sid, body.username) {
        (Some(jti), None, None, None) => RevocationTarget::Jti(jti),
        (None, Some(token), None, None) => RevocationTarget::Token(token),
        (None, None, Some(sid), None) => RevocationTarget::Sid(sid),
        (None, None, None, Some(username)) => RevocationTarget::Username(username),
        _ => {
            return Err(ApiError::invalid_request(
                "exactly one of jti, token, sid or username is required",
            ));
        }
    };
    if body.reason.as_ref().is_some_and(|r| r.len() > 512) {
        return Err(ApiError::invalid_request(
            "reason must be at most 512 bytes",
        ));
    }
    let entry = ctx
        .state
        .authority
        .revoke(&ctx.settings, target, body.reason, ctx.now)
        .await?;
    tracing::info!(target: "audit", event = "revoked", kind = entry.kind.as_str(), id = %entry.id, actor = %actor);
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "revoked": entry.id, "kind": entry.kind.as_str() }),
    ))
}

pub async fn list_revocations(
    ctx: Ctx,
    query: HashMap<String, String>,
) -> Result<Response, ApiError> {
    authorize(&ctx).await?;
    let (limit, after) = paging(&query)?;
    let after = match after {
        Some(cursor) => Some(
            cursor
                .parse::<u64>()
                .map_err(|_| ApiError::invalid_request("after is not a cursor from this list"))?,
        ),
        None => None,
    };
    let (entries, next) = ctx.state.authority.list_revocations(after, limit).await?;
    let entries: Vec<_> = entries.iter().map(RevocationView::from).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "revocations": entries, "next": next.map(|n| n.to_string()) }),
    ))
}

/// A member of `GET /admin/v1/cluster`.
#[derive(Serialize)]
struct MemberView<'a> {
    node: &'a str,
    version: &'a str,
    public_addr: &'a str,
    started_at: String,
    last_seen: String,
    signing_kid: &'a str,
    keyset: &'a str,
}

impl<'a> From<&'a MemberRecord> for MemberView<'a> {
    fn from(member: &'a MemberRecord) -> MemberView<'a> {
        MemberView {
            node: &member.node,
            version: &member.version,
            public_addr: &member.public_addr,
            started_at: rfc3339(member.started_at),
            last_seen: rfc3339(member.last_seen),
            signing_kid: &member.signing_kid,
            keyset: &member.keyset,
        }
    }
}

/// The deployment's live instances (API.md rev 4): the store's member list in cluster
/// mode; on sled, where the one process is all there is, this instance described now.
pub async fn cluster(ctx: Ctx) -> Result<Response, ApiError> {
    authorize(&ctx).await?;
    let store = ctx.state.authority.store();
    let mut members = match store.members().await.map_err(AuthError::from)? {
        Some(members) => members,
        None => {
            let instance = ctx.state.instance.get().ok_or_else(|| {
                ApiError::unavailable("this instance is still starting; try again shortly")
            })?;
            vec![crate::cluster::describe(
                instance,
                &ctx.settings.keys,
                ctx.now,
            )]
        }
    };
    members.sort_by(|a, b| a.node.cmp(&b.node));
    let members: Vec<MemberView<'_>> = members.iter().map(MemberView::from).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "backend": store.backend_name(), "members": members }),
    ))
}

/// `GET /admin/v1/backup`: every record as JSON lines, streamed while the store is read at
/// one revision. A backup that stops early lacks its end line, and restores refuse it.
pub async fn backup(ctx: Ctx) -> Result<Response, ApiError> {
    let actor = authorize(&ctx).await?;
    let store = ctx.state.authority.store();
    // Unknown until an etcd store has loaded: 503 now beats a body that breaks off.
    store.epoch().map_err(AuthError::from)?;
    tracing::info!(target: "audit", event = "backup", actor = %actor);
    let about = crate::backup::About {
        created_at: ctx.now,
        mfa_key: Some(ctx.state.authority.mfa_key_fingerprint().to_owned()),
    };
    let mut response =
        warp::reply::stream(crate::backup::Backup::start(store.clone(), about)).into_response();
    // A backup of a large store takes longer than a connection may sit idle.
    response.extensions_mut().insert(Streaming);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/jsonl"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// Decodes `%XX` escapes of a path segment (e.g. `%40` for `@`); invalid escapes stay.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn user_sessions(username: String, ctx: Ctx) -> Result<Response, ApiError> {
    authorize(&ctx).await?;
    let sessions = ctx
        .state
        .authority
        .sessions(&percent_decode(&username), ctx.now)?;
    Ok(sessions_response(&sessions, None))
}

/// Prometheus metrics. Open on a loopback admin listener (the socket really bound or
/// passed, not the configured address); otherwise the admin credential is needed as on
/// every admin route.
pub async fn metrics(ctx: Ctx) -> Result<Response, ApiError> {
    if !ctx.state.admin_addr.ip().is_loopback() {
        authorize(&ctx).await?;
    }
    let authority = &ctx.state.authority;
    if let Ok(entries) = authority.revocation_count().await {
        metrics::gauge!(crate::metrics::REVOCATION_ENTRIES).set(entries as f64);
    }
    metrics::gauge!(crate::metrics::HASH_QUEUE_DEPTH).set(authority.hasher().queue_depth() as f64);
    // Cluster mode: how long ago an etcd quorum last confirmed this instance's view.
    if let Some(age) = authority.store().view_age() {
        metrics::gauge!(crate::metrics::VIEW_AGE).set(age.as_secs_f64());
    }
    let sizes = authority.throttle().sizes();
    for (table, size) in [
        ("pairs", sizes.pairs),
        ("usernames", sizes.usernames),
        ("addresses", sizes.addresses),
        ("known_pairs", sizes.known_pairs),
    ] {
        metrics::gauge!(crate::metrics::THROTTLE_TRACKED, "table" => table).set(size as f64);
    }
    let mut response = Response::new(crate::metrics::render().into());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

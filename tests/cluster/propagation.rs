//! A write acknowledged by one instance holds on every instance (API.md "Cluster mode on
//! etcd"): a login on A is usable on B and C at once (a token whose session an instance does
//! not know yet gets one linearizable read before a `401`), and every kind of revocation
//! made on A is refused on A at once and on B and C within 1 s.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::common::{PASSWORD, assert_error, claims, text, within_timeout};
use crate::deployment::{Deployment, SERIAL, verify_status};
use crate::need_etcd;

/// How long another instance may take to refuse a token revoked on A.
const PROPAGATION: Duration = Duration::from_secs(1);

/// Creates `user` on A.
async fn user(d: &Deployment, user: &str) {
    d.node(0).add_user(user, &[]).await;
}

/// Logs `user` in on A; its access token works on B and C at the first request.
async fn login_everywhere(d: &Deployment, user: &str) -> Value {
    let tokens = d.node(0).login(user).await;
    fresh_everywhere(d, text(&tokens["access_token"]), user).await;
    tokens
}

/// A token just issued by A verifies on B and C at the first request (no retry).
async fn fresh_everywhere(d: &Deployment, access: &str, what: &str) {
    for i in [1, 2] {
        assert_eq!(
            verify_status(d.node(i), access).await,
            StatusCode::OK,
            "{what}: a token issued on A, first request on authd {i}"
        );
    }
}

/// `token` is refused on A at once (read your writes) and on B and C within
/// [`PROPAGATION`] of `answered` (when A answered the revoking request).
async fn refused_everywhere(d: &Deployment, token: &str, answered: Instant, what: &str) {
    assert_eq!(
        verify_status(d.node(0), token).await,
        StatusCode::UNAUTHORIZED,
        "{what}: on A, at once"
    );
    let deadline = answered + PROPAGATION;
    for i in [1, 2] {
        loop {
            let status = verify_status(d.node(i), token).await;
            if status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: authd {i} still answers {status} {PROPAGATION:?} after A revoked"
            );
            tokio::time::sleep(crate::common::POLL).await;
        }
    }
}

fn jti(token: &str) -> String {
    text(&claims(token)["jti"]).to_owned()
}

fn sid(token: &str) -> String {
    text(&claims(token)["sid"]).to_owned()
}

/// Sends a revocation body to A's admin API, asserts `200`, returns when it answered.
async fn admin_revoke(d: &Deployment, body: Value) -> Instant {
    let response = d.node(0).revoke(body.clone()).await;
    assert_eq!(response.status(), StatusCode::OK, "revoke {body}");
    Instant::now()
}

#[tokio::test]
async fn a_login_works_everywhere_at_once_and_every_revocation_reaches_every_instance_within_1s() {
    need_etcd!();
    let _serial = SERIAL.lock().await;
    within_timeout(async {
        let d = Deployment::start(10, &[]).await;
        let a = d.node(0);

        // Admin revocation of one jti.
        user(&d, "by-jti").await;
        let tokens = login_everywhere(&d, "by-jti").await;
        let access = text(&tokens["access_token"]);
        let answered = admin_revoke(&d, json!({"jti": jti(access)})).await;
        refused_everywhere(&d, access, answered, "admin jti").await;

        // Admin revocation of one session.
        user(&d, "by-sid").await;
        let tokens = login_everywhere(&d, "by-sid").await;
        let access = text(&tokens["access_token"]);
        let answered = admin_revoke(&d, json!({"sid": sid(access)})).await;
        refused_everywhere(&d, access, answered, "admin sid").await;

        // Admin revocation of every session of a username.
        user(&d, "by-username").await;
        let first = login_everywhere(&d, "by-username").await;
        let second = login_everywhere(&d, "by-username").await;
        let answered = admin_revoke(&d, json!({"username": "by-username"})).await;
        refused_everywhere(&d, text(&first["access_token"]), answered, "admin username").await;
        refused_everywhere(
            &d,
            text(&second["access_token"]),
            answered,
            "admin username",
        )
        .await;

        // Logout of one session.
        user(&d, "logout").await;
        let tokens = login_everywhere(&d, "logout").await;
        let access = text(&tokens["access_token"]);
        let response = a.logout(access, None).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "logout");
        refused_everywhere(&d, access, Instant::now(), "logout").await;

        // Logout of every session.
        user(&d, "logout-all").await;
        let first = login_everywhere(&d, "logout-all").await;
        let second = login_everywhere(&d, "logout-all").await;
        let response = a
            .logout(text(&first["access_token"]), Some(json!({"all": true})))
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "logout all");
        let answered = Instant::now();
        refused_everywhere(&d, text(&first["access_token"]), answered, "logout all").await;
        refused_everywhere(&d, text(&second["access_token"]), answered, "logout all").await;

        // A user ending another of their sessions.
        user(&d, "end-session").await;
        let keeper = login_everywhere(&d, "end-session").await;
        let ended = login_everywhere(&d, "end-session").await;
        let ended_access = text(&ended["access_token"]);
        let response = a
            .end_session(text(&keeper["access_token"]), &sid(ended_access))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::NO_CONTENT,
            "DELETE /v1/sessions"
        );
        refused_everywhere(
            &d,
            ended_access,
            Instant::now(),
            "DELETE /v1/sessions/{sid}",
        )
        .await;

        // Admin disable.
        user(&d, "disabled").await;
        let tokens = login_everywhere(&d, "disabled").await;
        let response = a.update_user("disabled", json!({"disabled": true})).await;
        assert_eq!(response.status(), StatusCode::OK, "disable");
        refused_everywhere(
            &d,
            text(&tokens["access_token"]),
            Instant::now(),
            "admin disable",
        )
        .await;

        // Admin delete.
        user(&d, "deleted").await;
        let tokens = login_everywhere(&d, "deleted").await;
        let response = a.delete_user("deleted").await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "delete");
        refused_everywhere(
            &d,
            text(&tokens["access_token"]),
            Instant::now(),
            "admin delete",
        )
        .await;

        // Admin password change.
        user(&d, "admin-password").await;
        let tokens = login_everywhere(&d, "admin-password").await;
        let response = a
            .update_user(
                "admin-password",
                json!({"password": "an admin-set password"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "admin password change");
        refused_everywhere(
            &d,
            text(&tokens["access_token"]),
            Instant::now(),
            "admin password change",
        )
        .await;

        // POST /v1/password: every other session ends, the caller's stays.
        user(&d, "own-password").await;
        let other = login_everywhere(&d, "own-password").await;
        let own = login_everywhere(&d, "own-password").await;
        let own_access = text(&own["access_token"]);
        let response = a
            .change_password(own_access, PASSWORD, "a self-chosen password")
            .await;
        assert_eq!(
            response.status(),
            StatusCode::NO_CONTENT,
            "POST /v1/password"
        );
        refused_everywhere(
            &d,
            text(&other["access_token"]),
            Instant::now(),
            "POST /v1/password",
        )
        .await;
        for i in 0..3 {
            assert_eq!(
                verify_status(d.node(i), own_access).await,
                StatusCode::OK,
                "POST /v1/password keeps the caller's own session, on authd {i}"
            );
        }

        // Refresh reuse: the whole session, the rotated tokens too.
        user(&d, "reuse").await;
        let tokens = login_everywhere(&d, "reuse").await;
        let old_refresh = text(&tokens["refresh_token"]);
        let response = a.refresh(old_refresh).await;
        assert_eq!(response.status(), StatusCode::OK, "first refresh");
        let rotated: Value = response.json().await.unwrap();
        fresh_everywhere(&d, text(&rotated["access_token"]), "a refreshed token").await;
        assert_error(
            a.refresh(old_refresh).await,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        )
        .await;
        let answered = Instant::now();
        refused_everywhere(&d, text(&tokens["access_token"]), answered, "refresh reuse").await;
        refused_everywhere(
            &d,
            text(&rotated["access_token"]),
            answered,
            "refresh reuse",
        )
        .await;
        assert_error(
            d.node(1).refresh(text(&rotated["refresh_token"])).await,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        )
        .await;
    })
    .await;
}

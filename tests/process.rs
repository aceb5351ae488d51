//! The real `authd` binary as an operator runs it (API.md "Signals and lifecycle" and the
//! durability rule of "Conventions"): `kill -9` right after an acknowledged change, SIGTERM,
//! and SIGHUP reloads. Each test starts `authd serve --config FILE` on a config derived from
//! the shipped `config.toml`, learns the bound ports from its JSON `listening` log line, and
//! kills the child when it ends, whatever happens (the harness in `tests/common`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use common::{
    Daemon, claims, config_text, config_with, message, text, within_timeout, write_config,
};

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_changes_survive_kill_dash_9() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_text("15m"));
        let daemon = Daemon::start(dir.path()).await;
        daemon.add_user("alice", &[]).await;
        let revoked = daemon.login("alice").await;
        let rotated = daemon.login("alice").await;
        let response = daemon.refresh(text(&rotated["refresh_token"])).await;
        assert_eq!(response.status(), StatusCode::OK);
        let current: Value = response.json().await.unwrap();
        let response = daemon
            .revoke(json!({"jti": claims(text(&revoked["access_token"]))["jti"]}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);

        daemon.kill_hard();
        let daemon = Daemon::start(dir.path()).await;

        assert_eq!(daemon.get_user("alice").await.status(), StatusCode::OK);
        assert_eq!(
            daemon.verify(text(&revoked["access_token"])).await.status(),
            StatusCode::UNAUTHORIZED,
            "the revoked token works again after a crash"
        );
        assert_eq!(
            daemon.verify(text(&current["access_token"])).await.status(),
            StatusCode::OK
        );
        let refreshed = daemon.refresh(text(&revoked["refresh_token"])).await;
        assert_eq!(
            refreshed.status(),
            StatusCode::OK,
            "the earlier session's refresh"
        );
        let refreshed = daemon.refresh(text(&current["refresh_token"])).await;
        assert_eq!(
            refreshed.status(),
            StatusCode::OK,
            "the rotated refresh token"
        );
        daemon.login("alice").await;
        // The rotation before the crash is remembered: the old refresh token is a reuse.
        let reused = daemon.refresh(text(&rotated["refresh_token"])).await;
        assert_eq!(reused.status(), StatusCode::BAD_REQUEST);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_0_stops_serving_and_keeps_the_data() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_text("15m"));
        let mut daemon = Daemon::start(dir.path()).await;
        daemon.add_user("alice", &[]).await;
        let session = daemon.login("alice").await;
        let readyz = format!("{}/readyz", daemon.public);
        let ready = daemon.client.get(&readyz).send().await.unwrap();
        assert_eq!(ready.status(), StatusCode::OK);

        daemon.signal("TERM");
        let status = daemon.wait_exit().await;

        assert_eq!(status.code(), Some(0), "exit status");
        let after = reqwest::Client::new().get(&readyz).send().await;
        assert!(after.is_err(), "/readyz still answers: {after:?}");
        drop(daemon);
        let daemon = Daemon::start(dir.path()).await;
        assert_eq!(daemon.get_user("alice").await.status(), StatusCode::OK);
        assert_eq!(
            daemon.verify(text(&session["access_token"])).await.status(),
            StatusCode::OK
        );
        daemon.login("alice").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_a_new_access_ttl_to_new_logins() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_text("15m"));
        let daemon = Daemon::start(dir.path()).await;
        daemon.add_user("alice", &[]).await;
        assert_eq!(daemon.login("alice").await["expires_in"], 900);

        write_config(dir.path(), &config_text("5m"));
        daemon.signal("HUP");

        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if daemon.login("alice").await["expires_in"] == 300 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the new access_ttl never applied"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_a_broken_file_logs_an_error_and_keeps_the_running_configuration() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_text("5m"));
        let mut daemon = Daemon::start(dir.path()).await;
        daemon.add_user("alice", &[]).await;
        assert_eq!(daemon.login("alice").await["expires_in"], 300);

        write_config(dir.path(), &config_text("soon"));
        daemon.signal("HUP");

        let error = daemon
            .wait_for_log(|l| l["level"] == "ERROR" && message(l).contains("reload"))
            .await;
        assert!(
            error.to_string().contains("access_ttl"),
            "the error does not name the key: {error}"
        );
        for _ in 0..3 {
            assert_eq!(daemon.login("alice").await["expires_in"], 300);
        }
        let health = daemon
            .public_request(Method::GET, "/healthz")
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), StatusCode::OK);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_a_new_log_level() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_with(&[]));
        let mut daemon = Daemon::start(dir.path()).await;
        daemon.add_user("alice", &[]).await;
        let is_login = |l: &Value| l["target"] == "audit" && l["fields"]["event"] == "login";
        let is_reloaded = |l: &Value| message(l) == "configuration reloaded";
        daemon.login("alice").await;
        daemon.wait_for_log(is_login).await;

        write_config(dir.path(), &config_with(&[("level", "\"info,audit=off\"")]));
        daemon.signal("HUP");
        daemon.wait_for_log(is_reloaded).await;
        let before = daemon.seen.len();
        daemon.login("alice").await;
        // A second reload's line marks "later than that login's audit line would be".
        daemon.signal("HUP");
        daemon.wait_for_log(is_reloaded).await;
        let silenced = daemon.seen[before..]
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|l| is_login(&l));
        assert!(
            !silenced,
            "audit=off did not apply: {:?}",
            &daemon.seen[before..]
        );

        write_config(dir.path(), &config_with(&[]));
        daemon.signal("HUP");
        daemon.wait_for_log(is_reloaded).await;
        daemon.login("alice").await;
        daemon.wait_for_log(is_login).await;
    })
    .await;
}

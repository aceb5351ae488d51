//! The deployment's members (API.md rev 4, `GET /admin/v1/cluster`) on the default sled
//! backend: this instance alone, with its real public address, the kid it signs with and a
//! key-set fingerprint that follows reloads; a node id kept across restarts; the admin
//! credential required as on every admin route.

use std::time::{Duration, SystemTime};

use authd::auth::keys::{KeyAlgorithm, generate_key};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{TestApp, assert_error, config_with, jose_header, write_config};

/// The answer of `GET /admin/v1/cluster`, asserted `200`.
async fn cluster(app: &TestApp) -> Value {
    let response = app.cluster().await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// The one member a sled instance reports.
async fn only_member(app: &TestApp) -> Value {
    let body = cluster(app).await;
    assert_eq!(body["backend"], "sled", "{body}");
    let members = body["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "sled: this instance alone: {body}");
    members[0].clone()
}

fn field<'a>(member: &'a Value, name: &str) -> &'a str {
    member[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {member}"))
}

/// The kid in the header of a token this instance signs now.
async fn signing_kid(app: &TestApp) -> String {
    if app.get_user("carol").await.status() == StatusCode::NOT_FOUND {
        app.add_user("carol", &[]).await;
    }
    let token = app.access_token("carol", crate::common::PASSWORD).await;
    jose_header(&token)["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn sled_reports_this_instance_alone_as_it_serves() {
    // A second back: the answer is in whole seconds.
    let before = SystemTime::now() - Duration::from_secs(1);
    let app = TestApp::spawn().await;

    let member = only_member(&app).await;

    assert_eq!(
        field(&member, "public_addr"),
        app.public.trim_start_matches("http://"),
        "the bound address, not the configured port 0"
    );
    assert_eq!(field(&member, "version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(field(&member, "signing_kid"), signing_kid(&app).await);
    let keyset = field(&member, "keyset");
    assert_eq!(keyset.len(), 64, "a SHA-256 in hex: {keyset}");
    assert!(keyset.bytes().all(|b| b.is_ascii_hexdigit()), "{keyset}");
    let secret = std::fs::read_dir(app.dir.join("keys"))
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .next()
        .unwrap();
    assert!(
        !member.to_string().contains(secret.trim()),
        "never a secret"
    );
    let started = humantime::parse_rfc3339(field(&member, "started_at")).unwrap();
    let seen = humantime::parse_rfc3339(field(&member, "last_seen")).unwrap();
    assert!(started >= before, "started at this start: {member}");
    assert!(seen >= started, "{member}");
    assert_eq!(
        field(&member, "node"),
        std::fs::read_to_string(app.dir.join("data/node.id"))
            .unwrap()
            .trim(),
        "the node id kept in storage.path"
    );
}

#[tokio::test]
async fn the_keyset_and_signing_kid_follow_a_reloaded_key_set() {
    // A reload re-reads the file: the test's settings must be in it.
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), &config_with(&[]));
    let app = TestApp::start_with_config_file(dir.path(), &file).await;
    let before = only_member(&app).await;
    // Newer than the first key, so it signs from the reload on.
    let kid = generate_key(
        &dir.path().join("data/keys"),
        KeyAlgorithm::HS256,
        SystemTime::now() + Duration::from_secs(60),
    )
    .unwrap();

    let unreloaded = only_member(&app).await;
    app.reload_settled().await;
    let after = only_member(&app).await;

    assert_eq!(
        unreloaded["keyset"], before["keyset"],
        "the running key set until a reload"
    );
    assert_ne!(after["keyset"], before["keyset"]);
    assert_eq!(field(&after, "signing_kid"), kid);
    assert_eq!(signing_kid(&app).await, kid);
    assert_eq!(after["node"], before["node"], "a reload is no new instance");
    assert_eq!(after["started_at"], before["started_at"]);
}

#[tokio::test]
async fn the_node_is_the_same_across_a_restart_of_the_same_data_and_unique_otherwise() {
    let app = TestApp::spawn().await;
    let first = only_member(&app).await;
    let dir = app.dir.clone();
    let guard = app.stop().await;

    let restarted = TestApp::start_in(&dir, &[]).await;
    let again = only_member(&restarted).await;
    let other = TestApp::spawn().await;

    assert_eq!(again["node"], first["node"]);
    assert_eq!(again["keyset"], first["keyset"], "same keys folder");
    assert_ne!(only_member(&other).await["node"], first["node"]);
    drop(restarted);
    drop(guard);
}

#[tokio::test]
async fn the_member_list_needs_the_admin_credential() {
    let app = TestApp::spawn().await;

    let anonymous = app
        .client
        .request(Method::GET, format!("{}/admin/v1/cluster", app.admin))
        .send()
        .await
        .unwrap();
    assert_error(anonymous, StatusCode::UNAUTHORIZED, "invalid_token").await;

    let user = app.user_token("dave", &[]).await;
    let not_admin = app
        .client
        .request(Method::GET, format!("{}/admin/v1/cluster", app.admin))
        .bearer_auth(user)
        .send()
        .await
        .unwrap();
    assert_error(not_admin, StatusCode::FORBIDDEN, "insufficient_scope").await;

    let admin = app.user_token("erin", &["admin"]).await;
    let allowed = app
        .client
        .request(Method::GET, format!("{}/admin/v1/cluster", app.admin))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
}

//! Upgrading: a data folder written by authd v1 (`tests/fixtures/store-v1`, made with
//! `tests/fixtures/make_store_v1.py` by the v1 binary; format-1 records) opens under this
//! release, and every user, session, refresh token and revocation in it works as before.
//! The daemon's clock is set to a minute after the fixture was made, so its access tokens
//! are still within their lifetime.

use std::path::Path;

use authd::clock::Clock;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_error, claims};

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1")
}

/// Copies the fixture's data folder, with the modes git does not keep (keys and the admin
/// token must be private, or authd refuses them).
fn copy_data(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_data(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

#[tokio::test]
async fn a_v1_store_opens_and_every_record_in_it_still_works() {
    let tokens: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("tokens.json")).unwrap())
            .unwrap();
    let made_at = tokens["made_at"].as_i64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_data(&fixture().join("data"), &dir.path().join("data"));
    // The v1 layout: keys and admin token inside the data folder.
    let keys = dir.path().join("data/keys").display().to_string();
    let admin_token = dir.path().join("data/admin.token").display().to_string();
    let overrides = [
        ("AUTHD__JWT__KEYS_DIR", keys.as_str()),
        ("AUTHD__ADMIN__TOKEN_FILE", admin_token.as_str()),
    ];
    let app =
        TestApp::start_in_with_clock(dir.path(), &overrides, Clock::manual(made_at + 60)).await;
    let token = |path: &str| tokens.pointer(path).unwrap().as_str().unwrap().to_owned();

    // Users and their passwords.
    let password = tokens["password"].as_str().unwrap();
    for name in ["alice", "bob", "erin"] {
        assert_eq!(
            app.try_login(name, password).await.status(),
            StatusCode::OK,
            "{name}"
        );
    }
    assert_error(
        app.try_login("carol", password).await,
        StatusCode::FORBIDDEN,
        "account_disabled",
    )
    .await;
    assert_error(
        app.try_login("dave", password).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;

    // Access tokens: live ones pass, each kind of revocation still blocks.
    let bob = app.verify(&token("/bob/access_token")).await;
    assert_eq!(bob.status(), StatusCode::OK, "{:?}", bob.text().await);
    for blocked in [
        "/alice_revoked_jti/access_token",
        "/alice_logged_out/access_token",
        "/erin_before_revoke_all/access_token",
    ] {
        assert_eq!(
            app.verify(&token(blocked)).await.status(),
            StatusCode::UNAUTHORIZED,
            "{blocked}"
        );
    }

    // Refresh tokens: a live one works once; revoked sessions' do not.
    let response = app.refresh(&token("/bob/refresh_token")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let renewed: Value = response.json().await.unwrap();
    assert_eq!(
        app.verify(renewed["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );
    let alice = app
        .refresh(&token("/alice_revoked_jti/refresh_token"))
        .await;
    assert_eq!(alice.status(), StatusCode::OK, "only the jti was revoked");
    for dead in [
        "/alice_logged_out/refresh_token",
        "/erin_before_revoke_all/refresh_token",
    ] {
        assert_error(
            app.refresh(&token(dead)).await,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        )
        .await;
    }
    // The token rotated in v1 is still known as rotated: presenting it is reuse.
    assert_error(
        app.refresh(&token("/bob_rotated_refresh_token")).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        app.verify(renewed["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "reuse ends the session"
    );

    // The list keeps its order, and new entries go after the old ones.
    assert_eq!(
        app.revoke(json!({"jti": "after-upgrade"})).await.status(),
        StatusCode::OK
    );
    let listed: Value = app.list_revocations("").await.json().await.unwrap();
    let entries: Vec<(String, String)> = listed["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (text(&e["kind"]), text(&e["id"])))
        .collect();
    let revoked_jti = claims(&token("/alice_revoked_jti/access_token"))["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    let logged_out_sid = claims(&token("/alice_logged_out/access_token"))["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob_sid = claims(&token("/bob/access_token"))["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let expected: Vec<(String, String)> = [
        ("jti", revoked_jti.as_str()),
        ("sid", logged_out_sid.as_str()),
        ("user", "carol"),
        ("user", "dave"),
        ("user", "erin"),
        ("sid", bob_sid.as_str()),
        ("jti", "after-upgrade"),
    ]
    .iter()
    .map(|(k, i)| ((*k).to_owned(), (*i).to_owned()))
    .collect();
    assert_eq!(entries, expected);
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

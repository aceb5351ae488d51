//! A user's own sessions (API.md "Public listener": `POST /v1/logout`, `POST /v1/password`,
//! `GET /v1/sessions`, `DELETE /v1/sessions/{sid}`), the admin's view of them
//! (`GET /admin/v1/users/{username}/sessions`), the revocation entries each leaves behind,
//! and the background purge of those entries once nothing they block can be accepted.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use reqwest::header::WWW_AUTHENTICATE;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, assert_error, claims};

const NEW_PASSWORD: &str = "a brand new passphrase";

// ----- helpers -----

/// One login of a user: its access and refresh token, and its session id.
struct Session {
    access: String,
    refresh: String,
    sid: String,
}

async fn log_in(app: &TestApp, username: &str) -> Session {
    let pair = app.login(username).await;
    let access = pair["access_token"].as_str().unwrap().to_owned();
    Session {
        refresh: pair["refresh_token"].as_str().unwrap().to_owned(),
        sid: claims(&access)["sid"].as_str().unwrap().to_owned(),
        access,
    }
}

/// Creates `username` (password [`PASSWORD`]) and logs in `count` times.
async fn user_with_sessions(app: &TestApp, username: &str, count: usize) -> Vec<Session> {
    app.add_user(username, &[]).await;
    let mut sessions = Vec::new();
    for _ in 0..count {
        sessions.push(log_in(app, username).await);
    }
    sessions
}

async fn list_own_sessions(app: &TestApp, token: &str) -> Value {
    let response = app.sessions(token).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Every entry of the revocation list (one page is enough in these tests).
async fn revocations(app: &TestApp) -> Vec<Value> {
    let response = app.list_revocations("?limit=1000").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["revocations"]
        .as_array()
        .unwrap_or_else(|| panic!("revocations in {body}"))
        .clone()
}

/// The `(kind, id)` pairs of the revocation list.
async fn revocation_ids(app: &TestApp) -> BTreeSet<(String, String)> {
    revocations(app)
        .await
        .iter()
        .map(|entry| {
            (
                entry["kind"].as_str().unwrap().to_owned(),
                entry["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn entry(kind: &str, id: &str) -> (String, String) {
    (kind.to_owned(), id.to_owned())
}

/// The `sessions` array of a sessions answer, as `sid → current`.
fn sids_and_current(body: &Value) -> Vec<(String, bool)> {
    let mut listed: Vec<_> = body["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("sessions in {body}"))
        .iter()
        .map(|s| {
            (
                s["sid"].as_str().unwrap().to_owned(),
                s["current"].as_bool().unwrap(),
            )
        })
        .collect();
    listed.sort();
    listed
}

fn expected(sessions: &[(&Session, bool)]) -> Vec<(String, bool)> {
    let mut expected: Vec<_> = sessions
        .iter()
        .map(|(s, current)| (s.sid.clone(), *current))
        .collect();
    expected.sort();
    expected
}

async fn assert_access_refused(app: &TestApp, session: &Session, what: &str) {
    let response = app.verify(&session.access).await;
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "{what}: access"
    );
}

async fn assert_refresh_refused(app: &TestApp, session: &Session) {
    assert_error(
        app.refresh(&session.refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

/// The session's access token verifies and its refresh token rotates.
async fn assert_session_works(app: &TestApp, session: &Session, what: &str) {
    assert_eq!(
        app.verify(&session.access).await.status(),
        StatusCode::OK,
        "{what}: access"
    );
    assert_eq!(
        app.refresh(&session.refresh).await.status(),
        StatusCode::OK,
        "{what}: refresh"
    );
}

/// The session's access token verifies (its refresh token is left unused).
async fn assert_access_works(app: &TestApp, session: &Session, what: &str) {
    assert_eq!(
        app.verify(&session.access).await.status(),
        StatusCode::OK,
        "{what}: access"
    );
}

// ----- logout -----

#[tokio::test]
async fn logout_without_body_ends_only_the_callers_session() {
    let app = TestApp::spawn().await;
    let sessions = user_with_sessions(&app, "alice", 2).await;
    let (mine, other) = (&sessions[0], &sessions[1]);

    let response = app.logout(&mine.access, None).await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_access_refused(&app, mine, "logged-out session").await;
    assert_refresh_refused(&app, mine).await;
    assert_session_works(&app, other, "the user's other session").await;
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_user_and_a_new_login_works() {
    let app = TestApp::spawn().await;
    let sessions = user_with_sessions(&app, "alice", 2).await;
    let bob = user_with_sessions(&app, "bob", 1).await;

    let response = app
        .logout(&sessions[0].access, Some(json!({"all": true})))
        .await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for session in &sessions {
        assert_access_refused(&app, session, "session ended by logout all").await;
        assert_refresh_refused(&app, session).await;
    }
    assert_session_works(&app, &log_in(&app, "alice").await, "login after logout all").await;
    assert_session_works(&app, &bob[0], "another user's session").await;
}

#[tokio::test]
async fn logout_without_a_token_is_401() {
    let app = TestApp::spawn().await;

    let response = app
        .public_request(Method::POST, "/v1/logout")
        .send()
        .await
        .unwrap();

    assert!(
        response
            .headers()
            .get(WWW_AUTHENTICATE)
            .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer realm=\"authd\"")),
        "WWW-Authenticate: {:?}",
        response.headers().get(WWW_AUTHENTICATE)
    );
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn logout_body_with_an_unknown_field_is_400_and_ends_nothing() {
    let app = TestApp::spawn().await;
    let sessions = user_with_sessions(&app, "alice", 1).await;

    let response = app
        .logout(&sessions[0].access, Some(json!({"al": true})))
        .await;

    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_session_works(&app, &sessions[0], "session after a refused logout").await;
}

// ----- password change -----

#[tokio::test]
async fn password_change_keeps_the_callers_session_and_revokes_the_others() {
    let app = TestApp::spawn().await;
    let sessions = user_with_sessions(&app, "alice", 3).await;
    let bob = user_with_sessions(&app, "bob", 1).await;
    let mine = &sessions[0];

    let response = app
        .change_password(&mine.access, PASSWORD, NEW_PASSWORD)
        .await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_session_works(&app, mine, "the caller's own session").await;
    for other in &sessions[1..] {
        assert_access_refused(&app, other, "the user's other session").await;
        assert_refresh_refused(&app, other).await;
    }
    assert_session_works(&app, &bob[0], "another user's session").await;
}

#[tokio::test]
async fn after_a_password_change_only_the_new_password_logs_in() {
    let app = TestApp::spawn().await;
    let sessions = user_with_sessions(&app, "alice", 1).await;

    let response = app
        .change_password(&sessions[0].access, PASSWORD, NEW_PASSWORD)
        .await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_error(
        app.try_login("alice", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_eq!(
        app.try_login("alice", NEW_PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn password_change_with_a_wrong_current_password_is_403_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let sessions = user_with_sessions(&app, "alice", 2).await;

    let response = app
        .change_password(&sessions[0].access, "not the password", NEW_PASSWORD)
        .await;

    assert_error(response, StatusCode::FORBIDDEN, "invalid_credentials").await;
    assert_session_works(&app, &sessions[1], "the user's other session").await;
    assert_eq!(
        app.try_login("alice", PASSWORD).await.status(),
        StatusCode::OK,
        "old password"
    );
    assert_eq!(
        app.try_login("alice", NEW_PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED,
        "new password"
    );
    assert!(revocation_ids(&app).await.is_empty());
}

#[tokio::test]
async fn password_change_to_a_too_short_password_is_400_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let sessions = user_with_sessions(&app, "alice", 2).await;

    let response = app
        .change_password(&sessions[0].access, PASSWORD, "short")
        .await;

    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_session_works(&app, &sessions[1], "the user's other session").await;
    assert_eq!(
        app.try_login("alice", PASSWORD).await.status(),
        StatusCode::OK,
        "old password"
    );
    assert_eq!(
        app.try_login("alice", "short").await.status(),
        StatusCode::UNAUTHORIZED,
        "refused new password"
    );
    assert!(revocation_ids(&app).await.is_empty());
}

// ----- listing and ending sessions -----

#[tokio::test]
async fn sessions_lists_exactly_the_callers_live_sessions_marking_the_current_one() {
    let app = TestApp::spawn().await;
    let sessions = user_with_sessions(&app, "alice", 2).await;
    user_with_sessions(&app, "bob", 1).await;

    let body = list_own_sessions(&app, &sessions[1].access).await;

    assert_eq!(
        sids_and_current(&body),
        expected(&[(&sessions[0], false), (&sessions[1], true)]),
        "{body}"
    );
    for session in body["sessions"].as_array().unwrap() {
        for field in ["created_at", "last_refreshed_at"] {
            let time = session[field]
                .as_str()
                .unwrap_or_else(|| panic!("{field} in {body}"));
            assert!(
                time.ends_with('Z') && humantime::parse_rfc3339(time).is_ok(),
                "{field} is RFC 3339 UTC: {time}"
            );
        }
    }
}

#[tokio::test]
async fn a_logged_out_session_disappears_from_the_list() {
    let app = TestApp::spawn().await;
    let sessions = user_with_sessions(&app, "alice", 2).await;

    assert_eq!(
        app.logout(&sessions[1].access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    let body = list_own_sessions(&app, &sessions[0].access).await;

    assert_eq!(
        sids_and_current(&body),
        expected(&[(&sessions[0], true)]),
        "{body}"
    );
}

#[tokio::test]
async fn deleting_an_own_other_session_ends_it_and_leaves_the_callers() {
    let app = TestApp::spawn().await;
    let sessions = user_with_sessions(&app, "alice", 2).await;
    let (mine, other) = (&sessions[0], &sessions[1]);

    let response = app.end_session(&mine.access, &other.sid).await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_access_refused(&app, other, "deleted session").await;
    assert_refresh_refused(&app, other).await;
    assert_access_works(&app, mine, "the caller's session").await;
    let body = list_own_sessions(&app, &mine.access).await;
    assert_eq!(sids_and_current(&body), expected(&[(mine, true)]), "{body}");
}

#[tokio::test]
async fn deleting_another_users_session_is_404_and_leaves_it_alone() {
    let app = TestApp::spawn().await;
    let alice = user_with_sessions(&app, "alice", 1).await;
    let bob = user_with_sessions(&app, "bob", 1).await;

    let response = app.end_session(&alice[0].access, &bob[0].sid).await;

    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    assert_session_works(&app, &bob[0], "bob's session").await;
    assert!(revocation_ids(&app).await.is_empty());
}

#[tokio::test]
async fn deleting_an_unknown_session_is_404() {
    let app = TestApp::spawn().await;
    let alice = user_with_sessions(&app, "alice", 1).await;

    let response = app
        .end_session(&alice[0].access, "AAAAAAAAAAAAAAAAAAAAAA")
        .await;

    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn admin_lists_a_users_sessions_with_none_current() {
    let app = TestApp::spawn().await;
    let sessions = user_with_sessions(&app, "alice", 2).await;
    user_with_sessions(&app, "bob", 1).await;

    let response = app.user_sessions("alice").await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        sids_and_current(&body),
        expected(&[(&sessions[0], false), (&sessions[1], false)]),
        "{body}"
    );
    for session in body["sessions"].as_array().unwrap() {
        assert!(session["created_at"].is_string(), "{body}");
        assert!(session["last_refreshed_at"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn admin_sessions_of_an_unknown_user_is_404() {
    let app = TestApp::spawn().await;

    let response = app.user_sessions("nobody").await;

    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

// ----- what each ending leaves in the revocation list -----

#[tokio::test]
async fn logout_is_listed_as_a_sid_revocation() {
    let app = TestApp::spawn().await;
    let sessions = user_with_sessions(&app, "alice", 1).await;

    app.logout(&sessions[0].access, None).await;

    assert_eq!(
        revocation_ids(&app).await,
        BTreeSet::from([entry("sid", &sessions[0].sid)])
    );
}

#[tokio::test]
async fn logout_all_is_listed_as_a_user_revocation() {
    let app = TestApp::spawn().await;
    let sessions = user_with_sessions(&app, "alice", 2).await;

    app.logout(&sessions[0].access, Some(json!({"all": true})))
        .await;

    assert_eq!(
        revocation_ids(&app).await,
        BTreeSet::from([entry("user", "alice")])
    );
}

#[tokio::test]
async fn password_change_lists_the_other_sessions_as_sid_revocations() {
    let app = TestApp::spawn().await;
    let sessions = user_with_sessions(&app, "alice", 3).await;

    app.change_password(&sessions[0].access, PASSWORD, NEW_PASSWORD)
        .await;

    assert_eq!(
        revocation_ids(&app).await,
        BTreeSet::from([
            entry("sid", &sessions[1].sid),
            entry("sid", &sessions[2].sid)
        ])
    );
}

#[tokio::test]
async fn deleting_a_session_is_listed_as_a_sid_revocation() {
    let app = TestApp::spawn().await;
    let sessions = user_with_sessions(&app, "alice", 2).await;

    app.end_session(&sessions[0].access, &sessions[1].sid).await;

    assert_eq!(
        revocation_ids(&app).await,
        BTreeSet::from([entry("sid", &sessions[1].sid)])
    );
}

// ----- purge -----

#[tokio::test]
async fn revocation_entries_outlive_what_they_block_by_the_bounds_not_the_current_settings() {
    // API.md rev 4: no later configuration may shorten an entry into a resurrection, so an
    // entry's end comes from the bounds (access_ttl <= 24 h, leeway <= 5 min), not from the
    // short settings in force here. (The purge itself is tested in the domain, against an
    // injected clock: no entry can be purged within 5 min of real time.)
    let app = TestApp::spawn_with(&[
        ("AUTHD__JWT__ACCESS_TTL", "1s"),
        ("AUTHD__JWT__REFRESH_TTL", "2s"),
        ("AUTHD__JWT__LEEWAY", "0s"),
    ])
    .await;
    let alice = user_with_sessions(&app, "alice", 2).await;
    user_with_sessions(&app, "bob", 1).await;
    let jti = claims(&alice[0].access)["jti"].as_str().unwrap().to_owned();
    let sid_exp = claims(&alice[1].access)["exp"].as_u64().unwrap();
    let revoked_at = SystemTime::now();
    for body in [
        json!({"jti": jti}),
        json!({"sid": alice[1].sid}),
        json!({"username": "bob"}),
    ] {
        assert_eq!(app.revoke(body).await.status(), StatusCode::OK);
    }
    let done_at = SystemTime::now();

    let listed = revocations(&app).await;

    let day = Duration::from_secs(24 * 60 * 60);
    let largest_leeway = Duration::from_secs(5 * 60);
    let sid_end = SystemTime::UNIX_EPOCH + Duration::from_secs(sid_exp) + largest_leeway;
    for listed in &listed {
        let expires_at = humantime::parse_rfc3339(listed["expires_at"].as_str().unwrap()).unwrap();
        let (earliest, latest) = match listed["kind"].as_str().unwrap() {
            // An id alone: the longest lifetime a token could have.
            "jti" | "user" => (
                revoked_at + day + largest_leeway - Duration::from_secs(1),
                done_at + day + largest_leeway + Duration::from_secs(1),
            ),
            "sid" => (sid_end, sid_end),
            other => panic!("unexpected kind {other}"),
        };
        assert!(
            earliest <= expires_at && expires_at <= latest,
            "expires_at outside the rev 4 lifetime: {listed}"
        );
    }
    assert_eq!(listed.len(), 3, "{listed:?}");
}

#[tokio::test]
async fn a_login_past_max_sessions_per_user_ends_the_oldest_session_at_once() {
    let app = TestApp::spawn_with(&[("AUTHD__LOGIN__MAX_SESSIONS_PER_USER", "2")]).await;
    app.add_user("alice", &[]).await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(app.access_token("alice", PASSWORD).await);
    }
    assert_eq!(
        app.verify(&tokens[0]).await.status(),
        StatusCode::UNAUTHORIZED
    );
    for live in &tokens[1..] {
        assert_eq!(app.verify(live).await.status(), StatusCode::OK);
    }
    let listed: Value = app.sessions(&tokens[2]).await.json().await.unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 2);
    let revocations: Value = app.list_revocations("").await.json().await.unwrap();
    assert_eq!(revocations["revocations"][0]["kind"], "sid");
    assert_eq!(
        revocations["revocations"][0]["id"],
        claims(&tokens[0])["sid"]
    );
}

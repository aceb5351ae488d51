//! The admin listener (API.md "Admin listener" and "Users"): who may use it, and user
//! management — creation rules, listing and paging, lookups, changes and deletion, each
//! checked through its effect on logins and existing tokens.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, assert_error};

/// Every route of the admin API with a body that would succeed for the admin token, so
/// that the credential is the only thing a refusal can be about.
fn admin_routes() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (
            Method::POST,
            "/admin/v1/users",
            Some(json!({"username": "mallory", "password": PASSWORD})),
        ),
        (Method::GET, "/admin/v1/users", None),
        (Method::GET, "/admin/v1/users/alice", None),
        (
            Method::PATCH,
            "/admin/v1/users/alice",
            Some(json!({"roles": ["admin"]})),
        ),
        (Method::DELETE, "/admin/v1/users/alice", None),
        (Method::GET, "/admin/v1/users/alice/sessions", None),
        (
            Method::POST,
            "/admin/v1/revocations",
            Some(json!({"username": "alice"})),
        ),
        (Method::GET, "/admin/v1/revocations", None),
    ]
}

/// Sends `method path` to the admin listener with an optional bearer credential.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<&Value>,
    credential: Option<&str>,
) -> reqwest::Response {
    let mut request = app.client.request(method, format!("{}{path}", app.admin));
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.unwrap()
}

/// The roles of a user object or verify answer, sorted (API.md fixes no order).
fn roles_of(body: &Value) -> Vec<String> {
    let mut roles: Vec<String> = body["roles"]
        .as_array()
        .unwrap_or_else(|| panic!("roles in {body}"))
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    roles.sort_unstable();
    roles
}

/// Checks a user object: username, roles (in any order), disabled and `created_at`.
fn assert_user(body: &Value, username: &str, roles: &[&str], disabled: bool) {
    assert_eq!(body["username"], username, "username in {body}");
    assert_eq!(roles_of(body), roles, "roles in {body}");
    assert_eq!(body["disabled"], disabled, "disabled in {body}");
    assert_rfc3339_utc(&body["created_at"]);
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z`: an RFC 3339 time in UTC.
pub fn assert_rfc3339_utc(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a string"));
    let bytes = text.as_bytes();
    let digit = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_digit);
    let fraction_ok = match &bytes[19.min(bytes.len())..] {
        b"Z" => true,
        [b'.', rest @ .., b'Z'] => !rest.is_empty() && rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    let shape = bytes.len() >= 20
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .into_iter()
            .all(digit)
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[10] == b'T'
        && bytes[13] == b':'
        && bytes[16] == b':'
        && fraction_ok;
    assert!(shape, "{text:?} is not an RFC 3339 UTC time");
}

/// The usernames and `next` of a `GET /admin/v1/users` answer.
async fn usernames_of(response: reqwest::Response) -> (Vec<String>, Value) {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let names = body["users"]
        .as_array()
        .unwrap_or_else(|| panic!("users in {body}"))
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect();
    (names, body["next"].clone())
}

fn www_authenticate(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
}

// ----- who may use the admin API -----

/// After refused admin requests: alice is unchanged and her token still works (nothing
/// was changed, deleted or revoked), and no `mallory` was created.
async fn assert_nothing_changed(app: &TestApp, alice_token: &str) {
    let alice: Value = app.get_user("alice").await.json().await.unwrap();
    assert_user(&alice, "alice", &[], false);
    assert_eq!(app.verify(alice_token).await.status(), StatusCode::OK);
    assert_eq!(
        app.get_user("mallory").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn every_admin_route_without_credential_is_401_invalid_token_with_a_bearer_challenge() {
    let app = TestApp::spawn().await;
    let alice_token = app.user_token("alice", &[]).await;

    for (method, path, body) in admin_routes() {
        let response = send(&app, method.clone(), path, body.as_ref(), None).await;

        let challenge = www_authenticate(&response);
        assert!(
            challenge
                .as_deref()
                .is_some_and(|c| c.starts_with("Bearer realm=\"authd\"")),
            "{method} {path}: WWW-Authenticate {challenge:?}"
        );
        let code = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
        assert_eq!(body["error"], "invalid_token", "{method} {path}: {body}");
    }
    assert_nothing_changed(&app, &alice_token).await;
}

#[tokio::test]
async fn every_admin_route_with_a_wrong_token_is_401_invalid_token() {
    let app = TestApp::spawn().await;
    let alice_token = app.user_token("alice", &[]).await;
    let wrong_admin_token = format!("{}x", app.admin_token);

    for credential in ["not-a-token", wrong_admin_token.as_str()] {
        for (method, path, body) in admin_routes() {
            let response = send(&app, method.clone(), path, body.as_ref(), Some(credential)).await;

            let challenge = www_authenticate(&response);
            assert!(
                challenge
                    .as_deref()
                    .is_some_and(|c| c.starts_with("Bearer realm=\"authd\"")
                        && c.contains("error=\"invalid_token\"")),
                "{method} {path}: WWW-Authenticate {challenge:?}"
            );
            let code = response.status();
            let body: Value = response.json().await.unwrap();
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            assert_eq!(body["error"], "invalid_token", "{method} {path}: {body}");
        }
    }
    assert_nothing_changed(&app, &alice_token).await;
}

#[tokio::test]
async fn every_admin_route_with_a_token_of_a_user_without_the_admin_role_is_403() {
    let app = TestApp::spawn().await;
    let alice_token = app.user_token("alice", &[]).await;
    let token = app.user_token("bob", &["ops", "app:admin"]).await;

    for (method, path, body) in admin_routes() {
        let response = send(&app, method.clone(), path, body.as_ref(), Some(&token)).await;

        let code = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(code, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        assert_eq!(
            body["error"], "insufficient_scope",
            "{method} {path}: {body}"
        );
    }
    assert_nothing_changed(&app, &alice_token).await;
}

#[tokio::test]
async fn a_token_of_a_user_with_the_admin_role_is_an_admin_credential() {
    let app = TestApp::spawn().await;
    let token = app.user_token("root", &["admin"]).await;

    let created = send(
        &app,
        Method::POST,
        "/admin/v1/users",
        Some(&json!({"username": "carol", "password": PASSWORD})),
        Some(&token),
    )
    .await;
    let listed = send(&app, Method::GET, "/admin/v1/users", None, Some(&token)).await;
    let revocations = send(
        &app,
        Method::GET,
        "/admin/v1/revocations",
        None,
        Some(&token),
    )
    .await;

    assert_eq!(created.status(), StatusCode::CREATED);
    let (names, _) = usernames_of(listed).await;
    assert_eq!(names, ["carol", "root"]);
    assert_eq!(revocations.status(), StatusCode::OK);
}

#[tokio::test]
async fn removing_the_admin_role_takes_admin_access_away_on_the_next_request() {
    let app = TestApp::spawn().await;
    let token = app.user_token("root", &["admin"]).await;
    let before = send(&app, Method::GET, "/admin/v1/users", None, Some(&token)).await;
    assert_eq!(before.status(), StatusCode::OK);

    let patched = app.update_user("root", json!({"roles": []})).await;
    assert_eq!(patched.status(), StatusCode::OK);
    let after = send(&app, Method::GET, "/admin/v1/users", None, Some(&token)).await;

    assert_error(after, StatusCode::FORBIDDEN, "insufficient_scope").await;
}

#[tokio::test]
async fn the_admin_api_token_is_an_admin_credential() {
    let app = TestApp::spawn().await;

    let response = send(
        &app,
        Method::GET,
        "/admin/v1/users",
        None,
        Some(&app.admin_token),
    )
    .await;

    let (names, next) = usernames_of(response).await;
    assert!(names.is_empty());
    assert_eq!(next, Value::Null);
}

// ----- creating users -----

#[tokio::test]
async fn creating_a_user_answers_201_with_the_user_object_and_the_user_can_log_in() {
    let app = TestApp::spawn().await;

    let response = app.create_user("alice", &["ops", "admin"]).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_user(&body, "alice", &["admin", "ops"], false);
    assert_eq!(app.login("alice").await["token_type"], "Bearer");
}

#[tokio::test]
async fn creating_a_user_without_roles_gives_an_empty_role_list() {
    let app = TestApp::spawn().await;

    let response = app
        .create_user_with(json!({"username": "alice", "password": PASSWORD}))
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_user(&body, "alice", &[], false);
}

#[tokio::test]
async fn usernames_are_lowercased_on_creation() {
    let app = TestApp::spawn().await;

    let response = app.create_user("Alice", &[]).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["username"], "alice");
    assert_eq!(app.get_user("alice").await.status(), StatusCode::OK);
    let token = app.login("alice").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let verified: Value = app.verify(&token).await.json().await.unwrap();
    assert_eq!(verified["sub"], "alice");
}

#[tokio::test]
async fn creating_an_existing_user_is_409_conflict_whatever_the_case() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.create_user("alice", &[]).await.status(),
        StatusCode::CREATED
    );

    let same = app.create_user("alice", &["admin"]).await;
    let other_case = app.create_user("ALICE", &["admin"]).await;

    assert_error(same, StatusCode::CONFLICT, "conflict").await;
    assert_error(other_case, StatusCode::CONFLICT, "conflict").await;
    let alice: Value = app.get_user("alice").await.json().await.unwrap();
    assert_user(&alice, "alice", &[], false);
}

#[tokio::test]
async fn creating_a_user_with_an_invalid_username_is_400() {
    let app = TestApp::spawn().await;
    let too_long = "a".repeat(65);
    let invalid = [
        "al ice",
        "alicé",
        "a\0b",
        too_long.as_str(),
        "",
        "a,b",
        "a/b",
    ];

    for username in invalid {
        let response = app
            .create_user_with(json!({"username": username, "password": PASSWORD}))
            .await;

        let code = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(code, StatusCode::BAD_REQUEST, "{username:?}: {body}");
        assert_eq!(body["error"], "invalid_request", "{username:?}: {body}");
    }
    let (names, _) = usernames_of(app.list_users("").await).await;
    assert!(names.is_empty(), "{names:?}");
}

#[tokio::test]
async fn the_longest_and_the_richest_valid_usernames_are_accepted() {
    let app = TestApp::spawn().await;
    let longest = "a".repeat(64);

    for username in [longest.as_str(), "a.b_c@d-e9"] {
        let response = app
            .create_user_with(json!({"username": username, "password": PASSWORD}))
            .await;

        assert_eq!(response.status(), StatusCode::CREATED, "{username:?}");
    }
}

#[tokio::test]
async fn creating_a_user_with_a_password_under_8_characters_is_400() {
    let app = TestApp::spawn().await;

    let response = app
        .create_user_with(json!({"username": "alice", "password": "1234567"}))
        .await;

    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(app.get_user("alice").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn password_length_counts_characters_not_bytes() {
    let app = TestApp::spawn().await;
    // 8 characters, 16 bytes: long enough. 7 characters, 14 bytes: too short.
    let eight = "éééééééé";
    let seven = "ééééééé";

    let accepted = app
        .create_user_with(json!({"username": "alice", "password": eight}))
        .await;
    let refused = app
        .create_user_with(json!({"username": "bob", "password": seven}))
        .await;

    assert_eq!(accepted.status(), StatusCode::CREATED);
    assert_error(refused, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(app.try_login("alice", eight).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn creating_a_user_with_a_password_over_1024_bytes_is_400() {
    let app = TestApp::spawn().await;
    // 1024 bytes is the limit; 513 two-byte characters are 1026 bytes.
    let at_limit = "p".repeat(1024);
    let over_ascii = "p".repeat(1025);
    let over_multibyte = "é".repeat(513);

    let accepted = app
        .create_user_with(json!({"username": "alice", "password": at_limit}))
        .await;
    let refused_ascii = app
        .create_user_with(json!({"username": "bob", "password": over_ascii}))
        .await;
    let refused_multibyte = app
        .create_user_with(json!({"username": "carol", "password": over_multibyte}))
        .await;

    assert_eq!(accepted.status(), StatusCode::CREATED);
    assert_error(refused_ascii, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_error(
        refused_multibyte,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn creating_a_user_with_an_invalid_role_is_400() {
    let app = TestApp::spawn().await;
    let too_long = "r".repeat(65);

    for role in ["Admin", "a,b", "", "a b", too_long.as_str()] {
        let response = app.create_user("alice", &[role]).await;

        let code = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(code, StatusCode::BAD_REQUEST, "{role:?}: {body}");
        assert_eq!(body["error"], "invalid_request", "{role:?}: {body}");
    }
    assert_eq!(app.get_user("alice").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn creating_a_user_with_an_unknown_field_is_400() {
    let app = TestApp::spawn().await;

    let response = app
        .create_user_with(json!({"username": "alice", "password": PASSWORD, "role": ["admin"]}))
        .await;

    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(app.get_user("alice").await.status(), StatusCode::NOT_FOUND);
}

// ----- listing users -----

/// Creates users in an order that is not the sorted one.
async fn create_five_users(app: &TestApp) {
    for name in ["eve", "bob", "dave", "alice", "carol"] {
        assert_eq!(
            app.create_user(name, &[]).await.status(),
            StatusCode::CREATED
        );
    }
}

#[tokio::test]
async fn users_are_listed_sorted_by_name_in_pages_linked_by_next() {
    let app = TestApp::spawn().await;
    create_five_users(&app).await;

    let (first, next1) = usernames_of(app.list_users("?limit=2").await).await;
    let (second, next2) = usernames_of(app.list_users("?limit=2&after=bob").await).await;
    let (third, next3) = usernames_of(app.list_users("?limit=2&after=dave").await).await;

    assert_eq!(first, ["alice", "bob"]);
    assert_eq!(next1, "bob");
    assert_eq!(second, ["carol", "dave"]);
    assert_eq!(next2, "dave");
    assert_eq!(third, ["eve"]);
    assert_eq!(next3, Value::Null);
}

#[tokio::test]
async fn following_next_visits_every_user_once() {
    let app = TestApp::spawn().await;
    create_five_users(&app).await;
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();

    for _ in 0..10 {
        let (names, next) = usernames_of(app.list_users(&query).await).await;
        seen.extend(names);
        match next {
            Value::Null => break,
            Value::String(after) => query = format!("?limit=2&after={after}"),
            other => panic!("next is {other}"),
        }
    }

    assert_eq!(seen, ["alice", "bob", "carol", "dave", "eve"]);
}

#[tokio::test]
async fn next_is_null_when_the_last_page_is_exactly_full() {
    let app = TestApp::spawn().await;
    create_five_users(&app).await;

    let (all, next_all) = usernames_of(app.list_users("?limit=5").await).await;
    let (last, next_last) = usernames_of(app.list_users("?limit=2&after=carol").await).await;

    assert_eq!(all.len(), 5);
    assert_eq!(next_all, Value::Null);
    assert_eq!(last, ["dave", "eve"]);
    assert_eq!(next_last, Value::Null);
}

#[tokio::test]
async fn listing_users_with_a_limit_that_is_not_a_positive_number_is_400() {
    let app = TestApp::spawn().await;
    create_five_users(&app).await;

    for limit in ["0", "-1", "abc", "", "1.5"] {
        let response = app.list_users(&format!("?limit={limit}")).await;

        let code = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(code, StatusCode::BAD_REQUEST, "limit={limit}: {body}");
        assert_eq!(body["error"], "invalid_request", "limit={limit}: {body}");
    }
}

#[tokio::test]
async fn a_limit_over_1000_is_clamped_not_refused() {
    let app = TestApp::spawn().await;
    create_five_users(&app).await;

    let response = app.list_users("?limit=5000").await;

    let (names, next) = usernames_of(response).await;
    assert_eq!(names.len(), 5);
    assert_eq!(next, Value::Null);
}

/// Creates `count` users named `user0000`, `user0001`, … (sorted as numbered).
async fn create_numbered_users(app: &TestApp, count: usize) -> Vec<String> {
    let names: Vec<String> = (0..count).map(|i| format!("user{i:04}")).collect();
    for name in &names {
        assert_eq!(
            app.create_user(name, &[]).await.status(),
            StatusCode::CREATED
        );
    }
    names
}

#[tokio::test]
async fn without_a_limit_users_are_listed_100_at_a_time() {
    let app = TestApp::spawn().await;
    let names = create_numbered_users(&app, 101).await;

    let (first, next1) = usernames_of(app.list_users("").await).await;
    let (second, next2) =
        usernames_of(app.list_users(&format!("?after={}", names[99])).await).await;

    assert_eq!(first, names[..100]);
    assert_eq!(
        next1,
        names[99].as_str(),
        "a non-null next: one more follows"
    );
    assert_eq!(second, names[100..]);
    assert_eq!(next2, Value::Null);
}

#[tokio::test]
async fn a_limit_over_1000_lists_1000_users_and_a_next() {
    let app = TestApp::spawn().await;
    let names = create_numbered_users(&app, 1001).await;

    for limit in ["1001", "5000", "99999999999999999999999"] {
        let (page, next) = usernames_of(app.list_users(&format!("?limit={limit}")).await).await;

        assert_eq!(page, names[..1000], "limit={limit}");
        assert_eq!(next, names[999].as_str(), "limit={limit}");
    }
    let (rest, next) = usernames_of(
        app.list_users(&format!("?limit=1001&after={}", names[999]))
            .await,
    )
    .await;
    assert_eq!(rest, names[1000..]);
    assert_eq!(next, Value::Null);
}

// ----- looking a user up -----

#[tokio::test]
async fn getting_a_user_answers_the_user_object() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &["ops"]).await;

    let response = app.get_user("alice").await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_user(&body, "alice", &["ops"], false);
}

#[tokio::test]
async fn getting_an_unknown_user_is_404_not_found() {
    let app = TestApp::spawn().await;

    let response = app.get_user("nobody").await;

    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_username_with_an_at_sign_is_reachable_percent_encoded() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.create_user("a@b.c", &[]).await.status(),
        StatusCode::CREATED
    );

    let encoded = app.get_user("a%40b.c").await;
    let patched = app.update_user("a%40b.c", json!({"roles": ["ops"]})).await;

    assert_eq!(encoded.status(), StatusCode::OK);
    let body: Value = encoded.json().await.unwrap();
    assert_eq!(body["username"], "a@b.c");
    assert_eq!(patched.status(), StatusCode::OK);
    let deleted = app.delete_user("a%40b.c").await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get_user("a%40b.c").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn admin_lists_a_users_live_sessions() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    app.add_user("bob", &[]).await;
    let sid_of =
        |pair: &Value| crate::common::claims(pair["access_token"].as_str().unwrap())["sid"].clone();
    let first = sid_of(&app.login("alice").await);
    let second = sid_of(&app.login("alice").await);
    let ended = sid_of(&app.login("alice").await);
    app.login("bob").await;
    assert_eq!(
        app.revoke(json!({"sid": ended})).await.status(),
        StatusCode::OK
    );

    let response = app.user_sessions("alice").await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let sessions = body["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("sessions in {body}"));
    for session in sessions {
        assert_rfc3339_utc(&session["created_at"]);
        assert_rfc3339_utc(&session["last_refreshed_at"]);
    }
    let mut sids: Vec<String> = sessions.iter().map(|s| s["sid"].to_string()).collect();
    sids.sort_unstable();
    let mut expected = vec![first.to_string(), second.to_string()];
    expected.sort_unstable();
    assert_eq!(sids, expected);
}

#[tokio::test]
async fn listing_the_sessions_of_an_unknown_user_is_404_not_found() {
    let app = TestApp::spawn().await;

    let response = app.user_sessions("nobody").await;

    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

// ----- changing users -----

#[tokio::test]
async fn new_roles_show_on_the_next_verify_of_an_existing_token() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &["ops"]).await;

    let response = app
        .update_user("alice", json!({"roles": ["dev", "admin"]}))
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_user(&body, "alice", &["admin", "dev"], false);
    let verified = app.verify(&token).await;
    assert_eq!(verified.status(), StatusCode::OK);
    let roles_header = verified.headers()["x-auth-roles"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut header_roles: Vec<&str> = roles_header.split(',').collect();
    header_roles.sort_unstable();
    assert_eq!(header_roles, ["admin", "dev"]);
    let verified: Value = verified.json().await.unwrap();
    assert_eq!(roles_of(&verified), ["admin", "dev"]);
}

#[tokio::test]
async fn disabling_a_user_refuses_their_tokens_and_their_logins() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let session = app.login("alice").await;
    let token = session["access_token"].as_str().unwrap();

    let response = app.update_user("alice", json!({"disabled": true})).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_user(&body, "alice", &[], true);
    assert_error(
        app.verify(token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    let refreshed = app
        .refresh(session["refresh_token"].as_str().unwrap())
        .await;
    assert_error(refreshed, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let login = app.try_login("alice", PASSWORD).await;
    assert_error(login, StatusCode::FORBIDDEN, "account_disabled").await;
}

#[tokio::test]
async fn enabling_a_user_again_lets_them_log_in_but_old_tokens_stay_dead() {
    let app = TestApp::spawn().await;
    let old_token = app.user_token("alice", &[]).await;
    assert_eq!(
        app.update_user("alice", json!({"disabled": true}))
            .await
            .status(),
        StatusCode::OK
    );

    let response = app.update_user("alice", json!({"disabled": false})).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_user(&body, "alice", &[], false);
    let new_token = app.login("alice").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.verify(&new_token).await.status(), StatusCode::OK);
    assert_error(
        app.verify(&old_token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn a_new_password_refuses_old_tokens_and_the_old_password() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let session = app.login("alice").await;
    let new_password = "a brand new password";

    let response = app
        .update_user("alice", json!({"password": new_password}))
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let token = session["access_token"].as_str().unwrap();
    assert_error(
        app.verify(token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    let refreshed = app
        .refresh(session["refresh_token"].as_str().unwrap())
        .await;
    assert_error(refreshed, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let old = app.try_login("alice", PASSWORD).await;
    assert_error(old, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let new = app.try_login("alice", new_password).await;
    assert_eq!(new.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_new_password_is_checked_against_the_password_rules() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;

    let response = app.update_user("alice", json!({"password": "short"})).await;

    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(app.verify(&token).await.status(), StatusCode::OK);
    assert_eq!(
        app.try_login("alice", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn changing_an_unknown_user_is_404_not_found() {
    let app = TestApp::spawn().await;

    let response = app.update_user("nobody", json!({"roles": ["ops"]})).await;

    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.get_user("nobody").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn changing_a_user_with_an_unknown_field_is_400_and_changes_nothing() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;

    let response = app
        .update_user("alice", json!({"roles": ["ops"], "disable": true}))
        .await;

    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let alice: Value = app.get_user("alice").await.json().await.unwrap();
    assert_user(&alice, "alice", &[], false);
}

// ----- deleting users -----

#[tokio::test]
async fn deleting_a_user_answers_204_and_their_tokens_stop_working_at_once() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let session = app.login("alice").await;
    let token = session["access_token"].as_str().unwrap();
    assert_eq!(app.verify(token).await.status(), StatusCode::OK);

    let response = app.delete_user("alice").await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_error(
        app.verify(token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    let refreshed = app
        .refresh(session["refresh_token"].as_str().unwrap())
        .await;
    assert_error(refreshed, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_error(
        app.get_user("alice").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let login = app.try_login("alice", PASSWORD).await;
    assert_error(login, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

#[tokio::test]
async fn deleting_an_unknown_user_is_404_not_found() {
    let app = TestApp::spawn().await;

    let response = app.delete_user("nobody").await;

    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_re_created_user_is_a_new_account_that_old_tokens_never_reach() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &["admin"]).await;
    let old = app.login("alice").await;
    let old_access = old["access_token"].as_str().unwrap();
    let old_refresh = old["refresh_token"].as_str().unwrap();
    assert_eq!(
        app.delete_user("alice").await.status(),
        StatusCode::NO_CONTENT
    );

    let recreated = app.create_user("alice", &["admin"]).await;

    assert_eq!(recreated.status(), StatusCode::CREATED);
    assert_error(
        app.verify(old_access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    let old_admin = send(&app, Method::GET, "/admin/v1/users", None, Some(old_access)).await;
    assert_error(old_admin, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let refreshed = app.refresh(old_refresh).await;
    assert_error(refreshed, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let new_access = app.login("alice").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.verify(&new_access).await.status(), StatusCode::OK);
    // The old token is still refused after the new account has logged in.
    assert_error(
        app.verify(old_access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
}

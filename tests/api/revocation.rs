//! Revocation through the admin API (API.md `POST`/`GET /admin/v1/revocations` and the
//! revocation rules of "Tokens"): what each kind of entry blocks, what it leaves alone,
//! and how entries are listed.

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, assert_error, claims};

/// Every entry of the revocation list, read in one page.
async fn all_revocations(app: &TestApp) -> Vec<Value> {
    let response = app.list_revocations("?limit=1000").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["next"], Value::Null, "{body}");
    body["revocations"]
        .as_array()
        .unwrap_or_else(|| panic!("revocations in {body}"))
        .clone()
}

/// Asserts a 200 revocation answer naming `revoked` and `kind`.
async fn assert_revoked(response: reqwest::Response, revoked: &str, kind: &str) {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"revoked": revoked, "kind": kind}));
}

/// Asserts that `/v1/verify` refuses `token` as revoked (401, challenge, description).
async fn assert_refused_as_revoked(app: &TestApp, token: &str) {
    let response = app.verify(token).await;
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(
        challenge
            .as_deref()
            .is_some_and(|c| c.contains("error=\"invalid_token\"")),
        "WWW-Authenticate {challenge:?}"
    );
    let body = assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let description = body["error_description"].as_str().unwrap();
    assert!(description.contains("revoked"), "{description:?}");
}

fn access(pair: &Value) -> &str {
    pair["access_token"].as_str().unwrap()
}

fn refresh_token(pair: &Value) -> &str {
    pair["refresh_token"].as_str().unwrap()
}

fn claim(token: &str, name: &str) -> String {
    claims(token)[name].as_str().unwrap().to_owned()
}

/// The HS256 key the test daemon signs with: `(kid, secret)` from `<dir>/keys/<kid>.key`.
fn signing_key(app: &TestApp) -> (String, Vec<u8>) {
    let mut keys: Vec<_> = std::fs::read_dir(app.dir.join("keys"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "key"))
        .collect();
    keys.sort();
    let path = keys.pop().expect("the daemon generated an HS256 key");
    let kid = path.file_stem().unwrap().to_str().unwrap().to_owned();
    let text = std::fs::read_to_string(&path).unwrap();
    let secret = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .unwrap();
    (kid, secret)
}

/// Signs `claims` as an access token (`typ: at+jwt`, `kid`) with an HS256 `secret`.
fn sign(kid: &str, secret: &[u8], claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".to_owned());
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims like authd's own for `sub` in session `sid`, issued `age` seconds ago and
/// living `ttl` seconds.
fn token_claims(sub: &str, sid: &str, jti: &str, age: i64, ttl: i64) -> Value {
    let iat = unix_now() - age;
    json!({
        "iss": "authd", "aud": "authd", "sub": sub,
        "iat": iat, "nbf": iat, "exp": iat + ttl,
        "jti": jti, "sid": sid, "roles": [],
    })
}

// ----- by jti -----

#[tokio::test]
async fn revoking_a_jti_refuses_that_token_on_the_next_request() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    assert_eq!(app.verify(&token).await.status(), StatusCode::OK);
    let jti = claim(&token, "jti");

    let response = app.revoke(json!({"jti": jti})).await;

    assert_revoked(response, &jti, "jti").await;
    assert_refused_as_revoked(&app, &token).await;
}

#[tokio::test]
async fn revoking_a_jti_leaves_the_other_tokens_of_its_session_working() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let first = app.login("alice").await;
    let refreshed = app.refresh(refresh_token(&first)).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.unwrap();
    assert_eq!(
        claim(access(&first), "sid"),
        claim(access(&refreshed), "sid")
    );

    let response = app
        .revoke(json!({"jti": claim(access(&first), "jti")}))
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_refused_as_revoked(&app, access(&first)).await;
    assert_eq!(
        app.verify(access(&refreshed)).await.status(),
        StatusCode::OK
    );
    let again = app.refresh(refresh_token(&refreshed)).await;
    assert_eq!(again.status(), StatusCode::OK);
}

// ----- by token -----

#[tokio::test]
async fn revoking_a_token_revokes_its_jti() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    let other = app.login("alice").await;

    let response = app.revoke(json!({"token": token})).await;

    assert_revoked(response, &claim(&token, "jti"), "jti").await;
    assert_refused_as_revoked(&app, &token).await;
    assert_eq!(app.verify(access(&other)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn revoking_a_token_with_a_bad_signature_is_400_and_revokes_nothing() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    let (kid, _) = signing_key(&app);
    // The same claims and kid, signed with a secret authd does not have.
    let forged = sign(&kid, &[7u8; 32], &claims(&token));

    let forged_response = app.revoke(json!({"token": forged})).await;
    let garbage_response = app.revoke(json!({"token": "not.a.jwt"})).await;

    assert_error(forged_response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_error(garbage_response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(app.verify(&token).await.status(), StatusCode::OK);
    assert!(all_revocations(&app).await.is_empty());
}

#[tokio::test]
async fn an_expired_but_validly_signed_token_can_still_be_revoked() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let sid = claim(access(&app.login("alice").await), "sid");
    let (kid, secret) = signing_key(&app);
    // The crafted tokens are accepted as authd's own while fresh: the signing is right.
    let fresh = sign(
        &kid,
        &secret,
        &token_claims("alice", &sid, "fresh-jti", 0, 900),
    );
    assert_eq!(app.verify(&fresh).await.status(), StatusCode::OK);
    let expired = sign(
        &kid,
        &secret,
        &token_claims("alice", &sid, "expired-jti", 7200, 900),
    );
    assert_error(
        app.verify(&expired).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;

    let response = app
        .revoke(json!({"token": expired, "reason": "leaked"}))
        .await;

    assert_revoked(response, "expired-jti", "jti").await;
    let entries = all_revocations(&app).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["kind"], "jti");
    assert_eq!(entries[0]["id"], "expired-jti");
    assert_eq!(entries[0]["reason"], "leaked");
    assert_eq!(app.verify(&fresh).await.status(), StatusCode::OK);
}

// ----- by sid -----

#[tokio::test]
async fn revoking_a_sid_ends_every_token_of_that_session_only() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let first = app.login("alice").await;
    let second = app.refresh(refresh_token(&first)).await;
    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = second.json().await.unwrap();
    let other_session = app.login("alice").await;
    let sid = claim(access(&first), "sid");

    let response = app.revoke(json!({"sid": sid})).await;

    assert_revoked(response, &sid, "sid").await;
    assert_refused_as_revoked(&app, access(&first)).await;
    assert_refused_as_revoked(&app, access(&second)).await;
    let refreshed = app.refresh(refresh_token(&second)).await;
    assert_error(refreshed, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_eq!(
        app.verify(access(&other_session)).await.status(),
        StatusCode::OK
    );
    let other_refresh = app.refresh(refresh_token(&other_session)).await;
    assert_eq!(other_refresh.status(), StatusCode::OK);
}

// ----- by username -----

#[tokio::test]
async fn revoking_a_username_ends_every_session_of_that_user_only() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let first = app.login("alice").await;
    let second = app.login("alice").await;
    let bob = app.user_token("bob", &[]).await;

    let response = app.revoke(json!({"username": "Alice"})).await;

    assert_revoked(response, "alice", "user").await;
    assert_refused_as_revoked(&app, access(&first)).await;
    assert_refused_as_revoked(&app, access(&second)).await;
    for pair in [&first, &second] {
        let refreshed = app.refresh(refresh_token(pair)).await;
        assert_error(refreshed, StatusCode::BAD_REQUEST, "invalid_grant").await;
    }
    assert_eq!(app.verify(&bob).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_login_right_after_revoking_a_username_works_even_within_the_same_second() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    // Several rounds, each well inside one second: revoke, log in, verify at once.
    for round in 0..5 {
        let before = app.login("alice").await;

        let revoked = app.revoke(json!({"username": "alice"})).await;
        let after = app.login("alice").await;
        let verified = app.verify(access(&after)).await;

        assert_eq!(revoked.status(), StatusCode::OK, "round {round}");
        assert_eq!(verified.status(), StatusCode::OK, "round {round}");
        let refreshed = app.refresh(refresh_token(&after)).await;
        assert_eq!(refreshed.status(), StatusCode::OK, "round {round}");
        assert_refused_as_revoked(&app, access(&before)).await;
    }
}

#[tokio::test]
async fn revoking_a_username_again_ends_the_sessions_begun_since_the_first_time() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    assert_eq!(
        app.revoke(json!({"username": "alice"})).await.status(),
        StatusCode::OK
    );
    let between = app.login("alice").await;
    assert_eq!(app.verify(access(&between)).await.status(), StatusCode::OK);

    let response = app.revoke(json!({"username": "alice"})).await;

    assert_revoked(response, "alice", "user").await;
    assert_refused_as_revoked(&app, access(&between)).await;
    let refreshed = app.refresh(refresh_token(&between)).await;
    assert_error(refreshed, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let after = app.login("alice").await;
    assert_eq!(app.verify(access(&after)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn revoking_an_unknown_username_is_404_not_found() {
    let app = TestApp::spawn().await;

    let response = app.revoke(json!({"username": "nobody"})).await;

    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    assert!(all_revocations(&app).await.is_empty());
}

// ----- the request itself -----

#[tokio::test]
async fn an_unknown_jti_or_sid_is_accepted_and_listed() {
    let app = TestApp::spawn().await;

    let jti = app.revoke(json!({"jti": "never-issued-jti"})).await;
    let sid = app.revoke(json!({"sid": "never-issued-sid"})).await;

    assert_revoked(jti, "never-issued-jti", "jti").await;
    assert_revoked(sid, "never-issued-sid", "sid").await;
    let ids: Vec<(Value, Value)> = all_revocations(&app)
        .await
        .iter()
        .map(|e| (e["kind"].clone(), e["id"].clone()))
        .collect();
    assert_eq!(
        ids,
        [
            (json!("jti"), json!("never-issued-jti")),
            (json!("sid"), json!("never-issued-sid")),
        ]
    );
}

#[tokio::test]
async fn a_revocation_naming_zero_or_several_targets_is_400() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    let jti = claim(&token, "jti");
    let sid = claim(&token, "sid");
    let bodies = [
        json!({}),
        json!({"reason": "no target"}),
        json!({"jti": jti, "sid": sid}),
        json!({"jti": jti, "username": "alice"}),
        json!({"token": token, "jti": jti}),
        json!({"sid": sid, "username": "alice"}),
        json!({"jti": jti, "token": token, "sid": sid, "username": "alice"}),
    ];

    for body in bodies {
        let response = app.revoke(body.clone()).await;

        let code = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"], "invalid_request", "{body}: {answer}");
    }
    assert_eq!(app.verify(&token).await.status(), StatusCode::OK);
    assert!(all_revocations(&app).await.is_empty());
}

#[tokio::test]
async fn a_revocation_with_an_unknown_field_is_400() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;

    let response = app.revoke(json!({"jit": claim(&token, "jti")})).await;

    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(app.verify(&token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn revoking_the_same_jti_twice_is_idempotent_and_keeps_the_first_entry() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    let jti = claim(&token, "jti");
    assert_eq!(
        app.revoke(json!({"jti": jti, "reason": "first"}))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.revoke(json!({"jti": "another"})).await.status(),
        StatusCode::OK
    );
    let first_listing = all_revocations(&app).await;

    let again = app.revoke(json!({"jti": jti, "reason": "second"})).await;

    assert_revoked(again, &jti, "jti").await;
    let listing = all_revocations(&app).await;
    assert_eq!(
        listing, first_listing,
        "the second revocation changed the list"
    );
    assert_eq!(listing[0]["id"], jti.as_str());
    assert_eq!(listing[0]["reason"], "first");
    assert_refused_as_revoked(&app, &token).await;
}

#[tokio::test]
async fn revoking_the_same_sid_twice_is_idempotent_and_keeps_the_first_entry() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    let sid = claim(&token, "sid");
    assert_eq!(
        app.revoke(json!({"sid": sid, "reason": "first"}))
            .await
            .status(),
        StatusCode::OK
    );
    let first_listing = all_revocations(&app).await;

    let again = app.revoke(json!({"sid": sid, "reason": "second"})).await;

    assert_revoked(again, &sid, "sid").await;
    assert_eq!(all_revocations(&app).await, first_listing);
    assert_refused_as_revoked(&app, &token).await;
}

// ----- the list -----

#[tokio::test]
async fn revocations_are_listed_oldest_first_with_their_fields() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    app.revoke(json!({"jti": "jti-1", "reason": "lost laptop"}))
        .await;
    app.revoke(json!({"sid": "sid-1"})).await;
    app.revoke(json!({"username": "alice", "reason": "offboarded"}))
        .await;

    let response = app.list_revocations("").await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["next"], Value::Null);
    let entries = body["revocations"].as_array().unwrap();
    let summary: Vec<(&str, &str, Value)> = entries
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["id"].as_str().unwrap(),
                e["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("jti", "jti-1", json!("lost laptop")),
            ("sid", "sid-1", Value::Null),
            ("user", "alice", json!("offboarded")),
        ]
    );
    for entry in entries {
        super::admin::assert_rfc3339_utc(&entry["revoked_at"]);
        super::admin::assert_rfc3339_utc(&entry["expires_at"]);
        // Same format, so the strings order like the times they name.
        assert!(
            entry["expires_at"].as_str() > entry["revoked_at"].as_str(),
            "{entry}"
        );
    }
    // A user entry blocks refresh tokens too, so it outlives an access token's entry.
    assert!(entries[2]["expires_at"].as_str() > entries[0]["expires_at"].as_str());
}

#[tokio::test]
async fn revocations_are_paged_with_an_opaque_next_cursor() {
    let app = TestApp::spawn().await;
    for i in 1..=5 {
        app.revoke(json!({"jti": format!("jti-{i}")})).await;
    }
    let mut ids = Vec::new();
    let mut query = "?limit=2".to_owned();
    let mut pages = 0;

    loop {
        pages += 1;
        assert!(pages <= 5, "paging does not end");
        let response = app.list_revocations(&query).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        let page = body["revocations"].as_array().unwrap();
        assert!(page.len() <= 2, "{body}");
        ids.extend(page.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        match &body["next"] {
            Value::Null => break,
            Value::String(next) => query = format!("?limit=2&after={next}"),
            other => panic!("next is {other}"),
        }
    }

    assert_eq!(ids, ["jti-1", "jti-2", "jti-3", "jti-4", "jti-5"]);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn the_next_cursor_is_null_when_the_last_revocation_page_is_exactly_full() {
    let app = TestApp::spawn().await;
    for i in 1..=4 {
        app.revoke(json!({"jti": format!("jti-{i}")})).await;
    }
    let first = app.list_revocations("?limit=2").await;
    let first: Value = first.json().await.unwrap();
    let next = first["next"].as_str().unwrap_or_else(|| panic!("{first}"));

    let second = app
        .list_revocations(&format!("?limit=2&after={next}"))
        .await;

    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = second.json().await.unwrap();
    let ids: Vec<&str> = second["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["jti-3", "jti-4"]);
    assert_eq!(second["next"], Value::Null);
}

#[tokio::test]
async fn listing_revocations_with_a_limit_that_is_not_a_positive_number_is_400() {
    let app = TestApp::spawn().await;
    app.revoke(json!({"jti": "jti-1"})).await;

    for limit in ["0", "-1", "abc"] {
        let response = app.list_revocations(&format!("?limit={limit}")).await;

        let code = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(code, StatusCode::BAD_REQUEST, "limit={limit}: {body}");
        assert_eq!(body["error"], "invalid_request", "limit={limit}: {body}");
    }
    assert_eq!(
        app.list_revocations("?limit=5000").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_its_session_and_is_listed_as_a_sid_entry() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let first = app.login("alice").await;
    let second = app.refresh(refresh_token(&first)).await;
    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = second.json().await.unwrap();
    let sid = claim(access(&first), "sid");

    let reuse = app.refresh(refresh_token(&first)).await;

    assert_error(reuse, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_refused_as_revoked(&app, access(&second)).await;
    let refreshed = app.refresh(refresh_token(&second)).await;
    assert_error(refreshed, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let entries = all_revocations(&app).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["kind"], "sid");
    assert_eq!(entries[0]["id"], sid.as_str());
}

#[tokio::test]
async fn admin_user_changes_are_listed_as_user_entries() {
    let app = TestApp::spawn().await;
    for name in ["alice", "bob", "carol"] {
        app.add_user(name, &[]).await;
    }
    assert_eq!(
        app.update_user("alice", json!({"disabled": true}))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.update_user("bob", json!({"password": format!("{PASSWORD}!")}))
            .await
            .status(),
        StatusCode::OK
    );
    let deleted = app.delete_user("carol").await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    let entries = all_revocations(&app).await;

    let summary: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [("user", "alice"), ("user", "bob"), ("user", "carol")]
    );
}

#[tokio::test]
async fn sessions_ended_by_their_user_are_listed_as_sid_entries_and_logout_all_as_a_user_entry() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    // Session 0 logs out, 1 is ended from 2, 2 changes the password (ending 3), then
    // 2 logs out everywhere.
    let mut pairs = Vec::new();
    for _ in 0..4 {
        pairs.push(app.login("alice").await);
    }
    let sid = |i: usize| claim(access(&pairs[i]), "sid");
    let new_password = format!("{PASSWORD}!");

    let logout = app.logout(access(&pairs[0]), None).await;
    let end_session = app.end_session(access(&pairs[2]), &sid(1)).await;
    let password = app
        .change_password(access(&pairs[2]), PASSWORD, &new_password)
        .await;
    let logout_all = app
        .logout(access(&pairs[2]), Some(json!({"all": true})))
        .await;

    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_eq!(end_session.status(), StatusCode::NO_CONTENT);
    assert_eq!(password.status(), StatusCode::NO_CONTENT);
    assert_eq!(logout_all.status(), StatusCode::NO_CONTENT);
    let entries = all_revocations(&app).await;
    let summary: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let entry = |kind: &str, id: String| (kind.to_owned(), id);
    assert_eq!(
        summary,
        [
            entry("sid", sid(0)),
            entry("sid", sid(1)),
            entry("sid", sid(3)),
            entry("user", "alice".to_owned()),
        ]
    );
}

// ----- how long entries live (rev 4) -----

/// The listed entry of `id`, from the first page.
async fn listed_entry(app: &TestApp, id: &str) -> Value {
    let listed: Value = app.list_revocations("").await.json().await.unwrap();
    listed["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["id"] == id)
        .unwrap_or_else(|| panic!("{id} in {listed}"))
        .clone()
}

fn unix_seconds(rfc3339: &Value) -> i64 {
    let time = humantime::parse_rfc3339(rfc3339.as_str().unwrap()).unwrap();
    let since = time.duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(since.as_secs()).unwrap()
}

/// The largest `jwt.leeway` any configuration may have.
const LARGEST_LEEWAY: i64 = 5 * 60;

#[tokio::test]
async fn a_revoked_tokens_entry_lives_until_exp_plus_the_largest_leeway_whatever_the_reloads() {
    // The attack: a token issued under leeway 5m, revoked after a reload to 0s, would get an
    // entry ending at its exp; purged then, and with the leeway back at 5m, the revoked
    // token would be accepted again for 5 minutes. The entry must outlive every leeway.
    let dir = tempfile::tempdir().unwrap();
    let config = |leeway: &str| crate::common::config_with(&[("leeway", leeway)]);
    let file = crate::common::write_config(dir.path(), &config("\"5m\""));
    let app = TestApp::start_with_config_file(dir.path(), &file).await;
    app.add_user("alice", &[]).await;
    let token = app.access_token("alice", PASSWORD).await;
    let exp = claims(&token)["exp"].as_i64().unwrap();

    crate::common::write_config(dir.path(), &config("\"0s\""));
    app.reload_settled().await;
    let revoked = app.revoke(json!({"token": token})).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let entry = listed_entry(&app, claims(&token)["jti"].as_str().unwrap()).await;

    assert_eq!(
        unix_seconds(&entry["expires_at"]),
        exp + LARGEST_LEEWAY,
        "{entry}"
    );
    assert_error(
        app.verify(&token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn an_unknown_jti_is_kept_for_the_longest_lifetime_a_token_can_have() {
    // A token authd knows nothing about may have been issued just now under the largest
    // access_ttl a configuration allows (24 h); a short access_ttl today proves nothing.
    let app = TestApp::spawn_with(&[("AUTHD__JWT__ACCESS_TTL", "1m")]).await;
    let before = std::time::SystemTime::now();

    let revoked = app.revoke(json!({"jti": "seen-nowhere"})).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let entry = listed_entry(&app, "seen-nowhere").await;

    let revoked_at = unix_seconds(&entry["revoked_at"]);
    let started = i64::try_from(
        before
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    assert!(revoked_at >= started, "{entry}");
    assert_eq!(
        unix_seconds(&entry["expires_at"]),
        revoked_at + 24 * 60 * 60 + LARGEST_LEEWAY,
        "{entry}"
    );
}

/// The ids of the listed revocation entries, with their `expires_at` in seconds.
async fn listed(app: &TestApp) -> Vec<(String, i64)> {
    let page: Value = app.list_revocations("").await.json().await.unwrap();
    page["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let expires = humantime::parse_rfc3339(entry["expires_at"].as_str().unwrap()).unwrap();
            let seconds = expires
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            (entry["id"].as_str().unwrap().to_owned(), seconds as i64)
        })
        .collect()
}

/// Polls the list until it holds exactly `ids` (bounded).
async fn wait_for_listed(app: &TestApp, ids: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now: Vec<String> = listed(app).await.into_iter().map(|(id, _)| id).collect();
        if now == ids {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the list stayed {now:?}, expected {ids:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The background purge, end to end: on a daemon whose clock the test holds, an entry goes
/// once the clock passes its `expires_at`, and one that still blocks something stays (the
/// purge runs every second with these lifetimes).
#[tokio::test]
async fn revocation_entries_are_purged_in_the_background_once_they_block_nothing() {
    let clock = authd::clock::Clock::manual(1_800_000_000);
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_in_with_clock(
        dir.path(),
        &[
            ("AUTHD__JWT__ACCESS_TTL", "1s"),
            ("AUTHD__JWT__REFRESH_TTL", "2s"),
            ("AUTHD__JWT__LEEWAY", "0s"),
        ],
        clock.clone(),
    )
    .await;
    app.add_user("alice", &[]).await;
    let token = app.access_token("alice", PASSWORD).await;
    let jti = claims(&token)["jti"].as_str().unwrap().to_owned();
    for body in [json!({"jti": "unknown-jti"}), json!({"token": token})] {
        assert_eq!(app.revoke(body).await.status(), StatusCode::OK);
    }
    let entries = listed(&app).await;
    let expiry = |id: &str| entries.iter().find(|(e, _)| e == id).unwrap().1;
    let (token_expiry, unknown_expiry) = (expiry(&jti), expiry("unknown-jti"));
    assert!(token_expiry < unknown_expiry);

    // Past the token's entry, not the unknown jti's: only the first goes.
    clock.set(token_expiry + 1);
    wait_for_listed(&app, &["unknown-jti"]).await;
    clock.set(unknown_expiry + 1);
    wait_for_listed(&app, &[]).await;
}

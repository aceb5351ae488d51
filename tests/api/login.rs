//! The public listener as a client sees it: login, refresh, verify (and every way a token can
//! be wrong), `/v1/me`, JWKS, health and request ids.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{
    PASSWORD, TestApp, assert_error, b64_json, claims, header_str, jose_header, with_claim,
    without_claim,
};

/// `jwt.access_ttl` of the shipped config.toml (15 min).
const ACCESS_TTL: i64 = 900;
/// `jwt.leeway` of the shipped config.toml (30 s).
const LEEWAY: i64 = 30;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The app's HS256 signing key, read from `<dir>/keys/<kid>.key`, to forge tokens with.
struct Forge {
    kid: String,
    secret: Vec<u8>,
}

impl Forge {
    fn of(app: &TestApp) -> Forge {
        let mut keys = std::fs::read_dir(app.dir.join("keys"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "key"))
            .collect::<Vec<_>>();
        keys.sort();
        let path = keys.pop().expect("the app generated an HS256 key");
        let kid = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let secret = STANDARD.decode(text.trim()).unwrap();
        Forge { kid, secret }
    }

    /// The standard header authd issues: HS256, `at+jwt`, this key's kid.
    fn header(&self) -> Value {
        json!({"alg": "HS256", "typ": "at+jwt", "kid": self.kid})
    }

    /// Signs `header.claims` with HS256 and `secret`.
    fn sign_with(secret: &[u8], header: &Value, claims: &Value) -> String {
        let message = format!("{}.{}", b64_json(header), b64_json(claims));
        let key = jsonwebtoken::EncodingKey::from_secret(secret);
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                .unwrap();
        format!("{message}.{signature}")
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        Forge::sign_with(&self.secret, header, claims)
    }
}

/// A user with a live session: its real access token and that token's claims, to re-sign
/// with one thing changed (so that only that change can make verification fail).
async fn real_session(app: &TestApp, username: &str) -> (String, Value) {
    let token = app.user_token(username, &["reader"]).await;
    let claims = claims(&token);
    (token, claims)
}

async fn assert_token_refused(app: &TestApp, token: &str, what: &str) {
    let response = app.verify(token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .unwrap_or_else(|| panic!("{what}: WWW-Authenticate missing"))
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer realm=\"authd\""),
        "{what}: {challenge}"
    );
    assert!(
        challenge.contains("error=\"invalid_token\""),
        "{what}: {challenge}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token", "{what}: {body}");
}

async fn patch_user(app: &TestApp, username: &str, body: Value) {
    let response = app.update_user(username, body.clone()).await;
    assert_eq!(response.status(), StatusCode::OK, "PATCH {username} {body}");
}

fn assert_token_pair(body: &Value) {
    assert!(
        body["access_token"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert_eq!(body["expires_in"], ACCESS_TTL, "{body}");
    assert!(
        body["refresh_token"]
            .as_str()
            .is_some_and(|t| t.len() >= 43),
        "{body}"
    );
    assert_eq!(body["refresh_expires_in"], 14 * 24 * 3600, "{body}");
}

// ----- login -----

#[tokio::test]
async fn login_with_json_returns_a_bearer_token_pair_marked_no_store() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;

    let response = app.try_login("alice", PASSWORD).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_str(&response, "cache-control").as_deref(),
        Some("no-store")
    );
    let body: Value = response.json().await.unwrap();
    assert_token_pair(&body);
}

#[tokio::test]
async fn access_token_header_is_hs256_at_jwt_with_the_signing_kid() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;

    let header = jose_header(&token);

    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["kid"], Forge::of(&app).kid);
}

#[tokio::test]
async fn access_token_claims_follow_the_contract() {
    let app = TestApp::spawn().await;
    let before = now();

    let token = app.user_token("alice", &["admin", "reader"]).await;

    let claims = claims(&token);
    assert_eq!(claims["iss"], "authd");
    assert_eq!(claims["aud"], "authd", "aud is issued as a string");
    assert_eq!(claims["sub"], "alice");
    let iat = claims["iat"].as_i64().unwrap();
    assert!(iat >= before && iat <= now(), "iat {iat}");
    assert_eq!(claims["nbf"].as_i64(), Some(iat));
    assert_eq!(claims["exp"].as_i64().unwrap() - iat, ACCESS_TTL);
    let jti = claims["jti"].as_str().unwrap();
    assert!(jti.len() >= 22, "jti must carry at least 128 bits: {jti}");
    assert!(
        URL_SAFE_NO_PAD.decode(jti).is_ok(),
        "jti is base64url: {jti}"
    );
    assert!(claims["sid"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(claims["roles"], json!(["admin", "reader"]));
}

#[tokio::test]
async fn two_logins_get_distinct_jti_and_sid() {
    let app = TestApp::spawn().await;
    let first = claims(&app.user_token("alice", &[]).await);

    let second = claims(app.login("alice").await["access_token"].as_str().unwrap());

    assert_ne!(first["jti"], second["jti"]);
    assert_ne!(first["sid"], second["sid"]);
}

#[tokio::test]
async fn login_with_a_form_body_ignores_unknown_form_fields() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;

    let response = app
        .public_request(Method::POST, "/v1/login")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!(
            "username=alice&password={}&remember_me=on&submit=Log+in",
            PASSWORD.replace(' ', "+")
        ))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_str(&response, "cache-control").as_deref(),
        Some("no-store")
    );
    let body: Value = response.json().await.unwrap();
    assert_token_pair(&body);
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["sub"],
        "alice"
    );
}

#[tokio::test]
async fn login_username_is_case_insensitive() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;

    let response = app.try_login("Alice", PASSWORD).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["sub"],
        "alice"
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_identical_401() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;

    let wrong_password = app.try_login("alice", "not the password").await;
    let unknown_user = app.try_login("bob", PASSWORD).await;

    let wrong_password = assert_error(
        wrong_password,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let unknown_user = assert_error(
        unknown_user,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_eq!(wrong_password, unknown_user);
    assert!(!wrong_password.to_string().contains("not the password"));
}

#[tokio::test]
async fn malformed_username_at_login_is_401_invalid_credentials_not_400() {
    let app = TestApp::spawn().await;
    let long = "a".repeat(100);

    for username in ["al ice", long.as_str(), "alicé", ""] {
        let response = app.try_login(username, PASSWORD).await;

        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
}

#[tokio::test]
async fn disabled_account_with_correct_password_is_403_account_disabled() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    patch_user(&app, "alice", json!({"disabled": true})).await;

    let response = app.try_login("alice", PASSWORD).await;

    assert_error(response, StatusCode::FORBIDDEN, "account_disabled").await;
}

#[tokio::test]
async fn disabled_account_with_wrong_password_is_401_invalid_credentials() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    patch_user(&app, "alice", json!({"disabled": true})).await;

    let response = app.try_login("alice", "not the password").await;

    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

// ----- refresh -----

#[tokio::test]
async fn refresh_returns_a_new_pair_in_the_same_session() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let login = app.login("alice").await;

    let response = app.refresh(login["refresh_token"].as_str().unwrap()).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_str(&response, "cache-control").as_deref(),
        Some("no-store")
    );
    let body: Value = response.json().await.unwrap();
    assert_token_pair(&body);
    assert_ne!(body["refresh_token"], login["refresh_token"]);
    let old = claims(login["access_token"].as_str().unwrap());
    let new = claims(body["access_token"].as_str().unwrap());
    assert_eq!(new["sid"], old["sid"]);
    assert_ne!(new["jti"], old["jti"]);
    assert_eq!(new["sub"], "alice");
    assert_eq!(
        app.verify(body["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn reused_refresh_token_is_invalid_grant_and_revokes_the_session() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let login = app.login("alice").await;
    let first_refresh = login["refresh_token"].as_str().unwrap();
    let rotated: Value = app.refresh(first_refresh).await.json().await.unwrap();
    let other_session = app.login("alice").await;

    let reuse = app.refresh(first_refresh).await;

    assert_error(reuse, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let newest_refresh = app
        .refresh(rotated["refresh_token"].as_str().unwrap())
        .await;
    assert_error(newest_refresh, StatusCode::BAD_REQUEST, "invalid_grant").await;
    for token in [&login["access_token"], &rotated["access_token"]] {
        assert_token_refused(
            &app,
            token.as_str().unwrap(),
            "access token of the reused session",
        )
        .await;
    }
    let untouched = app
        .verify(other_session["access_token"].as_str().unwrap())
        .await;
    assert_eq!(
        untouched.status(),
        StatusCode::OK,
        "another session of the user lives on"
    );
}

#[tokio::test]
async fn refresh_accepts_a_form_body() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let login = app.login("alice").await;

    let response = app
        .public_request(Method::POST, "/v1/token/refresh")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!(
            "refresh_token={}&grant_type=refresh_token",
            login["refresh_token"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_token_pair(&response.json().await.unwrap());
}

#[tokio::test]
async fn unknown_refresh_token_is_invalid_grant() {
    let app = TestApp::spawn().await;

    let response = app
        .refresh("bm90LWEtcmVmcmVzaC10b2tlbi1hdC1hbGwtYnV0LWxvbmc")
        .await;

    assert_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
}

#[tokio::test]
async fn refresh_for_a_user_disabled_since_login_is_invalid_grant() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let login = app.login("alice").await;
    patch_user(&app, "alice", json!({"disabled": true})).await;

    let response = app.refresh(login["refresh_token"].as_str().unwrap()).await;

    assert_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
}

#[tokio::test]
async fn refreshed_access_token_carries_the_current_roles() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &["reader"]).await;
    let login = app.login("alice").await;
    patch_user(&app, "alice", json!({"roles": ["admin", "writer"]})).await;

    let response = app.refresh(login["refresh_token"].as_str().unwrap()).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["roles"],
        json!(["admin", "writer"])
    );
}

// ----- verify -----

#[tokio::test]
async fn verify_returns_the_identity_and_auth_headers() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &["admin", "reader"]).await;
    let issued = claims(&token);

    let response = app.verify(&token).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_str(&response, "x-auth-user").as_deref(),
        Some("alice")
    );
    assert_eq!(
        header_str(&response, "x-auth-roles").as_deref(),
        Some("admin,reader")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "sub": "alice",
            "roles": ["admin", "reader"],
            "exp": issued["exp"],
            "jti": issued["jti"],
            "sid": issued["sid"],
        })
    );
}

#[tokio::test]
async fn verify_sends_an_empty_x_auth_roles_for_a_user_without_roles() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;

    let response = app.verify(&token).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_str(&response, "x-auth-roles").as_deref(), Some(""));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["roles"], json!([]));
}

#[tokio::test]
async fn verify_answers_every_method() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;

    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let response = app
            .client
            .request(method.clone(), format!("{}/v1/verify", app.public))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();

        assert_eq!(response.status(), StatusCode::OK, "{method}");
        assert_eq!(
            header_str(&response, "x-auth-user").as_deref(),
            Some("alice"),
            "{method}"
        );
    }
}

#[tokio::test]
async fn verify_ignores_a_body_of_any_type_and_size() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    let one_mib = vec![b'x'; 1024 * 1024];

    let response = app
        .public_request(Method::POST, "/v1/verify")
        .bearer_auth(&token)
        .header(CONTENT_TYPE, "text/plain")
        .body(one_mib)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_str(&response, "x-auth-user").as_deref(),
        Some("alice")
    );
}

#[tokio::test]
async fn verify_with_a_small_body_of_an_odd_type_is_200() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;

    let response = app
        .public_request(Method::PUT, "/v1/verify")
        .bearer_auth(&token)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn verify_with_a_role_the_user_lacks_is_403_insufficient_scope() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &["reader"]).await;

    let response = app
        .public_request(Method::GET, "/v1/verify?role=admin")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();

    assert_error(response, StatusCode::FORBIDDEN, "insufficient_scope").await;
}

#[tokio::test]
async fn verify_with_a_role_the_user_holds_is_200() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &["admin"]).await;

    let response = app
        .public_request(Method::GET, "/v1/verify?role=admin")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn verify_shows_the_current_roles_without_a_new_login() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &["admin", "reader"]).await;
    patch_user(&app, "alice", json!({"roles": ["reader"]})).await;

    let response = app.verify(&token).await;
    let scoped = app
        .public_request(Method::GET, "/v1/verify?role=admin")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_str(&response, "x-auth-roles").as_deref(),
        Some("reader")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["roles"], json!(["reader"]));
    assert_error(scoped, StatusCode::FORBIDDEN, "insufficient_scope").await;
}

#[tokio::test]
async fn verify_without_authorization_is_401_with_a_bare_bearer_challenge() {
    let app = TestApp::spawn().await;

    let response = app
        .public_request(Method::GET, "/v1/verify")
        .send()
        .await
        .unwrap();

    assert_eq!(
        header_str(&response, "www-authenticate").as_deref(),
        Some("Bearer realm=\"authd\"")
    );
    let body = assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert_eq!(body["error_description"], "missing bearer token");
}

#[tokio::test]
async fn verify_with_a_garbage_token_is_401_with_an_invalid_token_challenge() {
    let app = TestApp::spawn().await;

    assert_token_refused(&app, "not-a-jwt", "garbage").await;
    assert_token_refused(&app, "a.b.c", "three garbage parts").await;
}

#[tokio::test]
async fn token_in_the_query_string_is_not_accepted() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;

    let response = app
        .client
        .get(format!("{}/v1/verify?access_token={token}", app.public))
        .send()
        .await
        .unwrap();

    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn token_with_a_tampered_signature_is_rejected() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    let (message, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[0] ^= 0x01;
    let tampered = format!("{message}.{}", URL_SAFE_NO_PAD.encode(bytes));

    assert_token_refused(&app, &tampered, "tampered signature").await;
}

#[tokio::test]
async fn token_with_tampered_claims_is_rejected() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    let (header, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let forged_claims = with_claim(&claims(&token), "roles", json!(["admin"]));
    let tampered = format!("{header}.{}.{signature}", b64_json(&forged_claims));

    assert_token_refused(&app, &tampered, "claims changed under the old signature").await;
}

#[tokio::test]
async fn re_signed_real_claims_are_accepted_which_makes_the_forgery_tests_meaningful() {
    let app = TestApp::spawn().await;
    let forge = Forge::of(&app);
    let (_, claims) = real_session(&app, "alice").await;

    let response = app.verify(&forge.sign(&forge.header(), &claims)).await;

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn token_signed_with_another_secret_under_the_same_kid_is_rejected() {
    let app = TestApp::spawn().await;
    let forge = Forge::of(&app);
    let (_, claims) = real_session(&app, "alice").await;
    let other_secret = [0x5au8; 32];

    let token = Forge::sign_with(&other_secret, &forge.header(), &claims);

    assert_token_refused(&app, &token, "other secret, same kid").await;
}

#[tokio::test]
async fn alg_none_token_is_rejected() {
    let app = TestApp::spawn().await;
    let forge = Forge::of(&app);
    let (_, claims) = real_session(&app, "alice").await;
    let header = json!({"alg": "none", "typ": "at+jwt", "kid": forge.kid});
    let unsigned = format!("{}.{}.", b64_json(&header), b64_json(&claims));
    let none_with_hs256_signature = forge.sign(&header, &claims);

    assert_token_refused(&app, &unsigned, "alg none, empty signature").await;
    assert_token_refused(
        &app,
        &none_with_hs256_signature,
        "alg none, HS256 signature",
    )
    .await;
}

#[tokio::test]
async fn token_without_typ_or_with_typ_jwt_is_rejected() {
    let app = TestApp::spawn().await;
    let forge = Forge::of(&app);
    let (_, claims) = real_session(&app, "alice").await;

    let no_typ = forge.sign(&json!({"alg": "HS256", "kid": forge.kid}), &claims);
    let typ_jwt = forge.sign(
        &json!({"alg": "HS256", "typ": "JWT", "kid": forge.kid}),
        &claims,
    );

    assert_token_refused(&app, &no_typ, "typ missing").await;
    assert_token_refused(&app, &typ_jwt, "typ JWT").await;
}

#[tokio::test]
async fn typ_application_at_jwt_in_any_letter_case_is_accepted() {
    let app = TestApp::spawn().await;
    let forge = Forge::of(&app);
    let (_, claims) = real_session(&app, "alice").await;

    for typ in ["application/AT+JWT", "application/at+jwt", "AT+JWT"] {
        let token = forge.sign(
            &json!({"alg": "HS256", "typ": typ, "kid": forge.kid}),
            &claims,
        );

        let response = app.verify(&token).await;

        assert_eq!(response.status(), StatusCode::OK, "typ {typ}");
    }
}

#[tokio::test]
async fn token_with_a_crit_header_is_rejected() {
    let app = TestApp::spawn().await;
    let forge = Forge::of(&app);
    let (_, claims) = real_session(&app, "alice").await;
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": forge.kid, "crit": ["exp"]});

    assert_token_refused(&app, &forge.sign(&header, &claims), "crit header").await;
}

#[tokio::test]
async fn token_with_an_unknown_or_missing_kid_is_rejected() {
    let app = TestApp::spawn().await;
    let forge = Forge::of(&app);
    let (_, claims) = real_session(&app, "alice").await;

    let unknown = forge.sign(
        &json!({"alg": "HS256", "typ": "at+jwt", "kid": "no-such-key"}),
        &claims,
    );
    let missing = forge.sign(&json!({"alg": "HS256", "typ": "at+jwt"}), &claims);

    assert_token_refused(&app, &unknown, "unknown kid").await;
    assert_token_refused(&app, &missing, "no kid").await;
}

/// A `401 invalid_token` whose description says `what`.
async fn assert_invalid_token_saying(response: reqwest::Response, what: &str) {
    let body = assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let description = body["error_description"].as_str().unwrap();
    assert!(description.contains(what), "{body}");
}

#[tokio::test]
async fn token_expired_beyond_the_leeway_is_rejected() {
    let app = TestApp::spawn().await;
    let forge = Forge::of(&app);
    let (_, claims) = real_session(&app, "alice").await;
    let exp = now() - LEEWAY - 60;
    let expired = with_claim(&claims, "exp", json!(exp));
    let expired = with_claim(&expired, "iat", json!(exp - ACCESS_TTL));
    let expired = with_claim(&expired, "nbf", json!(exp - ACCESS_TTL));

    let response = app.verify(&forge.sign(&forge.header(), &expired)).await;

    assert_invalid_token_saying(response, "expired").await;
}

#[tokio::test]
async fn token_expired_within_the_leeway_is_accepted() {
    let app = TestApp::spawn().await;
    let forge = Forge::of(&app);
    let (_, claims) = real_session(&app, "alice").await;
    let recently = with_claim(&claims, "exp", json!(now() - 5));

    let response = app.verify(&forge.sign(&forge.header(), &recently)).await;

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn token_not_yet_valid_beyond_the_leeway_is_rejected() {
    let app = TestApp::spawn().await;
    let forge = Forge::of(&app);
    let (_, claims) = real_session(&app, "alice").await;
    let future = with_claim(&claims, "nbf", json!(now() + LEEWAY + 120));

    let response = app.verify(&forge.sign(&forge.header(), &future)).await;

    assert_invalid_token_saying(response, "not valid yet").await;
}

#[tokio::test]
async fn token_with_a_wrong_issuer_or_audience_is_rejected() {
    let app = TestApp::spawn().await;
    let forge = Forge::of(&app);
    let (_, claims) = real_session(&app, "alice").await;

    let cases = [
        (
            "wrong iss",
            with_claim(&claims, "iss", json!("someone-else")),
        ),
        (
            "wrong aud",
            with_claim(&claims, "aud", json!("someone-else")),
        ),
        (
            "aud list without authd",
            with_claim(&claims, "aud", json!(["someone-else"])),
        ),
    ];
    for (what, forged) in cases {
        assert_token_refused(&app, &forge.sign(&forge.header(), &forged), what).await;
    }
}

#[tokio::test]
async fn token_missing_a_required_claim_is_rejected() {
    let app = TestApp::spawn().await;
    let forge = Forge::of(&app);
    let (_, claims) = real_session(&app, "alice").await;

    for claim in ["jti", "sid", "exp", "iat", "nbf", "sub", "iss", "aud"] {
        let token = forge.sign(&forge.header(), &without_claim(&claims, claim));

        assert_token_refused(&app, &token, &format!("without {claim}")).await;
    }
}

#[tokio::test]
async fn token_of_20_kib_is_401_not_431_or_500() {
    let app = TestApp::spawn().await;
    let forge = Forge::of(&app);
    let (_, claims) = real_session(&app, "alice").await;
    let padded = with_claim(&claims, "padding", json!("x".repeat(20 * 1024)));
    let token = forge.sign(&forge.header(), &padded);
    assert!(token.len() > 20 * 1024);

    assert_token_refused(&app, &token, "20 KiB token").await;
}

#[tokio::test]
async fn token_with_a_session_that_never_existed_is_rejected() {
    let app = TestApp::spawn().await;
    let forge = Forge::of(&app);
    let (_, claims) = real_session(&app, "alice").await;
    let invented = with_claim(&claims, "sid", json!("AAAAAAAAAAAAAAAAAAAAAA"));

    assert_token_refused(
        &app,
        &forge.sign(&forge.header(), &invented),
        "invented sid",
    )
    .await;
}

// ----- me, JWKS, health -----

#[tokio::test]
async fn me_returns_the_username_current_roles_and_creation_time() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &["reader"]).await;

    let response = app.me(&token).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["username"], "alice");
    assert_eq!(body["roles"], json!(["reader"]));
    let created_at = body["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z'), "{created_at}");
    let created = humantime::parse_rfc3339(created_at).unwrap();
    let age = std::time::SystemTime::now()
        .duration_since(created)
        .unwrap();
    assert!(age.as_secs() < 60, "created_at {created_at} is now");
}

#[tokio::test]
async fn me_without_a_token_is_401() {
    let app = TestApp::spawn().await;

    let response = app
        .public_request(Method::GET, "/v1/me")
        .send()
        .await
        .unwrap();

    assert_eq!(
        header_str(&response, "www-authenticate").as_deref(),
        Some("Bearer realm=\"authd\"")
    );
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn jwks_is_an_empty_cacheable_set_for_hs256() {
    let app = TestApp::spawn().await;
    let forge = Forge::of(&app);

    let response = app.jwks().await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_str(&response, "cache-control").as_deref(),
        Some("max-age=300")
    );
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body, json!({"keys": []}));
    assert!(!text.contains(&URL_SAFE_NO_PAD.encode(&forge.secret)));
}

#[tokio::test]
async fn healthz_and_readyz_are_200() {
    let app = TestApp::spawn().await;

    for path in ["/healthz", "/readyz"] {
        let response = app
            .client
            .get(format!("{}{path}", app.public))
            .send()
            .await
            .unwrap();

        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

// ----- request ids -----

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let requests = [
        app.public_request(Method::GET, "/healthz"),
        app.public_request(Method::GET, "/v1/verify"),
        app.public_request(Method::GET, "/no/such/route"),
        app.public_request(Method::GET, "/v1/login"),
        app.public_request(Method::POST, "/v1/login")
            .json(&json!({"username": "x", "password": "y"})),
        app.client.get(format!("{}/admin/v1/users", app.admin)),
        app.admin_request(Method::GET, "/admin/v1/users"),
    ];

    for request in requests {
        let response = request.send().await.unwrap();

        let id = header_str(&response, "x-request-id");
        assert!(
            id.as_deref().is_some_and(|id| !id.is_empty()),
            "{} {}",
            response.url(),
            response.status()
        );
    }
}

#[tokio::test]
async fn generated_request_ids_differ() {
    let app = TestApp::spawn().await;
    let get = || app.public_request(Method::GET, "/healthz").send();

    let first = get().await.unwrap();
    let second = get().await.unwrap();

    assert_ne!(
        header_str(&first, "x-request-id"),
        header_str(&second, "x-request-id")
    );
}

#[tokio::test]
async fn a_sane_incoming_request_id_is_echoed() {
    let app = TestApp::spawn().await;

    let response = app
        .public_request(Method::GET, "/healthz")
        .header("x-request-id", "req-42_a.b:c")
        .send()
        .await
        .unwrap();

    assert_eq!(
        header_str(&response, "x-request-id").as_deref(),
        Some("req-42_a.b:c")
    );
}

#[tokio::test]
async fn an_insane_incoming_request_id_is_replaced() {
    let app = TestApp::spawn().await;
    let too_long = "a".repeat(300);

    for insane in [too_long.as_str(), "has spaces in it", "quote\"d"] {
        let response = app
            .public_request(Method::GET, "/healthz")
            .header("x-request-id", insane)
            .send()
            .await
            .unwrap();

        let id = header_str(&response, "x-request-id").unwrap();
        assert_ne!(id, insane);
        assert!(!id.is_empty() && id.len() <= 128, "{id}");
        assert!(!id.contains(' '), "{id}");
    }
}

#[tokio::test]
async fn json_responses_are_labelled_utf_8() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let login = app.try_login("alice", PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let token = login.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let verified = app.verify(&token).await;
    let refused = app.verify("not-a-token").await;
    for response in [&verified, &refused] {
        assert_eq!(
            header_str(response, "content-type").as_deref(),
            Some("application/json; charset=utf-8"),
            "{}",
            response.status()
        );
    }
}

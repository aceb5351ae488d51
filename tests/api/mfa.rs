//! The second factor (API.md "Second factor: TOTP and recovery codes", rev 4): enrolling,
//! confirming, turning off and new recovery codes (`/v1/mfa/*`); the login's two steps
//! (`mfa_required`, `POST /v1/login/mfa`) and the `code` in the login body; the `mfa_token`'s
//! life; the replay rule of codes; recovery codes; the throttle over wrong codes; `amr` in
//! tokens and across refresh; `X-Auth-MFA` and `?mfa=1` on `/v1/verify`;
//! `mfa.required_roles`; and the admin's reset.
//!
//! The daemons run on the system clock, like the codes the tests compute, except where a
//! test must move time (the code window, the `mfa_token`'s lifetime): those hold a manual
//! clock. A code is taken only for a step after the last one the account used, so after
//! [`Api::enrol`](crate::common::Api::enrol) a test has one more TOTP code
//! ([`Enrolled::next_code`]) that no step boundary can spoil, and recovery codes for
//! anything beyond.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CACHE_CONTROL, LOCATION};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::common::client::feed_token;
use crate::common::second_factor::{
    Enrolled, amr_of, assert_dead_mfa_token, assert_wrong_code, recovery_codes_of, totp_code,
    totp_step, totp_step_now, wrong_code,
};
use crate::common::{
    PASSWORD, TestApp, assert_error, assert_tokens, claims, header, percent_encode, text,
};

const NEW_PASSWORD: &str = "a brand new passphrase";

// ----- helpers -----

/// Creates `username` with [`PASSWORD`] and `roles`, logs in, and turns TOTP on with that
/// (password-only) session; returns the session's access token and the enrolment.
async fn enrolled_user(app: &TestApp, username: &str, roles: &[&str]) -> (String, Enrolled) {
    app.add_user(username, roles).await;
    app.login_and_enrol(username).await
}

fn pwd() -> Value {
    json!(["pwd"])
}

fn pwd_otp() -> Value {
    json!(["pwd", "otp"])
}

async fn assert_status(response: Response, status: StatusCode, what: &str) {
    let got = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(got, status, "{what}: {body}");
}

/// Asserts a `429 too_many_requests` with a `Retry-After`.
async fn assert_throttled(response: Response, what: &str) {
    let retry_after: u64 = header(&response, "retry-after")
        .parse()
        .unwrap_or_else(|_| panic!("{what}: a 429 carries Retry-After"));
    assert!(retry_after >= 1, "{what}: Retry-After {retry_after}");
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
}

/// Asserts a `409 conflict`: a route of the second factor in the wrong state for it.
async fn assert_conflict(response: Response) {
    assert_error(response, StatusCode::CONFLICT, "conflict").await;
}

/// Logs `username` in with a wrong password `times` times, asserting each a `401`.
async fn wrong_passwords(app: &TestApp, username: &str, times: usize) {
    for _ in 0..times {
        assert_error(
            app.try_login(username, "wrong password").await,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        )
        .await;
    }
}

/// Asserts that `/v1/verify` refuses `token` as `401 invalid_token`: its session ended.
async fn assert_session_ended(app: &TestApp, token: &str) {
    assert_error(
        app.verify(token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
}

/// Asserts a `403 insufficient_scope`: a session that lacks what the route demands.
async fn assert_insufficient_scope(response: Response) {
    assert_error(response, StatusCode::FORBIDDEN, "insufficient_scope").await;
}

/// Asserts, for alice enrolled `first` and then (TOTP turned off between) `again`, that
/// recovery code `i` of the first set is refused at login and that of the new set taken.
async fn assert_only_the_new_set_works(
    app: &TestApp,
    first: &Enrolled,
    again: &Enrolled,
    i: usize,
) {
    let response = app.login_with_code("alice", &first.recovery_codes[i]).await;
    assert_wrong_code(response, "a code of the first enrolment").await;
    let response = app.login_with_code("alice", &again.recovery_codes[i]).await;
    assert_tokens(response, "a code of the new enrolment").await;
}

/// `GET /v1/me` as JSON, asserted `200`.
async fn me(app: &TestApp, token: &str) -> Value {
    let response = app.me(token).await;
    assert_eq!(response.status(), StatusCode::OK, "/v1/me");
    response.json().await.unwrap()
}

/// `GET /v1/verify{query}` with the token as bearer (`query` empty or starting with `?`).
async fn verify_with(app: &TestApp, token: &str, query: &str) -> Response {
    app.public_request(Method::GET, &format!("/v1/verify{query}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// `POST {path}` on the public listener with a form body, as an HTML form sends it.
async fn post_form(app: &TestApp, path: &str, form: String) -> Response {
    app.public_request(Method::POST, path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap()
}

/// `GET /admin/v1/users` with a user's access token as the admin credential.
async fn admin_api_as(app: &TestApp, token: &str) -> Response {
    app.client
        .get(format!("{}/admin/v1/users", app.admin))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// The sessions the admin API lists for `username`.
async fn session_count(app: &TestApp, username: &str) -> usize {
    let response = app.user_sessions(username).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["sessions"].as_array().unwrap().len()
}

/// What a client can see of an answer, save what differs per request (`date`,
/// `x-request-id`): status, headers, body bytes.
async fn observable(response: Response) -> (StatusCode, Vec<(String, String)>, Vec<u8>) {
    let status = response.status();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "x-request-id"))
        .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

/// A daemon on a manual clock reading `now`, in a fresh folder (kept by the returned guard,
/// which must outlive the daemon), where alice turned TOTP on at `now`; her enrolment.
async fn alice_enrolled_on_clock(
    now: i64,
) -> (TestApp, authd::clock::Clock, tempfile::TempDir, Enrolled) {
    let clock = authd::clock::Clock::manual(now);
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_in_with_clock(dir.path(), &[], clock.clone()).await;
    let token = app.user_token("alice", &[]).await;
    let enrolled = app.enrol_at(&token, now).await;
    (app, clock, dir, enrolled)
}

// ----- enrolment -----

#[tokio::test]
async fn enrolling_answers_a_base32_secret_and_its_otpauth_uri_never_cached() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice@example.com", &[]).await;

    let body = app.begin_totp_ok(&token).await;
    let secret = text(&body["secret"]);
    assert_eq!(secret.len(), 32, "20 bytes in unpadded base32: {secret}");
    assert!(
        secret
            .bytes()
            .all(|b| matches!(b, b'A'..=b'Z' | b'2'..=b'7')),
        "upper-case base32: {secret}"
    );
    assert_eq!(
        authd::auth::mfa::totp::decode_base32(secret).map(|bytes| bytes.len()),
        Some(20)
    );
    assert_eq!(
        text(&body["otpauth_uri"]),
        format!(
            "otpauth://totp/authd:alice%40example.com?secret={secret}&issuer=authd\
             &algorithm=SHA1&digits=6&period=30"
        )
    );
    // Another enrolment, another secret.
    let again = app.begin_totp_ok(&token).await;
    assert_ne!(text(&again["secret"]), secret);
}

#[tokio::test]
async fn confirming_with_a_right_code_turns_totp_on_and_answers_ten_recovery_codes_never_cached() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    assert_eq!(me(&app, &token).await["mfa"], false);
    assert!(!app.mfa_flag("alice").await);

    let begun = app.begin_totp_ok(&token).await;
    let secret = text(&begun["secret"]);
    let response = app
        .confirm_totp(&token, &totp_code(secret, totp_step_now()))
        .await;
    let codes = recovery_codes_of(response, "confirm").await;
    for code in &codes {
        let parts: Vec<&str> = code.split('-').collect();
        assert!(
            parts.len() == 3
                && parts.iter().all(|part| part.len() == 4
                    && part.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))),
            "xxxx-xxxx-xxxx in lower-case base32: {code}"
        );
    }
    assert_eq!(codes.iter().collect::<BTreeSet<_>>().len(), 10, "distinct");

    assert_eq!(me(&app, &token).await["mfa"], true);
    assert!(app.mfa_flag("alice").await);
    let listed: Value = app.list_users("").await.json().await.unwrap();
    let alice = listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|user| user["username"] == "alice")
        .unwrap();
    assert_eq!(alice["mfa"], true);
}

#[tokio::test]
async fn a_pending_enrolment_changes_nothing_until_confirmed() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    app.begin_totp_ok(&token).await;

    assert_eq!(me(&app, &token).await["mfa"], false);
    assert!(!app.mfa_flag("alice").await);
    let pair = assert_tokens(app.try_login("alice", PASSWORD).await, "login").await;
    assert_eq!(amr_of(&pair), pwd());
}

#[tokio::test]
async fn a_new_enrolment_replaces_the_pending_one() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    let first = app.begin_totp_ok(&token).await;
    let second = app.begin_totp_ok(&token).await;
    let (first, second) = (text(&first["secret"]), text(&second["secret"]));

    let step = totp_step_now();
    assert_error(
        app.confirm_totp(&token, &totp_code(first, step)).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert_status(
        app.confirm_totp(&token, &totp_code(second, step)).await,
        StatusCode::OK,
        "the second secret's code",
    )
    .await;
}

#[tokio::test]
async fn enrolling_with_a_wrong_current_password_is_403_invalid_credentials_and_leaves_nothing_pending()
 {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;

    let body = assert_error(
        app.begin_totp(&token, "not the password").await,
        StatusCode::FORBIDDEN,
        "invalid_credentials",
    )
    .await;
    assert!(body.get("secret").is_none(), "{body}");
    assert_conflict(app.confirm_totp(&token, "123456").await).await;
}

#[tokio::test]
async fn a_wrong_current_password_on_enrolment_counts_as_a_failed_login() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;

    for _ in 0..5 {
        assert_error(
            app.begin_totp(&token, "not the password").await,
            StatusCode::FORBIDDEN,
            "invalid_credentials",
        )
        .await;
    }
    assert_throttled(app.begin_totp(&token, PASSWORD).await, "enrolment").await;
    assert_throttled(app.try_login("alice", PASSWORD).await, "login").await;
}

#[tokio::test]
async fn enrolling_while_totp_is_on_is_409_conflict() {
    let app = TestApp::spawn().await;
    let (token, _) = enrolled_user(&app, "alice", &[]).await;

    assert_conflict(app.begin_totp(&token, PASSWORD).await).await;
    assert_eq!(me(&app, &token).await["mfa"], true);
}

#[tokio::test]
async fn confirming_with_nothing_pending_is_409_conflict() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    assert_conflict(app.confirm_totp(&token, "123456").await).await;

    // Once on, nothing is pending either: a confirm cannot change the secret.
    let enrolled = app.enrol(&token).await;
    assert_conflict(app.confirm_totp(&token, &enrolled.next_code()).await).await;
}

#[tokio::test]
async fn a_wrong_confirm_code_is_400_invalid_request_and_the_enrolment_stays_pending() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    let begun = app.begin_totp_ok(&token).await;
    let secret = text(&begun["secret"]);
    let step = totp_step_now();

    for wrong in [wrong_code(secret, step), "not a code".to_owned()] {
        assert_error(
            app.confirm_totp(&token, &wrong).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
    }
    assert_eq!(me(&app, &token).await["mfa"], false);
    assert_status(
        app.confirm_totp(&token, &totp_code(secret, step)).await,
        StatusCode::OK,
        "the right code after wrong ones",
    )
    .await;
    assert_eq!(me(&app, &token).await["mfa"], true);
}

#[tokio::test]
async fn disabling_or_renewing_recovery_codes_while_totp_is_off_is_409_conflict() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    let check = || async {
        assert_conflict(app.disable_totp(&token, PASSWORD, "123456").await).await;
        assert_conflict(app.new_recovery_codes(&token, PASSWORD, "123456").await).await;
    };
    check().await;
    // Pending is not on.
    app.begin_totp_ok(&token).await;
    check().await;
}

// ----- the login's two steps -----

#[tokio::test]
async fn a_right_password_without_a_code_is_401_mfa_required_with_an_uncached_mfa_token_and_no_tokens()
 {
    let app = TestApp::spawn().await;
    enrolled_user(&app, "alice", &[]).await;
    let sessions = session_count(&app, "alice").await;

    let response = app.try_login("alice", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&response, CACHE_CONTROL), "no-store");
    let body: Value = response.json().await.unwrap();
    let keys: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["error", "error_description", "mfa_token"]),
        "{body}"
    );
    assert_eq!(body["error"], "mfa_required");
    assert!(body["error_description"].is_string());
    let mfa_token = text(&body["mfa_token"]);
    assert!(
        mfa_token.len() >= 22,
        "at least 128 bits, opaque: {mfa_token}"
    );
    assert_ne!(app.password_step("alice").await, mfa_token, "one per login");
    assert_eq!(session_count(&app, "alice").await, sessions, "no session");
}

#[tokio::test]
async fn the_second_step_with_a_right_code_answers_tokens_whose_amr_is_pwd_and_otp() {
    let app = TestApp::spawn().await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let sessions = session_count(&app, "alice").await;

    let pair = app.login_two_steps("alice", &enrolled.next_code()).await;
    assert_eq!(pair["token_type"], "Bearer");
    assert!(pair.get("recovery_codes_left").is_none(), "{pair}");
    assert_eq!(amr_of(&pair), pwd_otp());
    let verified = app.verify(text(&pair["access_token"])).await;
    assert_eq!(verified.status(), StatusCode::OK);
    assert_eq!(header(&verified, "x-auth-user"), "alice");
    assert_eq!(session_count(&app, "alice").await, sessions + 1);
}

#[tokio::test]
async fn the_second_step_takes_a_form_body_too() {
    let app = TestApp::spawn().await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let mfa_token = app.password_step("alice").await;

    let form = format!(
        "mfa_token={}&code={}",
        percent_encode(&mfa_token),
        enrolled.next_code()
    );
    let response = post_form(&app, "/v1/login/mfa", form).await;
    let pair = assert_tokens(response, "form second step").await;
    assert_eq!(amr_of(&pair), pwd_otp());
}

#[tokio::test]
async fn a_login_with_the_code_in_its_body_needs_no_second_step() {
    let app = TestApp::spawn().await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;

    let response = app.login_with_code("alice", &enrolled.next_code()).await;
    let pair = assert_tokens(response, "JSON login with a code").await;
    assert_eq!(amr_of(&pair), pwd_otp());

    // A form carries it too (here a recovery code).
    let form = format!(
        "username=alice&password={}&code={}",
        percent_encode(PASSWORD),
        enrolled.recovery_codes[0]
    );
    let response = post_form(&app, "/v1/login", form).await;
    let pair = assert_tokens(response, "form login with a code").await;
    assert_eq!(amr_of(&pair), pwd_otp());
}

#[tokio::test]
async fn tokens_carry_amr_pwd_or_pwd_otp_and_a_refresh_keeps_it_without_a_code() {
    let app = TestApp::spawn().await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;
    app.add_user("bob", &[]).await;

    let plain = app.login("bob").await;
    assert_eq!(amr_of(&plain), pwd());
    let with_otp = app.login_two_steps("alice", &enrolled.next_code()).await;
    assert_eq!(amr_of(&with_otp), pwd_otp());

    for (pair, expected, mfa) in [(&plain, pwd(), "false"), (&with_otp, pwd_otp(), "true")] {
        let refreshed =
            assert_tokens(app.refresh(text(&pair["refresh_token"])).await, "refresh").await;
        assert_eq!(amr_of(&refreshed), expected);
        let verified = app.verify(text(&refreshed["access_token"])).await;
        assert_eq!(verified.status(), StatusCode::OK);
        assert_eq!(header(&verified, "x-auth-mfa"), mfa);
    }
}

#[tokio::test]
async fn a_wrong_password_answers_byte_for_byte_as_for_an_account_without_totp() {
    let app = TestApp::spawn().await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;
    app.add_user("bob", &[]).await;
    let wrong_password = async |username: &str, code: Option<&str>| {
        observable(app.try_login_code(username, "wrong password", code).await).await
    };

    let plain = wrong_password("bob", None).await;
    assert_eq!(plain.0, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_password("bob", Some("123456")).await, plain);
    let without_code = wrong_password("alice", None).await;
    assert_eq!(without_code, plain, "TOTP on, no code");
    let code = enrolled.next_code();
    let with_right_code = wrong_password("alice", Some(&code)).await;
    assert_eq!(with_right_code, plain, "TOTP on, right code");
    let with_wrong_code = wrong_password("alice", Some("nonsense")).await;
    assert_eq!(with_wrong_code, plain, "TOTP on, wrong code");

    // The right code sent with the wrong password was not taken.
    let response = app.login_with_code("alice", &code).await;
    let pair = assert_tokens(response, "the same code with the right password").await;
    assert_eq!(amr_of(&pair), pwd_otp());
}

#[tokio::test]
async fn a_code_for_an_account_without_totp_is_ignored() {
    let app = TestApp::spawn().await;
    app.add_user("bob", &[]).await;

    for code in ["123456", "abcd-efgh-2345", "not a code", ""] {
        let pair = assert_tokens(app.login_with_code("bob", code).await, code).await;
        assert_eq!(amr_of(&pair), pwd(), "{code}");
    }
}

#[tokio::test]
async fn a_wrong_code_at_login_is_401_invalid_credentials_and_starts_no_session() {
    let app = TestApp::spawn().await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let sessions = session_count(&app, "alice").await;
    let wrong = enrolled.wrong_code();

    for code in [wrong.as_str(), "nonsense", "abcd-efgh-2345"] {
        let body = assert_wrong_code(app.login_with_code("alice", code).await, code).await;
        assert!(body.get("mfa_token").is_none(), "{body}");
        assert!(body.get("access_token").is_none(), "{body}");
    }
    assert_eq!(session_count(&app, "alice").await, sessions);
}

#[tokio::test]
async fn a_wrong_code_at_the_second_step_is_401_invalid_credentials_and_the_token_stays_good() {
    let app = TestApp::spawn().await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let mfa_token = app.password_step("alice").await;

    let response = app.login_mfa(&mfa_token, &enrolled.wrong_code()).await;
    assert_wrong_code(response, "a wrong code").await;
    let pair = app
        .login_mfa_ok(
            &mfa_token,
            &enrolled.next_code(),
            "the right code on the same token",
        )
        .await;
    assert_eq!(amr_of(&pair), pwd_otp());
}

#[tokio::test]
async fn an_unknown_mfa_token_is_400_invalid_grant() {
    let app = TestApp::spawn().await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;

    for token in ["", "not-a-token", &"A".repeat(43)] {
        let response = app.login_mfa(token, &enrolled.recovery_codes[0]).await;
        assert_dead_mfa_token(response, token).await;
    }
}

#[tokio::test]
async fn an_mfa_token_is_single_use() {
    let app = TestApp::spawn().await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let mfa_token = app.password_step("alice").await;
    app.login_mfa_ok(&mfa_token, &enrolled.next_code(), "first use")
        .await;

    let response = app.login_mfa(&mfa_token, &enrolled.recovery_codes[0]).await;
    assert_dead_mfa_token(response, "second use").await;
    // The refused second use took nothing: that recovery code is still good.
    let response = app
        .login_with_code("alice", &enrolled.recovery_codes[0])
        .await;
    let pair = assert_tokens(response, "the recovery code afterwards").await;
    assert_eq!(pair["recovery_codes_left"], 9);
}

#[tokio::test]
async fn an_mfa_token_dies_after_five_wrong_codes() {
    // Failures enough that the throttle does not answer first.
    let app = TestApp::spawn_with(&[("AUTHD__LOGIN__MAX_FAILURES", "20")]).await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let mfa_token = app.password_step("alice").await;
    let wrong = enrolled.wrong_code();

    for attempt in 1..=5 {
        let response = app.login_mfa(&mfa_token, &wrong).await;
        assert_wrong_code(response, &format!("wrong code {attempt}")).await;
    }
    let code = enrolled.next_code();
    let response = app.login_mfa(&mfa_token, &code).await;
    assert_dead_mfa_token(response, "a right code on the dead token").await;
    // Only that token died: a new login goes through with the very same code.
    assert_tokens(app.login_with_code("alice", &code).await, "a new login").await;
}

#[tokio::test]
async fn an_mfa_token_lives_five_minutes() {
    let start = 1_800_000_000;
    let (app, clock, _dir, enrolled) = alice_enrolled_on_clock(start).await;
    let (early, late) = (
        app.password_step("alice").await,
        app.password_step("alice").await,
    );

    clock.set(start + 299);
    let code = enrolled.code(totp_step(start + 299));
    app.login_mfa_ok(&early, &code, "within 5 min").await;
    clock.set(start + 301);
    let response = app.login_mfa(&late, &enrolled.recovery_codes[0]).await;
    assert_dead_mfa_token(response, "after 5 min").await;
}

#[tokio::test]
async fn a_password_change_between_the_two_steps_kills_the_mfa_token() {
    let app = TestApp::spawn().await;
    let (token, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let mfa_token = app.password_step("alice").await;

    assert_status(
        app.change_password(&token, PASSWORD, NEW_PASSWORD).await,
        StatusCode::NO_CONTENT,
        "password change",
    )
    .await;
    let response = app.login_mfa(&mfa_token, &enrolled.next_code()).await;
    assert_dead_mfa_token(response, "after the password change").await;
    assert_eq!(
        session_count(&app, "alice").await,
        1,
        "only the session that changed the password"
    );
}

#[tokio::test]
async fn a_revoke_all_between_the_two_steps_kills_the_mfa_token() {
    let app = TestApp::spawn().await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let mfa_token = app.password_step("alice").await;

    assert_status(
        app.revoke(json!({"username": "alice"})).await,
        StatusCode::OK,
        "revoke-all",
    )
    .await;
    let response = app.login_mfa(&mfa_token, &enrolled.next_code()).await;
    assert_dead_mfa_token(response, "after the revoke-all").await;
    assert_eq!(session_count(&app, "alice").await, 0);
}

// ----- the code window and replays -----

#[tokio::test]
async fn a_code_is_taken_once_and_only_for_a_step_after_the_last_one_used() {
    let app = TestApp::spawn().await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let confirmed = enrolled.confirm_code();

    // The confirm used its step.
    let response = app.login_with_code("alice", &confirmed).await;
    assert_wrong_code(response, "the confirm's code").await;
    let next = enrolled.next_code();
    assert_tokens(app.login_with_code("alice", &next).await, "the next step").await;
    // Neither that step again (by either route) nor an older one.
    for code in [&next, &confirmed] {
        let response = app.login_with_code("alice", code).await;
        assert_wrong_code(response, &format!("{code} again")).await;
    }
    let mfa_token = app.password_step("alice").await;
    let response = app.login_mfa(&mfa_token, &next).await;
    assert_wrong_code(response, "the next step again, at the second step").await;
}

#[tokio::test]
async fn codes_are_taken_for_the_current_step_and_one_either_side_only() {
    let start = 1_800_000_000;
    let (app, clock, _dir, enrolled) = alice_enrolled_on_clock(start).await;
    // Ten steps on, in the middle of a step.
    let now = (i64::try_from(enrolled.confirmed_step).unwrap() + 10) * 30 + 15;
    clock.set(now);
    let current = totp_step(now);
    let login_at = async |step: u64| app.login_with_code("alice", &enrolled.code(step)).await;

    for step in [current - 2, current + 2, current + 3] {
        assert_wrong_code(login_at(step).await, &format!("step {step}")).await;
    }
    assert_tokens(login_at(current - 1).await, "the step before").await;
    assert_tokens(login_at(current + 1).await, "the step after").await;
    // The current step is before the last one used now.
    assert_wrong_code(login_at(current).await, "the current step").await;
}

// ----- recovery codes -----

#[tokio::test]
async fn a_recovery_code_logs_in_once_counts_as_otp_and_the_answer_says_how_many_are_left() {
    let app = TestApp::spawn().await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let codes = &enrolled.recovery_codes;

    let response = app.login_with_code("alice", &codes[0]).await;
    let pair = assert_tokens(response, "a recovery code in the login").await;
    assert_eq!(pair["recovery_codes_left"], 9, "{pair}");
    assert_eq!(amr_of(&pair), pwd_otp());
    let verified = app.verify(text(&pair["access_token"])).await;
    assert_eq!(header(&verified, "x-auth-mfa"), "true");
    // Used: by either route.
    let response = app.login_with_code("alice", &codes[0]).await;
    assert_wrong_code(response, "used, in the login").await;
    let mfa_token = app.password_step("alice").await;
    let response = app.login_mfa(&mfa_token, &codes[0]).await;
    assert_wrong_code(response, "used, at the second step").await;

    let pair = app.login_two_steps("alice", &codes[1]).await;
    assert_eq!(pair["recovery_codes_left"], 8, "{pair}");
    assert_eq!(amr_of(&pair), pwd_otp());
}

#[tokio::test]
async fn recovery_codes_ignore_case_spaces_and_dashes() {
    let app = TestApp::spawn().await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let codes = &enrolled.recovery_codes;

    let variants = [
        codes[0].to_uppercase(),
        codes[1].replace('-', ""),
        codes[2].replace('-', " "),
        format!(" {} ", codes[3].to_uppercase().replace('-', " - ")),
    ];
    for (left, code) in (6..=9).rev().zip(&variants) {
        let pair = assert_tokens(app.login_with_code("alice", code).await, code).await;
        assert_eq!(pair["recovery_codes_left"], left, "{code}");
    }
    let pair = app
        .login_two_steps("alice", &codes[4].to_uppercase().replace('-', ""))
        .await;
    assert_eq!(pair["recovery_codes_left"], 5);
}

#[tokio::test]
async fn a_new_set_of_recovery_codes_kills_the_old_one() {
    let app = TestApp::spawn().await;
    let (token, enrolled) = enrolled_user(&app, "alice", &[]).await;

    let response = app
        .new_recovery_codes(&token, PASSWORD, &enrolled.next_code())
        .await;
    let fresh = recovery_codes_of(response, "a new set").await;
    assert!(
        fresh
            .iter()
            .all(|code| !enrolled.recovery_codes.contains(code))
    );

    let response = app
        .login_with_code("alice", &enrolled.recovery_codes[0])
        .await;
    assert_wrong_code(response, "a code of the old set").await;
    let response = app.login_with_code("alice", &fresh[0]).await;
    let pair = assert_tokens(response, "a code of the new set").await;
    assert_eq!(pair["recovery_codes_left"], 9);
    assert_eq!(me(&app, &token).await["mfa"], true);
}

// ----- turning TOTP off -----

#[tokio::test]
async fn disabling_with_the_password_and_a_code_turns_totp_off() {
    let app = TestApp::spawn().await;
    let (token, enrolled) = enrolled_user(&app, "alice", &[]).await;

    assert_status(
        app.disable_totp(&token, PASSWORD, &enrolled.next_code())
            .await,
        StatusCode::NO_CONTENT,
        "disable",
    )
    .await;
    assert_eq!(me(&app, &token).await["mfa"], false);
    assert!(!app.mfa_flag("alice").await);
    let pair = assert_tokens(app.try_login("alice", PASSWORD).await, "password only").await;
    assert_eq!(amr_of(&pair), pwd());
}

#[tokio::test]
async fn disabling_kills_the_recovery_codes() {
    let app = TestApp::spawn().await;
    let (token, enrolled) = enrolled_user(&app, "alice", &[]).await;
    // A recovery code proves the owner here too.
    assert_status(
        app.disable_totp(&token, PASSWORD, &enrolled.recovery_codes[0])
            .await,
        StatusCode::NO_CONTENT,
        "disable with a recovery code",
    )
    .await;

    let again = app.enrol(&token).await;
    assert_only_the_new_set_works(&app, &enrolled, &again, 1).await;
}

#[tokio::test]
async fn a_wrong_password_or_code_on_disable_or_new_codes_is_403_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (token, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let (code, recovery_code) = (enrolled.next_code(), &enrolled.recovery_codes[0]);

    let attempts = [
        app.disable_totp(&token, "not the password", &code).await,
        app.disable_totp(&token, PASSWORD, &enrolled.wrong_code())
            .await,
        app.new_recovery_codes(&token, "not the password", recovery_code)
            .await,
        app.new_recovery_codes(&token, PASSWORD, "nonsense").await,
    ];
    for response in attempts {
        let body = assert_error(response, StatusCode::FORBIDDEN, "invalid_credentials").await;
        assert!(body.get("recovery_codes").is_none(), "{body}");
    }

    // TOTP is still on, the code and the recovery code sent with a wrong password were
    // not taken, and the old set still counts.
    assert_eq!(me(&app, &token).await["mfa"], true);
    app.password_step("alice").await;
    let response = app.login_with_code("alice", recovery_code).await;
    let pair = assert_tokens(response, "the recovery code").await;
    assert_eq!(pair["recovery_codes_left"], 9);
    let response = app.login_with_code("alice", &code).await;
    assert_tokens(response, "the next step's code").await;
}

#[tokio::test]
async fn wrong_passwords_or_codes_on_disable_and_new_codes_count_as_failed_logins() {
    let app = TestApp::spawn().await;
    let (token, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let wrong = enrolled.wrong_code();

    for attempt in 0..5 {
        let response = if attempt % 2 == 0 {
            app.disable_totp(&token, PASSWORD, &wrong).await
        } else {
            app.new_recovery_codes(&token, "not the password", &enrolled.recovery_codes[0])
                .await
        };
        assert_error(response, StatusCode::FORBIDDEN, "invalid_credentials").await;
    }
    assert_throttled(
        app.disable_totp(&token, PASSWORD, &enrolled.next_code())
            .await,
        "disable with the right password and code",
    )
    .await;
    assert_throttled(
        app.new_recovery_codes(&token, PASSWORD, &enrolled.recovery_codes[1])
            .await,
        "new codes",
    )
    .await;
    assert_throttled(app.try_login("alice", PASSWORD).await, "login").await;
    assert_eq!(me(&app, &token).await["mfa"], true);
}

// ----- the throttle -----

#[tokio::test]
async fn wrong_codes_count_as_failed_logins_and_the_sixth_attempt_is_429() {
    let app = TestApp::spawn().await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let wrong = enrolled.wrong_code();

    for n in 1..=3 {
        let response = app.login_with_code("alice", &wrong).await;
        assert_wrong_code(response, &format!("wrong code {n}, in the login")).await;
    }
    let mfa_token = app.password_step("alice").await;
    for n in 4..=5 {
        let response = app.login_mfa(&mfa_token, &wrong).await;
        assert_wrong_code(response, &format!("wrong code {n}, at the second step")).await;
    }
    assert_throttled(
        app.login_with_code("alice", &enrolled.next_code()).await,
        "a right password and code",
    )
    .await;
    assert_throttled(
        app.login_mfa(&mfa_token, &enrolled.recovery_codes[0]).await,
        "the second step",
    )
    .await;
    assert_throttled(app.try_login("alice", PASSWORD).await, "no code").await;
}

#[tokio::test]
async fn the_throttle_guards_the_second_step_and_answers_before_it() {
    let app = TestApp::spawn().await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let mfa_token = app.password_step("alice").await;

    wrong_passwords(&app, "alice", 5).await;
    assert_throttled(
        app.login_mfa(&mfa_token, &enrolled.next_code()).await,
        "a right code on a live token",
    )
    .await;
}

#[tokio::test]
async fn mfa_required_neither_counts_nor_resets_the_throttle() {
    let app = TestApp::spawn_with(&[("AUTHD__LOGIN__MAX_FAILURES", "3")]).await;
    enrolled_user(&app, "alice", &[]).await;

    wrong_passwords(&app, "alice", 2).await;
    // Counted, the first of these would lock the pair.
    for _ in 0..3 {
        app.password_step("alice").await;
    }
    // Had they reset it, this would be the first failure of three.
    wrong_passwords(&app, "alice", 1).await;
    assert_throttled(app.try_login("alice", PASSWORD).await, "after three").await;
}

#[tokio::test]
async fn a_full_login_with_a_code_resets_its_pair() {
    let app = TestApp::spawn().await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let wrong = enrolled.wrong_code();
    let fail = async || {
        let response = app.login_with_code("alice", &wrong).await;
        assert_wrong_code(response, "a wrong code").await;
    };

    for _ in 0..4 {
        fail().await;
    }
    app.login_two_steps("alice", &enrolled.recovery_codes[0])
        .await;
    for _ in 0..5 {
        fail().await;
    }
    assert_throttled(
        app.login_with_code("alice", &enrolled.recovery_codes[1])
            .await,
        "the sixth after the reset",
    )
    .await;
}

#[tokio::test]
async fn the_throttle_answers_before_the_409_of_the_mfa_routes() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    wrong_passwords(&app, "alice", 5).await;

    // TOTP is off: unthrottled, these would be 409.
    assert_throttled(
        app.disable_totp(&token, PASSWORD, "123456").await,
        "disable",
    )
    .await;
    assert_throttled(
        app.new_recovery_codes(&token, PASSWORD, "123456").await,
        "new codes",
    )
    .await;
    assert_throttled(app.begin_totp(&token, PASSWORD).await, "enrolment").await;
}

// ----- /v1/verify -----

#[tokio::test]
async fn verify_says_in_x_auth_mfa_whether_the_session_used_a_second_factor() {
    let app = TestApp::spawn().await;
    let (password_only, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let with_otp = app.login_two_steps("alice", &enrolled.next_code()).await;

    let response = app.verify(&password_only).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-auth-mfa"), "false");
    let response = app.verify(text(&with_otp["access_token"])).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-auth-mfa"), "true");
}

#[tokio::test]
async fn verify_with_mfa_1_refuses_a_session_without_otp_as_insufficient_scope() {
    let app = TestApp::spawn().await;
    let (password_only, enrolled) = enrolled_user(&app, "alice", &[]).await;
    let with_otp = app.login_two_steps("alice", &enrolled.next_code()).await;

    assert_insufficient_scope(verify_with(&app, &password_only, "?mfa=1").await).await;
    let response = verify_with(&app, text(&with_otp["access_token"]), "?mfa=1").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-auth-mfa"), "true");
    // Without the demand, the same session passes.
    assert_status(
        verify_with(&app, &password_only, "?mfa=0").await,
        StatusCode::OK,
        "mfa=0",
    )
    .await;
}

#[tokio::test]
async fn verify_mfa_1_combines_with_role() {
    let app = TestApp::spawn().await;
    let (password_only, enrolled) = enrolled_user(&app, "alice", &["ops"]).await;
    let with_otp = app.login_two_steps("alice", &enrolled.next_code()).await;
    let with_otp = text(&with_otp["access_token"]);

    for (token, query, status) in [
        (with_otp, "?mfa=1&role=ops", StatusCode::OK),
        (with_otp, "?role=ops&mfa=1", StatusCode::OK),
        (with_otp, "?mfa=1&role=admin", StatusCode::FORBIDDEN),
        (
            password_only.as_str(),
            "?mfa=1&role=ops",
            StatusCode::FORBIDDEN,
        ),
        (
            password_only.as_str(),
            "?mfa=1&role=admin",
            StatusCode::FORBIDDEN,
        ),
        (password_only.as_str(), "?role=ops", StatusCode::OK),
    ] {
        let response = verify_with(&app, token, query).await;
        if status == StatusCode::OK {
            assert_status(response, status, query).await;
        } else {
            assert_insufficient_scope(response).await;
        }
    }
}

// ----- mfa.required_roles -----

/// A daemon whose `mfa.required_roles` is `["admin"]`, and an access token of `root`, an
/// admin logged in with the password alone.
async fn requiring_admins() -> (TestApp, String) {
    let app = TestApp::spawn_with(&[("AUTHD__MFA__REQUIRED_ROLES", "admin")]).await;
    let token = app.user_token("root", &["admin"]).await;
    (app, token)
}

#[tokio::test]
async fn required_roles_refuse_a_session_without_otp_on_verify_sessions_password_and_the_admin_api()
{
    let (app, token) = requiring_admins().await;

    assert_insufficient_scope(app.verify(&token).await).await;
    assert_insufficient_scope(app.sessions(&token).await).await;
    assert_insufficient_scope(app.change_password(&token, PASSWORD, NEW_PASSWORD).await).await;
    assert_insufficient_scope(admin_api_as(&app, &token).await).await;
    // The refused password change changed nothing.
    assert_tokens(app.try_login("root", PASSWORD).await, "the old password").await;
}

#[tokio::test]
async fn required_roles_leave_a_session_without_otp_me_the_mfa_routes_and_logout() {
    let (app, token) = requiring_admins().await;

    assert_eq!(me(&app, &token).await["username"], "root");
    let enrolled = app.enrol(&token).await;
    assert_eq!(me(&app, &token).await["mfa"], true);
    let response = app
        .new_recovery_codes(&token, PASSWORD, &enrolled.next_code())
        .await;
    recovery_codes_of(response, "new recovery codes").await;
    assert_status(
        app.logout(&token, None).await,
        StatusCode::NO_CONTENT,
        "logout",
    )
    .await;
    assert_session_ended(&app, &token).await;
}

#[tokio::test]
async fn required_roles_send_a_browser_from_verify_with_redirect_1_to_the_account_page() {
    let (app, token) = requiring_admins().await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let send = |accept: &'static str| {
        browser
            .get(format!("{}/v1/verify?redirect=1", app.public))
            .bearer_auth(&token)
            .header(ACCEPT, accept)
            .send()
    };

    let response = send("text/html,application/xhtml+xml,*/*;q=0.8")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = header(&response, LOCATION);
    assert!(location.ends_with("/account"), "Location: {location}");
    // An API client gets the 403.
    assert_insufficient_scope(send("application/json").await.unwrap()).await;
}

#[tokio::test]
async fn enrolling_does_not_lift_required_roles_for_that_session_but_a_login_with_a_code_works_everywhere()
 {
    let (app, token) = requiring_admins().await;
    let enrolled = app.enrol(&token).await;

    assert_insufficient_scope(app.verify(&token).await).await;
    assert_insufficient_scope(admin_api_as(&app, &token).await).await;

    let pair = app.login_two_steps("root", &enrolled.next_code()).await;
    let with_otp = text(&pair["access_token"]);
    let response = app.verify(with_otp).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-auth-mfa"), "true");
    assert_status(app.sessions(with_otp).await, StatusCode::OK, "sessions").await;
    assert_status(
        admin_api_as(&app, with_otp).await,
        StatusCode::OK,
        "admin API",
    )
    .await;
    assert_status(
        app.change_password(with_otp, PASSWORD, NEW_PASSWORD).await,
        StatusCode::NO_CONTENT,
        "password change",
    )
    .await;
}

#[tokio::test]
async fn required_roles_hold_only_users_who_now_hold_such_a_role() {
    let app = TestApp::spawn_with(&[("AUTHD__MFA__REQUIRED_ROLES", "admin")]).await;
    let token = app.user_token("bob", &["ops"]).await;
    assert_status(app.verify(&token).await, StatusCode::OK, "no such role").await;
    assert_status(app.sessions(&token).await, StatusCode::OK, "no such role").await;

    let response = app
        .update_user("bob", json!({"roles": ["ops", "admin"]}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_insufficient_scope(app.verify(&token).await).await;
    let response = app.update_user("bob", json!({"roles": ["ops"]})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_status(app.verify(&token).await, StatusCode::OK, "the role gone").await;
}

// ----- the admin's reset -----

/// alice enrolled (her password-only access token), and the token answer of a login of
/// hers with a code.
async fn alice_with_two_sessions(app: &TestApp) -> (String, Value) {
    let (password_only, enrolled) = enrolled_user(app, "alice", &[]).await;
    let with_otp = app.login_two_steps("alice", &enrolled.next_code()).await;
    (password_only, with_otp)
}

#[tokio::test]
async fn an_admin_reset_turns_totp_off_revokes_every_session_and_login_needs_only_the_password() {
    let app = TestApp::spawn().await;
    let (password_only, with_otp) = alice_with_two_sessions(&app).await;

    let response = app.reset_mfa("alice").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    for token in [password_only.as_str(), text(&with_otp["access_token"])] {
        assert_session_ended(&app, token).await;
    }
    assert_error(
        app.refresh(text(&with_otp["refresh_token"])).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert!(!app.mfa_flag("alice").await);
    let pair = assert_tokens(app.try_login("alice", PASSWORD).await, "password only").await;
    assert_eq!(amr_of(&pair), pwd());
    assert_eq!(me(&app, text(&pair["access_token"])).await["mfa"], false);
}

#[tokio::test]
async fn an_admin_reset_kills_the_recovery_codes() {
    let app = TestApp::spawn().await;
    let (_, enrolled) = enrolled_user(&app, "alice", &[]).await;
    assert_status(
        app.reset_mfa("alice").await,
        StatusCode::NO_CONTENT,
        "reset",
    )
    .await;

    let (_, again) = app.login_and_enrol("alice").await;
    assert_only_the_new_set_works(&app, &enrolled, &again, 0).await;
}

#[tokio::test]
async fn an_admin_reset_is_204_also_when_totp_is_off_and_404_for_an_unknown_user() {
    let app = TestApp::spawn().await;
    let token = app.user_token("bob", &[]).await;

    assert_status(
        app.reset_mfa("bob").await,
        StatusCode::NO_CONTENT,
        "TOTP off",
    )
    .await;
    // Still a revoke-all.
    assert_session_ended(&app, &token).await;
    assert_error(
        app.reset_mfa("nobody").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn an_admin_reset_needs_the_admin_credential() {
    let app = TestApp::spawn().await;
    let (token, _) = enrolled_user(&app, "alice", &[]).await;
    let reset = || {
        app.client
            .delete(format!("{}/admin/v1/users/alice/mfa", app.admin))
    };

    assert_error(
        reset().send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    assert_insufficient_scope(reset().bearer_auth(&token).send().await.unwrap()).await;
    assert!(app.mfa_flag("alice").await);
}

#[tokio::test]
async fn an_admin_reset_sends_a_sid_event_per_session_it_ended() {
    let app = TestApp::spawn().await;
    let (password_only, with_otp) = alice_with_two_sessions(&app).await;
    let sids: BTreeSet<String> = [password_only.as_str(), text(&with_otp["access_token"])]
        .iter()
        .map(|token| text(&claims(token)["sid"]).to_owned())
        .collect();
    assert_status(
        app.reset_mfa("alice").await,
        StatusCode::NO_CONTENT,
        "reset",
    )
    .await;

    let feed = feed_token(&app.dir.join("feed.token"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = app.feed_poll(&feed, "?wait=1s").await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        let events = body["events"].as_array().unwrap();
        assert!(events.iter().all(|event| event["kind"] == "sid"), "{body}");
        let sent: BTreeSet<String> = events
            .iter()
            .map(|event| text(&event["id"]).to_owned())
            .collect();
        if sent == sids {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "feed events {sent:?}, expected the sids {sids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

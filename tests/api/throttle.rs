//! Login throttling (API.md "Login throttling", rev 4): per (username, address) pair, per
//! username over all addresses, per client address (through `X-Forwarded-For` only from
//! trusted proxies), the exemption of pairs known from a success, password-change guesses,
//! what is counted and what is not, and a spray of usernames against the bounded tables.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, assert_error};

/// A login, optionally as forwarded by a proxy for `forwarded_for`.
async fn login_via(
    app: &TestApp,
    username: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .public_request(Method::POST, "/v1/login")
        .json(&json!({"username": username, "password": password}));
    if let Some(xff) = forwarded_for {
        request = request.header("x-forwarded-for", xff);
    }
    request.send().await.unwrap()
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .expect("a 429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Asserts a `429 too_many_requests` with a sane `Retry-After`; returns the body.
async fn assert_throttled(response: reqwest::Response, window_secs: u64) -> Value {
    let seconds = retry_after(&response);
    assert!(
        (1..=window_secs).contains(&seconds),
        "Retry-After {seconds}"
    );
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await
}

async fn assert_status(response: reqwest::Response, status: StatusCode) {
    assert_eq!(response.status(), status);
}

#[tokio::test]
async fn failures_past_the_limit_get_429_with_retry_after_even_with_the_right_password() {
    let app = TestApp::spawn_with(&[("AUTHD__LOGIN__MAX_FAILURES", "3")]).await;
    app.add_user("alice", &[]).await;
    app.add_user("bob", &[]).await;

    for _ in 0..3 {
        assert_status(
            app.try_login("alice", "wrong password").await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    let refused = app.try_login("alice", "wrong password").await;
    let seconds = retry_after(&refused);
    assert!(
        (895..=900).contains(&seconds),
        "Retry-After {seconds} of a 15 min window"
    );
    assert_throttled(refused, 900).await;
    assert_throttled(app.try_login("alice", PASSWORD).await, 900).await;
    assert_throttled(app.try_login("ALICE", PASSWORD).await, 900).await;

    // Another user from the same address is not affected.
    assert_status(app.try_login("bob", PASSWORD).await, StatusCode::OK).await;
}

#[tokio::test]
async fn an_unknown_user_is_throttled_exactly_like_a_known_one() {
    let app = TestApp::spawn_with(&[("AUTHD__LOGIN__MAX_FAILURES", "3")]).await;
    app.add_user("alice", &[]).await;

    for name in ["alice", "Alice", "ALICE"] {
        assert_status(
            app.try_login(name, "wrong password").await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    for name in ["nobody", "NoBody", "NOBODY"] {
        assert_status(
            app.try_login(name, PASSWORD).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    let known = app.try_login("alice", PASSWORD).await;
    let unknown = app.try_login("nobody", PASSWORD).await;
    let known = assert_throttled(known, 900).await;
    let unknown = assert_throttled(unknown, 900).await;
    assert_eq!(known, unknown);

    // Names no account could have are counted by their text just the same.
    let long = "x".repeat(300);
    for name in [long.as_str(), "al ice"] {
        for _ in 0..3 {
            assert_status(
                app.try_login(name, PASSWORD).await,
                StatusCode::UNAUTHORIZED,
            )
            .await;
        }
        assert_throttled(app.try_login(name, PASSWORD).await, 900).await;
    }
}

#[tokio::test]
async fn a_success_resets_its_own_pair_only() {
    let app = TestApp::spawn_with(&[
        ("AUTHD__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
        ("AUTHD__LOGIN__MAX_FAILURES", "3"),
    ])
    .await;
    app.add_user("alice", &[]).await;
    let (home, away) = (Some("192.0.2.10"), Some("192.0.2.20"));

    for from in [home, home, away, away] {
        assert_status(
            login_via(&app, "alice", "wrong password", from).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    assert_status(
        login_via(&app, "alice", PASSWORD, home).await,
        StatusCode::OK,
    )
    .await;
    // At home the count started over: three more failures before the lock, not one.
    for _ in 0..3 {
        assert_status(
            login_via(&app, "alice", "wrong password", home).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    assert_throttled(login_via(&app, "alice", PASSWORD, home).await, 900).await;
    // Elsewhere it did not: the third failure there locks that pair.
    assert_status(
        login_via(&app, "alice", "wrong password", away).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_throttled(login_via(&app, "alice", PASSWORD, away).await, 900).await;
}

#[tokio::test]
async fn the_address_limit_follows_x_forwarded_for_from_a_trusted_proxy() {
    let app = TestApp::spawn_with(&[
        ("AUTHD__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
        ("AUTHD__LOGIN__MAX_FAILURES_PER_IP", "3"),
    ])
    .await;
    app.add_user("alice", &[]).await;
    let (first, second) = (Some("203.0.113.1"), Some("203.0.113.2"));

    for name in ["u1", "u2", "u3"] {
        assert_status(
            login_via(&app, name, PASSWORD, first).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    assert_throttled(login_via(&app, "u4", PASSWORD, first).await, 900).await;
    assert_throttled(login_via(&app, "alice", PASSWORD, first).await, 900).await;
    // What the client writes left of the proxy's entry changes nothing.
    let spoofed = Some("198.51.100.7, 203.0.113.1");
    assert_throttled(login_via(&app, "alice", PASSWORD, spoofed).await, 900).await;

    // Another address is counted separately, and a success does not reset it.
    assert_status(
        login_via(&app, "u1", PASSWORD, second).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_status(
        login_via(&app, "alice", PASSWORD, second).await,
        StatusCode::OK,
    )
    .await;
    for name in ["u5", "u6"] {
        assert_status(
            login_via(&app, name, PASSWORD, second).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    assert_throttled(login_via(&app, "alice", PASSWORD, second).await, 900).await;

    // The proxy itself (no header) is yet another client.
    assert_status(
        login_via(&app, "alice", PASSWORD, None).await,
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn without_trusted_proxies_x_forwarded_for_is_ignored() {
    let app = TestApp::spawn_with(&[("AUTHD__LOGIN__MAX_FAILURES_PER_IP", "3")]).await;
    app.add_user("alice", &[]).await;

    for (name, xff) in [
        ("u1", "203.0.113.1"),
        ("u2", "203.0.113.2"),
        ("u3", "203.0.113.3"),
    ] {
        assert_status(
            login_via(&app, name, PASSWORD, Some(xff)).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    assert_throttled(
        login_via(&app, "alice", PASSWORD, Some("203.0.113.4")).await,
        900,
    )
    .await;
    assert_throttled(app.try_login("alice", PASSWORD).await, 900).await;
}

#[tokio::test]
async fn a_disabled_account_with_the_right_password_is_not_counted() {
    let app = TestApp::spawn_with(&[
        ("AUTHD__LOGIN__MAX_FAILURES", "2"),
        ("AUTHD__LOGIN__MAX_FAILURES_PER_IP", "2"),
    ])
    .await;
    app.add_user("bob", &[]).await;
    let disable = app.update_user("bob", json!({"disabled": true})).await;
    assert_eq!(disable.status(), StatusCode::OK);

    for _ in 0..5 {
        let response = app.try_login("bob", PASSWORD).await;
        assert_error(response, StatusCode::FORBIDDEN, "account_disabled").await;
    }
    // A wrong password is a failure like any other: two of them reach the limit.
    for _ in 0..2 {
        assert_status(
            app.try_login("bob", "wrong password").await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    assert_throttled(app.try_login("bob", PASSWORD).await, 900).await;
}

#[tokio::test]
async fn malformed_requests_are_not_counted() {
    let app = TestApp::spawn_with(&[
        ("AUTHD__LOGIN__MAX_FAILURES", "1"),
        ("AUTHD__LOGIN__MAX_FAILURES_PER_IP", "1"),
    ])
    .await;
    app.add_user("alice", &[]).await;
    let url = format!("{}/v1/login", app.public);
    let send = |content_type: &'static str, body: String| {
        app.client
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    for _ in 0..3 {
        let not_json = send("application/json", r#"{"username": "alice", "#.into());
        assert_status(not_json.await.unwrap(), StatusCode::BAD_REQUEST).await;
        let missing = send("application/json", r#"{"username": "alice"}"#.into());
        assert_status(missing.await.unwrap(), StatusCode::BAD_REQUEST).await;
        let unknown_field = json!({"username": "alice", "password": "wrong password", "otp": 1});
        let unknown_field = send("application/json", unknown_field.to_string());
        assert_status(unknown_field.await.unwrap(), StatusCode::BAD_REQUEST).await;
        let plain = send(
            "text/plain",
            "username=alice&password=wrong+password".into(),
        );
        assert_status(plain.await.unwrap(), StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }
    app.login("alice").await;

    assert_status(
        app.try_login("alice", "wrong password").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_throttled(app.try_login("alice", PASSWORD).await, 900).await;
}

#[tokio::test]
async fn a_spray_of_usernames_neither_unlocks_a_locked_user_nor_slows_logins() {
    const SPRAY: usize = 20_000;
    const PER_ADDRESS: usize = 40;
    const WORKERS: usize = 16;
    let app = TestApp::spawn_with(&[
        ("AUTHD__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
        ("AUTHD__LOGIN__MAX_FAILURES", "3"),
        ("AUTHD__LOGIN__MAX_FAILURES_PER_USER", "3"),
        ("AUTHD__LOGIN__MAX_TRACKED", "1000"),
    ])
    .await;
    app.add_user("victim", &[]).await;
    app.add_user("alice", &[]).await;
    for _ in 0..3 {
        let response = login_via(&app, "victim", "guess", Some("192.0.2.1")).await;
        assert_status(response, StatusCode::UNAUTHORIZED).await;
    }

    // 20,000 usernames from 500 addresses, each address staying under its limit of 50.
    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let client = app.client.clone();
            let url = format!("{}/v1/login", app.public);
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in (worker..SPRAY).step_by(WORKERS) {
                    let address = i / PER_ADDRESS;
                    let response = client
                        .post(&url)
                        .header("x-forwarded-for", format!("10.0.{}.{}", address / 256, address % 256))
                        .json(&json!({"username": format!("spray-{:08x}", mix(i)), "password": "guess"}))
                        .send()
                        .await
                        .unwrap();
                    statuses.push(response.status());
                }
                statuses
            })
        })
        .collect();
    let mut unauthorized = 0;
    for worker in workers {
        let statuses = worker.await.unwrap();
        unauthorized += statuses
            .iter()
            .filter(|s| **s == StatusCode::UNAUTHORIZED)
            .count();
    }
    let sprayed = started.elapsed();
    assert_eq!(
        unauthorized, SPRAY,
        "every sprayed attempt is an ordinary failure"
    );

    // The victim is still locked, its pair and its username from any address, and
    // everybody else logs in at once.
    let fresh = Some("192.0.2.99");
    assert_throttled(
        login_via(&app, "victim", PASSWORD, Some("192.0.2.1")).await,
        900,
    )
    .await;
    assert_throttled(login_via(&app, "victim", PASSWORD, fresh).await, 900).await;
    let started = Instant::now();
    assert_status(
        login_via(&app, "alice", PASSWORD, fresh).await,
        StatusCode::OK,
    )
    .await;
    let one_login = started.elapsed();
    assert!(
        one_login < Duration::from_millis(500),
        "a login took {one_login:?}"
    );
    assert!(
        sprayed < Duration::from_secs(60),
        "the spray took {sprayed:?}"
    );
}

#[tokio::test]
async fn a_locked_pair_does_not_lock_the_victim_out_from_another_address() {
    let app = TestApp::spawn_with(&[("AUTHD__SERVER__TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    app.add_user("alice", &[]).await;
    let (attacker, victim) = (Some("198.51.100.66"), Some("192.0.2.10"));

    // The attacker guesses alice's password until its pair (alice, attacker) locks...
    for _ in 0..5 {
        assert_status(
            login_via(&app, "alice", "guess", attacker).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    let refused = login_via(&app, "alice", PASSWORD, attacker).await;
    let seconds = retry_after(&refused);
    assert!((895..=900).contains(&seconds), "Retry-After {seconds}");
    assert_throttled(refused, 900).await;

    // ...which does not stop alice, who logs in from her own address...
    assert_status(
        login_via(&app, "alice", PASSWORD, victim).await,
        StatusCode::OK,
    )
    .await;
    // ...even right after a typo of her own there.
    assert_status(
        login_via(&app, "alice", "typo", victim).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_status(
        login_via(&app, "Alice", PASSWORD, victim).await,
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn failures_spread_over_many_addresses_lock_the_username_everywhere() {
    let app = TestApp::spawn_with(&[
        ("AUTHD__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
        ("AUTHD__LOGIN__MAX_FAILURES", "3"),
        ("AUTHD__LOGIN__MAX_FAILURES_PER_USER", "12"),
    ])
    .await;
    app.add_user("alice", &[]).await;
    app.add_user("bob", &[]).await;

    // Four addresses, three guesses each: no pair and no address is over its own limit
    // before the last guess, but together they reach the username's 12.
    for address in 1..=4 {
        let from = format!("203.0.113.{address}");
        for _ in 0..3 {
            assert_status(
                login_via(&app, "alice", "guess", Some(&from)).await,
                StatusCode::UNAUTHORIZED,
            )
            .await;
        }
    }
    // Locked for every address, the right password included, and not for bob.
    for from in ["192.0.2.77", "203.0.113.9", "2001:db8::1"] {
        assert_throttled(login_via(&app, "alice", PASSWORD, Some(from)).await, 900).await;
    }
    assert_status(
        login_via(&app, "bob", PASSWORD, Some("203.0.113.1")).await,
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn a_distributed_attack_cannot_lock_a_user_out_of_where_it_logged_in_before() {
    // Shipped limits: 5 per pair, 100 per username, known_for 30 days.
    let app = TestApp::spawn_with(&[("AUTHD__SERVER__TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    app.add_user("alice", &[]).await;
    let home = Some("192.0.2.10");
    assert_status(
        login_via(&app, "alice", PASSWORD, home).await,
        StatusCode::OK,
    )
    .await;

    // 20 addresses × 5 guesses: every attacking pair locks, and alice's 100 are reached.
    for address in 1..=20 {
        let from = format!("198.51.100.{address}");
        for _ in 0..5 {
            assert_status(
                login_via(&app, "alice", "guess", Some(&from)).await,
                StatusCode::UNAUTHORIZED,
            )
            .await;
        }
        assert_throttled(login_via(&app, "alice", "guess", Some(&from)).await, 900).await;
    }
    assert_throttled(
        login_via(&app, "alice", PASSWORD, Some("192.0.2.11")).await,
        900,
    )
    .await;

    // From home alice still logs in.
    assert_status(
        login_via(&app, "alice", PASSWORD, home).await,
        StatusCode::OK,
    )
    .await;
}

/// `POST /v1/password` with `access_token`, as forwarded by a proxy for `forwarded_for`.
async fn change_password_via(
    app: &TestApp,
    access_token: &str,
    current_password: &str,
    forwarded_for: &str,
) -> reqwest::Response {
    app.public_request(Method::POST, "/v1/password")
        .bearer_auth(access_token)
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"current_password": current_password, "new_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap()
}

const NEW_PASSWORD: &str = "a brand new passphrase";

#[tokio::test]
async fn guessing_the_current_password_with_a_stolen_token_is_throttled() {
    let app = TestApp::spawn_with(&[("AUTHD__SERVER__TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    app.add_user("alice", &[]).await;
    let (thief, home) = ("198.51.100.66", "192.0.2.10");
    let alice = login_via(&app, "alice", PASSWORD, Some(home)).await;
    let alice: Value = alice.json().await.unwrap();
    let stolen = login_via(&app, "alice", PASSWORD, Some(home)).await;
    let stolen: Value = stolen.json().await.unwrap();
    let stolen = stolen["access_token"].as_str().unwrap();

    for _ in 0..5 {
        let response = change_password_via(&app, stolen, "a guess", thief).await;
        assert_error(response, StatusCode::FORBIDDEN, "invalid_credentials").await;
    }
    assert_throttled(
        change_password_via(&app, stolen, "another guess", thief).await,
        900,
    )
    .await;
    // Once throttled, the right current password is refused too...
    assert_throttled(
        change_password_via(&app, stolen, PASSWORD, thief).await,
        900,
    )
    .await;
    // ...and so is a login of that pair: the guesses were failed logins.
    assert_throttled(login_via(&app, "alice", PASSWORD, Some(thief)).await, 900).await;

    // Nothing changed: the old password still works, the new one does not, and alice's
    // other session is alive.
    assert_status(
        login_via(&app, "alice", NEW_PASSWORD, Some(home)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_status(
        login_via(&app, "alice", PASSWORD, Some(home)).await,
        StatusCode::OK,
    )
    .await;
    let verified = app.verify(alice["access_token"].as_str().unwrap()).await;
    assert_eq!(verified.status(), StatusCode::OK);
}

/// Spreads sequence numbers over the 32-bit range (a bijection), so names look random.
fn mix(i: usize) -> u32 {
    (i as u32).wrapping_mul(0x9e37_79b9).rotate_left(13) ^ 0x5bd1_e995
}

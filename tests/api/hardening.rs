//! Hostile input and hostile clients (issue 5): huge numbers, control characters in
//! usernames, over-long headers and tokens, every malformed-token shape not covered in
//! `login.rs`, slow and idle connections, the login timing of unknown users (an ignored
//! test, run on purpose), and the modes of the files a first start creates.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::common::{PASSWORD, TestApp, assert_error, claims, with_claim};

/// `authd::auth::token::MAX_TOKEN_BYTES`.
const MAX_TOKEN_BYTES: usize = authd::auth::token::MAX_TOKEN_BYTES;
/// The header read timeout of `src/http/server.rs` (10 s).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

// ----- helpers -----

/// The app's HS256 signing key (`<dir>/keys/<kid>.key`), to sign hand-made tokens with.
struct Signer {
    kid: String,
    secret: Vec<u8>,
}

impl Signer {
    fn of(app: &TestApp) -> Signer {
        let mut keys: Vec<_> = std::fs::read_dir(app.dir.join("keys"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "key"))
            .collect();
        keys.sort();
        let path = keys.pop().expect("the app generated an HS256 key");
        Signer {
            kid: path.file_stem().unwrap().to_str().unwrap().to_owned(),
            secret: STANDARD
                .decode(std::fs::read_to_string(&path).unwrap().trim())
                .unwrap(),
        }
    }

    fn header(&self) -> Value {
        json!({"alg": "HS256", "typ": "at+jwt", "kid": self.kid})
    }

    /// `b64(header).b64(claims).HS256-signature`, from raw JSON texts (which need not be
    /// objects, or JSON at all).
    fn sign_raw(&self, header: &[u8], claims: &[u8]) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let key = jsonwebtoken::EncodingKey::from_secret(&self.secret);
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                .unwrap();
        format!("{message}.{signature}")
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        self.sign_raw(
            &serde_json::to_vec(header).unwrap(),
            &serde_json::to_vec(claims).unwrap(),
        )
    }
}

/// A user with a live session and the claims of its real token, to re-sign with one
/// thing changed (so only that change can make verification fail).
async fn live_claims(app: &TestApp) -> Value {
    claims(&app.user_token("alice", &[]).await)
}

async fn assert_invalid_token(app: &TestApp, token: &str, what: &str) -> Value {
    let response = app.verify(token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token", "{what}: {body}");
    body
}

async fn post_json(app: &TestApp, base: &str, path: &str, body: String) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{base}{path}"))
        .header(CONTENT_TYPE, "application/json")
        .body(body);
    if base == app.admin {
        request = request.bearer_auth(&app.admin_token);
    }
    request.send().await.unwrap()
}

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// Sends `request` on a fresh connection and returns the status of the answer (`None` when
/// the server closed the connection without one). Never waits more than 10 s.
async fn raw_status(base: &str, request: Vec<u8>) -> Option<u16> {
    let mut stream = TcpStream::connect(addr(base)).await.unwrap();
    // The server may answer (and close) before it has read everything.
    let _ = stream.write_all(&request).await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
            if received.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    let text = String::from_utf8_lossy(&received);
    text.lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
}

/// Whether the daemon still answers `/v1/verify` for `token` with 200 within one second.
async fn verify_is_fast(app: &TestApp, token: &str) -> Duration {
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(1), app.verify(token))
        .await
        .expect("/v1/verify answered within a second");
    assert_eq!(response.status(), StatusCode::OK);
    started.elapsed()
}

// ----- huge numbers -----

#[tokio::test]
async fn huge_numbers_in_json_bodies_are_400_invalid_request() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let digits = "9".repeat(10_000);
    let cases = [
        (
            app.admin.clone(),
            "/admin/v1/users",
            format!(r#"{{"username":"bob","password":"{PASSWORD}","roles":1e999}}"#),
        ),
        (
            app.admin.clone(),
            "/admin/v1/users",
            format!(r#"{{"username":"bob","password":"{PASSWORD}","roles":{digits}}}"#),
        ),
        (
            app.admin.clone(),
            "/admin/v1/users",
            format!(r#"{{"username":"bob","password":"{PASSWORD}","roles":[{digits}]}}"#),
        ),
        (
            app.public.clone(),
            "/v1/login",
            r#"{"username":"alice","password":1e999}"#.to_owned(),
        ),
        (
            app.public.clone(),
            "/v1/login",
            format!(r#"{{"username":{digits},"password":"x"}}"#),
        ),
        (
            app.public.clone(),
            "/v1/login",
            format!(r#"{{"username":"alice","password":-{digits}.{digits}e-999999}}"#),
        ),
        (
            app.public.clone(),
            "/v1/token/refresh",
            format!(r#"{{"refresh_token":{digits}}}"#),
        ),
        (
            app.admin.clone(),
            "/admin/v1/revocations",
            r#"{"jti":1e999}"#.to_owned(),
        ),
    ];

    for (base, path, body) in cases {
        let response = post_json(&app, &base, path, body.clone()).await;

        let shown = &body[..body.len().min(60)];
        let error = assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert!(!error.to_string().contains("99999999"), "{shown}: {error}");
    }
    let patch = app
        .admin_request(Method::PATCH, "/admin/v1/users/alice")
        .header(CONTENT_TYPE, "application/json")
        .body(format!(r#"{{"disabled":{digits}}}"#))
        .send()
        .await
        .unwrap();
    assert_error(patch, StatusCode::BAD_REQUEST, "invalid_request").await;
    let list: Value = app.list_users("").await.json().await.unwrap();
    assert_eq!(
        list["users"].as_array().unwrap().len(),
        1,
        "no user was created: {list}"
    );
}

// ----- control characters in usernames -----

/// Usernames carrying NUL or another control character next to a valid name.
const CONTROL_NAMES: [&str; 10] = [
    "alice\u{0}",
    "\u{0}alice",
    "al\u{0}ice",
    "alice\n",
    "\talice",
    "ali\rce",
    "\u{1b}[31malice",
    "alice\u{7f}",
    "alice\u{85}",
    "alice\u{200b}",
];

#[tokio::test]
async fn control_characters_in_a_new_username_are_400_invalid_request() {
    let app = TestApp::spawn().await;

    for username in CONTROL_NAMES {
        let response = app
            .create_user_with(json!({"username": username, "password": PASSWORD}))
            .await;

        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{username:?}: {body}");
        assert_eq!(body["error"], "invalid_request", "{username:?}: {body}");
    }
    let list: Value = app.list_users("").await.json().await.unwrap();
    assert_eq!(list["users"], json!([]), "no user was created");
}

#[tokio::test]
async fn control_characters_around_an_existing_username_at_login_are_401_not_a_login() {
    let app = TestApp::spawn_with(&[
        ("AUTHD__LOGIN__MAX_FAILURES", "1000"),
        ("AUTHD__LOGIN__MAX_FAILURES_PER_IP", "1000"),
    ])
    .await;
    app.add_user("alice", &[]).await;

    for username in CONTROL_NAMES {
        let response = app.try_login(username, PASSWORD).await;

        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    for form in [
        "username=alice%00&password=correct+horse+battery",
        "username=%00alice&password=correct+horse+battery",
        "username=alice%0A&password=correct+horse+battery",
    ] {
        let response = app
            .public_request(Method::POST, "/v1/login")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();

        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    assert_eq!(
        app.try_login("alice", PASSWORD).await.status(),
        StatusCode::OK,
        "the real name still logs in"
    );
}

// ----- over-long headers -----

#[tokio::test]
async fn a_40_kib_header_gets_a_clean_4xx_and_the_listener_keeps_serving() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    let junk = "j".repeat(40 * 1024);
    let requests = [
        (
            app.public.clone(),
            format!("GET /v1/verify HTTP/1.1\r\nHost: x\r\nX-Junk: {junk}\r\n\r\n"),
        ),
        (
            app.public.clone(),
            format!("GET /v1/verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {junk}\r\n\r\n"),
        ),
        (
            app.public.clone(),
            format!(
                "POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Junk: {junk}\r\nContent-Length: 2\r\n\r\n{{}}"
            ),
        ),
        (
            app.admin.clone(),
            format!(
                "GET /admin/v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {junk}\r\n\r\n"
            ),
        ),
        // Many small headers adding up to 40 KiB.
        (
            app.public.clone(),
            format!(
                "GET /v1/verify HTTP/1.1\r\nHost: x\r\n{}\r\n",
                "X-J: 0123456789012345678901234567890123456789\r\n".repeat(1000)
            ),
        ),
    ];

    for (base, request) in requests {
        let status = raw_status(&base, request.into_bytes()).await;

        let status = status.expect("the server answers an over-long head with a status");
        assert!((400..500).contains(&status), "{status}");
    }
    verify_is_fast(&app, &token).await;
}

#[tokio::test]
async fn a_head_far_over_the_cap_is_431_whatever_the_header() {
    // hyper checks `max_buf_size` (32 KiB) between reads, so a head somewhat over it may
    // still be read whole (the 40 KiB cases above are then answered normally); far over it,
    // the answer is always 431.
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    let junk = "j".repeat(256 * 1024);

    for request in [
        format!("GET /v1/verify HTTP/1.1\r\nHost: x\r\nX-Junk: {junk}\r\n\r\n"),
        format!("GET /v1/verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {junk}\r\n\r\n"),
        format!("GET /v1/verify?{junk} HTTP/1.1\r\nHost: x\r\n\r\n"),
    ] {
        let status = raw_status(&app.public, request.into_bytes()).await;

        assert_eq!(status, Some(431));
    }
    verify_is_fast(&app, &token).await;
}

// ----- over-long tokens -----

/// A real token's claims, padded so that the signed token is exactly `len` bytes long.
fn token_of_length(signer: &Signer, claims: &Value, len: usize) -> String {
    // base64url never yields a length of 4k+1, so the header's spacing varies too.
    for spaces in 0..4 {
        let header = format!(
            r#"{{"alg":"HS256",{}"typ":"at+jwt","kid":"{}"}}"#,
            " ".repeat(spaces),
            signer.kid
        );
        let short = signer
            .sign(&signer.header(), &with_claim(claims, "pad", json!("")))
            .len();
        for pad in len.saturating_sub(short + 16) * 3 / 4..len {
            let padded = with_claim(claims, "pad", json!("p".repeat(pad)));
            let token = signer.sign_raw(header.as_bytes(), &serde_json::to_vec(&padded).unwrap());
            if token.len() == len {
                return token;
            }
            if token.len() > len {
                break;
            }
        }
    }
    panic!("no token of {len} bytes")
}

#[tokio::test]
async fn a_token_of_exactly_the_limit_is_verified_and_one_byte_more_is_refused_unparsed() {
    let app = TestApp::spawn().await;
    let signer = Signer::of(&app);
    let claims = live_claims(&app).await;
    let at_limit = token_of_length(&signer, &claims, MAX_TOKEN_BYTES);
    let over_limit = token_of_length(&signer, &claims, MAX_TOKEN_BYTES + 1);
    let garbage = "x".repeat(MAX_TOKEN_BYTES + 1);

    let accepted = app.verify(&at_limit).await;
    let refused = assert_invalid_token(&app, &over_limit, "limit + 1").await;
    let garbage = assert_invalid_token(&app, &garbage, "unparsable, over the limit").await;

    assert_eq!(
        accepted.status(),
        StatusCode::OK,
        "a token of exactly the limit"
    );
    // "too large", not "malformed": the size is checked before any parsing.
    assert_eq!(
        refused["error_description"], "token is too large",
        "{refused}"
    );
    assert_eq!(
        garbage["error_description"], "token is too large",
        "{garbage}"
    );
}

// ----- malformed tokens (what login.rs does not cover) -----

#[tokio::test]
async fn unknown_or_mismatched_algorithms_are_401_invalid_token() {
    let app = TestApp::spawn().await;
    let signer = Signer::of(&app);
    let claims = live_claims(&app).await;

    for alg in [
        json!("HS999"),
        json!("hs256"),
        json!("HS512"),
        json!("RS256"),
        json!("ES256"),
        json!(""),
        json!(null),
        json!(["HS256"]),
    ] {
        let header = json!({"alg": alg, "typ": "at+jwt", "kid": signer.kid});

        assert_invalid_token(&app, &signer.sign(&header, &claims), &format!("alg {alg}")).await;
    }
}

#[tokio::test]
async fn wrong_segment_counts_and_bad_base64_are_401_invalid_token() {
    let app = TestApp::spawn().await;
    let signer = Signer::of(&app);
    let claims = live_claims(&app).await;
    let good = signer.sign(&signer.header(), &claims);
    let parts: Vec<&str> = good.split('.').collect();
    let (header, payload, signature) = (parts[0], parts[1], parts[2]);
    let std_payload = STANDARD.encode(URL_SAFE_NO_PAD.decode(payload).unwrap());

    let cases = [
        ("one segment", header.to_owned()),
        ("two segments", format!("{header}.{payload}")),
        ("two segments, trailing dot", format!("{header}.{payload}.")),
        ("four segments", format!("{good}.{signature}")),
        ("four segments, empty last", format!("{good}.")),
        ("leading dot", format!(".{good}")),
        ("empty segments", "..".to_owned()),
        (
            "bad base64 header",
            format!("{header}!.{payload}.{signature}"),
        ),
        (
            "bad base64 payload",
            format!("{header}.{payload}*.{signature}"),
        ),
        (
            "bad base64 signature",
            format!("{header}.{payload}.{signature}$"),
        ),
        (
            "standard base64 payload",
            format!("{header}.{std_payload}.{signature}"),
        ),
        ("padded header", format!("{header}==.{payload}.{signature}")),
        (
            "whitespace inside",
            format!("{header}. {payload}.{signature}"),
        ),
        (
            "percent-encoded bytes",
            format!("{header}.{payload}%C3%A9.{signature}"),
        ),
    ];
    for (what, token) in cases {
        assert_invalid_token(&app, &token, what).await;
    }
}

#[tokio::test]
async fn headers_and_payloads_that_are_not_json_objects_are_401_invalid_token() {
    let app = TestApp::spawn().await;
    let signer = Signer::of(&app);
    let claims = serde_json::to_vec(&live_claims(&app).await).unwrap();
    let header = serde_json::to_vec(&signer.header()).unwrap();

    for not_an_object in [
        &b"[]"[..],
        b"\"x\"",
        b"null",
        b"42",
        b"true",
        b"",
        b"{",
        b"\xff\xfe",
    ] {
        let what = String::from_utf8_lossy(not_an_object);

        assert_invalid_token(
            &app,
            &signer.sign_raw(not_an_object, &claims),
            &format!("header {what}"),
        )
        .await;
        assert_invalid_token(
            &app,
            &signer.sign_raw(&header, not_an_object),
            &format!("payload {what}"),
        )
        .await;
    }
}

#[tokio::test]
async fn odd_kid_and_crit_headers_are_401_invalid_token() {
    let app = TestApp::spawn().await;
    let signer = Signer::of(&app);
    let claims = live_claims(&app).await;
    let header = signer.header();
    let traversal = format!("../keys/{}", signer.kid);

    let cases = [
        ("empty kid", with_claim(&header, "kid", json!(""))),
        (
            "path traversal kid",
            with_claim(&header, "kid", json!(traversal)),
        ),
        (
            "kid with the file extension",
            with_claim(&header, "kid", json!(format!("{}.key", signer.kid))),
        ),
        ("numeric kid", with_claim(&header, "kid", json!(5))),
        ("null kid", with_claim(&header, "kid", json!(null))),
        (
            "kid in another letter case",
            with_claim(&header, "kid", json!(signer.kid.to_lowercase())),
        ),
        ("empty crit", with_claim(&header, "crit", json!([]))),
        (
            "crit naming a private claim",
            with_claim(&header, "crit", json!(["authd"])),
        ),
        (
            "crit as a string",
            with_claim(&header, "crit", json!("exp")),
        ),
    ];
    for (what, header) in cases {
        assert_invalid_token(&app, &signer.sign(&header, &claims), what).await;
    }
}

#[tokio::test]
async fn absurd_exp_iat_and_nbf_values_are_401_invalid_token() {
    let app = TestApp::spawn().await;
    let signer = Signer::of(&app);
    let claims = live_claims(&app).await;
    let beyond_i64 = serde_json::from_str::<Value>("9223372036854775808").unwrap();

    let mut cases = Vec::new();
    for claim in ["exp", "iat", "nbf"] {
        for value in [
            json!(1e30),
            json!(-1e30),
            json!("1800000000"),
            json!(null),
            json!([1]),
            json!(1.5),
            beyond_i64.clone(),
        ] {
            cases.push((
                format!("{claim} = {value}"),
                with_claim(&claims, claim, value),
            ));
        }
    }
    cases.push(("exp = -1".into(), with_claim(&claims, "exp", json!(-1))));
    cases.push((
        "exp = i64::MIN".into(),
        with_claim(&claims, "exp", json!(i64::MIN)),
    ));
    cases.push((
        "iat = i64::MAX".into(),
        with_claim(&claims, "iat", json!(i64::MAX)),
    ));
    cases.push((
        "nbf = i64::MAX".into(),
        with_claim(&claims, "nbf", json!(i64::MAX)),
    ));
    for (what, forged) in cases {
        assert_invalid_token(&app, &signer.sign(&signer.header(), &forged), &what).await;
    }
}

#[tokio::test]
async fn a_signed_token_with_an_empty_jti_or_sid_is_401_invalid_token() {
    // An empty jti could not be revoked on its own (found by the token_verify fuzz
    // target's invariant); the sid is the real one, so only the empty jti can refuse it.
    let app = TestApp::spawn().await;
    let signer = Signer::of(&app);
    let claims = live_claims(&app).await;

    for (what, forged) in [
        ("empty jti", with_claim(&claims, "jti", json!(""))),
        ("empty sid", with_claim(&claims, "sid", json!(""))),
    ] {
        assert_invalid_token(&app, &signer.sign(&signer.header(), &forged), what).await;
    }
}

#[tokio::test]
async fn a_signed_token_with_exp_at_the_end_of_time_is_refused_and_crashes_nothing() {
    // Only a holder of the signing key can make one; authd never issues a lifetime beyond
    // the 24 h cap on `access_ttl`, so verify refuses it, and the daemon's arithmetic on `exp` neither
    // panics nor wraps (a wrapped revocation would be purged at once), in verify and in
    // `POST /admin/v1/revocations {"token"}`.
    let app = TestApp::spawn().await;
    let signer = Signer::of(&app);
    let claims = live_claims(&app).await;
    let forever = signer.sign(
        &signer.header(),
        &with_claim(&claims, "exp", json!(i64::MAX)),
    );

    let verified = app.verify(&forever).await.status();
    let revoked = app.revoke(json!({"token": forever})).await;

    assert_eq!(verified, StatusCode::UNAUTHORIZED);
    assert_eq!(revoked.status(), StatusCode::OK);
    let listed: Value = app.list_revocations("").await.json().await.unwrap();
    let entry = &listed["revocations"][0];
    assert_eq!(entry["id"], claims["jti"], "{listed}");
    assert_invalid_token(&app, &forever, "revoked").await;
}

// ----- slow and greedy clients -----

#[tokio::test]
async fn slowloris_and_idle_keep_alive_connections_are_closed_after_the_header_timeout_and_starve_nobody()
 {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(addr(&app.public)).await.unwrap();
        stream
            .write_all(b"GET /v1/verify HTTP/1.1\r\nHost: loc")
            .await
            .unwrap();
        slow.push(stream);
    }
    // A keep-alive connection gets the same deadline for its next request's head,
    // counted from its previous answer.
    let mut kept_alive = TcpStream::connect(addr(&app.public)).await.unwrap();
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 1024];
    let n = kept_alive.read(&mut answer).await.unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
    kept_alive
        .write_all(b"GET /v1/verify HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    slow.push(kept_alive);
    let opened = Instant::now();

    for _ in 0..20 {
        verify_is_fast(&app, &token).await;
    }
    let closing: Vec<_> = slow
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                // EOF or a reset both mean closed; a 408 answer first is fine too.
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return Instant::now(),
                        Ok(_) => {}
                    }
                }
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + HEADER_READ_TIMEOUT + Duration::from_secs(10);
    let mut first_closed = None;
    for connection in closing {
        let closed_at = tokio::time::timeout_at(deadline, connection)
            .await
            .unwrap_or_else(|_| panic!("a slow connection is open after {:?}", opened.elapsed()))
            .unwrap();
        first_closed = Some(first_closed.map_or(closed_at, |first: Instant| first.min(closed_at)));
    }

    let earliest = first_closed.unwrap().duration_since(opened);
    assert!(
        earliest >= HEADER_READ_TIMEOUT - Duration::from_secs(1),
        "closed after {earliest:?}"
    );
}

#[tokio::test]
async fn a_flood_of_500_idle_connections_does_not_stop_verify() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(TcpStream::connect(addr(&app.public)).await.unwrap());
    }

    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        slowest = slowest.max(verify_is_fast(&app, &token).await);
    }
    let login = tokio::time::timeout(Duration::from_secs(5), app.try_login("alice", PASSWORD))
        .await
        .expect("login answered");

    assert_eq!(login.status(), StatusCode::OK);
    assert!(
        slowest < Duration::from_millis(500),
        "slowest verify {slowest:?}"
    );
    drop(idle);
}

// ----- timing (run on purpose: cargo test --release --test api -- --ignored timing) -----

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test]
#[ignore = "slow: real argon2 cost; run with --release -- --ignored timing"]
async fn timing_unknown_user_and_wrong_password_take_the_same_time() {
    // The shipped argon2 parameters (config.toml: 19456 KiB, t=2, p=1), not the tests' cheap ones.
    let app = TestApp::spawn_with(&[
        ("AUTHD__PASSWORD__ARGON2_MEMORY_KIB", "19456"),
        ("AUTHD__PASSWORD__ARGON2_ITERATIONS", "2"),
        ("AUTHD__LOGIN__MAX_FAILURES", "100000"),
        ("AUTHD__LOGIN__MAX_FAILURES_PER_IP", "100000"),
    ])
    .await;
    app.add_user("alice", &[]).await;
    app.add_user("carol", &[]).await;
    app.update_user("carol", json!({"disabled": true})).await;
    let attempts = [
        ("unknown user", "nobody", PASSWORD),
        ("wrong password", "alice", "not the password"),
        ("disabled user, wrong password", "carol", "not the password"),
    ];
    for (_, username, password) in attempts {
        app.try_login(username, password).await; // warm-up
    }

    let mut samples = vec![Vec::new(); attempts.len()];
    for _ in 0..30 {
        for (i, (_, username, password)) in attempts.iter().enumerate() {
            let started = Instant::now();
            let response = app.try_login(username, password).await;
            samples[i].push(started.elapsed());
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
    }

    let medians: Vec<Duration> = samples.into_iter().map(median).collect();
    for ((what, _, _), m) in attempts.iter().zip(&medians) {
        println!("median login latency, {what}: {m:?}");
    }
    for m in &medians[1..] {
        let ratio = medians[0].as_secs_f64() / m.as_secs_f64();
        assert!(
            (0.67..=1.5).contains(&ratio),
            "ratio {ratio:.3}: {medians:?}"
        );
    }
}

// ----- file permissions -----

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The shipped layout: keys and admin token inside the data folder.
#[cfg(unix)]
fn shipped_layout(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let data = dir.join("data");
    vec![
        ("AUTHD__STORAGE__PATH", data.display().to_string()),
        (
            "AUTHD__JWT__KEYS_DIR",
            data.join("keys").display().to_string(),
        ),
        (
            "AUTHD__ADMIN__TOKEN_FILE",
            data.join("admin.token").display().to_string(),
        ),
    ]
}

#[cfg(unix)]
#[tokio::test]
async fn first_start_creates_the_data_folder_0700_and_key_and_token_files_0600() {
    let dir = tempfile::tempdir().unwrap();
    let layout = shipped_layout(dir.path());
    let overrides: Vec<(&str, &str)> = layout.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let app = TestApp::start_in(dir.path(), &overrides).await;

    let data = dir.path().join("data");
    assert_eq!(mode(&data), 0o700, "data folder");
    assert_eq!(mode(&data.join("keys")), 0o700, "keys folder");
    assert_eq!(mode(&data.join("admin.token")), 0o600, "admin token");
    let keys: Vec<_> = std::fs::read_dir(data.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(mode(&keys[0]), 0o600, "{}", keys[0].display());
    app.stop().await;
}

/// Why a daemon on the shipped layout in `dir` (with `overrides`) does not start: the
/// configuration's own error, or `App::build`'s. Panics when it starts.
#[cfg(unix)]
async fn start_error(dir: &std::path::Path, overrides: &[(&str, &str)]) -> String {
    let mut env = crate::common::in_process_env(dir);
    for (key, value) in shipped_layout(dir)
        .into_iter()
        .chain(overrides.iter().map(|(k, v)| (*k, (*v).to_owned())))
    {
        env.insert(key.to_owned(), value);
    }
    let config = match authd::config::Config::load_with_env(&crate::common::shipped_config(), env) {
        Ok(config) => config,
        Err(err) => return err.to_string(),
    };
    match authd::app::App::build(config).await {
        Ok(_) => panic!("the daemon started"),
        Err(err) => format!("{err:#}"),
    }
}

/// The shipped layout's data folder (0700) with an admin token file holding `token`.
#[cfg(unix)]
fn data_with_admin_token(dir: &std::path::Path, token: &str, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let token_file = data.join("admin.token");
    std::fs::write(&token_file, token).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(mode)).unwrap();
    token_file
}

const LONG_ENOUGH_TOKEN: &str = "a-hand-written-admin-token-of-enough-length\n";

#[cfg(unix)]
#[tokio::test]
async fn a_group_readable_admin_token_file_stops_the_start_naming_it() {
    // Anyone in the group could read the admin credential and manage every account.
    let dir = tempfile::tempdir().unwrap();
    let token_file = data_with_admin_token(dir.path(), LONG_ENOUGH_TOKEN, 0o640);

    let message = start_error(dir.path(), &[]).await;

    assert!(message.contains("admin.token_file"), "{message}");
    assert!(
        message.contains(&format!(
            "{} is readable or writable by group or others (mode 0640)",
            token_file.display()
        )),
        "{message}"
    );
    assert!(
        !message.contains("a-hand-written"),
        "never the token: {message}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn an_admin_token_under_32_bytes_stops_the_start_naming_it() {
    // A short hand-written token can be guessed; surrounding whitespace does not count.
    let dir = tempfile::tempdir().unwrap();
    let short = format!("  {}  \n", "s".repeat(31));
    let token_file = data_with_admin_token(dir.path(), &short, 0o600);

    let message = start_error(dir.path(), &[]).await;

    assert!(
        message.contains(&format!(
            "{} holds a token of 31 bytes",
            token_file.display()
        )),
        "{message}"
    );
    assert!(
        !message.contains(&"s".repeat(31)),
        "never the token: {message}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_data_folder_others_can_write_to_stops_the_start_naming_it() {
    // Whoever can write to the store's folder can replace the store.
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    data_with_admin_token(dir.path(), LONG_ENOUGH_TOKEN, 0o600);
    let data = dir.path().join("data");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();

    let message = start_error(dir.path(), &[]).await;

    assert!(message.contains("storage.path"), "{message}");
    assert!(
        message.contains(&format!(
            "{} is writable by group or others",
            data.display()
        )),
        "{message}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn reload_with_a_group_readable_admin_token_keeps_the_old_configuration() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let file = crate::common::write_config(dir.path(), &crate::common::config_text("15m"));
    let app = TestApp::start_with_config_file(dir.path(), &file).await;
    app.add_user("alice", &[]).await;
    let token_file = dir.path().join("data/admin.token");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();

    crate::common::write_config(dir.path(), &crate::common::config_text("5m"));
    app.reload_settled().await;
    let refused = app.login("alice").await;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    app.reload_settled().await;
    let accepted = app.login("alice").await;

    assert_eq!(
        refused["expires_in"], 900,
        "the running configuration stays"
    );
    assert_eq!(app.list_users("").await.status(), StatusCode::OK);
    assert_eq!(accepted["expires_in"], 300, "the fixed file reloads");
}

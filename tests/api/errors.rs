//! API.md's error conventions on both listeners: 404/405, body size and content type,
//! malformed bodies, and what an error description may never contain.

use std::io::{Read as _, Write as _};

use reqwest::header::{ALLOW, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, assert_error, header_str};

/// `server.max_body_bytes` of the shipped config.toml (64 KiB).
const MAX_BODY: usize = 64 * 1024;

/// POSTs raw bytes to `/v1/login` with the given content type (none when `None`).
async fn post_login(app: &TestApp, content_type: Option<&str>, body: Vec<u8>) -> reqwest::Response {
    let mut request = app.public_request(Method::POST, "/v1/login").body(body);
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    request.send().await.unwrap()
}

async fn post_login_json(app: &TestApp, body: &str) -> reqwest::Response {
    post_login(app, Some("application/json"), body.as_bytes().to_vec()).await
}

/// A status line, lowercase header names with values, and the body of a raw HTTP/1.1
/// exchange: for what reqwest will not send (a chunked body without the `stream` feature).
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// Sends `head` (ending in the blank line) then `body` chunked, on a fresh connection.
async fn send_chunked(base: &str, head: String, body: Vec<u8>) -> RawResponse {
    let addr = base.trim_start_matches("http://").to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut request = head.into_bytes();
        for chunk in body.chunks(8 * 1024) {
            request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(chunk);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        // The server may answer (and close) before it has read everything: a failed write
        // is fine as long as the answer arrives.
        let _ = stream.write_all(&request);
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
            if complete(&received) {
                break;
            }
        }
        parse_response(&received)
    })
    .await
    .unwrap()
}

/// Whether `received` holds a whole response with a `Content-Length` body.
fn complete(received: &[u8]) -> bool {
    let text = String::from_utf8_lossy(received);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .is_some_and(|length| body.len() >= length)
}

fn parse_response(received: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(received).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response head in {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    RawResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn chunked_head(path: &str, content_type: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
}

// ----- 404 and 405 -----

#[tokio::test]
async fn unknown_route_is_404_not_found_json_on_the_public_listener() {
    let app = TestApp::spawn().await;

    for (method, path) in [
        (Method::GET, "/"),
        (Method::GET, "/no/such/route"),
        (Method::POST, "/v1/nope"),
        (Method::GET, "/v1/login/extra"),
        (Method::GET, "/admin/v1/users"),
    ] {
        let response = app
            .client
            .request(method.clone(), format!("{}{path}", app.public))
            .send()
            .await
            .unwrap();

        let content_type = header_str(&response, "content-type").unwrap_or_default();
        assert_eq!(
            content_type, "application/json; charset=utf-8",
            "{method} {path}"
        );
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn unknown_route_is_404_not_found_json_on_the_admin_listener() {
    let app = TestApp::spawn().await;

    let anonymous = app
        .client
        .get(format!("{}/admin/v1/nope", app.admin))
        .send()
        .await
        .unwrap();
    let authorized = app
        .admin_request(Method::GET, "/admin/v2/users")
        .send()
        .await
        .unwrap();
    let public_route = app
        .admin_request(Method::POST, "/v1/login")
        .send()
        .await
        .unwrap();

    assert_error(anonymous, StatusCode::NOT_FOUND, "not_found").await;
    assert_error(authorized, StatusCode::NOT_FOUND, "not_found").await;
    assert_error(public_route, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn wrong_method_on_a_known_public_route_is_405_with_allow() {
    let app = TestApp::spawn().await;

    for (method, path, allow) in [
        (Method::GET, "/v1/login", "POST"),
        (Method::PUT, "/v1/login", "POST"),
        (Method::GET, "/v1/token/refresh", "POST"),
        (Method::POST, "/v1/me", "GET"),
        (Method::DELETE, "/.well-known/jwks.json", "GET"),
        (Method::POST, "/healthz", "GET"),
        (Method::POST, "/readyz", "GET"),
    ] {
        let response = app
            .client
            .request(method.clone(), format!("{}{path}", app.public))
            .send()
            .await
            .unwrap();

        assert_eq!(
            header_str(&response, "allow").as_deref(),
            Some(allow),
            "{method} {path}"
        );
        assert_error(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
    }
}

#[tokio::test]
async fn wrong_method_on_a_known_admin_route_is_405_with_allow() {
    let app = TestApp::spawn().await;

    for (method, path, allowed) in [
        (Method::PUT, "/admin/v1/users", &["GET", "POST"][..]),
        (
            Method::POST,
            "/admin/v1/users/alice",
            &["GET", "PATCH", "DELETE"][..],
        ),
        (
            Method::DELETE,
            "/admin/v1/revocations",
            &["GET", "POST"][..],
        ),
    ] {
        let response = app
            .admin_request(method.clone(), path)
            .send()
            .await
            .unwrap();

        let allow = header_str(&response, "allow").unwrap_or_default();
        let listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        for method in allowed {
            assert!(
                listed.contains(method),
                "{path}: Allow {allow:?} lacks {method}"
            );
        }
        assert_error(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
    }
}

// ----- body size -----

#[tokio::test]
async fn body_over_64_kib_is_413_payload_too_large() {
    let app = TestApp::spawn().await;
    let padding = " ".repeat(MAX_BODY);
    let body = format!("{{\"username\":\"alice\",\"password\":\"x\"}}{padding}");

    let response = post_login_json(&app, &body).await;

    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn body_of_exactly_64_kib_is_within_the_limit() {
    let app = TestApp::spawn().await;
    let json = "{\"username\":\"alice\",\"password\":\"wrong password\"}";
    let body = format!("{json}{}", " ".repeat(MAX_BODY - json.len()));
    assert_eq!(body.len(), MAX_BODY);

    let response = post_login_json(&app, &body).await;

    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

#[tokio::test]
async fn admin_body_over_64_kib_is_413_payload_too_large() {
    let app = TestApp::spawn().await;
    let roles: Vec<String> = (0..MAX_BODY / 8).map(|i| format!("role-{i}")).collect();

    let response = app
        .create_user_with(json!({"username": "alice", "password": PASSWORD, "roles": roles}))
        .await;

    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413_never_411() {
    let app = TestApp::spawn().await;
    let body = format!(
        "{{\"username\":\"alice\",\"password\":\"x\"}}{}",
        " ".repeat(MAX_BODY + 1024)
    );

    let response = send_chunked(
        &app.public,
        chunked_head("/v1/login", "application/json"),
        body.into_bytes(),
    )
    .await;

    assert_eq!(response.status, 413, "{}", response.body);
    let body: Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(body["error"], "payload_too_large");
}

#[tokio::test]
async fn chunked_body_within_the_limit_is_accepted() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let body = json!({"username": "alice", "password": PASSWORD}).to_string();

    let response = send_chunked(
        &app.public,
        chunked_head("/v1/login", "application/json"),
        body.into_bytes(),
    )
    .await;

    assert_eq!(response.status, 200, "{}", response.body);
    let cache_control = response
        .headers
        .iter()
        .find(|(name, _)| name == "cache-control");
    assert_eq!(cache_control.map(|(_, v)| v.as_str()), Some("no-store"));
    let body: Value = serde_json::from_str(&response.body).unwrap();
    assert!(body["access_token"].is_string(), "{body}");
}

// ----- content type -----

#[tokio::test]
async fn json_login_sent_as_text_plain_is_415() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let body = json!({"username": "alice", "password": PASSWORD}).to_string();

    let response = post_login(&app, Some("text/plain"), body.into_bytes()).await;

    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn non_empty_body_without_content_type_is_415() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let body = json!({"username": "alice", "password": PASSWORD}).to_string();

    let response = post_login(&app, None, body.into_bytes()).await;

    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn refresh_with_an_unaccepted_content_type_is_415() {
    let app = TestApp::spawn().await;

    let response = app
        .public_request(Method::POST, "/v1/token/refresh")
        .header(CONTENT_TYPE, "multipart/form-data; boundary=x")
        .body("--x--")
        .send()
        .await
        .unwrap();

    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn admin_create_user_with_a_form_body_is_415() {
    let app = TestApp::spawn().await;

    let response = app
        .admin_request(Method::POST, "/admin/v1/users")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("username=alice&password=correct+horse+battery")
        .send()
        .await
        .unwrap();

    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let lookup = app.get_user("alice").await;
    assert_eq!(
        lookup.status(),
        StatusCode::NOT_FOUND,
        "no user was created"
    );
}

#[tokio::test]
async fn logout_and_password_change_with_a_form_body_are_415() {
    // Only login, refresh and the browser routes take forms (API.md "Conventions").
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    let form = |path: &str, body: &'static str| {
        app.client
            .post(format!("{}{path}", app.public))
            .bearer_auth(&token)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };

    let logout = form("/v1/logout", "all=true").await.unwrap();
    let password = form(
        "/v1/password",
        "current_password=correct+horse+battery&new_password=another+long+one",
    )
    .await
    .unwrap();

    for response in [logout, password] {
        assert_error(
            response,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    }
    // Neither did anything: the session lives and the password is the old one.
    assert_eq!(app.verify(&token).await.status(), StatusCode::OK);
    assert_eq!(
        app.try_login("alice", PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.try_login("alice", "another long one").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn json_with_a_charset_parameter_is_accepted() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let body = json!({"username": "alice", "password": PASSWORD}).to_string();

    let response = post_login(
        &app,
        Some("Application/JSON; charset=utf-8"),
        body.into_bytes(),
    )
    .await;

    assert_eq!(response.status(), StatusCode::OK);
}

// ----- malformed bodies -----

#[tokio::test]
async fn malformed_json_is_400_invalid_request() {
    let app = TestApp::spawn().await;

    for body in [
        "{",
        "{\"username\":",
        "not json",
        "{\"username\":\"a\",\"password\":\"b\"}}",
    ] {
        let response = post_login_json(&app, body).await;

        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}

#[tokio::test]
async fn empty_json_body_is_400_invalid_request() {
    let app = TestApp::spawn().await;

    let response = post_login_json(&app, "").await;

    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn missing_field_is_400_invalid_request() {
    let app = TestApp::spawn().await;

    let login = post_login_json(&app, r#"{"username":"alice"}"#).await;
    let form = post_login(
        &app,
        Some("application/x-www-form-urlencoded"),
        b"username=alice".to_vec(),
    )
    .await;
    let refresh = app
        .public_request(Method::POST, "/v1/token/refresh")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let create = app.create_user_with(json!({"username": "alice"})).await;

    for response in [login, form, refresh, create] {
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}

#[tokio::test]
async fn field_of_the_wrong_type_is_400_invalid_request() {
    let app = TestApp::spawn().await;

    let login = post_login_json(&app, r#"{"username":42,"password":"x"}"#).await;
    let null_password = post_login_json(&app, r#"{"username":"alice","password":null}"#).await;
    let patch = app.update_user("alice", json!({"disabled": "yes"})).await;

    for response in [login, null_password, patch] {
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}

#[tokio::test]
async fn json_array_instead_of_the_object_is_400_invalid_request() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let body = json!(["alice", PASSWORD]).to_string();

    let response = post_login_json(&app, &body).await;

    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn unknown_json_field_is_400_invalid_request() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;

    let login = post_login_json(
        &app,
        &json!({"username": "alice", "password": PASSWORD, "remember": true}).to_string(),
    )
    .await;
    let refresh = app
        .public_request(Method::POST, "/v1/token/refresh")
        .json(&json!({"refresh_token": "x", "grant_type": "refresh_token"}))
        .send()
        .await
        .unwrap();
    let patch = app.update_user("alice", json!({"disabld": true})).await;

    for response in [login, refresh, patch] {
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}

#[tokio::test]
async fn duplicate_json_field_is_400_invalid_request() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;
    let body = format!(r#"{{"username":"mallory","username":"alice","password":"{PASSWORD}"}}"#);

    let response = post_login_json(&app, &body).await;

    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn non_utf8_json_body_is_400_invalid_request() {
    let app = TestApp::spawn().await;
    let mut body = b"{\"username\":\"al".to_vec();
    body.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    body.extend_from_slice(b"ice\",\"password\":\"x\"}");

    let response = post_login(&app, Some("application/json"), body).await;

    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn deeply_nested_json_is_400_not_500() {
    let app = TestApp::spawn().await;
    let arrays = "[".repeat(10_000);
    let objects = "{\"a\":".repeat(10_000);

    for body in [arrays, objects] {
        let response = post_login_json(&app, &body).await;

        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let health = app
        .public_request(Method::GET, "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK, "the daemon survived");
}

#[tokio::test]
async fn deeply_nested_json_on_the_admin_listener_is_400_not_500() {
    let app = TestApp::spawn().await;

    let response = app
        .admin_request(Method::POST, "/admin/v1/users")
        .header(CONTENT_TYPE, "application/json")
        .body("[".repeat(10_000))
        .send()
        .await
        .unwrap();

    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

// ----- what a description never shows -----

#[tokio::test]
async fn wrong_typed_password_is_not_echoed_in_the_description() {
    let app = TestApp::spawn().await;

    for body in [
        r#"{"username":"x","password":["hunter2-secret"]}"#,
        r#"{"username":"x","password":{"hunter2-secret":"hunter2-secret"}}"#,
        r#"{"password":["hunter2-secret"],"username":"x"}"#,
    ] {
        let response = post_login_json(&app, body).await;

        let error = assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert!(!error.to_string().contains("hunter2"), "{body} → {error}");
    }
}

#[tokio::test]
async fn a_string_in_a_non_string_field_is_not_echoed_in_the_description_escaped_quotes_included() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;

    for body in [
        json!({"disabled": "hunter2-secret"}),
        json!({"roles": "hunter2-secret"}),
        json!({"password": "a new password", "disabled": "hunter2-secret"}),
        // Escaped quotes must not end what the description leaves out early.
        json!({"disabled": "quote\"hunter2-secret"}),
        json!({"roles": "back\\slash\"hunter2-secret\"tail"}),
    ] {
        let response = app.update_user("alice", body.clone()).await;

        let error = assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert!(!error.to_string().contains("hunter2"), "{body} → {error}");
    }
}

#[tokio::test]
async fn a_form_value_is_not_echoed_in_the_description() {
    let app = TestApp::spawn().await;

    let response = post_login(
        &app,
        Some("application/x-www-form-urlencoded"),
        b"password=hunter2-secret".to_vec(),
    )
    .await;

    let error = assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

// ----- caching of token answers -----

#[tokio::test]
async fn login_and_refresh_answers_are_marked_no_store() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &[]).await;

    let login = app.try_login("alice", PASSWORD).await;
    assert_eq!(
        header_str(&login, "cache-control").as_deref(),
        Some("no-store"),
        "login"
    );
    let body: Value = login.json().await.unwrap();
    let refresh = app.refresh(body["refresh_token"].as_str().unwrap()).await;

    assert_eq!(refresh.status(), StatusCode::OK);
    assert_eq!(
        header_str(&refresh, "cache-control").as_deref(),
        Some("no-store"),
        "refresh"
    );
}

#[tokio::test]
async fn no_cors_headers_are_sent() {
    let app = TestApp::spawn().await;

    let response = app
        .client
        .request(Method::OPTIONS, format!("{}/v1/login", app.public))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();

    let cors: Vec<_> = response
        .headers()
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .collect();
    assert!(cors.is_empty(), "{cors:?}");
    assert_ne!(response.status(), StatusCode::OK);
    assert!(
        response.headers().get(ALLOW).is_some(),
        "a 405 carries Allow"
    );
}

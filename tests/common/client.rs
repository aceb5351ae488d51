//! How tests speak to a daemon: [`Api`], one helper per endpoint of API.md over the
//! daemon's two listeners (those of the second factor in [`super::second_factor`]),
//! shared by the in-process [`TestApp`](super::TestApp) and the child-process
//! [`Daemon`](super::Daemon); plus the checks every test binary makes of answers (error
//! shape, token answers, headers).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

/// The password every test user gets unless a test says otherwise.
pub const PASSWORD: &str = "correct horse battery";

/// A daemon's two listeners and its admin credential.
pub struct Api {
    /// `http://127.0.0.1:PORT` of the public listener.
    pub public: String,
    /// `http://127.0.0.1:PORT` of the admin listener.
    pub admin: String,
    pub admin_token: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(public: String, admin: String, admin_token: String) -> Api {
        Api {
            public,
            admin,
            admin_token,
            client: reqwest::Client::new(),
        }
    }

    /// A request to `path` on the public listener, without credentials.
    pub fn public_request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.public))
    }

    /// A request to `path` on the admin listener, with the admin token.
    pub fn admin_request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(&self.admin_token)
    }

    // ----- public listener -----

    /// `POST /v1/login` (JSON).
    pub async fn try_login(&self, username: &str, password: &str) -> Response {
        self.public_request(Method::POST, "/v1/login")
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// Logs in with [`PASSWORD`], asserts `200`, and returns the token answer.
    pub async fn login(&self, username: &str) -> Value {
        self.login_with(username, PASSWORD).await
    }

    /// Logs in, asserts `200`, and returns the token answer.
    pub async fn login_with(&self, username: &str, password: &str) -> Value {
        let response = self.try_login(username, password).await;
        assert_eq!(response.status(), StatusCode::OK, "login of {username}");
        response.json().await.unwrap()
    }

    /// [`Api::login_with`], returning just the access token.
    pub async fn access_token(&self, username: &str, password: &str) -> String {
        text(&self.login_with(username, password).await["access_token"]).to_owned()
    }

    /// Creates a user with [`PASSWORD`] and `roles`, logs in, and returns the access token.
    pub async fn user_token(&self, username: &str, roles: &[&str]) -> String {
        self.add_user(username, roles).await;
        self.login(username).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `POST /v1/token/refresh` (JSON).
    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.public_request(Method::POST, "/v1/token/refresh")
            .json(&json!({"refresh_token": refresh_token}))
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/logout` with the access token, and a JSON body when given.
    pub async fn logout(&self, access_token: &str, body: Option<Value>) -> Response {
        let request = self
            .public_request(Method::POST, "/v1/logout")
            .bearer_auth(access_token);
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
        .send()
        .await
        .unwrap()
    }

    /// `GET /v1/verify` with the token as bearer.
    pub async fn verify(&self, access_token: &str) -> Response {
        self.public_request(Method::GET, "/v1/verify")
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
    }

    /// `GET /v1/me`.
    pub async fn me(&self, access_token: &str) -> Response {
        self.public_request(Method::GET, "/v1/me")
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
    }

    /// `GET /v1/sessions`: the caller's own sessions.
    pub async fn sessions(&self, access_token: &str) -> Response {
        self.public_request(Method::GET, "/v1/sessions")
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
    }

    /// `DELETE /v1/sessions/{sid}`.
    pub async fn end_session(&self, access_token: &str, sid: &str) -> Response {
        self.public_request(Method::DELETE, &format!("/v1/sessions/{sid}"))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/password`.
    pub async fn change_password(
        &self,
        access_token: &str,
        current_password: &str,
        new_password: &str,
    ) -> Response {
        self.public_request(Method::POST, "/v1/password")
            .bearer_auth(access_token)
            .json(&json!({"current_password": current_password, "new_password": new_password}))
            .send()
            .await
            .unwrap()
    }

    /// `GET /.well-known/jwks.json`.
    pub async fn jwks(&self) -> Response {
        self.public_request(Method::GET, "/.well-known/jwks.json")
            .send()
            .await
            .unwrap()
    }

    // ----- admin listener -----

    /// `POST /admin/v1/users` with [`PASSWORD`] and `roles`.
    pub async fn create_user(&self, username: &str, roles: &[&str]) -> Response {
        self.create_user_with(json!({"username": username, "password": PASSWORD, "roles": roles}))
            .await
    }

    /// `POST /admin/v1/users` with the given body.
    pub async fn create_user_with(&self, body: Value) -> Response {
        self.admin_request(Method::POST, "/admin/v1/users")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// [`Api::create_user`], asserting `201 Created`.
    pub async fn add_user(&self, username: &str, roles: &[&str]) {
        let response = self.create_user(username, roles).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "creating user {username}"
        );
    }

    /// `GET /admin/v1/users/{username}` (the name as given, unencoded).
    pub async fn get_user(&self, username: &str) -> Response {
        self.admin_request(Method::GET, &format!("/admin/v1/users/{username}"))
            .send()
            .await
            .unwrap()
    }

    /// `PATCH /admin/v1/users/{username}`.
    pub async fn update_user(&self, username: &str, body: Value) -> Response {
        self.admin_request(Method::PATCH, &format!("/admin/v1/users/{username}"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `DELETE /admin/v1/users/{username}`.
    pub async fn delete_user(&self, username: &str) -> Response {
        self.admin_request(Method::DELETE, &format!("/admin/v1/users/{username}"))
            .send()
            .await
            .unwrap()
    }

    /// `GET /admin/v1/users{query}`; `query` is empty or starts with `?`.
    pub async fn list_users(&self, query: &str) -> Response {
        self.admin_request(Method::GET, &format!("/admin/v1/users{query}"))
            .send()
            .await
            .unwrap()
    }

    /// `GET /admin/v1/users/{username}/sessions`.
    pub async fn user_sessions(&self, username: &str) -> Response {
        self.admin_request(Method::GET, &format!("/admin/v1/users/{username}/sessions"))
            .send()
            .await
            .unwrap()
    }

    /// `POST /admin/v1/revocations`.
    pub async fn revoke(&self, body: Value) -> Response {
        self.admin_request(Method::POST, "/admin/v1/revocations")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `GET /admin/v1/revocations{query}`; `query` is empty or starts with `?`.
    pub async fn list_revocations(&self, query: &str) -> Response {
        self.admin_request(Method::GET, &format!("/admin/v1/revocations{query}"))
            .send()
            .await
            .unwrap()
    }

    /// `GET /admin/v1/backup`: the store as JSON lines.
    pub async fn backup(&self) -> Response {
        self.admin_request(Method::GET, "/admin/v1/backup")
            .send()
            .await
            .unwrap()
    }

    /// `GET /admin/v1/cluster`.
    pub async fn cluster(&self) -> Response {
        self.admin_request(Method::GET, "/admin/v1/cluster")
            .send()
            .await
            .unwrap()
    }
}

/// Asserts an API.md error: status and `error` code; returns the body.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "error code in {body}");
    assert!(
        body["error_description"].is_string(),
        "description in {body}"
    );
    body
}

/// A `200` token answer, never cached, with an access and a refresh token; its body.
pub async fn assert_tokens(response: Response, what: &str) -> Value {
    let status = response.status();
    let cache_control = header(&response, reqwest::header::CACHE_CONTROL).to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{what}: {body}");
    assert_eq!(cache_control, "no-store", "{what}");
    assert!(body["access_token"].is_string(), "{what}: {body}");
    assert!(body["refresh_token"].is_string(), "{what}: {body}");
    body
}

/// The string in a JSON answer's field (a token, an id); fails when it is not a string.
pub fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

/// The value of header `name` in an answer, if it has one.
pub fn header_str(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

/// The value of header `name` in an answer, empty when it has none.
pub fn header(response: &Response, name: impl reqwest::header::AsHeaderName) -> &str {
    response
        .headers()
        .get(name)
        .map_or("", |v| v.to_str().unwrap())
}

/// `value` percent-encoded as a query or form value (RFC 3986 unreserved bytes stay).
pub fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ----- the revocation feed (rev 4) -----

/// The feed token in `file` (`feed.token_file`), surrounding whitespace trimmed.
pub fn feed_token(file: &std::path::Path) -> String {
    std::fs::read_to_string(file)
        .unwrap_or_else(|err| panic!("the feed token in {}: {err}", file.display()))
        .trim()
        .to_owned()
}

impl Api {
    /// `GET /v1/revocations/feed{query}` on the public listener with `token` as bearer (none
    /// when `None`); `query` is empty or starts with `?`. Without an `Accept` header it asks
    /// for the event stream; add `Accept: application/json` for the long-poll.
    pub fn feed(&self, token: Option<&str>, query: &str) -> RequestBuilder {
        let request = self.public_request(Method::GET, &format!("/v1/revocations/feed{query}"));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// The long-poll form of [`Api::feed`]: `Accept: application/json`, sent.
    pub async fn feed_poll(&self, token: &str, query: &str) -> Response {
        self.feed(Some(token), query)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .unwrap()
    }
}

/// One Server-Sent Events item as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A dispatched event (its block ended with a blank line).
    Event(SseEvent),
    /// A comment line (`:` and the rest of the line), reported as soon as it is read.
    Comment(String),
}

/// An event's fields, and its block exactly as it came (lines and the blank line ending
/// it, each with its own line ending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    /// The `data` lines, joined with `\n`.
    pub data: String,
    pub raw: String,
}

/// How reading the next SSE item went.
#[derive(Debug)]
pub enum SseRead {
    Item(SseItem),
    /// The body ended cleanly.
    Ended,
    /// The body failed (e.g. the connection was cut mid-stream).
    Failed(String),
    /// Nothing complete arrived before the deadline.
    TimedOut,
}

/// Reads Server-Sent Events (WHATWG HTML §9.2) off a streaming answer, each read bounded
/// by a deadline. Dropping it closes the stream.
pub struct SseReader {
    response: Response,
    /// Bytes received and not yet split into lines.
    buffer: Vec<u8>,
    /// The lines of the event block being read.
    block: Vec<String>,
    raw: String,
    ended: bool,
}

impl SseReader {
    pub fn new(response: Response) -> SseReader {
        SseReader {
            response,
            buffer: Vec::new(),
            block: Vec::new(),
            raw: String::new(),
            ended: false,
        }
    }

    /// The answer whose body this reads (status, headers).
    pub fn response(&self) -> &Response {
        &self.response
    }

    /// The next complete item, the end of the body, a failure, or nothing by `deadline`.
    pub async fn next_by(&mut self, deadline: tokio::time::Instant) -> SseRead {
        loop {
            if let Some(item) = self.parse_buffered() {
                return SseRead::Item(item);
            }
            if self.ended {
                return SseRead::Ended;
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return SseRead::TimedOut,
                Ok(Err(err)) => return SseRead::Failed(format!("{err:#}")),
                Ok(Ok(None)) => self.ended = true,
                Ok(Ok(Some(bytes))) => self.buffer.extend_from_slice(&bytes),
            }
        }
    }

    /// The next event (comments skipped) within `within`; fails the test otherwise.
    pub async fn next_event(&mut self, within: std::time::Duration) -> SseEvent {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.next_by(deadline).await {
                SseRead::Item(SseItem::Event(event)) => return event,
                SseRead::Item(SseItem::Comment(_)) => {}
                other => panic!("no event within {within:?}: {other:?}"),
            }
        }
    }

    /// One item out of the buffered bytes, if a whole one is there.
    fn parse_buffered(&mut self) -> Option<SseItem> {
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let bytes: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8(bytes).expect("an SSE stream is UTF-8");
            let content = line
                .trim_end_matches('\n')
                .trim_end_matches('\r')
                .to_owned();
            if let Some(comment) = content.strip_prefix(':') {
                return Some(SseItem::Comment(comment.to_owned()));
            }
            self.raw.push_str(&line);
            if content.is_empty() {
                let lines = std::mem::take(&mut self.block);
                let raw = std::mem::take(&mut self.raw);
                if lines.is_empty() {
                    continue;
                }
                return Some(SseItem::Event(dispatch(&lines, raw)));
            }
            self.block.push(content);
        }
        None
    }
}

/// The fields of an event block's lines (`field: value`, one optional space after `:`).
fn dispatch(lines: &[String], raw: String) -> SseEvent {
    let mut event = SseEvent {
        id: None,
        event: None,
        data: String::new(),
        raw,
    };
    let mut data: Vec<&str> = Vec::new();
    for line in lines {
        let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => event.id = Some(value.to_owned()),
            "event" => event.event = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    event.data = data.join("\n");
    event
}

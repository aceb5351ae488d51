//! How tests speak to a daemon: [`Api`], one helper per endpoint of API.md over the
//! daemon's two listeners, shared by the in-process [`TestApp`](super::TestApp) and the
//! child-process [`Daemon`](super::Daemon); plus the checks every test binary makes of
//! answers (error shape, headers).

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

// ----- the second factor (rev 4) -----

/// The TOTP time step of `now` (seconds since the epoch): what an authenticator app shows
/// at that time is [`totp_code`] of this step.
pub fn totp_step(now: i64) -> u64 {
    authd::auth::mfa::totp::step_at(now)
}

/// The TOTP step the system clock is in now — the daemon's too, give or take a step
/// boundary crossed between the test's reading and the daemon's (a code is taken for the
/// daemon's step ±1, so a code of this step or the next is good either way).
pub fn totp_step_now() -> u64 {
    totp_step(authd::clock::Clock::system().now())
}

/// The 6-digit code of `secret` (base32, as `POST /v1/mfa/totp` answers it) for `step`.
pub fn totp_code(secret: &str, step: u64) -> String {
    let bytes = authd::auth::mfa::totp::decode_base32(secret)
        .unwrap_or_else(|| panic!("{secret} is not base32"));
    authd::auth::mfa::totp::code_for_step(&bytes, step)
}

/// A second factor the test turned on (see [`Api::enrol`]): its secret, the step the
/// confirm code used (codes are taken only for later steps), and the first set of
/// recovery codes.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub secret: String,
    pub confirmed_step: u64,
    pub recovery_codes: Vec<String>,
}

impl Enrolled {
    /// The code of `step`.
    pub fn code(&self, step: u64) -> String {
        totp_code(&self.secret, step)
    }

    /// The code of the step right after the confirmed one: on the system clock it is taken
    /// (once) from the confirm on for at least 30 s, whatever step boundary falls in
    /// between. For more second factors in one test, use recovery codes.
    pub fn next_code(&self) -> String {
        self.code(self.confirmed_step + 1)
    }
}

impl Api {
    /// `POST /v1/login` (JSON) with a second-factor `code` when given.
    pub async fn try_login_code(
        &self,
        username: &str,
        password: &str,
        code: Option<&str>,
    ) -> Response {
        let mut body = json!({"username": username, "password": password});
        if let Some(code) = code {
            body["code"] = json!(code);
        }
        self.public_request(Method::POST, "/v1/login")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/login` with [`PASSWORD`] for an account with TOTP on: asserts `401
    /// mfa_required` and returns its `mfa_token`.
    pub async fn mfa_token(&self, username: &str) -> String {
        let response = self.try_login(username, PASSWORD).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "first step of {username}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "mfa_required", "{body}");
        text(&body["mfa_token"]).to_owned()
    }

    /// `POST /v1/login/mfa` (JSON): the second step of a login.
    pub async fn login_mfa(&self, mfa_token: &str, code: &str) -> Response {
        self.public_request(Method::POST, "/v1/login/mfa")
            .json(&json!({"mfa_token": mfa_token, "code": code}))
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/mfa/totp`: starts an enrolment.
    pub async fn begin_totp(&self, access_token: &str, current_password: &str) -> Response {
        self.public_request(Method::POST, "/v1/mfa/totp")
            .bearer_auth(access_token)
            .json(&json!({"current_password": current_password}))
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/mfa/totp/confirm`.
    pub async fn confirm_totp(&self, access_token: &str, code: &str) -> Response {
        self.public_request(Method::POST, "/v1/mfa/totp/confirm")
            .bearer_auth(access_token)
            .json(&json!({"code": code}))
            .send()
            .await
            .unwrap()
    }

    /// `DELETE /v1/mfa/totp`: turns TOTP off.
    pub async fn disable_totp(
        &self,
        access_token: &str,
        current_password: &str,
        code: &str,
    ) -> Response {
        self.public_request(Method::DELETE, "/v1/mfa/totp")
            .bearer_auth(access_token)
            .json(&json!({"current_password": current_password, "code": code}))
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/mfa/recovery-codes`: a new set.
    pub async fn new_recovery_codes(
        &self,
        access_token: &str,
        current_password: &str,
        code: &str,
    ) -> Response {
        self.public_request(Method::POST, "/v1/mfa/recovery-codes")
            .bearer_auth(access_token)
            .json(&json!({"current_password": current_password, "code": code}))
            .send()
            .await
            .unwrap()
    }

    /// `DELETE /admin/v1/users/{username}/mfa`: the admin's reset.
    pub async fn reset_mfa(&self, username: &str) -> Response {
        self.admin_request(Method::DELETE, &format!("/admin/v1/users/{username}/mfa"))
            .send()
            .await
            .unwrap()
    }

    /// Turns TOTP on for the caller of `access_token` (whose password is [`PASSWORD`]) on
    /// a daemon on the system clock: enrols, confirms with the current step's code, and
    /// asserts both `200`.
    pub async fn enrol(&self, access_token: &str) -> Enrolled {
        self.enrol_at(access_token, authd::clock::Clock::system().now())
            .await
    }

    /// [`Api::enrol`] on a daemon whose clock reads `now`.
    pub async fn enrol_at(&self, access_token: &str, now: i64) -> Enrolled {
        let response = self.begin_totp(access_token, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK, "enrolment");
        let body: Value = response.json().await.unwrap();
        let secret = text(&body["secret"]).to_owned();
        let step = totp_step(now);
        let response = self
            .confirm_totp(access_token, &totp_code(&secret, step))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "confirm");
        let body: Value = response.json().await.unwrap();
        let recovery_codes = body["recovery_codes"]
            .as_array()
            .unwrap_or_else(|| panic!("recovery_codes in {body}"))
            .iter()
            .map(|code| text(code).to_owned())
            .collect();
        Enrolled {
            secret,
            confirmed_step: step,
            recovery_codes,
        }
    }
}

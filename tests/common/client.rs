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

//! Integration tests against a real daemon started in-process on port 0: the shipped
//! `config.toml`, overridden only where a test must differ, spoken to over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod browser;
mod errors;
mod hardening;
mod keys;
mod login;
mod metrics;
mod revocation;
mod sessions;
mod throttle;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use authd::app::{App, Control};
use authd::config::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const PASSWORD: &str = "correct horse battery";

/// A running daemon with its own data folder.
pub struct TestApp {
    /// `http://127.0.0.1:PORT` of the public listener.
    pub public: String,
    /// `http://127.0.0.1:PORT` of the admin listener.
    pub admin: String,
    pub admin_token: String,
    pub client: reqwest::Client,
    pub dir: PathBuf,
    control: mpsc::Sender<Control>,
    running: JoinHandle<anyhow::Result<()>>,
    _tempdir: Option<tempfile::TempDir>,
}

/// The overrides every test app gets: port 0, a private data folder, cheap argon2.
fn base_env(dir: &Path) -> HashMap<String, String> {
    let mut env = HashMap::new();
    let mut set = |k: &str, v: String| env.insert(k.to_owned(), v);
    set("AUTHD__SERVER__LISTEN", "127.0.0.1:0".into());
    set("AUTHD__SERVER__ADMIN_LISTEN", "127.0.0.1:0".into());
    set(
        "AUTHD__STORAGE__PATH",
        dir.join("data").display().to_string(),
    );
    set(
        "AUTHD__JWT__KEYS_DIR",
        dir.join("keys").display().to_string(),
    );
    set(
        "AUTHD__ADMIN__TOKEN_FILE",
        dir.join("admin.token").display().to_string(),
    );
    set("AUTHD__PASSWORD__ARGON2_MEMORY_KIB", "64".into());
    set("AUTHD__PASSWORD__ARGON2_ITERATIONS", "1".into());
    env
}

pub fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml")
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(&[]).await
    }

    /// Starts a daemon with extra `AUTHD__…` overrides.
    pub async fn spawn_with(overrides: &[(&str, &str)]) -> TestApp {
        let tempdir = tempfile::tempdir().unwrap();
        let dir = tempdir.path().to_owned();
        let mut app = TestApp::start_in(&dir, overrides).await;
        app._tempdir = Some(tempdir);
        app
    }

    /// Starts a daemon on an existing folder (to test restarts).
    pub async fn start_in(dir: &Path, overrides: &[(&str, &str)]) -> TestApp {
        let mut env = base_env(dir);
        for (key, value) in overrides {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        let config = Config::load_with_env(&shipped_config(), env).unwrap();
        let token_file = config.admin.token_file.clone();
        let app = App::build(config).await.unwrap();
        let public = format!("http://{}", app.public_addr().unwrap());
        let admin = format!("http://{}", app.admin_addr().unwrap());
        let (control, control_rx) = mpsc::channel(4);
        let running = tokio::spawn(app.run(control_rx));
        let admin_token = std::fs::read_to_string(token_file)
            .unwrap()
            .trim()
            .to_owned();
        TestApp {
            public,
            admin,
            admin_token,
            client: reqwest::Client::new(),
            dir: dir.to_owned(),
            control,
            running,
            _tempdir: None,
        }
    }

    /// Shuts the daemon down gracefully and waits for it; returns its data folder guard.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        self.control.send(Control::Shutdown).await.unwrap();
        (&mut self.running).await.unwrap().unwrap();
        self._tempdir.take()
    }

    pub async fn reload(&self) {
        self.control.send(Control::Reload).await.unwrap();
    }

    pub fn admin_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(&self.admin_token)
    }

    pub async fn create_user(&self, username: &str, roles: &[&str]) -> reqwest::Response {
        self.admin_request(reqwest::Method::POST, "/admin/v1/users")
            .json(&json!({"username": username, "password": PASSWORD, "roles": roles}))
            .send()
            .await
            .unwrap()
    }

    pub async fn try_login(&self, username: &str, password: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/login", self.public))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// Logs in and returns the token response body.
    pub async fn login(&self, username: &str) -> Value {
        let response = self.try_login(username, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Creates a user and logs in; returns the access token.
    pub async fn user_token(&self, username: &str, roles: &[&str]) -> String {
        assert_eq!(
            self.create_user(username, roles).await.status(),
            StatusCode::CREATED
        );
        self.login(username).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn verify(&self, token: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/v1/verify", self.public))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn revoke(&self, body: Value) -> reqwest::Response {
        self.admin_request(reqwest::Method::POST, "/admin/v1/revocations")
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

/// Asserts an API.md error: status and `error` code; returns the body.
pub async fn assert_error(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "error code in {body}");
    assert!(
        body["error_description"].is_string(),
        "description in {body}"
    );
    body
}

/// The claims of a JWT, decoded without verification (tests only).
pub fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

impl TestApp {
    /// Starts a daemon configured by `file` alone (no overrides), so that [`TestApp::reload`]
    /// re-reads exactly what the test wrote there. `dir` is the test's folder (`TestApp::dir`).
    pub async fn start_with_config_file(dir: &Path, file: &Path) -> TestApp {
        let config = Config::load_with_env(file, HashMap::new()).unwrap();
        let token_file = config.admin.token_file.clone();
        let app = App::build(config).await.unwrap();
        let public = format!("http://{}", app.public_addr().unwrap());
        let admin = format!("http://{}", app.admin_addr().unwrap());
        let (control, control_rx) = mpsc::channel(4);
        let running = tokio::spawn(app.run(control_rx));
        let admin_token = std::fs::read_to_string(token_file)
            .unwrap()
            .trim()
            .to_owned();
        TestApp {
            public,
            admin,
            admin_token,
            client: reqwest::Client::new(),
            dir: dir.to_owned(),
            control,
            running,
            _tempdir: None,
        }
    }

    /// Reloads and returns once that reload has been applied or refused.
    ///
    /// The daemon handles control messages one at a time and takes the next only after a
    /// reload has finished, so a second reload (of the same file, hence the same outcome)
    /// leaving the channel means the first one is done.
    pub async fn reload_settled(&self) {
        self.control.send(Control::Reload).await.unwrap();
        self.control.send(Control::Reload).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.control.capacity() < self.control.max_capacity() {
            assert!(
                std::time::Instant::now() < deadline,
                "the daemon did not take the reload"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

//! The real `authd` binary as an operator runs it (API.md "Signals and lifecycle" and the
//! durability rule of "Conventions"): `kill -9` right after an acknowledged change, SIGTERM,
//! and SIGHUP reloads. Each test starts `authd serve --config FILE` on a config derived from
//! the shipped `config.toml`, learns the bound ports from its JSON `listening` log line, and
//! kills the child when it ends, whatever happens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

const PASSWORD: &str = "correct horse battery";

/// How long any one test may take before it fails (and its daemon is killed).
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the daemon may take to start, stop, or act on a signal.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a test body under [`TEST_TIMEOUT`]; dropping the body kills its daemons.
async fn within_timeout(test: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_TIMEOUT, test).await.is_err() {
        panic!("test did not finish within {TEST_TIMEOUT:?}");
    }
}

/// Replaces the value of `key` (a `key = value` line at the start of a line) in a TOML
/// text; the key must occur exactly once, so the shipped file cannot drift unnoticed.
fn set(config: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key} = ");
    let matches = config.lines().filter(|l| l.starts_with(&prefix)).count();
    assert_eq!(matches, 1, "{key} in the shipped config.toml");
    config
        .lines()
        .map(|line| {
            if line.starts_with(&prefix) {
                format!("{prefix}{value}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The shipped `config.toml` with what a test must change: port 0 for both listeners,
/// cheap argon2, JSON logs (parsed below), and the given access token lifetime. Relative
/// paths stay: they resolve against the test's folder.
fn config_text(access_ttl: &str) -> String {
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml")).unwrap();
    let mut config = shipped;
    for (key, value) in [
        ("listen", "\"127.0.0.1:0\""),
        ("admin_listen", "\"127.0.0.1:0\""),
        ("argon2_memory_kib", "64"),
        ("argon2_iterations", "1"),
        ("level", "\"info\""),
        ("format", "\"json\""),
    ] {
        config = set(&config, key, value);
    }
    set(&config, "access_ttl", &format!("\"{access_ttl}\""))
}

/// Writes the config file atomically, so a reload never reads half of it.
fn write_config(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("config.toml");
    let staging = dir.join("config.toml.new");
    std::fs::write(&staging, text).unwrap();
    std::fs::rename(&staging, &file).unwrap();
    file
}

/// A running `authd serve` child process; killed (SIGKILL) when dropped.
struct Daemon {
    child: Child,
    public: String,
    admin: String,
    admin_token: String,
    client: reqwest::Client,
    /// Lines of the child's stderr, forwarded by a reader thread.
    stderr: mpsc::UnboundedReceiver<String>,
    /// Every stderr line received so far (for failure messages).
    seen: Vec<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts the daemon on the config file in `dir` and waits until it is ready for
    /// requests and signals.
    async fn start(dir: &Path) -> Daemon {
        let mut command = Command::new(env!("CARGO_BIN_EXE_authd"));
        command
            .arg("serve")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The test's own environment must not reconfigure the daemon.
        for (key, _) in std::env::vars() {
            if key.starts_with("AUTHD__") || key == "AUTHD_CONFIG" {
                command.env_remove(key);
            }
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut daemon = Daemon {
            child,
            public: String::new(),
            admin: String::new(),
            admin_token: String::new(),
            client: reqwest::Client::new(),
            stderr: lines_rx,
            seen: Vec::new(),
        };
        let listening = daemon.wait_for_log(|l| message(l) == "listening").await;
        let address = |name: &str| {
            let addr = listening["fields"][name]
                .as_str()
                .unwrap_or_else(|| panic!("{name} address in {listening}"));
            format!("http://{addr}")
        };
        daemon.public = address("public");
        daemon.admin = address("admin");
        // Logged once the signal handlers are installed: signals are safe from here on.
        daemon
            .wait_for_log(|l| message(l) == "authd is ready")
            .await;
        daemon.admin_token = std::fs::read_to_string(dir.join("data/admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        daemon
    }

    /// The next stderr line (parsed as JSON) that `matches`; fails after [`STEP_TIMEOUT`]
    /// or when the daemon's stderr closes first.
    async fn wait_for_log(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.stderr.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => panic!("authd ended; its stderr:\n{}", self.seen.join("\n")),
                Err(_) => panic!("no such log line; stderr so far:\n{}", self.seen.join("\n")),
            };
            self.seen.push(line.clone());
            if let Ok(parsed) = serde_json::from_str::<Value>(&line)
                && matches(&parsed)
            {
                return parsed;
            }
        }
    }

    /// Sends a signal (`TERM`, `HUP`, …) with `kill(1)`.
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// `kill -9`: no chance to flush anything.
    fn kill_hard(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits (bounded) for the process to exit.
    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "authd did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn create_user(&self, username: &str) {
        let response = self
            .client
            .post(format!("{}/admin/v1/users", self.admin))
            .bearer_auth(&self.admin_token)
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    async fn get_user(&self, username: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/admin/v1/users/{username}", self.admin))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap()
    }

    async fn revoke(&self, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}/admin/v1/revocations", self.admin))
            .bearer_auth(&self.admin_token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Logs in and returns the token answer.
    async fn login(&self, username: &str) -> Value {
        let response = self
            .client
            .post(format!("{}/v1/login", self.public))
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn refresh(&self, refresh_token: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/token/refresh", self.public))
            .json(&json!({"refresh_token": refresh_token}))
            .send()
            .await
            .unwrap()
    }

    async fn verify(&self, access_token: &Value) -> StatusCode {
        self.client
            .get(format!("{}/v1/verify", self.public))
            .bearer_auth(access_token.as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// The `message` of a JSON log line.
fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or("")
}

/// The `jti` claim of an access token (decoded without verification).
fn jti_of(access_token: &Value) -> String {
    use base64::Engine as _;
    let payload = access_token.as_str().unwrap().split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: Value = serde_json::from_slice(&bytes).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_changes_survive_kill_dash_9() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_text("15m"));
        let daemon = Daemon::start(dir.path()).await;
        daemon.create_user("alice").await;
        let revoked = daemon.login("alice").await;
        let rotated = daemon.login("alice").await;
        let response = daemon.refresh(&rotated["refresh_token"]).await;
        assert_eq!(response.status(), StatusCode::OK);
        let current: Value = response.json().await.unwrap();
        let response = daemon
            .revoke(json!({"jti": jti_of(&revoked["access_token"])}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);

        daemon.kill_hard();
        let daemon = Daemon::start(dir.path()).await;

        assert_eq!(daemon.get_user("alice").await.status(), StatusCode::OK);
        assert_eq!(
            daemon.verify(&revoked["access_token"]).await,
            StatusCode::UNAUTHORIZED,
            "the revoked token works again after a crash"
        );
        assert_eq!(
            daemon.verify(&current["access_token"]).await,
            StatusCode::OK
        );
        let refreshed = daemon.refresh(&revoked["refresh_token"]).await;
        assert_eq!(
            refreshed.status(),
            StatusCode::OK,
            "the earlier session's refresh"
        );
        let refreshed = daemon.refresh(&current["refresh_token"]).await;
        assert_eq!(
            refreshed.status(),
            StatusCode::OK,
            "the rotated refresh token"
        );
        daemon.login("alice").await;
        // The rotation before the crash is remembered: the old refresh token is a reuse.
        let reused = daemon.refresh(&rotated["refresh_token"]).await;
        assert_eq!(reused.status(), StatusCode::BAD_REQUEST);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_0_stops_serving_and_keeps_the_data() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_text("15m"));
        let mut daemon = Daemon::start(dir.path()).await;
        daemon.create_user("alice").await;
        let session = daemon.login("alice").await;
        let readyz = format!("{}/readyz", daemon.public);
        let ready = daemon.client.get(&readyz).send().await.unwrap();
        assert_eq!(ready.status(), StatusCode::OK);

        daemon.signal("TERM");
        let status = daemon.wait_exit().await;

        assert_eq!(status.code(), Some(0), "exit status");
        let after = reqwest::Client::new().get(&readyz).send().await;
        assert!(after.is_err(), "/readyz still answers: {after:?}");
        drop(daemon);
        let daemon = Daemon::start(dir.path()).await;
        assert_eq!(daemon.get_user("alice").await.status(), StatusCode::OK);
        assert_eq!(
            daemon.verify(&session["access_token"]).await,
            StatusCode::OK
        );
        daemon.login("alice").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_a_new_access_ttl_to_new_logins() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_text("15m"));
        let daemon = Daemon::start(dir.path()).await;
        daemon.create_user("alice").await;
        assert_eq!(daemon.login("alice").await["expires_in"], 900);

        write_config(dir.path(), &config_text("5m"));
        daemon.signal("HUP");

        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if daemon.login("alice").await["expires_in"] == 300 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the new access_ttl never applied"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_a_broken_file_logs_an_error_and_keeps_the_running_configuration() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_text("5m"));
        let mut daemon = Daemon::start(dir.path()).await;
        daemon.create_user("alice").await;
        assert_eq!(daemon.login("alice").await["expires_in"], 300);

        write_config(dir.path(), &config_text("soon"));
        daemon.signal("HUP");

        let error = daemon
            .wait_for_log(|l| l["level"] == "ERROR" && message(l).contains("reload"))
            .await;
        assert!(
            error.to_string().contains("access_ttl"),
            "the error does not name the key: {error}"
        );
        for _ in 0..3 {
            assert_eq!(daemon.login("alice").await["expires_in"], 300);
        }
        let health = daemon
            .client
            .get(format!("{}/healthz", daemon.public))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), StatusCode::OK);
    })
    .await;
}

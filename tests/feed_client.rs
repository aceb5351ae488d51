//! `examples/feed_client.rs`, the example client of the revocation feed (README "The
//! revocation feed"), against the real `authd serve`: it verifies tokens with the JWKS, and
//! refuses within 1 s of the `200` a token whose `jti` was revoked or whose session ended in
//! a logout-all (`sid` events); it resumes with its cursor after a restart, and starts over
//! when the cursor is of another store (`410 cursor_expired`).
//!
//! The example is spoken to as an app would: access tokens on its stdin, one verdict per
//! line on its stdout (`valid <sub>` / `refused <reason>`; `recheck` asks again about the
//! previous token), the feed's state on its stderr (`feed: caught up`, `feed: connected`).
//! The daemons sign with EdDSA, so that their JWKS publishes a public key.

// The one-second promise is measured on the real clock, against a real daemon.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use common::{
    Daemon, POLL, STEP_TIMEOUT, b64_json, claims, config_with, jose_header, text, with_claim,
    within_timeout, write_config,
};

/// API.md: "Each event reaches every connected client within 1 s of the `200` that made it";
/// the example must apply it as fast.
const LIVE: Duration = Duration::from_secs(1);

// ----- the daemon -----

/// `authd serve` in `dir` on the shipped config, signing with EdDSA.
async fn start_daemon(dir: &Path) -> Daemon {
    write_config(dir, &config_with(&[("algorithm", "\"EdDSA\"")]));
    Daemon::start(dir).await
}

/// Where a daemon in `dir` keeps its feed token (`feed.token_file = "data/feed.token"`).
fn feed_token_file(dir: &Path) -> PathBuf {
    dir.join("data/feed.token")
}

/// A fresh login's access token.
async fn access_token(daemon: &Daemon, username: &str) -> String {
    text(&daemon.login(username).await["access_token"]).to_owned()
}

/// `POST /admin/v1/revocations`, asserting `200`; the instant the answer arrived.
async fn revoke_ok(daemon: &Daemon, body: Value) -> Instant {
    let response = daemon.revoke(body.clone()).await;
    let answered = Instant::now();
    assert_eq!(response.status(), StatusCode::OK, "revoking {body}");
    answered
}

/// The feed's newest cursor as the daemon itself says it (a long-poll that does not wait).
async fn newest_cursor(daemon: &Daemon, dir: &Path) -> String {
    let token = std::fs::read_to_string(feed_token_file(dir)).unwrap();
    let response = daemon
        .public_request(reqwest::Method::GET, "/v1/revocations/feed?wait=0s")
        .bearer_auth(token.trim())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "long-poll");
    let answer: Value = response.json().await.unwrap();
    text(&answer["next"]).to_owned()
}

// ----- the example client -----

/// `target/<profile>/examples/feed_client`, built once per run of this binary. Cargo builds
/// examples for a plain `cargo test`, but not for `cargo test --test feed_client`, and a
/// binary left from an earlier build may be stale: so build it here (a no-op when it is
/// current), with the profile and target folder this test binary was built with.
fn example_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // This binary is target/<profile>/deps/feed_client-<hash>.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_owned();
        let target_dir = profile_dir.parent().unwrap();
        let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
            "debug" => "dev",
            other => other,
        };
        let mut cargo = Command::new(env!("CARGO"));
        // Without what cargo set for running this test: build scripts watch some of it
        // (ring reruns when CARGO_MANIFEST_DIR changes), so inheriting it would rebuild half
        // the dependency tree here, and again in the next plain `cargo build`.
        for (key, _) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            let set_by_cargo = key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_EXE_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&key);
            if set_by_cargo {
                cargo.env_remove(key);
            }
        }
        let status = cargo
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet", "--example", "feed_client", "--profile"])
            .arg(profile)
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .unwrap();
        assert!(status.success(), "cargo build --example feed_client");
        let binary = profile_dir.join("examples/feed_client");
        assert!(binary.is_file(), "{} after the build", binary.display());
        binary
    })
}

/// The example as a child process: `--url URL --feed-token-file FILE --issuer authd
/// --audience authd`; killed when dropped.
struct FeedClient {
    child: Child,
    stdin: ChildStdin,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    /// Every stderr line so far, for assertions and failure messages.
    seen: Vec<String>,
}

impl Drop for FeedClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines a child writes to `pipe`, forwarded by a thread of their own.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl FeedClient {
    /// Starts the example on the public listener `url` and waits until it has loaded the
    /// revocations in force (`feed: caught up`) and opened the stream (`feed: connected`).
    async fn start(url: &str, token_file: &Path) -> FeedClient {
        FeedClient::start_expecting(url, token_file, "authd", "authd").await
    }

    /// [`FeedClient::start`] with `--issuer issuer --audience audience`.
    async fn start_expecting(
        url: &str,
        token_file: &Path,
        issuer: &str,
        audience: &str,
    ) -> FeedClient {
        let mut child = Command::new(example_binary())
            .args(["--url", url, "--feed-token-file"])
            .arg(token_file)
            .args(["--issuer", issuer, "--audience", audience])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let mut client = FeedClient {
            child,
            stdin,
            stdout,
            stderr,
            seen: Vec::new(),
        };
        client.wait_for_stderr("feed: caught up").await;
        client.wait_for_stderr("feed: connected").await;
        client
    }

    /// Sends one line (a token, or `recheck`) and returns the verdict printed for it.
    async fn ask(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        match tokio::time::timeout(STEP_TIMEOUT, self.stdout.recv()).await {
            Ok(Some(verdict)) => verdict,
            Ok(None) => panic!(
                "the client's stdout closed; stderr:\n{}",
                self.stderr_so_far()
            ),
            Err(_) => panic!(
                "no verdict within {STEP_TIMEOUT:?}; stderr:\n{}",
                self.stderr_so_far()
            ),
        }
    }

    /// Waits for a stderr line equal to `wanted`; returns the lines read until then,
    /// it included.
    async fn wait_for_stderr(&mut self, wanted: &str) -> Vec<String> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut lines = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.stderr.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    lines.push(line.clone());
                    if line == wanted {
                        return lines;
                    }
                }
                Ok(None) => panic!("the client ended; its stderr:\n{}", self.seen.join("\n")),
                Err(_) => panic!(
                    "no {wanted:?} on the client's stderr within {STEP_TIMEOUT:?}:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn stderr_so_far(&mut self) -> String {
        while let Ok(line) = self.stderr.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// Asks `recheck` until the previous token is `refused revoked`; fails if it is still
    /// `valid <sub>` [`LIVE`] after `revoked_at` (the `200` of the revocation), or if any
    /// other verdict comes.
    async fn assert_refused_within_a_second(&mut self, revoked_at: Instant, sub: &str) {
        let valid = format!("valid {sub}");
        loop {
            let verdict = self.ask("recheck").await;
            let waited = revoked_at.elapsed();
            if verdict == "refused revoked" {
                assert!(
                    waited <= LIVE,
                    "refused only {waited:?} after the 200 (more than {LIVE:?})"
                );
                return;
            }
            assert_eq!(verdict, valid, "verdict while waiting for the revocation");
            assert!(
                waited <= LIVE,
                "still {verdict:?} {waited:?} after the revocation's 200; client stderr:\n{}",
                self.stderr_so_far()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

// ----- a relay, so that the client keeps its URL while the daemon behind it changes -----

/// A TCP relay on a port of its own to whichever daemon is current: a restarted daemon
/// listens on a new port (tests bind port 0), the client's `--url` stays the relay's. A
/// connection made while the daemon is away is closed at once, as a refused one would be.
/// It keeps what the client sent on each connection (its requests: small GETs), so a test
/// can see the headers a reconnect carried.
struct Relay {
    addr: SocketAddr,
    upstream: Arc<Mutex<String>>,
    /// What the client sent, one string per connection, in the order they were accepted.
    sent: Arc<Mutex<Vec<Arc<Mutex<String>>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// A relay to `upstream` (`host:port`).
    async fn start(upstream: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Arc::new(Mutex::new(upstream.to_owned()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (target, log) = (upstream.clone(), sent.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let to = target.lock().unwrap().clone();
                let requests = Arc::new(Mutex::new(String::new()));
                log.lock().unwrap().push(requests.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&to).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_daemon, mut to_daemon) = outbound.into_split();
                    let upstream = async move {
                        let mut buffer = vec![0u8; 16 * 1024];
                        loop {
                            match from_client.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    requests
                                        .lock()
                                        .unwrap()
                                        .push_str(&String::from_utf8_lossy(&buffer[..n]));
                                    if to_daemon.write_all(&buffer[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to_daemon.shutdown().await;
                    };
                    let downstream = async move {
                        let _ = tokio::io::copy(&mut from_daemon, &mut to_client).await;
                        let _ = to_client.shutdown().await;
                    };
                    tokio::join!(upstream, downstream);
                });
            }
        });
        Relay {
            addr,
            upstream,
            sent,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// New connections go to `upstream` from now on.
    fn point_to(&self, upstream: &str) {
        *self.upstream.lock().unwrap() = upstream.to_owned();
    }

    /// How many connections the client has made so far.
    fn connections(&self) -> usize {
        self.sent.lock().unwrap().len()
    }

    /// What the client sent on its connections after the first `skip`.
    fn sent_since(&self, skip: usize) -> Vec<String> {
        self.sent.lock().unwrap()[skip..]
            .iter()
            .map(|requests| requests.lock().unwrap().clone())
            .collect()
    }
}

// ----- the tests -----

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_token_turns_refused_within_a_second_of_its_jti_revocation() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let daemon = start_daemon(dir.path()).await;
        daemon.add_user("alice", &[]).await;
        let token = access_token(&daemon, "alice").await;
        let other = access_token(&daemon, "alice").await;
        let mut client = FeedClient::start(&daemon.public, &feed_token_file(dir.path())).await;
        assert_eq!(client.ask(&token).await, "valid alice");

        let revoked_at = revoke_ok(&daemon, json!({"jti": claims(&token)["jti"]})).await;

        client
            .assert_refused_within_a_second(revoked_at, "alice")
            .await;
        // Only that token: a token of another session is still good, and the set is kept.
        assert_eq!(client.ask(&other).await, "valid alice");
        assert_eq!(client.ask(&token).await, "refused revoked");
    })
    .await;
}

/// `token` with its header or claims replaced, its signature kept.
fn tampered(token: &str, header: Option<Value>, claims: Option<Value>) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let header = header.map_or(parts[0].to_owned(), |header| b64_json(&header));
    let claims = claims.map_or(parts[1].to_owned(), |claims| b64_json(&claims));
    format!("{header}.{claims}.{}", parts[2])
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_verified_locally_with_the_jwks_key_of_their_kid_and_the_expected_iss_and_aud() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let daemon = start_daemon(dir.path()).await;
        daemon.add_user("alice", &[]).await;
        let token = access_token(&daemon, "alice").await;
        let token_file = feed_token_file(dir.path());
        let mut client = FeedClient::start(&daemon.public, &token_file).await;

        assert_eq!(client.ask(&token).await, "valid alice");
        let other_sub = with_claim(&claims(&token), "sub", json!("mallory"));
        assert_eq!(
            client.ask(&tampered(&token, None, Some(other_sub))).await,
            "refused bad_signature"
        );
        let other_kid = with_claim(&jose_header(&token), "kid", json!("not-a-published-kid"));
        assert_eq!(
            client.ask(&tampered(&token, Some(other_kid), None)).await,
            "refused unknown_kid"
        );
        let hmac = with_claim(&jose_header(&token), "alg", json!("HS256"));
        assert_eq!(
            client.ask(&tampered(&token, Some(hmac), None)).await,
            "refused wrong_alg"
        );
        let no_typ = with_claim(&jose_header(&token), "typ", json!("JWT"));
        assert_eq!(
            client.ask(&tampered(&token, Some(no_typ), None)).await,
            "refused wrong_typ"
        );
        assert_eq!(client.ask("not.a.token").await, "refused malformed");
        drop(client);

        let mut elsewhere =
            FeedClient::start_expecting(&daemon.public, &token_file, "authd", "another-app").await;
        assert_eq!(elsewhere.ask(&token).await, "refused wrong_audience");
        let mut foreign =
            FeedClient::start_expecting(&daemon.public, &token_file, "another-idp", "authd").await;
        assert_eq!(foreign.ask(&token).await, "refused wrong_issuer");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revocations_made_before_the_client_started_are_refused_from_its_first_answer() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let daemon = start_daemon(dir.path()).await;
        daemon.add_user("alice", &[]).await;
        let by_jti = access_token(&daemon, "alice").await;
        let by_sid = access_token(&daemon, "alice").await;
        let untouched = access_token(&daemon, "alice").await;
        revoke_ok(&daemon, json!({"jti": claims(&by_jti)["jti"]})).await;
        revoke_ok(&daemon, json!({"sid": claims(&by_sid)["sid"]})).await;

        let mut client = FeedClient::start(&daemon.public, &feed_token_file(dir.path())).await;

        assert_eq!(client.ask(&by_jti).await, "refused revoked", "jti revoked");
        assert_eq!(client.ask(&by_sid).await, "refused revoked", "sid revoked");
        assert_eq!(client.ask(&untouched).await, "valid alice");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_all_refuses_a_token_of_another_session_within_a_second() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let daemon = start_daemon(dir.path()).await;
        daemon.add_user("alice", &[]).await;
        daemon.add_user("bob", &[]).await;
        let first = access_token(&daemon, "alice").await;
        let second = access_token(&daemon, "alice").await;
        let bobs = access_token(&daemon, "bob").await;
        assert_ne!(
            claims(&first)["sid"],
            claims(&second)["sid"],
            "two sessions"
        );
        let mut client = FeedClient::start(&daemon.public, &feed_token_file(dir.path())).await;
        assert_eq!(client.ask(&second).await, "valid alice");

        let response = daemon.logout(&first, Some(json!({"all": true}))).await;
        let revoked_at = Instant::now();
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "logout all");

        // `second`'s own jti was never revoked: only its session's sid event refuses it.
        client
            .assert_refused_within_a_second(revoked_at, "alice")
            .await;
        assert_eq!(client.ask(&first).await, "refused revoked");
        assert_eq!(client.ask(&bobs).await, "valid bob", "another user's token");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_daemon_restart_the_client_resumes_with_its_cursor_and_applies_new_revocations() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = start_daemon(dir.path()).await;
        daemon.add_user("alice", &[]).await;
        let before = access_token(&daemon, "alice").await;
        let after = access_token(&daemon, "alice").await;
        let relay = Relay::start(daemon.public_addr()).await;
        let mut client = FeedClient::start(&relay.url(), &feed_token_file(dir.path())).await;
        assert_eq!(client.ask(&before).await, "valid alice");
        let revoked_at = revoke_ok(&daemon, json!({"jti": claims(&before)["jti"]})).await;
        client
            .assert_refused_within_a_second(revoked_at, "alice")
            .await;
        let cursor = newest_cursor(&daemon, dir.path()).await;

        daemon.signal("TERM");
        assert_eq!(daemon.wait_exit().await.code(), Some(0), "authd's exit");
        drop(daemon);
        let daemon = start_daemon(dir.path()).await;
        let before_restart = relay.connections();
        relay.point_to(daemon.public_addr());
        let reconnect = client.wait_for_stderr("feed: connected").await;

        // On the wire: the stream it opened on the new daemon names the cursor.
        let header = format!("last-event-id: {}\r\n", cursor.to_ascii_lowercase());
        let sent = relay.sent_since(before_restart);
        assert!(
            sent.iter().any(|requests| {
                let requests = requests.to_ascii_lowercase();
                requests.starts_with("get /v1/revocations/feed ") && requests.contains(&header)
            }),
            "no reconnect with Last-Event-ID {cursor}; sent:\n{sent:#?}"
        );

        let resuming = format!("feed: resuming after {cursor} ");
        assert!(
            reconnect.iter().any(|line| line.starts_with(&resuming)),
            "the client did not resume after the last cursor {cursor}:\n{}",
            reconnect.join("\n")
        );
        assert!(
            !reconnect.iter().any(|line| line == "feed: caught up"),
            "the client started over instead of resuming:\n{}",
            reconnect.join("\n")
        );
        assert_eq!(client.ask(&before).await, "refused revoked", "kept across");
        assert_eq!(client.ask(&after).await, "valid alice");
        let revoked_at = revoke_ok(&daemon, json!({"sid": claims(&after)["sid"]})).await;
        client
            .assert_refused_within_a_second(revoked_at, "alice")
            .await;
    })
    .await;
}

/// A folder for a daemon that is `source`'s deployment restored elsewhere: the same signing
/// key and feed token, a store of its own (so another epoch).
fn same_secrets_new_store(source: &Path) -> tempfile::TempDir {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = tempfile::tempdir().unwrap();
    let mut private = std::fs::DirBuilder::new();
    private.mode(0o700).recursive(true);
    private.create(dir.path().join("data/keys")).unwrap();
    for entry in std::fs::read_dir(source.join("data/keys")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            dir.path().join("data/keys").join(entry.file_name()),
        )
        .unwrap();
    }
    std::fs::copy(feed_token_file(source), feed_token_file(dir.path())).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_of_another_store_makes_the_client_start_over_and_follow_the_new_one() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = start_daemon(dir.path()).await;
        daemon.add_user("alice", &[]).await;
        let token = access_token(&daemon, "alice").await;
        revoke_ok(&daemon, json!({"jti": claims(&token)["jti"]})).await;
        let relay = Relay::start(daemon.public_addr()).await;
        let mut client = FeedClient::start(&relay.url(), &feed_token_file(dir.path())).await;
        assert_eq!(client.ask(&token).await, "refused revoked");

        // The deployment moves to a store of another epoch (as a restore makes).
        let elsewhere = same_secrets_new_store(dir.path());
        daemon.signal("TERM");
        assert_eq!(daemon.wait_exit().await.code(), Some(0), "authd's exit");
        drop(daemon);
        let daemon = start_daemon(elsewhere.path()).await;
        relay.point_to(daemon.public_addr());

        let reconnect = client.wait_for_stderr("feed: caught up").await;
        assert!(
            reconnect.iter().any(|line| line.contains("410")),
            "no 410 before starting over:\n{}",
            reconnect.join("\n")
        );
        client.wait_for_stderr("feed: connected").await;
        daemon.add_user("alice", &[]).await;
        let new_token = access_token(&daemon, "alice").await;
        assert_eq!(client.ask(&new_token).await, "valid alice");
        let revoked_at = revoke_ok(&daemon, json!({"jti": claims(&new_token)["jti"]})).await;
        client
            .assert_refused_within_a_second(revoked_at, "alice")
            .await;
    })
    .await;
}

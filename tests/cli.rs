//! The admin commands (`authd user …`, `authd revoke`, `authd revocations list`, `authd
//! cluster status`) and `check-config`: the real binary, run as a child process, against a
//! daemon started in-process on port 0. Every
//! change is checked through its effect on the public API (logins, token verification).

// The daemon under test runs on the system clock, and so do the tests' expectations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::{Value, json};

mod common;

use common::{PASSWORD, TestApp, claims};

const NEW_PASSWORD: &str = "tr0ub4dor & 3 spaces ";

/// A daemon in-process, plus a configuration file for the CLI that points at it.
struct Daemon {
    app: TestApp,
    /// The file the CLI is given: just `server.admin_listen` and `admin.token_file`.
    cli_config: PathBuf,
}

impl Deref for Daemon {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.app
    }
}

/// What one run of `authd` left behind.
#[derive(Debug)]
struct Run {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Daemon {
    async fn start() -> Daemon {
        let app = TestApp::spawn().await;
        let cli_config = app.dir.join("cli.toml");
        write_cli_config(&cli_config, admin_addr(&app), &app.dir.join("admin.token"));
        Daemon { app, cli_config }
    }

    async fn stop(self) {
        self.app.stop().await;
    }

    /// Runs `authd ARGS` with the CLI configuration (through `AUTHD_CONFIG`) and `stdin`;
    /// asserts that neither the admin token nor anything piped in shows up in its output.
    async fn authd(&self, args: &[&str], stdin: &str) -> Run {
        let run = run_authd(args, stdin, Some(&self.cli_config)).await;
        assert_no_secret(&run, &self.admin_token);
        for secret in [PASSWORD, NEW_PASSWORD, stdin.trim_end_matches('\n')] {
            if !secret.trim().is_empty() {
                assert_no_secret(&run, secret);
            }
        }
        run
    }

    /// Like [`authd`](Self::authd) and asserts success.
    async fn ok(&self, args: &[&str], stdin: &str) -> String {
        let run = self.authd(args, stdin).await;
        assert!(run.success, "authd {args:?} failed: {run:?}");
        assert!(
            run.stderr.is_empty(),
            "authd {args:?} wrote to stderr: {run:?}"
        );
        run.stdout
    }

    /// Like [`authd`](Self::authd) and asserts exit status 1.
    async fn fails(&self, args: &[&str], stdin: &str) -> String {
        let run = self.authd(args, stdin).await;
        assert_eq!(run.code, Some(1), "authd {args:?} should fail: {run:?}");
        assert!(run.stderr.starts_with("authd: "), "{run:?}");
        run.stderr
    }
}

/// The address of the daemon's admin listener, as the CLI's configuration names it.
fn admin_addr(app: &TestApp) -> SocketAddr {
    app.admin.trim_start_matches("http://").parse().unwrap()
}

/// Writes a secret file the way an operator must: readable by its owner only.
fn write_secret(path: &Path, contents: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn write_cli_config(file: &Path, admin_listen: SocketAddr, token_file: &Path) {
    let text = format!(
        "[server]\nadmin_listen = {:?}\n\n[admin]\ntoken_file = {:?}\n",
        admin_listen.to_string(),
        token_file.display().to_string(),
    );
    std::fs::write(file, text).unwrap();
}

/// Runs the built binary off the async threads (the daemon shares them), with an
/// environment free of the caller's `AUTHD…` variables.
async fn run_authd(args: &[&str], stdin: &str, config: Option<&Path>) -> Run {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let stdin = stdin.to_owned();
    let config = config.map(Path::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_authd"));
        command
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AUTHD") {
                command.env_remove(key);
            }
        }
        if let Some(config) = config {
            command.env("AUTHD_CONFIG", config);
        }
        let mut child = command.spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        // The child may exit without reading (e.g. when it cannot reach the daemon).
        let _ = pipe.write_all(stdin.as_bytes());
        drop(pipe);
        let output = child.wait_with_output().unwrap();
        Run {
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    })
    .await
    .unwrap()
}

fn assert_no_secret(run: &Run, secret: &str) {
    assert!(
        !run.stdout.contains(secret) && !run.stderr.contains(secret),
        "a secret leaked into the output: {run:?}"
    );
}

/// The whitespace-separated cells of the table row whose first cell is `first`.
fn row<'a>(table: &'a str, first: &str) -> Option<Vec<&'a str>> {
    table
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
}

#[tokio::test(flavor = "multi_thread")]
async fn user_lifecycle_from_creation_to_deletion() {
    let daemon = Daemon::start().await;
    let name = "carol@example.com";

    // Created with the password from stdin: the first line, trailing newline stripped.
    let out = daemon
        .ok(
            &["user", "add", name, "--role", "ops", "--role", "admin"],
            &format!("{PASSWORD}\nignored second line\n"),
        )
        .await;
    assert!(out.contains("created user carol@example.com"), "{out}");

    let out = daemon.ok(&["user", "show", "Carol@Example.com"], "").await;
    assert_eq!(row(&out, "username").unwrap(), ["username", name]);
    assert_eq!(row(&out, "roles").unwrap(), ["roles", "admin,ops"]);
    assert_eq!(row(&out, "disabled").unwrap(), ["disabled", "no"]);
    let shown: Value =
        serde_json::from_str(&daemon.ok(&["user", "show", name, "--json"], "").await).unwrap();
    assert_eq!(shown["username"], name);

    let out = daemon.ok(&["user", "list"], "").await;
    assert_eq!(
        row(&out, "USERNAME").unwrap(),
        ["USERNAME", "ROLES", "DISABLED", "CREATED_AT"]
    );
    let listed = row(&out, name).unwrap();
    assert_eq!(listed[1..3], ["admin,ops", "no"]);
    let listed: Value =
        serde_json::from_str(&daemon.ok(&["user", "list", "--json"], "").await).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["roles"], json!(["admin", "ops"]));

    assert_eq!(
        daemon.try_login(name, PASSWORD).await.status(),
        StatusCode::OK
    );

    // Disable: the correct password gets 403; the existing token stops working.
    let token = daemon.access_token(name, PASSWORD).await;
    let out = daemon.ok(&["user", "disable", name], "").await;
    assert!(out.starts_with("disabled user carol@example.com"), "{out}");
    assert_eq!(
        daemon.try_login(name, PASSWORD).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        daemon.verify(&token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let out = daemon.ok(&["user", "list"], "").await;
    assert_eq!(row(&out, name).unwrap()[2], "yes");

    daemon.ok(&["user", "enable", name], "").await;
    assert_eq!(
        daemon.try_login(name, PASSWORD).await.status(),
        StatusCode::OK
    );

    // A new password (spaces kept as typed); the old one stops working.
    let out = daemon
        .ok(&["user", "passwd", name], &format!("{NEW_PASSWORD}\n"))
        .await;
    assert!(
        out.contains("changed the password of carol@example.com"),
        "{out}"
    );
    assert_eq!(
        daemon.try_login(name, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        daemon.try_login(name, NEW_PASSWORD).await.status(),
        StatusCode::OK
    );

    let out = daemon
        .ok(&["user", "roles", name, "--role", "viewer"], "")
        .await;
    assert_eq!(out, "roles of carol@example.com: viewer\n");
    let out = daemon.ok(&["user", "roles", name, "--clear"], "").await;
    assert_eq!(out, "roles of carol@example.com: -\n");

    // Deleted: gone from the list, and every lookup says so.
    let token = daemon.access_token(name, NEW_PASSWORD).await;
    let out = daemon.ok(&["user", "delete", name], "").await;
    assert_eq!(out, "deleted user carol@example.com\n");
    assert_eq!(
        daemon.verify(&token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(row(&daemon.ok(&["user", "list"], "").await, name).is_none());
    let err = daemon.fails(&["user", "show", name], "").await;
    assert_eq!(err, format!("authd: user {name} not found\n"));

    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_each_kind_of_target_and_list_the_revocations() {
    let daemon = Daemon::start().await;
    daemon.ok(&["user", "add", "dave"], PASSWORD).await;
    let by_jti = daemon.access_token("dave", PASSWORD).await;
    let by_sid = daemon.access_token("dave", PASSWORD).await;
    let by_token = daemon.access_token("dave", PASSWORD).await;
    let by_piped_token = daemon.access_token("dave", PASSWORD).await;
    let jti = claims(&by_jti)["jti"].as_str().unwrap().to_owned();
    let sid = claims(&by_sid)["sid"].as_str().unwrap().to_owned();
    let token_jti = claims(&by_token)["jti"].as_str().unwrap().to_owned();
    let piped_jti = claims(&by_piped_token)["jti"].as_str().unwrap().to_owned();

    let out = daemon.ok(&["revoke", "--jti", &jti], "").await;
    assert_eq!(out, format!("revoked token (jti) {jti}\n"));
    assert_eq!(
        daemon.verify(&by_jti).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(daemon.verify(&by_sid).await.status(), StatusCode::OK);

    let out = daemon
        .ok(&["revoke", "--sid", &sid, "--reason", "stolen laptop"], "")
        .await;
    assert_eq!(out, format!("revoked session (sid) {sid}\n"));
    assert_eq!(
        daemon.verify(&by_sid).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(daemon.verify(&by_token).await.status(), StatusCode::OK);

    // The token itself is not echoed back (the helper checks the output for it).
    let run = daemon.authd(&["revoke", "--token", &by_token], "").await;
    assert!(run.success, "{run:?}");
    assert_eq!(run.stdout, format!("revoked the token: jti {token_jti}\n"));
    assert_eq!(
        daemon.verify(&by_token).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let out = daemon
        .ok(&["revoke", "--token", "-"], &format!("{by_piped_token}\n"))
        .await;
    assert_eq!(out, format!("revoked the token: jti {piped_jti}\n"));
    assert_eq!(
        daemon.verify(&by_piped_token).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let survivor = daemon.access_token("dave", PASSWORD).await;
    let out = daemon.ok(&["revoke", "--user", "dave"], "").await;
    assert_eq!(out, "revoked every session of user dave\n");
    assert_eq!(
        daemon.verify(&survivor).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Logins after a revoke-all work at once.
    let fresh = daemon.access_token("dave", PASSWORD).await;
    assert_eq!(daemon.verify(&fresh).await.status(), StatusCode::OK);

    let out = daemon.ok(&["revocations", "list"], "").await;
    assert_eq!(
        row(&out, "KIND").unwrap(),
        ["KIND", "ID", "REVOKED_AT", "EXPIRES_AT", "REASON"]
    );
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect())
        .collect();
    let find = |kind: &str, id: &str| {
        rows.iter()
            .find(|cells| cells[0] == kind && cells[1] == id)
            .unwrap_or_else(|| panic!("no {kind} {id} in\n{out}"))
            .clone()
    };
    assert_eq!(find("jti", &jti)[4..], ["-"]);
    assert_eq!(find("sid", &sid)[4..], ["stolen", "laptop"]);
    find("jti", &token_jti);
    find("jti", &piped_jti);
    find("user", "dave");
    // Oldest first.
    let position = |id: &str| rows.iter().position(|cells| cells[1] == id).unwrap();
    assert!(position(&jti) < position(&sid) && position(&sid) < position("dave"));

    let listed: Value =
        serde_json::from_str(&daemon.ok(&["revocations", "list", "--json"], "").await).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), rows.len());
    assert!(listed.iter().any(|entry| entry["kind"] == "sid"
        && entry["id"] == sid.as_str()
        && entry["reason"] == "stolen laptop"));

    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn user_list_follows_every_page() {
    let daemon = Daemon::start().await;
    // One more than the largest page, created straight through the API. One at a time:
    // concurrent flushes can hang sled 0.34 (spacejam/sled#1308), which is not under test.
    for i in 0..1001 {
        let response = daemon
            .create_user_with(
                json!({"username": format!("user{i:04}@example.com"), "password": PASSWORD}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    let out = daemon.ok(&["user", "list"], "").await;
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().next().unwrap())
        .collect();
    let expected: Vec<String> = (0..1001)
        .map(|i| format!("user{i:04}@example.com"))
        .collect();
    assert_eq!(names, expected);
    let listed: Value =
        serde_json::from_str(&daemon.ok(&["user", "list", "--json"], "").await).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1001);

    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_of_the_daemon_are_explained() {
    let daemon = Daemon::start().await;

    let err = daemon.fails(&["user", "show", "ghost"], "").await;
    assert_eq!(err, "authd: user ghost not found\n");
    let err = daemon.fails(&["user", "passwd", "ghost"], PASSWORD).await;
    assert_eq!(err, "authd: user ghost not found\n");
    let err = daemon.fails(&["user", "delete", "ghost"], "").await;
    assert_eq!(err, "authd: user ghost not found\n");
    let err = daemon.fails(&["revoke", "--user", "ghost"], "").await;
    assert_eq!(err, "authd: user ghost not found\n");

    daemon.ok(&["user", "add", "erin"], PASSWORD).await;
    let err = daemon.fails(&["user", "add", "erin"], PASSWORD).await;
    assert!(err.contains("user erin already exists"), "{err}");

    // 400: the server's own description.
    let err = daemon.fails(&["user", "add", "frank"], "pw1\n").await;
    assert!(err.starts_with("authd: cannot add user frank: "), "{err}");
    assert!(
        err.contains("password must be at least 8 characters"),
        "{err}"
    );
    let err = daemon.fails(&["user", "add", "Bad Name!"], PASSWORD).await;
    assert!(err.contains("username must be"), "{err}");
    let err = daemon
        .fails(&["revoke", "--token", "not.a.token"], "")
        .await;
    assert!(err.starts_with("authd: cannot revoke the token: "), "{err}");

    // No password at all on a closed stdin.
    let err = daemon.fails(&["user", "add", "grace"], "").await;
    assert!(err.contains("no password on standard input"), "{err}");

    // Nothing was created by the failures.
    let listed: Value =
        serde_json::from_str(&daemon.ok(&["user", "list", "--json"], "").await).unwrap();
    assert_eq!(listed, json!([daemon_user(&listed, "erin")]));

    daemon.stop().await;
}

fn daemon_user(listed: &Value, name: &str) -> Value {
    listed
        .as_array()
        .unwrap()
        .iter()
        .find(|user| user["username"] == name)
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_admin_token_is_reported_without_showing_it() {
    let daemon = Daemon::start().await;
    let wrong_file = daemon.dir.join("wrong.token");
    write_secret(&wrong_file, "  not-the-admin-token-but-as-long-as-one\n");
    let config = daemon.dir.join("wrong.toml");
    write_cli_config(&config, admin_addr(&daemon), &wrong_file);

    for args in [
        &["user", "list"][..],
        &["user", "add", "heidi"],
        &["revoke", "--jti", "abc"],
        &["revocations", "list"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--config", config.to_str().unwrap()]);
        let run = daemon.authd(&args, PASSWORD).await;
        assert_eq!(run.code, Some(1), "{run:?}");
        let expected = format!(
            "authd: the admin token in {} was refused",
            wrong_file.display()
        );
        assert!(run.stderr.starts_with(&expected), "{run:?}");
        assert_no_secret(&run, "not-the-admin-token");
    }

    let run = daemon.authd(&["user", "show", "heidi"], "").await;
    assert_eq!(run.code, Some(1), "heidi was not created: {run:?}");

    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_status_prints_one_line_for_the_one_sled_instance() {
    let daemon = Daemon::start().await;
    let token = daemon.user_token("frank", &[]).await;
    let kid = common::jose_header(&token)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let node = std::fs::read_to_string(daemon.dir.join("data/node.id")).unwrap();

    let out = daemon.ok(&["cluster", "status"], "").await;

    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let cells: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        cells,
        [
            node.trim(),
            daemon.public.trim_start_matches("http://"),
            env!("CARGO_PKG_VERSION"),
            kid.as_str(),
        ],
        "node, public_addr, version, signing_kid; one instance has no keyset to differ from"
    );

    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_that_is_not_running_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    write_secret(&token_file, "some-admin-token-long-enough-for-the-rules\n");
    // A port that was just free: nothing listens there once the listener is dropped.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.path().join("cli.toml");
    write_cli_config(&config, closed, &token_file);

    for args in [
        &["user", "list"][..],
        &["revoke", "--user", "ivan"],
        &["revocations", "list", "--json"],
        &["cluster", "status"],
    ] {
        let run = run_authd(args, "", Some(&config)).await;
        assert_eq!(run.code, Some(1), "{run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
        let expected = format!("authd: cannot reach authd's admin listener at {closed}");
        assert!(run.stderr.starts_with(&expected), "{run:?}");
        assert!(
            run.stderr.trim_end().ends_with("is the daemon running?"),
            "{run:?}"
        );
        assert_no_secret(&run, "some-admin-token");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_local_settings_fail_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cli.toml");
    let missing = dir.path().join("missing.token");
    write_cli_config(&config, "127.0.0.1:9".parse().unwrap(), &missing);
    let run = run_authd(
        &["user", "list", "--config", config.to_str().unwrap()],
        "",
        None,
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.starts_with(&format!(
            "authd: cannot read the admin token file {}",
            missing.display()
        )),
        "{run:?}"
    );

    let run = run_authd(&["revoke", "--jti", "a", "--sid", "b"], "", Some(&config)).await;
    assert!(!run.success, "two targets are refused: {run:?}");
    let run = run_authd(&["revoke"], "", Some(&config)).await;
    assert!(!run.success, "a target is required: {run:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn user_mfa_reset_turns_the_second_factor_off_and_ends_every_session() {
    use common::second_factor::amr_of;

    let daemon = Daemon::start().await;
    daemon.ok(&["user", "add", "alice"], PASSWORD).await;
    let (password_only, alice) = daemon.login_and_enrol("alice").await;
    let response = daemon.login_with_code("alice", &alice.next_code()).await;
    let with_otp = common::assert_tokens(response, "a login with a code").await;
    let with_otp_access = with_otp["access_token"].as_str().unwrap();
    assert_eq!(amr_of(&with_otp), json!(["pwd", "otp"]));
    assert!(daemon.mfa_flag("alice").await, "on before the reset");
    daemon.password_step("alice").await;

    let out = daemon.ok(&["user", "mfa-reset", "alice"], "").await;
    assert!(out.contains("reset the second factor of alice"), "{out}");

    assert!(!daemon.mfa_flag("alice").await, "off after the reset");
    for (what, token) in [
        ("the enrolment's session", password_only.as_str()),
        ("a session with otp", with_otp_access),
    ] {
        let status = daemon.verify(token).await.status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what} after the reset");
    }
    let status = daemon
        .refresh(with_otp["refresh_token"].as_str().unwrap())
        .await
        .status();
    assert_eq!(status, StatusCode::BAD_REQUEST, "its refresh token");
    // The password alone logs in again (no mfa_required), as a password-only session.
    let response = daemon.try_login("alice", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK, "the password alone");
    let body: Value = response.json().await.unwrap();
    assert_eq!(amr_of(&body), json!(["pwd"]));
    // A reset of an account with nothing to reset is no error.
    daemon.ok(&["user", "mfa-reset", "alice"], "").await;

    let err = daemon.fails(&["user", "mfa-reset", "ghost"], "").await;
    assert!(err.contains("ghost"), "{err}");
    assert!(err.contains("not found"), "{err}");

    daemon.stop().await;
}

// ----- check-config: files, bounds, RS256 (rev 4) -----

/// A configuration folder with its data folder, keys folder (one HS256 key) and admin token
/// all private, and `config.toml` holding `extra` after the paths.
fn private_setup(extra: &str) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    authd::auth::keys::generate_key(
        &data.join("keys"),
        authd::auth::keys::KeyAlgorithm::HS256,
        std::time::SystemTime::now(),
    )
    .unwrap();
    write_secret(&data.join("admin.token"), &format!("{}\n", "t".repeat(43)));
    let config = dir.path().join("config.toml");
    std::fs::write(&config, extra).unwrap();
    (dir, config)
}

async fn check_config(config: &Path) -> Run {
    run_authd(
        &["check-config", "--config", config.to_str().unwrap()],
        "",
        None,
    )
    .await
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_accepts_a_private_setup() {
    let (_dir, config) = private_setup("");

    let run = check_config(&config).await;

    assert!(run.success, "{run:?}");
    assert!(run.stderr.is_empty(), "no warning: {run:?}");
}

/// Spoils one file of a [`private_setup`] folder and returns its path.
type BreakIt = fn(&Path) -> PathBuf;

#[tokio::test(flavor = "multi_thread")]
async fn check_config_fails_naming_each_file_others_could_use() {
    let cases: [(&str, BreakIt, &str); 4] = [
        (
            "group-writable keys folder",
            |dir| {
                let keys = dir.join("data/keys");
                set_mode(&keys, 0o770);
                keys
            },
            "is writable by group or others",
        ),
        (
            "group-readable admin token",
            |dir| {
                let token = dir.join("data/admin.token");
                set_mode(&token, 0o640);
                token
            },
            "is readable or writable by group or others",
        ),
        (
            "short admin token",
            |dir| {
                let token = dir.join("data/admin.token");
                write_secret(&token, "  too-short  \n");
                token
            },
            "holds a token of 9 bytes",
        ),
        (
            "symlink out of the keys folder",
            |dir| {
                let outside = dir.join("elsewhere.key");
                write_secret(&outside, "not even read");
                let link = dir.join("data/keys/zz.key");
                std::os::unix::fs::symlink(&outside, &link).unwrap();
                link
            },
            "is a symbolic link pointing outside",
        ),
    ];
    for (what, break_it, says) in cases {
        let (dir, config) = private_setup("");
        let base = dir.path().canonicalize().unwrap();
        let path = break_it(&base);

        let run = check_config(&config).await;

        assert_eq!(run.code, Some(1), "{what}: {run:?}");
        assert!(
            run.stderr.contains(&format!("{} {says}", path.display())),
            "{what}: {run:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_refuses_an_access_ttl_over_24h_and_a_leeway_over_5m() {
    let (dir, config) = private_setup("[jwt]\naccess_ttl = \"25h\"\nleeway = \"6m\"\n");
    let file = dir.path().canonicalize().unwrap().join("config.toml");

    let run = check_config(&config).await;

    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "jwt.access_ttl in {}: must be at most 1day, got \"25h\"",
            file.display()
        )),
        "{run:?}"
    );
    assert!(
        run.stderr.contains(&format!(
            "jwt.leeway in {}: must be at most 5m, got \"6m\"",
            file.display()
        )),
        "{run:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_warns_when_rs256_signs_and_still_accepts_it() {
    let (dir, config) = private_setup("[jwt]\nalgorithm = \"RS256\"\n");
    authd::auth::keys::generate_key(
        &dir.path().join("data/keys"),
        authd::auth::keys::KeyAlgorithm::RS256,
        std::time::SystemTime::now(),
    )
    .unwrap();

    let run = check_config(&config).await;

    assert!(run.success, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("warning: {}", authd::config::RS256_WARNING)),
        "{run:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_refuses_bad_etcd_settings_naming_each_key() {
    let (dir, config) = private_setup(
        "[storage]\nbackend = \"mongo\"\n[etcd]\nendpoints = []\nmax_staleness = \"0s\"\n\
         cert_file = \"client.pem\"\n",
    );
    let file = dir.path().canonicalize().unwrap().join("config.toml");

    let run = check_config(&config).await;

    assert_eq!(run.code, Some(1), "{run:?}");
    for key in [
        "storage.backend",
        "etcd.endpoints",
        "etcd.max_staleness",
        "etcd.cert_file",
    ] {
        assert!(
            run.stderr
                .contains(&format!("{key} in {}: ", file.display())),
            "{key}: {run:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_never_contacts_etcd() {
    // TEST-NET-1 (RFC 5737): nothing answers there, so a connection attempt could only
    // end at the dial timeout, which is set far above the limit below.
    let (_dir, config) = private_setup(
        "[storage]\nbackend = \"etcd\"\n[etcd]\nendpoints = [\"http://192.0.2.1:2379\"]\n\
         dial_timeout = \"60s\"\nrequest_timeout = \"60s\"\n",
    );
    let started = std::time::Instant::now();

    let run = check_config(&config).await;

    assert!(run.success, "{run:?}");
    assert!(run.stdout.contains("configuration is valid"), "{run:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "check-config waited for etcd: {:?}",
        started.elapsed()
    );
}

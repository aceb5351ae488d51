//! authd as systemd runs it (API.md "Signals and lifecycle"): graceful SIGTERM with a slow
//! login in flight, a second SIGTERM during the drain, sd_notify messages on a socket the
//! test binds, socket activation through `systemd-socket-activate`, logs free of secrets,
//! and the shipped unit files checked with `systemd-analyze`.
//!
//! Real binary (`CARGO_BIN_EXE_authd`), real signals (`kill(1)`); every wait is a bounded
//! poll, every test has a hard timeout, and every child is killed when its test ends
//! (the harness in `tests/common`). Tests that need a systemd tool skip with a note
//! where it is missing.

// Real processes, real signals, real time: these tests read the clock as any client would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UnixDatagram};
use tokio::time::Instant;

use common::{
    Daemon, PASSWORD, POLL, STEP_TIMEOUT, config_with, message, strip_ansi, within_timeout,
    write_config,
};

/// argon2id parameters that make one hash take about a second here (measured: 1.3 s on
/// the 2-core build machine; 256 MiB × 8 took 5.3 s): a login that is reliably still in
/// flight when the signal arrives.
const SLOW_ARGON2: [(&str, &str); 2] =
    [("argon2_memory_kib", "131072"), ("argon2_iterations", "4")];

// ----- helpers -----

/// The value of the gauge or counter line `name` (without labels) on the admin `/metrics`.
async fn metric(daemon: &Daemon, name: &str) -> f64 {
    let text = daemon
        .client
        .get(format!("{}/metrics", daemon.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Polls until a TCP connection to `addr` is refused; returns when that was seen.
async fn wait_until_refused(addr: &str) -> Instant {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        match TcpStream::connect(addr).await {
            // A reset during connect is the same answer: the listening socket closed while
            // this SYN waited in its queue.
            Err(err) => {
                assert!(
                    matches!(
                        err.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    ),
                    "{err}"
                );
                return Instant::now();
            }
            Ok(stream) => drop(stream),
        }
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts connections"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The next datagram on `socket`, as text; fails after [`STEP_TIMEOUT`].
async fn receive(socket: &UnixDatagram) -> String {
    let mut buffer = vec![0u8; 4096];
    let len = tokio::time::timeout(STEP_TIMEOUT, socket.recv(&mut buffer))
        .await
        .expect("no sd_notify message")
        .unwrap();
    String::from_utf8(buffer[..len].to_vec()).unwrap()
}

/// The value of `KEY=` in an sd_notify message, if it has that line.
fn notify_field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

/// `CLOCK_MONOTONIC` in microseconds, read without `unsafe` from `Instant`'s `Debug`
/// (`Instant { tv_sec: S, tv_nsec: N }` on Linux); `None` if that format ever changes.
fn monotonic_usec() -> Option<u128> {
    let debug = format!("{:?}", std::time::Instant::now());
    let number = |key: &str| -> Option<u128> {
        let rest = debug.split(key).nth(1)?;
        rest.trim_start_matches([':', ' '])
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some(number("tv_sec")? * 1_000_000 + number("tv_nsec")? / 1_000)
}

/// `name` on the `PATH` (or in /usr/bin, /bin), if it exists.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

// ----- SIGTERM -----

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_slow_login_lets_it_finish_with_200_and_exits_0_within_the_grace() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let grace = Duration::from_secs(10);
        let mut overrides = SLOW_ARGON2.to_vec();
        overrides.push(("shutdown_grace", "\"10s\""));
        write_config(dir.path(), &config_with(&overrides));
        let mut daemon = Daemon::start(dir.path()).await;
        daemon.add_user("alice", &[]).await;
        assert_eq!(metric(&daemon, "authd_hash_queue_depth").await, 0.0);
        let login = tokio::spawn({
            let request = daemon
                .public_request(Method::POST, "/v1/login")
                .json(&json!({"username": "alice", "password": PASSWORD}));
            async move {
                let started = Instant::now();
                let response = request.send().await?;
                let status = response.status();
                let body: Value = response.json().await?;
                Ok::<_, reqwest::Error>((status, body, started, Instant::now()))
            }
        });
        // The login is in flight once its password hash is queued or running.
        let deadline = Instant::now() + STEP_TIMEOUT;
        while metric(&daemon, "authd_hash_queue_depth").await < 1.0 {
            assert!(Instant::now() < deadline, "the login never started hashing");
            tokio::time::sleep(POLL).await;
        }

        let signalled = Instant::now();
        daemon.signal("TERM");
        let refused = wait_until_refused(daemon.public_addr()).await;
        let (status, body, started, answered) = login
            .await
            .unwrap()
            .expect("the in-flight login got no answer");
        let exit = daemon.wait_exit().await;
        let exited = Instant::now();

        assert_eq!(status, StatusCode::OK, "{body}");
        for field in ["access_token", "refresh_token"] {
            let token = body[field].as_str().unwrap_or_default();
            assert!(!token.is_empty(), "no {field} in {body}");
        }
        assert!(
            refused < answered,
            "new connections were accepted until the in-flight login was answered \
             (login took {:?}, refused {:?} after the signal)",
            answered - started,
            refused - signalled
        );
        assert_eq!(exit.code(), Some(0), "exit status");
        let margin = Duration::from_secs(3);
        assert!(
            exited - signalled < grace + margin,
            "exited {:?} after SIGTERM, grace {grace:?}",
            exited - signalled
        );
        eprintln!(
            "login took {:?}; refused {:?} and exited {:?} after SIGTERM",
            answered - started,
            refused - signalled,
            exited - signalled
        );
    })
    .await;
}

/// The in-flight request is a login whose client sent its headers (with
/// `Expect: 100-continue`, so the test knows the handler is reading the body) and half of
/// its body, and then stalls: unlike an expensive login, it never finishes by itself, so
/// only the second signal can end the 30 s drain early.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_during_the_drain_exits_0_without_waiting_for_the_grace() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_with(&[("shutdown_grace", "\"30s\"")]));
        let mut daemon = Daemon::start(dir.path()).await;
        let mut stalled = TcpStream::connect(daemon.public_addr()).await.unwrap();
        stalled
            .write_all(
                b"POST /v1/login HTTP/1.1\r\nHost: authd\r\n\
                  Content-Type: application/json\r\nContent-Length: 64\r\n\
                  Expect: 100-continue\r\n\r\n",
            )
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let read = tokio::time::timeout(STEP_TIMEOUT, stalled.read(&mut byte))
                .await
                .expect("no 100 Continue")
                .unwrap();
            assert_eq!(read, 1, "connection closed: {head:?}");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 100"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        stalled
            .write_all(b"{\"username\": \"alice\",")
            .await
            .unwrap();

        daemon.signal("TERM");
        let draining = daemon
            .wait_for_log(|l| {
                message(l) == "stopped accepting; draining" && l["fields"]["listener"] == "public"
            })
            .await;
        assert_eq!(
            draining["fields"]["open"], 1,
            "the stalled login is not being waited for: {draining}"
        );
        let second = Instant::now();
        daemon.signal("TERM");
        daemon
            .wait_for_log(|l| message(l).contains("second shutdown signal"))
            .await;
        let exit = daemon.wait_exit().await;

        assert_eq!(exit.code(), Some(0), "exit status");
        let took = second.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "exited {took:?} after the second SIGTERM (grace 30 s)"
        );
        drop(stalled);
    })
    .await;
}

// ----- sd_notify -----

#[tokio::test(flavor = "multi_thread")]
async fn sd_notify_says_ready_after_binding_reloading_around_sighup_and_stopping_on_sigterm() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_with(&[]));
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let mut command = Daemon::command(dir.path());
        command.env("NOTIFY_SOCKET", &path);
        let mut daemon = Daemon::spawn(command);

        let ready = receive(&socket).await;
        assert_eq!(notify_field(&ready, "READY"), Some("1"), "{ready:?}");
        assert!(
            notify_field(&ready, "STATUS").is_some(),
            "no STATUS= in {ready:?}"
        );
        // Both listeners were bound before READY=1: they answer without any retry.
        daemon.wait_until_ready(dir.path()).await;
        let health = daemon
            .public_request(Method::GET, "/healthz")
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        let users = daemon.list_users("").await;
        assert_eq!(users.status(), StatusCode::OK);

        let before = monotonic_usec();
        daemon.signal("HUP");
        let reloading = receive(&socket).await;
        let after = monotonic_usec();
        assert_eq!(
            notify_field(&reloading, "RELOADING"),
            Some("1"),
            "{reloading:?}"
        );
        let usec = notify_field(&reloading, "MONOTONIC_USEC")
            .unwrap_or_else(|| panic!("no MONOTONIC_USEC= in {reloading:?}"));
        assert!(
            !usec.is_empty() && usec.bytes().all(|b| b.is_ascii_digit()),
            "MONOTONIC_USEC={usec:?}"
        );
        let usec: u128 = usec.parse().unwrap();
        assert!(usec > 0);
        if let (Some(before), Some(after)) = (before, after) {
            // systemd compares it with its own CLOCK_MONOTONIC; authd reads /proc/uptime
            // (10 ms steps), hence the tolerance.
            let tolerance = 20_000;
            assert!(
                before.saturating_sub(tolerance) <= usec && usec <= after + tolerance,
                "MONOTONIC_USEC={usec} is not CLOCK_MONOTONIC ({before}..{after})"
            );
        } else {
            eprintln!("note: cannot read CLOCK_MONOTONIC: MONOTONIC_USEC={usec} not compared");
        }
        let reloaded = receive(&socket).await;
        assert_eq!(notify_field(&reloaded, "READY"), Some("1"), "{reloaded:?}");

        daemon.signal("TERM");
        let stopping = receive(&socket).await;
        assert_eq!(
            notify_field(&stopping, "STOPPING"),
            Some("1"),
            "{stopping:?}"
        );
        assert_eq!(daemon.wait_exit().await.code(), Some(0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sd_notify_sends_watchdog_keepalives_at_half_watchdog_usec() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_with(&[]));
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let mut command = Daemon::command(dir.path());
        command.env("NOTIFY_SOCKET", &path);
        command.env("WATCHDOG_USEC", "200000");
        let _daemon = Daemon::spawn(command);

        let mut keepalives = Vec::new();
        let mut other = Vec::new();
        while keepalives.len() < 2 {
            let message = receive(&socket).await;
            if notify_field(&message, "WATCHDOG") == Some("1") {
                keepalives.push(Instant::now());
            } else {
                other.push(message);
            }
        }

        assert!(
            other.iter().any(|m| notify_field(m, "READY") == Some("1")),
            "no READY=1 before the keep-alives: {other:?}"
        );
        let gap = keepalives[1] - keepalives[0];
        assert!(
            gap < Duration::from_secs(2),
            "keep-alives {gap:?} apart for WATCHDOG_USEC=200000"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sd_notify_reaches_an_abstract_notify_socket() {
    use std::os::linux::net::SocketAddrExt as _;
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_with(&[]));
        let name = format!(
            "authd-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let address = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let socket = std::os::unix::net::UnixDatagram::bind_addr(&address).unwrap();
        socket.set_nonblocking(true).unwrap();
        let socket = UnixDatagram::from_std(socket).unwrap();
        let mut command = Daemon::command(dir.path());
        command.env("NOTIFY_SOCKET", format!("@{name}"));
        let mut daemon = Daemon::spawn(command);

        let ready = receive(&socket).await;
        assert_eq!(notify_field(&ready, "READY"), Some("1"), "{ready:?}");
        daemon.wait_until_ready(dir.path()).await;
        daemon.signal("TERM");
        let stopping = receive(&socket).await;
        assert_eq!(notify_field(&stopping, "STOPPING"), Some("1"));
        assert_eq!(daemon.wait_exit().await.code(), Some(0));
    })
    .await;
}

// ----- logs -----

const FIRST_PASSWORD: &str = "Fir5t-s3cret pass phrase";
const SECOND_PASSWORD: &str = "Sec0nd-s3cret pass phrase";
const WRONG_PASSWORD: &str = "Wr0ng-s3cret pass phrase";

/// One request of the cycle: its `X-Request-Id` and the audit event it must log, if any.
struct Step {
    id: &'static str,
    audit: Option<(&'static str, &'static str)>,
}

/// Runs create user, login, verify, refresh, refresh reuse, logout, revoke by token, admin
/// password change and logins with the old and new password against a daemon logging at
/// `debug` in `format`; then checks the whole stderr for secrets and request ids.
/// What users paste into the username field by mistake: a valid-looking name and one that is
/// not a username at all.
const PASTED_INTO_USERNAME: [&str; 2] = ["correct.horse.pasted.here", "Tr0ub4dor&3-pasted"];

async fn full_cycle_leaves_no_secret_in_the_log(format: &str) {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &config_with(&[("level", "\"debug\""), ("format", &format!("\"{format}\""))]),
    );
    let mut daemon = Daemon::start(dir.path()).await;
    let (public, admin, token) = (
        daemon.public.clone(),
        daemon.admin.clone(),
        daemon.admin_token.clone(),
    );
    let client = daemon.client.clone();
    let mut secrets: Vec<String> = vec![
        FIRST_PASSWORD.into(),
        SECOND_PASSWORD.into(),
        WRONG_PASSWORD.into(),
        token.clone(),
        "$argon2id$".into(),
    ];
    for key in std::fs::read_dir(dir.path().join("data/keys")).unwrap() {
        let text = std::fs::read_to_string(key.unwrap().path()).unwrap();
        secrets.push(text.trim().to_owned());
    }
    let mut steps = Vec::new();
    let mut step = |id: &'static str, audit: Option<(&'static str, &'static str)>| {
        steps.push(Step { id, audit });
        id
    };
    let login = |id: &'static str, password: &'static str| {
        client
            .post(format!("{public}/v1/login"))
            .header("X-Request-Id", id)
            .json(&json!({"username": "alice", "password": password}))
    };
    let refresh = |id: &'static str, refresh_token: &Value| {
        client
            .post(format!("{public}/v1/token/refresh"))
            .header("X-Request-Id", id)
            .json(&json!({"refresh_token": refresh_token}))
    };
    let verify = |id: &'static str, access_token: &Value| {
        client
            .get(format!("{public}/v1/verify"))
            .header("X-Request-Id", id)
            .bearer_auth(access_token.as_str().unwrap())
    };
    async fn answer(request: reqwest::RequestBuilder, expected: StatusCode) -> Value {
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, expected, "{body}");
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    let id = step("test-req-create", Some(("user_created", "")));
    let request = client
        .post(format!("{admin}/admin/v1/users"))
        .header("X-Request-Id", id)
        .bearer_auth(&token)
        .json(&json!({"username": "alice", "password": FIRST_PASSWORD}));
    answer(request, StatusCode::CREATED).await;
    let id = step("test-req-123", Some(("login", "success")));
    let first = answer(login(id, FIRST_PASSWORD), StatusCode::OK).await;
    let id = step("test-req-verify", None);
    answer(verify(id, &first["access_token"]), StatusCode::OK).await;
    let id = step("test-req-refresh", Some(("refresh", "success")));
    let rotated = answer(refresh(id, &first["refresh_token"]), StatusCode::OK).await;
    let id = step("test-req-reuse", Some(("refresh", "failure")));
    answer(
        refresh(id, &first["refresh_token"]),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let id = step("test-req-verify-revoked", None);
    answer(
        verify(id, &rotated["access_token"]),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let id = step("test-req-login-2", Some(("login", "success")));
    let second = answer(login(id, FIRST_PASSWORD), StatusCode::OK).await;
    let id = step("test-req-logout", Some(("logout", "success")));
    let request = client
        .post(format!("{public}/v1/logout"))
        .header("X-Request-Id", id)
        .bearer_auth(second["access_token"].as_str().unwrap());
    answer(request, StatusCode::NO_CONTENT).await;
    let id = step("test-req-login-3", Some(("login", "success")));
    let third = answer(login(id, FIRST_PASSWORD), StatusCode::OK).await;
    let id = step("test-req-revoke", Some(("revoked", "")));
    let request = client
        .post(format!("{admin}/admin/v1/revocations"))
        .header("X-Request-Id", id)
        .bearer_auth(&token)
        .json(&json!({"token": third["access_token"]}));
    answer(request, StatusCode::OK).await;
    let id = step("test-req-verify-by-token", None);
    answer(verify(id, &third["access_token"]), StatusCode::UNAUTHORIZED).await;
    let id = step("test-req-passwd", Some(("user_updated", "")));
    let request = client
        .patch(format!("{admin}/admin/v1/users/alice"))
        .header("X-Request-Id", id)
        .bearer_auth(&token)
        .json(&json!({"password": SECOND_PASSWORD}));
    answer(request, StatusCode::OK).await;
    let id = step("test-req-old-password", Some(("login", "failure")));
    answer(login(id, FIRST_PASSWORD), StatusCode::UNAUTHORIZED).await;
    let id = step("test-req-wrong-password", Some(("login", "failure")));
    answer(login(id, WRONG_PASSWORD), StatusCode::UNAUTHORIZED).await;
    // Passwords typed into the username field: only existing accounts are named.
    for pasted in PASTED_INTO_USERNAME {
        let id = step("test-req-pasted-username", Some(("login", "failure")));
        let request = client
            .post(format!("{public}/v1/login"))
            .header("X-Request-Id", id)
            .json(&json!({"username": pasted, "password": WRONG_PASSWORD}));
        answer(request, StatusCode::UNAUTHORIZED).await;
        secrets.push(pasted.to_lowercase());
        secrets.push((*pasted).to_owned());
    }
    let id = step("test-req-login-4", Some(("login", "success")));
    let fourth = answer(login(id, SECOND_PASSWORD), StatusCode::OK).await;
    let id = step("test-req-verify-4", None);
    answer(verify(id, &fourth["access_token"]), StatusCode::OK).await;
    for answer in [&first, &rotated, &second, &third, &fourth] {
        for field in ["access_token", "refresh_token"] {
            let secret = answer[field].as_str().unwrap().to_owned();
            // The signature alone is enough to matter.
            if let Some(signature) = secret.rsplit('.').next().filter(|s| s.len() >= 20) {
                secrets.push(signature.to_owned());
            }
            secrets.push(secret);
        }
    }

    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().await.code(), Some(0));
    let lines: Vec<String> = daemon
        .all_stderr()
        .await
        .iter()
        .map(|l| strip_ansi(l))
        .collect();
    let log = lines.join("\n");

    for secret in &secrets {
        assert!(!secret.is_empty());
        if let Some(line) = lines.iter().find(|l| l.contains(secret.as_str())) {
            panic!(
                "a secret ({}…) is in the {format} log:\n{line}",
                &secret[..6]
            );
        }
    }
    for Step { id, audit } in &steps {
        assert!(
            lines.iter().any(|l| l.contains(id)),
            "no log line carries X-Request-Id {id}:\n{log}"
        );
        if let Some((event, outcome)) = audit {
            assert!(
                lines.iter().any(|l| l.contains(id)
                    && l.contains("audit")
                    && l.contains(event)
                    && l.contains(outcome)),
                "no audit line {event} {outcome} with X-Request-Id {id}:\n{log}"
            );
        }
    }
    let wrong = lines
        .iter()
        .find(|l| l.contains("test-req-wrong-password") && l.contains("audit"))
        .unwrap();
    assert!(
        wrong.contains("alice"),
        "an existing account is named: {wrong}"
    );
    let audit_lines: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"target\":\"audit\"") || l.contains(" audit: "))
        .collect();
    assert!(audit_lines.len() >= 10, "audit lines:\n{log}");
    for line in audit_lines {
        assert!(
            line.contains("test-req-"),
            "audit line without its request id: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_in_json_logs_after_a_full_cycle_and_each_line_carries_its_request_id() {
    within_timeout(full_cycle_leaves_no_secret_in_the_log("json")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_in_text_logs_after_a_full_cycle_and_each_line_carries_its_request_id() {
    within_timeout(full_cycle_leaves_no_secret_in_the_log("text")).await;
}

/// journald and log shippers store what they read: terminal colour codes in a text log
/// that goes to a pipe or the journal are noise (`\x1b[2m…`) in every line.
#[tokio::test(flavor = "multi_thread")]
async fn text_logs_to_a_pipe_carry_no_terminal_colour_codes() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_with(&[("format", "\"text\"")]));
        let mut daemon = Daemon::start(dir.path()).await;
        daemon.signal("TERM");
        assert_eq!(daemon.wait_exit().await.code(), Some(0));
        let lines = daemon.all_stderr().await;

        let coloured: Vec<&String> = lines.iter().filter(|l| l.contains('\u{1b}')).collect();
        assert!(
            coloured.is_empty(),
            "{} of {} text log lines carry ANSI escape codes, e.g. {:?}",
            coloured.len(),
            lines.len(),
            coloured[0]
        );
    })
    .await;
}

// ----- socket activation -----

/// Two free loopback ports, found by binding port 0 and letting go. Another process may
/// take one before `systemd-socket-activate` binds it (the caller retries).
fn two_free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// `authd serve` under `systemd-socket-activate`, with `public_socket` and `admin_socket`
/// passed as `public` and `admin`; ready and serving. `None` when the tool is missing.
/// The tool execs authd on the first connection, so a `/healthz` request sent to the
/// public socket before authd runs is served from the kernel's queue: that is checked too.
async fn socket_activated(dir: &Path, public_ip: &str, admin_ip: &str) -> Option<Daemon> {
    let Some(activate) = tool("systemd-socket-activate") else {
        eprintln!("note: systemd-socket-activate is missing: socket activation not tested");
        return None;
    };
    for attempt in 1..=3 {
        let (public_port, admin_port) = two_free_ports();
        let public = format!("{public_ip}:{public_port}");
        let admin = format!("{admin_ip}:{admin_port}");
        let mut command = Command::new(&activate);
        command
            .args(["-l", &public, "-l", &admin, "--fdname=public:admin"])
            .arg(env!("CARGO_BIN_EXE_authd"))
            .args(["serve", "--config"])
            .arg(dir.join("config.toml"));
        Daemon::configure(&mut command, dir);
        let mut daemon = Daemon::spawn(command);
        let bound = format!("Listening on {admin}");
        if let Err(err) = daemon.try_wait_for_line(|l| l.contains(&bound)).await {
            eprintln!("attempt {attempt}: systemd-socket-activate failed: {err}");
            continue;
        }
        let health = tokio::spawn(
            reqwest::Client::new()
                .get(format!("http://127.0.0.1:{public_port}/healthz"))
                .send(),
        );
        daemon.wait_until_ready(dir).await;
        let health = health.await.unwrap().unwrap();
        assert_eq!(health.status(), StatusCode::OK, "queued /healthz");
        let port = |url: &str| url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        assert_eq!(port(&daemon.public), public_port, "public listener");
        assert_eq!(port(&daemon.admin), admin_port, "admin listener");
        // Talk to them through loopback, whatever address they are bound to.
        daemon.public = format!("http://127.0.0.1:{public_port}");
        daemon.admin = format!("http://127.0.0.1:{admin_port}");
        return Some(daemon);
    }
    panic!("systemd-socket-activate failed three times");
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_activation_serves_on_the_passed_sockets_instead_of_binding() {
    within_timeout(async {
        // TEST-NET-2: not an address of this host, so binding it fails.
        let unbindable = "198.51.100.1";
        assert!(
            std::net::TcpListener::bind((unbindable, 0)).is_err(),
            "{unbindable} is an address of this host"
        );
        let dir = tempfile::tempdir().unwrap();
        write_config(
            dir.path(),
            &config_with(&[
                ("listen", &format!("\"{unbindable}:8080\"")),
                ("admin_listen", &format!("\"{unbindable}:8081\"")),
            ]),
        );
        let Some(mut daemon) = socket_activated(dir.path(), "127.0.0.1", "127.0.0.1").await else {
            return;
        };

        let health = daemon
            .public_request(Method::GET, "/healthz")
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        let users = daemon.list_users("").await;
        assert_eq!(users.status(), StatusCode::OK);
        daemon.add_user("alice", &[]).await;
        daemon.login("alice").await;
        daemon.signal("TERM");
        assert_eq!(daemon.wait_exit().await.code(), Some(0));
    })
    .await;
}

/// `/metrics` needs no credential only while the admin listener is on loopback. With
/// socket activation the listener is the passed socket (`ListenStream=8081` means every
/// address), not `server.admin_listen`: the passed socket's address must decide.
#[tokio::test(flavor = "multi_thread")]
async fn socket_activated_admin_socket_on_every_address_keeps_metrics_behind_the_credential() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        // The shipped default: loopback; the passed socket overrides it.
        write_config(
            dir.path(),
            &config_with(&[("admin_listen", "\"127.0.0.1:8081\"")]),
        );
        let Some(daemon) = socket_activated(dir.path(), "127.0.0.1", "0.0.0.0").await else {
            return;
        };

        let anonymous = daemon
            .client
            .get(format!("{}/metrics", daemon.admin))
            .send()
            .await
            .unwrap();
        let with_token = daemon
            .admin_request(Method::GET, "/metrics")
            .send()
            .await
            .unwrap();

        assert_eq!(with_token.status(), StatusCode::OK);
        assert_eq!(
            anonymous.status(),
            StatusCode::UNAUTHORIZED,
            "/metrics answers anyone on an admin socket bound to 0.0.0.0"
        );
    })
    .await;
}

// ----- unit files -----

/// The shipped unit files in a fresh folder, `/usr/local/bin/authd` replaced by the built
/// binary (verify needs ExecStart's binary to exist).
fn unit_copies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    for unit in ["authd.service", "authd.socket", "authd-admin.socket"] {
        let text = std::fs::read_to_string(shipped.join(unit)).unwrap();
        let text = text.replace("/usr/local/bin/authd", env!("CARGO_BIN_EXE_authd"));
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    dir
}

/// Runs `systemd-analyze ARGS` in `dir`: (exit status, stdout, stderr).
fn systemd_analyze(analyze: &Path, dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(analyze)
        .args(args)
        .current_dir(dir)
        .env("SYSTEMD_LOG_COLOR", "0")
        .env("SYSTEMD_PAGER", "")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn systemd_analyze_verify_finds_nothing_wrong_with_the_shipped_units() {
    let Some(analyze) = tool("systemd-analyze") else {
        eprintln!("note: systemd-analyze is missing: the unit files are not verified");
        return;
    };
    let dir = unit_copies();
    for unit in ["authd.service", "authd.socket", "authd-admin.socket"] {
        let path = dir.path().join(unit);
        let (ok, stdout, stderr) = systemd_analyze(
            &analyze,
            dir.path(),
            &["verify", "--man=no", path.to_str().unwrap()],
        );
        // Complaints about the host's own units are not ours.
        let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("authd")).collect();
        for line in stderr.lines().filter(|l| !l.contains("authd")) {
            eprintln!("note: systemd-analyze verify {unit}: {line}");
        }
        assert!(
            ok,
            "systemd-analyze verify {unit} failed:\n{stdout}{stderr}"
        );
        assert!(
            ours.is_empty(),
            "systemd-analyze verify {unit} warns:\n{}",
            ours.join("\n")
        );
    }
}

#[test]
fn systemd_analyze_security_rates_the_service_2_0_or_lower() {
    let Some(analyze) = tool("systemd-analyze") else {
        eprintln!("note: systemd-analyze is missing: the exposure level is not checked");
        return;
    };
    let dir = unit_copies();
    let path = dir.path().join("authd.service");
    let (_, stdout, stderr) = systemd_analyze(
        &analyze,
        dir.path(),
        &["security", "--offline=yes", path.to_str().unwrap()],
    );

    let level: f64 = stdout
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for authd.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{stdout}{stderr}"));
    assert!(level <= 2.0, "exposure {level} > 2.0:\n{stdout}");
}

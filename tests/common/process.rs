//! [`Daemon`]: the real `authd serve` binary (or a wrapper that execs it) as a child
//! process, for what only a process shows: signals, `kill -9`, sd_notify, socket
//! activation, its log. Its ports are read from its `listening` log line (JSON or text), its
//! stderr is kept for assertions and failure messages, and it is killed (SIGKILL) when the
//! test ends, whatever happens. It is spoken to through [`Api`].

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::io::BufRead as _;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::client::Api;
use super::config::set_in_section;

/// How long any one test may take before it fails (and its daemon is killed).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the daemon may take to start, stop, or act on a signal.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// How often bounded loops poll for a condition.
pub const POLL: Duration = Duration::from_millis(10);

/// `authd ARGS --config CONFIG` run to its end in `dir` (set up by
/// [`Daemon::configure`]), its stdout captured too.
pub fn run_cli(dir: &Path, args: &[&str], config: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_authd"));
    command.args(args).arg("--config").arg(config);
    Daemon::configure(&mut command, dir);
    command.stdout(Stdio::piped());
    command.output().unwrap()
}

/// Spawns `command` (a `serve`), expected to refuse to start: waits for its exit, asserts
/// a failure, and returns every stderr line.
pub async fn refused_start(command: Command, what: &str) -> String {
    let mut daemon = Daemon::spawn(command);
    let status = daemon.wait_exit().await;
    let stderr = daemon.all_stderr().await.join("\n");
    assert!(!status.success(), "started {what}:\n{stderr}");
    stderr
}

/// A finished command's exit code, stdout and stderr, for failure messages.
pub fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a test body under [`TEST_TIMEOUT`]; dropping the body kills its daemons.
pub async fn within_timeout(test: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_TIMEOUT, test).await.is_err() {
        panic!("test did not finish within {TEST_TIMEOUT:?}");
    }
}

/// Removes ANSI escape sequences (`ESC [ … letter`) from a log line.
pub fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            plain.push(c);
        } else if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    plain
}

/// The `message` of a JSON log line.
pub fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or("")
}

/// The public and admin addresses of a `listening` log line, JSON or text.
fn listening_addresses(line: &str) -> Option<(String, String)> {
    if let Ok(parsed) = serde_json::from_str::<Value>(line) {
        if message(&parsed) != "listening" {
            return None;
        }
        let field = |name: &str| parsed["fields"][name].as_str().map(str::to_owned);
        return Some((field("public")?, field("admin")?));
    }
    let plain = strip_ansi(line);
    if !plain.contains(" listening ") {
        return None;
    }
    let field = |name: &str| {
        let prefix = format!("{name}=");
        plain
            .split_whitespace()
            .find_map(|word| word.strip_prefix(&prefix))
            .map(|value| value.trim_matches('"').to_owned())
    };
    Some((field("public")?, field("admin")?))
}

/// A running child process (`authd serve`, or a wrapper that execs it); killed (SIGKILL)
/// when dropped.
pub struct Daemon {
    pub child: Child,
    /// Its listeners and admin token: empty until it is ready.
    api: Api,
    /// Lines of the child's stderr, forwarded by a reader thread.
    stderr: mpsc::UnboundedReceiver<String>,
    /// Every stderr line received so far (for assertions and failure messages).
    pub seen: Vec<String>,
}

impl Deref for Daemon {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Api {
        &mut self.api
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// `authd serve --config DIR/config.toml`, set up by [`Daemon::configure`].
    pub fn command(dir: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_authd"));
        command
            .arg("serve")
            .arg("--config")
            .arg(dir.join("config.toml"));
        Daemon::configure(&mut command, dir);
        command
    }

    /// Runs `command` in `dir` with stderr captured, and without the variables of the
    /// test's own environment that would reconfigure the daemon behind the test's back.
    pub fn configure(command: &mut Command, dir: &Path) {
        command
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            let systemd = [
                "NOTIFY_SOCKET",
                "WATCHDOG_USEC",
                "WATCHDOG_PID",
                "LISTEN_FDS",
                "LISTEN_PID",
                "LISTEN_FDNAMES",
            ];
            if key.starts_with("AUTHD__") || key == "AUTHD_CONFIG" || systemd.contains(&key) {
                command.env_remove(key);
            }
        }
    }

    /// Starts the daemon on the config file in `dir` and waits until it is ready for
    /// requests and signals.
    pub async fn start(dir: &Path) -> Daemon {
        let mut daemon = Daemon::spawn(Daemon::command(dir));
        daemon.wait_until_ready(dir).await;
        daemon
    }

    /// Spawns `command` (see [`Daemon::configure`]) without waiting for anything.
    pub fn spawn(mut command: Command) -> Daemon {
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
        Daemon {
            child,
            api: Api::new(String::new(), String::new(), String::new()),
            stderr: lines_rx,
            seen: Vec::new(),
        }
    }

    /// Waits for the `listening` and `authd is ready` log lines, learning the ports and
    /// the admin token (from `DIR/data/admin.token`).
    pub async fn wait_until_ready(&mut self, dir: &Path) {
        if let Err(err) = self.try_wait_until_ready(dir).await {
            panic!("{err}");
        }
    }

    /// As [`Daemon::wait_until_ready`], with an error instead of a panic.
    pub async fn try_wait_until_ready(&mut self, dir: &Path) -> Result<(), String> {
        let listening = self
            .try_wait_for_line(|l| listening_addresses(l).is_some())
            .await?;
        let (public, admin) = listening_addresses(&listening).unwrap();
        self.api.public = format!("http://{public}");
        self.api.admin = format!("http://{admin}");
        // Logged once the signal handlers are installed: signals are safe from here on.
        self.try_wait_for_line(|l| l.contains("authd is ready"))
            .await?;
        self.api.admin_token = std::fs::read_to_string(dir.join("data/admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        Ok(())
    }

    /// Waits for the `listening` log line only (an etcd-backed daemon listens before its
    /// store is loaded, and says `authd is ready` only then), learning the ports, and the
    /// admin token when `DIR/data/admin.token` exists.
    pub async fn wait_until_listening(&mut self, dir: &Path) {
        let listening = self
            .wait_for_line(|l| listening_addresses(l).is_some())
            .await;
        let (public, admin) = listening_addresses(&listening).unwrap();
        self.api.public = format!("http://{public}");
        self.api.admin = format!("http://{admin}");
        if let Ok(token) = std::fs::read_to_string(dir.join("data/admin.token")) {
            self.api.admin_token = token.trim().to_owned();
        }
    }

    /// `127.0.0.1:PORT` of the public listener.
    pub fn public_addr(&self) -> &str {
        self.api.public.trim_start_matches("http://")
    }

    /// The next stderr line that `matches`; an error after [`STEP_TIMEOUT`] or when the
    /// child's stderr closes first.
    pub async fn try_wait_for_line(
        &mut self,
        matches: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.stderr.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => {
                    return Err(format!(
                        "the process ended; its stderr:\n{}",
                        self.seen.join("\n")
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "no such log line; stderr so far:\n{}",
                        self.seen.join("\n")
                    ));
                }
            };
            self.seen.push(line.clone());
            if matches(&line) {
                return Ok(line);
            }
        }
    }

    /// The next stderr line that `matches`; fails after [`STEP_TIMEOUT`] or when the
    /// child's stderr closes first.
    pub async fn wait_for_line(&mut self, matches: impl Fn(&str) -> bool) -> String {
        match self.try_wait_for_line(matches).await {
            Ok(line) => line,
            Err(err) => panic!("{err}"),
        }
    }

    /// The next JSON log line that `matches`.
    pub async fn wait_for_log(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        let line = self
            .wait_for_line(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| matches(&v)))
            .await;
        serde_json::from_str(&line).unwrap()
    }

    /// Every stderr line, up to the end of the child's stderr (call it once the process
    /// has exited).
    pub async fn all_stderr(&mut self) -> Vec<String> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.stderr.recv()).await {
                Ok(Some(line)) => self.seen.push(line),
                Ok(None) => return self.seen.clone(),
                Err(_) => panic!("stderr did not close; so far:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Every stderr line received so far, without waiting (the process may still run):
    /// for failure messages.
    pub fn stderr_so_far(&mut self) -> Vec<String> {
        while let Ok(line) = self.stderr.try_recv() {
            self.seen.push(line);
        }
        self.seen.clone()
    }

    /// Sends a signal (`TERM`, `HUP`, …) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// `TERM`, then (bounded by [`STEP_TIMEOUT`]) a clean exit.
    pub async fn stop(&mut self) {
        self.signal("TERM");
        let status = self.wait_exit().await;
        assert!(status.success(), "the exit after TERM: {status}");
    }

    /// `authd backup --out OUT` of this daemon, run to its end with `dir`'s configuration
    /// (written as `dir/cli.toml` with its `admin_listen` made the daemon's real port: the
    /// CLI finds the admin listener in its config file).
    pub fn backup_cli(&self, dir: &Path, out: &Path) -> Output {
        let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
        let admin = self.admin.trim_start_matches("http://");
        let cli = set_in_section(&config, "server", "admin_listen", &format!("\"{admin}\""));
        let file = dir.join("cli.toml");
        std::fs::write(&file, cli).unwrap();
        run_cli(dir, &["backup", "--out", out.to_str().unwrap()], &file)
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill_hard(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits (bounded by [`STEP_TIMEOUT`]) for the process to exit.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit; stderr so far:\n{}",
                self.seen.join("\n")
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

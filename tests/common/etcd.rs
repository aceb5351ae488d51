//! [`EtcdCluster`]: real etcd members (the installed `etcd` 3.4) for the tests of cluster
//! mode, each member on its own loopback address so that no test probes for free ports.
//!
//! Member `i` of net `N` listens on `127.0.N.(i+1)`: clients on port 2379, peers on 2380;
//! its data lives in a temporary folder. The nets in use, one per etcd a test may damage:
//!
//! - `127.0.1.x`: the one member shared by the whole `api_etcd` binary ([`shared_member`]).
//! - `127.0.10.x` … `127.0.19.x`: the `cluster` binary, one net per test (see its docs).
//! - `127.0.20.x`: the one member of the `store_etcd` binary (the backend contract).
//! - `127.0.40.x`: the one member of the `backup` binary.
//! - `127.0.41.x`, `127.0.42.x`: the `cluster` binary's second-factor tests (`mfa.rs`).
//!
//! A member is started through a small `sh` wrapper that runs etcd in the background and
//! kills it as soon as the test process is gone: a test that panics or is killed leaves no
//! etcd behind (`unsafe`, hence `prctl(PR_SET_PDEATHSIG)`, is not available). Dropping the
//! cluster kills every member.

// Tests wait on real time (deadlines for etcd's start), as a client would.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods
)]

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a member may take to become healthy after a (re)start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(20);

/// Starts etcd in the background, prints its pid, and kills it once the test process
/// (`$1`) is gone; returns when etcd exits. The rest of the arguments are etcd's.
const WRAPPER: &str = r#"
test_pid="$1"; log="$2"; shift 2
etcd "$@" >>"$log" 2>&1 &
etcd_pid=$!
echo "$etcd_pid"
( while kill -0 "$test_pid" 2>/dev/null; do sleep 1; done; kill -9 "$etcd_pid" 2>/dev/null ) &
guard=$!
wait "$etcd_pid"
kill "$guard" 2>/dev/null
"#;

/// One running member: the wrapper and the etcd process it started.
struct Member {
    wrapper: Child,
    pid: u32,
}

impl Member {
    fn kill(mut self) {
        signal("KILL", self.pid);
        let _ = self.wrapper.kill();
        let _ = self.wrapper.wait();
    }
}

/// `kill -NAME PID`; a process already gone is not an error here.
fn signal(name: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// `size` etcd members forming one cluster on net `127.0.{net}.x`.
pub struct EtcdCluster {
    net: u8,
    size: usize,
    token: String,
    dir: tempfile::TempDir,
    members: Vec<Option<Member>>,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in self.members.iter_mut() {
            if let Some(member) = member.take() {
                member.kill();
            }
        }
    }
}

impl EtcdCluster {
    /// Whether `etcd` and `etcdctl` are on the PATH (tests needing etcd skip without).
    pub fn installed() -> bool {
        // `etcd --version`, but `etcdctl version`.
        [("etcd", "--version"), ("etcdctl", "version")]
            .iter()
            .all(|(tool, flag)| {
                Command::new(tool)
                    .arg(flag)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success())
            })
    }

    /// Starts `size` members on `127.0.{net}.1..=size` and waits until each is healthy.
    pub fn start(net: u8, size: usize) -> EtcdCluster {
        let token = format!(
            "authd-test-{net}-{}-{}",
            std::process::id(),
            super::random_suffix()
        );
        let mut cluster = EtcdCluster {
            net,
            size,
            token,
            dir: tempfile::tempdir().unwrap(),
            members: (0..size).map(|_| None).collect(),
        };
        let all: Vec<usize> = (0..size).collect();
        cluster.launch(&all, "new");
        cluster
    }

    /// Starts the member without waiting for it (for a daemon that must start before its
    /// etcd): [`EtcdCluster::start`] without the wait, one member.
    pub fn start_later(net: u8) -> EtcdCluster {
        let mut cluster = EtcdCluster {
            net,
            size: 1,
            token: format!("authd-test-{net}-{}", std::process::id()),
            dir: tempfile::tempdir().unwrap(),
            members: vec![None],
        };
        cluster.token.push_str(&super::random_suffix());
        cluster
    }

    /// Starts the members of a cluster made by [`EtcdCluster::start_later`].
    pub fn start_now(&mut self) {
        let all: Vec<usize> = (0..self.size).collect();
        self.launch(&all, "new");
    }

    /// Member `i`'s address (no port).
    pub fn host(&self, i: usize) -> String {
        format!("127.0.{}.{}", self.net, i + 1)
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://{}:2379", self.host(i))
    }

    /// Every member's client URL, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.size).map(|i| self.endpoint(i)).collect()
    }

    /// The endpoints as a TOML array.
    pub fn endpoints_toml(&self) -> String {
        let quoted: Vec<String> = self
            .endpoints()
            .iter()
            .map(|endpoint| format!("\"{endpoint}\""))
            .collect();
        format!("[{}]", quoted.join(", "))
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}"))
    }

    /// The wrapper's log of member `i` (etcd's stderr), for failure messages.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("m{i}.log"))).unwrap_or_default()
    }

    /// Spawns `which` members (`state`: `new` or `existing`) and waits until each is healthy.
    fn launch(&mut self, which: &[usize], state: &str) {
        let initial_cluster: Vec<String> = (0..self.size)
            .map(|i| format!("m{i}=http://{}:2380", self.host(i)))
            .collect();
        let initial_cluster = initial_cluster.join(",");
        for &i in which {
            assert!(self.members[i].is_none(), "etcd member {i} is running");
            let host = self.host(i);
            // Another etcd (a test binary's leftover) must not pass for this member.
            let taken = format!("{host}:2379").parse().unwrap();
            assert!(
                TcpStream::connect_timeout(&taken, Duration::from_millis(200)).is_err(),
                "something already listens on {host}:2379"
            );
            let log = self.dir.path().join(format!("m{i}.log"));
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(WRAPPER)
                .arg("sh")
                .arg(std::process::id().to_string())
                .arg(&log)
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(self.data_dir(i))
                .args(["--listen-client-urls", &format!("http://{host}:2379")])
                .args(["--advertise-client-urls", &format!("http://{host}:2379")])
                .args(["--listen-peer-urls", &format!("http://{host}:2380")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://{host}:2380"),
                ])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-token", &self.token])
                .args(["--initial-cluster-state", state])
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .args(["--logger", "zap", "--log-level", "error"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("sh starts");
            let mut first = String::new();
            let stdout = child.stdout.take().unwrap();
            std::io::BufReader::new(stdout)
                .read_line(&mut first)
                .unwrap();
            let pid = first
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("the etcd wrapper printed {first:?}, not a pid"));
            self.members[i] = Some(Member {
                wrapper: child,
                pid,
            });
        }
        for &i in which {
            self.wait_healthy(i);
        }
    }

    /// Polls member `i`'s `/health` until it answers `{"health":"true"}`; fails when the
    /// member exits first (e.g. its address is taken: another etcd must not pass for it).
    pub fn wait_healthy(&mut self, i: usize) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.healthy(i) {
            if let Some(member) = self.members[i].as_mut()
                && let Ok(Some(status)) = member.wrapper.try_wait()
            {
                panic!(
                    "etcd member {i} exited ({status}); its log:\n{}",
                    self.log(i)
                );
            }
            assert!(
                Instant::now() < deadline,
                "etcd member {i} ({}) not healthy within {START_TIMEOUT:?}; its log:\n{}",
                self.endpoint(i),
                self.log(i)
            );
            std::thread::sleep(POLL);
        }
    }

    /// Whether member `i` answers `GET /health` with `"health":"true"` (it has a leader).
    pub fn healthy(&self, i: usize) -> bool {
        let attempt = || -> std::io::Result<String> {
            let address = format!("{}:2379", self.host(i)).parse().unwrap();
            let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(
                format!(
                    "GET /health HTTP/1.0\r\nHost: {}:2379\r\n\r\n",
                    self.host(i)
                )
                .as_bytes(),
            )?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        };
        attempt().is_ok_and(|answer| answer.replace(' ', "").contains("\"health\":\"true\""))
    }

    /// SIGKILL member `i` (its data stays for [`EtcdCluster::restart`]).
    pub fn kill(&mut self, i: usize) {
        if let Some(member) = self.members[i].take() {
            member.kill();
        }
    }

    /// SIGSTOP member `i`.
    pub fn pause(&self, i: usize) {
        signal("STOP", self.running(i).pid);
    }

    /// SIGCONT member `i`.
    pub fn resume(&self, i: usize) {
        signal("CONT", self.running(i).pid);
    }

    fn running(&self, i: usize) -> &Member {
        self.members[i]
            .as_ref()
            .unwrap_or_else(|| panic!("etcd member {i} is not running"))
    }

    /// Starts killed member `i` again on its data and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.restart_all(&[i]);
    }

    /// Starts killed members again on their data and waits until each is healthy (after a
    /// lost quorum no single one becomes healthy alone).
    pub fn restart_all(&mut self, which: &[usize]) {
        self.launch(which, "existing");
    }

    /// `etcdctl endpoint status` of running member `i`, when it answers.
    fn status(&self, i: usize) -> Option<Value> {
        self.members[i].as_ref()?;
        let output = Command::new("etcdctl")
            .args(["--endpoints", &self.endpoint(i)])
            .args(["--dial-timeout", "1s", "--command-timeout", "2s"])
            .args(["endpoint", "status", "-w", "json"])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        let parsed: Value = serde_json::from_slice(&output.stdout).ok()?;
        Some(parsed.get(0)?.get("Status")?.clone())
    }

    /// The index of the member that is the Raft leader, as the running members see it.
    pub fn leader(&self) -> Option<usize> {
        (0..self.size).find(|&i| {
            self.status(i).is_some_and(|status| {
                status["leader"].as_u64().is_some()
                    && status["leader"].as_u64() == status["header"]["member_id"].as_u64()
            })
        })
    }

    /// The cluster's current revision, from the first running member that answers.
    pub fn revision(&self) -> i64 {
        (0..self.size)
            .find_map(|i| self.status(i)?["header"]["revision"].as_i64())
            .expect("a running etcd member reports its revision")
    }

    /// Compacts to the current revision (physically), so that every older revision is
    /// gone; returns that revision.
    pub fn compact_latest(&self) -> i64 {
        let revision = self.revision();
        let endpoints = self.endpoints().join(",");
        let output = Command::new("etcdctl")
            .args(["--endpoints", &endpoints])
            .args(["compact", &revision.to_string(), "--physical"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "etcdctl compact {revision}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        revision
    }

    /// `etcdctl get --prefix KEY --keys-only`: the keys under `prefix` (for checks that
    /// data reached etcd).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let endpoints = self.endpoints().join(",");
        let output = Command::new("etcdctl")
            .args(["--endpoints", &endpoints])
            .args(["get", "--prefix", "--keys-only", prefix])
            .output()
            .unwrap();
        assert!(output.status.success(), "etcdctl get {prefix}");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// The one etcd member of net `127.0.1.x` that every test of a binary shares (each test
/// under its own prefix); started on first use, killed with the test process (the wrapper).
pub fn shared_member() -> &'static EtcdCluster {
    static SHARED: OnceLock<EtcdCluster> = OnceLock::new();
    SHARED.get_or_init(|| EtcdCluster::start(1, 1))
}

//! [`Deployment`]: 3 etcd members and 3 `authd serve` processes (the real binary) sharing
//! them, the way README's "Running a cluster" sets one up: the first instance creates the
//! secrets (keys, admin token), the others get copies; plus the polling helpers every
//! cluster test uses.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use crate::common::{Api, Daemon, EtcdCluster, POLL, config_with, etcd_config, percent_encode};

/// The cluster tests run one at a time: each starts 3 etcd members and 3 daemons, and
/// their time limits (1 s propagation, staleness) must not measure the machine's load.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Returns from the test, with a note, where etcd is not installed.
#[macro_export]
macro_rules! need_etcd {
    () => {
        if !$crate::common::EtcdCluster::installed() {
            eprintln!("etcd not installed: skipped");
            return;
        }
    };
}

/// The shipped `config.toml` as every process test changes it, on `etcd`, with `[etcd]`
/// `settings` (key, TOML value) over short test timeouts.
pub fn cluster_config(etcd: &EtcdCluster, settings: &[(&str, &str)]) -> String {
    let endpoints = etcd.endpoints_toml();
    let mut keys = vec![
        ("endpoints", endpoints.as_str()),
        ("prefix", "\"/authd/\""),
        ("dial_timeout", "\"1s\""),
    ];
    keys.extend_from_slice(settings);
    etcd_config(&config_with(&[]), &keys)
}

/// Writes `text` as `dir/config.toml` (not `common::write_config`: that one follows
/// `AUTHD_TEST_STORE`).
pub fn write_cluster_config(dir: &Path, text: &str) {
    std::fs::write(dir.join("config.toml"), text).unwrap();
}

/// Copies what an operator copies from the first instance: the key files — the signing
/// keys and the second factor's `mfa.key` — and, when `admin_token`, the token files —
/// admin and feed — (modes as authd makes them: folders 0700, files 0600).
pub fn copy_secrets(from: &Path, to: &Path, admin_token: bool) {
    use std::os::unix::fs::PermissionsExt as _;
    let private_dir = |dir: &Path| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    };
    let private_copy = |from: &Path, to: &Path| {
        std::fs::copy(from, to).unwrap();
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    private_dir(&to.join("data"));
    private_dir(&to.join("data/keys"));
    for entry in std::fs::read_dir(from.join("data/keys")).unwrap() {
        let entry = entry.unwrap();
        private_copy(&entry.path(), &to.join("data/keys").join(entry.file_name()));
    }
    private_copy(&from.join("data/mfa.key"), &to.join("data/mfa.key"));
    if admin_token {
        private_copy(&from.join("data/admin.token"), &to.join("data/admin.token"));
        private_copy(&from.join("data/feed.token"), &to.join("data/feed.token"));
    }
}

/// How long an instance may take to be ready once it has loaded its snapshot.
const STARTUP: Duration = Duration::from_secs(10);

/// One authd instance: its folder and, while it runs, its process.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub daemon: Option<Daemon>,
    /// When its process was last started.
    pub started: Instant,
}

/// 3 etcd members on `127.0.{net}.1..=3` and 3 authd instances on them.
pub struct Deployment {
    pub etcd: EtcdCluster,
    pub nodes: Vec<Node>,
}

impl Drop for Deployment {
    /// A failed test shows what each instance logged.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if let Some(daemon) = node.daemon.as_mut() {
                eprintln!("----- authd {i} stderr -----");
                for line in daemon.stderr_so_far() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

impl Deployment {
    /// Starts etcd, then the first instance (which creates the secrets and the deployment),
    /// then two more with copies of its secrets; on return each has loaded its snapshot and
    /// answers `/readyz` `200` (its view confirmed current), as a load balancer would wait.
    pub async fn start(net: u8, settings: &[(&str, &str)]) -> Deployment {
        Deployment::start_configured(net, settings, |config| config).await
    }

    /// [`Deployment::start`] with every instance's configuration text passed through
    /// `edit` (for settings outside `[etcd]`).
    pub async fn start_configured(
        net: u8,
        settings: &[(&str, &str)],
        edit: impl Fn(String) -> String,
    ) -> Deployment {
        let etcd = EtcdCluster::start(net, 3);
        let config = edit(cluster_config(&etcd, settings));
        let mut nodes: Vec<Node> = Vec::new();
        for i in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            write_cluster_config(dir.path(), &config);
            if i > 0 {
                copy_secrets(nodes[0].dir.path(), dir.path(), true);
            }
            let started = Instant::now();
            let daemon = Daemon::start(dir.path()).await;
            nodes.push(Node {
                dir,
                daemon: Some(daemon),
                started,
            });
        }
        let deployment = Deployment { etcd, nodes };
        for i in 0..3 {
            deployment.wait_ready(i).await;
        }
        deployment
    }

    /// Polls instance `i`'s `/readyz` until `200`.
    pub async fn wait_ready(&self, i: usize) {
        within(STARTUP, &format!("/readyz 200 on authd {i}"), async || {
            public_status(self.node(i), "/readyz").await == Some(StatusCode::OK)
        })
        .await;
    }

    /// Instance `i`, which must be running.
    pub fn node(&self, i: usize) -> &Daemon {
        self.nodes[i]
            .daemon
            .as_ref()
            .unwrap_or_else(|| panic!("authd {i} is not running"))
    }

    /// `kill -9` instance `i`.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(daemon) = self.nodes[i].daemon.take() {
            daemon.kill_hard();
        }
    }

    /// Starts instance `i` again in its folder (same node id, same secrets) and waits until
    /// it has loaded its snapshot.
    pub async fn restart_node(&mut self, i: usize) {
        assert!(self.nodes[i].daemon.is_none(), "authd {i} is running");
        self.nodes[i].started = Instant::now();
        let daemon = Daemon::start(self.nodes[i].dir.path()).await;
        self.nodes[i].daemon = Some(daemon);
        self.wait_ready(i).await;
    }

    /// Restarts instance `i` on its own `[etcd]` `settings` (e.g. endpoints: one member).
    pub async fn reconfigure_node(&mut self, i: usize, settings: &[(&str, &str)]) {
        self.kill_node(i);
        write_cluster_config(
            self.nodes[i].dir.path(),
            &cluster_config(&self.etcd, settings),
        );
        self.restart_node(i).await;
    }

    /// A second [`Api`] on instance `i` (for tasks running beside the test).
    pub fn api(&self, i: usize) -> Api {
        let node = self.node(i);
        Api::new(
            node.public.clone(),
            node.admin.clone(),
            node.admin_token.clone(),
        )
    }
}

/// Polls `check` until it holds; fails naming `what` after `limit`. Returns how long it
/// took.
pub async fn within(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// The status of `GET /v1/verify` with `token` on `api`.
pub async fn verify_status(api: &Api, token: &str) -> StatusCode {
    api.verify(token).await.status()
}

/// The status of `GET path` on the public listener, or `None` when it does not answer.
pub async fn public_status(api: &Api, path: &str) -> Option<StatusCode> {
    api.public_request(Method::GET, path)
        .send()
        .await
        .ok()
        .map(|response| response.status())
}

/// Every `id_field` of every item of the admin list `path` (`users`, `revocations`),
/// following `next` through all pages; an error names a page that was not `200`.
pub async fn list_all(
    api: &Api,
    path: &str,
    items: &str,
    id_field: &str,
) -> Result<HashSet<String>, String> {
    let mut seen = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let query = match &after {
            Some(cursor) => format!("{path}?limit=1000&after={}", percent_encode(cursor)),
            None => format!("{path}?limit=1000"),
        };
        let response = api.admin_request(Method::GET, &query).send().await.unwrap();
        if response.status() != StatusCode::OK {
            return Err(format!("GET {query}: {}", response.status()));
        }
        let page: Value = response.json().await.unwrap();
        for item in page[items].as_array().unwrap() {
            seen.insert(item[id_field].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return Ok(seen),
        }
    }
}

/// Waits (1 s: the propagation bound) until instance `api` knows `user` — a failed login
/// would count against the throttle, so the admin API is asked instead.
pub async fn wait_known(api: &Api, user: &str) {
    within(
        Duration::from_secs(1),
        &format!("{user} known"),
        async || api.get_user(user).await.status() == StatusCode::OK,
    )
    .await;
}

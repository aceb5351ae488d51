//! [`TestApp`]: a real daemon started in the test's own process on port 0 (`App::build`,
//! `App::run` with a control channel instead of signals), with its own data folder, spoken
//! to through [`Api`].
//!
//! In etcd mode ([`super::config::etcd_mode`]) it stores in the binary's shared etcd member
//! under its folder's own prefix, and is handed to the test only once `/readyz` says its
//! store is loaded (an etcd-backed daemon serves before that, answering `503`).

// Tests wait on real time (deadlines for the daemon under test), as a client would.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods
)]

use std::collections::HashMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use authd::activation::InheritedListeners;
use authd::app::{App, Control};
use authd::config::Config;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::client::Api;
use super::config::{SHARED_ETCD, etcd_mode, etcd_prefix, in_process_config};

/// How long an etcd-backed daemon may take to load its store.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A running daemon with its own data folder; every [`Api`] helper works on it. Asked to
/// shut down when dropped without [`TestApp::stop`].
pub struct TestApp {
    api: Api,
    /// The folder of its data, keys and admin token (and of a test's config files).
    pub dir: PathBuf,
    control: mpsc::Sender<Control>,
    running: Option<JoinHandle<anyhow::Result<()>>>,
    tempdir: Option<tempfile::TempDir>,
}

impl Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.control.try_send(Control::Shutdown);
    }
}

impl TestApp {
    /// A daemon on the shipped configuration, in a fresh temporary folder.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(&[]).await
    }

    /// Starts a daemon with extra `AUTHD__…` overrides, in a fresh temporary folder.
    pub async fn spawn_with(overrides: &[(&str, &str)]) -> TestApp {
        TestApp::spawn_on(overrides, InheritedListeners::default()).await
    }

    /// As [`TestApp::spawn_with`], serving on listeners the test bound itself (for a
    /// configuration that must name a port before the daemon starts).
    pub async fn spawn_on(overrides: &[(&str, &str)], listeners: InheritedListeners) -> TestApp {
        let tempdir = tempfile::tempdir().unwrap();
        let dir = tempdir.path().to_owned();
        let config = in_process_config(&dir, overrides);
        let mut app = TestApp::run(&dir, config, listeners).await;
        app.tempdir = Some(tempdir);
        app
    }

    /// Starts a daemon on an existing folder (to test restarts).
    pub async fn start_in(dir: &Path, overrides: &[(&str, &str)]) -> TestApp {
        let config = in_process_config(dir, overrides);
        TestApp::run(dir, config, InheritedListeners::default()).await
    }

    /// Starts a daemon on an existing folder, on `clock` instead of the system's.
    pub async fn start_in_with_clock(
        dir: &Path,
        overrides: &[(&str, &str)],
        clock: authd::clock::Clock,
    ) -> TestApp {
        let config = in_process_config(dir, overrides);
        TestApp::run_on_clock(dir, config, InheritedListeners::default(), clock).await
    }

    /// Starts a daemon configured by `file` alone (no overrides), so that [`TestApp::reload`]
    /// re-reads exactly what the test wrote there. `dir` is the test's folder (`TestApp::dir`).
    pub async fn start_with_config_file(dir: &Path, file: &Path) -> TestApp {
        let mut config = Config::load_with_env(file, HashMap::new()).unwrap();
        // A file the test wrote itself (not through `write_config`) still says sled.
        if etcd_mode() && config.storage.backend == authd::config::StorageBackend::Sled {
            config.storage.backend = authd::config::StorageBackend::Etcd;
            config.etcd.endpoints = vec![SHARED_ETCD.to_owned()];
            config.etcd.prefix = etcd_prefix(dir);
        }
        TestApp::run(dir, config, InheritedListeners::default()).await
    }

    /// Builds the daemon (binding its listeners, port 0 unless given), runs it on a task,
    /// and reads the admin token it wrote.
    async fn run(dir: &Path, config: Config, listeners: InheritedListeners) -> TestApp {
        TestApp::run_on_clock(dir, config, listeners, authd::clock::Clock::system()).await
    }

    async fn run_on_clock(
        dir: &Path,
        config: Config,
        listeners: InheritedListeners,
        clock: authd::clock::Clock,
    ) -> TestApp {
        let token_file = config.admin.token_file.clone();
        let etcd = config.storage.backend == authd::config::StorageBackend::Etcd;
        if etcd {
            // Started on first use; the whole binary shares it.
            let shared = tokio::task::spawn_blocking(super::etcd::shared_member)
                .await
                .unwrap();
            assert_eq!(shared.endpoint(0), SHARED_ETCD);
        }
        let app = App::build_on_clock(config, listeners, clock).await.unwrap();
        let public = format!("http://{}", app.public_addr().unwrap());
        let admin = format!("http://{}", app.admin_addr().unwrap());
        let (control, control_rx) = mpsc::channel(4);
        let running = tokio::spawn(app.run(control_rx));
        if etcd {
            wait_ready(&public).await;
        }
        let admin_token = std::fs::read_to_string(token_file)
            .unwrap()
            .trim()
            .to_owned();
        if etcd {
            // The whole point of etcd mode: a silent fallback to sled would prove nothing.
            let cluster: serde_json::Value = reqwest::Client::new()
                .get(format!("{admin}/admin/v1/cluster"))
                .bearer_auth(&admin_token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(cluster["backend"], "etcd", "{cluster}");
        }
        TestApp {
            api: Api::new(public, admin, admin_token),
            dir: dir.to_owned(),
            control,
            running: Some(running),
            tempdir: None,
        }
    }

    /// Shuts the daemon down gracefully and waits until it has stopped.
    pub async fn shut_down(&mut self) {
        self.control.send(Control::Shutdown).await.unwrap();
        if let Some(running) = self.running.take() {
            running.await.unwrap().unwrap();
        }
    }

    /// [`TestApp::shut_down`]; returns its data folder's guard (to start it again there).
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        self.shut_down().await;
        self.tempdir.take()
    }

    pub async fn reload(&self) {
        self.control.send(Control::Reload).await.unwrap();
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

/// Polls `GET /readyz` until `200` (the daemon's store is loaded), for [`READY_TIMEOUT`].
async fn wait_ready(public: &str) {
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        let status = client
            .get(format!("{public}/readyz"))
            .send()
            .await
            .map(|response| response.status());
        if status
            .as_ref()
            .is_ok_and(|status| *status == reqwest::StatusCode::OK)
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{public}/readyz not 200 within {READY_TIMEOUT:?}: {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

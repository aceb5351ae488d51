//! The composition root: builds the daemon (data folder, keys, admin token, store, both
//! listeners, the [`AppState`]) and runs it until told to stop — reloading settings on
//! request, draining in-flight requests under a deadline, flushing the store. Nothing
//! below imports it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::activation::InheritedListeners;
use crate::auth::mfa::MfaKey;
use crate::auth::password::Hasher;
use crate::auth::secret_token::SecretToken;
use crate::auth::{Authority, Settings, create_private_dir, keys};
use crate::clock::Clock;
use crate::cluster::Instance;
use crate::config::StorageBackend;
use crate::config::{Config, restart_required_changes};
use crate::http::Routes;
use crate::http::server::{Phase, serve};
use crate::notify;
use crate::store::Store;

mod etcd;

pub use etcd::restore_backend;

// Kept here too: `authd::app::AppState` is how tests and the fuzz targets name it.
pub use crate::state::AppState;

/// How long a task gets to stop once told to.
const TASK_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the daemon can be told while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Reload,
    Shutdown,
}

/// A daemon with its listeners bound, ready to [`App::run`].
pub struct App {
    state: Arc<AppState>,
    store: Store,
    /// Cluster mode: what loads and follows the etcd store.
    cluster: Option<etcd::Cluster>,
    public: TcpListener,
    admin: TcpListener,
    config_file: PathBuf,
}

impl App {
    /// Prepares everything `serve` needs, binding both listeners; any problem stops
    /// start-up with a clear error.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        App::build_with(config, InheritedListeners::default()).await
    }

    /// As [`App::build`], using listeners passed by systemd where there are some.
    pub async fn build_with(config: Config, inherited: InheritedListeners) -> anyhow::Result<App> {
        App::build_on_clock(config, inherited, Clock::system()).await
    }

    /// As [`App::build_with`], on `clock` (tests hold time still with a manual one).
    pub async fn build_on_clock(
        config: Config,
        inherited: InheritedListeners,
        clock: Clock,
    ) -> anyhow::Result<App> {
        let (store, cluster) = match config.storage.backend {
            StorageBackend::Sled => {
                let prepared = config.clone();
                let file_clock = clock.clone();
                tokio::task::spawn_blocking(move || prepare_files(&prepared, &file_clock))
                    .await??;
                let store = Store::open_sled(&config.storage.path)
                    .await
                    .with_context(|| {
                        format!("cannot open the store at {}", config.storage.path.display())
                    })?;
                (store, None)
            }
            StorageBackend::Etcd => {
                let (store, cluster) = etcd::open(&config, &clock).await?;
                (store, Some(cluster))
            }
        };
        let public = listener(inherited.public, config.server.listen).await?;
        let admin = listener(inherited.admin, config.server.admin_listen).await?;
        let config_file = config.file.clone();
        let settings = tokio::task::spawn_blocking(move || Settings::load(config)).await??;
        log_warnings(&settings.config);
        crate::metrics::install();
        let concurrency = std::thread::available_parallelism().map_or(1, usize::from);
        let mfa_key = MfaKey::read(&settings.config.mfa.key_file)?;
        let state = Arc::new(AppState::new(
            Authority::new(
                store.clone(),
                Hasher::new(concurrency),
                clock.clone(),
                mfa_key,
            ),
            settings,
            admin.local_addr()?,
            clock,
        ));
        // Other instances' login outcomes count here too (cluster mode). Weak: the store
        // lives inside the state.
        let shared = Arc::downgrade(&state);
        store.on_login_event(Arc::new(move |event| {
            if let Some(state) = shared.upgrade() {
                state.authority.count_shared_login(&state.settings(), event);
            }
        }));
        let (settings, now) = (state.settings(), state.clock().now());
        let instance = Instance::start(&settings.config.storage.path, public.local_addr()?, now)?;
        store.publish_member(crate::cluster::describe(&instance, &settings.keys, now));
        let _ = state.instance.set(instance);
        Ok(App {
            state,
            store,
            cluster,
            public,
            admin,
            config_file,
        })
    }

    pub fn public_addr(&self) -> std::io::Result<SocketAddr> {
        self.public.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until a [`Control::Shutdown`] arrives (or the sender is dropped), reloading
    /// on [`Control::Reload`]. A second shutdown during the drain stops waiting.
    pub async fn run(self, mut control: mpsc::Receiver<Control>) -> anyhow::Result<()> {
        let App {
            state,
            store,
            cluster,
            public,
            admin,
            config_file,
        } = self;
        let public_addr = public.local_addr()?;
        let (phase_tx, phase_rx) = watch::channel(Phase::Running);
        let (stop_tasks, stop_rx) = watch::channel(false);
        let listeners: Vec<(&'static str, JoinHandle<()>)> = vec![
            (
                "public listener",
                tokio::spawn(serve(
                    "public",
                    public,
                    Routes::public(state.clone()),
                    phase_rx.clone(),
                )),
            ),
            (
                "admin listener",
                tokio::spawn(serve(
                    "admin",
                    admin,
                    Routes::admin(state.clone()),
                    phase_rx,
                )),
            ),
        ];
        let mut background = vec![(
            "revocation purge",
            tokio::spawn(crate::tasks::purge(state.clone(), stop_rx.clone())),
        )];
        background.push((
            "metrics upkeep",
            tokio::spawn(crate::tasks::metrics_upkeep(stop_rx.clone())),
        ));
        if let Some(interval) = notify::watchdog_interval() {
            background.push((
                "systemd watchdog",
                tokio::spawn(crate::tasks::watchdog(
                    public_addr,
                    interval,
                    stop_rx.clone(),
                )),
            ));
        }
        let (loaded_tx, mut loaded) = watch::channel(cluster.is_none());
        let (fatal_tx, mut fatal) = watch::channel(None::<String>);
        if let Some(cluster) = cluster {
            background.push((
                "etcd sync",
                tokio::spawn(cluster.run(stop_rx.clone(), loaded_tx, fatal_tx)),
            ));
        }
        let mut ready = false;
        let mut failure = None;
        // Serve until a shutdown (or the end of the control channel).
        loop {
            if !ready && *loaded.borrow() {
                ready = true;
                notify::notify("READY=1\nSTATUS=serving");
                tracing::info!("authd is ready");
                tokio::spawn(announce(state.clone(), store.clone()));
            }
            tokio::select! {
                message = control.recv() => match message {
                    Some(Control::Reload) => {
                        notify::reloading();
                        let status = reload(&state, &config_file).await;
                        let settings = state.settings();
                        store.set_limits(settings.config.etcd.request_timeout, settings.config.etcd.max_staleness);
                        tokio::spawn(announce(state.clone(), store.clone()));
                        notify::notify(&format!("READY=1\nSTATUS={status}"));
                    }
                    Some(Control::Shutdown) | None => break,
                },
                Ok(()) = loaded.changed(), if !ready => {}
                Ok(()) = fatal.changed() => {
                    if let Some(reason) = fatal.borrow().clone() {
                        tracing::error!("{reason}");
                        failure = Some(reason);
                        break;
                    }
                }
            }
        }

        tracing::info!("shutting down: draining in-flight requests");
        notify::notify("STOPPING=1\nSTATUS=draining");
        state.set_draining();
        phase_tx.send_replace(Phase::Draining);
        let grace = state.settings().config.server.shutdown_grace;
        let listeners = async move {
            for (name, task) in listeners {
                if task.await.is_err() {
                    tracing::error!(task = name, "listener task panicked");
                }
            }
        };
        tokio::pin!(listeners);
        let drained = tokio::select! {
            _ = &mut listeners => true,
            _ = tokio::time::sleep(grace) => {
                tracing::warn!(grace = ?grace, "shutdown grace expired");
                false
            }
            _ = second_shutdown(&mut control) => {
                tracing::warn!("second shutdown signal: not waiting for in-flight requests");
                false
            }
        };
        phase_tx.send_replace(Phase::Abort);
        stop_tasks.send_replace(true);
        if !drained
            && tokio::time::timeout(TASK_STOP_TIMEOUT, listeners)
                .await
                .is_err()
        {
            tracing::warn!("listeners did not stop in time");
        }
        for (name, task) in background {
            match tokio::time::timeout(TASK_STOP_TIMEOUT, task).await {
                Ok(_) => tracing::debug!(task = name, "stopped"),
                Err(_) => tracing::warn!(task = name, "did not stop in time"),
            }
        }
        tokio::task::spawn_blocking(move || store.close())
            .await?
            .context("cannot flush the store")?;
        tracing::info!("store flushed; bye");
        match failure {
            Some(reason) => Err(anyhow::anyhow!(reason)),
            None => Ok(()),
        }
    }
}

/// The passed listener, or a new one bound to `addr`.
async fn listener(
    inherited: Option<std::net::TcpListener>,
    addr: SocketAddr,
) -> anyhow::Result<TcpListener> {
    match inherited {
        Some(listener) => TcpListener::from_std(listener).context("cannot use the passed socket"),
        None => TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}")),
    }
}

async fn second_shutdown(control: &mut mpsc::Receiver<Control>) {
    loop {
        match control.recv().await {
            Some(Control::Shutdown) | None => return,
            Some(Control::Reload) => tracing::info!("reload ignored while shutting down"),
        }
    }
}

/// Publishes what this instance's heartbeat says of it (cluster mode), and warns when a
/// live member's key set differs from this one's: expected during a staged rotation, a
/// mistake otherwise (a token signed there fails here).
async fn announce(state: Arc<AppState>, store: Store) {
    let Some(instance) = state.instance.get() else {
        return;
    };
    let settings = state.settings();
    let own = crate::cluster::describe(instance, &settings.keys, state.clock().now());
    store.publish_member(own.clone());
    if let Ok(Some(members)) = store.members().await {
        let differ = crate::cluster::keyset_mismatch(&own, &members);
        if !differ.is_empty() {
            tracing::warn!(
                nodes = ?differ,
                "these members' key sets differ from this instance's: every instance needs the same files in jwt.keys_dir (expected only during a staged rotation)"
            );
        }
    }
}

/// Creates what a first start needs: the data folders, a signing key for the configured
/// algorithm, and the admin token. Existing files are never overwritten. Public for the
/// test and fuzz harnesses that build an [`AppState`] from parts, without listeners.
pub fn prepare_files(config: &Config, clock: &Clock) -> anyhow::Result<()> {
    create_private_dir(&config.storage.path).with_context(|| {
        format!(
            "cannot create the data folder {}",
            config.storage.path.display()
        )
    })?;
    if let Some(kid) = keys::ensure_key(
        &config.jwt.keys_dir,
        config.jwt.algorithm,
        clock.system_time(),
    )? {
        tracing::info!(kid = %kid, dir = %config.jwt.keys_dir.display(), "generated a signing key");
    }
    if SecretToken::create_if_missing("admin.token_file", &config.admin.token_file)? {
        tracing::info!(file = %config.admin.token_file.display(), "created the admin API token");
    }
    if config.feed.enabled
        && SecretToken::create_if_missing("feed.token_file", &config.feed.token_file)?
    {
        tracing::info!(file = %config.feed.token_file.display(), "created the revocation feed's token");
    }
    if MfaKey::create_if_missing(&config.mfa.key_file)? {
        tracing::info!(file = %config.mfa.key_file.display(), "created the second factor's key");
    }
    Ok(())
}

/// Re-reads the configuration file, the key set and the admin token, and swaps them in as
/// one snapshot; on any problem the running settings stay.
/// Returns a one-line status for systemd.
async fn reload(state: &AppState, config_file: &std::path::Path) -> &'static str {
    let file = config_file.to_owned();
    let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<Settings> {
        let config = Config::load(&file)?;
        Ok(Settings::load(config)?)
    })
    .await;
    match loaded {
        Ok(Ok(settings)) => {
            let old = state.settings();
            for key in restart_required_changes(&old.config, &settings.config) {
                tracing::warn!(key, "changed in the file but needs a restart: ignored");
            }
            let level_changed = old.config.log.level != settings.config.log.level;
            let level = settings.config.log.level.clone();
            state.swap_settings(settings);
            if level_changed && let Err(err) = crate::logging::set_level(&level) {
                // Validated with the configuration, so this does not happen.
                tracing::error!(error = %err, "cannot apply log.level");
            }
            log_warnings(&state.settings().config);
            tracing::info!("configuration reloaded");
            "serving (reloaded)"
        }
        Ok(Err(err)) => {
            tracing::error!(error = %format!("{err:#}"), "reload refused; keeping the running configuration");
            "serving (last reload refused, see the log)"
        }
        Err(err) => {
            tracing::error!(error = %err, "reload failed");
            "serving (last reload failed, see the log)"
        }
    }
}

/// What `check-config` warns about, in the log (at start and after every reload).
fn log_warnings(config: &Config) {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
}

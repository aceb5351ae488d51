//! Cluster mode's part of start-up: the etcd store (which loads itself in the background),
//! this instance's node id, and the deployment's shared secrets — created by its first
//! instance only, and checked against the fingerprints it recorded by every later one.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::Config;
use crate::files::{create_private_dir, read_token_file};
use crate::store::etcd::{ClientOptions, Deployment, DeploymentRecord, EtcdBackend, EtcdClient};
use crate::store::{Backend as _, Freshness, Store, View};

/// The running side of cluster mode, for [`super::App::run`].
pub struct Cluster {
    backend: Arc<EtcdBackend>,
    fingerprints: Vec<(String, String)>,
    created_at: i64,
}

/// Opens the etcd store. Only when a secret file is missing does this wait for etcd (to
/// learn whether this is the deployment's first instance, which alone may create it).
pub async fn open(config: &Config, clock: &Clock) -> anyhow::Result<(Store, Cluster)> {
    let settings = config.clone();
    let (options, node) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        create_private_dir(&settings.storage.path).with_context(|| {
            format!(
                "cannot create the data folder {}",
                settings.storage.path.display()
            )
        })?;
        Ok((
            client_options(&settings)?,
            crate::cluster::node_id(&settings.storage.path)?,
        ))
    })
    .await??;
    let view = Arc::new(View::default());
    // Staleness is measured on the real monotonic clock, like the heartbeats that end it:
    // a test's manual clock moving on must not make the view look old.
    let freshness = Arc::new(Freshness::confirmed(
        Clock::system(),
        config.etcd.max_staleness,
    ));
    let backend = Arc::new(EtcdBackend::new(
        EtcdClient::new(options),
        &config.etcd.prefix,
        node,
        view.clone(),
        freshness.clone(),
        clock.clone(),
    ));
    if missing_secret(config).is_some() {
        first_start(&backend, config, clock).await?;
    } else {
        let prepared = config.clone();
        let file_clock = clock.clone();
        tokio::task::spawn_blocking(move || super::prepare_files(&prepared, &file_clock)).await??;
    }
    let fingerprints = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || fingerprints(&config)).await??
    };
    let store = Store::remote(backend.clone(), view, freshness);
    Ok((
        store,
        Cluster {
            backend,
            fingerprints,
            created_at: clock.now(),
        },
    ))
}

impl Cluster {
    /// Checks this instance's secrets against the deployment's, then loads and follows the
    /// store until `stop`. A mismatch is fatal: it is sent on `fatal` and nothing loads.
    pub async fn run(
        self,
        stop: watch::Receiver<bool>,
        loaded: watch::Sender<bool>,
        fatal: watch::Sender<Option<String>>,
    ) {
        let record = DeploymentRecord {
            created_at: self.created_at,
            fingerprints: self.fingerprints.clone(),
        };
        let mut waiting = stop.clone();
        loop {
            match self.admit(&record).await {
                Ok(()) => break,
                Err(Refused::Fatal(err)) => {
                    fatal.send_replace(Some(err));
                    return;
                }
                Err(Refused::Unreachable(err)) => {
                    tracing::warn!(error = %err, "cannot reach etcd yet; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                        _ = waiting.changed() => return,
                    }
                }
            }
        }
        crate::store::etcd::sync::run(self.backend, stop, loaded).await;
    }
}

/// The deployment's store for `authd restore`: connected as `serve` would be, but neither
/// loaded nor followed (nothing serves it while it is restored).
pub fn restore_backend(config: &Config, clock: &Clock) -> anyhow::Result<Arc<EtcdBackend>> {
    let view = Arc::new(View::default());
    let freshness = Arc::new(Freshness::always(clock.clone()));
    Ok(Arc::new(EtcdBackend::new(
        EtcdClient::new(client_options(config)?),
        &config.etcd.prefix,
        "restore".to_owned(),
        view,
        freshness,
        clock.clone(),
    )))
}

/// Why an instance may not load the deployment's store (yet).
enum Refused {
    /// For good: it must not serve this store.
    Fatal(String),
    /// etcd did not answer; try again.
    Unreachable(crate::store::StoreError),
}

impl Cluster {
    /// Whether this instance may serve the deployment: its store is not a restore cut off
    /// midway, and its secrets are the deployment's (recorded now by its first instance).
    async fn admit(&self, record: &DeploymentRecord) -> Result<(), Refused> {
        let state = self
            .backend
            .restore_state()
            .await
            .map_err(Refused::Unreachable)?;
        if state.incomplete {
            return Err(Refused::Fatal(
                crate::store::StoreError::Incomplete.to_string(),
            ));
        }
        match self
            .backend
            .claim_deployment(record)
            .await
            .map_err(Refused::Unreachable)?
        {
            Deployment::Created => {
                tracing::info!("created a new deployment in etcd");
                Ok(())
            }
            Deployment::Existing(existing) => {
                compare(&self.fingerprints, &existing).map_err(Refused::Fatal)
            }
        }
    }
}

/// The first start of an instance that lacks a secret file: if the deployment is new, this
/// instance creates the files; otherwise they must be copied from the first instance.
async fn first_start(backend: &EtcdBackend, config: &Config, clock: &Clock) -> anyhow::Result<()> {
    loop {
        match backend.deployment().await {
            Ok(Some(_)) => {
                let missing = missing_secret(config).unwrap_or_default();
                bail!(
                    "{missing} is missing, and this deployment already exists in etcd: copy it from the deployment's first instance (instances must share their secrets)"
                );
            }
            Ok(None) => break,
            Err(err) => {
                tracing::warn!(error = %err, "a secret file is missing: waiting for etcd to learn whether this is the deployment's first instance");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
    let prepared = config.clone();
    let file_clock = clock.clone();
    tokio::task::spawn_blocking(move || super::prepare_files(&prepared, &file_clock)).await??;
    Ok(())
}

/// The first secret file that does not exist yet, named by its key.
fn missing_secret(config: &Config) -> Option<String> {
    if !config.admin.token_file.exists() {
        return Some(format!(
            "admin.token_file ({})",
            config.admin.token_file.display()
        ));
    }
    if config.feed.enabled && !config.feed.token_file.exists() {
        return Some(format!(
            "feed.token_file ({})",
            config.feed.token_file.display()
        ));
    }
    if !config.mfa.key_file.exists() {
        return Some(format!("mfa.key_file ({})", config.mfa.key_file.display()));
    }
    let has_key = std::fs::read_dir(&config.jwt.keys_dir)
        .map(|entries| entries.flatten().next().is_some())
        .unwrap_or(false);
    if !has_key {
        return Some(format!(
            "the keys in jwt.keys_dir ({})",
            config.jwt.keys_dir.display()
        ));
    }
    None
}

/// Fingerprints of the secrets every instance must share: never the secrets themselves.
fn fingerprints(config: &Config) -> anyhow::Result<Vec<(String, String)>> {
    let token = read_token_file(&config.admin.token_file)
        .with_context(|| format!("admin.token_file ({})", config.admin.token_file.display()))?;
    let mut prints = vec![(
        format!("admin.token_file ({})", config.admin.token_file.display()),
        fingerprint("admin token", token.trim().as_bytes()),
    )];
    if config.feed.enabled {
        let file = &config.feed.token_file;
        let token = read_token_file(file)
            .with_context(|| format!("feed.token_file ({})", file.display()))?;
        prints.push((
            format!("feed.token_file ({})", file.display()),
            fingerprint("feed token", token.trim().as_bytes()),
        ));
    }
    let key = crate::auth::mfa::MfaKey::read(&config.mfa.key_file)?;
    prints.push((
        format!("mfa.key_file ({})", config.mfa.key_file.display()),
        key.fingerprint().to_owned(),
    ));
    Ok(prints)
}

fn fingerprint(label: &str, secret: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"authd fingerprint\0");
    hasher.update(label.as_bytes());
    hasher.update([0]);
    hasher.update(secret);
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// An error naming each secret whose fingerprint differs from the deployment's.
fn compare(own: &[(String, String)], deployment: &DeploymentRecord) -> Result<(), String> {
    for (what, print) in own {
        let label = what.split(" (").next().unwrap_or(what);
        let recorded = deployment
            .fingerprints
            .iter()
            .find(|(name, _)| name.split(" (").next() == Some(label));
        if let Some((_, recorded)) = recorded
            && recorded != print
        {
            return Err(format!(
                "{what} differs from the one this deployment's first instance created: copy it from there (instances must share their secrets)"
            ));
        }
    }
    Ok(())
}

/// The `[etcd]` settings with their files read.
fn client_options(config: &Config) -> anyhow::Result<ClientOptions> {
    let etcd = &config.etcd;
    let read = |key: &str, path: &Path| {
        std::fs::read(path).with_context(|| format!("{key}: cannot read {}", path.display()))
    };
    let ca_pem = etcd
        .ca_file
        .as_deref()
        .map(|path| read("etcd.ca_file", path))
        .transpose()?;
    let identity_pem = match (&etcd.cert_file, &etcd.key_file) {
        (Some(cert), Some(key)) => {
            Some((read("etcd.cert_file", cert)?, read("etcd.key_file", key)?))
        }
        _ => None,
    };
    let user = match (&etcd.username, &etcd.password_file) {
        (Some(name), Some(file)) => {
            let password = read_token_file(file)
                .with_context(|| format!("etcd.password_file ({})", file.display()))?;
            Some((name.clone(), password.trim().to_owned()))
        }
        _ => None,
    };
    Ok(ClientOptions {
        endpoints: etcd.endpoints.clone(),
        dial_timeout: etcd.dial_timeout,
        request_timeout: etcd.request_timeout,
        ca_pem,
        identity_pem,
        user,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(prints: &[(&str, &str)]) -> DeploymentRecord {
        DeploymentRecord {
            created_at: 0,
            fingerprints: prints
                .iter()
                .map(|(what, print)| ((*what).to_owned(), (*print).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_secret_that_differs_from_the_deployments_is_named() {
        let own = vec![(
            "admin.token_file (/b/data/admin.token)".to_owned(),
            fingerprint("admin token", b"secret-b"),
        )];
        let deployment = record(&[(
            "admin.token_file (/a/data/admin.token)",
            &fingerprint("admin token", b"secret-a"),
        )]);
        let err = compare(&own, &deployment).unwrap_err();
        assert!(
            err.starts_with("admin.token_file (/b/data/admin.token) differs"),
            "{err}"
        );
        // The same secret under another path is the same secret.
        let same = record(&[(
            "admin.token_file (/a/data/admin.token)",
            &fingerprint("admin token", b"secret-b"),
        )]);
        assert_eq!(compare(&own, &same), Ok(()));
    }

    #[test]
    fn a_fingerprint_never_shows_the_secret_and_differs_per_kind_of_secret() {
        let print = fingerprint("admin token", b"secret");
        assert_eq!(print.len(), 64);
        assert!(!print.contains("secret"));
        assert_ne!(print, fingerprint("feed token", b"secret"));
    }
}

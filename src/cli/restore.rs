//! `authd restore --in FILE`, with the daemon stopped: opens the configured store (sled's
//! folder, or the etcd deployment under `etcd.prefix`) and loads the backup into it (see
//! [`crate::backup::restore`]). Progress goes to stderr, the summary to stdout.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use super::block_on;
use crate::clock::Clock;
use crate::config::{Config, StorageBackend};
use crate::store::{Backend, View};

/// Restores the backup at `input` into the store `config` names.
pub fn restore(config: &Config, input: &Path) -> anyhow::Result<()> {
    let clock = Clock::system();
    let backend: Arc<dyn Backend> = match config.storage.backend {
        StorageBackend::Sled => {
            let path = &config.storage.path;
            crate::files::create_private_dir(path)
                .with_context(|| format!("cannot create the data folder {}", path.display()))?;
            let backend = crate::store::sled::SledBackend::open(path, Arc::new(View::default()))
                .with_context(|| format!("cannot open the store at {}", path.display()))?;
            Arc::new(backend)
        }
        StorageBackend::Etcd => crate::app::restore_backend(config, &clock)?,
    };
    // The key the backup's second-factor secrets are sealed with must be this one.
    let mfa_key = match config.mfa.key_file.exists() {
        true => Some(
            crate::auth::mfa::MfaKey::read(&config.mfa.key_file)?
                .fingerprint()
                .to_owned(),
        ),
        false => None,
    };
    let progress = |done: u64, total: u64| eprintln!("authd: restored {done} of {total} records");
    let restored = block_on(crate::backup::restore::restore(
        backend.as_ref(),
        input,
        clock.now(),
        mfa_key.as_deref(),
        &progress,
    ))?;
    let restored = restored.with_context(|| format!("cannot restore {}", input.display()))?;
    backend.close().context("cannot flush the store")?;
    println!(
        "restored {} records from {} ({} expired ones left out)",
        restored.records,
        input.display(),
        restored.expired
    );
    Ok(())
}

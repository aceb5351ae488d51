//! The admin commands (`authd user …`, `authd revoke`, `authd revocations …`, `authd
//! cluster status`, `authd backup`): a client of the running daemon's admin listener,
//! found through the same configuration file, and authenticated with the admin API token
//! from `admin.token_file`.
//!
//! Their arguments are declared next to what they do (`users`, `revocations`, `cluster`;
//! `main` only mounts them), the HTTP exchange lives in `client`, the password prompt in
//! `password`, and what is printed in `output`. Output goes to stdout; passwords and
//! tokens are never printed.

mod backup;
mod client;
mod cluster;
mod output;
mod password;
mod restore;
mod revocations;
mod users;

use std::future::Future;

use anyhow::Context as _;

pub use backup::backup;
pub use cluster::{ClusterCommand, cluster};
pub use restore::restore;
pub use revocations::{RevocationsCommand, RevokeArgs, revocations, revoke};
pub use users::{UserCommand, user};

/// One request at a time needs no more than a single-threaded runtime.
fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}

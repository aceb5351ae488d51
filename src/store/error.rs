//! What can go wrong in the store, in terms of what failed rather than which engine.

/// A store failure. Engine errors are turned into these at the backend's edge.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine cannot be reached or cannot write (I/O error, no quorum).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A commit's precondition failed: a record changed since it was read.
    #[error("the store changed concurrently")]
    Conflict,
    /// A restore into the store began and did not finish: nothing may serve it.
    #[error(
        "a restore into the store was cut off before it finished: run `authd restore` again (the store is incomplete)"
    )]
    Incomplete,
    /// A stored record cannot be decoded.
    #[error("corrupt record in {space}: {reason}")]
    Corrupt { space: &'static str, reason: String },
}

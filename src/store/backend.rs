//! The seam between the [`Store`](super::Store) and a storage engine: the [`Backend`]
//! trait, the transactions it commits ([`Txn`]) and the ordered change batches it
//! publishes. Engines implement this and nothing else; sled is the one there is today.
//!
//! The contract every backend keeps:
//! - **Atomic, conditional commits.** [`Backend::commit`] applies all of a [`Txn`]'s
//!   writes or none, and only if every [`Check`] holds (compare-and-swap on record
//!   versions); otherwise it answers [`StoreError::Conflict`] and writes nothing.
//! - **Durable before acknowledged.** `commit` returns `Ok` only once the commit survives
//!   a crash (sled: flushed to disk; a cluster engine: committed by a quorum).
//! - **Commit order.** Each commit gets a revision greater than every earlier one; every
//!   record it writes gets that revision as its version, and every revocation entry it
//!   stores a `seq` above every earlier entry's (assigned inside the commit, never before).
//! - **One ordered change stream.** Every commit is handed to the [`ChangeSink`] as one
//!   [`ChangeBatch`], in commit order, before `commit` returns (read your writes).
//! - **Errors name what failed**, never the engine: unavailable, conflict, corrupt.

use std::future::Future;
use std::pin::Pin;

use super::StoreError;
use super::records::{
    Key, LoginEvent, MemberRecord, MfaTokenRecord, RefreshHash, RefreshRecord, RevocationKind,
    RevocationRecord, SessionRecord, UnixSeconds, UserRecord, Version, Versioned,
};

/// A page of users sorted by name, and whether more follow.
pub type UsersPage = (Vec<UserRecord>, bool);

/// A page of revocation entries in `seq` order, and the cursor of the next page.
pub type RevocationsPage = (Vec<RevocationRecord>, Option<u64>);

/// A boxed future, so backends can sit behind `dyn Backend`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A precondition of a commit: the record under `key` is at `version` (`None`: absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub key: Key,
    pub version: Option<Version>,
}

/// One write of a commit.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    PutUser(UserRecord),
    PutSession(SessionRecord),
    PutRefresh(RefreshHash, RefreshRecord),
    PutMfaToken(RefreshHash, MfaTokenRecord),
    /// Stores the entry (replacing one of the same kind and id); the backend sets `seq`.
    PutRevocation(RevocationRecord),
    Delete(Key),
}

/// An atomic, conditional set of writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Txn {
    pub checks: Vec<Check>,
    pub writes: Vec<Write>,
}

/// What a commit answers: its revision and the revocation entries it stored, placed.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub revision: Version,
    pub revocations: Vec<RevocationRecord>,
}

/// What one commit changed, as the change stream carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    User(Versioned<UserRecord>),
    Session(Versioned<SessionRecord>),
    Refresh(RefreshHash),
    MfaToken(RefreshHash),
    Revocation(RevocationRecord),
    Deleted(Key),
}

/// One commit on the change stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeBatch {
    pub revision: Version,
    pub changes: Vec<Change>,
}

impl ChangeBatch {
    /// What `commit` answers for this batch: its revision and the entries it placed.
    pub fn into_committed(self) -> Committed {
        let revocations = self
            .changes
            .into_iter()
            .filter_map(|change| match change {
                Change::Revocation(entry) => Some(entry),
                _ => None,
            })
            .collect();
        Committed {
            revision: self.revision,
            revocations,
        }
    }
}

/// Receives every committed [`ChangeBatch`], in commit order (the in-memory view).
pub trait ChangeSink: Send + Sync {
    fn apply(&self, batch: &ChangeBatch);
}

/// Everything the in-memory view needs at start, read at one revision; the revoked jtis
/// (a million, say) are handed over one at a time instead, never collected.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub revision: Version,
    pub users: Vec<Versioned<UserRecord>>,
    pub sessions: Vec<Versioned<SessionRecord>>,
}

/// One stored record as a backup carries it, and a restore writes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    User(UserRecord),
    Session(SessionRecord),
    Refresh(RefreshHash, RefreshRecord),
    Revocation(RevocationRecord),
}

/// What an export sends: first the point it reads at, then every record as of that point,
/// kind by kind (users, sessions, refresh tokens, revocation entries).
#[derive(Debug, Clone, PartialEq)]
pub enum Exported {
    Begin(ExportPoint),
    Record(Record),
}

/// The point an export reads the store at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportPoint {
    /// The revision every exported record is read at: no record is newer, and every seq
    /// and version is at most this.
    pub revision: Version,
    /// Above every id the store has handed out (a restore continues from it).
    pub next_id: u64,
}

/// How long an export waits for its reader: one that stops reading must not hold the
/// export (and, on sled, the old values commits save for it) without end.
const READER_STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// Hands `item` to an export's reader.
pub async fn send_exported(
    out: &tokio::sync::mpsc::Sender<Exported>,
    item: Exported,
) -> Result<(), StoreError> {
    match tokio::time::timeout(READER_STALL, out.send(item)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(StoreError::Unavailable(
            "the backup's reader went away".into(),
        )),
        Err(_) => Err(StoreError::Unavailable(format!(
            "the backup's reader read nothing for {READER_STALL:?}"
        ))),
    }
}

/// What a restore finds in the store it is about to fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreState {
    /// It holds a user, a session or a revocation entry.
    pub holds_records: bool,
    /// A restore began and did not finish.
    pub incomplete: bool,
}

/// Takes the login events of other instances (the login throttle).
pub type LoginEventSink = std::sync::Arc<dyn Fn(&LoginEvent) + Send + Sync>;

/// Takes each revoked jti of a snapshot.
pub type RevokedJtiSink<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// A record that has expired, with the version it was seen at (so that a purge never
/// deletes a record that changed since).
#[derive(Debug, Clone, PartialEq)]
pub struct Expired {
    pub key: Key,
    pub version: Version,
}

/// A storage engine behind the [`Store`](super::Store). See the module docs for the
/// contract.
pub trait Backend: Send + Sync + 'static {
    /// Everything the view needs, at one revision: the records, and every revoked jti
    /// handed to `revoked_jti`.
    fn snapshot<'a>(
        &'a self,
        revoked_jti: RevokedJtiSink<'a>,
    ) -> BoxFuture<'a, Result<Snapshot, StoreError>>;

    /// Applies `txn` if its checks hold; durable and published before `Ok`.
    fn commit(&self, txn: Txn) -> BoxFuture<'_, Result<Committed, StoreError>>;

    /// The refresh token stored under `hash`.
    fn refresh(
        &self,
        hash: RefreshHash,
    ) -> BoxFuture<'_, Result<Option<Versioned<RefreshRecord>>, StoreError>>;

    /// The pending second login step stored under `hash`.
    fn mfa_token(
        &self,
        hash: RefreshHash,
    ) -> BoxFuture<'_, Result<Option<Versioned<MfaTokenRecord>>, StoreError>>;

    /// The revocation entry of `kind` and `id`.
    fn revocation(
        &self,
        kind: RevocationKind,
        id: String,
    ) -> BoxFuture<'_, Result<Option<Versioned<RevocationRecord>>, StoreError>>;

    /// Up to `limit` users sorted by name, after `after`; the flag says whether more follow.
    fn users_page(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<UsersPage, StoreError>>;

    /// Up to `limit` revocation entries in `seq` order after `after`; plus the next cursor.
    fn revocations_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RevocationsPage, StoreError>>;

    /// Revocation entries, sessions, refresh tokens and pending second login steps whose
    /// `expires_at` is before `now`.
    fn expired(&self, now: UnixSeconds) -> BoxFuture<'_, Result<Vec<Expired>, StoreError>>;

    /// How many revocation entries there are.
    fn revocation_count(&self) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// A new id, unique for the life of the store.
    fn next_id(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// `"sled"` or `"etcd"`.
    fn name(&self) -> &'static str;

    /// The store's epoch: a random id made when the store is created (or restored), which
    /// every revocation-feed cursor carries. `None` until the engine has told it (cluster
    /// mode, before the first snapshot).
    fn epoch(&self) -> Option<String> {
        None
    }

    /// Reads `keys` from the engine itself (linearizably) into the view, for a record the
    /// view may not have seen yet (cluster mode); a no-op where the view is the store.
    fn catch_up(&self, keys: Vec<Key>) -> BoxFuture<'_, Result<(), StoreError>> {
        let _ = keys;
        Box::pin(async { Ok(()) })
    }

    /// Hands `event` to every other instance, kept until `keep_until` (cluster mode; a
    /// no-op where one process is all there is).
    fn share_login_event(
        &self,
        event: LoginEvent,
        keep_until: UnixSeconds,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let _ = (event, keep_until);
        Box::pin(async { Ok(()) })
    }

    /// Where the other instances' login events go (cluster mode).
    fn on_login_event(&self, sink: LoginEventSink) {
        let _ = sink;
    }

    /// A reload's new bound on each call to the engine (cluster mode).
    fn set_request_timeout(&self, timeout: std::time::Duration) {
        let _ = timeout;
    }

    /// The live instances of the deployment (`None`: the engine has no members).
    fn members(&self) -> BoxFuture<'_, Result<Option<Vec<MemberRecord>>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    /// What this instance's heartbeat publishes from now on (engines without members
    /// ignore it).
    fn publish_member(&self, member: MemberRecord) {
        let _ = member;
    }

    // ----- backup and restore -----

    /// Sends [`Exported::Begin`], then every record as of that one revision, to `out`,
    /// while commits go on. Fails when `out` is closed.
    fn export<'a>(
        &'a self,
        out: &'a tokio::sync::mpsc::Sender<Exported>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Whether the store holds records, and whether a restore into it was cut off.
    fn restore_state(&self) -> BoxFuture<'_, Result<RestoreState, StoreError>>;

    /// Starts a restore: removes every record (what a cut-off restore left) and marks the
    /// store incomplete, durably, so that nothing serves it until [`Backend::finish_restore`].
    fn begin_restore(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Writes `records` as they are, at `revision` (no checks, no change stream: nothing
    /// serves the store during a restore).
    fn import(
        &self,
        records: Vec<Record>,
        revision: Version,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Ends a restore: the counters continue above `point`, the store gets a new epoch,
    /// and the incomplete mark goes, last and durably.
    fn finish_restore(&self, point: ExportPoint) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Makes everything durable before the process exits (blocking; at shutdown).
    fn close(&self) -> Result<(), StoreError>;
}

//! The sled backend: one embedded database in a folder, one tree per kind of record, a
//! revocation log tree in commit order and a meta tree with the last revision and the
//! store's epoch. The only module that knows sled.
//!
//! Commits run one at a time under a writer lock, each as one sled transaction over every
//! tree: the revision (and each revocation entry's `seq`) is taken inside it, the batch is
//! handed to the change sink before the lock is released (so the view sees commits in
//! order), and `commit` returns once the group flusher has put it on disk.

mod backup;
mod codec;
mod flusher;

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use sled::Transactional as _;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::StoreError;
use super::backend::{
    Backend, BoxFuture, Change, ChangeBatch, ChangeSink, Committed, Expired, ExportPoint, Exported,
    Record, RestoreState, RevocationsPage, RevokedJtiSink, Snapshot, Txn, UsersPage, Write,
};
use super::records::{
    Key, MfaTokenRecord, RefreshHash, RefreshRecord, RevocationKind, RevocationRecord,
    SessionRecord, UnixSeconds, UserRecord, Version, Versioned,
};
use codec::{Stored, decode, encode, version_of};
use flusher::Flusher;

/// sled's default page cache is 1 GiB; an auth daemon's working set is far smaller.
const CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

/// The meta tree's key of the last committed revision (u64, big-endian).
const REVISION_KEY: &[u8] = b"revision";

/// The meta tree's key of the store's epoch (UTF-8): made at the first open, and at the
/// first open of a store written before epochs were kept.
const EPOCH_KEY: &[u8] = b"epoch";

/// The sled store in one folder.
pub struct SledBackend {
    db: sled::Db,
    users: sled::Tree,
    sessions: sled::Tree,
    refresh_tokens: sled::Tree,
    /// `SHA-256(mfa_token)` → [`MfaTokenRecord`].
    mfa_tokens: sled::Tree,
    /// `kind byte ‖ id` → [`RevocationRecord`].
    revocations: sled::Tree,
    /// `seq` (big-endian) → `kind byte ‖ id`: the list order.
    revocation_log: sled::Tree,
    meta: sled::Tree,
    /// See [`Backend::epoch`].
    epoch: String,
    /// The last committed revision; held for the whole of a commit.
    writer: Mutex<Version>,
    sink: Arc<dyn ChangeSink>,
    flusher: Flusher,
    exports: backup::Exports,
}

impl From<sled::Error> for StoreError {
    fn from(err: sled::Error) -> Self {
        StoreError::Unavailable(err.to_string())
    }
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(err: TransactionError<StoreError>) -> Self {
        match err {
            TransactionError::Abort(err) => err,
            TransactionError::Storage(err) => err.into(),
        }
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn abort<T>(err: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(err))
}

fn kind_byte(kind: RevocationKind) -> u8 {
    match kind {
        RevocationKind::Jti => b'j',
        RevocationKind::Sid => b's',
        RevocationKind::User => b'u',
    }
}

fn revocation_key(kind: RevocationKind, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(kind_byte(kind));
    key.extend_from_slice(id.as_bytes());
    key
}

/// The trees of one transaction, in the order `transaction` hands them out.
struct Trees<'a> {
    users: &'a TransactionalTree,
    sessions: &'a TransactionalTree,
    refresh_tokens: &'a TransactionalTree,
    mfa_tokens: &'a TransactionalTree,
    revocations: &'a TransactionalTree,
    revocation_log: &'a TransactionalTree,
    meta: &'a TransactionalTree,
}

impl Trees<'_> {
    /// The tree, key bytes and space name a key lives under.
    fn locate(&self, key: &Key) -> (&TransactionalTree, Vec<u8>) {
        match key {
            Key::User(name) => (self.users, name.as_bytes().to_vec()),
            Key::Session(sid) => (self.sessions, sid.as_bytes().to_vec()),
            Key::Refresh(hash) => (self.refresh_tokens, hash.to_vec()),
            Key::MfaToken(hash) => (self.mfa_tokens, hash.to_vec()),
            Key::Revocation(kind, id) => (self.revocations, revocation_key(*kind, id)),
        }
    }

    /// Stores a revocation entry at `seq`, replacing the log position of an earlier entry
    /// of the same kind and id.
    fn put_revocation(&self, entry: &RevocationRecord, version: Version) -> TxResult<()> {
        let key = revocation_key(entry.kind, &entry.key_id());
        self.unlog(&key)?;
        self.revocations
            .insert(key.as_slice(), encode(version, entry).or_else(abort)?)?;
        self.revocation_log
            .insert(&entry.seq.to_be_bytes(), key.as_slice())?;
        Ok(())
    }

    /// Removes the log position of the revocation entry stored under `key`, if any.
    fn unlog(&self, key: &[u8]) -> TxResult<()> {
        if let Some(bytes) = self.revocations.get(key)? {
            let old: Versioned<RevocationRecord> = decode(&bytes, "revocations").or_else(abort)?;
            self.revocation_log.remove(&old.record.seq.to_be_bytes())?;
        }
        Ok(())
    }

    /// Applies `txn` as the commit after `last`; returns its batch.
    fn apply(&self, txn: &Txn, last: Version) -> TxResult<ChangeBatch> {
        for check in &txn.checks {
            let (tree, key) = self.locate(&check.key);
            let current = tree.get(key)?.map(|bytes| version_of(&bytes));
            if current != check.version {
                return abort(StoreError::Conflict);
            }
        }
        // Revocation entries take the positions after `last`; the commit the one after them.
        let entries = txn
            .writes
            .iter()
            .filter(|w| matches!(w, Write::PutRevocation(_)))
            .count() as u64;
        let revision = last + entries + 1;
        let mut next_seq = last;
        let mut changes = Vec::with_capacity(txn.writes.len());
        for write in &txn.writes {
            let change = match write {
                Write::PutUser(user) => {
                    let bytes = encode(revision, user).or_else(abort)?;
                    self.users.insert(user.username.as_bytes(), bytes)?;
                    Change::User(Versioned {
                        version: revision,
                        record: user.clone(),
                    })
                }
                Write::PutSession(session) => {
                    let bytes = encode(revision, session).or_else(abort)?;
                    self.sessions.insert(session.sid.as_bytes(), bytes)?;
                    Change::Session(Versioned {
                        version: revision,
                        record: session.clone(),
                    })
                }
                Write::PutRefresh(hash, record) => {
                    let bytes = encode(revision, record).or_else(abort)?;
                    self.refresh_tokens.insert(hash.as_slice(), bytes)?;
                    Change::Refresh(*hash)
                }
                Write::PutMfaToken(hash, record) => {
                    let bytes = encode(revision, record).or_else(abort)?;
                    self.mfa_tokens.insert(hash.as_slice(), bytes)?;
                    Change::MfaToken(*hash)
                }
                Write::PutRevocation(entry) => {
                    next_seq += 1;
                    let entry = RevocationRecord {
                        seq: next_seq,
                        ..entry.clone()
                    };
                    self.put_revocation(&entry, revision)?;
                    Change::Revocation(entry)
                }
                Write::Delete(key) => {
                    let (tree, bytes) = self.locate(key);
                    if matches!(key, Key::Revocation(..)) {
                        self.unlog(&bytes)?;
                    }
                    tree.remove(bytes)?;
                    Change::Deleted(key.clone())
                }
            };
            changes.push(change);
        }
        self.meta.insert(REVISION_KEY, &revision.to_be_bytes())?;
        Ok(ChangeBatch { revision, changes })
    }
}

impl SledBackend {
    /// Opens (creating if needed) the store in the folder `path`; every commit is handed to
    /// `sink`.
    pub fn open(path: &Path, sink: Arc<dyn ChangeSink>) -> Result<SledBackend, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            .open()?;
        let meta = db.open_tree("meta")?;
        let revision = match meta.get(REVISION_KEY)? {
            Some(bytes) => read_u64(&bytes, "meta")?,
            // A store written before revisions were kept: its entries' positions came from
            // sled's id generator, so continue above every id it has handed out.
            None => db.generate_id()?,
        };
        let epoch = match meta.get(EPOCH_KEY)? {
            Some(bytes) => String::from_utf8(bytes.to_vec()).map_err(|_| StoreError::Corrupt {
                space: "meta",
                reason: "the epoch is not UTF-8".into(),
            })?,
            None => {
                let epoch = crate::random::random_id(12);
                meta.insert(EPOCH_KEY, epoch.as_bytes())?;
                db.flush()?;
                epoch
            }
        };
        Ok(SledBackend {
            users: db.open_tree("users")?,
            sessions: db.open_tree("sessions")?,
            refresh_tokens: db.open_tree("refresh_tokens")?,
            mfa_tokens: db.open_tree("mfa_tokens")?,
            revocations: db.open_tree("revocations")?,
            revocation_log: db.open_tree("revocation_log")?,
            meta,
            epoch,
            writer: Mutex::new(revision),
            sink,
            flusher: Flusher::start(db.clone())
                .map_err(|err| StoreError::Unavailable(format!("cannot start a thread: {err}")))?,
            exports: backup::Exports::default(),
            db,
        })
    }

    fn commit_blocking(&self, txn: &Txn) -> Result<Committed, StoreError> {
        let mut last = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        self.exports.before_commit(self, txn)?;
        let trees = (
            &self.users,
            &self.sessions,
            &self.refresh_tokens,
            &self.mfa_tokens,
            &self.revocations,
            &self.revocation_log,
            &self.meta,
        );
        let batch = trees.transaction(
            |(users, sessions, refresh_tokens, mfa_tokens, revocations, revocation_log, meta)| {
                Trees {
                    users,
                    sessions,
                    refresh_tokens,
                    mfa_tokens,
                    revocations,
                    revocation_log,
                    meta,
                }
                .apply(txn, *last)
            },
        )?;
        *last = batch.revision;
        // Still under the writer lock: the sink sees commits in order.
        self.sink.apply(&batch);
        Ok(batch.into_committed())
    }

    fn snapshot_blocking(&self, revoked_jti: RevokedJtiSink<'_>) -> Result<Snapshot, StoreError> {
        let revision = *self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut snapshot = Snapshot {
            revision,
            ..Snapshot::default()
        };
        for item in self.users.iter() {
            let (_, bytes) = item?;
            snapshot.users.push(decode(&bytes, "users")?);
        }
        for item in self.sessions.iter() {
            let (_, bytes) = item?;
            snapshot.sessions.push(decode(&bytes, "sessions")?);
        }
        for item in self
            .revocations
            .scan_prefix([kind_byte(RevocationKind::Jti)])
            .keys()
        {
            let key = item?;
            revoked_jti(&String::from_utf8_lossy(&key[1..]));
        }
        Ok(snapshot)
    }

    fn expired_blocking(&self, now: UnixSeconds) -> Result<Vec<Expired>, StoreError> {
        let mut expired = Vec::new();
        for item in self.revocations.iter() {
            let (_, bytes) = item?;
            let entry: Versioned<RevocationRecord> = decode(&bytes, "revocations")?;
            if entry.record.expires_at < now {
                expired.push(Expired {
                    key: entry.record.key(),
                    version: entry.version,
                });
            }
        }
        for item in self.refresh_tokens.iter() {
            let (key, bytes) = item?;
            let record: Versioned<RefreshRecord> = decode(&bytes, "refresh_tokens")?;
            if record.record.expires_at < now {
                let hash: RefreshHash =
                    key.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                        space: "refresh_tokens",
                        reason: "key is not a 32-byte hash".into(),
                    })?;
                expired.push(Expired {
                    key: Key::Refresh(hash),
                    version: record.version,
                });
            }
        }
        for item in self.mfa_tokens.iter() {
            let (key, bytes) = item?;
            let record: Versioned<MfaTokenRecord> = decode(&bytes, "mfa_tokens")?;
            if record.record.expires_at < now {
                let hash: RefreshHash =
                    key.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                        space: "mfa_tokens",
                        reason: "key is not a 32-byte hash".into(),
                    })?;
                expired.push(Expired {
                    key: Key::MfaToken(hash),
                    version: record.version,
                });
            }
        }
        for item in self.sessions.iter() {
            let (_, bytes) = item?;
            let session: Versioned<SessionRecord> = decode(&bytes, "sessions")?;
            if session.record.expires_at < now {
                expired.push(Expired {
                    key: Key::Session(session.record.sid),
                    version: session.version,
                });
            }
        }
        Ok(expired)
    }

    fn users_page_blocking(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<UserRecord>, bool), StoreError> {
        let start = match after {
            Some(name) => Bound::Excluded(name.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut users = Vec::with_capacity(limit.min(1024));
        for item in self.users.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (_, bytes) = item?;
            if users.len() == limit {
                return Ok((users, true));
            }
            let user: Versioned<UserRecord> = decode(&bytes, "users")?;
            users.push(user.record);
        }
        Ok((users, false))
    }

    fn revocations_page_blocking(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<RevocationRecord>, Option<u64>), StoreError> {
        let start = match after {
            Some(seq) => Bound::Excluded(seq.to_be_bytes()),
            None => Bound::Unbounded,
        };
        let mut entries: Vec<RevocationRecord> = Vec::with_capacity(limit.min(1024));
        for item in self
            .revocation_log
            .range::<[u8; 8], _>((start, Bound::Unbounded))
        {
            let (_, key) = item?;
            if entries.len() == limit {
                let next = entries.last().map(|entry| entry.seq);
                return Ok((entries, next));
            }
            if let Some(bytes) = self.revocations.get(&key)? {
                let entry: Versioned<RevocationRecord> = decode(&bytes, "revocations")?;
                entries.push(entry.record);
            }
        }
        Ok((entries, None))
    }

    fn get<T: Stored>(
        tree: &sled::Tree,
        space: &'static str,
        key: &[u8],
    ) -> Result<Option<Versioned<T>>, StoreError> {
        tree.get(key)?
            .map(|bytes| decode(&bytes, space))
            .transpose()
    }
}

fn read_u64(bytes: &[u8], space: &'static str) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        space,
        reason: "not a 64-bit number".into(),
    })?;
    Ok(u64::from_be_bytes(array))
}

/// Runs a sled call (which may wait for the log or a flush) without stalling the async
/// workers: on the multi-threaded runtime the worker hands its other tasks off first.
fn off_reactor<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

impl Backend for SledBackend {
    fn name(&self) -> &'static str {
        "sled"
    }

    fn epoch(&self) -> Option<String> {
        Some(self.epoch.clone())
    }

    fn snapshot<'a>(
        &'a self,
        revoked_jti: RevokedJtiSink<'a>,
    ) -> BoxFuture<'a, Result<Snapshot, StoreError>> {
        Box::pin(async move { off_reactor(|| self.snapshot_blocking(revoked_jti)) })
    }

    fn commit(&self, txn: Txn) -> BoxFuture<'_, Result<Committed, StoreError>> {
        Box::pin(async move {
            let committed = off_reactor(|| self.commit_blocking(&txn))?;
            if !self.flusher.flush().await {
                return Err(StoreError::Unavailable(
                    "flushing the store to disk failed".into(),
                ));
            }
            Ok(committed)
        })
    }

    fn refresh(
        &self,
        hash: RefreshHash,
    ) -> BoxFuture<'_, Result<Option<Versioned<RefreshRecord>>, StoreError>> {
        Box::pin(
            async move { off_reactor(|| Self::get(&self.refresh_tokens, "refresh_tokens", &hash)) },
        )
    }

    fn mfa_token(
        &self,
        hash: RefreshHash,
    ) -> BoxFuture<'_, Result<Option<Versioned<MfaTokenRecord>>, StoreError>> {
        Box::pin(async move { off_reactor(|| Self::get(&self.mfa_tokens, "mfa_tokens", &hash)) })
    }

    fn revocation(
        &self,
        kind: RevocationKind,
        id: String,
    ) -> BoxFuture<'_, Result<Option<Versioned<RevocationRecord>>, StoreError>> {
        Box::pin(async move {
            off_reactor(|| Self::get(&self.revocations, "revocations", &revocation_key(kind, &id)))
        })
    }

    fn users_page(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<UsersPage, StoreError>> {
        Box::pin(async move { off_reactor(|| self.users_page_blocking(after.as_deref(), limit)) })
    }

    fn revocations_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RevocationsPage, StoreError>> {
        Box::pin(async move { off_reactor(|| self.revocations_page_blocking(after, limit)) })
    }

    fn expired(&self, now: UnixSeconds) -> BoxFuture<'_, Result<Vec<Expired>, StoreError>> {
        Box::pin(async move { off_reactor(|| self.expired_blocking(now)) })
    }

    fn revocation_count(&self) -> BoxFuture<'_, Result<usize, StoreError>> {
        // Counting walks the tree (about a second per million entries).
        Box::pin(async move { off_reactor(|| Ok(self.revocations.len())) })
    }

    fn next_id(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move { off_reactor(|| self.next_id_blocking()) })
    }

    fn export<'a>(
        &'a self,
        out: &'a tokio::sync::mpsc::Sender<Exported>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.export_to(out))
    }

    fn restore_state(&self) -> BoxFuture<'_, Result<RestoreState, StoreError>> {
        Box::pin(async move { off_reactor(|| self.restore_state_blocking()) })
    }

    fn begin_restore(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { off_reactor(|| self.begin_restore_blocking()) })
    }

    fn import(
        &self,
        records: Vec<Record>,
        revision: Version,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { off_reactor(|| self.import_blocking(&records, revision)) })
    }

    fn finish_restore(&self, point: ExportPoint) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { off_reactor(|| self.finish_restore_blocking(point)) })
    }

    fn close(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::backend::Check;
    use crate::store::records::NewRevocation;

    /// Records every batch it is handed.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<ChangeBatch>>);

    impl ChangeSink for Recorder {
        fn apply(&self, batch: &ChangeBatch) {
            self.0.lock().unwrap().push(batch.clone());
        }
    }

    fn user(name: &str) -> UserRecord {
        UserRecord {
            account_id: 1,
            username: name.into(),
            password_hash: "$argon2id$...".into(),
            roles: vec![],
            disabled: false,
            created_at: 0,
            generation: 0,
            second_factor: None,
        }
    }

    fn jti(id: &str) -> RevocationRecord {
        RevocationRecord::unplaced(&NewRevocation {
            kind: RevocationKind::Jti,
            id: id.into(),
            revoked_at: 0,
            expires_at: 100,
            reason: None,
            ended_sessions: Vec::new(),
            serial: None,
        })
    }

    fn open(dir: &Path) -> (SledBackend, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        (SledBackend::open(dir, recorder.clone()).unwrap(), recorder)
    }

    #[tokio::test]
    async fn a_failed_precondition_writes_nothing_and_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, recorder) = open(dir.path());
        let mut txn = Txn::default();
        txn.put_user(user("alice"));
        let first = backend.commit(txn).await.unwrap();
        let mut stale = Txn::default();
        stale
            .expect(Key::User("alice".into()), Some(first.revision - 1))
            .put_user(UserRecord {
                disabled: true,
                ..user("alice")
            })
            .revoke(&NewRevocation {
                kind: RevocationKind::Jti,
                id: "j".into(),
                revoked_at: 0,
                expires_at: 1,
                reason: None,
                ended_sessions: Vec::new(),
                serial: None,
            });
        assert!(matches!(
            backend.commit(stale).await,
            Err(StoreError::Conflict)
        ));
        let jtis = Mutex::new(Vec::new());
        let snapshot = backend
            .snapshot(&|jti| jtis.lock().unwrap().push(jti.to_owned()))
            .await
            .unwrap();
        assert!(!snapshot.users[0].record.disabled);
        assert!(jtis.lock().unwrap().is_empty());
        assert_eq!(recorder.0.lock().unwrap().len(), 1);
        let mut current = Txn::default();
        current.checks.push(Check {
            key: Key::User("alice".into()),
            version: Some(first.revision),
        });
        current.put_user(UserRecord {
            disabled: true,
            ..user("alice")
        });
        backend.commit(current).await.unwrap();
    }

    #[tokio::test]
    async fn entries_are_placed_in_commit_order_and_published_in_that_order() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, recorder) = open(dir.path());
        let mut seqs = Vec::new();
        for batch in [vec!["a", "b"], vec!["c"], vec!["d", "e", "f"]] {
            let mut txn = Txn::default();
            for id in batch {
                txn.writes.push(Write::PutRevocation(jti(id)));
            }
            let committed = backend.commit(txn).await.unwrap();
            seqs.extend(committed.revocations.iter().map(|e| (e.seq, e.id.clone())));
            assert!(
                committed
                    .revocations
                    .iter()
                    .all(|e| e.seq < committed.revision)
            );
        }
        let ordered: Vec<_> = seqs.windows(2).map(|w| w[0].0 < w[1].0).collect();
        assert!(ordered.iter().all(|&up| up), "{seqs:?}");
        let (listed, _) = backend.revocations_page(None, 10).await.unwrap();
        let ids: Vec<_> = listed.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d", "e", "f"]);
        let revisions: Vec<_> = recorder
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.revision)
            .collect();
        assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    }

    #[tokio::test]
    async fn commits_survive_a_reopen_with_their_versions_and_positions() {
        let dir = tempfile::tempdir().unwrap();
        let committed = {
            let (backend, _) = open(dir.path());
            let mut txn = Txn::default();
            txn.put_user(user("alice"));
            txn.writes.push(Write::PutRevocation(jti("j1")));
            backend.commit(txn).await.unwrap()
        };
        let (backend, _) = open(dir.path());
        let jtis = Mutex::new(Vec::new());
        let snapshot = backend
            .snapshot(&|jti| jtis.lock().unwrap().push(jti.to_owned()))
            .await
            .unwrap();
        assert_eq!(snapshot.revision, committed.revision);
        assert_eq!(snapshot.users[0].version, committed.revision);
        assert_eq!(*jtis.lock().unwrap(), ["j1"]);
        let mut txn = Txn::default();
        txn.writes.push(Write::PutRevocation(jti("j2")));
        let next = backend.commit(txn).await.unwrap();
        assert!(next.revocations[0].seq > committed.revocations[0].seq);
    }

    #[tokio::test]
    async fn the_epoch_is_made_at_the_first_open_and_kept_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path()).0.epoch().unwrap();
        assert!(first.len() >= 16 && !first.contains('.'), "{first}");
        assert_eq!(open(dir.path()).0.epoch().unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(open(other.path()).0.epoch().unwrap(), first);
    }

    #[tokio::test]
    async fn replacing_a_user_entry_moves_it_to_the_end_of_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, _) = open(dir.path());
        let entry = |revoked_at| {
            RevocationRecord::unplaced(&NewRevocation {
                kind: RevocationKind::User,
                id: "alice".into(),
                revoked_at,
                expires_at: 100,
                reason: None,
                ended_sessions: Vec::new(),
                serial: None,
            })
        };
        for txn_writes in [
            vec![Write::PutRevocation(entry(1))],
            vec![Write::PutRevocation(jti("j"))],
            vec![Write::PutRevocation(entry(2))],
        ] {
            backend
                .commit(Txn {
                    checks: vec![],
                    writes: txn_writes,
                })
                .await
                .unwrap();
        }
        let (listed, _) = backend.revocations_page(None, 10).await.unwrap();
        let order: Vec<_> = listed
            .iter()
            .map(|e| (e.id.as_str(), e.revoked_at))
            .collect();
        assert_eq!(order, [("j", 0), ("alice", 2)]);
        let mut txn = Txn::default();
        txn.delete(Key::Revocation(RevocationKind::User, "alice".into()));
        backend.commit(txn).await.unwrap();
        let (listed, _) = backend.revocations_page(None, 10).await.unwrap();
        assert_eq!(listed.len(), 1);
    }
}

//! Backups and restores of the sled store. sled has no snapshot across trees, so an export
//! reads every record as it was at one revision while commits go on: until the export has
//! passed a record, a commit that changes or deletes it first saves the old value, which
//! the export sends instead. A restore writes records as they are, with the store marked
//! incomplete from its first write to its last.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::codec::{decode, encode, version_of};
use super::{SledBackend, off_reactor, revocation_key};
use crate::store::StoreError;
use crate::store::backend::{
    ExportPoint, Exported, Record, RestoreState, Txn, Write, send_exported,
};
use crate::store::records::{
    Key, RefreshHash, RefreshRecord, RevocationRecord, SessionRecord, UserRecord, Version,
    Versioned,
};

/// The meta tree's key that marks a store a restore is filling (present: incomplete).
pub(super) const RESTORE_KEY: &[u8] = b"restore";

/// The meta tree's key of the base added to sled's id generator (u64, big-endian): a
/// restored store hands out ids above every id of its backup.
pub(super) const ID_BASE_KEY: &[u8] = b"id_base";

/// How many records an export reads per visit to sled.
const EXPORT_CHUNK: usize = 256;

/// The trees an export reads, in the order it sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Space {
    Users = 0,
    Sessions = 1,
    RefreshTokens = 2,
    Revocations = 3,
}

const SPACES: [Space; 4] = [
    Space::Users,
    Space::Sessions,
    Space::RefreshTokens,
    Space::Revocations,
];

/// How far an export has read one tree, and the old values commits saved for it.
#[derive(Default)]
struct Progress {
    /// The last key sent; `None` before the first.
    cursor: Option<Vec<u8>>,
    done: bool,
    /// Values as of the export's revision, of keys changed or deleted since and not yet
    /// passed.
    saved: BTreeMap<Vec<u8>, sled::IVec>,
}

impl Progress {
    fn passed(&self, key: &[u8]) -> bool {
        self.done || self.cursor.as_deref().is_some_and(|cursor| key <= cursor)
    }
}

/// The export in progress, if any.
struct Running {
    revision: Version,
    spaces: [Progress; 4],
}

/// The running export (one at a time: a second waits for the first).
#[derive(Default)]
pub(super) struct Exports {
    running: Mutex<Option<Running>>,
    turn: tokio::sync::Mutex<()>,
}

impl Exports {
    fn lock(&self) -> MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Saves, for the running export, the value as of its revision of every record `txn`
    /// writes that the export has not passed yet. Runs under the writer lock, before the
    /// commit, so the value read is the one the commit replaces.
    pub(super) fn before_commit(&self, backend: &SledBackend, txn: &Txn) -> Result<(), StoreError> {
        let mut running = self.lock();
        let Some(export) = running.as_mut() else {
            return Ok(());
        };
        for write in &txn.writes {
            let Some((space, key)) = written(write) else {
                continue;
            };
            let progress = &mut export.spaces[space as usize];
            if progress.passed(&key) || progress.saved.contains_key(&key) {
                continue;
            }
            if let Some(old) = backend.tree(space).get(&key)?
                && version_of(&old) <= export.revision
            {
                progress.saved.insert(key, old);
            }
        }
        Ok(())
    }
}

/// The tree and key a write touches, when a backup carries that tree (pending second
/// login steps live five minutes and are not backed up).
fn written(write: &Write) -> Option<(Space, Vec<u8>)> {
    Some(match write {
        Write::PutUser(user) => (Space::Users, user.username.as_bytes().to_vec()),
        Write::PutSession(session) => (Space::Sessions, session.sid.as_bytes().to_vec()),
        Write::PutRefresh(hash, _) => (Space::RefreshTokens, hash.to_vec()),
        Write::PutRevocation(entry) => (
            Space::Revocations,
            revocation_key(entry.kind, &entry.key_id()),
        ),
        Write::PutMfaToken(..) | Write::Delete(Key::MfaToken(_)) => return None,
        Write::Delete(key) => match key {
            Key::User(name) => (Space::Users, name.as_bytes().to_vec()),
            Key::Session(sid) => (Space::Sessions, sid.as_bytes().to_vec()),
            Key::Refresh(hash) => (Space::RefreshTokens, hash.to_vec()),
            Key::Revocation(kind, id) => (Space::Revocations, revocation_key(*kind, id)),
            Key::MfaToken(_) => return None,
        },
    })
}

/// Ends the running export however the export ends (the reader may go away mid-way).
struct EndExport<'a>(&'a Exports);

impl Drop for EndExport<'_> {
    fn drop(&mut self) {
        *self.0.lock() = None;
    }
}

impl SledBackend {
    fn tree(&self, space: Space) -> &sled::Tree {
        match space {
            Space::Users => &self.users,
            Space::Sessions => &self.sessions,
            Space::RefreshTokens => &self.refresh_tokens,
            Space::Revocations => &self.revocations,
        }
    }

    pub(super) async fn export_to(
        &self,
        out: &tokio::sync::mpsc::Sender<Exported>,
    ) -> Result<(), StoreError> {
        let _turn = self.exports.turn.lock().await;
        let point = off_reactor(|| -> Result<ExportPoint, StoreError> {
            let last = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            *self.exports.lock() = Some(Running {
                revision: *last,
                spaces: Default::default(),
            });
            Ok(ExportPoint {
                revision: *last,
                next_id: self.next_id_blocking()?,
            })
        });
        let _end = EndExport(&self.exports);
        send_exported(out, Exported::Begin(point?)).await?;
        for space in SPACES {
            loop {
                let (records, done) = off_reactor(|| self.export_chunk(space))?;
                for record in records {
                    send_exported(out, Exported::Record(record)).await?;
                }
                if done {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The next records of `space` as of the export's revision; `true` once it is all sent.
    fn export_chunk(&self, space: Space) -> Result<(Vec<Record>, bool), StoreError> {
        let mut running = self.exports.lock();
        let Some(export) = running.as_mut() else {
            return Err(StoreError::Unavailable("the export ended".into()));
        };
        let revision = export.revision;
        let progress = &mut export.spaces[space as usize];
        let start = match &progress.cursor {
            Some(cursor) => Bound::Excluded(cursor.clone()),
            None => Bound::Unbounded,
        };
        let mut records = Vec::with_capacity(EXPORT_CHUNK);
        let mut read = 0;
        for item in self
            .tree(space)
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
        {
            let (key, value) = item?;
            read += 1;
            let as_of = match progress.saved.remove(key.as_ref()) {
                Some(old) => Some(old),
                None if version_of(&value) <= revision => Some(value),
                // Made after the export's revision.
                None => None,
            };
            if let Some(bytes) = as_of {
                records.push(to_record(space, &key, &bytes)?);
            }
            progress.cursor = Some(key.to_vec());
            if read == EXPORT_CHUNK {
                return Ok((records, false));
            }
        }
        // What is left was deleted after the export's revision, before it was reached.
        for (key, bytes) in std::mem::take(&mut progress.saved) {
            records.push(to_record(space, &key, &bytes)?);
        }
        progress.done = true;
        Ok((records, true))
    }

    pub(super) fn restore_state_blocking(&self) -> Result<RestoreState, StoreError> {
        Ok(RestoreState {
            holds_records: !(self.users.is_empty()
                && self.sessions.is_empty()
                && self.revocations.is_empty()),
            incomplete: self.meta.contains_key(RESTORE_KEY)?,
        })
    }

    pub(super) fn begin_restore_blocking(&self) -> Result<(), StoreError> {
        self.meta.insert(RESTORE_KEY, b"incomplete")?;
        self.db.flush()?;
        for tree in [
            &self.users,
            &self.sessions,
            &self.refresh_tokens,
            &self.mfa_tokens,
            &self.revocations,
            &self.revocation_log,
        ] {
            tree.clear()?;
        }
        self.db.flush()?;
        Ok(())
    }

    pub(super) fn import_blocking(
        &self,
        records: &[Record],
        revision: Version,
    ) -> Result<(), StoreError> {
        for record in records {
            match record {
                Record::User(user) => {
                    self.users
                        .insert(user.username.as_bytes(), encode(revision, user)?)?;
                }
                Record::Session(session) => {
                    self.sessions
                        .insert(session.sid.as_bytes(), encode(revision, session)?)?;
                }
                Record::Refresh(hash, refresh) => {
                    self.refresh_tokens
                        .insert(hash.as_slice(), encode(revision, refresh)?)?;
                }
                Record::Revocation(entry) => {
                    let key = revocation_key(entry.kind, &entry.key_id());
                    self.revocations
                        .insert(key.as_slice(), encode(revision, entry)?)?;
                    self.revocation_log
                        .insert(entry.seq.to_be_bytes(), key.as_slice())?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn finish_restore_blocking(&self, point: ExportPoint) -> Result<(), StoreError> {
        let current = self.next_id_blocking()?;
        let base = point.next_id.max(current);
        self.meta.insert(ID_BASE_KEY, &base.to_be_bytes())?;
        let mut last = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        *last = (*last).max(point.revision);
        self.meta.insert(super::REVISION_KEY, &last.to_be_bytes())?;
        self.meta
            .insert(super::EPOCH_KEY, crate::random::random_id(12).as_bytes())?;
        // Everything above on disk before the mark goes.
        self.db.flush()?;
        self.meta.remove(RESTORE_KEY)?;
        self.db.flush()?;
        Ok(())
    }

    /// A new id: sled's generator above the restored base.
    pub(super) fn next_id_blocking(&self) -> Result<u64, StoreError> {
        let base = match self.meta.get(ID_BASE_KEY)? {
            Some(bytes) => super::read_u64(&bytes, "meta")?,
            None => 0,
        };
        Ok(base.saturating_add(self.db.generate_id()?))
    }
}

fn to_record(space: Space, key: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
    Ok(match space {
        Space::Users => Record::User(decode::<UserRecord>(bytes, "users")?.record),
        Space::Sessions => Record::Session(decode::<SessionRecord>(bytes, "sessions")?.record),
        Space::RefreshTokens => {
            let hash: RefreshHash = key.try_into().map_err(|_| StoreError::Corrupt {
                space: "refresh_tokens",
                reason: "key is not a 32-byte hash".into(),
            })?;
            let record: Versioned<RefreshRecord> = decode(bytes, "refresh_tokens")?;
            Record::Refresh(hash, record.record)
        }
        Space::Revocations => {
            Record::Revocation(decode::<RevocationRecord>(bytes, "revocations")?.record)
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::store::backend::Backend as _;
    use crate::store::records::{NewRevocation, RevocationKind};
    use crate::store::view::View;

    fn user(name: &str, generation: u64) -> UserRecord {
        UserRecord {
            account_id: 1,
            username: name.into(),
            password_hash: "$argon2id$...".into(),
            roles: vec![],
            disabled: false,
            created_at: 0,
            generation,
            second_factor: None,
        }
    }

    fn name(i: usize) -> String {
        format!("user-{i:04}")
    }

    fn open(dir: &std::path::Path) -> Arc<SledBackend> {
        Arc::new(SledBackend::open(dir, Arc::new(View::default())).unwrap())
    }

    async fn commit(backend: &SledBackend, build: impl FnOnce(&mut Txn)) {
        let mut txn = Txn::default();
        build(&mut txn);
        backend.commit(txn).await.unwrap();
    }

    /// The users an export sent, by name, with their generation.
    fn users(records: &[Record]) -> BTreeMap<String, u64> {
        records
            .iter()
            .filter_map(|record| match record {
                Record::User(user) => Some((user.username.clone(), user.generation)),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_export_sends_every_record_as_of_its_start_while_commits_change_them() {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(dir.path());
        // More users than one chunk, so that the export is held mid-way through them.
        let count = EXPORT_CHUNK * 3;
        commit(&backend, |txn| {
            for i in 0..count {
                txn.put_user(user(&name(i), 0));
            }
        })
        .await;
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let exporter = backend.clone();
        let export = tokio::spawn(async move { exporter.export(&tx).await });
        let Some(Exported::Begin(point)) = rx.recv().await else {
            panic!("the export begins with its point");
        };
        let mut records = vec![];
        if let Some(Exported::Record(record)) = rx.recv().await {
            records.push(record);
        }
        // The export now holds at most one chunk: a record it passed, ones it has not.
        let passed = name(1);
        let changed = name(count - 10);
        let deleted = name(count - 5);
        commit(&backend, |txn| {
            txn.put_user(user(&passed, 7))
                .put_user(user(&changed, 7))
                .delete(Key::User(deleted.clone()))
                .put_user(user("zz-made-later", 0))
                .revoke(&NewRevocation {
                    kind: RevocationKind::Jti,
                    id: "later".into(),
                    revoked_at: 0,
                    expires_at: 100,
                    reason: None,
                    ended_sessions: Vec::new(),
                    serial: None,
                });
        })
        .await;
        while let Some(item) = rx.recv().await {
            let Exported::Record(record) = item else {
                panic!("one begin only");
            };
            records.push(record);
        }
        export.await.unwrap().unwrap();
        let sent = users(&records);
        assert_eq!(sent.len(), count, "every user as of the start, once");
        assert_eq!(sent[&passed], 0);
        assert_eq!(sent[&changed], 0, "the value before the change");
        assert_eq!(sent[&deleted], 0, "a user deleted since is still sent");
        assert!(!sent.contains_key("zz-made-later"));
        assert!(records.iter().all(|r| !matches!(r, Record::Revocation(_))));
        assert!(point.revision > 0);
        assert!(
            backend.exports.lock().is_none(),
            "the saved values are gone"
        );
        // A second export sees the store as it is now.
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let exporter = backend.clone();
        let export = tokio::spawn(async move { exporter.export(&tx).await });
        let mut now = vec![];
        while let Some(item) = rx.recv().await {
            if let Exported::Record(record) = item {
                now.push(record);
            }
        }
        export.await.unwrap().unwrap();
        let sent = users(&now);
        assert_eq!((sent[&changed], sent.contains_key(&deleted)), (7, false));
        assert!(sent.contains_key("zz-made-later"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_export_whose_reader_goes_away_ends_and_forgets_what_it_saved() {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(dir.path());
        commit(&backend, |txn| {
            for i in 0..EXPORT_CHUNK * 2 {
                txn.put_user(user(&name(i), 0));
            }
        })
        .await;
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let exporter = backend.clone();
        let export = tokio::spawn(async move { exporter.export(&tx).await });
        rx.recv().await.unwrap();
        drop(rx);
        assert!(export.await.unwrap().is_err());
        assert!(backend.exports.lock().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restore_marks_the_store_incomplete_until_it_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(dir.path());
        let empty = backend.restore_state().await.unwrap();
        assert_eq!((empty.holds_records, empty.incomplete), (false, false));
        let epoch = backend.epoch().unwrap();
        backend.begin_restore().await.unwrap();
        let records = vec![Record::User(UserRecord {
            account_id: 41,
            ..user("alice", 3)
        })];
        backend.import(records, 50).await.unwrap();
        let midway = backend.restore_state().await.unwrap();
        assert_eq!((midway.holds_records, midway.incomplete), (true, true));
        backend
            .finish_restore(ExportPoint {
                revision: 50,
                next_id: 42,
            })
            .await
            .unwrap();
        drop(backend);
        let reopened = open(dir.path());
        let done = reopened.restore_state().await.unwrap();
        assert_eq!((done.holds_records, done.incomplete), (true, false));
        assert_ne!(
            reopened.epoch().unwrap(),
            epoch,
            "a restored store has a new epoch"
        );
        assert!(reopened.next_id().await.unwrap() >= 42);
        let (page, _) = reopened.users_page(None, 10).await.unwrap();
        assert_eq!(page[0].generation, 3);
        // The next commit comes after every restored revision.
        let mut txn = Txn::default();
        txn.put_user(user("bob", 0));
        assert!(reopened.commit(txn).await.unwrap().revision > 50);
    }
}

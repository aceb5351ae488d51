//! The in-memory view the hot path reads: users, sessions (and each user's sessions) and
//! the revoked jtis, loaded from a backend snapshot and then fed only by the ordered
//! change stream. Exact: a miss here is a miss in the store, so verifying a token never
//! waits on the backend.
//!
//! In cluster mode an instance's own commits are applied at once ([`View::apply_own`]), ahead
//! of the stream that delivers them later; until the stream catches up, a key such a commit
//! wrote is not changed by older stream entries, and a resync snapshot does not undo it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::backend::{Change, ChangeBatch, ChangeSink, Snapshot};
use super::recent::RecentRevocations;
use super::records::{Key, RevocationKind, SessionRecord, UserRecord, Version, Versioned};

/// A user or session as the view holds it.
pub type Shared<T> = Versioned<Arc<T>>;

#[derive(Default)]
struct Tables {
    users: HashMap<String, Shared<UserRecord>>,
    sessions: HashMap<String, Shared<SessionRecord>>,
    /// username → sids, so a user's sessions are listed without a scan.
    sessions_by_user: HashMap<String, BTreeSet<String>>,
}

/// The revoked jtis as 128-bit keyed hashes: 16 bytes an entry at a million entries, and
/// with per-process random keys a collision (a false "revoked") is as likely as guessing
/// a 128-bit secret.
struct JtiSet {
    keys: (RandomState, RandomState),
    hashes: RwLock<HashSet<u128, BuildHasherDefault<IdentityHasher>>>,
}

/// The set's keys are already uniformly random: hashing them again would only cost time.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

impl JtiSet {
    fn new() -> JtiSet {
        JtiSet {
            keys: (RandomState::new(), RandomState::new()),
            hashes: RwLock::default(),
        }
    }

    fn hash(&self, jti: &str) -> u128 {
        (u128::from(self.keys.0.hash_one(jti)) << 64) | u128::from(self.keys.1.hash_one(jti))
    }
}

/// The view. Shared by the store (which reads it) and the backend (which feeds it).
pub struct View {
    tables: RwLock<Tables>,
    revoked_jtis: JtiSet,
    /// The revision of the last batch the change stream delivered.
    revision: AtomicU64,
    /// This instance's commits applied before the stream delivered them, oldest first.
    ahead: Mutex<Vec<ChangeBatch>>,
    /// The newest revocation entries, for the revocation feed.
    recent: RecentRevocations,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("revision", &self.revision())
            .finish_non_exhaustive()
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl Default for View {
    fn default() -> Self {
        View {
            tables: RwLock::default(),
            revoked_jtis: JtiSet::new(),
            revision: AtomicU64::new(0),
            ahead: Mutex::default(),
            recent: RecentRevocations::default(),
        }
    }
}

impl View {
    /// Collects the revoked jtis of a snapshot, for [`View::load`].
    pub fn revoked_jti_loader(&self) -> RevokedJtiLoader<'_> {
        RevokedJtiLoader {
            set: &self.revoked_jtis,
            hashes: Mutex::default(),
        }
    }

    /// Replaces everything with `snapshot` and the jtis `revoked` collected.
    pub fn load(&self, snapshot: Snapshot, revoked: RevokedJtiLoader<'_>) {
        let mut tables = Tables::default();
        for user in snapshot.users {
            tables.users.insert(
                user.record.username.clone(),
                Versioned {
                    version: user.version,
                    record: Arc::new(user.record),
                },
            );
        }
        for session in snapshot.sessions {
            insert_session(
                &mut tables,
                Versioned {
                    version: session.version,
                    record: Arc::new(session.record),
                },
            );
        }
        let hashes = revoked
            .hashes
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let mut ahead = self.ahead.lock().unwrap_or_else(PoisonError::into_inner);
        ahead.retain(|batch| batch.revision > snapshot.revision);
        let mut tables_guard = write(&self.tables);
        *tables_guard = tables;
        *write(&self.revoked_jtis.hashes) = hashes;
        // Own commits the snapshot predates stay applied.
        for batch in ahead.iter() {
            self.apply_changes(&mut tables_guard, &batch.changes, |_| false);
        }
        self.revision.store(snapshot.revision, Ordering::Release);
        drop(tables_guard);
        drop(ahead);
        self.recent.reset(snapshot.revision);
    }

    /// The newest revocation entries the change stream delivered.
    pub fn recent(&self) -> &RecentRevocations {
        &self.recent
    }

    /// Applies a commit of this instance before the change stream delivers it (read your
    /// writes in cluster mode). Keys a newer own commit already wrote are left alone.
    pub fn apply_own(&self, batch: &ChangeBatch) {
        let mut ahead = self.ahead.lock().unwrap_or_else(PoisonError::into_inner);
        if batch.revision <= self.revision() {
            return; // the stream was faster
        }
        let mut tables = write(&self.tables);
        self.apply_changes(&mut tables, &batch.changes, |key| {
            ahead
                .iter()
                .any(|newer| newer.revision > batch.revision && touches(newer, key))
        });
        let at = ahead.partition_point(|other| other.revision < batch.revision);
        ahead.insert(at, batch.clone());
    }

    /// Waits (at most `timeout`) until the change stream has applied `revision`.
    pub async fn wait_for(&self, revision: Version, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.revision() < revision && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// The revision of the last change applied.
    pub fn revision(&self) -> Version {
        self.revision.load(Ordering::Acquire)
    }

    pub fn user(&self, username: &str) -> Option<Shared<UserRecord>> {
        read(&self.tables).users.get(username).cloned()
    }

    pub fn session(&self, sid: &str) -> Option<Shared<SessionRecord>> {
        read(&self.tables).sessions.get(sid).cloned()
    }

    /// Every stored session of `username` (live or not; the caller decides).
    pub fn sessions_of(&self, username: &str) -> Vec<Shared<SessionRecord>> {
        let tables = read(&self.tables);
        tables
            .sessions_by_user
            .get(username)
            .into_iter()
            .flatten()
            .filter_map(|sid| tables.sessions.get(sid).cloned())
            .collect()
    }

    pub fn is_jti_revoked(&self, jti: &str) -> bool {
        let hash = self.revoked_jtis.hash(jti);
        read(&self.revoked_jtis.hashes).contains(&hash)
    }

    /// How many jtis are revoked.
    #[cfg(test)]
    pub fn revoked_jti_count(&self) -> usize {
        read(&self.revoked_jtis.hashes).len()
    }
}

/// Hashes the revoked jtis of a snapshot as the backend hands them over.
pub struct RevokedJtiLoader<'a> {
    set: &'a JtiSet,
    hashes: Mutex<HashSet<u128, BuildHasherDefault<IdentityHasher>>>,
}

impl RevokedJtiLoader<'_> {
    pub fn add(&self, jti: &str) {
        let hash = self.set.hash(jti);
        self.hashes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(hash);
    }
}

fn insert_session(tables: &mut Tables, session: Shared<SessionRecord>) {
    tables
        .sessions_by_user
        .entry(session.record.username.clone())
        .or_default()
        .insert(session.record.sid.clone());
    tables.sessions.insert(session.record.sid.clone(), session);
}

fn remove_session(tables: &mut Tables, sid: &str) {
    let Some(session) = tables.sessions.remove(sid) else {
        return;
    };
    let username = &session.record.username;
    if let Some(sids) = tables.sessions_by_user.get_mut(username) {
        sids.remove(sid);
        if sids.is_empty() {
            tables.sessions_by_user.remove(username);
        }
    }
}

/// The key a change writes.
fn key_of(change: &Change) -> Key {
    match change {
        Change::User(user) => Key::User(user.record.username.clone()),
        Change::Session(session) => Key::Session(session.record.sid.clone()),
        Change::Refresh(hash) => Key::Refresh(*hash),
        Change::MfaToken(hash) => Key::MfaToken(*hash),
        Change::Revocation(entry) => entry.key(),
        Change::Deleted(key) => key.clone(),
    }
}

fn touches(batch: &ChangeBatch, key: &Key) -> bool {
    batch.changes.iter().any(|change| key_of(change) == *key)
}

impl View {
    /// Applies `changes`, except those to keys `skip` names.
    fn apply_changes(&self, tables: &mut Tables, changes: &[Change], skip: impl Fn(&Key) -> bool) {
        for change in changes {
            if skip(&key_of(change)) {
                continue;
            }
            match change {
                Change::User(user) => {
                    tables.users.insert(
                        user.record.username.clone(),
                        Versioned {
                            version: user.version,
                            record: Arc::new(user.record.clone()),
                        },
                    );
                }
                Change::Session(session) => insert_session(
                    tables,
                    Versioned {
                        version: session.version,
                        record: Arc::new(session.record.clone()),
                    },
                ),
                Change::Revocation(entry) if entry.kind == RevocationKind::Jti => {
                    let hash = self.revoked_jtis.hash(&entry.id);
                    write(&self.revoked_jtis.hashes).insert(hash);
                }
                Change::Deleted(Key::User(username)) => {
                    tables.users.remove(username);
                }
                Change::Deleted(Key::Session(sid)) => remove_session(tables, sid),
                Change::Deleted(Key::Revocation(RevocationKind::Jti, jti)) => {
                    let hash = self.revoked_jtis.hash(jti);
                    write(&self.revoked_jtis.hashes).remove(&hash);
                }
                Change::Revocation(_)
                | Change::Refresh(_)
                | Change::MfaToken(_)
                | Change::Deleted(_) => {}
            }
        }
    }
}

impl ChangeSink for View {
    fn apply(&self, batch: &ChangeBatch) {
        let mut ahead = self.ahead.lock().unwrap_or_else(PoisonError::into_inner);
        let mut tables = write(&self.tables);
        if ahead.is_empty() {
            self.apply_changes(&mut tables, &batch.changes, |_| false);
        } else {
            self.apply_changes(&mut tables, &batch.changes, |key| {
                ahead
                    .iter()
                    .any(|own| own.revision > batch.revision && touches(own, key))
            });
            ahead.retain(|own| own.revision > batch.revision);
        }
        self.revision.store(batch.revision, Ordering::Release);
        drop(tables);
        drop(ahead);
        let entries = batch
            .changes
            .iter()
            .filter_map(|change| match change {
                Change::Revocation(entry) => Some(Arc::new(entry.clone())),
                _ => None,
            })
            .collect();
        self.recent.delivered(entries);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::records::RevocationRecord;

    fn session(sid: &str, username: &str) -> Versioned<SessionRecord> {
        Versioned {
            version: 1,
            record: SessionRecord {
                sid: sid.into(),
                username: username.into(),
                account_id: 1,
                generation: 0,
                created_at: 0,
                last_refreshed_at: 0,
                expires_at: 10,
                access_expires_at: 5,
                with_otp: false,
            },
        }
    }

    fn jti_entry(id: &str) -> RevocationRecord {
        RevocationRecord {
            seq: 1,
            kind: RevocationKind::Jti,
            id: id.into(),
            revoked_at: 0,
            expires_at: 10,
            reason: None,
            ended_sessions: Vec::new(),
            serial: None,
        }
    }

    #[test]
    fn revoked_jtis_are_exact_at_a_million_entries() {
        let view = View::default();
        let loader = view.revoked_jti_loader();
        for i in 0..1_000_000 {
            loader.add(&format!("jti-{i}"));
        }
        view.load(
            Snapshot {
                revision: 7,
                ..Snapshot::default()
            },
            loader,
        );
        assert_eq!(view.revoked_jti_count(), 1_000_000);
        assert!(view.is_jti_revoked("jti-0") && view.is_jti_revoked("jti-999999"));
        let false_hits = (0..100_000)
            .filter(|i| view.is_jti_revoked(&format!("other-{i}")))
            .count();
        assert_eq!(false_hits, 0);
        assert_eq!(view.revision(), 7);
    }

    #[test]
    fn change_batches_add_and_remove_sessions_and_jtis() {
        let view = View::default();
        view.apply(&ChangeBatch {
            revision: 3,
            changes: vec![
                Change::Session(session("s1", "alice")),
                Change::Session(session("s2", "alice")),
                Change::Revocation(jti_entry("j1")),
            ],
        });
        assert_eq!(view.sessions_of("alice").len(), 2);
        assert!(view.is_jti_revoked("j1"));
        view.apply(&ChangeBatch {
            revision: 4,
            changes: vec![
                Change::Deleted(Key::Session("s1".into())),
                Change::Deleted(Key::Revocation(RevocationKind::Jti, "j1".into())),
            ],
        });
        let left: Vec<_> = view
            .sessions_of("alice")
            .iter()
            .map(|s| s.record.sid.clone())
            .collect();
        assert_eq!(left, vec!["s2".to_owned()]);
        assert!(view.session("s1").is_none());
        assert!(!view.is_jti_revoked("j1"));
        assert_eq!(view.revision(), 4);
    }

    fn user_at(name: &str, generation: u64, version: Version) -> Change {
        Change::User(Versioned {
            version,
            record: UserRecord {
                account_id: 1,
                username: name.into(),
                password_hash: String::new(),
                roles: Vec::new(),
                disabled: false,
                created_at: 0,
                generation,
                second_factor: None,
            },
        })
    }

    #[test]
    fn an_own_commit_is_not_undone_by_older_stream_entries() {
        let view = View::default();
        view.apply(&ChangeBatch {
            revision: 5,
            changes: vec![Change::Session(session("s1", "alice"))],
        });
        // This instance revoked s1 at revision 9; another instance's commit at revision 7
        // (a refresh of s1) reaches the stream only afterwards.
        view.apply_own(&ChangeBatch {
            revision: 9,
            changes: vec![
                Change::Deleted(Key::Session("s1".into())),
                user_at("alice", 2, 9),
            ],
        });
        assert!(view.session("s1").is_none());
        view.apply(&ChangeBatch {
            revision: 7,
            changes: vec![
                Change::Session(session("s1", "alice")),
                user_at("alice", 1, 7),
            ],
        });
        assert!(
            view.session("s1").is_none(),
            "an older put resurrected a revoked session"
        );
        assert_eq!(view.user("alice").unwrap().record.generation, 2);
        assert_eq!(view.revision(), 7);
        // The stream catches up: from then on it rules again.
        view.apply(&ChangeBatch {
            revision: 9,
            changes: vec![
                Change::Deleted(Key::Session("s1".into())),
                user_at("alice", 2, 9),
            ],
        });
        view.apply(&ChangeBatch {
            revision: 10,
            changes: vec![user_at("alice", 3, 10)],
        });
        assert_eq!(view.user("alice").unwrap().record.generation, 3);
    }

    #[test]
    fn a_resync_snapshot_keeps_own_commits_it_predates() {
        let view = View::default();
        view.apply_own(&ChangeBatch {
            revision: 12,
            changes: vec![Change::Revocation(jti_entry("j-new"))],
        });
        view.load(
            Snapshot {
                revision: 10,
                ..Snapshot::default()
            },
            view.revoked_jti_loader(),
        );
        assert!(view.is_jti_revoked("j-new"));
        // A snapshot at or after the commit replaces it like everything else.
        view.load(
            Snapshot {
                revision: 12,
                ..Snapshot::default()
            },
            view.revoked_jti_loader(),
        );
        assert!(!view.is_jti_revoked("j-new"));
    }

    #[test]
    fn an_own_commit_the_stream_already_delivered_changes_nothing() {
        let view = View::default();
        view.apply(&ChangeBatch {
            revision: 8,
            changes: vec![user_at("alice", 4, 8)],
        });
        view.apply_own(&ChangeBatch {
            revision: 6,
            changes: vec![user_at("alice", 3, 6)],
        });
        assert_eq!(view.user("alice").unwrap().record.generation, 4);
    }
}

//! The in-memory view the hot path reads: users, sessions (and each user's sessions) and
//! the revoked jtis, loaded from a backend snapshot and then fed only by the ordered
//! change stream. Exact: a miss here is a miss in the store, so verifying a token never
//! waits on the backend.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::backend::{Change, ChangeBatch, ChangeSink, Snapshot};
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
    revision: AtomicU64,
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
        *write(&self.tables) = tables;
        *write(&self.revoked_jtis.hashes) = hashes;
        self.revision.store(snapshot.revision, Ordering::Release);
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

impl ChangeSink for View {
    fn apply(&self, batch: &ChangeBatch) {
        let mut tables = write(&self.tables);
        for change in &batch.changes {
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
                    &mut tables,
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
                Change::Deleted(Key::Session(sid)) => remove_session(&mut tables, sid),
                Change::Deleted(Key::Revocation(RevocationKind::Jti, jti)) => {
                    let hash = self.revoked_jtis.hash(jti);
                    write(&self.revoked_jtis.hashes).remove(&hash);
                }
                Change::Revocation(_) | Change::Refresh(_) | Change::Deleted(_) => {}
            }
        }
        self.revision.store(batch.revision, Ordering::Release);
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
}

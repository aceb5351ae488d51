//! The durable store: the only module that knows sled and bincode. Typed methods over a
//! few trees (users, sessions, refresh tokens, revocations); every record starts with a
//! version byte, and changes that span trees run in one sled transaction.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

mod flusher;
mod revoked_index;

use flusher::Flusher;
use revoked_index::RevokedIndex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

/// Leading byte of every stored record; bump it when an encoding changes.
const RECORD_VERSION: u8 = 1;

/// Seconds since the Unix epoch.
pub type UnixSeconds = i64;

/// A refresh token as stored: the SHA-256 of the token, never the token.
pub type RefreshHash = [u8; 32];

/// One account. `account_id` is unique for the life of the store, so a user deleted and
/// re-created under the same name is a different account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub account_id: u64,
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created_at: UnixSeconds,
    /// Bumped by every "revoke all": sessions begun under an older generation are dead.
    pub generation: u64,
}

/// One login and everything refreshed from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub sid: String,
    pub username: String,
    pub account_id: u64,
    /// The account's `generation` when the session began.
    pub generation: u64,
    pub created_at: UnixSeconds,
    pub last_refreshed_at: UnixSeconds,
    /// When the newest refresh token of the session expires.
    pub expires_at: UnixSeconds,
    /// The latest `exp` of any access token issued in the session.
    pub access_expires_at: UnixSeconds,
}

/// One issued refresh token (keyed by its hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub sid: String,
    pub issued_at: UnixSeconds,
    pub expires_at: UnixSeconds,
    /// Set once the token has been exchanged for a new one.
    pub rotated_at: Option<UnixSeconds>,
}

/// What a revocation entry blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevocationKind {
    Jti,
    Sid,
    User,
}

impl RevocationKind {
    fn key_prefix(self) -> u8 {
        match self {
            RevocationKind::Jti => b'j',
            RevocationKind::Sid => b's',
            RevocationKind::User => b'u',
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Jti => "jti",
            RevocationKind::Sid => "sid",
            RevocationKind::User => "user",
        }
    }
}

/// A revocation to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRevocation {
    pub kind: RevocationKind,
    pub id: String,
    pub revoked_at: UnixSeconds,
    /// After this moment nothing the entry blocks could be accepted any more.
    pub expires_at: UnixSeconds,
    pub reason: Option<String>,
}

/// A stored revocation entry. `seq` orders the list (oldest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevocationRecord {
    pub seq: u64,
    pub kind: RevocationKind,
    pub id: String,
    pub revoked_at: UnixSeconds,
    pub expires_at: UnixSeconds,
    pub reason: Option<String>,
}

/// The outcome of presenting a refresh token for rotation.
#[derive(Debug, Clone, PartialEq)]
pub enum Rotation {
    /// The token was current: it is now rotated and the new one stored.
    Rotated(SessionRecord),
    /// The token had been rotated before (at `rotated_at`): a reuse.
    AlreadyRotated {
        sid: String,
        rotated_at: UnixSeconds,
    },
    /// No such token, or it has expired.
    Unknown,
}

/// How many entries a purge removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeCounts {
    pub revocations: usize,
    pub sessions: usize,
    pub refresh_tokens: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record in tree {tree}: {reason}")]
    Corrupt { tree: &'static str, reason: String },
    #[error("cannot start a store thread: {0}")]
    Flusher(std::io::Error),
    #[error("flushing the store to disk failed")]
    FlushFailed,
    #[error("cannot encode record: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(err: TransactionError<StoreError>) -> Self {
        match err {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// The open store. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    users: sled::Tree,
    sessions: sled::Tree,
    /// `username \0 sid` → (): lists a user's sessions.
    user_sessions: sled::Tree,
    refresh_tokens: sled::Tree,
    /// `kind byte ‖ id` → [`RevocationRecord`].
    revocations: sled::Tree,
    /// `seq` (big-endian) → `kind byte ‖ id`: the list order.
    revocation_log: sled::Tree,
    mirror: Arc<Mirror>,
    revoked_jtis: Arc<RevokedIndex>,
    flusher: Arc<Flusher>,
}

/// In-memory copies of the users and sessions trees, loaded at open and refreshed from
/// sled after every committed write: token verification reads these and never sled.
#[derive(Default)]
struct Mirror {
    users: RwLock<HashMap<String, Arc<UserRecord>>>,
    sessions: RwLock<HashMap<String, Arc<SessionRecord>>>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// sled's default page cache is 1 GiB; an auth daemon's working set is far smaller.
const CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

impl Store {
    /// Opens (creating if needed) the store in the folder `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            .open()?;
        let store = Store {
            users: db.open_tree("users")?,
            sessions: db.open_tree("sessions")?,
            user_sessions: db.open_tree("user_sessions")?,
            refresh_tokens: db.open_tree("refresh_tokens")?,
            revocations: db.open_tree("revocations")?,
            revocation_log: db.open_tree("revocation_log")?,
            mirror: Arc::default(),
            revoked_jtis: Arc::default(),
            flusher: Arc::new(Flusher::start(db.clone()).map_err(StoreError::Flusher)?),
            db,
        };
        store.load_mirror()?;
        store.load_revoked_index_in_background()?;
        Ok(store)
    }

    /// Fills the revoked-jti index from a thread; verification asks sled until it is done.
    fn load_revoked_index_in_background(&self) -> Result<(), StoreError> {
        let revocations = self.revocations.clone();
        let index = self.revoked_jtis.clone();
        std::thread::Builder::new()
            .name("authd-index".into())
            .spawn(move || {
                let prefix = [RevocationKind::Jti.key_prefix()];
                let ids = revocations
                    .scan_prefix(prefix)
                    .keys()
                    .filter_map(Result::ok)
                    .map(|key| String::from_utf8_lossy(&key[1..]).into_owned())
                    .collect::<Vec<_>>();
                index.load(ids.iter().map(String::as_str));
                tracing::debug!(entries = ids.len(), "revoked-jti index loaded");
            })
            .map_err(StoreError::Flusher)?;
        Ok(())
    }

    fn load_mirror(&self) -> Result<(), StoreError> {
        let mut users = HashMap::new();
        for item in self.users.iter() {
            let (_, value) = item?;
            let user: UserRecord = decode(&value, "users")?;
            users.insert(user.username.clone(), Arc::new(user));
        }
        let mut sessions = HashMap::new();
        for item in self.sessions.iter() {
            let (_, value) = item?;
            let session: SessionRecord = decode(&value, "sessions")?;
            sessions.insert(session.sid.clone(), Arc::new(session));
        }
        *write(&self.mirror.users) = users;
        *write(&self.mirror.sessions) = sessions;
        Ok(())
    }

    /// Copies the committed state of `username` into the mirror. Reading sled under the
    /// mirror's write lock makes concurrent writers converge on the newest record.
    fn sync_user(&self, username: &str) -> Result<(), StoreError> {
        let mut users = write(&self.mirror.users);
        match get::<UserRecord>(&self.users, "users", username.as_bytes())? {
            Some(user) => users.insert(username.to_owned(), Arc::new(user)),
            None => users.remove(username),
        };
        Ok(())
    }

    fn sync_sessions<'a>(&self, sids: impl IntoIterator<Item = &'a str>) -> Result<(), StoreError> {
        let mut sessions = write(&self.mirror.sessions);
        for sid in sids {
            match get::<SessionRecord>(&self.sessions, "sessions", sid.as_bytes())? {
                Some(session) => sessions.insert(sid.to_owned(), Arc::new(session)),
                None => sessions.remove(sid),
            };
        }
        Ok(())
    }

    /// The user `username` from memory.
    pub fn user(&self, username: &str) -> Option<Arc<UserRecord>> {
        read(&self.mirror.users).get(username).cloned()
    }

    /// The session `sid` from memory.
    pub fn session(&self, sid: &str) -> Option<Arc<SessionRecord>> {
        read(&self.mirror.sessions).get(sid).cloned()
    }

    /// Makes every change so far durable on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        if self.flusher.flush().await {
            Ok(())
        } else {
            Err(StoreError::FlushFailed)
        }
    }

    /// Flushes from a blocking context (shutdown).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// A new id, unique for the life of the store.
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    // ----- users -----

    pub fn get_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.user(username).map(|user| (*user).clone()))
    }

    /// Stores a new user; `false` when the name is taken.
    pub fn create_user(&self, user: &UserRecord) -> Result<bool, StoreError> {
        off_reactor(|| {
            let swapped = self.users.compare_and_swap(
                user.username.as_bytes(),
                None as Option<&[u8]>,
                Some(encode(user)?),
            )?;
            self.sync_user(&user.username)?;
            Ok(swapped.is_ok())
        })
    }

    /// Up to `limit` users sorted by name, after `after`; the flag says whether more follow.
    pub fn list_users(
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
            let (_, value) = item?;
            if users.len() == limit {
                return Ok((users, true));
            }
            users.push(decode(&value, "users")?);
        }
        Ok((users, false))
    }

    /// Applies `change` to the user atomically. With `revoke_all`, also bumps the
    /// account's generation (ending every session begun before) and records the entry.
    /// `None` when the user does not exist.
    pub fn update_user<F>(
        &self,
        username: &str,
        change: F,
        revoke_all: Option<&NewRevocation>,
    ) -> Result<Option<(UserRecord, Option<RevocationRecord>)>, StoreError>
    where
        F: Fn(&mut UserRecord),
    {
        off_reactor(|| {
            let seq = self.next_id()?;
            let result = (&self.users, &self.revocations, &self.revocation_log).transaction(
                |(users, revocations, log)| {
                    let Some(mut user) = tx_get::<UserRecord>(users, "users", username.as_bytes())?
                    else {
                        return Ok(None);
                    };
                    change(&mut user);
                    let entry = match revoke_all {
                        Some(revocation) => {
                            user.generation += 1;
                            Some(tx_record_revocation(revocations, log, revocation, seq)?)
                        }
                        None => None,
                    };
                    tx_put(users, username.as_bytes(), &user)?;
                    Ok(Some((user, entry)))
                },
            )?;
            self.sync_user(username)?;
            Ok(result)
        })
    }

    /// Deletes the user and their sessions, recording `revocation` (a user entry).
    /// `None` when the user does not exist.
    pub fn delete_user(
        &self,
        username: &str,
        revocation: &NewRevocation,
    ) -> Result<Option<UserRecord>, StoreError> {
        off_reactor(|| {
            let sids = self.session_ids_of(username)?;
            let seq = self.next_id()?;
            let trees = (
                &self.users,
                &self.sessions,
                &self.user_sessions,
                &self.revocations,
                &self.revocation_log,
            );
            let deleted =
                trees.transaction(|(users, sessions, user_sessions, revocations, log)| {
                    let Some(user) = tx_get::<UserRecord>(users, "users", username.as_bytes())?
                    else {
                        return Ok(None);
                    };
                    users.remove(username.as_bytes())?;
                    for sid in &sids {
                        sessions.remove(sid.as_bytes())?;
                        user_sessions.remove(user_session_key(username, sid))?;
                    }
                    tx_record_revocation(revocations, log, revocation, seq)?;
                    Ok(Some(user))
                })?;
            self.sync_user(username)?;
            self.sync_sessions(sids.iter().map(String::as_str))?;
            Ok(deleted)
        })
    }

    // ----- sessions and refresh tokens -----

    /// Stores a new session with its first refresh token.
    pub fn create_session(
        &self,
        session: &SessionRecord,
        refresh_hash: &RefreshHash,
        refresh: &RefreshRecord,
    ) -> Result<(), StoreError> {
        off_reactor(|| {
            let session_bytes = encode(session)?;
            let refresh_bytes = encode(refresh)?;
            (&self.sessions, &self.user_sessions, &self.refresh_tokens).transaction(
                |(sessions, user_sessions, refresh_tokens)| {
                    sessions.insert(session.sid.as_bytes(), session_bytes.as_slice())?;
                    user_sessions.insert(
                        user_session_key(&session.username, &session.sid),
                        &[] as &[u8],
                    )?;
                    refresh_tokens.insert(refresh_hash.as_slice(), refresh_bytes.as_slice())?;
                    Ok(())
                },
            )?;
            self.sync_sessions([session.sid.as_str()])?;
            Ok(())
        })
    }

    pub fn get_session(&self, sid: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.session(sid).map(|session| (*session).clone()))
    }

    /// Every stored session of `username` (live or not; the caller decides).
    pub fn list_sessions(&self, username: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let mut sessions = Vec::new();
        for sid in self.session_ids_of(username)? {
            if let Some(session) = self.get_session(&sid)? {
                sessions.push(session);
            }
        }
        Ok(sessions)
    }

    fn session_ids_of(&self, username: &str) -> Result<Vec<String>, StoreError> {
        let prefix = user_session_key(username, "");
        let mut sids = Vec::new();
        for item in self.user_sessions.scan_prefix(&prefix) {
            let (key, _) = item?;
            let sid = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            sids.push(sid);
        }
        Ok(sids)
    }

    /// Ends the session `revocation.id` (if it exists) and records the sid entry.
    /// Revoking the same sid again keeps the first entry.
    pub fn revoke_session(
        &self,
        revocation: &NewRevocation,
    ) -> Result<RevocationRecord, StoreError> {
        off_reactor(|| {
            let seq = self.next_id()?;
            let sid = revocation.id.as_bytes();
            let entry = (
                &self.sessions,
                &self.user_sessions,
                &self.revocations,
                &self.revocation_log,
            )
                .transaction(|(sessions, user_sessions, revocations, log)| {
                    if let Some(session) = tx_get::<SessionRecord>(sessions, "sessions", sid)? {
                        sessions.remove(sid)?;
                        user_sessions.remove(user_session_key(&session.username, &session.sid))?;
                    }
                    tx_record_revocation(revocations, log, revocation, seq)
                })?;
            self.sync_sessions([revocation.id.as_str()])?;
            Ok(entry)
        })
    }

    /// Replaces the user's password hash and ends the sessions named by `end_sessions`
    /// (sid entries), in one transaction. `None` when the account `account_id` is gone.
    pub fn replace_password(
        &self,
        username: &str,
        account_id: u64,
        new_hash: &str,
        end_sessions: &[NewRevocation],
    ) -> Result<Option<UserRecord>, StoreError> {
        off_reactor(|| {
            let mut seqs = Vec::with_capacity(end_sessions.len());
            for _ in end_sessions {
                seqs.push(self.next_id()?);
            }
            let trees = (
                &self.users,
                &self.sessions,
                &self.user_sessions,
                &self.revocations,
                &self.revocation_log,
            );
            let updated =
                trees.transaction(|(users, sessions, user_sessions, revocations, log)| {
                    let Some(mut user) = tx_get::<UserRecord>(users, "users", username.as_bytes())?
                    else {
                        return Ok(None);
                    };
                    if user.account_id != account_id {
                        return Ok(None);
                    }
                    user.password_hash = new_hash.to_owned();
                    tx_put(users, username.as_bytes(), &user)?;
                    for (revocation, seq) in end_sessions.iter().zip(&seqs) {
                        let sid = revocation.id.as_bytes();
                        if tx_get::<SessionRecord>(sessions, "sessions", sid)?.is_some() {
                            sessions.remove(sid)?;
                            user_sessions.remove(user_session_key(username, &revocation.id))?;
                        }
                        tx_record_revocation(revocations, log, revocation, *seq)?;
                    }
                    Ok(Some(user))
                })?;
            self.sync_user(username)?;
            self.sync_sessions(end_sessions.iter().map(|r| r.id.as_str()))?;
            Ok(updated)
        })
    }

    pub fn get_refresh(&self, hash: &RefreshHash) -> Result<Option<RefreshRecord>, StoreError> {
        get(&self.refresh_tokens, "refresh_tokens", hash)
    }

    /// Exchanges the refresh token `old` for `new` atomically: of two concurrent uses of
    /// one token, exactly one rotates and the other sees a reuse.
    pub fn rotate_refresh(
        &self,
        old: &RefreshHash,
        new: &RefreshHash,
        now: UnixSeconds,
        new_expires_at: UnixSeconds,
        access_expires_at: UnixSeconds,
    ) -> Result<Rotation, StoreError> {
        off_reactor(|| {
            let rotation = (&self.refresh_tokens, &self.sessions).transaction(
                |(refresh_tokens, sessions)| {
                    let Some(mut record) =
                        tx_get::<RefreshRecord>(refresh_tokens, "refresh_tokens", old)?
                    else {
                        return Ok(Rotation::Unknown);
                    };
                    if let Some(rotated_at) = record.rotated_at {
                        return Ok(Rotation::AlreadyRotated {
                            sid: record.sid.clone(),
                            rotated_at,
                        });
                    }
                    if record.expires_at <= now {
                        return Ok(Rotation::Unknown);
                    }
                    let Some(mut session) =
                        tx_get::<SessionRecord>(sessions, "sessions", record.sid.as_bytes())?
                    else {
                        return Ok(Rotation::Unknown);
                    };
                    record.rotated_at = Some(now);
                    tx_put(refresh_tokens, old, &record)?;
                    let next = RefreshRecord {
                        sid: record.sid.clone(),
                        issued_at: now,
                        expires_at: new_expires_at,
                        rotated_at: None,
                    };
                    tx_put(refresh_tokens, new, &next)?;
                    session.last_refreshed_at = now;
                    session.expires_at = new_expires_at;
                    session.access_expires_at = session.access_expires_at.max(access_expires_at);
                    tx_put(sessions, session.sid.as_bytes(), &session)?;
                    Ok(Rotation::Rotated(session))
                },
            )?;
            if let Rotation::Rotated(session) = &rotation {
                self.sync_sessions([session.sid.as_str()])?;
            }
            Ok(rotation)
        })
    }

    // ----- revocations -----

    /// Records a jti or sid entry (idempotent: an existing entry stays as it was), or a
    /// user entry (replacing the previous one for that user). Returns the stored entry.
    pub fn revoke(&self, revocation: &NewRevocation) -> Result<RevocationRecord, StoreError> {
        off_reactor(|| {
            let seq = self.next_id()?;
            let entry =
                (&self.revocations, &self.revocation_log).transaction(|(revocations, log)| {
                    tx_record_revocation(revocations, log, revocation, seq)
                })?;
            if revocation.kind == RevocationKind::Jti {
                self.revoked_jtis.insert(&revocation.id);
            }
            Ok(entry)
        })
    }

    pub fn is_revoked(&self, kind: RevocationKind, id: &str) -> Result<bool, StoreError> {
        if kind == RevocationKind::Jti && !self.revoked_jtis.may_contain(id) {
            return Ok(false);
        }
        Ok(self.revocations.contains_key(revocation_key(kind, id))?)
    }

    /// Up to `limit` entries, oldest first, after the cursor `after`; plus the next cursor.
    pub fn list_revocations(
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
            if let Some(entry) = get::<RevocationRecord>(&self.revocations, "revocations", &key)? {
                entries.push(entry);
            }
        }
        Ok((entries, None))
    }

    /// Number of revocation entries.
    pub fn revocation_count(&self) -> usize {
        self.revocations.len()
    }

    /// Removes revocation entries, sessions and refresh tokens that expired before `now`.
    pub fn purge_expired(&self, now: UnixSeconds) -> Result<PurgeCounts, StoreError> {
        let mut counts = PurgeCounts::default();
        for item in self.revocations.iter() {
            let (key, value) = item?;
            let entry: RevocationRecord = decode(&value, "revocations")?;
            if entry.expires_at < now {
                let removed = (&self.revocations, &self.revocation_log).transaction(
                    |(revocations, log)| {
                        // Re-read: a concurrent revoke may have replaced the entry.
                        match tx_get::<RevocationRecord>(revocations, "revocations", &key)? {
                            Some(current) if current.seq == entry.seq => {
                                revocations.remove(&key)?;
                                log.remove(&entry.seq.to_be_bytes())?;
                                Ok(true)
                            }
                            _ => Ok(false),
                        }
                    },
                )?;
                if removed && entry.kind == RevocationKind::Jti {
                    self.revoked_jtis.remove(&entry.id);
                }
                counts.revocations += usize::from(removed);
            }
        }
        for item in self.refresh_tokens.iter() {
            let (key, value) = item?;
            let record: RefreshRecord = decode(&value, "refresh_tokens")?;
            if record.expires_at < now {
                self.refresh_tokens.remove(key)?;
                counts.refresh_tokens += 1;
            }
        }
        for item in self.sessions.iter() {
            let (key, value) = item?;
            let session: SessionRecord = decode(&value, "sessions")?;
            if session.expires_at < now {
                (&self.sessions, &self.user_sessions).transaction(
                    |(sessions, user_sessions)| {
                        sessions.remove(&key)?;
                        user_sessions.remove(user_session_key(&session.username, &session.sid))?;
                        Ok(())
                    },
                )?;
                self.sync_sessions([session.sid.as_str()])?;
                counts.sessions += 1;
            }
        }
        Ok(counts)
    }
}

/// Runs a sled write (which may wait for the log or a flush) without stalling the async
/// workers: on the multi-threaded runtime the worker hands its other tasks off first.
fn off_reactor<T>(write: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(write)
        }
        _ => write(),
    }
}

fn user_session_key(username: &str, sid: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(username.len() + 1 + sid.len());
    key.extend_from_slice(username.as_bytes());
    key.push(0);
    key.extend_from_slice(sid.as_bytes());
    key
}

fn revocation_key(kind: RevocationKind, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(kind.key_prefix());
    key.extend_from_slice(id.as_bytes());
    key
}

fn tx_record_revocation(
    revocations: &TransactionalTree,
    log: &TransactionalTree,
    revocation: &NewRevocation,
    seq: u64,
) -> TxResult<RevocationRecord> {
    let key = revocation_key(revocation.kind, &revocation.id);
    if let Some(existing) = tx_get::<RevocationRecord>(revocations, "revocations", &key)? {
        if revocation.kind != RevocationKind::User {
            return Ok(existing);
        }
        log.remove(&existing.seq.to_be_bytes())?;
    }
    let entry = RevocationRecord {
        seq,
        kind: revocation.kind,
        id: revocation.id.clone(),
        revoked_at: revocation.revoked_at,
        expires_at: revocation.expires_at,
        reason: revocation.reason.clone(),
    };
    tx_put(revocations, &key, &entry)?;
    log.insert(&seq.to_be_bytes(), key)?;
    Ok(entry)
}

fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![RECORD_VERSION];
    bytes.extend(bincode::serde::encode_to_vec(
        record,
        bincode::config::standard(),
    )?);
    Ok(bytes)
}

fn decode<T: DeserializeOwned>(bytes: &[u8], tree: &'static str) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, body)) => {
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .map(|(record, _)| record)
                .map_err(|e| StoreError::Corrupt {
                    tree,
                    reason: e.to_string(),
                })
        }
        Some((version, _)) => Err(StoreError::Corrupt {
            tree,
            reason: format!("unknown record version {version}"),
        }),
        None => Err(StoreError::Corrupt {
            tree,
            reason: "empty record".into(),
        }),
    }
}

fn get<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    tree.get(key)?.map(|value| decode(&value, name)).transpose()
}

fn tx_get<T: DeserializeOwned>(
    tree: &TransactionalTree,
    name: &'static str,
    key: &[u8],
) -> TxResult<Option<T>> {
    match tree.get(key)? {
        Some(value) => decode(&value, name)
            .map(Some)
            .map_err(ConflictableTransactionError::Abort),
        None => Ok(None),
    }
}

fn tx_put<T: Serialize>(tree: &TransactionalTree, key: &[u8], record: &T) -> TxResult<()> {
    let bytes = encode(record).map_err(ConflictableTransactionError::Abort)?;
    tree.insert(key, bytes)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn user(name: &str, account_id: u64) -> UserRecord {
        UserRecord {
            account_id,
            username: name.into(),
            password_hash: "$argon2id$...".into(),
            roles: vec!["admin".into()],
            disabled: false,
            created_at: 1_700_000_000,
            generation: 0,
        }
    }

    fn revocation(kind: RevocationKind, id: &str, at: UnixSeconds) -> NewRevocation {
        NewRevocation {
            kind,
            id: id.into(),
            revoked_at: at,
            expires_at: at + 100,
            reason: None,
        }
    }

    #[test]
    fn records_carry_a_version_byte_and_unknown_versions_are_refused() {
        let bytes = encode(&user("alice", 1)).unwrap();
        assert_eq!(bytes[0], RECORD_VERSION);
        let mut future = bytes.clone();
        future[0] = RECORD_VERSION + 1;
        assert!(decode::<UserRecord>(&future, "users").is_err());
        assert_eq!(
            decode::<UserRecord>(&bytes, "users").unwrap(),
            user("alice", 1)
        );
    }

    #[test]
    fn create_user_refuses_a_taken_name_and_lists_in_pages() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (i, name) in ["carol", "alice", "bob"].iter().enumerate() {
            assert!(store.create_user(&user(name, i as u64)).unwrap());
        }
        assert!(!store.create_user(&user("bob", 9)).unwrap());
        let (page, more) = store.list_users(None, 2).unwrap();
        let names: Vec<_> = page.iter().map(|u| u.username.as_str()).collect();
        assert_eq!((names, more), (vec!["alice", "bob"], true));
        let (page, more) = store.list_users(Some("bob"), 2).unwrap();
        assert_eq!((page.len(), more), (1, false));
    }

    #[test]
    fn revoking_a_jti_twice_keeps_the_first_entry_and_user_entries_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = store
            .revoke(&revocation(RevocationKind::Jti, "j1", 10))
            .unwrap();
        let again = store
            .revoke(&revocation(RevocationKind::Jti, "j1", 20))
            .unwrap();
        assert_eq!(first, again);
        store.create_user(&user("alice", 1)).unwrap();
        let r1 = revocation(RevocationKind::User, "alice", 10);
        let r2 = revocation(RevocationKind::User, "alice", 20);
        store.update_user("alice", |_| {}, Some(&r1)).unwrap();
        let (user, entry) = store
            .update_user("alice", |_| {}, Some(&r2))
            .unwrap()
            .unwrap();
        assert_eq!(user.generation, 2);
        assert_eq!(entry.unwrap().revoked_at, 20);
        let (entries, next) = store.list_revocations(None, 10).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(next, None);
        assert_eq!(entries[1].revoked_at, 20);
    }

    #[test]
    fn refresh_rotation_detects_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let session = SessionRecord {
            sid: "s1".into(),
            username: "alice".into(),
            account_id: 1,
            generation: 0,
            created_at: 0,
            last_refreshed_at: 0,
            expires_at: 100,
            access_expires_at: 10,
        };
        let refresh = RefreshRecord {
            sid: "s1".into(),
            issued_at: 0,
            expires_at: 100,
            rotated_at: None,
        };
        store.create_session(&session, &[1; 32], &refresh).unwrap();
        let rotated = store
            .rotate_refresh(&[1; 32], &[2; 32], 10, 110, 10 + 10)
            .unwrap();
        assert!(matches!(rotated, Rotation::Rotated(s) if s.expires_at == 110));
        let reused = store
            .rotate_refresh(&[1; 32], &[3; 32], 11, 111, 11 + 10)
            .unwrap();
        assert_eq!(
            reused,
            Rotation::AlreadyRotated {
                sid: "s1".into(),
                rotated_at: 10
            }
        );
        assert_eq!(
            store
                .rotate_refresh(&[9; 32], &[4; 32], 11, 111, 11 + 10)
                .unwrap(),
            Rotation::Unknown
        );
    }

    #[test]
    fn purge_removes_only_expired_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .revoke(&revocation(RevocationKind::Jti, "old", 0))
            .unwrap();
        store
            .revoke(&revocation(RevocationKind::Jti, "new", 1000))
            .unwrap();
        let counts = store.purge_expired(500).unwrap();
        assert_eq!(counts.revocations, 1);
        assert!(!store.is_revoked(RevocationKind::Jti, "old").unwrap());
        assert!(store.is_revoked(RevocationKind::Jti, "new").unwrap());
        let (entries, _) = store.list_revocations(None, 10).unwrap();
        assert_eq!(entries.len(), 1);
    }
}

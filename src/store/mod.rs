//! The durable store as the domain sees it: typed reads, conditional commits and purging,
//! over a [`Backend`] (sled today) and the in-memory [`View`] it feeds.
//!
//! Reads the hot path makes (users, sessions, revoked jtis) come from the view and never
//! wait on the backend; everything else asks the backend. Every write is one [`Txn`] with
//! preconditions on record versions: a caller reads, builds the commit, and on
//! [`StoreError::Conflict`] reads again and retries.

pub mod backend;
mod error;
pub mod etcd;
pub mod freshness;
pub mod recent;
pub mod records;
pub mod sled;
pub mod view;

use std::path::Path;
use std::sync::Arc;

pub use backend::{Backend, Check, Committed, LoginEventSink, Txn, Write};
pub use error::StoreError;
pub use freshness::{Currency, Freshness};
pub use records::{
    Key, LoginEvent, MemberRecord, MfaTokenRecord, NewRevocation, RefreshHash, RefreshRecord,
    RevocationKind, RevocationRecord, SecondFactor, SessionRecord, UnixSeconds, UserRecord,
    Version, Versioned,
};
pub use view::{Shared, View};

/// How many deletions a purge puts in one commit.
const PURGE_BATCH: usize = 512;

/// How many entries a purge removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeCounts {
    pub revocations: usize,
    pub sessions: usize,
    pub refresh_tokens: usize,
    pub mfa_tokens: usize,
}

/// The open store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    view: Arc<View>,
    freshness: Arc<Freshness>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("view", &self.view).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the sled store in the folder `path`.
    pub async fn open_sled(path: &Path) -> Result<Store, StoreError> {
        let view = Arc::new(View::default());
        let backend = sled::SledBackend::open(path, view.clone())?;
        if backend.restore_state().await?.incomplete {
            return Err(StoreError::Incomplete);
        }
        Store::start(Arc::new(backend), view).await
    }

    /// A store over `backend`, which feeds `view`: loads the view from a snapshot.
    pub async fn start(backend: Arc<dyn Backend>, view: Arc<View>) -> Result<Store, StoreError> {
        let revoked = view.revoked_jti_loader();
        let snapshot = backend.snapshot(&|jti| revoked.add(jti)).await?;
        view.load(snapshot, revoked);
        let freshness = Arc::new(Freshness::always(crate::clock::Clock::system()));
        Ok(Store {
            backend,
            view,
            freshness,
        })
    }

    /// A store over an etcd `backend` whose view [`etcd::sync::run`] loads and keeps
    /// current; until then [`Store::currency`] says it is loading.
    pub fn remote(
        backend: Arc<etcd::EtcdBackend>,
        view: Arc<View>,
        freshness: Arc<Freshness>,
    ) -> Store {
        view.recent().set_stream_is_durable();
        Store {
            backend,
            view,
            freshness,
        }
    }

    /// An etcd store for tools that only write (seeding, restores): no view is loaded and
    /// nothing follows the watch.
    pub fn etcd_writer(options: etcd::ClientOptions, prefix: &str) -> Store {
        let view = Arc::new(View::default());
        let freshness = Arc::new(Freshness::always(crate::clock::Clock::system()));
        let backend = Arc::new(etcd::EtcdBackend::new(
            etcd::EtcdClient::new(options),
            prefix,
            "writer".to_owned(),
            view.clone(),
            freshness.clone(),
            crate::clock::Clock::system(),
        ));
        Store::remote(backend, view, freshness)
    }

    /// Whether the view may answer: loaded, and (cluster mode) confirmed current within
    /// `etcd.max_staleness`.
    pub fn currency(&self) -> Currency {
        self.freshness.currency()
    }

    /// How long ago the view was last confirmed current (cluster mode; `None` on sled or
    /// before the first confirmation).
    pub fn view_age(&self) -> Option<std::time::Duration> {
        self.freshness.age()
    }

    /// `Ok` when the view may answer; else why not, as a store failure (`503`).
    pub fn check_current(&self) -> Result<(), StoreError> {
        match self.currency() {
            Currency::Current => Ok(()),
            Currency::Loading => Err(StoreError::Unavailable(
                "the store is not loaded yet".into(),
            )),
            Currency::Stale => Err(StoreError::Unavailable(
                "this instance's view of the cluster is stale".into(),
            )),
        }
    }

    /// A reload's `etcd.request_timeout` and `etcd.max_staleness` (cluster mode).
    pub fn set_limits(
        &self,
        request_timeout: std::time::Duration,
        max_staleness: std::time::Duration,
    ) {
        self.backend.set_request_timeout(request_timeout);
        self.freshness.set_max_staleness(max_staleness);
    }

    /// Reads the session `sid` and the user `username` from the engine itself into the
    /// view: a token from a login on another instance works here at once (cluster mode).
    pub async fn catch_up(&self, sid: &str, username: &str) -> Result<(), StoreError> {
        self.backend
            .catch_up(vec![
                Key::Session(sid.to_owned()),
                Key::User(username.to_owned()),
            ])
            .await
    }

    /// Shares a counted login outcome with the other instances, kept until `keep_until`
    /// (cluster mode; nothing to do on sled).
    pub async fn share_login_event(
        &self,
        event: LoginEvent,
        keep_until: UnixSeconds,
    ) -> Result<(), StoreError> {
        self.backend.share_login_event(event, keep_until).await
    }

    /// Where the other instances' login events go (cluster mode).
    pub fn on_login_event(&self, sink: LoginEventSink) {
        self.backend.on_login_event(sink);
    }

    /// Reads the user `username` from the engine itself into the view when the view lacks
    /// it (cluster mode; nothing to do on sled).
    pub async fn catch_up_user(&self, username: &str) -> Result<(), StoreError> {
        if !self.may_lag() || self.user(username).is_some() {
            return Ok(());
        }
        self.backend
            .catch_up(vec![Key::User(username.to_owned())])
            .await
    }

    /// Reads the session `sid` (and then its user) from the engine itself into the view
    /// when the view lacks them (cluster mode; nothing to do on sled).
    pub async fn catch_up_session(&self, sid: &str) -> Result<(), StoreError> {
        if !self.may_lag() {
            return Ok(());
        }
        if self.session(sid).is_none() {
            self.backend
                .catch_up(vec![Key::Session(sid.to_owned())])
                .await?;
        }
        if let Some(session) = self.session(sid)
            && self.user(&session.record.username).is_none()
        {
            self.backend
                .catch_up(vec![Key::User(session.record.username.clone())])
                .await?;
        }
        Ok(())
    }

    /// Whether reading from the engine could find what the view lacks (cluster mode).
    pub fn may_lag(&self) -> bool {
        self.backend.name() != "sled"
    }

    // ----- reads from the view -----

    /// The user `username`, with the version it was read at.
    pub fn user(&self, username: &str) -> Option<Shared<UserRecord>> {
        self.view.user(username)
    }

    /// The session `sid`, with the version it was read at.
    pub fn session(&self, sid: &str) -> Option<Shared<SessionRecord>> {
        self.view.session(sid)
    }

    /// Every stored session of `username` (live or not; the caller decides).
    pub fn sessions_of(&self, username: &str) -> Vec<Shared<SessionRecord>> {
        self.view.sessions_of(username)
    }

    pub fn is_jti_revoked(&self, jti: &str) -> bool {
        self.view.is_jti_revoked(jti)
    }

    // ----- reads from the backend -----

    pub async fn refresh(
        &self,
        hash: &RefreshHash,
    ) -> Result<Option<Versioned<RefreshRecord>>, StoreError> {
        self.backend.refresh(*hash).await
    }

    pub async fn mfa_token(
        &self,
        hash: &RefreshHash,
    ) -> Result<Option<Versioned<MfaTokenRecord>>, StoreError> {
        self.backend.mfa_token(*hash).await
    }

    pub async fn revocation(
        &self,
        kind: RevocationKind,
        id: &str,
    ) -> Result<Option<Versioned<RevocationRecord>>, StoreError> {
        self.backend.revocation(kind, id.to_owned()).await
    }

    /// Up to `limit` users sorted by name, after `after`; the flag says whether more follow.
    pub async fn users_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<UserRecord>, bool), StoreError> {
        self.backend
            .users_page(after.map(str::to_owned), limit)
            .await
    }

    /// Up to `limit` entries, oldest first, after the cursor `after`; plus the next cursor.
    pub async fn revocations_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<RevocationRecord>, Option<u64>), StoreError> {
        self.backend.revocations_page(after, limit).await
    }

    pub async fn revocation_count(&self) -> Result<usize, StoreError> {
        self.backend.revocation_count().await
    }

    /// A new id, unique for the life of the store.
    pub async fn next_id(&self) -> Result<u64, StoreError> {
        self.backend.next_id().await
    }

    // ----- backups -----

    /// Sends every record as of one revision to `out` while commits go on (see
    /// [`Backend::export`]).
    pub async fn export(
        &self,
        out: &tokio::sync::mpsc::Sender<backend::Exported>,
    ) -> Result<(), StoreError> {
        self.backend.export(out).await
    }

    // ----- the revocation feed -----

    /// Up to `limit` durable revocation entries with a `seq` above `after`, oldest first:
    /// from the newest ones kept in memory while they reach back that far (followers that
    /// keep up never wait on the backend), else from the backend.
    pub async fn revocations_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<RevocationRecord>>, StoreError> {
        let recent = self.view.recent();
        if let Some(entries) = recent.after(after, limit) {
            return Ok(entries);
        }
        let visible = recent.visible();
        let (entries, _) = self.backend.revocations_page(Some(after), limit).await?;
        Ok(entries
            .into_iter()
            .take_while(|entry| entry.seq <= visible)
            .map(Arc::new)
            .collect())
    }

    /// Changes whenever [`Store::revocations_after`] may have more to answer.
    pub fn revocation_updates(&self) -> tokio::sync::watch::Receiver<u64> {
        self.view.recent().subscribe()
    }

    /// The store's epoch, which feed cursors carry; unavailable until the engine told it
    /// (cluster mode, before the first snapshot).
    pub fn epoch(&self) -> Result<String, StoreError> {
        self.backend
            .epoch()
            .ok_or_else(|| StoreError::Unavailable("the store's epoch is not known yet".into()))
    }

    // ----- the deployment -----

    /// Which engine this is: `"sled"` or `"etcd"`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The live instances of the deployment; `None` where the engine has no members
    /// (sled: the one process is all there is).
    pub async fn members(&self) -> Result<Option<Vec<MemberRecord>>, StoreError> {
        self.backend.members().await
    }

    /// What this instance's heartbeat says of it from now on (cluster mode; sled ignores
    /// it). Called at start and after every reload.
    pub fn publish_member(&self, member: MemberRecord) {
        self.backend.publish_member(member);
    }

    // ----- writes -----

    /// Commits `txn` if its checks hold; durable and in the view when this returns.
    pub async fn commit(&self, txn: Txn) -> Result<Committed, StoreError> {
        let committed = self.backend.commit(txn).await?;
        self.view.recent().mark_durable(committed.revision);
        Ok(committed)
    }

    /// Removes revocation entries, sessions and refresh tokens that expired before `now`.
    /// A record that changed since it was found expired (a refreshed session) stays.
    pub async fn purge_expired(&self, now: UnixSeconds) -> Result<PurgeCounts, StoreError> {
        let expired = self.backend.expired(now).await?;
        let mut counts = PurgeCounts::default();
        for batch in expired.chunks(PURGE_BATCH) {
            let mut txn = Txn::default();
            for entry in batch {
                txn.expect(entry.key.clone(), Some(entry.version));
                txn.delete(entry.key.clone());
            }
            match self.commit(txn).await {
                Ok(_) => {}
                // Something in this batch changed meanwhile: delete one at a time.
                Err(StoreError::Conflict) => {
                    for entry in batch {
                        let mut txn = Txn::default();
                        txn.expect(entry.key.clone(), Some(entry.version));
                        txn.delete(entry.key.clone());
                        match self.commit(txn).await {
                            Ok(_) => count(&mut counts, &entry.key),
                            Err(StoreError::Conflict) => {}
                            Err(err) => return Err(err),
                        }
                    }
                    continue;
                }
                Err(err) => return Err(err),
            }
            for entry in batch {
                count(&mut counts, &entry.key);
            }
        }
        Ok(counts)
    }

    /// Makes everything durable (blocking; at shutdown).
    pub fn close(&self) -> Result<(), StoreError> {
        self.backend.close()
    }
}

fn count(counts: &mut PurgeCounts, key: &Key) {
    match key {
        Key::Revocation(..) => counts.revocations += 1,
        Key::Session(_) => counts.sessions += 1,
        Key::Refresh(_) => counts.refresh_tokens += 1,
        Key::MfaToken(_) => counts.mfa_tokens += 1,
        Key::User(_) => {}
    }
}

impl Txn {
    /// Requires the record under `key` to be at `version` (`None`: absent) at commit.
    pub fn expect(&mut self, key: Key, version: Option<Version>) -> &mut Txn {
        self.checks.push(Check { key, version });
        self
    }

    /// Requires the user to be exactly as read (`None`: no such user).
    pub fn expect_user(&mut self, username: &str, read: Option<&Shared<UserRecord>>) -> &mut Txn {
        self.expect(Key::User(username.to_owned()), read.map(|u| u.version))
    }

    pub fn put_user(&mut self, user: UserRecord) -> &mut Txn {
        self.writes.push(Write::PutUser(user));
        self
    }

    pub fn put_session(&mut self, session: SessionRecord) -> &mut Txn {
        self.writes.push(Write::PutSession(session));
        self
    }

    pub fn put_refresh(&mut self, hash: RefreshHash, record: RefreshRecord) -> &mut Txn {
        self.writes.push(Write::PutRefresh(hash, record));
        self
    }

    pub fn put_mfa_token(&mut self, hash: RefreshHash, record: MfaTokenRecord) -> &mut Txn {
        self.writes.push(Write::PutMfaToken(hash, record));
        self
    }

    /// Stores a revocation entry (replacing one of the same kind and id).
    pub fn revoke(&mut self, revocation: &NewRevocation) -> &mut Txn {
        self.writes
            .push(Write::PutRevocation(RevocationRecord::unplaced(revocation)));
        self
    }

    pub fn delete(&mut self, key: Key) -> &mut Txn {
        self.writes.push(Write::Delete(key));
        self
    }
}

//! Reading from etcd: single records, pages in key or list order, the paged snapshot the
//! view loads from, and the [`Backend`] implementation that ties it all together.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, TxnOp};

use super::layout::{decode, encode, prefix_end};
use super::{
    COUNTER_ATTEMPTS, EXPIRY_MARGIN_SECS, EtcdBackend, SNAPSHOT_PAGE, header_revision, read_u64,
    sync, to_version,
};
use crate::store::StoreError;
use crate::store::backend::{
    Backend, BoxFuture, Committed, Expired, ExportPoint, Exported, LoginEventSink, Record,
    RestoreState, RevocationsPage, RevokedJtiSink, Snapshot, Txn, UsersPage,
};
use crate::store::records::{
    Key, LoginEvent, MemberRecord, MfaTokenRecord, RefreshHash, RefreshRecord, RevocationKind,
    RevocationRecord, SessionRecord, UnixSeconds, UserRecord, Version, Versioned,
};

impl EtcdBackend {
    pub(super) async fn get_versioned<T: super::layout::Stored>(
        &self,
        key: &Key,
        space: &'static str,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let response = self.client.get(self.layout.key(key), None).await?;
        response
            .kvs()
            .first()
            .map(|kv| {
                Ok(Versioned {
                    version: to_version(kv.mod_revision()),
                    record: decode(kv.value(), space)?,
                })
            })
            .transpose()
    }

    /// Reads a whole space at `revision` (0: now), page by page; answers the revision read.
    pub(super) async fn scan(
        &self,
        space: &str,
        revision: i64,
        keys_only: bool,
        mut each: impl FnMut(&KeyValue) -> Result<(), StoreError>,
    ) -> Result<i64, StoreError> {
        let mut pages = Pages::new(self.layout.space(space), revision);
        while let Some(page) = pages.next(self, keys_only).await? {
            for kv in page.kvs() {
                each(kv)?;
            }
        }
        Ok(pages.revision)
    }

    pub(crate) async fn snapshot_at(
        &self,
        revoked_jti: RevokedJtiSink<'_>,
    ) -> Result<Snapshot, StoreError> {
        let mut users = Vec::new();
        let revision = self
            .scan("u/", 0, false, |kv| {
                users.push(Versioned {
                    version: to_version(kv.mod_revision()),
                    record: decode::<UserRecord>(kv.value(), "users")?,
                });
                Ok(())
            })
            .await?;
        let now = self.clock.now();
        let mut sessions = Vec::new();
        self.scan("s/", revision, false, |kv| {
            let record: SessionRecord = decode(kv.value(), "sessions")?;
            if record.expires_at.max(record.access_expires_at) + EXPIRY_MARGIN_SECS >= now {
                sessions.push(Versioned {
                    version: to_version(kv.mod_revision()),
                    record,
                });
            }
            Ok(())
        })
        .await?;
        let jti_space = self.layout.space("v/j/");
        self.scan("v/j/", revision, true, |kv| {
            if let Some(jti) = kv.key().strip_prefix(jti_space.as_slice()) {
                revoked_jti(&String::from_utf8_lossy(jti));
            }
            Ok(())
        })
        .await?;
        Ok(Snapshot {
            revision: to_version(revision),
            users,
            sessions,
        })
    }
}

/// A space read page by page at one revision.
pub(super) struct Pages {
    from: Option<Vec<u8>>,
    end: Vec<u8>,
    /// The revision read at (0 until the first page, when asked to read now).
    pub(super) revision: i64,
}

impl Pages {
    /// The keys that start with `start`, at `revision` (0: now).
    pub(super) fn new(start: Vec<u8>, revision: i64) -> Pages {
        Pages {
            end: prefix_end(&start),
            from: Some(start),
            revision,
        }
    }

    /// The next page; `None` after the last.
    pub(super) async fn next(
        &mut self,
        backend: &EtcdBackend,
        keys_only: bool,
    ) -> Result<Option<etcd_client::GetResponse>, StoreError> {
        let Some(from) = self.from.take() else {
            return Ok(None);
        };
        let mut options = GetOptions::new()
            .with_range(self.end.clone())
            .with_limit(SNAPSHOT_PAGE)
            .with_revision(self.revision);
        if keys_only {
            options = options.with_keys_only();
        }
        let response = backend.client.get(from, Some(options)).await?;
        if self.revision == 0 {
            self.revision = i64::try_from(header_revision(response.header())).unwrap_or(i64::MAX);
        }
        if let Some(last) = response.kvs().last()
            && response.more()
        {
            let mut next = last.key().to_vec();
            next.push(0);
            self.from = Some(next);
        }
        Ok(Some(response))
    }
}

impl EtcdBackend {
    /// The next [`ID_BLOCK`] ids from the shared counter `<prefix>m/id` (the last id
    /// reserved by any instance).
    async fn reserve_ids(&self) -> Result<std::ops::Range<u64>, StoreError> {
        let key = self.layout.meta("id");
        for _ in 0..COUNTER_ATTEMPTS {
            let (_, values) = self.read_keys(std::slice::from_ref(&key)).await?;
            let current = values.into_iter().next().flatten();
            let (last, revision) = match &current {
                Some(kv) => (read_u64(kv.value())?, kv.mod_revision()),
                None => (0, 0),
            };
            let reserved = last.saturating_add(ID_BLOCK);
            let txn = etcd_client::Txn::new()
                .when(vec![Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    revision,
                )])
                .and_then(vec![TxnOp::put(
                    key.clone(),
                    reserved.to_be_bytes().to_vec(),
                    None,
                )]);
            if self.client.txn(txn).await?.succeeded() {
                return Ok(last + 1..reserved + 1);
            }
        }
        Err(StoreError::Unavailable(
            "too much contention on the id counter".into(),
        ))
    }
}

/// How many ids an instance reserves at a time.
const ID_BLOCK: u64 = 32;

impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn epoch(&self) -> Option<String> {
        self.known_epoch()
    }

    fn snapshot<'a>(
        &'a self,
        revoked_jti: RevokedJtiSink<'a>,
    ) -> BoxFuture<'a, Result<Snapshot, StoreError>> {
        Box::pin(self.snapshot_at(revoked_jti))
    }

    fn commit(&self, txn: Txn) -> BoxFuture<'_, Result<Committed, StoreError>> {
        Box::pin(self.commit_txn(txn))
    }

    fn refresh(
        &self,
        hash: RefreshHash,
    ) -> BoxFuture<'_, Result<Option<Versioned<RefreshRecord>>, StoreError>> {
        Box::pin(async move {
            self.get_versioned(&Key::Refresh(hash), "refresh_tokens")
                .await
        })
    }

    fn mfa_token(
        &self,
        hash: RefreshHash,
    ) -> BoxFuture<'_, Result<Option<Versioned<MfaTokenRecord>>, StoreError>> {
        Box::pin(async move { self.get_versioned(&Key::MfaToken(hash), "mfa_tokens").await })
    }

    fn revocation(
        &self,
        kind: RevocationKind,
        id: String,
    ) -> BoxFuture<'_, Result<Option<Versioned<RevocationRecord>>, StoreError>> {
        Box::pin(async move {
            self.get_versioned(&Key::Revocation(kind, id), "revocations")
                .await
        })
    }

    fn users_page(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<UsersPage, StoreError>> {
        Box::pin(async move {
            let space = self.layout.space("u/");
            let from = match after {
                Some(name) => {
                    let mut key = self.layout.key(&Key::User(name));
                    key.push(0);
                    key
                }
                None => space.clone(),
            };
            let options = GetOptions::new()
                .with_range(prefix_end(&space))
                .with_limit(i64::try_from(limit + 1).unwrap_or(i64::MAX));
            let response = self.client.get(from, Some(options)).await?;
            let mut users = response
                .kvs()
                .iter()
                .map(|kv| decode::<UserRecord>(kv.value(), "users"))
                .collect::<Result<Vec<_>, _>>()?;
            let more = users.len() > limit;
            users.truncate(limit);
            Ok((users, more))
        })
    }

    fn revocations_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RevocationsPage, StoreError>> {
        Box::pin(async move {
            let space = self.layout.space("l/");
            let from = match after {
                Some(seq) => self.layout.log_entry(seq.saturating_add(1)),
                None => space.clone(),
            };
            let options = GetOptions::new()
                .with_range(prefix_end(&space))
                .with_limit(i64::try_from(limit + 1).unwrap_or(i64::MAX));
            let response = self.client.get(from, Some(options)).await?;
            let mut entries = response
                .kvs()
                .iter()
                .map(|kv| decode::<RevocationRecord>(kv.value(), "revocations"))
                .collect::<Result<Vec<_>, _>>()?;
            let more = entries.len() > limit;
            // An entry past its `expires_at` blocks nothing: gone, as on sled after a purge,
            // though its shared lease ends only with its hour.
            let now = self.clock.now();
            entries.truncate(limit);
            let last_seq = entries.last().map(|entry| entry.seq);
            entries.retain(|entry| entry.expires_at >= now);
            let next = if more { last_seq } else { None };
            Ok((entries, next))
        })
    }

    fn expired(&self, _now: UnixSeconds) -> BoxFuture<'_, Result<Vec<Expired>, StoreError>> {
        // etcd's leases remove expired records; nothing to purge by hand.
        Box::pin(async { Ok(Vec::new()) })
    }

    fn revocation_count(&self) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            let options = GetOptions::new().with_prefix().with_count_only();
            let response = self
                .client
                .get(self.layout.space("v/"), Some(options))
                .await?;
            Ok(usize::try_from(response.count()).unwrap_or(usize::MAX))
        })
    }

    fn next_id(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            // Ids are reserved from the shared counter a block at a time, one reservation
            // at a time per instance: concurrent creations on one instance do not race
            // each other for the counter.
            let mut ids = self.ids.lock().await;
            if ids.is_empty() {
                *ids = self.reserve_ids().await?;
            }
            ids.next()
                .ok_or_else(|| StoreError::Unavailable("no id was reserved".into()))
        })
    }

    fn catch_up(&self, keys: Vec<Key>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.catch_up_keys(&keys).await.map(|_| ()) })
    }

    fn members(&self) -> BoxFuture<'_, Result<Option<Vec<MemberRecord>>, StoreError>> {
        Box::pin(async move {
            let mut members = Vec::new();
            self.scan("n/", 0, false, |kv| {
                if let Ok(beat) = serde_json::from_slice::<sync::Beat>(kv.value()) {
                    members.push(beat.member);
                }
                Ok(())
            })
            .await?;
            Ok(Some(members))
        })
    }

    fn share_login_event(
        &self,
        event: LoginEvent,
        keep_until: UnixSeconds,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let number = self.login_events.fetch_add(1, Ordering::Relaxed);
            let key = self.layout.login_event(&self.node, number);
            let put = self
                .put_expiring(key, encode(0, &event)?, keep_until)
                .await?;
            self.client
                .txn(etcd_client::Txn::new().and_then(vec![put]))
                .await?;
            Ok(())
        })
    }

    fn on_login_event(&self, sink: LoginEventSink) {
        *self
            .login_sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(sink);
    }

    fn publish_member(&self, member: MemberRecord) {
        *self.member.lock().unwrap_or_else(PoisonError::into_inner) = Some(member);
    }

    fn set_request_timeout(&self, timeout: Duration) {
        self.client.set_request_timeout(timeout);
    }

    fn export<'a>(
        &'a self,
        out: &'a tokio::sync::mpsc::Sender<Exported>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.export_to(out))
    }

    fn restore_state(&self) -> BoxFuture<'_, Result<RestoreState, StoreError>> {
        Box::pin(self.restore_state_now())
    }

    fn begin_restore(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.begin_restore_now())
    }

    fn import(
        &self,
        records: Vec<Record>,
        _revision: Version,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        // etcd gives every write its own revision.
        Box::pin(self.import_now(records))
    }

    fn finish_restore(&self, point: ExportPoint) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.finish_restore_now(point))
    }

    fn close(&self) -> Result<(), StoreError> {
        // Every acknowledged commit is already committed by a quorum.
        Ok(())
    }
}

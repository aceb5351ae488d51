//! The etcd backend (cluster mode): N instances share one store in etcd under
//! `etcd.prefix`. Every commit is one etcd transaction whose compares are the [`Txn`]'s
//! preconditions on `mod_revision`; it is acknowledged only once a quorum committed it.
//! Each instance keeps its [`View`] from a snapshot plus a watch ([`sync`]), applies its own
//! commits at once, and reads a key it does not know yet linearizably before answering no.
//!
//! Expiry is etcd's: sessions, refresh tokens and revocation entries are written under a
//! lease shared by every record expiring in the same hour, so a million entries need a few
//! hundred leases, not a million; readers ignore entries past their `expires_at` anyway.

mod client;
mod layout;
pub mod sync;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, PutOptions, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

pub use client::{ClientOptions, EtcdClient};
use layout::{Layout, Named, decode, encode, nonce_of, prefix_end};

use super::StoreError;
use super::backend::{
    Backend, BoxFuture, Change, ChangeBatch, Committed, Expired, LoginEventSink, RevocationsPage,
    RevokedJtiSink, Snapshot, Txn, UsersPage, Write,
};
use super::freshness::Freshness;
use super::records::{
    Key, LoginEvent, MemberRecord, RefreshHash, RefreshRecord, RevocationKind, RevocationRecord,
    SessionRecord, UnixSeconds, UserRecord, Version, Versioned,
};
use super::view::View;
use crate::clock::Clock;

/// etcd refuses a transaction with more operations than this in one list (its default
/// `--max-txn-ops`); larger commits nest their writes in sub-transactions of this size.
const MAX_TXN_OPS: usize = 128;

/// How often a commit retries when only its own counters moved (not its preconditions).
const COUNTER_ATTEMPTS: usize = 16;

/// Records that expire within the same span share one lease.
const LEASE_BUCKET_SECS: i64 = 3600;

/// Expiring records stay this long past their `expires_at` before their lease ends:
/// the largest leeway a verifier may grant (API.md: at most 5 minutes).
const EXPIRY_MARGIN_SECS: i64 = 5 * 60;

/// How many keys a snapshot reads per request.
const SNAPSHOT_PAGE: i64 = 2_000;

/// What the first instance of a deployment records: fingerprints of the secret files every
/// instance must share (never the secrets).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub created_at: UnixSeconds,
    /// (what, fingerprint), e.g. ("admin.token_file", "…").
    pub fingerprints: Vec<(String, String)>,
}

/// The answer of [`EtcdBackend::claim_deployment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployment {
    /// Nothing was under the prefix: this instance's record is now the deployment's.
    Created,
    /// Another instance created the deployment; its record.
    Existing(DeploymentRecord),
}

/// The etcd store of one deployment.
pub struct EtcdBackend {
    client: EtcdClient,
    layout: Layout,
    view: Arc<View>,
    freshness: Arc<Freshness>,
    clock: Clock,
    node: String,
    /// Lease ids by the end of the hour bucket they cover.
    leases: Mutex<HashMap<i64, i64>>,
    /// Commits that take revocation positions run one at a time here: they all move the
    /// same counter, so concurrent ones would only conflict.
    counter_writer: tokio::sync::Mutex<()>,
    nonces: AtomicU64,
    member: Mutex<Option<MemberRecord>>,
    heartbeats: sync::Heartbeats,
    login_sink: Mutex<Option<LoginEventSink>>,
    login_events: AtomicU64,
}

/// A commit as etcd will see it.
struct Prepared {
    nonce: u64,
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
    /// The changes, with revocation entries placed; versions are set once committed.
    changes: Vec<Change>,
    /// The first key the commit puts, read back when etcd leaves the outcome uncertain.
    witness: Option<Vec<u8>>,
}

enum Attempt {
    Done(Committed),
    Conflict,
    Retry,
}

impl EtcdBackend {
    /// A backend over `client` (which connects by itself); [`sync::run`] loads and feeds
    /// `view`.
    pub fn new(
        client: EtcdClient,
        prefix: &str,
        node: String,
        view: Arc<View>,
        freshness: Arc<Freshness>,
    ) -> EtcdBackend {
        let clock = freshness.clock().clone();
        EtcdBackend {
            client,
            layout: Layout::new(prefix),
            view,
            freshness,
            clock,
            node,
            leases: Mutex::default(),
            counter_writer: tokio::sync::Mutex::new(()),
            nonces: AtomicU64::new(random_start()),
            member: Mutex::default(),
            heartbeats: sync::Heartbeats::default(),
            login_sink: Mutex::default(),
            login_events: AtomicU64::new(random_start()),
        }
    }

    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    /// Records `record` as the deployment's unless one exists; answers which happened.
    pub async fn claim_deployment(
        &self,
        record: &DeploymentRecord,
    ) -> Result<Deployment, StoreError> {
        let key = self.layout.meta("deployment");
        let value = serde_json::to_vec(record)
            .map_err(|err| StoreError::Unavailable(format!("cannot encode: {err}")))?;
        let txn = etcd_client::Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(key.clone(), value, None)])
            .or_else(vec![TxnOp::get(key, None)]);
        let response = self.client.txn(txn).await?;
        if response.succeeded() {
            return Ok(Deployment::Created);
        }
        let existing = response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            })
            .ok_or_else(|| StoreError::Unavailable("the deployment record vanished".into()))?;
        serde_json::from_slice(&existing)
            .map(Deployment::Existing)
            .map_err(|err| StoreError::Corrupt {
                space: "meta",
                reason: format!("deployment record: {err}"),
            })
    }

    /// The deployment's record, if there is one yet.
    pub async fn deployment(&self) -> Result<Option<DeploymentRecord>, StoreError> {
        let response = self
            .client
            .get(self.layout.meta("deployment"), None)
            .await?;
        response
            .kvs()
            .first()
            .map(|kv| {
                serde_json::from_slice(kv.value()).map_err(|err| StoreError::Corrupt {
                    space: "meta",
                    reason: format!("deployment record: {err}"),
                })
            })
            .transpose()
    }

    fn next_nonce(&self) -> u64 {
        self.nonces.fetch_add(1, Ordering::Relaxed)
    }

    /// The lease for records that expire at `expires_at` (granted on first use).
    async fn lease_for(&self, expires_at: UnixSeconds) -> Result<i64, StoreError> {
        let bucket_end = (expires_at + EXPIRY_MARGIN_SECS).div_euclid(LEASE_BUCKET_SECS)
            * LEASE_BUCKET_SECS
            + LEASE_BUCKET_SECS;
        if let Some(id) = self.lock_leases().get(&bucket_end) {
            return Ok(*id);
        }
        let ttl = (bucket_end - self.clock.now()).max(60);
        let id = self.client.lease_grant(ttl).await?;
        let mut leases = self.lock_leases();
        let now = self.clock.now();
        leases.retain(|end, _| *end > now);
        Ok(*leases.entry(bucket_end).or_insert(id))
    }

    fn lock_leases(&self) -> std::sync::MutexGuard<'_, HashMap<i64, i64>> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn put_expiring(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        expires_at: UnixSeconds,
    ) -> Result<TxnOp, StoreError> {
        let lease = self.lease_for(expires_at).await?;
        Ok(TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(lease)),
        ))
    }

    /// Reads `keys` at one revision (linearizable): each value and its `mod_revision`.
    async fn read_keys(
        &self,
        keys: &[Vec<u8>],
    ) -> Result<(Version, Vec<Option<KeyValue>>), StoreError> {
        let ops: Vec<TxnOp> = keys
            .iter()
            .map(|key| TxnOp::get(key.clone(), None))
            .collect();
        let response = self
            .client
            .txn(etcd_client::Txn::new().and_then(ops))
            .await?;
        let revision = header_revision(response.header());
        let values = response
            .op_responses()
            .into_iter()
            .map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().cloned(),
                _ => None,
            })
            .collect();
        Ok((revision, values))
    }

    /// Reads `keys` linearizably and applies what it finds to the view ahead of the
    /// stream; answers each key's version (`None`: absent).
    async fn catch_up_keys(&self, keys: &[Key]) -> Result<Vec<Option<Version>>, StoreError> {
        let names: Vec<Vec<u8>> = keys.iter().map(|key| self.layout.key(key)).collect();
        let (revision, values) = self.read_keys(&names).await?;
        let mut versions = Vec::with_capacity(keys.len());
        for (key, value) in keys.iter().zip(values) {
            let (batch, version) = match value {
                Some(kv) => {
                    let version = to_version(kv.mod_revision());
                    let change = decode_change(key, kv.value(), version)?;
                    (
                        ChangeBatch {
                            revision: version,
                            changes: vec![change],
                        },
                        Some(version),
                    )
                }
                None => (
                    ChangeBatch {
                        revision,
                        changes: vec![Change::Deleted(key.clone())],
                    },
                    None,
                ),
            };
            self.view.apply_own(&batch);
            versions.push(version);
        }
        Ok(versions)
    }

    async fn prepare(&self, txn: &Txn) -> Result<Prepared, StoreError> {
        let nonce = self.next_nonce();
        let mut compares: Vec<Compare> = txn
            .checks
            .iter()
            .map(|check| {
                let key = self.layout.key(&check.key);
                match check.version {
                    None => Compare::create_revision(key, CompareOp::Equal, 0),
                    Some(version) => {
                        Compare::mod_revision(key, CompareOp::Equal, to_revision(version))
                    }
                }
            })
            .collect();
        // Revocation entries: the counter that places them, and the entries they replace
        // or delete (whose list positions go with them).
        let touched: Vec<Key> = txn
            .writes
            .iter()
            .filter_map(|write| match write {
                Write::PutRevocation(entry) => Some(Key::Revocation(entry.kind, entry.id.clone())),
                Write::Delete(key @ Key::Revocation(..)) => Some(key.clone()),
                _ => None,
            })
            .collect();
        let counter = self.layout.meta("seq");
        let mut old_seqs: HashMap<Key, u64> = HashMap::new();
        let mut next_seq = 0u64;
        if !touched.is_empty() {
            let mut names: Vec<Vec<u8>> = vec![counter.clone()];
            names.extend(touched.iter().map(|key| self.layout.key(key)));
            let (_, values) = self.read_keys(&names).await?;
            let mut values = values.into_iter();
            let seq_kv = values.next().flatten();
            next_seq = match &seq_kv {
                Some(kv) => read_u64(kv.value())?,
                None => 0,
            };
            compares.push(Compare::mod_revision(
                counter.clone(),
                CompareOp::Equal,
                seq_kv.as_ref().map_or(0, KeyValue::mod_revision),
            ));
            for (key, value) in touched.iter().zip(values) {
                compares.push(Compare::mod_revision(
                    self.layout.key(key),
                    CompareOp::Equal,
                    value.as_ref().map_or(0, KeyValue::mod_revision),
                ));
                if let Some(kv) = value {
                    let entry: RevocationRecord = decode(kv.value(), "revocations")?;
                    old_seqs.insert(key.clone(), entry.seq);
                }
            }
        }
        let first_seq = next_seq;
        let mut ops = Vec::with_capacity(txn.writes.len() + 4);
        let mut changes = Vec::with_capacity(txn.writes.len());
        let mut witness = None;
        for write in &txn.writes {
            match write {
                Write::PutUser(user) => {
                    let key = self.layout.key(&Key::User(user.username.clone()));
                    witness.get_or_insert_with(|| key.clone());
                    ops.push(TxnOp::put(key, encode(nonce, user)?, None));
                    changes.push(Change::User(Versioned {
                        version: 0,
                        record: user.clone(),
                    }));
                }
                Write::PutSession(session) => {
                    let key = self.layout.key(&Key::Session(session.sid.clone()));
                    witness.get_or_insert_with(|| key.clone());
                    let expires_at = session.expires_at.max(session.access_expires_at);
                    ops.push(
                        self.put_expiring(key, encode(nonce, session)?, expires_at)
                            .await?,
                    );
                    changes.push(Change::Session(Versioned {
                        version: 0,
                        record: session.clone(),
                    }));
                }
                Write::PutRefresh(hash, record) => {
                    let key = self.layout.key(&Key::Refresh(*hash));
                    witness.get_or_insert_with(|| key.clone());
                    ops.push(
                        self.put_expiring(key, encode(nonce, record)?, record.expires_at)
                            .await?,
                    );
                    changes.push(Change::Refresh(*hash));
                }
                Write::PutRevocation(entry) => {
                    next_seq += 1;
                    let entry = RevocationRecord {
                        seq: next_seq,
                        ..entry.clone()
                    };
                    let key = Key::Revocation(entry.kind, entry.id.clone());
                    if let Some(old) = old_seqs.remove(&key) {
                        ops.push(TxnOp::delete(self.layout.log_entry(old), None));
                    }
                    let name = self.layout.key(&key);
                    witness.get_or_insert_with(|| name.clone());
                    let value = encode(nonce, &entry)?;
                    ops.push(
                        self.put_expiring(name, value.clone(), entry.expires_at)
                            .await?,
                    );
                    ops.push(
                        self.put_expiring(
                            self.layout.log_entry(entry.seq),
                            value,
                            entry.expires_at,
                        )
                        .await?,
                    );
                    changes.push(Change::Revocation(entry));
                }
                Write::Delete(key) => {
                    if let Some(old) = old_seqs.remove(key) {
                        ops.push(TxnOp::delete(self.layout.log_entry(old), None));
                    }
                    ops.push(TxnOp::delete(self.layout.key(key), None));
                    changes.push(Change::Deleted(key.clone()));
                }
            }
        }
        if next_seq != first_seq {
            ops.push(TxnOp::put(counter, next_seq.to_be_bytes().to_vec(), None));
        }
        if compares.len() > MAX_TXN_OPS {
            return Err(StoreError::Unavailable(format!(
                "a commit with {} preconditions is over etcd's limit of {MAX_TXN_OPS}",
                compares.len()
            )));
        }
        Ok(Prepared {
            nonce,
            compares,
            ops: nest(ops),
            changes,
            witness,
        })
    }

    async fn attempt(&self, txn: &Txn) -> Result<Attempt, StoreError> {
        let prepared = self.prepare(txn).await?;
        let request = etcd_client::Txn::new()
            .when(prepared.compares.clone())
            .and_then(prepared.ops.clone());
        // Three quarters of the budget for the commit; the rest to read an uncertain
        // outcome back (the whole commit is bounded by the request timeout).
        let budget = self.client.request_timeout() * 3 / 4;
        let revision = match self.client.txn_within(request, budget).await {
            Ok(response) if response.succeeded() => header_revision(response.header()),
            Ok(_) => {
                // A precondition failed: the caller's, or only our counter's.
                let keys: Vec<Key> = txn.checks.iter().map(|check| check.key.clone()).collect();
                let versions = self.catch_up_keys(&keys).await?;
                let held = txn
                    .checks
                    .iter()
                    .zip(&versions)
                    .all(|(check, version)| check.version == *version);
                return Ok(if held {
                    Attempt::Retry
                } else {
                    Attempt::Conflict
                });
            }
            Err(err) if err.is_lease_gone() => {
                self.lock_leases().clear();
                return Ok(Attempt::Retry);
            }
            Err(err) => self.read_back(&prepared, err).await?,
        };
        Ok(Attempt::Done(self.publish(revision, prepared.changes)))
    }

    /// The commit's fate when etcd left it uncertain (a timeout, a lost connection): its
    /// first put carries the nonce, so reading that key back tells whether it applied.
    async fn read_back(
        &self,
        prepared: &Prepared,
        err: client::CallError,
    ) -> Result<Version, StoreError> {
        let Some(witness) = &prepared.witness else {
            return Err(err.into());
        };
        let (_, values) = self
            .read_keys(std::slice::from_ref(witness))
            .await
            .map_err(|_| StoreError::from(err))?;
        match values.into_iter().next().flatten() {
            Some(kv) if nonce_of(kv.value()) == Some(prepared.nonce) => {
                Ok(to_version(kv.mod_revision()))
            }
            _ => Err(StoreError::Unavailable(
                "etcd did not commit the write".into(),
            )),
        }
    }

    /// Applies a commit at `revision` to the view (read your writes); answers it.
    fn publish(&self, revision: Version, mut changes: Vec<Change>) -> Committed {
        for change in &mut changes {
            match change {
                Change::User(user) => user.version = revision,
                Change::Session(session) => session.version = revision,
                _ => {}
            }
        }
        let batch = ChangeBatch { revision, changes };
        self.view.apply_own(&batch);
        let revocations = batch
            .changes
            .into_iter()
            .filter_map(|change| match change {
                Change::Revocation(entry) => Some(entry),
                _ => None,
            })
            .collect();
        Committed {
            revision,
            revocations,
        }
    }

    async fn commit_txn(&self, txn: Txn) -> Result<Committed, StoreError> {
        let places_entries = txn.writes.iter().any(|write| {
            matches!(
                write,
                Write::PutRevocation(_) | Write::Delete(Key::Revocation(..))
            )
        });
        let _writer = if places_entries {
            Some(self.counter_writer.lock().await)
        } else {
            None
        };
        let timeout = self.client.request_timeout();
        let attempts = async {
            for _ in 0..COUNTER_ATTEMPTS {
                match self.attempt(&txn).await? {
                    Attempt::Done(committed) => return Ok(committed),
                    Attempt::Conflict => return Err(StoreError::Conflict),
                    Attempt::Retry => {}
                }
            }
            Err(StoreError::Unavailable(
                "too much contention on the revocation counter".into(),
            ))
        };
        match tokio::time::timeout(timeout, attempts).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd did not commit within {timeout:?}"
            ))),
        }
    }

    async fn get_versioned<T: serde::de::DeserializeOwned>(
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
    async fn scan(
        &self,
        space: &str,
        revision: i64,
        keys_only: bool,
        mut each: impl FnMut(&KeyValue) -> Result<(), StoreError>,
    ) -> Result<i64, StoreError> {
        let start = self.layout.space(space);
        let end = prefix_end(&start);
        let mut from = start;
        let mut revision = revision;
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(SNAPSHOT_PAGE)
                .with_revision(revision);
            if keys_only {
                options = options.with_keys_only();
            }
            let response = self.client.get(from.clone(), Some(options)).await?;
            if revision == 0 {
                revision = i64::try_from(header_revision(response.header())).unwrap_or(i64::MAX);
            }
            for kv in response.kvs() {
                each(kv)?;
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(revision),
            }
        }
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

    /// The change a watch event or a read names, for the view.
    pub(crate) fn change_of(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
    ) -> Result<Option<Change>, StoreError> {
        let Named::Record(key) = self.layout.name(key) else {
            return Ok(None);
        };
        match value {
            None => Ok(Some(Change::Deleted(key))),
            Some(value) => decode_change(&key, value, version).map(Some),
        }
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    pub(crate) fn view(&self) -> &View {
        &self.view
    }

    pub(crate) fn freshness(&self) -> &Freshness {
        &self.freshness
    }

    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    pub(crate) fn heartbeats(&self) -> &sync::Heartbeats {
        &self.heartbeats
    }

    pub(crate) fn member(&self) -> Option<MemberRecord> {
        self.member
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Hands another instance's login event (as stored) to the throttle.
    pub(crate) fn deliver_login_event(&self, value: &[u8]) {
        let sink = self
            .login_sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match (sink, decode::<LoginEvent>(value, "login events")) {
            (Some(sink), Ok(event)) => sink(&event),
            (_, Err(err)) => tracing::warn!(error = %err, "an unreadable login event; ignored"),
            (None, Ok(_)) => {}
        }
    }

    /// Every other instance's login events still kept, to the throttle (at a load).
    pub(crate) async fn load_login_events(&self) -> Result<(), StoreError> {
        let mut values = Vec::new();
        self.scan("t/", 0, false, |kv| {
            if let Named::LoginEvent(node) = self.layout.name(kv.key())
                && node != self.node
            {
                values.push(kv.value().to_vec());
            }
            Ok(())
        })
        .await?;
        for value in values {
            self.deliver_login_event(&value);
        }
        Ok(())
    }
}

fn decode_change(key: &Key, value: &[u8], version: Version) -> Result<Change, StoreError> {
    Ok(match key {
        Key::User(_) => Change::User(Versioned {
            version,
            record: decode(value, "users")?,
        }),
        Key::Session(_) => Change::Session(Versioned {
            version,
            record: decode(value, "sessions")?,
        }),
        Key::Refresh(hash) => Change::Refresh(*hash),
        Key::Revocation(..) => Change::Revocation(decode(value, "revocations")?),
    })
}

/// Puts `ops` in one list, or in nested transactions of at most [`MAX_TXN_OPS`] each
/// (a nested transaction without compares always applies, inside the outer one).
fn nest(ops: Vec<TxnOp>) -> Vec<TxnOp> {
    if ops.len() <= MAX_TXN_OPS {
        return ops;
    }
    let mut nested = Vec::new();
    let mut rest = ops.into_iter().peekable();
    while rest.peek().is_some() {
        let chunk: Vec<TxnOp> = rest.by_ref().take(MAX_TXN_OPS).collect();
        nested.push(TxnOp::txn(etcd_client::Txn::new().and_then(chunk)));
    }
    nested
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Version {
    header.map_or(0, |header| to_version(header.revision()))
}

fn to_version(revision: i64) -> Version {
    u64::try_from(revision).unwrap_or(0)
}

fn to_revision(version: Version) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

fn read_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            space: "meta",
            reason: format!("a counter of {} bytes", bytes.len()),
        })
}

impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        "etcd"
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
            let next = if entries.len() > limit {
                entries.truncate(limit);
                entries.last().map(|entry| entry.seq)
            } else {
                None
            };
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
            let key = self.layout.meta("id");
            for _ in 0..COUNTER_ATTEMPTS {
                let (_, values) = self.read_keys(std::slice::from_ref(&key)).await?;
                let current = values.into_iter().next().flatten();
                let (last, revision) = match &current {
                    Some(kv) => (read_u64(kv.value())?, kv.mod_revision()),
                    None => (0, 0),
                };
                let next = last + 1;
                let txn = etcd_client::Txn::new()
                    .when(vec![Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        revision,
                    )])
                    .and_then(vec![TxnOp::put(
                        key.clone(),
                        next.to_be_bytes().to_vec(),
                        None,
                    )]);
                if self.client.txn(txn).await?.succeeded() {
                    return Ok(next);
                }
            }
            Err(StoreError::Unavailable(
                "too much contention on the id counter".into(),
            ))
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

    fn close(&self) -> Result<(), StoreError> {
        // Every acknowledged commit is already committed by a quorum.
        Ok(())
    }
}

/// A random start for this process's commit nonces, so two instances (or two runs of
/// one) never write the same nonce.
fn random_start() -> u64 {
    let mut bytes = [0u8; 8];
    crate::random::fill(&mut bytes);
    u64::from_be_bytes(bytes)
}

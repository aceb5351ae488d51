//! The etcd backend (cluster mode): N instances share one store in etcd under
//! `etcd.prefix`. Every commit is one etcd transaction whose compares are the [`Txn`]'s
//! preconditions on `mod_revision`; it is acknowledged only once a quorum committed it.
//! A commit over etcd's 128-operation limit (a user with many sessions deleted) sends
//! the deletions of sessions it already ended in follow-up transactions before its answer.
//! Each instance keeps its [`View`] from a snapshot plus a watch ([`sync`]), applies its own
//! commits at once, and reads a key it does not know yet linearizably before answering no.
//!
//! Expiry is etcd's: sessions, refresh tokens and revocation entries are written under a
//! lease shared by every record expiring in the same hour, so a million entries need a few
//! hundred leases, not a million; readers ignore entries past their `expires_at` anyway.

mod backup;
mod client;
mod commit;
mod layout;
mod reads;
pub mod sync;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use etcd_client::{Compare, CompareOp, KeyValue, PutOptions, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

pub use client::{ClientOptions, EtcdClient};
use layout::{Layout, Named, decode};

use super::StoreError;
use super::backend::{Change, ChangeBatch, LoginEventSink};
use super::freshness::Freshness;
use super::records::{Key, LoginEvent, MemberRecord, UnixSeconds, Version, Versioned};
use super::view::View;
use crate::clock::Clock;

/// etcd refuses a transaction with more operations than this (its default `--max-txn-ops`;
/// nested transactions count against the same budget). A commit past it sends the
/// deletions of sessions it already kills in further transactions (see `commit.rs`).
const MAX_TXN_OPS: usize = 128;

/// How often a commit retries when only its own counters moved (not its preconditions).
const COUNTER_ATTEMPTS: usize = 16;

/// Records that expire within the same span share one lease.
const LEASE_BUCKET_SECS: i64 = 3600;

/// Expiring records stay this long past their `expires_at` before their lease ends:
/// the largest leeway a verifier may grant (API.md: at most 5 minutes).
const EXPIRY_MARGIN_SECS: i64 = 5 * 60;

/// How many keys a snapshot reads per request. etcd 3.4 walks the rest of the range on
/// every limited request, so small pages make a large load quadratic.
const SNAPSHOT_PAGE: i64 = 20_000;

/// The longest lease asked for: a year (etcd's own limit is far above it).
const MAX_LEASE_SECS: i64 = 366 * 86_400;

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
    /// Ids this instance reserved and has not handed out yet.
    ids: tokio::sync::Mutex<std::ops::Range<u64>>,
    nonces: AtomicU64,
    member: Mutex<Option<MemberRecord>>,
    heartbeats: sync::Heartbeats,
    login_sink: Mutex<Option<LoginEventSink>>,
    login_events: AtomicU64,
    /// The deployment's epoch (`<prefix>m/epoch`), once read or made at a snapshot load.
    epoch: Mutex<Option<String>>,
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
        clock: Clock,
    ) -> EtcdBackend {
        EtcdBackend {
            client,
            layout: Layout::new(prefix),
            view,
            freshness,
            clock,
            node,
            leases: Mutex::default(),
            counter_writer: tokio::sync::Mutex::new(()),
            ids: tokio::sync::Mutex::new(0..0),
            nonces: AtomicU64::new(random_start()),
            member: Mutex::default(),
            heartbeats: sync::Heartbeats::default(),
            login_sink: Mutex::default(),
            login_events: AtomicU64::new(random_start()),
            epoch: Mutex::default(),
        }
    }

    /// Reads the deployment's epoch, making it if there is none yet (a new deployment, or
    /// one created before epochs were kept): the first instance's id wins.
    pub(crate) async fn ensure_epoch(&self) -> Result<String, StoreError> {
        let key = self.layout.meta("epoch");
        let made = crate::random::random_id(12);
        let txn = etcd_client::Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(key.clone(), made.clone(), None)])
            .or_else(vec![TxnOp::get(key, None)]);
        let response = self.client.txn(txn).await?;
        let epoch = if response.succeeded() {
            made
        } else {
            let stored = response
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
                    _ => None,
                })
                .ok_or_else(|| StoreError::Unavailable("the epoch record vanished".into()))?;
            String::from_utf8(stored).map_err(|_| StoreError::Corrupt {
                space: "meta",
                reason: "the epoch is not UTF-8".into(),
            })?
        };
        *self.epoch.lock().unwrap_or_else(PoisonError::into_inner) = Some(epoch.clone());
        Ok(epoch)
    }

    /// The epoch [`EtcdBackend::ensure_epoch`] read, if it ran.
    pub(crate) fn known_epoch(&self) -> Option<String> {
        self.epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
        // No record outlives the longest lease etcd grants (and no arithmetic overflows on
        // an absurd expiry, such as a token's `exp` at the end of time).
        let now = self.clock.now();
        let expires_at = expires_at.clamp(now, now.saturating_add(MAX_LEASE_SECS));
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
        Key::MfaToken(hash) => Change::MfaToken(*hash),
        Key::Revocation(..) => Change::Revocation(decode(value, "revocations")?),
    })
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Version {
    header.map_or(0, |header| to_version(header.revision()))
}

fn to_version(revision: i64) -> Version {
    u64::try_from(revision).unwrap_or(0)
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

/// A random start for this process's commit nonces, so two instances (or two runs of
/// one) never write the same nonce.
fn random_start() -> u64 {
    let mut bytes = [0u8; 8];
    crate::random::fill(&mut bytes);
    u64::from_be_bytes(bytes)
}

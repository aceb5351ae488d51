//! Keeping one instance's view in step with etcd: load a snapshot at one revision, watch
//! from the next, resume a broken watch where it stopped, and resync from a new snapshot
//! when that revision was compacted. Beside it, the heartbeat: a leased member key written
//! every second; when the watch brings one back, everything committed before it was
//! written is in the view, so the view counts as current up to then.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use etcd_client::{EventType, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::layout::{Named, prefix_end};
use super::{EtcdBackend, to_version};
use crate::store::StoreError;
use crate::store::backend::{ChangeBatch, ChangeSink};
use crate::store::records::MemberRecord;

/// How often the heartbeat is written.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// The member key's lease: a dead instance disappears from the member list this long after
/// its last heartbeat.
const MEMBER_TTL_SECS: i64 = 10;

/// The longest wait between two attempts to reach etcd.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What a heartbeat writes under the member key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Beat {
    pub beat: u64,
    pub member: MemberRecord,
}

/// The heartbeats written and not yet seen back, with when each was written.
#[derive(Debug, Default)]
pub struct Heartbeats {
    sent: Mutex<VecDeque<(u64, Instant)>>,
}

impl Heartbeats {
    fn sent(&self, beat: u64, at: Instant) {
        let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        sent.push_back((beat, at));
        while sent.len() > 64 {
            sent.pop_front();
        }
    }

    /// Beat `beat` came back: when it was written (forgetting it and every older one).
    fn returned(&self, beat: u64) -> Option<Instant> {
        let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        let at = sent
            .iter()
            .find(|(number, _)| *number == beat)
            .map(|(_, at)| *at);
        sent.retain(|(number, _)| *number > beat);
        at
    }
}

/// Why following the watch stopped.
enum Stopped {
    /// The daemon is stopping.
    Stop,
    /// The watch's start revision was compacted away: load a new snapshot.
    Compacted,
}

/// Loads the view and keeps it current until `stop` turns true. `loaded` turns true once
/// the first snapshot is in.
pub async fn run(
    backend: Arc<EtcdBackend>,
    mut stop: watch::Receiver<bool>,
    loaded: watch::Sender<bool>,
) {
    let heartbeat = tokio::spawn(heartbeat(backend.clone(), stop.clone()));
    let mut backoff = Backoff::default();
    loop {
        if *stop.borrow() {
            break;
        }
        let revision = match load(&backend).await {
            Ok(revision) => revision,
            Err(err) => {
                tracing::warn!(error = %err, "cannot load the store from etcd; retrying");
                if backoff.wait(&mut stop).await {
                    break;
                }
                continue;
            }
        };
        backoff.reset();
        backend.freshness().loaded();
        loaded.send_replace(true);
        match follow(&backend, revision, &mut stop).await {
            Stopped::Stop => break,
            Stopped::Compacted => {
                tracing::warn!(
                    "the watch fell behind etcd's compaction: resyncing from a snapshot"
                );
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), heartbeat).await;
}

/// Loads a snapshot into the view; answers its revision.
async fn load(backend: &EtcdBackend) -> Result<i64, StoreError> {
    backend.ensure_epoch().await?;
    let view = backend.view();
    let revoked = view.revoked_jti_loader();
    // The snapshot is a linearizable read: it holds everything committed before it was
    // asked for, so the view is current as of this moment.
    let asked = backend.freshness().clock().instant();
    let snapshot = backend.snapshot_at(&|jti| revoked.add(jti)).await?;
    let revision = i64::try_from(snapshot.revision).unwrap_or(i64::MAX);
    view.load(snapshot, revoked);
    backend.load_login_events().await?;
    backend.freshness().confirm(asked);
    tracing::info!(revision, "loaded the store from etcd");
    Ok(revision)
}

/// Applies every change after `revision` as the watch delivers it, resuming the watch
/// after a break.
async fn follow(backend: &EtcdBackend, revision: i64, stop: &mut watch::Receiver<bool>) -> Stopped {
    let mut last = revision;
    let mut backoff = Backoff::default();
    loop {
        let client = match backend.client().connected().await {
            Ok(client) => client,
            Err(err) => {
                tracing::warn!(error = %err, "cannot reach etcd to watch; retrying");
                if backoff.wait(stop).await {
                    return Stopped::Stop;
                }
                continue;
            }
        };
        let prefix = backend.layout().prefix().to_vec();
        let options = WatchOptions::new()
            .with_range(prefix_end(&prefix))
            .with_start_revision(last + 1);
        let mut watch_client = client.watch_client();
        let mut stream = match watch_client.watch(prefix, Some(options)).await {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "cannot open the etcd watch; retrying");
                backend.client().member_failed().await;
                if backoff.wait(stop).await {
                    return Stopped::Stop;
                }
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                _ = stop.changed() => return Stopped::Stop,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => {
                    tracing::warn!("the etcd watch ended; resuming");
                    backend.client().member_failed().await;
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the etcd watch broke; resuming");
                    backend.client().member_failed().await;
                    break;
                }
            };
            if response.compact_revision() > 0 {
                return Stopped::Compacted;
            }
            if response.canceled() {
                tracing::warn!(
                    reason = response.cancel_reason(),
                    "etcd cancelled the watch; resuming"
                );
                // e.g. the member lost its leader (require-leader): try another member.
                backend.client().member_failed().await;
                break;
            }
            backoff.reset();
            if let Some(revision) = apply_events(backend, response.events()) {
                last = last.max(revision);
            }
        }
        if backoff.wait(stop).await {
            return Stopped::Stop;
        }
    }
}

/// Applies one watch response's events, a batch per revision; answers the last revision.
fn apply_events(backend: &EtcdBackend, events: &[etcd_client::Event]) -> Option<i64> {
    let mut batch: Option<ChangeBatch> = None;
    let mut last = None;
    for event in events {
        let Some(kv) = event.kv() else { continue };
        let revision = kv.mod_revision();
        last = Some(revision);
        let version = to_version(revision);
        if batch.as_ref().is_some_and(|open| open.revision != version)
            && let Some(done) = batch.take()
        {
            backend.view().apply(&done);
        }
        let deleted = matches!(event.event_type(), EventType::Delete);
        match backend.layout().name(kv.key()) {
            Named::Member(node) => {
                if node == backend.node() && !deleted {
                    confirm(backend, kv.value());
                }
                continue;
            }
            Named::LoginEvent(node) => {
                if node != backend.node() && !deleted {
                    backend.deliver_login_event(kv.value());
                }
                continue;
            }
            _ => {}
        }
        let value = (!deleted).then(|| kv.value());
        let change = match backend.change_of(kv.key(), value, version) {
            Ok(change) => change,
            Err(err) => {
                tracing::error!(error = %err, "an unreadable record in etcd; ignored");
                None
            }
        };
        let open = batch.get_or_insert_with(|| ChangeBatch {
            revision: version,
            changes: Vec::new(),
        });
        if let Some(change) = change {
            open.changes.push(change);
        }
    }
    if let Some(done) = batch {
        backend.view().apply(&done);
    }
    last
}

/// One of this instance's heartbeats came back through the watch.
fn confirm(backend: &EtcdBackend, value: &[u8]) {
    let Ok(beat) = serde_json::from_slice::<Beat>(value) else {
        return;
    };
    if let Some(at) = backend.heartbeats().returned(beat.beat) {
        backend.freshness().confirm(at);
    }
}

/// Writes the member key every second under a lease kept alive by the writes' loop.
async fn heartbeat(backend: Arc<EtcdBackend>, mut stop: watch::Receiver<bool>) {
    let mut lease: Option<i64> = None;
    let mut beat = 0u64;
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => {
                // Leave the member list at once rather than when the lease runs out.
                if let Some(id) = lease {
                    let _ = backend.client().lease_revoke(id).await;
                }
                return;
            }
        }
        beat += 1;
        if let Err(err) = write_heartbeat(&backend, &mut lease, beat).await {
            tracing::debug!(error = %err, "heartbeat not written");
        }
    }
}

async fn write_heartbeat(
    backend: &EtcdBackend,
    lease: &mut Option<i64>,
    beat: u64,
) -> Result<(), StoreError> {
    let client = backend.client();
    let id = match *lease {
        Some(id) => {
            let mut raw = client.connected().await?;
            let alive = tokio::time::timeout(client.request_timeout(), async {
                let (mut keeper, mut responses) = raw.lease_keep_alive(id).await?;
                keeper.keep_alive().await?;
                Ok::<_, etcd_client::Error>(responses.message().await?.map_or(0, |r| r.ttl()))
            })
            .await;
            match alive {
                Ok(Ok(ttl)) if ttl > 0 => id,
                _ => {
                    *lease = None;
                    return Err(StoreError::Unavailable("the member lease lapsed".into()));
                }
            }
        }
        None => {
            let id = client.lease_grant(MEMBER_TTL_SECS).await?;
            *lease = Some(id);
            id
        }
    };
    let now = backend.clock().now();
    let mut member = backend.member().unwrap_or_else(|| MemberRecord {
        node: backend.node().to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        public_addr: String::new(),
        started_at: now,
        last_seen: now,
        signing_kid: String::new(),
        keyset: String::new(),
    });
    member.last_seen = now;
    let value = serde_json::to_vec(&Beat { beat, member })
        .map_err(|err| StoreError::Unavailable(format!("cannot encode a heartbeat: {err}")))?;
    // Noted before it is sent: the view is current as of this moment once it returns.
    backend
        .heartbeats()
        .sent(beat, backend.freshness().clock().instant());
    let put = etcd_client::TxnOp::put(
        backend.layout().member(backend.node()),
        value,
        Some(PutOptions::new().with_lease(id)),
    );
    client
        .txn(etcd_client::Txn::new().and_then(vec![put]))
        .await?;
    Ok(())
}

/// Waits between attempts: 50 ms, doubling up to [`MAX_BACKOFF`]. Answers true when told to
/// stop meanwhile.
#[derive(Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    fn reset(&mut self) {
        self.next = None;
    }

    async fn wait(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let wait = self.next.unwrap_or(Duration::from_millis(50));
        self.next = Some((wait * 2).min(MAX_BACKOFF));
        tokio::select! {
            _ = tokio::time::sleep(wait) => *stop.borrow(),
            _ = stop.changed() => true,
        }
    }
}

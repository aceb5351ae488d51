//! Committing a [`Txn`] to etcd: one transaction whose compares are the preconditions,
//! revocation entries placed by a counter key, the writes nested past etcd's op limit, and
//! an uncertain outcome read back through the commit's nonce.

use std::collections::HashMap;

use etcd_client::{Compare, CompareOp, KeyValue, TxnOp};

use super::layout::{decode, encode, nonce_of};
use super::{COUNTER_ATTEMPTS, EtcdBackend, MAX_TXN_OPS, header_revision, read_u64, to_version};
use crate::store::StoreError;
use crate::store::backend::{Change, ChangeBatch, Committed, Txn, Write};
use crate::store::records::{Key, RevocationRecord, Version, Versioned};

/// How long a conflicting commit waits for the view to catch up before answering.
const CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// A commit as etcd will see it.
struct Prepared {
    nonce: u64,
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
    /// Deletions of sessions that `ops` already kills, past etcd's operation limit: applied
    /// in further transactions before the commit is acknowledged.
    follow_ups: Vec<Vec<TxnOp>>,
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
    async fn prepare(&self, txn: &Txn, nonce: u64) -> Result<Prepared, StoreError> {
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
                Write::PutRevocation(entry) => Some(entry.key()),
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
        let mut deferrable = Vec::new();
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
                Write::PutMfaToken(hash, record) => {
                    let key = self.layout.key(&Key::MfaToken(*hash));
                    witness.get_or_insert_with(|| key.clone());
                    ops.push(
                        self.put_expiring(key, encode(nonce, record)?, record.expires_at)
                            .await?,
                    );
                    changes.push(Change::MfaToken(*hash));
                }
                Write::PutRevocation(entry) => {
                    next_seq += 1;
                    let entry = RevocationRecord {
                        seq: next_seq,
                        ..entry.clone()
                    };
                    let key = entry.key();
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
                    let delete = TxnOp::delete(self.layout.key(key), None);
                    if killed_by(txn, key, &self.view) {
                        deferrable.push(delete);
                    } else {
                        ops.push(delete);
                    }
                    changes.push(Change::Deleted(key.clone()));
                }
            }
        }
        if next_seq != first_seq {
            ops.push(TxnOp::put(counter, next_seq.to_be_bytes().to_vec(), None));
        }
        if compares.len() > MAX_TXN_OPS || ops.len() > MAX_TXN_OPS {
            return Err(StoreError::Unavailable(format!(
                "a commit of {} preconditions and {} writes is over etcd's limit of {MAX_TXN_OPS} operations",
                compares.len(),
                ops.len() + deferrable.len()
            )));
        }
        // As many of the deferrable deletions as fit go with the commit; the rest follow.
        let room = MAX_TXN_OPS - ops.len();
        let mut deferred = deferrable.into_iter();
        ops.extend(deferred.by_ref().take(room));
        let deferred: Vec<TxnOp> = deferred.collect();
        let follow_ups = deferred
            .chunks(MAX_TXN_OPS)
            .map(<[TxnOp]>::to_vec)
            .collect();
        Ok(Prepared {
            nonce,
            compares,
            ops,
            follow_ups,
            changes,
            witness,
        })
    }

    /// One try at committing `txn` under `nonce` (the same for every try of one commit).
    /// `uncertain` is set once a try's outcome was unknown and then read back as not
    /// applied: a later try's failed precondition may then be that try, applied late.
    async fn attempt(
        &self,
        txn: &Txn,
        nonce: u64,
        uncertain: &mut bool,
    ) -> Result<Attempt, StoreError> {
        let prepared = self.prepare(txn, nonce).await?;
        let request = etcd_client::Txn::new()
            .when(prepared.compares.clone())
            .and_then(prepared.ops.clone());
        // Three quarters of the budget for the commit; the rest to read an uncertain
        // outcome back (the whole commit is bounded by the request timeout).
        let budget = self.client.request_timeout() * 3 / 4;
        let revision = match self.client.commit_within(request, budget).await {
            Ok(response) if response.succeeded() => header_revision(response.header()),
            Ok(response) => {
                // A precondition failed: perhaps only because an earlier try of this
                // commit applied after all.
                if *uncertain && let Some(revision) = self.applied(&prepared).await? {
                    return self.finish(prepared, revision).await;
                }
                // Otherwise the caller's precondition, or only our counter's.
                let keys: Vec<Key> = txn.checks.iter().map(|check| check.key.clone()).collect();
                let versions = self.catch_up_keys(&keys).await?;
                let held = txn
                    .checks
                    .iter()
                    .zip(&versions)
                    .all(|(check, version)| check.version == *version);
                if held {
                    return Ok(Attempt::Retry);
                }
                // The caller reads the view again before retrying: give the watch a moment
                // to bring what the other instance committed (a concurrent login's session,
                // say), or the retry would only conflict again.
                self.view
                    .wait_for(header_revision(response.header()), CATCH_UP_WAIT)
                    .await;
                return Ok(Attempt::Conflict);
            }
            Err(err) if err.is_lease_gone() => {
                self.lock_leases().clear();
                return Ok(Attempt::Retry);
            }
            Err(err) => match self.applied(&prepared).await {
                Ok(Some(revision)) => revision,
                // Not applied (yet): the next try carries the caller's preconditions too,
                // so at most one try can apply, and the nonce tells which.
                Ok(None) => {
                    *uncertain = true;
                    return Ok(Attempt::Retry);
                }
                Err(_) => return Err(err.into()),
            },
        };
        self.finish(prepared, revision).await
    }

    /// Completes a commit that applied at `revision`: the deferred deletions, then the view.
    async fn finish(&self, prepared: Prepared, revision: Version) -> Result<Attempt, StoreError> {
        for ops in &prepared.follow_ups {
            // Plain deletions: repeating one that applied changes nothing.
            self.client
                .txn(etcd_client::Txn::new().and_then(ops.clone()))
                .await?;
        }
        Ok(Attempt::Done(self.publish(revision, prepared.changes)))
    }

    /// Whether a try of this commit applied, when etcd left the outcome uncertain (a
    /// timeout, a lost connection): its first put carries the commit's nonce, so reading
    /// that key back tells. The revision it applied at, if it did.
    async fn applied(&self, prepared: &Prepared) -> Result<Option<Version>, StoreError> {
        let Some(witness) = &prepared.witness else {
            return Err(StoreError::Unavailable(
                "etcd left the outcome of a commit unknown".into(),
            ));
        };
        let (_, values) = self.read_keys(std::slice::from_ref(witness)).await?;
        Ok(match values.into_iter().next().flatten() {
            Some(kv) if nonce_of(kv.value()) == Some(prepared.nonce) => {
                Some(to_version(kv.mod_revision()))
            }
            _ => None,
        })
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
        batch.into_committed()
    }

    pub(super) async fn commit_txn(&self, txn: Txn) -> Result<Committed, StoreError> {
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
        let nonce = self.next_nonce();
        let mut uncertain = false;
        let attempts = async {
            for _ in 0..COUNTER_ATTEMPTS {
                match self.attempt(&txn, nonce, &mut uncertain).await? {
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
}

/// Whether deleting `key` may wait for a later transaction: it is a session whose user the
/// same commit deletes or moves to another generation, so the commit itself already ends it
/// (sessions of an older generation or a deleted account authenticate nothing).
fn killed_by(txn: &Txn, key: &Key, view: &crate::store::View) -> bool {
    let Key::Session(sid) = key else {
        return false;
    };
    let Some(session) = view.session(sid) else {
        return false;
    };
    let session = &session.record;
    txn.writes.iter().any(|write| match write {
        Write::Delete(Key::User(name)) => *name == session.username,
        Write::PutUser(user) => {
            user.username == session.username
                && (user.generation != session.generation || user.account_id != session.account_id)
        }
        _ => false,
    })
}

fn to_revision(version: Version) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

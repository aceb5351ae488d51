//! Backups and restores of an etcd deployment. An export reads every record at one etcd
//! revision, page by page (etcd's MVCC keeps that revision readable until a compaction).
//! A restore writes records in transactions of at most etcd's operation limit, with
//! `<prefix>m/restore` marking the deployment incomplete from its first write to its last.

use etcd_client::{GetOptions, KeyValue, TxnOp};

use super::layout::{decode, encode, prefix_end};
use super::reads::Pages;
use super::{EtcdBackend, MAX_TXN_OPS, read_u64};
use crate::store::StoreError;
use crate::store::backend::{ExportPoint, Exported, Record, RestoreState, send_exported};
use crate::store::records::{Key, RefreshRecord, RevocationRecord, SessionRecord, UserRecord};

/// The spaces an export reads, in the order it sends them.
const SPACES: [&str; 4] = ["u/", "s/", "r/", "v/"];

/// The spaces a restore empties first: the records and the list.
const RECORD_SPACES: [&str; 6] = ["u/", "s/", "r/", "f/", "v/", "l/"];

impl EtcdBackend {
    pub(super) async fn export_to(
        &self,
        out: &tokio::sync::mpsc::Sender<Exported>,
    ) -> Result<(), StoreError> {
        // One linearizable read fixes the revision every page is read at.
        let (revision, values) = self.read_keys(&[self.layout.meta("id")]).await?;
        let last_id = match values.into_iter().next().flatten() {
            Some(kv) => read_u64(kv.value())?,
            None => 0,
        };
        let point = ExportPoint {
            revision,
            next_id: last_id.saturating_add(1),
        };
        send_exported(out, Exported::Begin(point)).await?;
        let at = i64::try_from(revision).unwrap_or(i64::MAX);
        for space in SPACES {
            let mut pages = Pages::new(self.layout.space(space), at);
            while let Some(page) = pages.next(self, false).await? {
                for kv in page.kvs() {
                    if let Some(record) = self.to_record(kv)? {
                        send_exported(out, Exported::Record(record)).await?;
                    }
                }
            }
        }
        Ok(())
    }

    fn to_record(&self, kv: &KeyValue) -> Result<Option<Record>, StoreError> {
        let super::Named::Record(key) = self.layout.name(kv.key()) else {
            return Ok(None);
        };
        Ok(Some(match key {
            Key::User(_) => Record::User(decode::<UserRecord>(kv.value(), "users")?),
            Key::Session(_) => Record::Session(decode::<SessionRecord>(kv.value(), "sessions")?),
            Key::Refresh(hash) => {
                Record::Refresh(hash, decode::<RefreshRecord>(kv.value(), "refresh_tokens")?)
            }
            Key::Revocation(..) => {
                Record::Revocation(decode::<RevocationRecord>(kv.value(), "revocations")?)
            }
            // Pending second login steps live five minutes and are not backed up.
            Key::MfaToken(_) => return Ok(None),
        }))
    }

    pub(super) async fn restore_state_now(&self) -> Result<RestoreState, StoreError> {
        let mut holds_records = false;
        for space in ["u/", "s/", "v/"] {
            let options = GetOptions::new().with_prefix().with_count_only();
            let response = self
                .client
                .get(self.layout.space(space), Some(options))
                .await?;
            holds_records |= response.count() > 0;
        }
        let (_, values) = self.read_keys(&[self.layout.meta("restore")]).await?;
        Ok(RestoreState {
            holds_records,
            incomplete: values.into_iter().next().flatten().is_some(),
        })
    }

    pub(super) async fn begin_restore_now(&self) -> Result<(), StoreError> {
        let mark = TxnOp::put(self.layout.meta("restore"), b"incomplete".to_vec(), None);
        self.client
            .txn(etcd_client::Txn::new().and_then(vec![mark]))
            .await?;
        // The deployment record goes too: the first instance started on the restored store
        // records its secrets' fingerprints anew.
        let mut wipe: Vec<TxnOp> = RECORD_SPACES
            .iter()
            .map(|space| {
                let start = self.layout.space(space);
                let end = prefix_end(&start);
                TxnOp::delete(
                    start,
                    Some(etcd_client::DeleteOptions::new().with_range(end)),
                )
            })
            .collect();
        wipe.push(TxnOp::delete(self.layout.meta("deployment"), None));
        self.client
            .txn(etcd_client::Txn::new().and_then(wipe))
            .await?;
        Ok(())
    }

    pub(super) async fn import_now(&self, records: Vec<Record>) -> Result<(), StoreError> {
        let mut ops = Vec::with_capacity(MAX_TXN_OPS);
        for record in &records {
            let mut record_ops = Vec::with_capacity(2);
            match record {
                Record::User(user) => record_ops.push(TxnOp::put(
                    self.layout.key(&Key::User(user.username.clone())),
                    encode(0, user)?,
                    None,
                )),
                Record::Session(session) => record_ops.push(
                    self.put_expiring(
                        self.layout.key(&Key::Session(session.sid.clone())),
                        encode(0, session)?,
                        session.expires_at.max(session.access_expires_at),
                    )
                    .await?,
                ),
                Record::Refresh(hash, refresh) => record_ops.push(
                    self.put_expiring(
                        self.layout.key(&Key::Refresh(*hash)),
                        encode(0, refresh)?,
                        refresh.expires_at,
                    )
                    .await?,
                ),
                Record::Revocation(entry) => {
                    let value = encode(0, entry)?;
                    let key = entry.key();
                    record_ops.push(
                        self.put_expiring(self.layout.key(&key), value.clone(), entry.expires_at)
                            .await?,
                    );
                    record_ops.push(
                        self.put_expiring(
                            self.layout.log_entry(entry.seq),
                            value,
                            entry.expires_at,
                        )
                        .await?,
                    );
                }
            }
            if ops.len() + record_ops.len() > MAX_TXN_OPS {
                self.put_all(std::mem::take(&mut ops)).await?;
            }
            ops.extend(record_ops);
        }
        self.put_all(ops).await
    }

    async fn put_all(&self, ops: Vec<TxnOp>) -> Result<(), StoreError> {
        if !ops.is_empty() {
            self.client
                .txn(etcd_client::Txn::new().and_then(ops))
                .await?;
        }
        Ok(())
    }

    pub(super) async fn finish_restore_now(&self, point: ExportPoint) -> Result<(), StoreError> {
        let (_, values) = self
            .read_keys(&[self.layout.meta("seq"), self.layout.meta("id")])
            .await?;
        let mut current = values.into_iter().map(|value| match value {
            Some(kv) => read_u64(kv.value()),
            None => Ok(0),
        });
        let seq = current.next().transpose()?.unwrap_or(0);
        let id = current.next().transpose()?.unwrap_or(0);
        let counters = vec![
            TxnOp::put(
                self.layout.meta("seq"),
                seq.max(point.revision).to_be_bytes().to_vec(),
                None,
            ),
            TxnOp::put(
                self.layout.meta("id"),
                id.max(point.next_id.saturating_sub(1))
                    .to_be_bytes()
                    .to_vec(),
                None,
            ),
            TxnOp::put(
                self.layout.meta("epoch"),
                crate::random::random_id(12),
                None,
            ),
        ];
        self.put_all(counters).await?;
        // Last: every record and counter is committed by a quorum before the mark goes.
        self.client
            .txn(
                etcd_client::Txn::new()
                    .and_then(vec![TxnOp::delete(self.layout.meta("restore"), None)]),
            )
            .await?;
        Ok(())
    }
}

//! Backups and restores: the store as a stream of JSON lines ([`format`]), taken while the
//! daemon serves ([`Backup`]), and loaded into an empty store of either backend
//! ([`restore`]). A backup holds password hashes, refresh-token hashes and revocations —
//! never key material, a password or a refresh token.

pub mod format;
pub mod restore;

use bytes::{BufMut as _, Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::store::backend::{ExportPoint, Exported};
use crate::store::{Store, StoreError, UnixSeconds};
use format::{FORMAT, Header, Line, VERSION};

/// How many records may wait between the store and the reader.
const QUEUE: usize = 1024;

/// Lines are handed on in chunks of about this many bytes.
const CHUNK_BYTES: usize = 64 * 1024;

/// What a backup's header says besides what the store tells.
#[derive(Debug, Clone)]
pub struct About {
    pub created_at: UnixSeconds,
    /// The fingerprint of the second factor's key, when there is one.
    pub mfa_key: Option<String>,
}

/// A backup being taken: its lines, in chunks, as the store is read.
pub struct Backup {
    chunks: mpsc::Receiver<Result<Bytes, BackupError>>,
}

/// Why a backup stopped before its end line (the reader has a cut-off file, which a
/// restore refuses).
#[derive(Debug, thiserror::Error)]
#[error("the backup stopped: {0}")]
pub struct BackupError(String);

impl Backup {
    /// Starts reading `store` (on its own task, so the store is read while the reader
    /// writes): a header, every record as of one revision, then the end line.
    pub fn start(store: Store, about: About) -> Backup {
        let (records, mut exported) = mpsc::channel(QUEUE);
        let (chunks, receiver) = mpsc::channel(4);
        let reader = store.clone();
        tokio::spawn(async move {
            // Ends when the encoder stops taking records (its reader went away).
            let export = async move { reader.export(&records).await };
            let encoded = async {
                let mut encoder = Encoder::default();
                while let Some(item) = exported.recv().await {
                    match item {
                        Exported::Begin(point) => {
                            encoder.push(&header_line(&store, point, &about)?)
                        }
                        Exported::Record(record) => {
                            encoder.push_record(&encode(&Line::from(&record))?);
                            // A user's second factor: a line of its own, right after.
                            if let Some(line) = format::second_factor_line(&record) {
                                encoder.push_record(&encode(&line)?);
                            }
                        }
                    }
                    if encoder.full() && chunks.send(Ok(encoder.take())).await.is_err() {
                        return Err(BackupError("the reader went away".into()));
                    }
                }
                Ok(encoder)
            };
            let (exported, encoded) = tokio::join!(export, encoded);
            let finished = match (exported, encoded) {
                (Ok(()), Ok(mut encoder)) => {
                    let end = Line::End {
                        records: encoder.records,
                    };
                    encode(&end).map(|line| {
                        encoder.push(&line);
                        encoder.take()
                    })
                }
                (Err(err), _) => Err(BackupError(err.to_string())),
                (_, Err(err)) => Err(err),
            };
            if let Err(err) = &finished {
                tracing::warn!(error = %err, "a backup stopped before its end");
            }
            let _ = chunks.send(finished).await;
        });
        Backup { chunks: receiver }
    }
}

/// The lines in chunks, as a response body streams them.
impl futures_util::Stream for Backup {
    type Item = Result<Bytes, BackupError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.chunks.poll_recv(cx)
    }
}

fn header_line(store: &Store, point: ExportPoint, about: &About) -> Result<Vec<u8>, BackupError> {
    let header = Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        created_at: crate::clock::rfc3339(about.created_at),
        backend: store.backend_name().to_owned(),
        epoch: store.epoch()?,
        revision: point.revision,
        next_id: point.next_id,
        mfa_key: about.mfa_key.clone(),
    };
    encode(&header)
}

fn encode<T: serde::Serialize>(line: &T) -> Result<Vec<u8>, BackupError> {
    serde_json::to_vec(line).map_err(|err| BackupError(format!("cannot encode a line: {err}")))
}

/// Lines gathered into chunks.
#[derive(Default)]
struct Encoder {
    buffer: BytesMut,
    records: u64,
}

impl Encoder {
    fn push(&mut self, line: &[u8]) {
        self.buffer.put_slice(line);
        self.buffer.put_u8(b'\n');
    }

    /// A record line, counted for the end line.
    fn push_record(&mut self, line: &[u8]) {
        self.push(line);
        self.records += 1;
    }

    fn full(&self) -> bool {
        self.buffer.len() >= CHUNK_BYTES
    }

    fn take(&mut self) -> Bytes {
        self.buffer.split().freeze()
    }
}

impl From<StoreError> for BackupError {
    fn from(err: StoreError) -> BackupError {
        BackupError(err.to_string())
    }
}

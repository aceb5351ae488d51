//! `authd restore`: a backup loaded into an empty store, with the daemon stopped. The file
//! is read twice: whole, to check it (a file cut off, malformed, of an unknown version or
//! made with another second-factor key writes nothing), then into the store, which is
//! marked incomplete from its first write to its last, so `serve` refuses a restore cut off
//! midway and `restore` may simply run again.
//!
//! This runs in the CLI's own runtime, where reading the file between the store's calls
//! stalls nothing else.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::format::{Assembler, FORMAT, Header, Line, VERSION};
use crate::store::backend::{Backend, ExportPoint, Record};
use crate::store::{StoreError, UnixSeconds};

/// How many records go to the store at a time.
const BATCH: usize = 256;

/// Progress is reported every this many records.
const PROGRESS_EVERY: u64 = 10_000;

/// Why a restore refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {reason}")]
    Malformed {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error(
        "{path} is cut off (it has no end line, or fewer records than it says): take the backup again"
    )]
    CutOff { path: PathBuf },
    #[error(
        "{path} is a backup of format version {version}; this authd reads version {VERSION} and older"
    )]
    Version { path: PathBuf, version: u32 },
    #[error(
        "the store already holds users, sessions or revocations: restore only into an empty store"
    )]
    NotEmpty,
    #[error(
        "the backup's second-factor records are encrypted with the key of fingerprint {expected}, but mfa.key_file {found}: copy the key file of the deployment the backup came from"
    )]
    MfaKey { expected: String, found: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Records written.
    pub records: u64,
    /// Records left out because they had expired (they would block or allow nothing).
    pub expired: u64,
}

/// What checking the whole file found.
struct Checked {
    header: Header,
    point: ExportPoint,
    /// How many record lines it has.
    records: u64,
}

/// Restores the backup at `path` into `backend`. `mfa_key` is the fingerprint of this
/// configuration's `mfa.key_file` (`None`: it has none); `progress` hears every
/// [`PROGRESS_EVERY`] records.
pub async fn restore(
    backend: &dyn Backend,
    path: &Path,
    now: UnixSeconds,
    mfa_key: Option<&str>,
    progress: &dyn Fn(u64, u64),
) -> Result<Restored, RestoreError> {
    let checked = check(path)?;
    if let Some(expected) = &checked.header.mfa_key
        && mfa_key != Some(expected.as_str())
    {
        return Err(RestoreError::MfaKey {
            expected: expected.clone(),
            found: match mfa_key {
                Some(found) => format!("has fingerprint {found}"),
                None => "is not there".to_owned(),
            },
        });
    }
    let state = backend.restore_state().await?;
    if state.holds_records && !state.incomplete {
        return Err(RestoreError::NotEmpty);
    }
    backend.begin_restore().await?;
    let mut restored = Restored {
        records: 0,
        expired: 0,
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut assembler = Assembler::default();
    for item in lines(path)?.skip(1) {
        let line = item?;
        let parsed = parse(path, &line)?;
        let end = matches!(parsed, Line::End { .. });
        let records = assemble(&mut assembler, parsed, path, &line)?;
        for record in records {
            if expired(&record, now) {
                restored.expired += 1;
                continue;
            }
            batch.push(record);
            restored.records += 1;
            if batch.len() == BATCH {
                backend
                    .import(std::mem::take(&mut batch), checked.point.revision)
                    .await?;
            }
            if (restored.records + restored.expired).is_multiple_of(PROGRESS_EVERY) {
                progress(restored.records + restored.expired, checked.records);
            }
        }
        if end {
            break;
        }
    }
    backend.import(batch, checked.point.revision).await?;
    backend.finish_restore(checked.point).await?;
    Ok(restored)
}

/// Reads the whole file: a known header, records that parse, and the end line last with
/// the right count. Answers the header and the point the restored store continues from.
fn check(path: &Path) -> Result<Checked, RestoreError> {
    let mut lines = lines(path)?;
    let Some(first) = lines.next() else {
        return Err(RestoreError::CutOff {
            path: path.to_owned(),
        });
    };
    let first = first?;
    let header: Header = serde_json::from_str(&first.text).map_err(|err| {
        if first.terminated {
            RestoreError::Malformed {
                path: path.to_owned(),
                line: 1,
                reason: format!("not an authd backup header: {err}"),
            }
        } else {
            RestoreError::CutOff {
                path: path.to_owned(),
            }
        }
    })?;
    if header.format != FORMAT {
        return Err(RestoreError::Malformed {
            path: path.to_owned(),
            line: 1,
            reason: format!("the format is {:?}, not {FORMAT:?}", header.format),
        });
    }
    if header.version > VERSION || header.version == 0 {
        return Err(RestoreError::Version {
            path: path.to_owned(),
            version: header.version,
        });
    }
    let mut point = ExportPoint {
        revision: header.revision.max(1),
        next_id: header.next_id,
    };
    let mut records = 0u64;
    let mut ended = false;
    let mut assembler = Assembler::default();
    for item in lines {
        let line = item?;
        if ended {
            return Err(RestoreError::Malformed {
                path: path.to_owned(),
                line: line.number,
                reason: "a line after the end line".into(),
            });
        }
        let parsed = parse(path, &line)?;
        if let Line::End { records: count } = parsed
            && count != records
        {
            return Err(RestoreError::CutOff {
                path: path.to_owned(),
            });
        }
        let end = matches!(parsed, Line::End { .. });
        let assembled = assemble(&mut assembler, parsed, path, &line)?;
        for record in &assembled {
            match record {
                Record::User(user) => {
                    point.next_id = point.next_id.max(user.account_id.saturating_add(1));
                }
                Record::Revocation(entry) => point.revision = point.revision.max(entry.seq),
                _ => {}
            }
        }
        if end {
            ended = true;
        } else {
            records += 1;
        }
    }
    if !ended {
        return Err(RestoreError::CutOff {
            path: path.to_owned(),
        });
    }
    Ok(Checked {
        header,
        point,
        records,
    })
}

/// The records `parsed` completes; a line out of place is malformed.
fn assemble(
    assembler: &mut Assembler,
    parsed: Line,
    path: &Path,
    line: &FileLine,
) -> Result<Vec<Record>, RestoreError> {
    assembler
        .push(parsed)
        .map_err(|reason| RestoreError::Malformed {
            path: path.to_owned(),
            line: line.number,
            reason,
        })
}

/// A line that does not parse is malformed, or, when its newline is missing, cut off.
fn parse(path: &Path, line: &FileLine) -> Result<Line, RestoreError> {
    serde_json::from_str(&line.text).map_err(|err| {
        if line.terminated {
            RestoreError::Malformed {
                path: path.to_owned(),
                line: line.number,
                reason: err.to_string(),
            }
        } else {
            RestoreError::CutOff {
                path: path.to_owned(),
            }
        }
    })
}

/// One line of the file: its number (from 1), its text, and whether its newline was there
/// (every line authd writes has one; a last line without it was cut off).
struct FileLine {
    number: u64,
    text: String,
    terminated: bool,
}

/// The file's lines.
fn lines(
    path: &Path,
) -> Result<impl Iterator<Item = Result<FileLine, RestoreError>>, RestoreError> {
    let read_error = |source| RestoreError::Read {
        path: path.to_owned(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(read_error)?);
    let path = path.to_owned();
    let mut number = 0u64;
    Ok(std::iter::from_fn(move || {
        let mut text = String::new();
        match reader.read_line(&mut text) {
            Ok(0) => None,
            Ok(_) => {
                number += 1;
                let terminated = text.ends_with('\n');
                if terminated {
                    text.pop();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                }
                Some(Ok(FileLine {
                    number,
                    text,
                    terminated,
                }))
            }
            Err(source) => Some(Err(RestoreError::Read {
                path: path.clone(),
                source,
            })),
        }
    }))
}

/// Whether `record` has outlived everything it could block or allow.
fn expired(record: &Record, now: UnixSeconds) -> bool {
    match record {
        Record::User(_) => false,
        Record::Session(session) => session.expires_at.max(session.access_expires_at) < now,
        Record::Refresh(_, refresh) => refresh.expires_at < now,
        Record::Revocation(entry) => entry.expires_at < now,
    }
}

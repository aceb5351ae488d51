//! `authd backup --out FILE`: the running daemon's `GET /admin/v1/backup` written to FILE,
//! which appears only once the backup is whole (it is written beside it first, then
//! renamed) and is readable by its owner only: it holds password hashes.
//!
//! `authd restore --in FILE` is the other way, with the daemon stopped: it opens the
//! configured store itself (see [`crate::backup::restore`]).

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::block_on;
use super::client::AdminClient;
use crate::backup::format::Line;
use crate::config::Config;

/// Takes a backup of the daemon that `config` describes into `out`.
pub fn backup(config: &Config, out: &Path) -> anyhow::Result<()> {
    let client = AdminClient::new(config)?;
    let partial = partial_path(out);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut writer = TailWriter {
        inner: BufWriter::new(file),
        tail: Vec::new(),
    };
    let downloaded = block_on(client.download("/admin/v1/backup", &mut writer, "take a backup"))?;
    let finished = downloaded.and_then(|_| {
        let records = writer.records_if_whole()?;
        let file = writer
            .inner
            .into_inner()
            .map_err(|err| err.into_error())
            .context("cannot write the backup")?;
        file.sync_all().context("cannot write the backup")?;
        Ok(records)
    });
    let records = match finished {
        Ok(records) => records,
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            return Err(err);
        }
    };
    std::fs::rename(&partial, out)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))?;
    if let Some(dir) = out.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        // The rename itself survives a crash only once the folder is synced.
        File::open(dir).and_then(|dir| dir.sync_all()).ok();
    }
    println!("wrote a backup of {records} records to {}", out.display());
    Ok(())
}

/// `FILE.partial`, beside `out`.
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// A writer that keeps the last line, to tell a whole backup (its end line last) from
/// one the daemon broke off.
struct TailWriter {
    inner: BufWriter<File>,
    tail: Vec<u8>,
}

/// The end line is short; anything longer than this is kept only in part.
const TAIL_BYTES: usize = 256;

impl std::io::Write for TailWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.tail.extend_from_slice(&bytes[..written]);
        if self.tail.len() > 2 * TAIL_BYTES {
            self.tail.drain(..self.tail.len() - TAIL_BYTES);
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl TailWriter {
    /// The record count of the end line, if the backup ends with one.
    fn records_if_whole(&self) -> anyhow::Result<u64> {
        let text = String::from_utf8_lossy(&self.tail);
        let last = text.trim_end().rsplit('\n').next().unwrap_or_default();
        match serde_json::from_str::<Line>(last) {
            Ok(Line::End { records }) => Ok(records),
            _ => {
                bail!("the backup broke off before its end (see authd's log); nothing was written")
            }
        }
    }
}

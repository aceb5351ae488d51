//! The newest revocation entries in commit order, as the change stream delivered them, and
//! how far they are durable: revocation-feed followers read here while they keep up, and
//! ask the backend only when they are further behind (a first connection, an old cursor).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::records::{RevocationRecord, Version};

/// How many entries are kept; a follower further behind reads the backend.
const CAPACITY: usize = 16 * 1024;

/// See the module docs. Shared by the view (which fills it) and the store (which reads it
/// and, on sled, says when commits are durable).
#[derive(Debug)]
pub struct RecentRevocations {
    kept: Mutex<Kept>,
    /// The `seq` up to which entries are durable and may be shown to followers; they wait
    /// on it.
    visible: watch::Sender<u64>,
    /// Whether the change stream delivers only durable commits (etcd: quorum-committed,
    /// each entry's `seq` from a counter of its own); otherwise (sled: entries' `seq` and
    /// revisions share one counter) the store marks commits durable after their flush.
    stream_is_durable: AtomicBool,
}

#[derive(Debug, Default)]
struct Kept {
    entries: VecDeque<Arc<RevocationRecord>>,
    /// Every entry with a `seq` above this is in `entries` once delivered; `None` until
    /// that is known (etcd, after a snapshot: the first entry delivered tells).
    complete_after: Option<u64>,
}

impl Default for RecentRevocations {
    fn default() -> Self {
        RecentRevocations {
            kept: Mutex::default(),
            visible: watch::Sender::new(0),
            stream_is_durable: AtomicBool::new(false),
        }
    }
}

impl RecentRevocations {
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stream_is_durable(&self) -> bool {
        self.stream_is_durable.load(Ordering::Relaxed)
    }

    /// The change stream delivers only durable commits from now on (cluster mode).
    pub fn set_stream_is_durable(&self) {
        self.stream_is_durable.store(true, Ordering::Relaxed);
    }

    /// Starts over at a snapshot read at `revision` (which holds everything before it).
    pub(super) fn reset(&self, revision: Version) {
        let mut kept = self.kept();
        kept.entries.clear();
        if self.stream_is_durable() {
            kept.complete_after = None;
        } else {
            kept.complete_after = Some(revision);
            drop(kept);
            self.show_up_to(revision);
        }
    }

    /// Keeps the entries of a batch the change stream delivered, in commit order.
    pub(super) fn delivered(&self, entries: Vec<Arc<RevocationRecord>>) {
        let Some(newest) = entries.last().map(|entry| entry.seq) else {
            return;
        };
        let mut kept = self.kept();
        for entry in entries {
            let complete_after = *kept
                .complete_after
                .get_or_insert(entry.seq.saturating_sub(1));
            if entry.seq <= complete_after
                || kept
                    .entries
                    .back()
                    .is_some_and(|last| last.seq >= entry.seq)
            {
                continue;
            }
            kept.entries.push_back(entry);
        }
        while kept.entries.len() > CAPACITY {
            if let Some(oldest) = kept.entries.pop_front() {
                kept.complete_after = Some(oldest.seq);
            }
        }
        drop(kept);
        if self.stream_is_durable() {
            self.show_up_to(newest);
        }
    }

    /// Every commit up to `revision` is durable (sled: flushed). Entries' `seq` and
    /// revisions share sled's counter, so its entries up to `revision` may be shown.
    /// Followers wake only when that shows a new entry, not for every commit.
    pub fn mark_durable(&self, revision: Version) {
        if self.stream_is_durable() {
            return;
        }
        let kept = self.kept();
        let newest = kept
            .entries
            .iter()
            .rev()
            .map(|entry| entry.seq)
            .find(|&seq| seq <= revision);
        drop(kept);
        if let Some(seq) = newest {
            self.show_up_to(seq);
        }
    }

    fn show_up_to(&self, seq: u64) {
        self.visible.send_if_modified(|visible| {
            let newer = seq > *visible;
            if newer {
                *visible = seq;
            }
            newer
        });
    }

    /// The `seq` up to which entries may be shown: every durable one (etcd: any read).
    pub fn visible(&self) -> u64 {
        if self.stream_is_durable() {
            u64::MAX
        } else {
            *self.visible.borrow()
        }
    }

    /// Wakes up whenever more entries may be shown.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.visible.subscribe()
    }

    /// Up to `limit` entries that may be shown with a `seq` above `after`, oldest first;
    /// `None` when some of them are not kept here: read the backend then.
    pub fn after(&self, after: u64, limit: usize) -> Option<Vec<Arc<RevocationRecord>>> {
        let visible = self.visible();
        let kept = self.kept();
        if kept.complete_after.is_none_or(|complete| after < complete) {
            return None;
        }
        let start = kept.entries.partition_point(|entry| entry.seq <= after);
        Some(
            kept.entries
                .range(start..)
                .take_while(|entry| entry.seq <= visible)
                .take(limit)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::RevocationKind;

    fn entry(seq: u64) -> Arc<RevocationRecord> {
        Arc::new(RevocationRecord {
            seq,
            kind: RevocationKind::Jti,
            id: format!("j{seq}"),
            revoked_at: 0,
            expires_at: 10,
            reason: None,
            ended_sessions: Vec::new(),
            serial: None,
        })
    }

    fn seqs(entries: Option<Vec<Arc<RevocationRecord>>>) -> Option<Vec<u64>> {
        entries.map(|entries| entries.iter().map(|e| e.seq).collect())
    }

    #[test]
    fn entries_show_only_once_durable_and_only_after_the_snapshot() {
        let recent = RecentRevocations::default();
        recent.reset(10);
        assert_eq!(
            seqs(recent.after(5, 10)),
            None,
            "before the snapshot: the backend"
        );
        recent.delivered(vec![entry(11), entry(12)]);
        assert_eq!(seqs(recent.after(10, 10)), Some(vec![]), "not durable yet");
        recent.mark_durable(13);
        assert_eq!(seqs(recent.after(10, 10)), Some(vec![11, 12]));
        assert_eq!(seqs(recent.after(11, 10)), Some(vec![12]));
        assert_eq!(seqs(recent.after(10, 1)), Some(vec![11]));
    }

    #[test]
    fn a_durable_stream_shows_what_it_delivers_and_wakes_followers() {
        let recent = RecentRevocations::default();
        recent.set_stream_is_durable();
        recent.reset(1000);
        assert_eq!(
            seqs(recent.after(3, 10)),
            None,
            "unknown until an entry comes"
        );
        let mut followers = recent.subscribe();
        recent.delivered(vec![entry(4), entry(5)]);
        assert!(followers.has_changed().unwrap());
        assert_eq!(*followers.borrow_and_update(), 5);
        assert_eq!(seqs(recent.after(3, 10)), Some(vec![4, 5]));
        assert_eq!(
            seqs(recent.after(2, 10)),
            None,
            "before the first: the backend"
        );
        recent.mark_durable(2000);
        assert!(
            !followers.has_changed().unwrap(),
            "revisions are not seqs here"
        );
    }

    #[test]
    fn the_oldest_entries_go_past_capacity_and_then_come_from_the_backend() {
        let recent = RecentRevocations::default();
        let count = CAPACITY as u64 + 2;
        recent.delivered((1..=count).map(entry).collect());
        recent.mark_durable(count);
        assert_eq!(seqs(recent.after(1, 1)), None);
        assert_eq!(seqs(recent.after(2, 1)), Some(vec![3]));
    }
}

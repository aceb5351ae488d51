//! One bounded table of failures (per pair, per username or per address): sliding-window
//! counts, locks until the oldest counted failure leaves the window, and eviction of the
//! least recently updated unlocked entry when full. Time is always a parameter.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// When an entry was last updated (its newest failure), with a sequence number that makes
/// every stamp unique and orders updates made at the same instant.
type Stamp = (Instant, u64);

/// The failures of one key: a (username, address) pair, a username or an address.
struct Entry {
    /// The newest failures within the window, oldest first; at most `limit` of them.
    failures: VecDeque<Instant>,
    updated: Stamp,
    /// `Some` while the entry is at its limit: when its oldest counted failure leaves the window.
    locked_until: Option<Instant>,
}

/// One bounded table. Every entry sits in exactly one index: `locked` by the end of its
/// lock, or `unlocked` by its last update (least recently updated first). Expired entries
/// are a prefix of `unlocked`, and the next to evict is its first entry; both stay O(log n).
pub(super) struct Table<K> {
    entries: HashMap<K, Entry>,
    locked: BTreeMap<(Instant, u64), K>,
    unlocked: BTreeMap<Stamp, K>,
    /// The `(limit, window)` the entries are classified under; a reload changing them
    /// re-classifies every entry once.
    params: Option<(usize, Duration)>,
    seq: u64,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table {
            entries: HashMap::new(),
            locked: BTreeMap::new(),
            unlocked: BTreeMap::new(),
            params: None,
            seq: 0,
        }
    }
}

/// The configuration caps durations at 100 years; `Instant` holds that comfortably.
pub(super) fn plus(t: Instant, window: Duration) -> Instant {
    t.checked_add(window).unwrap_or(t)
}

impl<K: Copy + Eq + Hash> Table<K> {
    /// How many keys are tracked.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    fn limit(&self) -> usize {
        self.params.map_or(usize::MAX, |(limit, _)| limit)
    }

    fn window(&self) -> Duration {
        self.params.map_or(Duration::ZERO, |(_, window)| window)
    }

    pub(super) fn prepare(&mut self, limit: usize, window: Duration, now: Instant) {
        if self.params != Some((limit, window)) {
            self.reclassify(limit, window, now);
        }
        // Locks that have ended: the entry is an ordinary one again.
        while let Some(first) = self.locked.first_entry() {
            if first.key().0 > now {
                break;
            }
            let key = first.remove();
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.locked_until = None;
                self.unlocked.insert(entry.updated, key);
            }
        }
        // Entries whose newest failure has left the window count nothing: drop them.
        while let Some(first) = self.unlocked.first_entry() {
            if plus(first.key().0, window) > now {
                break;
            }
            let key = first.remove();
            self.entries.remove(&key);
        }
    }

    /// Re-files every entry under new limits (after a reload): O(n log n), once.
    fn reclassify(&mut self, limit: usize, window: Duration, now: Instant) {
        self.params = Some((limit, window));
        self.locked.clear();
        self.unlocked.clear();
        let Table {
            entries,
            locked,
            unlocked,
            ..
        } = self;
        for (key, entry) in entries.iter_mut() {
            trim(&mut entry.failures, limit, window, now);
            entry.locked_until = lock_end(&entry.failures, limit, window);
            match entry.locked_until {
                Some(until) => locked.insert((until, entry.updated.1), *key),
                None => unlocked.insert(entry.updated, *key),
            };
        }
    }

    /// How long `key` stays locked, if it is (call after [`Table::prepare`]).
    pub(super) fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let until = self.entries.get(key)?.locked_until?;
        Some(until.saturating_duration_since(now))
    }

    /// Counts a failure for `key`. A new key needs room: expired entries are gone already,
    /// so the least recently updated unlocked entry makes way; when every entry is locked
    /// the key is not tracked at all.
    pub(super) fn record_failure(&mut self, key: K, now: Instant, max_tracked: usize) {
        let (limit, window) = (self.limit(), self.window());
        self.seq += 1;
        let seq = self.seq;
        let mut entry = match self.entries.remove(&key) {
            Some(entry) => {
                self.unindex(&entry);
                entry
            }
            None => {
                while self.entries.len() >= max_tracked.max(1) {
                    let Some((_, evicted)) = self.unlocked.pop_first() else {
                        return;
                    };
                    self.entries.remove(&evicted);
                }
                Entry {
                    failures: VecDeque::new(),
                    updated: (now, seq),
                    locked_until: None,
                }
            }
        };
        // Callers take `now` before waiting for the lock: keep the failures in order.
        let at = entry.failures.back().map_or(now, |&last| last.max(now));
        entry.failures.push_back(at);
        trim(&mut entry.failures, limit, window, now);
        entry.updated = (at, seq);
        entry.locked_until = lock_end(&entry.failures, limit, window);
        match entry.locked_until {
            Some(until) => self.locked.insert((until, seq), key),
            None => self.unlocked.insert(entry.updated, key),
        };
        self.entries.insert(key, entry);
    }

    pub(super) fn forget(&mut self, key: &K) {
        if let Some(entry) = self.entries.remove(key) {
            self.unindex(&entry);
        }
    }

    fn unindex(&mut self, entry: &Entry) {
        match entry.locked_until {
            Some(until) => self.locked.remove(&(until, entry.updated.1)),
            None => self.unlocked.remove(&entry.updated),
        };
    }
}

/// Keeps the newest `limit` failures that are still within the window.
fn trim(failures: &mut VecDeque<Instant>, limit: usize, window: Duration, now: Instant) {
    while failures.len() > limit {
        failures.pop_front();
    }
    while failures.front().is_some_and(|&t| plus(t, window) <= now) {
        failures.pop_front();
    }
}

/// With `limit` failures in the window the entry is locked until the oldest leaves it.
fn lock_end(failures: &VecDeque<Instant>, limit: usize, window: Duration) -> Option<Instant> {
    if limit == 0 || failures.len() < limit {
        return None;
    }
    failures
        .get(failures.len() - limit)
        .map(|&oldest| plus(oldest, window))
}

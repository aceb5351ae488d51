//! The (username, address) pairs that logged in successfully within `login.known_for`:
//! they are not held to the per-username limit, so failures spread over other addresses
//! cannot lock a user out of where it already logs in from. Bounded like the failure
//! tables: when full, the pair whose last success is oldest is forgotten first.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::table::plus;

/// When a pair last logged in, with a sequence number that keeps stamps unique.
type Stamp = (Instant, u64);

/// Known pairs, indexed by their last success (oldest first) for expiry and eviction.
pub(super) struct Known<K> {
    entries: HashMap<K, Stamp>,
    by_age: BTreeMap<Stamp, K>,
    seq: u64,
}

impl<K> Default for Known<K> {
    fn default() -> Self {
        Known {
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<K: Copy + Eq + Hash> Known<K> {
    /// How many pairs are remembered.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Forgets the pairs whose last success is `known_for` old or older (a reload that
    /// shortens `known_for` applies here too).
    pub(super) fn prepare(&mut self, known_for: Duration, now: Instant) {
        while let Some(first) = self.by_age.first_entry() {
            if known_for > Duration::ZERO && plus(first.key().0, known_for) > now {
                break;
            }
            let key = first.remove();
            self.entries.remove(&key);
        }
    }

    /// Whether `key` logged in within `known_for` (call after [`Known::prepare`]).
    pub(super) fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Remembers a successful login of `key` at `now`; a zero `known_for` remembers nothing.
    pub(super) fn remember(&mut self, key: K, now: Instant, known_for: Duration, max: usize) {
        if known_for == Duration::ZERO {
            return;
        }
        self.seq += 1;
        if let Some(stamp) = self.entries.remove(&key) {
            self.by_age.remove(&stamp);
        }
        while self.entries.len() >= max.max(1) {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let stamp = (now, self.seq);
        self.entries.insert(key, stamp);
        self.by_age.insert(stamp, key);
    }
}

//! An in-memory index of revoked jtis, so that verifying a token that is not revoked (the
//! common case) never touches sled. It holds 64-bit hashes with counts: a hash match is
//! only a "maybe" and is confirmed in sled, so collisions cost a lookup, never a wrong
//! answer. It is filled in the background at start, so a large list does not delay
//! readiness; until then every check goes to sled.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

#[derive(Default)]
pub(super) struct RevokedIndex {
    counts: RwLock<HashMap<u64, u32>>,
    loaded: AtomicBool,
}

fn hash(id: &str) -> u64 {
    // Fixed keys: the hash only has to be stable within this process.
    BuildHasherDefault::<DefaultHasher>::default().hash_one(id)
}

impl RevokedIndex {
    /// `false` when `id` is certainly not revoked; `true` when sled must be asked.
    pub(super) fn may_contain(&self, id: &str) -> bool {
        if !self.loaded.load(Ordering::Acquire) {
            return true;
        }
        self.counts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&hash(id))
    }

    pub(super) fn insert(&self, id: &str) {
        let mut counts = self.counts.write().unwrap_or_else(PoisonError::into_inner);
        *counts.entry(hash(id)).or_default() += 1;
    }

    /// Forgets one entry for `id`. While loading, nothing is forgotten: the loader may
    /// not have counted the entry yet, and an extra count only costs a sled lookup.
    pub(super) fn remove(&self, id: &str) {
        if !self.loaded.load(Ordering::Acquire) {
            return;
        }
        let mut counts = self.counts.write().unwrap_or_else(PoisonError::into_inner);
        let key = hash(id);
        if let Some(count) = counts.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&key);
            }
        }
    }

    /// Adds the ids already in the store (a batch at a time), then starts answering.
    pub(super) fn load<'a>(&self, ids: impl Iterator<Item = &'a str>) {
        for id in ids {
            self.insert(id);
        }
        self.loaded.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_maybe_until_loaded_then_exactly_for_absent_ids() {
        let index = RevokedIndex::default();
        assert!(index.may_contain("anything"));
        index.load(["a", "b"].into_iter());
        assert!(index.may_contain("a"));
        assert!(!index.may_contain("c"));
        index.insert("c");
        assert!(index.may_contain("c"));
        index.remove("c");
        assert!(!index.may_contain("c"));
    }

    #[test]
    fn removals_while_loading_are_ignored() {
        let index = RevokedIndex::default();
        index.insert("x");
        index.remove("x");
        index.load(std::iter::empty());
        assert!(index.may_contain("x"));
    }
}

//! Login throttling (API.md "Login throttling"): failed logins are counted per username and
//! per client address in a sliding window, and attempts past a limit are refused with the
//! time until they would be counted again. Memory is bounded by `login.max_tracked` entries
//! per table; time is always a parameter, so the rules can be tested exactly.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::config::LoginConfig;

/// The failures of every tracked username and client address, behind one lock so that
/// an attempt is checked and counted atomically against both.
#[derive(Default)]
pub struct LoginThrottle {
    tables: Mutex<Tables>,
}

#[derive(Default)]
struct Tables {
    users: Table<UserKey>,
    addresses: Table<IpAddr>,
}

/// A username as the throttle knows it: the SHA-256 of its ASCII-lowercased text, so any
/// input (valid, unknown or absurdly long) takes 32 bytes and distinct names stay distinct.
type UserKey = [u8; 32];

/// Who is trying to log in, in the throttle's terms.
#[derive(Debug, Clone)]
pub struct Attempt {
    user: UserKey,
    address: Option<IpAddr>,
}

impl Attempt {
    /// `username` exactly as typed (lowercased here, like the login itself does) and the
    /// client address, when known. IPv6 clients are counted per /64, the block one host
    /// usually holds, so rotating through one's own addresses does not dodge the limit.
    pub fn new(username: &str, client: Option<IpAddr>) -> Attempt {
        let mut hasher = Sha256::new();
        for chunk in username.as_bytes().chunks(256) {
            hasher.update(chunk.to_ascii_lowercase());
        }
        Attempt {
            user: hasher.finalize().into(),
            address: client.map(address_key),
        }
    }
}

fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// How a checked attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Wrong password or unknown user: counted for the username and the address.
    Failure,
    /// Right password: the username's count starts over (the address's does not).
    Success,
    /// Right password for a disabled account: not counted anywhere.
    NotCounted,
}

/// An attempt refused because a limit is reached; it may be retried after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

impl Throttled {
    /// `Retry-After` in whole seconds: rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.max(1)
    }
}

impl LoginThrottle {
    pub fn new() -> LoginThrottle {
        LoginThrottle::default()
    }

    /// Refuses an attempt whose username or address is at its limit; run before the
    /// password is verified, so a throttled attempt costs no hashing and is not counted.
    pub fn check(
        &self,
        limits: &LoginConfig,
        attempt: &Attempt,
        now: Instant,
    ) -> Result<(), Throttled> {
        self.lock().prepare(limits, now).wait(attempt, now)
    }

    /// Counts the outcome of a verified attempt, after checking the limits once more under
    /// the same lock: attempts that were verified concurrently cannot reveal more than
    /// `max_failures` results between them — the late ones are refused instead.
    pub fn record(
        &self,
        limits: &LoginConfig,
        attempt: &Attempt,
        outcome: Outcome,
        now: Instant,
    ) -> Result<(), Throttled> {
        let mut tables = self.lock();
        let tables = tables.prepare(limits, now);
        tables.wait(attempt, now)?;
        match outcome {
            Outcome::Failure => {
                tables
                    .users
                    .record_failure(attempt.user, now, limits.max_tracked);
                if let Some(address) = attempt.address {
                    tables
                        .addresses
                        .record_failure(address, now, limits.max_tracked);
                }
            }
            Outcome::Success => tables.users.forget(&attempt.user),
            Outcome::NotCounted => {}
        }
        Ok(())
    }

    /// How many usernames and addresses are tracked right now.
    pub fn tracked(&self) -> (usize, usize) {
        let tables = self.lock();
        (tables.users.entries.len(), tables.addresses.entries.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        // The tables stay consistent between statements, so a panic elsewhere while the
        // lock was held leaves nothing half-done worth refusing logins over.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle").finish_non_exhaustive()
    }
}

impl Tables {
    /// Applies the current limits and lets time pass: ended locks and expired entries.
    fn prepare(&mut self, limits: &LoginConfig, now: Instant) -> &mut Tables {
        let user_limit = usize::try_from(limits.max_failures).unwrap_or(usize::MAX);
        let address_limit = usize::try_from(limits.max_failures_per_ip).unwrap_or(usize::MAX);
        self.users.prepare(user_limit, limits.window, now);
        self.addresses.prepare(address_limit, limits.window, now);
        self
    }

    /// The longer wait of the username's and the address's, if either is locked.
    fn wait(&self, attempt: &Attempt, now: Instant) -> Result<(), Throttled> {
        let user = self.users.wait(&attempt.user, now);
        let address = attempt
            .address
            .and_then(|address| self.addresses.wait(&address, now));
        match user.max(address) {
            Some(retry_after) => Err(Throttled { retry_after }),
            None => Ok(()),
        }
    }
}

/// When an entry was last updated (its newest failure), with a sequence number that makes
/// every stamp unique and orders updates made at the same instant.
type Stamp = (Instant, u64);

/// The failures of one username or address.
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
struct Table<K> {
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
fn plus(t: Instant, window: Duration) -> Instant {
    t.checked_add(window).unwrap_or(t)
}

impl<K: Copy + Eq + Hash> Table<K> {
    fn limit(&self) -> usize {
        self.params.map_or(usize::MAX, |(limit, _)| limit)
    }

    fn window(&self) -> Duration {
        self.params.map_or(Duration::ZERO, |(_, window)| window)
    }

    fn prepare(&mut self, limit: usize, window: Duration, now: Instant) {
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
    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let until = self.entries.get(key)?.locked_until?;
        Some(until.saturating_duration_since(now))
    }

    /// Counts a failure for `key`. A new key needs room: expired entries are gone already,
    /// so the least recently updated unlocked entry makes way; when every entry is locked
    /// the key is not tracked at all.
    fn record_failure(&mut self, key: K, now: Instant, max_tracked: usize) {
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

    fn forget(&mut self, key: &K) {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)]

    use super::*;

    const WINDOW: Duration = Duration::from_secs(900);

    fn limits(max_failures: u32, per_ip: u32, max_tracked: usize) -> LoginConfig {
        LoginConfig {
            max_failures,
            max_failures_per_ip: per_ip,
            window: WINDOW,
            max_tracked,
        }
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Checks and, when allowed, records `outcome`: what the login does around argon2.
    fn attempt(
        throttle: &LoginThrottle,
        limits: &LoginConfig,
        user: &str,
        client: Option<IpAddr>,
        outcome: Outcome,
        now: Instant,
    ) -> Result<(), Throttled> {
        let attempt = Attempt::new(user, client);
        throttle.check(limits, &attempt, now)?;
        throttle.record(limits, &attempt, outcome, now)
    }

    fn fail(
        throttle: &LoginThrottle,
        limits: &LoginConfig,
        user: &str,
        client: &str,
        now: Instant,
    ) {
        attempt(throttle, limits, user, ip(client), Outcome::Failure, now).unwrap();
    }

    fn check(
        throttle: &LoginThrottle,
        limits: &LoginConfig,
        user: &str,
        client: &str,
        now: Instant,
    ) -> Result<(), Throttled> {
        throttle.check(limits, &Attempt::new(user, ip(client)), now)
    }

    #[test]
    fn a_username_locks_after_max_failures_until_the_oldest_leaves_the_window() {
        let throttle = LoginThrottle::new();
        let limits = limits(3, 100, 1000);
        let t0 = Instant::now();
        fail(&throttle, &limits, "alice", "192.0.2.1", t0);
        fail(&throttle, &limits, "alice", "192.0.2.2", t0 + secs(10));
        assert!(check(&throttle, &limits, "alice", "192.0.2.3", t0 + secs(20)).is_ok());
        fail(&throttle, &limits, "alice", "192.0.2.3", t0 + secs(20));

        let refused = check(&throttle, &limits, "alice", "192.0.2.4", t0 + secs(30)).unwrap_err();
        assert_eq!(refused.retry_after, secs(870));
        assert_eq!(refused.retry_after_secs(), 870);
        // The right password is refused just the same, and not counted.
        let right = Attempt::new("alice", ip("192.0.2.4"));
        assert_eq!(
            throttle.record(&limits, &right, Outcome::Success, t0 + secs(30)),
            Err(refused)
        );
        // Other usernames are unaffected.
        assert!(check(&throttle, &limits, "bob", "192.0.2.4", t0 + secs(30)).is_ok());

        let just_before = t0 + WINDOW - Duration::from_millis(1);
        let refused = check(&throttle, &limits, "alice", "192.0.2.4", just_before).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(1));
        assert_eq!(refused.retry_after_secs(), 1, "rounded up, at least 1");
        assert!(check(&throttle, &limits, "alice", "192.0.2.4", t0 + WINDOW).is_ok());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let throttled = |ms| Throttled {
            retry_after: Duration::from_millis(ms),
        };
        assert_eq!(throttled(0).retry_after_secs(), 1);
        assert_eq!(throttled(1).retry_after_secs(), 1);
        assert_eq!(throttled(1000).retry_after_secs(), 1);
        assert_eq!(throttled(1001).retry_after_secs(), 2);
        assert_eq!(throttled(899_999).retry_after_secs(), 900);
    }

    #[test]
    fn the_window_slides_one_failure_at_a_time() {
        let throttle = LoginThrottle::new();
        let limits = limits(2, 100, 1000);
        let t0 = Instant::now();
        fail(&throttle, &limits, "alice", "192.0.2.1", t0);
        fail(&throttle, &limits, "alice", "192.0.2.1", t0 + secs(100));
        assert!(check(&throttle, &limits, "alice", "192.0.2.1", t0 + secs(200)).is_err());

        // The first failure left the window: one more attempt is allowed...
        fail(&throttle, &limits, "alice", "192.0.2.1", t0 + secs(900));
        // ...and now the lock lasts until the second one leaves.
        let refused = check(&throttle, &limits, "alice", "192.0.2.1", t0 + secs(901)).unwrap_err();
        assert_eq!(refused.retry_after, secs(99));
        assert!(check(&throttle, &limits, "alice", "192.0.2.1", t0 + secs(1000)).is_ok());
    }

    #[test]
    fn usernames_are_counted_case_insensitively_known_or_not() {
        let throttle = LoginThrottle::new();
        let limits = limits(2, 100, 1000);
        let t0 = Instant::now();
        // Nothing here knows which users exist: any text is a key, valid or not.
        fail(&throttle, &limits, "Nobody", "192.0.2.1", t0);
        fail(&throttle, &limits, "NOBODY", "192.0.2.2", t0);
        assert!(check(&throttle, &limits, "nobody", "192.0.2.3", t0).is_err());

        let long = "x".repeat(10_000);
        fail(&throttle, &limits, &format!("{long}a"), "192.0.2.1", t0);
        fail(&throttle, &limits, &format!("{long}a"), "192.0.2.1", t0);
        assert!(check(&throttle, &limits, &format!("{long}A"), "192.0.2.3", t0).is_err());
        assert!(
            check(&throttle, &limits, &format!("{long}b"), "192.0.2.3", t0).is_ok(),
            "long names differing at the end are different keys"
        );
        fail(&throttle, &limits, "ünïcode", "192.0.2.1", t0);
        fail(&throttle, &limits, "ÜNÏCODE", "192.0.2.1", t0);
        assert!(
            check(&throttle, &limits, "ünïcode", "192.0.2.3", t0).is_ok(),
            "only ASCII is lowercased, like usernames"
        );
    }

    #[test]
    fn a_success_resets_the_username_but_not_the_address() {
        let throttle = LoginThrottle::new();
        let limits = limits(3, 4, 1000);
        let t0 = Instant::now();
        fail(&throttle, &limits, "alice", "192.0.2.1", t0);
        fail(&throttle, &limits, "alice", "192.0.2.1", t0);
        attempt(
            &throttle,
            &limits,
            "alice",
            ip("192.0.2.1"),
            Outcome::Success,
            t0,
        )
        .unwrap();
        assert_eq!(throttle.tracked(), (0, 1));

        fail(&throttle, &limits, "alice", "192.0.2.1", t0 + secs(1));
        // Two failures before the success still count for the address: this is its fourth.
        fail(&throttle, &limits, "alice", "192.0.2.1", t0 + secs(2));
        let refused = check(&throttle, &limits, "carol", "192.0.2.1", t0 + secs(3)).unwrap_err();
        assert_eq!(refused.retry_after, secs(897));
        // The username is not locked: another address may still try it.
        assert!(check(&throttle, &limits, "alice", "192.0.2.9", t0 + secs(3)).is_ok());
    }

    #[test]
    fn uncounted_outcomes_count_nothing_but_are_still_refused_when_locked() {
        let throttle = LoginThrottle::new();
        let limits = limits(2, 2, 1000);
        let t0 = Instant::now();
        for _ in 0..10 {
            attempt(
                &throttle,
                &limits,
                "dora",
                ip("192.0.2.1"),
                Outcome::NotCounted,
                t0,
            )
            .unwrap();
        }
        assert_eq!(throttle.tracked(), (0, 0));
        fail(&throttle, &limits, "dora", "192.0.2.1", t0);
        fail(&throttle, &limits, "dora", "192.0.2.2", t0);
        let dora = Attempt::new("dora", ip("192.0.2.3"));
        assert!(
            throttle
                .record(&limits, &dora, Outcome::NotCounted, t0)
                .is_err()
        );
    }

    #[test]
    fn the_longer_of_both_waits_is_reported() {
        let throttle = LoginThrottle::new();
        let limits = limits(2, 2, 1000);
        let t0 = Instant::now();
        fail(&throttle, &limits, "alice", "192.0.2.1", t0);
        fail(&throttle, &limits, "bob", "192.0.2.1", t0 + secs(100));
        fail(&throttle, &limits, "bob", "192.0.2.2", t0 + secs(200));
        // Address locked until t0+900, bob until t0+1000.
        let now = t0 + secs(300);
        assert_eq!(
            check(&throttle, &limits, "bob", "192.0.2.1", now)
                .unwrap_err()
                .retry_after,
            secs(700)
        );
        assert_eq!(
            check(&throttle, &limits, "eve", "192.0.2.1", now)
                .unwrap_err()
                .retry_after,
            secs(600)
        );
        assert_eq!(
            check(&throttle, &limits, "bob", "192.0.2.3", now)
                .unwrap_err()
                .retry_after,
            secs(700)
        );
    }

    #[test]
    fn concurrent_attempts_reveal_no_more_than_the_limit() {
        let throttle = LoginThrottle::new();
        let limits = limits(2, 100, 1000);
        let t0 = Instant::now();
        // Five attempts pass the first check before any of them is verified...
        let attempts: Vec<_> = (0..5)
            .map(|_| Attempt::new("alice", ip("192.0.2.1")))
            .collect();
        for a in &attempts {
            throttle.check(&limits, a, t0).unwrap();
        }
        // ...but only two results are revealed; the rest, even the right password, are refused.
        let results: Vec<_> = attempts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let outcome = if i == 4 {
                    Outcome::Success
                } else {
                    Outcome::Failure
                };
                throttle.record(&limits, a, outcome, t0).is_ok()
            })
            .collect();
        assert_eq!(results, [true, true, false, false, false]);
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let throttle = LoginThrottle::new();
        let limits = limits(100, 2, 1000);
        let t0 = Instant::now();
        fail(&throttle, &limits, "a", "2001:db8:1:2::1", t0);
        fail(&throttle, &limits, "b", "2001:db8:1:2:ffff::9", t0);
        assert!(check(&throttle, &limits, "c", "2001:db8:1:2::77", t0).is_err());
        assert!(check(&throttle, &limits, "c", "2001:db8:1:3::1", t0).is_ok());

        fail(&throttle, &limits, "a", "::ffff:192.0.2.7", t0);
        fail(&throttle, &limits, "b", "192.0.2.7", t0);
        assert!(check(&throttle, &limits, "c", "192.0.2.7", t0).is_err());
    }

    #[test]
    fn without_a_client_address_only_the_username_counts() {
        let throttle = LoginThrottle::new();
        let limits = limits(2, 1, 1000);
        let t0 = Instant::now();
        attempt(&throttle, &limits, "a", None, Outcome::Failure, t0).unwrap();
        attempt(&throttle, &limits, "b", None, Outcome::Failure, t0).unwrap();
        assert_eq!(throttle.tracked(), (2, 0));
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_updated_unlocked_entries_first() {
        let throttle = LoginThrottle::new();
        let limits = limits(2, 1000, 3);
        let t0 = Instant::now();
        fail(&throttle, &limits, "locked", "192.0.2.1", t0);
        fail(&throttle, &limits, "locked", "192.0.2.1", t0);
        fail(&throttle, &limits, "old", "192.0.2.1", t0 + secs(1));
        fail(&throttle, &limits, "newer", "192.0.2.1", t0 + secs(2));
        assert_eq!(throttle.tracked().0, 3);

        fail(&throttle, &limits, "newest", "192.0.2.1", t0 + secs(3));
        assert_eq!(throttle.tracked().0, 3);
        let now = t0 + secs(4);
        assert!(
            check(&throttle, &limits, "locked", "192.0.2.1", now).is_err(),
            "locked entries stay"
        );
        // "old" was evicted (its failure is forgotten), "newer" was not.
        fail(&throttle, &limits, "newer", "192.0.2.1", now);
        assert!(check(&throttle, &limits, "newer", "192.0.2.1", now).is_err());
        fail(&throttle, &limits, "old", "192.0.2.1", now);
        assert!(check(&throttle, &limits, "old", "192.0.2.1", now).is_ok());
    }

    #[test]
    fn updating_an_entry_makes_it_recent() {
        let throttle = LoginThrottle::new();
        let limits = limits(3, 1000, 2);
        let t0 = Instant::now();
        fail(&throttle, &limits, "first", "192.0.2.1", t0);
        fail(&throttle, &limits, "second", "192.0.2.1", t0 + secs(1));
        fail(&throttle, &limits, "first", "192.0.2.1", t0 + secs(2));
        fail(&throttle, &limits, "third", "192.0.2.1", t0 + secs(3));
        // "second" went: "first" (two failures) needs just one more to lock.
        fail(&throttle, &limits, "first", "192.0.2.1", t0 + secs(4));
        assert!(check(&throttle, &limits, "first", "192.0.2.1", t0 + secs(4)).is_err());
    }

    #[test]
    fn expired_entries_are_dropped_and_ended_locks_become_evictable() {
        let throttle = LoginThrottle::new();
        let limits = limits(1, 1000, 2);
        let t0 = Instant::now();
        fail(&throttle, &limits, "a", "192.0.2.1", t0);
        fail(&throttle, &limits, "b", "192.0.2.1", t0 + secs(1));
        assert_eq!(throttle.tracked(), (2, 1));
        // Both locked: a third username is served but not tracked.
        fail(&throttle, &limits, "c", "192.0.2.1", t0 + secs(2));
        assert!(check(&throttle, &limits, "c", "192.0.2.1", t0 + secs(2)).is_ok());
        assert_eq!(throttle.tracked().0, 2);

        // Once the newest failure has left the window, everything is gone.
        assert!(check(&throttle, &limits, "x", "192.0.2.1", t0 + secs(902)).is_ok());
        assert_eq!(throttle.tracked(), (0, 0));
    }

    #[test]
    fn when_every_entry_is_locked_new_usernames_are_served_and_the_address_limit_applies() {
        let throttle = LoginThrottle::new();
        let limits = limits(1, 3, 2);
        let t0 = Instant::now();
        fail(&throttle, &limits, "a", "192.0.2.1", t0);
        fail(&throttle, &limits, "b", "192.0.2.2", t0);
        for (i, name) in ["c", "d", "e"].iter().enumerate() {
            assert!(
                check(&throttle, &limits, name, "192.0.2.9", t0).is_ok(),
                "{name}"
            );
            fail(&throttle, &limits, name, "192.0.2.9", t0 + secs(i as u64));
        }
        assert_eq!(throttle.tracked().0, 2);
        // The untracked usernames were counted for their address, which is now locked.
        assert!(check(&throttle, &limits, "f", "192.0.2.9", t0 + secs(5)).is_err());
        assert!(check(&throttle, &limits, "a", "192.0.2.7", t0 + secs(5)).is_err());
        assert!(check(&throttle, &limits, "b", "192.0.2.7", t0 + secs(5)).is_err());
    }

    #[test]
    fn new_limits_apply_to_the_next_attempt() {
        let throttle = LoginThrottle::new();
        let t0 = Instant::now();
        let five = limits(5, 100, 1000);
        for i in 0..3 {
            fail(&throttle, &five, "alice", "192.0.2.1", t0 + secs(i));
        }
        assert!(check(&throttle, &five, "alice", "192.0.2.1", t0 + secs(10)).is_ok());

        let two = limits(2, 100, 1000);
        let refused = check(&throttle, &two, "alice", "192.0.2.1", t0 + secs(10)).unwrap_err();
        // Locked until the second newest of the three leaves the window.
        assert_eq!(refused.retry_after, secs(891));

        let shorter = LoginConfig {
            window: secs(5),
            ..two.clone()
        };
        assert!(check(&throttle, &shorter, "alice", "192.0.2.1", t0 + secs(10)).is_ok());
        assert_eq!(throttle.tracked(), (0, 0));
    }

    #[test]
    fn a_spray_of_random_usernames_keeps_the_table_bounded_and_locked_users_locked() {
        let throttle = LoginThrottle::new();
        let limits = limits(3, 1_000_000, 1000);
        let t0 = Instant::now();
        for _ in 0..3 {
            fail(&throttle, &limits, "victim", "192.0.2.1", t0);
        }
        let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
        for i in 0..100_000u64 {
            let name = format!("u{:016x}", random.next());
            let client = IpAddr::from((random.next() as u32).to_be_bytes());
            let now = t0 + Duration::from_millis(i);
            attempt(
                &throttle,
                &limits,
                &name,
                Some(client),
                Outcome::Failure,
                now,
            )
            .unwrap();
            let (users, addresses) = throttle.tracked();
            assert!(users <= 1000 && addresses <= 1000, "{users} {addresses}");
        }
        assert_eq!(throttle.tracked(), (1000, 1000));
        let later = t0 + secs(100);
        assert!(check(&throttle, &limits, "victim", "192.0.2.2", later).is_err());
    }

    #[test]
    fn a_full_default_sized_table_stays_fast() {
        let throttle = LoginThrottle::new();
        let limits = limits(5, 50, 100_000);
        let t0 = Instant::now();
        let started = Instant::now();
        for i in 0..150_000u64 {
            let name = format!("user{i}");
            let client = IpAddr::from(((i as u32) | 0x0a00_0000).to_be_bytes());
            let now = t0 + Duration::from_micros(i);
            attempt(
                &throttle,
                &limits,
                &name,
                Some(client),
                Outcome::Failure,
                now,
            )
            .unwrap();
        }
        assert_eq!(throttle.tracked(), (100_000, 100_000));
        // Far below this even unoptimised; a linear scan per attempt would take minutes.
        assert!(started.elapsed() < secs(20), "{:?}", started.elapsed());
    }

    #[test]
    fn a_poisoned_lock_is_recovered() {
        let throttle = std::sync::Arc::new(LoginThrottle::new());
        let poisoner = throttle.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.tables.lock();
            panic!("poison the lock");
        })
        .join();
        assert!(throttle.tables.is_poisoned());
        let limits = limits(1, 10, 10);
        fail(&throttle, &limits, "a", "192.0.2.1", Instant::now());
        assert_eq!(throttle.tracked(), (1, 1));
    }

    struct Xorshift(u64);

    impl Xorshift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }
}

//! Login throttling (API.md "Login throttling", rev 4): failed logins are counted per
//! (username, client address) pair, per username over all addresses and per address, in a
//! sliding window; attempts past a limit are refused with the time until they would be
//! counted again. Pairs that logged in recently are exempt from the per-username limit.
//! Memory is bounded by `login.max_tracked` entries per table; time is always a parameter,
//! so the rules can be tested exactly.

mod known;
mod table;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::config::LoginConfig;
use known::Known;
use table::Table;

/// The failures of every tracked pair, username and client address, and the pairs known
/// from recent successes, behind one lock so that an attempt is checked and counted
/// atomically against all of them.
#[derive(Default)]
pub struct LoginThrottle {
    tables: Mutex<Tables>,
}

#[derive(Default)]
struct Tables {
    pairs: Table<PairKey>,
    users: Table<UserKey>,
    addresses: Table<IpAddr>,
    known: Known<PairKey>,
}

/// A username as the throttle knows it: the SHA-256 of its ASCII-lowercased text, so any
/// input (valid, unknown or absurdly long) takes 32 bytes and distinct names stay distinct.
type UserKey = [u8; 32];

/// A (username, address) pair; an attempt without a known address is a pair of its own.
type PairKey = (UserKey, Option<IpAddr>);

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

    fn pair(&self) -> PairKey {
        (self.user, self.address)
    }

    /// The username as the throttle keys it (a hash, never the text).
    pub fn user_key(&self) -> [u8; 32] {
        self.user
    }

    /// The client address as the throttle keys it (IPv6: the /64).
    pub fn address_key(&self) -> Option<IpAddr> {
        self.address
    }

    /// An attempt another instance counted, from its keys.
    pub fn from_keys(user: [u8; 32], address: Option<IpAddr>) -> Attempt {
        Attempt { user, address }
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
    /// Wrong password or unknown user: counted for the pair, the username and the address.
    Failure,
    /// Right password: the pair's count starts over (the username's and the address's do
    /// not), and the pair is known for `login.known_for`.
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

/// How many entries each table holds right now (for the metrics and the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSizes {
    pub pairs: usize,
    pub usernames: usize,
    pub addresses: usize,
    pub known_pairs: usize,
}

impl LoginThrottle {
    pub fn new() -> LoginThrottle {
        LoginThrottle::default()
    }

    /// Refuses an attempt whose pair, username or address is at its limit; run before the
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
        tables.count(limits, attempt, outcome, now);
        Ok(())
    }

    /// Counts an outcome another instance of the deployment saw at `at` (cluster mode),
    /// without checking any limit: that instance checked them.
    pub fn record_shared(
        &self,
        limits: &LoginConfig,
        attempt: &Attempt,
        outcome: Outcome,
        at: Instant,
        now: Instant,
    ) {
        self.lock()
            .prepare(limits, now)
            .count(limits, attempt, outcome, at);
    }

    /// How many usernames and addresses are tracked right now.
    #[cfg(test)]
    pub fn tracked(&self) -> (usize, usize) {
        let sizes = self.sizes();
        (sizes.usernames, sizes.addresses)
    }

    /// How many entries every table holds right now.
    pub fn sizes(&self) -> TableSizes {
        let tables = self.lock();
        TableSizes {
            pairs: tables.pairs.len(),
            usernames: tables.users.len(),
            addresses: tables.addresses.len(),
            known_pairs: tables.known.len(),
        }
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

fn as_limit(max: u32) -> usize {
    usize::try_from(max).unwrap_or(usize::MAX)
}

impl Tables {
    /// Applies the current limits and lets time pass: ended locks, expired entries and
    /// pairs no longer known.
    fn prepare(&mut self, limits: &LoginConfig, now: Instant) -> &mut Tables {
        let window = limits.window;
        self.pairs
            .prepare(as_limit(limits.max_failures), window, now);
        self.users
            .prepare(as_limit(limits.max_failures_per_user), window, now);
        self.addresses
            .prepare(as_limit(limits.max_failures_per_ip), window, now);
        self.known.prepare(limits.known_for, now);
        self
    }

    /// Counts a verified outcome at `at`.
    fn count(&mut self, limits: &LoginConfig, attempt: &Attempt, outcome: Outcome, at: Instant) {
        let max = limits.max_tracked;
        match outcome {
            Outcome::Failure => {
                self.pairs.record_failure(attempt.pair(), at, max);
                self.users.record_failure(attempt.user, at, max);
                if let Some(address) = attempt.address {
                    self.addresses.record_failure(address, at, max);
                }
            }
            Outcome::Success => {
                self.pairs.forget(&attempt.pair());
                self.known
                    .remember(attempt.pair(), at, limits.known_for, max);
            }
            Outcome::NotCounted => {}
        }
    }

    /// The longest wait of the pair's, the username's and the address's, if any is locked.
    /// A known pair is not held to the username's limit: failures spread over many other
    /// addresses cannot lock the user out of where it logs in from. Its address's limit
    /// still applies (that one guards against an address spraying usernames).
    fn wait(&self, attempt: &Attempt, now: Instant) -> Result<(), Throttled> {
        let pair = attempt.pair();
        let user = if self.known.contains(&pair) {
            None
        } else {
            self.users.wait(&attempt.user, now)
        };
        let address = attempt
            .address
            .and_then(|address| self.addresses.wait(&address, now));
        let wait = self.pairs.wait(&pair, now).max(user).max(address);
        match wait {
            Some(retry_after) => Err(Throttled { retry_after }),
            None => Ok(()),
        }
    }
}

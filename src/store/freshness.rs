//! How current the in-memory view is. On sled the view is the store, so it is always
//! current. In cluster mode it is current up to the last moment an etcd quorum confirmed it
//! (a heartbeat of this instance came back through the watch); past `etcd.max_staleness`
//! the instance refuses to answer from it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::clock::Clock;

/// Where the view stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Currency {
    /// No snapshot loaded yet (cluster mode, before etcd answered).
    Loading,
    /// Confirmed current within `max_staleness`.
    Current,
    /// Last confirmed longer ago than `max_staleness`.
    Stale,
}

/// The view's freshness, shared by the store (which asks) and the backend (which confirms).
#[derive(Debug)]
pub struct Freshness {
    clock: Clock,
    /// `None`: always current (sled).
    confirmed: Option<Confirmed>,
}

#[derive(Debug)]
struct Confirmed {
    base: Instant,
    loaded: AtomicBool,
    /// Nanoseconds after `base` of the latest confirmation; 0: never.
    at: AtomicU64,
    max_staleness_nanos: AtomicU64,
}

impl Freshness {
    /// A view that is the store itself: always current.
    pub fn always(clock: Clock) -> Freshness {
        Freshness {
            clock,
            confirmed: None,
        }
    }

    /// A view fed from a remote engine: loading until [`Freshness::loaded`], then current
    /// for `max_staleness` after each [`Freshness::confirm`].
    pub fn confirmed(clock: Clock, max_staleness: Duration) -> Freshness {
        let base = clock.instant();
        Freshness {
            clock,
            confirmed: Some(Confirmed {
                base,
                loaded: AtomicBool::new(false),
                at: AtomicU64::new(0),
                max_staleness_nanos: AtomicU64::new(nanos(max_staleness)),
            }),
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The snapshot is in: from now on the view answers (while confirmed).
    pub fn loaded(&self) {
        if let Some(confirmed) = &self.confirmed {
            confirmed.loaded.store(true, Ordering::Release);
        }
    }

    /// The view held everything committed before `at` (a heartbeat written then came back).
    pub fn confirm(&self, at: Instant) {
        if let Some(confirmed) = &self.confirmed {
            let offset = nanos(at.saturating_duration_since(confirmed.base)).max(1);
            confirmed.at.fetch_max(offset, Ordering::AcqRel);
        }
    }

    /// A reload's new `etcd.max_staleness`.
    pub fn set_max_staleness(&self, max_staleness: Duration) {
        if let Some(confirmed) = &self.confirmed {
            confirmed
                .max_staleness_nanos
                .store(nanos(max_staleness), Ordering::Release);
        }
    }

    /// How old the view is: `None` when always current or never confirmed.
    pub fn age(&self) -> Option<Duration> {
        let confirmed = self.confirmed.as_ref()?;
        let at = confirmed.at.load(Ordering::Acquire);
        if at == 0 {
            return None;
        }
        let now = nanos(
            self.clock
                .instant()
                .saturating_duration_since(confirmed.base),
        );
        Some(Duration::from_nanos(now.saturating_sub(at)))
    }

    pub fn currency(&self) -> Currency {
        let Some(confirmed) = &self.confirmed else {
            return Currency::Current;
        };
        if !confirmed.loaded.load(Ordering::Acquire) {
            return Currency::Loading;
        }
        let max = confirmed.max_staleness_nanos.load(Ordering::Acquire);
        match self.age() {
            Some(age) if nanos(age) <= max => Currency::Current,
            _ => Currency::Stale,
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmed_view_is_current_only_within_max_staleness() {
        let clock = Clock::manual(1_000);
        let freshness = Freshness::confirmed(clock.clone(), Duration::from_secs(5));
        assert_eq!(freshness.currency(), Currency::Loading);
        freshness.loaded();
        assert_eq!(freshness.currency(), Currency::Stale, "never confirmed");
        freshness.confirm(clock.instant());
        assert_eq!(freshness.currency(), Currency::Current);
        clock.advance(Duration::from_secs(5));
        assert_eq!(freshness.currency(), Currency::Current);
        clock.advance(Duration::from_millis(1));
        assert_eq!(freshness.currency(), Currency::Stale);
        freshness.set_max_staleness(Duration::from_secs(10));
        assert_eq!(freshness.currency(), Currency::Current);
    }

    #[test]
    fn an_older_confirmation_never_moves_the_mark_back() {
        let clock = Clock::manual(1_000);
        let freshness = Freshness::confirmed(clock.clone(), Duration::from_secs(1));
        freshness.loaded();
        let early = clock.instant();
        clock.advance(Duration::from_secs(2));
        freshness.confirm(clock.instant());
        freshness.confirm(early);
        assert_eq!(freshness.currency(), Currency::Current);
    }

    #[test]
    fn the_sled_view_is_always_current() {
        assert_eq!(
            Freshness::always(Clock::manual(0)).currency(),
            Currency::Current
        );
    }
}

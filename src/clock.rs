//! The one place that reads the clocks: the wall clock (token times, expiry, key names) and
//! the monotonic clock (latencies, idle deadlines). Everything else asks a [`Clock`], so a
//! test can hold time still or move it on.

// This module is what clippy.toml's `disallowed-methods` points everyone else to.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Seconds since the Unix epoch (the same as `store::UnixSeconds`, which the clock must not
/// depend on: the store takes a clock).
pub type UnixSeconds = i64;

/// A source of time, cheap to clone: the system's clocks, or a manual clock whose clones
/// all share one time.
#[derive(Debug, Clone)]
pub struct Clock {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    System,
    Manual(Arc<ManualTime>),
}

/// The time of a manual clock: wall-clock seconds, and how far its monotonic clock has
/// moved past the instant the clock was made.
#[derive(Debug)]
struct ManualTime {
    unix_seconds: AtomicI64,
    origin: Instant,
    elapsed_nanos: AtomicU64,
}

impl Clock {
    /// The system's clocks.
    pub fn system() -> Clock {
        Clock {
            source: Source::System,
        }
    }

    /// A clock that reads `now` until told otherwise with [`Clock::set`] or
    /// [`Clock::advance`] (on any clone).
    pub fn manual(now: UnixSeconds) -> Clock {
        Clock {
            source: Source::Manual(Arc::new(ManualTime {
                unix_seconds: AtomicI64::new(now),
                origin: Instant::now(),
                elapsed_nanos: AtomicU64::new(0),
            })),
        }
    }

    /// The current time in whole seconds since the epoch (0 for a system clock set before
    /// 1970).
    pub fn now(&self) -> UnixSeconds {
        match &self.source {
            Source::System => SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            Source::Manual(time) => time.unix_seconds.load(Ordering::Relaxed),
        }
    }

    /// The current wall-clock time, for APIs that take a [`SystemTime`] (key file names).
    pub fn system_time(&self) -> SystemTime {
        match &self.source {
            Source::System => SystemTime::now(),
            Source::Manual(_) => {
                let seconds = u64::try_from(self.now()).unwrap_or(0);
                SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
            }
        }
    }

    /// The current monotonic instant.
    pub fn instant(&self) -> Instant {
        match &self.source {
            Source::System => Instant::now(),
            Source::Manual(time) => {
                time.origin + Duration::from_nanos(time.elapsed_nanos.load(Ordering::Relaxed))
            }
        }
    }

    /// Sets a manual clock's wall-clock time (its monotonic clock never goes back). No
    /// effect on the system clock.
    pub fn set(&self, now: UnixSeconds) {
        if let Source::Manual(time) = &self.source {
            time.unix_seconds.store(now, Ordering::Relaxed);
        }
    }

    /// Moves a manual clock's wall and monotonic clocks on by `by` (whole seconds for the
    /// wall clock: the fraction is dropped). No effect on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Source::Manual(time) = &self.source {
            let seconds = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
            let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            time.unix_seconds
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                    Some(s.saturating_add(seconds))
                })
                .ok();
            time.elapsed_nanos
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_add(nanos))
                })
                .ok();
        }
    }
}

/// Seconds since the epoch as an RFC 3339 UTC string (clamped to 1970…9999: humantime
/// cannot format later years, and a token's `exp` can be anything up to i64::MAX).
pub fn rfc3339(seconds: i64) -> String {
    const LAST_SECOND_OF_9999: i64 = 253_402_300_799;
    let seconds = seconds.clamp(0, LAST_SECOND_OF_9999) as u64;
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_stands_still_until_moved() {
        let clock = Clock::manual(1_800_000_000);
        let start = clock.instant();
        assert_eq!(clock.now(), 1_800_000_000);
        assert_eq!(clock.instant(), start);

        clock.advance(Duration::from_millis(2_500));

        assert_eq!(clock.now(), 1_800_000_002);
        assert_eq!(clock.instant() - start, Duration::from_millis(2_500));
    }

    #[test]
    fn clones_of_a_manual_clock_share_its_time() {
        let clock = Clock::manual(100);
        let clone = clock.clone();

        clone.set(200);

        assert_eq!(clock.now(), 200);
        assert_eq!(
            clock.system_time(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(200)
        );
    }

    #[test]
    fn the_system_clock_is_past_2020() {
        assert!(Clock::system().now() > 1_577_836_800);
    }
}

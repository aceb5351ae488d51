//! The throttle's memory stays bounded: full tables evict the least recently updated
//! unlocked entries, expired entries go, locked ones stay, and a spray of usernames neither
//! grows the tables nor unlocks anyone.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use super::*;

#[test]
fn a_full_table_evicts_the_least_recently_updated_unlocked_entries_first() {
    let throttle = LoginThrottle::new();
    let limits = limits(2, 2, 1000, 3);
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
    let limits = limits(3, 3, 1000, 2);
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
    let limits = limits(1, 1, 1000, 2);
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
    let limits = limits(1, 1, 3, 2);
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
    let five = limits(5, 100, 100, 1000);
    for i in 0..3 {
        fail(&throttle, &five, "alice", "192.0.2.1", t0 + secs(i));
    }
    assert!(check(&throttle, &five, "alice", "192.0.2.1", t0 + secs(10)).is_ok());

    let two = limits(2, 100, 100, 1000);
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
    let limits = limits(3, 3, 1_000_000, 1000);
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
        let sizes = throttle.sizes();
        assert!(
            sizes.pairs <= 1000 && sizes.usernames <= 1000 && sizes.addresses <= 1000,
            "{sizes:?}"
        );
    }
    let sizes = throttle.sizes();
    assert_eq!(
        (sizes.pairs, sizes.usernames, sizes.addresses),
        (1000, 1000, 1000)
    );
    let later = t0 + secs(100);
    assert!(check(&throttle, &limits, "victim", "192.0.2.1", later).is_err());
    assert!(check(&throttle, &limits, "victim", "192.0.2.2", later).is_err());
}

#[test]
fn a_full_default_sized_table_stays_fast() {
    let throttle = LoginThrottle::new();
    let limits = limits(5, 100, 50, 100_000);
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
    let sizes = throttle.sizes();
    assert_eq!(
        (sizes.pairs, sizes.usernames, sizes.addresses),
        (100_000, 100_000, 100_000)
    );
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
    let limits = limits(1, 10, 10, 10);
    fail(&throttle, &limits, "a", "192.0.2.1", Instant::now());
    assert_eq!(throttle.tracked(), (1, 1));
}

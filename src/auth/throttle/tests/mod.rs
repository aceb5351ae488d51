//! The throttle's rules at the table level, with explicit instants: pair, username and
//! address limits, the known-pair exemption, and the bounded tables.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use super::*;

mod bounded;

const WINDOW: Duration = Duration::from_secs(900);

const KNOWN_FOR: Duration = Duration::from_secs(30 * 86_400);

/// Limits per (username, address) pair, per username, per address, and the table size.
fn limits(per_pair: u32, per_user: u32, per_ip: u32, max_tracked: usize) -> LoginConfig {
    LoginConfig {
        max_failures: per_pair,
        max_failures_per_user: per_user,
        max_failures_per_ip: per_ip,
        known_for: KNOWN_FOR,
        window: WINDOW,
        max_tracked,
        max_sessions_per_user: 100,
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

fn fail(throttle: &LoginThrottle, limits: &LoginConfig, user: &str, client: &str, now: Instant) {
    attempt(throttle, limits, user, ip(client), Outcome::Failure, now).unwrap();
}

fn succeed(throttle: &LoginThrottle, limits: &LoginConfig, user: &str, client: &str, now: Instant) {
    attempt(throttle, limits, user, ip(client), Outcome::Success, now).unwrap();
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
    let limits = limits(100, 3, 100, 1000);
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
    let limits = limits(2, 100, 100, 1000);
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
    let limits = limits(100, 2, 100, 1000);
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
fn a_success_resets_its_own_pair_only() {
    let throttle = LoginThrottle::new();
    let limits = limits(3, 4, 5, 1000);
    let t0 = Instant::now();
    fail(&throttle, &limits, "alice", "192.0.2.1", t0);
    fail(&throttle, &limits, "alice", "192.0.2.1", t0);
    fail(&throttle, &limits, "alice", "192.0.2.2", t0);
    succeed(&throttle, &limits, "alice", "192.0.2.1", t0);
    let sizes = throttle.sizes();
    assert_eq!((sizes.pairs, sizes.usernames, sizes.addresses), (1, 1, 2));

    // The pair starts over: two more failures leave it one short of its limit of 3...
    fail(&throttle, &limits, "alice", "192.0.2.1", t0 + secs(1));
    fail(&throttle, &limits, "alice", "192.0.2.1", t0 + secs(2));
    assert!(check(&throttle, &limits, "alice", "192.0.2.1", t0 + secs(3)).is_ok());
    // ...but the username kept its count (5 of 4: locked where alice never logged in)...
    let refused = check(&throttle, &limits, "alice", "192.0.2.9", t0 + secs(3)).unwrap_err();
    assert_eq!(refused.retry_after, secs(897));
    // ...and so did the address: its fifth failure locks it for everybody else.
    fail(&throttle, &limits, "carol", "192.0.2.1", t0 + secs(3));
    let refused = check(&throttle, &limits, "dave", "192.0.2.1", t0 + secs(4)).unwrap_err();
    assert_eq!(refused.retry_after, secs(896));
    // The other pair's failure is still tracked: (alice, .1), (alice, .2), (carol, .1).
    assert_eq!(throttle.sizes().pairs, 3);
}

#[test]
fn uncounted_outcomes_count_nothing_but_are_still_refused_when_locked() {
    let throttle = LoginThrottle::new();
    let limits = limits(2, 2, 2, 1000);
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
    let limits = limits(100, 2, 2, 1000);
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
    let limits = limits(2, 100, 100, 1000);
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
    let limits = limits(100, 100, 2, 1000);
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
    let limits = limits(2, 2, 1, 1000);
    let t0 = Instant::now();
    attempt(&throttle, &limits, "a", None, Outcome::Failure, t0).unwrap();
    attempt(&throttle, &limits, "b", None, Outcome::Failure, t0).unwrap();
    assert_eq!(throttle.tracked(), (2, 0));
}

#[test]
fn a_locked_pair_leaves_the_same_user_served_from_other_addresses() {
    let throttle = LoginThrottle::new();
    let limits = limits(5, 100, 50, 1000);
    let t0 = Instant::now();
    // The attacker guesses alice's password from its own address until that pair locks.
    for i in 0..5 {
        fail(&throttle, &limits, "alice", "198.51.100.66", t0 + secs(i));
    }
    let refused = check(&throttle, &limits, "alice", "198.51.100.66", t0 + secs(10)).unwrap_err();
    assert_eq!(refused.retry_after, secs(890));
    let right = Attempt::new("alice", ip("198.51.100.66"));
    assert_eq!(
        throttle.record(&limits, &right, Outcome::Success, t0 + secs(10)),
        Err(refused),
        "the right password is refused too"
    );
    // Alice herself, from anywhere else, is not affected; nor are others from there.
    succeed(&throttle, &limits, "alice", "192.0.2.1", t0 + secs(10));
    succeed(&throttle, &limits, "ALICE", "2001:db8::1", t0 + secs(10));
    assert!(check(&throttle, &limits, "bob", "198.51.100.66", t0 + secs(10)).is_ok());
    // The lock ends when the oldest failure leaves the window.
    assert!(check(&throttle, &limits, "alice", "198.51.100.66", t0 + WINDOW).is_ok());
}

#[test]
fn the_per_user_limit_counts_every_address_and_locks_the_user_everywhere() {
    let throttle = LoginThrottle::new();
    let limits = limits(5, 10, 50, 1000);
    let t0 = Instant::now();
    // Ten addresses, each far below the pair limit.
    for i in 0..10u64 {
        let client = format!("203.0.113.{i}");
        assert!(check(&throttle, &limits, "alice", &client, t0 + secs(i)).is_ok());
        fail(&throttle, &limits, "alice", &client, t0 + secs(i));
    }
    for client in ["203.0.113.0", "203.0.113.200", "192.0.2.1"] {
        let refused = check(&throttle, &limits, "alice", client, t0 + secs(20)).unwrap_err();
        assert_eq!(refused.retry_after, secs(880), "{client}");
    }
    // Unknown usernames are counted by the same rule.
    for i in 0..10u64 {
        fail(&throttle, &limits, "nobody", &format!("203.0.113.{i}"), t0);
    }
    assert!(check(&throttle, &limits, "nobody", "192.0.2.1", t0 + secs(20)).is_err());
    assert!(check(&throttle, &limits, "bob", "192.0.2.1", t0 + secs(20)).is_ok());
}

#[test]
fn a_known_pair_is_not_held_to_the_per_user_limit_but_to_its_own() {
    let throttle = LoginThrottle::new();
    let limits = limits(5, 100, 50, 1000);
    let t0 = Instant::now();
    succeed(&throttle, &limits, "alice", "192.0.2.1", t0);
    // 20 addresses × 5 failures: every pair locked, and the username's 100 reached.
    for a in 0..20u64 {
        for i in 0..5 {
            fail(
                &throttle,
                &limits,
                "alice",
                &format!("203.0.113.{a}"),
                t0 + secs(a * 5 + i),
            );
        }
    }
    let now = t0 + secs(200);
    assert!(check(&throttle, &limits, "alice", "198.51.100.1", now).is_err());
    assert!(check(&throttle, &limits, "alice", "203.0.113.0", now).is_err());
    // Where alice logged in before, she still does.
    succeed(&throttle, &limits, "alice", "192.0.2.1", now);

    // Its own pair limit still holds there.
    for i in 0..5 {
        fail(&throttle, &limits, "alice", "192.0.2.1", now + secs(i));
    }
    let refused = check(&throttle, &limits, "alice", "192.0.2.1", now + secs(10)).unwrap_err();
    assert_eq!(refused.retry_after, secs(890));
}

#[test]
fn a_known_pair_is_still_held_to_its_address_limit() {
    let throttle = LoginThrottle::new();
    let limits = limits(5, 100, 3, 1000);
    let t0 = Instant::now();
    succeed(&throttle, &limits, "alice", "192.0.2.1", t0);
    for name in ["u1", "u2", "u3"] {
        fail(&throttle, &limits, name, "192.0.2.1", t0 + secs(10));
    }
    // The address sprayed usernames: it is locked for everybody, alice included.
    let refused = check(&throttle, &limits, "alice", "192.0.2.1", t0 + secs(20)).unwrap_err();
    assert_eq!(refused.retry_after, secs(890));
    assert!(check(&throttle, &limits, "bob", "192.0.2.1", t0 + secs(20)).is_err());
    assert!(check(&throttle, &limits, "alice", "192.0.2.2", t0 + secs(20)).is_ok());
}

#[test]
fn known_pairs_are_forgotten_after_known_for() {
    let throttle = LoginThrottle::new();
    let limits = LoginConfig {
        known_for: secs(1000),
        ..limits(5, 2, 50, 1000)
    };
    let t0 = Instant::now();
    succeed(&throttle, &limits, "alice", "192.0.2.1", t0);
    fail(&throttle, &limits, "alice", "203.0.113.1", t0 + secs(500));
    fail(&throttle, &limits, "alice", "203.0.113.2", t0 + secs(500));
    assert!(check(&throttle, &limits, "alice", "192.0.2.9", t0 + secs(501)).is_err());
    assert!(check(&throttle, &limits, "alice", "192.0.2.1", t0 + secs(999)).is_ok());
    assert_eq!(throttle.sizes().known_pairs, 1);

    let refused = check(&throttle, &limits, "alice", "192.0.2.1", t0 + secs(1000)).unwrap_err();
    assert_eq!(refused.retry_after, secs(400));
    assert_eq!(throttle.sizes().known_pairs, 0);

    // A zero `known_for` remembers no pair at all.
    let never = LoginConfig {
        known_for: Duration::ZERO,
        ..limits
    };
    succeed(&throttle, &never, "bob", "192.0.2.1", t0 + secs(1000));
    assert_eq!(throttle.sizes().known_pairs, 0);
}

#[test]
fn known_pairs_are_bounded_and_the_oldest_success_goes_first() {
    let throttle = LoginThrottle::new();
    let limits = limits(5, 1, 50, 2);
    let t0 = Instant::now();
    succeed(&throttle, &limits, "a", "192.0.2.1", t0);
    succeed(&throttle, &limits, "b", "192.0.2.1", t0 + secs(1));
    // A new success makes "a" the most recent again: "b" goes when "c" arrives.
    succeed(&throttle, &limits, "a", "192.0.2.1", t0 + secs(2));
    succeed(&throttle, &limits, "c", "192.0.2.1", t0 + secs(3));
    assert_eq!(throttle.sizes().known_pairs, 2);

    let now = t0 + secs(4);
    for name in ["a", "b", "c"] {
        fail(&throttle, &limits, name, "203.0.113.1", now);
    }
    assert!(check(&throttle, &limits, "a", "192.0.2.1", now).is_ok());
    assert!(check(&throttle, &limits, "b", "192.0.2.1", now).is_err());
    assert!(check(&throttle, &limits, "c", "192.0.2.1", now).is_ok());
}

#[test]
fn failures_of_a_known_pair_still_count_for_its_username() {
    let throttle = LoginThrottle::new();
    let limits = limits(5, 3, 50, 1000);
    let t0 = Instant::now();
    succeed(&throttle, &limits, "alice", "192.0.2.1", t0);
    for _ in 0..3 {
        fail(&throttle, &limits, "alice", "192.0.2.1", t0);
    }
    assert!(check(&throttle, &limits, "alice", "192.0.2.2", t0).is_err());
    assert!(check(&throttle, &limits, "alice", "192.0.2.1", t0).is_ok());
}

#[test]
fn the_longest_of_the_pair_user_and_address_waits_is_reported() {
    let throttle = LoginThrottle::new();
    let limits = limits(2, 3, 2, 1000);
    let t0 = Instant::now();
    fail(&throttle, &limits, "alice", "192.0.2.2", t0);
    fail(&throttle, &limits, "alice", "192.0.2.1", t0 + secs(100));
    fail(&throttle, &limits, "alice", "192.0.2.1", t0 + secs(200));
    fail(&throttle, &limits, "bob", "192.0.2.7", t0 + secs(280));
    fail(&throttle, &limits, "carol", "192.0.2.7", t0 + secs(290));
    // alice is locked until t0+900; the pair (alice, .1) and address .1 until t0+1000;
    // address .7 until t0+1180.
    let now = t0 + secs(300);
    let wait = |user, client| {
        check(&throttle, &limits, user, client, now)
            .unwrap_err()
            .retry_after
    };
    assert_eq!(wait("alice", "192.0.2.3"), secs(600));
    assert_eq!(wait("alice", "192.0.2.1"), secs(700));
    assert_eq!(wait("alice", "192.0.2.7"), secs(880));
    assert_eq!(wait("dave", "192.0.2.7"), secs(880));
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

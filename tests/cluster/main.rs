//! Cluster mode (API.md "Cluster mode on etcd", rev 4) with nothing simulated: 3 real etcd
//! members (`tests/common/etcd.rs`) and 3 real `authd serve` processes
//! ([`Daemon`](common::Daemon)) per test, spoken to over HTTP. The tests run one at a time
//! ([`deployment::SERIAL`]); each returns at once, with a note, where etcd is not installed.
//!
//! Each test has its own etcd net (`127.0.N.1..=3`), so that one that damages its etcd
//! (kills, pauses, compacts) cannot touch another's, even run alone:
//!
//! | net | test |
//! |-----|------|
//! | 10 | `propagation`: a login works everywhere at once; every kind of revocation in 1 s |
//! | 11 | `refresh`: one refresh token on three instances at once |
//! | 12 | `quorum`: writes 503, verify until `max_staleness`, recovery |
//! | 13 | `compaction`: an instance paused across a compaction resyncs |
//! | 14 | `failover`: etcd leader and one authd killed under write load |
//! | 15 | `startup`: serve starts before etcd |
//! | 16 | `startup`: missing or different secrets refuse the start |
//! | 17 | `membership`: `GET /admin/v1/cluster` |
//! | 18 | `failover`: one etcd member down is no outage |
//! | 19 | `feed`: the revocation feed across instances |
//! | 41 | `mfa`: the second login step on any instance; wrong codes over all kill the token |
//! | 42 | `mfa`: a missing or different `mfa.key_file` refuses the start |
//!
//! (net 1 belongs to `tests/api_etcd`, net 40 to `tests/backup.rs`.)

// Tests wait on real time (deadlines for the daemons under test), as a client would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

#[path = "../common/mod.rs"]
mod common;

mod deployment;

mod compaction;
mod failover;
mod feed;
mod membership;
mod mfa;
mod propagation;
mod quorum;
mod refresh;
mod startup;

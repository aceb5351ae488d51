//! The API tests of `tests/api`, run against the etcd backend: one contract, two backends.
//! Every [`TestApp`](common::TestApp) of this binary stores in one etcd member on
//! `127.0.1.1` (started on first use, `tests/common/etcd.rs`), each under a prefix of its
//! own; the tests themselves are the very files of `tests/api`.
//!
//! Left out, as they cannot apply to etcd:
//! - `upgrade`: it opens a sled store written by an older release (a fixture folder).
//!
//! Tests that bypass `TestApp` (e.g. start errors built from the shipped configuration)
//! still run on sled here; they pass either way. Without etcd installed the daemons run on
//! sled, with a note on stderr (`common::etcd_mode`).

// The daemon under test runs on the system clock, and so do the tests' own expectations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

#[path = "../common/mod.rs"]
mod common;

#[path = "../api/account_page.rs"]
mod account_page;
#[path = "../api/admin.rs"]
mod admin;
#[path = "../api/backup.rs"]
mod backup;
#[path = "../api/browser.rs"]
mod browser;
#[path = "../api/connections.rs"]
mod connections;
#[path = "../api/errors.rs"]
mod errors;
#[path = "../api/feed.rs"]
mod feed;
#[path = "../api/hardening.rs"]
mod hardening;
#[path = "../api/keys.rs"]
mod keys;
#[path = "../api/login.rs"]
mod login;
#[path = "../api/metrics.rs"]
mod metrics;
#[path = "../api/mfa.rs"]
mod mfa;
#[path = "../api/races.rs"]
mod races;
#[path = "../api/revocation.rs"]
mod revocation;
#[path = "../api/sessions.rs"]
mod sessions;
#[path = "../api/throttle.rs"]
mod throttle;

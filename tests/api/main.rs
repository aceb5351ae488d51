//! Integration tests against a real daemon started in-process on port 0: the shipped
//! `config.toml`, overridden only where a test must differ, spoken to over HTTP through
//! the shared harness (`tests/common`: `TestApp` and one helper per endpoint).

// The daemon under test runs on the system clock, and so do the tests' own expectations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

#[path = "../common/mod.rs"]
mod common;

mod account_page;
mod admin;
mod backup;
mod browser;
mod cluster;
mod connections;
mod errors;
mod feed;
mod hardening;
mod keys;
mod login;
mod metrics;
mod mfa;
mod races;
mod revocation;
mod sessions;
mod throttle;
mod upgrade;

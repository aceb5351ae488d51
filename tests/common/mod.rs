//! The one test harness: every integration test binary (`mod common;`) starts its daemons
//! and speaks to them through it; the fuzz targets build theirs from its `config.rs`.
//!
//! - `config`: the shipped `config.toml` and what tests change in it.
//! - `client`: [`Api`], one request helper per endpoint, and the checks of answers.
//! - `in_process`: [`TestApp`], a daemon in the test's own process on port 0.
//! - `process`: [`Daemon`], the real binary as a child process (signals, `kill -9`).
//! - `tokens`: JWTs taken apart and forged.
//! - `etcd`: [`EtcdCluster`], real etcd members on their own loopback addresses.
//! - `second_factor`: TOTP codes, the `/v1/mfa/*` routes and the two login steps (more
//!   [`Api`] methods), enrolment, the checks of their answers; secrets searched for in
//!   bytes the daemon left behind.
//!
//! One contract, two backends: the `api_etcd` binary (or `AUTHD_TEST_STORE=etcd` for any
//! binary) runs every [`TestApp`] on etcd instead of sled ([`etcd_mode`]).

// Each test binary uses its own share of these helpers (and of the re-exports below).
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod config;
pub mod etcd;
pub mod in_process;
pub mod process;
pub mod second_factor;
pub mod tokens;

pub use client::{
    Api, PASSWORD, assert_error, assert_tokens, header, header_str, percent_encode, text,
};
pub use config::{
    SHARED_ETCD, config_text, config_with, etcd_config, etcd_mode, etcd_prefix, in_process_config,
    in_process_env, set, set_in_section, shipped_config, write_config,
};
pub use etcd::EtcdCluster;
pub use in_process::TestApp;
pub use process::{
    Daemon, POLL, STEP_TIMEOUT, TEST_TIMEOUT, describe, message, refused_start, run_cli,
    strip_ansi, within_timeout,
};
pub use tokens::{b64_json, claims, jose_header, with_claim, without_claim};

/// 16 random hex digits, for names that must not collide between tests or runs.
pub fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the system's random source");
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

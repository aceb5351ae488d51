//! The one test harness: every integration test binary (`mod common;`) starts its daemons
//! and speaks to them through it; the fuzz targets build theirs from its `config.rs`.
//!
//! - `config`: the shipped `config.toml` and what tests change in it.
//! - `client`: [`Api`], one request helper per endpoint, and the checks of answers.
//! - `in_process`: [`TestApp`], a daemon in the test's own process on port 0.
//! - `process`: [`Daemon`], the real binary as a child process (signals, `kill -9`).
//! - `tokens`: JWTs taken apart and forged.

// Each test binary uses its own share of these helpers (and of the re-exports below).
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod config;
pub mod in_process;
pub mod process;
pub mod tokens;

pub use client::{Api, PASSWORD, assert_error, header, header_str, percent_encode, text};
pub use config::{
    config_text, config_with, in_process_config, in_process_env, set, shipped_config, write_config,
};
pub use in_process::TestApp;
pub use process::{Daemon, POLL, STEP_TIMEOUT, TEST_TIMEOUT, message, strip_ansi, within_timeout};
pub use tokens::{b64_json, claims, jose_header, with_claim, without_claim};

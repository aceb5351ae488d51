//! authd: a small authentication daemon. Users log in with a password checked against an
//! argon2id hash, receive a signed JWT access token and an opaque refresh token, and every
//! protected request is checked against both the signature and the durable revocation state.
//!
//! Layout:
//! - [`config`]: the TOML file + `AUTHD__…` overrides → a validated [`config::Config`].
//! - [`auth`]: the domain — passwords, keys, tokens, users, sessions, revocation. No HTTP.
//! - [`store`]: the only module that knows sled and bincode.
//! - [`http`]: routes, handlers, the error → response mapping, the listener loop.
//! - [`activation`]: listeners passed by systemd socket activation.
//! - [`app`]: the composition root — build (files, store, listeners, state) and run
//!   (serve, reload, drain, flush). Only [`signals`] names it, for [`app::Control`].
//! - [`state`]: [`state::AppState`], what requests and tasks share, made from ready parts.
//! - [`clock`]: the only reader of the wall and monotonic clocks.
//! - [`logging`]: the log subscriber (text or JSON).
//! - [`metrics`]: Prometheus metrics of requests, logins, verifications and queues.
//! - [`tasks`]: background work (purging expired entries).
//! - [`signals`]: Unix signals → [`app::Control`] messages.
//! - [`notify`]: systemd readiness, reload, stop and watchdog notifications.
//! - [`files`], [`random`]: private files and folders (0600/0700); the OS random source.
//! - [`cli`]: the admin commands (`authd user`, `revoke`, `revocations`), a client of the
//!   running daemon's admin listener.

pub mod activation;
pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod files;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod random;
pub mod signals;
pub mod state;
pub mod store;
pub mod tasks;

#[cfg(test)]
mod testing;

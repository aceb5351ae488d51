//! authd: a small authentication daemon. Users log in with a password checked against an
//! argon2id hash, receive a signed JWT access token and an opaque refresh token, and every
//! protected request is checked against both the signature and the durable revocation state.
//!
//! Layout:
//! - [`config`]: the TOML file + `AUTHD__…` overrides → a validated [`config::Config`].
//! - [`auth`]: the domain — passwords, keys, tokens, throttling, and in [`auth::service`]
//!   the operations (login, refresh, verify, sessions, users, revocations). No HTTP.
//! - [`store`]: the store the domain calls — typed reads and conditional commits over a
//!   [`store::Backend`] (sled today, in [`store::sled`], the only module that knows sled and
//!   bincode), and the in-memory [`store::View`] the hot path reads, fed by the backend's
//!   ordered change stream.
//! - [`feed`]: the revocation feed — events and cursors over the store, for apps that verify
//!   tokens themselves.
//! - [`backup`]: backups (the JSON-lines format) and restores.
//! - [`http`]: one route table per listener, handlers by route family (tokens, account,
//!   verify, browser, admin, health), the error → response mapping, the listener loop.
//! - [`activation`]: listeners passed by systemd socket activation.
//! - [`app`]: the composition root — build (files, store, listeners, state) and run
//!   (serve, reload, drain, flush). Only [`signals`] names it, for [`app::Control`].
//! - [`state`]: [`state::AppState`], what requests and tasks share, made from ready parts.
//! - [`cluster`]: this instance as a deployment member — node id, self-description, key-set
//!   comparison.
//! - [`clock`]: the only reader of the wall and monotonic clocks.
//! - [`logging`]: the log subscriber (text or JSON).
//! - [`metrics`]: Prometheus metrics of requests, logins, verifications and queues.
//! - [`tasks`]: background work (purging expired entries).
//! - [`signals`]: Unix signals → [`app::Control`] messages.
//! - [`notify`]: systemd readiness, reload, stop and watchdog notifications.
//! - [`files`], [`random`]: private files and folders (0600/0700); the OS random source.
//! - [`cli`]: the admin commands (`authd user`, `revoke`, `revocations`), a client of the
//!   running daemon's admin listener.
//!
//! The import graph has no cycles: `app` is the top, `http` and `tasks` sit on `state`,
//! which sits on `auth`, which sits on `store`.

pub mod activation;
pub mod app;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod feed;
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

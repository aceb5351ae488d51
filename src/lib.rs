//! authd: a small authentication daemon. Users log in with a password checked against an
//! argon2id hash, receive a signed JWT access token and an opaque refresh token, and every
//! protected request is checked against both the signature and the durable revocation state.
//!
//! Layout:
//! - [`config`]: the TOML file + `AUTHD__…` overrides → a validated [`config::Config`].
//! - [`auth`]: the domain — passwords, keys, tokens, users, sessions, revocation. No HTTP.
//! - [`store`]: the only module that knows sled and bincode.
//! - [`http`]: routes, handlers, the error → response mapping, the listener loop.
//! - [`app`]: build (files, store, listeners) and run (serve, reload, drain, flush).
//! - [`tasks`]: background work (purging expired entries).
//! - [`signals`]: Unix signals → [`app::Control`] messages.
//! - [`notify`]: systemd readiness, reload, stop and watchdog notifications.

pub mod app;
pub mod auth;
pub mod config;
pub mod http;
pub mod notify;
pub mod signals;
pub mod store;
pub mod tasks;

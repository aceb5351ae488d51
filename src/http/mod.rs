//! The HTTP API of API.md. [`routes`] holds the one route table of each listener and
//! serves it; handlers live in one file per route family ([`tokens`], [`account`],
//! [`verify`], [`mfa`], [`health`], [`browser`], [`account_page`], [`admin`]) over shared pieces: the request context
//! ([`request`]), response shapes ([`views`], [`reply`]), login/refresh auditing
//! ([`audit`]) and the error → response mapping ([`error`]). [`server`] runs a listener.

pub mod account;
pub mod account_html;
pub mod account_page;
pub mod admin;
pub mod audit;
pub mod browser;
pub mod client_addr;
pub mod cookies;
pub mod error;
pub mod feed;
pub mod health;
pub mod mfa;
pub mod pages;
pub mod reply;
pub mod request;
pub mod routes;
pub mod server;
#[cfg(test)]
mod testing;
pub mod tokens;
pub mod verify;
pub mod views;

pub use routes::Routes;

//! The domain: passwords, signing keys, access tokens, users, sessions and revocation.
//! Plain Rust that knows nothing of HTTP; [`service::Authority`] is its entry point and
//! [`Settings`] the reloadable snapshot every operation runs against.

pub mod admin_token;
pub mod keys;
pub mod names;
pub mod password;
pub mod redirect;
pub mod service;
pub mod throttle;
pub mod token;

use crate::config::Config;
use admin_token::{AdminToken, AdminTokenError};
use keys::{KeyError, KeySet};
use password::{HashCost, PasswordError};
use token::TokenRules;

pub use service::{AuthError, Authority, Principal};

// Their home is the crate's one owner of private files and of randomness; the domain and
// its callers keep reaching them here.
pub use crate::files::create_private_dir;
pub use crate::random::random_id;

/// Everything a request needs from the configuration, loaded and validated as one unit:
/// a reload builds a complete new `Settings` and swaps it in, or keeps the old one.
#[derive(Debug)]
pub struct Settings {
    pub config: Config,
    pub keys: KeySet,
    pub tokens: TokenRules,
    pub cost: HashCost,
    /// An argon2id hash of a random password with the current cost, checked for unknown
    /// users so that they cost the same as wrong passwords.
    pub dummy_hash: String,
    pub admin_token: AdminToken,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    AdminToken(#[from] AdminTokenError),
    #[error(transparent)]
    Password(#[from] PasswordError),
}

impl Settings {
    /// Reads the key set and the admin token named by `config` (blocking file I/O and one
    /// argon2 hash: call from a blocking context or at start-up).
    pub fn load(config: Config) -> Result<Settings, SettingsError> {
        let keys = KeySet::load(
            &config.jwt.keys_dir,
            config.jwt.algorithm,
            config.jwt.signing_kid.as_deref(),
        )?;
        let admin_token = AdminToken::read(&config.admin.token_file)?;
        let cost = HashCost::new(&config.password)?;
        let dummy_hash = cost.hash_blocking(&crate::random::random_id(16))?;
        Ok(Settings {
            tokens: TokenRules::new(&config.jwt),
            keys,
            cost,
            dummy_hash,
            admin_token,
            config,
        })
    }
}

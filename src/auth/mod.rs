//! The domain: passwords, signing keys, access tokens, users, sessions and revocation.
//! Plain Rust that knows nothing of HTTP; [`service::Authority`] is its entry point and
//! [`Settings`] the reloadable snapshot every operation runs against.

pub mod keys;
pub mod mfa;
pub mod names;
pub mod password;
pub mod redirect;
pub mod secret_token;
pub mod service;
pub mod throttle;
pub mod token;

use crate::config::Config;
use keys::{KeyError, KeySet};
use password::{HashCost, PasswordError};
use secret_token::{SecretToken, SecretTokenError};
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
    pub admin_token: SecretToken,
    /// The revocation feed's token; `None` while `feed.enabled` is off.
    pub feed_token: Option<SecretToken>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Token(#[from] SecretTokenError),
    #[error(transparent)]
    Password(#[from] PasswordError),
}

impl Settings {
    /// Reads the key set and the token files named by `config` (blocking file I/O and one
    /// argon2 hash: call from a blocking context or at start-up).
    pub fn load(config: Config) -> Result<Settings, SettingsError> {
        let keys = KeySet::load(
            &config.jwt.keys_dir,
            config.jwt.algorithm,
            config.jwt.signing_kid.as_deref(),
        )?;
        let admin_token = SecretToken::read("admin.token_file", &config.admin.token_file)?;
        let feed_token = match config.feed.enabled {
            true => Some(SecretToken::read(
                "feed.token_file",
                &config.feed.token_file,
            )?),
            false => None,
        };
        let cost = HashCost::new(&config.password)?;
        let dummy_hash = cost.hash_blocking(&crate::random::random_id(16))?;
        Ok(Settings {
            tokens: TokenRules::new(&config.jwt),
            keys,
            cost,
            dummy_hash,
            admin_token,
            feed_token,
            config,
        })
    }
}

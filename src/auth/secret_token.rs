//! The API secrets kept in token files: the admin API token (`admin.token_file`) and the
//! revocation feed's token (`feed.token_file`). Each is a random secret created at first
//! start (mode 0600, never overwritten), read back with surrounding whitespace ignored and
//! compared in constant time. A file group or others can read or write, or a token under
//! 32 bytes, is refused (API.md rev 4): start-up stops and a reload keeps the old token.

use std::path::Path;

use subtle::ConstantTimeEq as _;

use crate::{files, random};

/// A secret from a token file; never printed.
#[derive(Clone)]
pub struct SecretToken(String);

impl std::fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretToken([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretTokenError {
    #[error("{key}: {problem}")]
    File {
        key: &'static str,
        problem: files::FileProblem,
    },
    #[error("cannot create {key} {path}: {source}")]
    Create {
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl SecretToken {
    /// Reads the token of `key` (e.g. `admin.token_file`) from `path`: an owner-only file
    /// holding at least 32 bytes once surrounding whitespace is trimmed.
    pub fn read(key: &'static str, path: &Path) -> Result<SecretToken, SecretTokenError> {
        files::read_token_file(path)
            .map(SecretToken)
            .map_err(|problem| SecretTokenError::File { key, problem })
    }

    /// Creates `path` with a fresh random token unless it exists; `true` when created.
    pub fn create_if_missing(key: &'static str, path: &Path) -> Result<bool, SecretTokenError> {
        let err = |source| SecretTokenError::Create {
            key,
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent() {
            files::create_private_dir(parent).map_err(err)?;
        }
        let contents = format!("{}\n", random::random_id(32));
        match files::write_private_file_new(path, contents.as_bytes()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    /// Constant-time comparison with a presented credential.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

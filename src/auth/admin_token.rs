//! The admin API token: a random secret created at first start in `admin.token_file`
//! (mode 0600, never overwritten), read back with surrounding whitespace ignored and
//! compared in constant time. A file group or others can read or write, or a token under
//! 32 bytes, is refused (API.md rev 4): start-up stops and a reload keeps the old token.

use std::path::Path;

use subtle::ConstantTimeEq as _;

use crate::{files, random};

/// The admin credential; never printed.
#[derive(Clone)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    #[error("admin.token_file: {0}")]
    File(#[from] files::FileProblem),
    #[error("cannot create admin token file {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
}

impl AdminToken {
    /// Reads the token from `path`: an owner-only file holding at least 32 bytes once
    /// surrounding whitespace is trimmed.
    pub fn read(path: &Path) -> Result<AdminToken, AdminTokenError> {
        Ok(AdminToken(files::read_token_file(path)?))
    }

    /// Creates `path` with a fresh random token unless it exists; `true` when created.
    pub fn create_if_missing(path: &Path) -> Result<bool, AdminTokenError> {
        let err = |source| AdminTokenError::Create {
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

//! The admin API token: a random secret created at first start in `admin.token_file`
//! (mode 0600, never overwritten), read back with surrounding whitespace ignored and
//! compared in constant time.

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
    #[error("cannot read admin token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot create admin token file {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error("admin token file {path} is empty")]
    Empty { path: String },
}

impl AdminToken {
    /// Reads the token from `path`.
    pub fn read(path: &Path) -> Result<AdminToken, AdminTokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| AdminTokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(AdminTokenError::Empty {
                path: path.display().to_string(),
            });
        }
        Ok(AdminToken(token.to_owned()))
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

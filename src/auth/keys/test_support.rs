//! What the key tests share: a fixed clock, key files with a chosen mode, and a token
//! signed and verified with a key, to prove that a loaded key works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::DecodingKey;

use super::{Key, KeyAlgorithm};

/// 2026-11-26T17:00:00Z.
pub(super) fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_712_400)
}

/// Writes `contents` to `dir/name` with the permission bits `mode`.
pub(super) fn write_file(dir: &Path, name: &str, contents: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, contents).unwrap();
    set_mode(&path, mode);
    path
}

pub(super) fn set_mode(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub(super) struct Claims {
    sub: String,
    exp: u64,
}

pub(super) fn claims() -> Claims {
    Claims {
        sub: "alice".into(),
        exp: 4_000_000_000,
    }
}

/// A token of [`claims`] signed with `key`, its kid in the header.
pub(super) fn sign(key: &Key) -> String {
    let mut header = jsonwebtoken::Header::new(key.alg.jwt_algorithm());
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &claims(), &key.encoding).unwrap()
}

/// The claims of `token` checked with `decoding`; panics when it does not verify.
pub(super) fn verify(token: &str, decoding: &DecodingKey, alg: KeyAlgorithm) -> Claims {
    let validation = jsonwebtoken::Validation::new(alg.jwt_algorithm());
    jsonwebtoken::decode::<Claims>(token, decoding, &validation)
        .unwrap()
        .claims
}

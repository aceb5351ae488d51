//! The signing and verification key set read from `jwt.keys_dir`: one file per key
//! (`<kid>.key` for HS256, `<kid>.pem` PKCS#8 for EdDSA/ES256/RS256), key generation
//! for first start and `authd keygen`, and the public JWKS.
//!
//! This file holds the public surface ([`KeySet`], [`Key`], [`KeyError`]); the algorithms
//! and JWKs live in `algorithm`, file contents are parsed in `parse`, the folder is read
//! in `folder`, and new keys are made in `generate`.

mod algorithm;
mod folder;
mod generate;
mod parse;
#[cfg(test)]
mod test_support;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use jsonwebtoken::DecodingKeyKind;
use sha2::{Digest as _, Sha256};

pub use algorithm::KeyAlgorithm;
pub use folder::is_valid_kid;
pub use generate::{ensure_key, generate_key};
pub use parse::MIN_HMAC_KEY_BYTES;

/// One key of the set. Its secret parts are never printed.
#[derive(Clone)]
pub struct Key {
    pub kid: String,
    pub alg: KeyAlgorithm,
    pub encoding: jsonwebtoken::EncodingKey,
    pub decoding: jsonwebtoken::DecodingKey,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// The public JWK of an asymmetric key (RFC 7517/7518/8037), built from its decoding
    /// (public) half only; `None` for HMAC keys, whose only form is the secret.
    pub fn jwk(&self) -> Option<serde_json::Value> {
        algorithm::public_jwk(&self.kid, self.alg, &self.decoding)
    }
}

/// All keys of `jwt.keys_dir`, and which one signs.
pub struct KeySet {
    /// Sorted by kid (byte order), kids unique.
    keys: Vec<Key>,
    /// Index into `keys` of the signing key.
    signing: usize,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys)
            .field("signing_kid", &self.signing_key().kid)
            .finish()
    }
}

/// Why a key set could not be loaded or a key not be written. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot access {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("jwt.keys_dir: {0}")]
    File(crate::files::FileProblem),
    #[error("invalid key file {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "key file {} has an invalid name: the key id (the file name without `.key`/`.pem`) \
         must be 1 to 64 characters of A-Z, a-z, 0-9, `.`, `_` and `-`",
        path.display()
    )]
    InvalidKid { path: PathBuf },
    #[error(
        "key file {} is accessible by group or others (mode {mode:04o}); \
         restrict it with `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "key id {kid:?} is used by two files, {} and {}; remove or rename one",
        first.display(),
        second.display()
    )]
    DuplicateKid {
        kid: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error(
        "no {alg} key in {}: add one with `authd keygen --alg {alg}` or change jwt.algorithm",
        dir.display()
    )]
    NoKeyForAlgorithm { dir: PathBuf, alg: KeyAlgorithm },
    #[error("jwt.signing_kid {kid:?} names no key file in {}", dir.display())]
    UnknownSigningKid { kid: String, dir: PathBuf },
    #[error("jwt.signing_kid {kid:?} is a {key_alg} key, but jwt.algorithm is {alg}")]
    SigningKidAlgorithm {
        kid: String,
        key_alg: KeyAlgorithm,
        alg: KeyAlgorithm,
    },
    #[error("cannot generate a {alg} key in {}: {reason}", dir.display())]
    Generate {
        dir: PathBuf,
        alg: KeyAlgorithm,
        reason: String,
    },
}

impl KeySet {
    /// Reads every key file of `dir`. Each key verifies tokens of its own algorithm; the
    /// signing key is `signing_kid` when given (an empty string counts as none), else the
    /// `algorithm` key whose kid sorts last.
    pub fn load(
        dir: &Path,
        algorithm: KeyAlgorithm,
        signing_kid: Option<&str>,
    ) -> Result<KeySet, KeyError> {
        let keys = folder::read_keys(dir)?;
        let signing = match signing_kid.filter(|kid| !kid.is_empty()) {
            Some(kid) => {
                let index = keys.iter().position(|key| key.kid == kid).ok_or_else(|| {
                    KeyError::UnknownSigningKid {
                        kid: kid.to_owned(),
                        dir: dir.to_owned(),
                    }
                })?;
                if keys[index].alg != algorithm {
                    return Err(KeyError::SigningKidAlgorithm {
                        kid: kid.to_owned(),
                        key_alg: keys[index].alg,
                        alg: algorithm,
                    });
                }
                index
            }
            None => keys
                .iter()
                .rposition(|key| key.alg == algorithm)
                .ok_or_else(|| KeyError::NoKeyForAlgorithm {
                    dir: dir.to_owned(),
                    alg: algorithm,
                })?,
        };
        Ok(KeySet { keys, signing })
    }

    /// The key new tokens are signed with.
    pub fn signing_key(&self) -> &Key {
        &self.keys[self.signing]
    }

    /// The key named `kid`, if the set holds one.
    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys
            .binary_search_by(|key| key.kid.as_str().cmp(kid))
            .ok()
            .map(|index| &self.keys[index])
    }

    /// Every kid of the set, sorted.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|key| key.kid.as_str()).collect()
    }

    /// Every key of the set, sorted by kid.
    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter()
    }

    /// The public JWK Set (`{"keys":[...]}`) of every asymmetric key, sorted by kid.
    /// HMAC keys never appear.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self.keys.iter().filter_map(Key::jwk).collect();
        serde_json::json!({ "keys": keys })
    }

    /// A fingerprint of the set (lower-case hex SHA-256) over every key's kid, algorithm
    /// and public part, in kid order: equal exactly when two instances hold the same keys
    /// (which one signs is not part of it). Cluster members publish it, so it must never
    /// reveal a secret: an HMAC key enters only as a domain-labelled hash of it.
    pub fn fingerprint(&self) -> String {
        let mut outer = Sha256::new();
        outer.update(b"authd keyset fingerprint v1\n");
        for key in &self.keys {
            let public = public_part(key);
            // Length-prefixed fields: no two different sets feed the same bytes.
            for field in [key.kid.as_bytes(), key.alg.as_str().as_bytes(), &public] {
                outer.update((field.len() as u64).to_be_bytes());
                outer.update(field);
            }
        }
        outer
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

/// What a key contributes to [`KeySet::fingerprint`]: an asymmetric key's public JWK (what
/// `/v1/jwks` publishes anyway); for an HMAC key, whose only form is the secret, the
/// SHA-256 of a domain label and the secret, so the fingerprint is a hash of a hash and
/// no other use of SHA-256 over the bare key can be matched against it.
fn public_part(key: &Key) -> Vec<u8> {
    if key.alg.is_asymmetric()
        && let Some(serde_json::Value::Object(jwk)) = key.jwk()
    {
        // Members sorted by name: the same bytes whatever order the JWK was built in, so
        // two authd versions holding one key agree.
        let mut members: Vec<(&String, String)> = jwk
            .iter()
            .map(|(name, value)| (name, value.to_string()))
            .collect();
        members.sort();
        return serde_json::json!(members).to_string().into_bytes();
    }
    let mut inner = Sha256::new();
    inner.update(b"authd keyset fingerprint v1: hmac key\0");
    match key.decoding.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => inner.update(bytes),
        DecodingKeyKind::RsaModulusExponent { n, e } => {
            inner.update(n);
            inner.update(e);
        }
    }
    inner.finalize().to_vec()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use std::time::Duration;

    use super::test_support::{t0, write_file};
    use super::*;

    #[test]
    fn newest_key_of_the_algorithm_signs_and_every_key_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let old_ed = generate_key(dir.path(), KeyAlgorithm::EdDSA, t0()).unwrap();
        let new_ed = generate_key(
            dir.path(),
            KeyAlgorithm::EdDSA,
            t0() + Duration::from_secs(60),
        )
        .unwrap();
        let hmac = generate_key(
            dir.path(),
            KeyAlgorithm::HS256,
            t0() + Duration::from_secs(120),
        )
        .unwrap();

        let set = KeySet::load(dir.path(), KeyAlgorithm::EdDSA, None).unwrap();

        assert_eq!(set.signing_key().kid, new_ed);
        assert_eq!(set.kids(), [old_ed.as_str(), &new_ed, &hmac]);
        assert_eq!(set.get(&hmac).unwrap().alg, KeyAlgorithm::HS256);
        assert_eq!(set.get(&old_ed).unwrap().alg, KeyAlgorithm::EdDSA);
        assert!(set.get("nope").is_none());
        let kids: Vec<_> = set.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|jwk| jwk["kid"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kids, [old_ed, new_ed]);
    }

    #[test]
    fn kids_sort_in_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        let secret = STANDARD.encode([7u8; 32]);
        for kid in ["b", "B", "a-2", "a.1", "a_3"] {
            write_file(dir.path(), &format!("{kid}.key"), &secret, 0o600);
        }

        let set = KeySet::load(dir.path(), KeyAlgorithm::HS256, None).unwrap();

        assert_eq!(set.kids(), ["B", "a-2", "a.1", "a_3", "b"]);
        assert_eq!(set.signing_key().kid, "b");
    }

    #[test]
    fn signing_kid_pins_the_signing_key() {
        let dir = tempfile::tempdir().unwrap();
        let old = generate_key(dir.path(), KeyAlgorithm::ES256, t0()).unwrap();
        let new = generate_key(
            dir.path(),
            KeyAlgorithm::ES256,
            t0() + Duration::from_secs(1),
        )
        .unwrap();
        let hmac = generate_key(dir.path(), KeyAlgorithm::HS256, t0()).unwrap();

        let pinned = KeySet::load(dir.path(), KeyAlgorithm::ES256, Some(&old)).unwrap();
        let unpinned = KeySet::load(dir.path(), KeyAlgorithm::ES256, Some("")).unwrap();
        let unknown = KeySet::load(dir.path(), KeyAlgorithm::ES256, Some("missing")).unwrap_err();
        let wrong_alg = KeySet::load(dir.path(), KeyAlgorithm::ES256, Some(&hmac)).unwrap_err();

        assert_eq!(pinned.signing_key().kid, old);
        assert!(pinned.get(&new).is_some(), "the new key is still published");
        assert_eq!(unpinned.signing_key().kid, new);
        assert!(matches!(unknown, KeyError::UnknownSigningKid { ref kid, .. } if kid == "missing"));
        assert!(matches!(wrong_alg, KeyError::SigningKidAlgorithm { .. }));
        assert!(wrong_alg.to_string().contains("HS256"), "{wrong_alg}");
    }

    #[test]
    fn no_key_for_the_algorithm_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        generate_key(dir.path(), KeyAlgorithm::HS256, t0()).unwrap();

        let err = KeySet::load(dir.path(), KeyAlgorithm::EdDSA, None).unwrap_err();

        assert!(matches!(
            err,
            KeyError::NoKeyForAlgorithm {
                alg: KeyAlgorithm::EdDSA,
                ..
            }
        ));
        assert!(
            err.to_string().contains("authd keygen --alg EdDSA"),
            "{err}"
        );
    }

    #[test]
    fn debug_output_shows_no_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let secret = STANDARD.encode([0x42u8; 32]);
        write_file(dir.path(), "k.key", &secret, 0o600);
        let set = KeySet::load(dir.path(), KeyAlgorithm::HS256, None).unwrap();

        let printed = format!("{set:?}");

        assert!(
            printed.contains("\"k\"") && printed.contains("HS256"),
            "{printed}"
        );
        assert!(
            !printed.contains("66, 66") && !printed.contains(&secret[..8]),
            "{printed}"
        );
    }

    #[test]
    fn the_fingerprint_is_equal_exactly_when_the_key_sets_are() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        let secret = STANDARD.encode([7u8; 32]);
        for dir in [&one, &two] {
            write_file(dir.path(), "h1.key", &secret, 0o600);
        }
        let ed = generate_key(one.path(), KeyAlgorithm::EdDSA, t0()).unwrap();
        std::fs::copy(
            one.path().join(format!("{ed}.pem")),
            two.path().join(format!("{ed}.pem")),
        )
        .unwrap();
        let load = |dir: &Path, alg| KeySet::load(dir, alg, None).unwrap().fingerprint();

        let first = load(one.path(), KeyAlgorithm::HS256);
        assert_eq!(first.len(), 64, "hex SHA-256: {first}");
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
        assert_eq!(first, load(two.path(), KeyAlgorithm::HS256), "same files");
        assert_eq!(
            first,
            load(one.path(), KeyAlgorithm::EdDSA),
            "which key signs is not part of the set"
        );

        // Another secret under the same kid.
        write_file(two.path(), "h1.key", &STANDARD.encode([8u8; 32]), 0o600);
        assert_ne!(first, load(two.path(), KeyAlgorithm::HS256));

        // A key added, then the same key under another kid.
        generate_key(one.path(), KeyAlgorithm::ES256, t0()).unwrap();
        let added = load(one.path(), KeyAlgorithm::HS256);
        assert_ne!(first, added);
        std::fs::rename(one.path().join("h1.key"), one.path().join("h2.key")).unwrap();
        assert_ne!(added, load(one.path(), KeyAlgorithm::HS256));
    }

    #[test]
    fn the_fingerprint_reveals_no_hmac_secret() {
        use sha2::{Digest as _, Sha256};
        let dir = tempfile::tempdir().unwrap();
        let raw = [0x42u8; 32];
        write_file(dir.path(), "k.key", &STANDARD.encode(raw), 0o600);
        let set = KeySet::load(dir.path(), KeyAlgorithm::HS256, None).unwrap();

        let fingerprint = set.fingerprint();

        let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
        assert!(!fingerprint.contains(&hex(&raw)[..16]), "{fingerprint}");
        assert!(!fingerprint.contains(&STANDARD.encode(raw)[..16]));
        // Not the bare hash of the key either (which a key reused elsewhere could match).
        assert_ne!(fingerprint, hex(&Sha256::digest(raw)));
    }
}

//! The MFA key (`mfa.key_file`): 32 random bytes, base64 in an owner-only file made at
//! first start. It seals TOTP secrets (XChaCha20-Poly1305, the account id as associated
//! data, so a sealed secret moved to another account does not open) and keys the MACs that
//! recovery codes are stored as (plain hashes of 60-bit codes could be brute-forced from a
//! backup). Its fingerprint, never the key, goes into backups and the cluster's record.

use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

use crate::files;

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
/// Binds sealed secrets to their use and layout (a later layout gets another label).
const SEAL_LABEL: &[u8] = b"authd totp secret v1";

/// The key; never printed.
#[derive(Clone)]
pub struct MfaKey {
    cipher: XChaCha20Poly1305,
    /// Derived from the key, so that the MACs share nothing with the cipher's use of it.
    recovery_mac_key: [u8; 32],
    fingerprint: String,
}

impl std::fmt::Debug for MfaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfaKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MfaKeyError {
    #[error("mfa.key_file: {0}")]
    File(files::FileProblem),
    #[error("mfa.key_file {path}: expected 32 bytes in base64")]
    Malformed { path: String },
    #[error("cannot create mfa.key_file {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
}

/// A sealed secret that does not open: another key, another account, or edited bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a stored second-factor secret cannot be decrypted with mfa.key_file")]
pub struct Unsealable;

type HmacSha256 = Hmac<Sha256>;

impl MfaKey {
    /// The key in `bytes`.
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> MfaKey {
        let mut derive =
            <HmacSha256 as Mac>::new_from_slice(&bytes).unwrap_or_else(|_| unreachable!());
        derive.update(b"authd recovery codes v1");
        let recovery_mac_key = derive.finalize().into_bytes().into();
        let mut print = Sha256::new();
        print.update(b"authd mfa key fingerprint v1\0");
        print.update(bytes);
        let fingerprint = print.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        MfaKey {
            cipher: XChaCha20Poly1305::new(&bytes.into()),
            recovery_mac_key,
            fingerprint,
        }
    }

    /// Reads the key file: owner-only, base64 of exactly 32 bytes (whitespace around ignored).
    pub fn read(path: &Path) -> Result<MfaKey, MfaKeyError> {
        files::check_secret_file(path).map_err(MfaKeyError::File)?;
        let text = std::fs::read_to_string(path).map_err(|source| {
            MfaKeyError::File(files::FileProblem::Io {
                path: path.to_owned(),
                source,
            })
        })?;
        let malformed = || MfaKeyError::Malformed {
            path: path.display().to_string(),
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| malformed())?;
        let bytes: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| malformed())?;
        Ok(MfaKey::from_bytes(bytes))
    }

    /// Creates the key file with a fresh key unless it exists; `true` when created.
    pub fn create_if_missing(path: &Path) -> Result<bool, MfaKeyError> {
        let err = |source| MfaKeyError::Create {
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent() {
            files::create_private_dir(parent).map_err(err)?;
        }
        let mut bytes = [0u8; KEY_BYTES];
        crate::random::fill(&mut bytes);
        let contents = format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        match files::write_private_file_new(path, contents.as_bytes()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    /// A one-way fingerprint (32 hex digits): equal exactly when the keys are.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// `secret` encrypted for the account `account_id`: nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, account_id: u64, secret: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        crate::random::fill(&mut nonce);
        let aad = associated_data(account_id);
        let payload = Payload {
            msg: secret,
            aad: &aad,
        };
        // Encryption fails only for messages beyond what `u64` counts; a secret is 20 bytes.
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), payload)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The secret [`MfaKey::seal`] sealed for `account_id`.
    pub fn open(&self, account_id: u64, sealed: &[u8]) -> Result<Vec<u8>, Unsealable> {
        let (nonce, ciphertext) = sealed
            .split_first_chunk::<NONCE_BYTES>()
            .ok_or(Unsealable)?;
        let aad = associated_data(account_id);
        self.cipher
            .decrypt(
                &XNonce::from(*nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| Unsealable)
    }

    /// What the recovery code `code` (normalised) of `account_id` is stored as.
    pub fn recovery_mac(&self, account_id: u64, code: &str) -> [u8; 32] {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.recovery_mac_key)
            .unwrap_or_else(|_| unreachable!());
        mac.update(&account_id.to_be_bytes());
        mac.update(code.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

fn associated_data(account_id: u64) -> Vec<u8> {
    let mut aad = SEAL_LABEL.to_vec();
    aad.extend_from_slice(&account_id.to_be_bytes());
    aad
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_for_its_account_and_key() {
        let key = MfaKey::from_bytes([7; 32]);
        let sealed = key.seal(42, b"twenty bytes secret!");
        assert!(!sealed.windows(6).any(|w| w == b"twenty"));
        assert_eq!(key.open(42, &sealed).unwrap(), b"twenty bytes secret!");
        assert_eq!(key.open(43, &sealed), Err(Unsealable));
        assert_eq!(
            MfaKey::from_bytes([8; 32]).open(42, &sealed),
            Err(Unsealable)
        );
        let mut edited = sealed.clone();
        edited[30] ^= 1;
        assert_eq!(key.open(42, &edited), Err(Unsealable));
        assert_eq!(key.open(42, &sealed[..10]), Err(Unsealable));
        assert_ne!(
            key.seal(42, b"x"),
            key.seal(42, b"x"),
            "fresh nonce each time"
        );
    }

    #[test]
    fn recovery_macs_depend_on_key_account_and_code() {
        let key = MfaKey::from_bytes([7; 32]);
        let mac = key.recovery_mac(1, "abcdefgh2345");
        assert_eq!(mac, key.recovery_mac(1, "abcdefgh2345"));
        assert_ne!(mac, key.recovery_mac(2, "abcdefgh2345"));
        assert_ne!(mac, key.recovery_mac(1, "abcdefgh2346"));
        assert_ne!(
            mac,
            MfaKey::from_bytes([8; 32]).recovery_mac(1, "abcdefgh2345")
        );
    }

    #[test]
    fn the_key_file_is_made_private_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/mfa.key");
        assert!(MfaKey::create_if_missing(&path).unwrap());
        assert!(!MfaKey::create_if_missing(&path).unwrap());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = MfaKey::read(&path).unwrap();
        assert_eq!(
            first.fingerprint(),
            MfaKey::read(&path).unwrap().fingerprint()
        );
        assert_eq!(first.fingerprint().len(), 32);
        std::fs::write(&path, "c2hvcnQ=\n").unwrap();
        assert!(matches!(
            MfaKey::read(&path),
            Err(MfaKeyError::Malformed { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(MfaKey::read(&path), Err(MfaKeyError::File(_))));
    }
}

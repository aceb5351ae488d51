//! The signing and verification key set read from `jwt.keys_dir`: one file per key
//! (`<kid>.key` for HS256, `<kid>.pem` PKCS#8 for EdDSA/ES256/RS256), key generation
//! for first start and `authd keygen`, and the public JWKS.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD, URL_SAFE_NO_PAD,
};
use jsonwebtoken::{AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::der::pem::LineEnding;
use p256::pkcs8::der::zeroize::Zeroizing;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, ObjectIdentifier, PrivateKeyInfo};
use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPrivateKey};
use rsa::traits::PublicKeyParts;

/// `id-Ed25519` (RFC 8410).
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// `id-ecPublicKey` (RFC 5480).
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `secp256r1` / P-256 (RFC 5480).
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// `rsaEncryption` (RFC 8017).
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Standard base64, padding optional (key files are written by hand, too).
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Shortest HMAC secret accepted, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_HMAC_KEY_BYTES: usize = 32;
/// Size of a generated HMAC secret, in bytes.
const GENERATED_HMAC_KEY_BYTES: usize = 32;
/// Size of a generated RSA key, in bits; also the smallest accepted.
const RSA_BITS: usize = 2048;
/// Largest RSA key the verifier accepts (`rsa::RsaPublicKey::MAX_SIZE`).
const RSA_MAX_BITS: usize = 4096;
/// Key files are small; anything larger is not a key file.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
/// Longest kid accepted.
const MAX_KID_LEN: usize = 64;
/// Highest same-second suffix of generated kids (`-01` … `-99`, two digits keep them ordered).
const MAX_SAME_SECOND_SUFFIX: u32 = 99;

/// The JWS algorithms authd signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    HS256,
    EdDSA,
    ES256,
    RS256,
}

impl KeyAlgorithm {
    /// Every supported algorithm, in the order they are documented.
    pub const ALL: [KeyAlgorithm; 4] = [
        KeyAlgorithm::HS256,
        KeyAlgorithm::EdDSA,
        KeyAlgorithm::ES256,
        KeyAlgorithm::RS256,
    ];

    /// The JWS `alg` name (RFC 7518 / RFC 8037).
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyAlgorithm::HS256 => "HS256",
            KeyAlgorithm::EdDSA => "EdDSA",
            KeyAlgorithm::ES256 => "ES256",
            KeyAlgorithm::RS256 => "RS256",
        }
    }

    /// Parses an exact JWS `alg` name (`"HS256"`, `"EdDSA"`, `"ES256"`, `"RS256"`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.as_str() == s)
    }

    /// The matching jsonwebtoken algorithm.
    pub fn jwt_algorithm(&self) -> jsonwebtoken::Algorithm {
        match self {
            KeyAlgorithm::HS256 => jsonwebtoken::Algorithm::HS256,
            KeyAlgorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            KeyAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            KeyAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        }
    }

    /// Extension of this algorithm's key files: `key` for HS256, `pem` otherwise.
    pub fn file_extension(&self) -> &'static str {
        match self {
            KeyAlgorithm::HS256 => "key",
            KeyAlgorithm::EdDSA | KeyAlgorithm::ES256 | KeyAlgorithm::RS256 => "pem",
        }
    }

    /// Whether keys of this algorithm have a public half (and so appear in the JWKS).
    pub fn is_asymmetric(&self) -> bool {
        !matches!(self, KeyAlgorithm::HS256)
    }

    fn family(&self) -> AlgorithmFamily {
        match self {
            KeyAlgorithm::HS256 => AlgorithmFamily::Hmac,
            KeyAlgorithm::EdDSA => AlgorithmFamily::Ed,
            KeyAlgorithm::ES256 => AlgorithmFamily::Ec,
            KeyAlgorithm::RS256 => AlgorithmFamily::Rsa,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
        if self.decoding.family() != self.alg.family() {
            return None;
        }
        let mut jwk = match (self.alg, self.decoding.kind()) {
            (KeyAlgorithm::HS256, _) => return None,
            (KeyAlgorithm::EdDSA, DecodingKeyKind::SecretOrDer(public)) => {
                let public = <[u8; 32]>::try_from(public.as_slice()).ok()?;
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(public),
                })
            }
            (KeyAlgorithm::ES256, DecodingKeyKind::SecretOrDer(sec1)) => {
                let point = p256::PublicKey::from_sec1_bytes(sec1)
                    .ok()?
                    .to_encoded_point(false);
                serde_json::json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(point.x()?),
                    "y": URL_SAFE_NO_PAD.encode(point.y()?),
                })
            }
            (KeyAlgorithm::RS256, DecodingKeyKind::RsaModulusExponent { n, e }) => rsa_jwk(n, e),
            (KeyAlgorithm::RS256, DecodingKeyKind::SecretOrDer(pkcs1)) => {
                let public = rsa::RsaPublicKey::from_pkcs1_der(pkcs1).ok()?;
                rsa_jwk(&public.n().to_bytes_be(), &public.e().to_bytes_be())
            }
            _ => return None,
        };
        let object = jwk.as_object_mut()?;
        object.insert("kid".into(), self.kid.clone().into());
        object.insert("alg".into(), self.alg.as_str().into());
        object.insert("use".into(), "sig".into());
        Some(jwk)
    }
}

/// RSA JWK parameters: unsigned big-endian integers without leading zero bytes (RFC 7518 §6.3.1).
fn rsa_jwk(n: &[u8], e: &[u8]) -> serde_json::Value {
    fn unsigned(bytes: &[u8]) -> String {
        let start = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len().saturating_sub(1));
        URL_SAFE_NO_PAD.encode(&bytes[start..])
    }
    serde_json::json!({ "kty": "RSA", "n": unsigned(n), "e": unsigned(e) })
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
        let keys = read_keys(dir)?;
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
}

/// Creates a key for `algorithm` in `dir` when it holds none; returns the new kid.
/// Existing key files are parsed as by [`KeySet::load`], and a bad one is an error.
pub fn ensure_key(
    dir: &Path,
    algorithm: KeyAlgorithm,
    now: SystemTime,
) -> Result<Option<String>, KeyError> {
    let keys = match read_keys(dir) {
        Ok(keys) => keys,
        Err(KeyError::Io { path, source })
            if path == dir && source.kind() == io::ErrorKind::NotFound =>
        {
            Vec::new()
        }
        Err(err) => return Err(err),
    };
    if keys.iter().any(|key| key.alg == algorithm) {
        return Ok(None);
    }
    generate_key(dir, algorithm, now).map(Some)
}

/// Writes a fresh key for `algorithm` into `dir` (mode 0600) and returns its kid.
///
/// `dir` is created (mode 0700) when missing. The kid is the UTC time `YYYYMMDDTHHMMSSZ`,
/// with a suffix `-01`, `-02`, … when that second is taken, so newer keys sort last.
/// An existing file is never overwritten.
pub fn generate_key(
    dir: &Path,
    algorithm: KeyAlgorithm,
    now: SystemTime,
) -> Result<String, KeyError> {
    create_dir(dir)?;
    let generate_error = |reason: String| KeyError::Generate {
        dir: dir.to_owned(),
        alg: algorithm,
        reason,
    };
    let contents = new_key_contents(algorithm).map_err(generate_error)?;

    // Written to a hidden temporary file first (ignored by `load`), then linked to its
    // final name: a crash never leaves a half-written key, and linking never overwrites.
    let temp = dir.join(format!(
        ".keygen-{}.tmp",
        random_hex(8).map_err(generate_error)?
    ));
    let result = write_new_file(&temp, contents.as_bytes()).and_then(|()| {
        let base = kid_for_time(now);
        loop {
            let kid = next_free_kid(dir, &base)?.ok_or_else(|| {
                generate_error(format!(
                    "more than {MAX_SAME_SECOND_SUFFIX} keys generated within one second"
                ))
            })?;
            let path = dir.join(format!("{kid}.{}", algorithm.file_extension()));
            match fs::hard_link(&temp, &path) {
                Ok(()) => return Ok(kid),
                // Taken in the meantime (another keygen): pick the next suffix.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(KeyError::Io { path, source }),
            }
        }
    });
    // Best effort: the temporary name is hidden and ignored if it stays behind.
    let _ = fs::remove_file(&temp);
    let kid = result?;
    if let Ok(dir_handle) = fs::File::open(dir) {
        // Best effort, makes the new directory entry durable where supported.
        let _ = dir_handle.sync_all();
    }
    Ok(kid)
}

/// Whether `kid` is a valid key id: 1 to 64 characters of `[A-Za-z0-9._-]`.
pub fn is_valid_kid(kid: &str) -> bool {
    (1..=MAX_KID_LEN).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Reads every key file of `dir`, sorted by kid.
fn read_keys(dir: &Path) -> Result<Vec<Key>, KeyError> {
    let io_error = |source| KeyError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        if let Some(file) = key_file(&path)? {
            files.push(file);
        }
    }
    // Sorted so that errors and duplicate reports are deterministic.
    files.sort_by(|a, b| a.path.cmp(&b.path));

    let mut keys: Vec<(Key, PathBuf)> = Vec::with_capacity(files.len());
    for file in files {
        let key = read_key(&file)?;
        if let Some((_, first)) = keys.iter().find(|(other, _)| other.kid == key.kid) {
            return Err(KeyError::DuplicateKid {
                kid: key.kid,
                first: first.clone(),
                second: file.path,
            });
        }
        keys.push((key, file.path));
    }
    keys.sort_by(|(a, _), (b, _)| a.kid.cmp(&b.kid));
    Ok(keys.into_iter().map(|(key, _)| key).collect())
}

/// What kind of key file a name says it is.
enum FileKind {
    Hmac,
    Pkcs8,
}

struct KeyFile {
    path: PathBuf,
    kid: String,
    kind: FileKind,
}

/// Classifies a directory entry: `Some` for `<kid>.key` and `<kid>.pem`, `None` for
/// anything else (READMEs, editor backups, dotfiles); an invalid kid is an error.
fn key_file(path: &Path) -> Result<Option<KeyFile>, KeyError> {
    let Some(name) = path.file_name() else {
        return Ok(None);
    };
    if name.as_encoded_bytes().starts_with(b".") {
        return Ok(None);
    }
    let kind = match path.extension().and_then(|ext| ext.to_str()) {
        Some("key") => FileKind::Hmac,
        Some("pem") => FileKind::Pkcs8,
        _ => return Ok(None),
    };
    let kid = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .filter(|kid| is_valid_kid(kid))
        .ok_or_else(|| KeyError::InvalidKid {
            path: path.to_owned(),
        })?;
    Ok(Some(KeyFile {
        kid: kid.to_owned(),
        path: path.to_owned(),
        kind,
    }))
}

fn read_key(file: &KeyFile) -> Result<Key, KeyError> {
    let path = &file.path;
    let invalid = |reason: String| KeyError::Invalid {
        path: path.clone(),
        reason,
    };
    let contents = read_key_file(path)?;
    let (alg, encoding, decoding) = match file.kind {
        FileKind::Hmac => parse_hmac(&contents),
        FileKind::Pkcs8 => parse_pkcs8(&contents),
    }
    .map_err(invalid)?;
    self_test(alg, &encoding, &decoding).map_err(invalid)?;
    Ok(Key {
        kid: file.kid.clone(),
        alg,
        encoding,
        decoding,
    })
}

/// Reads a key file after checking that it is a regular file only its owner can access.
fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let io_error = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    // Checked before opening: opening a FIFO would block.
    if !fs::metadata(path).map_err(io_error)?.is_file() {
        return Err(KeyError::Invalid {
            path: path.to_owned(),
            reason: "not a regular file".into(),
        });
    }
    let file = fs::File::open(path).map_err(io_error)?;
    let metadata = file.metadata().map_err(io_error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    if metadata.len() > MAX_KEY_FILE_BYTES {
        return Err(KeyError::Invalid {
            path: path.to_owned(),
            reason: format!("larger than {MAX_KEY_FILE_BYTES} bytes, not a key file"),
        });
    }
    let mut contents = Zeroizing::new(Vec::new());
    file.take(MAX_KEY_FILE_BYTES)
        .read_to_end(&mut contents)
        .map_err(io_error)?;
    Ok(contents)
}

type ParsedKey = (KeyAlgorithm, EncodingKey, DecodingKey);

/// An HS256 secret: standard base64 (padding optional, surrounding whitespace ignored).
fn parse_hmac(contents: &[u8]) -> Result<ParsedKey, String> {
    // The decoder's own errors would quote the offending byte, i.e. part of the secret.
    let secret = Zeroizing::new(
        BASE64_LENIENT
            .decode(contents.trim_ascii())
            .map_err(|_| "not valid standard base64 (expected one line of A-Z, a-z, 0-9, +, /)")?,
    );
    if secret.len() < MIN_HMAC_KEY_BYTES {
        return Err(format!(
            "HS256 secret has {} bytes, at least {MIN_HMAC_KEY_BYTES} are required",
            secret.len()
        ));
    }
    Ok((
        KeyAlgorithm::HS256,
        EncodingKey::from_secret(&secret),
        DecodingKey::from_secret(&secret),
    ))
}

/// A PKCS#8 private key in PEM; the algorithm comes from the key itself.
fn parse_pkcs8(contents: &[u8]) -> Result<ParsedKey, String> {
    let text = std::str::from_utf8(contents).map_err(|_| "not a PEM text file".to_owned())?;
    let text = Zeroizing::new(format!("{}\n", text.trim()));
    let label = p256::pkcs8::der::pem::decode_label(text.as_bytes())
        .map_err(|err| format!("not a PEM-encoded private key ({err})"))?;
    match label {
        "PRIVATE KEY" => {}
        "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE" => {
            return Err(format!(
                "holds a `{label}` block; authd needs the PKCS#8 private key"
            ));
        }
        "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
            return Err(format!(
                "holds a `{label}` block (PKCS#1/SEC1), authd reads PKCS#8 `PRIVATE KEY` files; \
                 convert it with `openssl pkcs8 -topk8 -nocrypt -in OLD -out NEW`"
            ));
        }
        "ENCRYPTED PRIVATE KEY" => {
            return Err("encrypted private keys are not supported; \
                 decrypt it with `openssl pkcs8 -in OLD -out NEW`"
                .into());
        }
        other => {
            return Err(format!(
                "expected a PKCS#8 `PRIVATE KEY` PEM block, found `{other}`"
            ));
        }
    }
    let (_, document) = p256::pkcs8::SecretDocument::from_pem(&text)
        .map_err(|err| format!("not a PEM-encoded private key ({err})"))?;
    let der = document.as_bytes();
    let info =
        PrivateKeyInfo::try_from(der).map_err(|err| format!("not a PKCS#8 private key ({err})"))?;
    match info.algorithm.oid {
        OID_ED25519 => {
            let key = ed25519_dalek::SigningKey::from_pkcs8_der(der)
                .map_err(|err| format!("invalid Ed25519 private key ({err})"))?;
            let canonical = key
                .to_pkcs8_der()
                .map_err(|err| format!("cannot re-encode Ed25519 key ({err})"))?;
            Ok((
                KeyAlgorithm::EdDSA,
                EncodingKey::from_ed_der(canonical.as_bytes()),
                DecodingKey::from_ed_der(key.verifying_key().as_bytes()),
            ))
        }
        OID_EC_PUBLIC_KEY => {
            match info.algorithm.parameters_oid() {
                Ok(OID_P256) => {}
                Ok(curve) => {
                    return Err(format!(
                        "EC key on curve {curve}; authd supports P-256 (ES256) only"
                    ));
                }
                Err(_) => return Err("EC key without a named curve".into()),
            }
            let key = p256::SecretKey::from_pkcs8_der(der)
                .map_err(|err| format!("invalid P-256 private key ({err})"))?;
            let canonical = key
                .to_pkcs8_der()
                .map_err(|err| format!("cannot re-encode P-256 key ({err})"))?;
            let public = key.public_key().to_encoded_point(false);
            Ok((
                KeyAlgorithm::ES256,
                EncodingKey::from_ec_der(canonical.as_bytes()),
                DecodingKey::from_ec_der(public.as_bytes()),
            ))
        }
        OID_RSA => {
            let key = rsa::RsaPrivateKey::from_pkcs8_der(der)
                .map_err(|err| format!("invalid RSA private key ({err})"))?;
            let bits = key.n().bits();
            if !(RSA_BITS..=RSA_MAX_BITS).contains(&bits) {
                return Err(format!(
                    "RSA key has {bits} bits; authd accepts {RSA_BITS} to {RSA_MAX_BITS}"
                ));
            }
            let pkcs1 = key
                .to_pkcs1_der()
                .map_err(|err| format!("cannot re-encode RSA key ({err})"))?;
            Ok((
                KeyAlgorithm::RS256,
                EncodingKey::from_rsa_der(pkcs1.as_bytes()),
                DecodingKey::from_rsa_raw_components(
                    &key.n().to_bytes_be(),
                    &key.e().to_bytes_be(),
                ),
            ))
        }
        other => Err(format!(
            "unsupported key type (algorithm OID {other}); authd takes Ed25519 (EdDSA), \
             P-256 (ES256) or RSA (RS256) keys"
        )),
    }
}

/// Signs and verifies a probe, so that a key that parses but cannot sign or verify
/// stops start-up instead of failing on the first login.
fn self_test(
    alg: KeyAlgorithm,
    encoding: &EncodingKey,
    decoding: &DecodingKey,
) -> Result<(), String> {
    const PROBE: &[u8] = b"authd key self-test";
    let algorithm = alg.jwt_algorithm();
    let signature = jsonwebtoken::crypto::sign(PROBE, encoding, algorithm)
        .map_err(|err| format!("{alg} key cannot sign ({err})"))?;
    match jsonwebtoken::crypto::verify(&signature, PROBE, decoding, algorithm) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("{alg} key does not verify its own signature")),
        Err(err) => Err(format!("{alg} key cannot verify ({err})")),
    }
}

/// The file contents of a new key.
fn new_key_contents(alg: KeyAlgorithm) -> Result<Zeroizing<String>, String> {
    let mut rng = rand_core::OsRng;
    match alg {
        KeyAlgorithm::HS256 => {
            let mut secret = Zeroizing::new([0u8; GENERATED_HMAC_KEY_BYTES]);
            getrandom::fill(secret.as_mut_slice())
                .map_err(|err| format!("no random numbers ({err})"))?;
            Ok(Zeroizing::new(format!(
                "{}\n",
                STANDARD.encode(secret.as_slice())
            )))
        }
        KeyAlgorithm::EdDSA => ed25519_dalek::SigningKey::generate(&mut rng)
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|err| format!("cannot encode the key ({err})")),
        KeyAlgorithm::ES256 => p256::SecretKey::random(&mut rng)
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|err| format!("cannot encode the key ({err})")),
        KeyAlgorithm::RS256 => rsa::RsaPrivateKey::new(&mut rng, RSA_BITS)
            .map_err(|err| format!("RSA key generation failed ({err})"))?
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|err| format!("cannot encode the key ({err})")),
    }
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|err| format!("no random numbers ({err})"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates `dir` (and missing parents) with mode 0700; an existing one is left as it is.
fn create_dir(dir: &Path) -> Result<(), KeyError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| KeyError::Io {
        path: dir.to_owned(),
        source,
    })
}

/// Creates `path` (which must not exist) with mode 0600 and writes `contents` durably.
fn write_new_file(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    let io_error = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_error)?;
    file.write_all(contents).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

/// `base`, or `base-NN` with NN one above the highest suffix in use, when any file in
/// `dir` (whatever its extension) already has that kid — so the new kid sorts last.
/// `None` when all suffixes are taken.
fn next_free_kid(dir: &Path, base: &str) -> Result<Option<String>, KeyError> {
    let io_error = |source| KeyError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut highest: Option<u32> = None;
    for entry in fs::read_dir(dir).map_err(io_error)? {
        let name = entry.map_err(io_error)?.file_name();
        let Some(name) = name.to_str() else { continue };
        let head = name.split('.').next().unwrap_or(name);
        let suffix = if head == base {
            Some(0)
        } else {
            head.strip_prefix(base)
                .and_then(|rest| rest.strip_prefix('-'))
                .filter(|digits| digits.len() >= 2 && digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|digits| digits.parse::<u32>().ok())
        };
        highest = highest.max(suffix);
    }
    match highest {
        None => Ok(Some(base.to_owned())),
        Some(n) if n < MAX_SAME_SECOND_SUFFIX => Ok(Some(format!("{base}-{:02}", n + 1))),
        Some(_) => Ok(None),
    }
}

/// The UTC time as `YYYYMMDDTHHMMSSZ` (RFC 3339 without separators).
fn kid_for_time(now: SystemTime) -> String {
    let secs: i64 = match now.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        // Before 1970: round down to the whole second.
        Err(before) => {
            let before = before.duration();
            let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            -whole - i64::from(before.subsec_nanos() > 0)
        }
    };
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction.
    (year, month as u32, day as u32)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 2026-11-26T17:00:00Z.
    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_712_400)
    }

    fn write_file(dir: &Path, name: &str, contents: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, contents).unwrap();
        set_mode(&path, mode);
        path
    }

    fn set_mode(path: &Path, mode: u32) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = (path, mode);
    }

    #[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
    struct Claims {
        sub: String,
        exp: u64,
    }

    fn claims() -> Claims {
        Claims {
            sub: "alice".into(),
            exp: 4_000_000_000,
        }
    }

    fn sign(key: &Key) -> String {
        let mut header = jsonwebtoken::Header::new(key.alg.jwt_algorithm());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &claims(), &key.encoding).unwrap()
    }

    fn verify(token: &str, decoding: &DecodingKey, alg: KeyAlgorithm) -> Claims {
        let validation = jsonwebtoken::Validation::new(alg.jwt_algorithm());
        jsonwebtoken::decode::<Claims>(token, decoding, &validation)
            .unwrap()
            .claims
    }

    /// Generates a key of `alg`, loads it, signs a token with it and verifies that token
    /// with the key's own decoding key and, for asymmetric keys, with its published JWK.
    fn generate_load_and_verify(alg: KeyAlgorithm) {
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");

        let kid = generate_key(&keys_dir, alg, t0()).unwrap();
        let set = KeySet::load(&keys_dir, alg, None).unwrap();

        assert_eq!(kid, "20261126T170000Z");
        assert!(
            keys_dir
                .join(format!("{kid}.{}", alg.file_extension()))
                .is_file()
        );
        let key = set.signing_key();
        assert_eq!(key.kid, kid);
        assert_eq!(key.alg, alg);
        let token = sign(key);
        assert_eq!(verify(&token, &key.decoding, alg), claims());

        let jwks = set.jwks();
        let published = jwks["keys"].as_array().unwrap();
        if alg.is_asymmetric() {
            assert_eq!(published.len(), 1);
            let jwk = published[0].clone();
            assert_eq!(jwk["kid"], kid.as_str());
            assert_eq!(jwk["alg"], alg.as_str());
            assert_eq!(jwk["use"], "sig");
            assert!(jwk.get("d").is_none(), "private part published: {jwk}");
            let independent = DecodingKey::from_jwk(&serde_json::from_value(jwk).unwrap()).unwrap();
            assert_eq!(verify(&token, &independent, alg), claims());
        } else {
            assert!(published.is_empty());
            assert!(key.jwk().is_none());
        }
    }

    #[test]
    fn hs256_key_is_generated_and_loaded() {
        generate_load_and_verify(KeyAlgorithm::HS256);
    }

    #[test]
    fn eddsa_key_is_generated_loaded_and_its_jwk_verifies() {
        generate_load_and_verify(KeyAlgorithm::EdDSA);
    }

    #[test]
    fn es256_key_is_generated_loaded_and_its_jwk_verifies() {
        generate_load_and_verify(KeyAlgorithm::ES256);
    }

    #[test]
    fn rs256_key_is_generated_loaded_and_its_jwk_verifies() {
        generate_load_and_verify(KeyAlgorithm::RS256);
    }

    #[cfg(unix)]
    #[test]
    fn generated_files_and_dir_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("a/keys");

        let kid = generate_key(&keys_dir, KeyAlgorithm::EdDSA, t0()).unwrap();

        let file_mode = fs::metadata(keys_dir.join(format!("{kid}.pem")))
            .unwrap()
            .permissions()
            .mode();
        let dir_mode = fs::metadata(&keys_dir).unwrap().permissions().mode();
        assert_eq!(file_mode & 0o777, 0o600);
        assert_eq!(dir_mode & 0o077, 0);
        // No temporary file stays behind.
        assert_eq!(fs::read_dir(&keys_dir).unwrap().count(), 1);
    }

    #[test]
    fn kid_is_the_utc_time() {
        assert_eq!(kid_for_time(t0()), "20261126T170000Z");
        assert_eq!(kid_for_time(UNIX_EPOCH), "19700101T000000Z");
        assert_eq!(
            kid_for_time(UNIX_EPOCH + Duration::from_millis(951_782_399_500)),
            "20000228T235959Z"
        );
        assert_eq!(
            kid_for_time(UNIX_EPOCH + Duration::from_secs(951_782_400 + 86_400)),
            "20000301T000000Z"
        );
        assert_eq!(
            kid_for_time(UNIX_EPOCH - Duration::from_millis(500)),
            "19691231T235959Z"
        );
        assert_eq!(
            kid_for_time(UNIX_EPOCH + Duration::from_secs(253_402_300_799)),
            "99991231T235959Z"
        );
    }

    #[test]
    fn same_second_keys_get_suffixes_that_sort_after_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let later = t0() + Duration::from_secs(1);

        let first = generate_key(dir.path(), KeyAlgorithm::HS256, t0()).unwrap();
        let second = generate_key(dir.path(), KeyAlgorithm::EdDSA, t0()).unwrap();
        let third = generate_key(dir.path(), KeyAlgorithm::HS256, t0()).unwrap();
        fs::remove_file(dir.path().join(format!("{second}.pem"))).unwrap();
        let fourth = generate_key(dir.path(), KeyAlgorithm::HS256, t0()).unwrap();
        let fifth = generate_key(dir.path(), KeyAlgorithm::HS256, later).unwrap();

        assert_eq!(first, "20261126T170000Z");
        assert_eq!(second, "20261126T170000Z-01");
        assert_eq!(third, "20261126T170000Z-02");
        assert_eq!(fourth, "20261126T170000Z-03");
        assert_eq!(fifth, "20261126T170001Z");
        let set = KeySet::load(dir.path(), KeyAlgorithm::HS256, None).unwrap();
        assert_eq!(set.kids(), [first.as_str(), &third, &fourth, &fifth]);
        assert_eq!(set.signing_key().kid, fifth);
    }

    #[test]
    fn a_file_with_the_kid_and_any_extension_takes_the_name() {
        let dir = tempfile::tempdir().unwrap();
        write_file(dir.path(), "20261126T170000Z.txt", "notes", 0o600);

        let kid = generate_key(dir.path(), KeyAlgorithm::HS256, t0()).unwrap();

        assert_eq!(kid, "20261126T170000Z-01");
    }

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
    fn hmac_key_under_32_bytes_is_rejected_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        let secret = STANDARD.encode([0x41u8; 31]);
        let path = write_file(dir.path(), "short.key", &secret, 0o600);

        let err = KeySet::load(dir.path(), KeyAlgorithm::HS256, None).unwrap_err();

        let message = err.to_string();
        assert!(matches!(err, KeyError::Invalid { .. }));
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("31 bytes"), "{message}");
        assert!(!message.contains(&secret[..8]), "{message}");
    }

    #[test]
    fn hmac_base64_with_or_without_padding_and_whitespace_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = [0x5au8; 32]; // 32 bytes: base64 with one `=` of padding
        let padded = STANDARD.encode(bytes);
        assert!(padded.ends_with('='));
        write_file(dir.path(), "padded.key", &padded, 0o600);
        write_file(
            dir.path(),
            "unpadded.key",
            padded.trim_end_matches('='),
            0o600,
        );
        write_file(
            dir.path(),
            "spaced.key",
            &format!("  \n{padded}\r\n\n"),
            0o600,
        );

        let set = KeySet::load(dir.path(), KeyAlgorithm::HS256, None).unwrap();

        assert_eq!(set.kids(), ["padded", "spaced", "unpadded"]);
        let token = sign(set.get("padded").unwrap());
        for kid in ["spaced", "unpadded"] {
            let key = set.get(kid).unwrap();
            assert_eq!(verify(&token, &key.decoding, KeyAlgorithm::HS256), claims());
        }
    }

    #[test]
    fn hmac_file_that_is_not_base64_is_rejected_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        write_file(
            dir.path(),
            "bad.key",
            "secret-secret-secret-secret-secret-secret!",
            0o600,
        );

        let err = KeySet::load(dir.path(), KeyAlgorithm::HS256, None).unwrap_err();

        let message = err.to_string();
        assert!(
            message.contains("bad.key") && message.contains("base64"),
            "{message}"
        );
        assert!(!message.contains("secret"), "{message}");
    }

    #[cfg(unix)]
    #[test]
    fn group_readable_key_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let kid = generate_key(dir.path(), KeyAlgorithm::HS256, t0()).unwrap();
        let path = dir.path().join(format!("{kid}.key"));
        set_mode(&path, 0o640);

        let err = KeySet::load(dir.path(), KeyAlgorithm::HS256, None).unwrap_err();

        let message = err.to_string();
        assert!(matches!(err, KeyError::Permissions { mode: 0o640, .. }));
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
    }

    #[test]
    fn garbage_pem_is_rejected_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        generate_key(dir.path(), KeyAlgorithm::EdDSA, t0()).unwrap();
        let path = write_file(dir.path(), "garbage.pem", "this is not a key\n", 0o600);

        let err = KeySet::load(dir.path(), KeyAlgorithm::EdDSA, None).unwrap_err();

        assert!(matches!(err, KeyError::Invalid { .. }));
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn pkcs1_and_public_pem_files_are_rejected_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let pkcs8 = new_key_contents(KeyAlgorithm::ES256).unwrap();
        let sec1 = pkcs8.replace("PRIVATE KEY", "EC PRIVATE KEY");
        let public = pkcs8.replace("PRIVATE KEY", "PUBLIC KEY");
        write_file(dir.path(), "old.pem", &sec1, 0o600);

        let sec1_err = KeySet::load(dir.path(), KeyAlgorithm::ES256, None).unwrap_err();
        write_file(dir.path(), "old.pem", &public, 0o600);
        let public_err = KeySet::load(dir.path(), KeyAlgorithm::ES256, None).unwrap_err();

        assert!(sec1_err.to_string().contains("old.pem"), "{sec1_err}");
        assert!(
            sec1_err.to_string().contains("openssl pkcs8 -topk8"),
            "{sec1_err}"
        );
        assert!(public_err.to_string().contains("old.pem"), "{public_err}");
        assert!(
            public_err.to_string().contains("private key"),
            "{public_err}"
        );
    }

    #[test]
    fn pem_with_crlf_and_surrounding_blank_lines_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let pem = new_key_contents(KeyAlgorithm::EdDSA).unwrap();
        let crlf = format!("\r\n\n{}\r\n\r\n", pem.replace('\n', "\r\n"));
        write_file(dir.path(), "crlf.pem", &crlf, 0o600);

        let set = KeySet::load(dir.path(), KeyAlgorithm::EdDSA, None).unwrap();

        assert_eq!(set.kids(), ["crlf"]);
    }

    #[test]
    fn unrelated_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let kid = generate_key(dir.path(), KeyAlgorithm::EdDSA, t0()).unwrap();
        for name in [
            "README",
            "notes.txt",
            "k.pem~",
            "k.pem.bak",
            ".hidden.pem",
            "#k.key#",
        ] {
            write_file(dir.path(), name, "not a key", 0o644);
        }

        let set = KeySet::load(dir.path(), KeyAlgorithm::EdDSA, None).unwrap();

        assert_eq!(set.kids(), [kid.as_str()]);
    }

    #[test]
    fn invalid_kid_is_rejected_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = STANDARD.encode([1u8; 32]);
        write_file(dir.path(), "bad kid.key", &secret, 0o600);

        let err = KeySet::load(dir.path(), KeyAlgorithm::HS256, None).unwrap_err();

        assert!(matches!(err, KeyError::InvalidKid { .. }));
        assert!(err.to_string().contains("bad kid.key"), "{err}");
        assert!(is_valid_kid(&"a".repeat(64)));
        assert!(!is_valid_kid(&"a".repeat(65)));
        assert!(!is_valid_kid(""));
        assert!(!is_valid_kid("é"));
    }

    #[test]
    fn the_same_kid_in_two_files_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let kid = generate_key(dir.path(), KeyAlgorithm::EdDSA, t0()).unwrap();
        write_file(
            dir.path(),
            &format!("{kid}.key"),
            &STANDARD.encode([1u8; 32]),
            0o600,
        );

        let err = KeySet::load(dir.path(), KeyAlgorithm::EdDSA, None).unwrap_err();

        assert!(matches!(err, KeyError::DuplicateKid { .. }), "{err}");
    }

    #[test]
    fn ensure_key_generates_only_when_the_algorithm_has_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");

        let created = ensure_key(&keys_dir, KeyAlgorithm::EdDSA, t0()).unwrap();
        let again = ensure_key(&keys_dir, KeyAlgorithm::EdDSA, t0()).unwrap();
        let other = ensure_key(&keys_dir, KeyAlgorithm::HS256, t0()).unwrap();

        assert_eq!(created.as_deref(), Some("20261126T170000Z"));
        assert_eq!(again, None);
        assert_eq!(other.as_deref(), Some("20261126T170000Z-01"));
    }

    #[test]
    fn ensure_key_fails_on_a_bad_key_file() {
        let dir = tempfile::tempdir().unwrap();
        write_file(
            dir.path(),
            "broken.pem",
            "-----BEGIN PRIVATE KEY-----\n",
            0o600,
        );

        let err = ensure_key(dir.path(), KeyAlgorithm::EdDSA, t0()).unwrap_err();

        assert!(err.to_string().contains("broken.pem"), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
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
    fn algorithm_names_round_trip() {
        for alg in KeyAlgorithm::ALL {
            assert_eq!(KeyAlgorithm::parse(alg.as_str()), Some(alg));
            assert_eq!(alg.to_string(), alg.as_str());
        }
        assert_eq!(KeyAlgorithm::parse("hs256"), None);
        assert_eq!(KeyAlgorithm::parse("none"), None);
        assert_eq!(KeyAlgorithm::HS256.file_extension(), "key");
        assert_eq!(KeyAlgorithm::RS256.file_extension(), "pem");
    }
}

//! Making keys: a fresh key of an algorithm written as a new private file (never over an
//! existing one), named by its UTC creation time so that newer kids sort last, and the
//! first-start rule "create one when the algorithm has none".

use std::fs;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::pkcs8::EncodePrivateKey;
use p256::pkcs8::der::pem::LineEnding;
use p256::pkcs8::der::zeroize::Zeroizing;

use super::folder::read_keys;
use super::parse::RSA_BITS;
use super::{KeyAlgorithm, KeyError};
use crate::{files, random};

/// Size of a generated HMAC secret, in bytes.
const GENERATED_HMAC_KEY_BYTES: usize = 32;
/// Highest same-second suffix of generated kids (`-01` … `-99`, two digits keep them ordered).
const MAX_SAME_SECOND_SUFFIX: u32 = 99;

/// Creates a key for `algorithm` in `dir` when it holds none; returns the new kid.
/// Existing key files are parsed as by [`KeySet::load`](super::KeySet::load), and a bad
/// one is an error.
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
    files::create_private_dir(dir).map_err(|source| KeyError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let generate_error = |reason: String| KeyError::Generate {
        dir: dir.to_owned(),
        alg: algorithm,
        reason,
    };
    let contents = new_key_contents(algorithm).map_err(generate_error)?;

    // Written to a hidden temporary file first (ignored by `load`), then linked to its
    // final name: a crash never leaves a half-written key, and linking never overwrites.
    let temp_name = random::try_random_hex(8)
        .map_err(|err| generate_error(format!("no random numbers ({err})")))?;
    let temp = dir.join(format!(".keygen-{temp_name}.tmp"));
    let result = files::write_private_file_new(&temp, contents.as_bytes())
        .map_err(|source| KeyError::Io {
            path: temp.clone(),
            source,
        })
        .and_then(|()| {
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

/// The file contents of a new key.
pub(super) fn new_key_contents(alg: KeyAlgorithm) -> Result<Zeroizing<String>, String> {
    let mut rng = random::OsRng;
    match alg {
        KeyAlgorithm::HS256 => {
            let mut secret = Zeroizing::new([0u8; GENERATED_HMAC_KEY_BYTES]);
            random::try_fill(secret.as_mut_slice())
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
    use std::time::Duration;

    use jsonwebtoken::DecodingKey;

    use super::super::KeySet;
    use super::super::test_support::{claims, sign, t0, verify, write_file};
    use super::*;

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
}

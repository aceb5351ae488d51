//! Key file contents → keys: HS256 secrets in base64, PKCS#8 private keys in PEM (Ed25519,
//! P-256, RSA), each checked with a sign-and-verify probe. Error texts name what is wrong
//! and how to fix it, never any key material.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::{DecodingKey, EncodingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::der::zeroize::Zeroizing;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, ObjectIdentifier, PrivateKeyInfo};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;

use super::KeyAlgorithm;

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
/// Size of a generated RSA key, in bits; also the smallest accepted.
pub(super) const RSA_BITS: usize = 2048;
/// Largest RSA key the verifier accepts (`rsa::RsaPublicKey::MAX_SIZE`).
const RSA_MAX_BITS: usize = 4096;

/// What a key file holds, checked: its algorithm and both halves.
pub(super) type ParsedKey = (KeyAlgorithm, EncodingKey, DecodingKey);

/// An HS256 secret: standard base64 (padding optional, surrounding whitespace ignored).
pub(super) fn parse_hmac(contents: &[u8]) -> Result<ParsedKey, String> {
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
pub(super) fn parse_pkcs8(contents: &[u8]) -> Result<ParsedKey, String> {
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
pub(super) fn self_test(
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use base64::engine::general_purpose::STANDARD;

    use super::super::generate::new_key_contents;
    use super::super::test_support::{claims, sign, t0, verify, write_file};
    use super::super::{KeyError, KeySet, generate_key};
    use super::*;

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
}

//! The JWS algorithms authd signs and verifies with, and the public JWK of a key: built
//! from the verifying half only, so a JWK is never made from an HMAC key (the secret
//! would be published).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{AlgorithmFamily, DecodingKey, DecodingKeyKind};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::traits::PublicKeyParts;

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

/// The public JWK (RFC 7517/7518/8037) of the key `kid` of `alg`, built from its decoding
/// (public) half only; `None` for HMAC keys, whose only form is the secret.
pub(super) fn public_jwk(
    kid: &str,
    alg: KeyAlgorithm,
    decoding: &DecodingKey,
) -> Option<serde_json::Value> {
    if decoding.family() != alg.family() {
        return None;
    }
    let mut jwk = match (alg, decoding.kind()) {
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
    object.insert("kid".into(), kid.into());
    object.insert("alg".into(), alg.as_str().into());
    object.insert("use".into(), "sig".into());
    Some(jwk)
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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

//! Access tokens: the claims authd issues (RFC 9068 `at+jwt`), signing with the key set's
//! signing key, and signature + claim verification against an injected clock. Revocation is
//! checked elsewhere ([`super::service`]); this module only answers "is this a token we signed
//! and is it within its lifetime".

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::{KeyAlgorithm, KeySet};
use crate::config::JwtConfig;
use crate::store::UnixSeconds;

/// Tokens longer than this are refused before any parsing work.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The `typ` header authd issues.
const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Claims authd puts into an access token.
#[derive(Debug, Serialize)]
struct IssuedClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: UnixSeconds,
    nbf: UnixSeconds,
    exp: UnixSeconds,
    jti: &'a str,
    sid: &'a str,
    roles: &'a [String],
    amr: &'static [&'static str],
}

/// How the session's login was authenticated: the token's `amr` (RFC 8176).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amr {
    Password,
    PasswordAndOtp,
}

impl Amr {
    pub fn of(with_otp: bool) -> Amr {
        if with_otp {
            Amr::PasswordAndOtp
        } else {
            Amr::Password
        }
    }

    fn values(self) -> &'static [&'static str] {
        match self {
            Amr::Password => &["pwd"],
            Amr::PasswordAndOtp => &["pwd", "otp"],
        }
    }
}

/// The claims of a token whose signature, `typ`, `iss`, `aud` and lifetime were checked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iat: UnixSeconds,
    pub nbf: UnixSeconds,
    pub exp: UnixSeconds,
    pub jti: String,
    pub sid: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub amr: Vec<String>,
}

/// A freshly signed access token.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: String,
    pub jti: String,
    pub expires_at: UnixSeconds,
}

/// Why a token was refused. The `Display` text is safe to send to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token is too large")]
    TooLarge,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token signing key is unknown")]
    UnknownKey,
    #[error("token algorithm does not match its key")]
    WrongAlgorithm,
    #[error("token type is not at+jwt")]
    WrongType,
    #[error("token has an unsupported critical header")]
    CriticalHeader,
    #[error("token issuer or audience is wrong")]
    WrongIssuerOrAudience,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token lifetime (exp - iat) is longer than authd ever issues")]
    LifetimeTooLong,
    #[error("token issue time is before 1970")]
    IssuedBeforeEpoch,
    #[error("token has an empty jti or sid")]
    EmptyId,
}

impl TokenError {
    /// A short stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::TooLarge => "too_large",
            TokenError::BadSignature => "bad_signature",
            TokenError::UnknownKey => "unknown_key",
            TokenError::WrongAlgorithm => "wrong_algorithm",
            TokenError::WrongType => "wrong_type",
            TokenError::CriticalHeader => "critical_header",
            TokenError::WrongIssuerOrAudience => "wrong_issuer_or_audience",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::LifetimeTooLong => "lifetime_too_long",
            TokenError::IssuedBeforeEpoch => "issued_before_epoch",
            TokenError::EmptyId => "empty_id",
        }
    }
}

/// How many verified tokens are remembered (a token is ~0.5 KiB with its claims).
const VERIFIED_CACHE_ENTRIES: usize = 20_000;

/// Validation settings prepared once per configuration snapshot, and the tokens already
/// verified under it. The cache lives and dies with the snapshot (and so with its key
/// set): after a reload that removed a key, nothing it signed is remembered.
pub struct TokenRules {
    issuer: String,
    audience: String,
    access_ttl: i64,
    leeway: i64,
    validations: HashMap<KeyAlgorithm, Validation>,
    /// Tokens whose signature, header, issuer and audience were checked. Lifetime and
    /// revocation are checked again on every use.
    verified: quick_cache::sync::Cache<String, Arc<Claims>>,
}

impl std::fmt::Debug for TokenRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRules")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenRules {
    pub fn new(jwt: &JwtConfig) -> TokenRules {
        let algorithms = [
            KeyAlgorithm::HS256,
            KeyAlgorithm::EdDSA,
            KeyAlgorithm::ES256,
            KeyAlgorithm::RS256,
        ];
        let validations = algorithms
            .into_iter()
            .map(|alg| {
                let mut validation = Validation::new(alg.jwt_algorithm());
                // Lifetime is checked below against the injected clock, with our leeway.
                validation.validate_exp = false;
                validation.validate_nbf = false;
                validation.leeway = 0;
                validation.set_required_spec_claims(&["iss", "aud", "sub"]);
                validation.set_issuer(&[&jwt.issuer]);
                validation.set_audience(&[&jwt.audience]);
                (alg, validation)
            })
            .collect();
        TokenRules {
            issuer: jwt.issuer.clone(),
            audience: jwt.audience.clone(),
            access_ttl: seconds(jwt.access_ttl),
            leeway: seconds(jwt.leeway),
            validations,
            verified: quick_cache::sync::Cache::new(VERIFIED_CACHE_ENTRIES),
        }
    }

    /// The access token lifetime in seconds.
    pub fn access_ttl(&self) -> i64 {
        self.access_ttl
    }

    /// The clock leeway in seconds.
    pub fn leeway(&self) -> i64 {
        self.leeway
    }

    /// Signs an access token for `sub` in session `sid`.
    pub fn issue(
        &self,
        keys: &KeySet,
        sub: &str,
        sid: &str,
        roles: &[String],
        amr: Amr,
        now: UnixSeconds,
    ) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        let key = keys.signing_key();
        let mut header = Header::new(key.alg.jwt_algorithm());
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(key.kid.clone());
        let jti = crate::random::random_id(16);
        let expires_at = now + self.access_ttl;
        let claims = IssuedClaims {
            iss: &self.issuer,
            aud: &self.audience,
            sub,
            iat: now,
            nbf: now,
            exp: expires_at,
            jti: &jti,
            sid,
            roles,
            amr: amr.values(),
        };
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)?;
        Ok(IssuedToken {
            token,
            jti,
            expires_at,
        })
    }

    /// Checks signature, header, issuer, audience and lifetime (with leeway) at `now`.
    /// `keys` must be the key set of the same settings snapshot as `self`.
    pub fn verify(
        &self,
        keys: &KeySet,
        token: &str,
        now: UnixSeconds,
    ) -> Result<Arc<Claims>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        let claims = match self.verified.get(token) {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.verify_signature(keys, token)?);
                self.verified.insert(token.to_owned(), claims.clone());
                claims
            }
        };
        // `now - leeway`, not `exp + leeway`: `exp` comes from the token and may be i64::MAX.
        if claims.exp < now - self.leeway {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now + self.leeway || claims.iat > now + self.leeway {
            return Err(TokenError::NotYetValid);
        }
        check_lifetime(&claims)?;
        Ok(claims)
    }

    /// Checks everything but the lifetime: for revoking a token that may have expired.
    pub fn verify_signature(&self, keys: &KeySet, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.crit.is_some() {
            return Err(TokenError::CriticalHeader);
        }
        match header.typ.as_deref() {
            Some(typ)
                if typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP)
                    || typ.eq_ignore_ascii_case("application/at+jwt") => {}
            _ => return Err(TokenError::WrongType),
        }
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let key = keys.get(kid).ok_or(TokenError::UnknownKey)?;
        if header.alg != key.alg.jwt_algorithm() {
            return Err(TokenError::WrongAlgorithm);
        }
        let validation = self
            .validations
            .get(&key.alg)
            .ok_or(TokenError::WrongAlgorithm)?;
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.decoding, validation).map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                match err.kind() {
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                    ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                        TokenError::WrongIssuerOrAudience
                    }
                    _ => TokenError::Malformed,
                }
            })?;
        // An empty jti or sid could never be revoked on its own: it counts as missing.
        if data.claims.jti.is_empty() || data.claims.sid.is_empty() {
            return Err(TokenError::EmptyId);
        }
        Ok(data.claims)
    }
}

/// The longest lifetime (`exp - iat`) authd has ever been able to issue: the bound on
/// `jwt.access_ttl`. Not the current `access_ttl`: a reload that shortens it leaves the
/// tokens issued before valid until their own `exp` (API.md "Signals and lifecycle").
const MAX_LIFETIME: i64 = crate::config::MAX_ACCESS_TTL.as_secs() as i64;

/// Refuses lifetimes authd never issued, whatever the signature says: a far-future `exp`
/// (e.g. `i64::MAX`, minted with a leaked key), a negative `iat`. (An `exp` before `iat`
/// only shortens a token, and the expiry check has already judged it.)
fn check_lifetime(claims: &Claims) -> Result<(), TokenError> {
    if claims.iat < 0 {
        return Err(TokenError::IssuedBeforeEpoch);
    }
    // No overflow: `iat >= 0`.
    if claims.exp.saturating_sub(claims.iat) > MAX_LIFETIME {
        return Err(TokenError::LifetimeTooLong);
    }
    Ok(())
}

fn seconds(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX / 4)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;
    use std::time::UNIX_EPOCH;

    use serde_json::json;

    use super::*;
    use crate::auth::keys::generate_key;
    use crate::config::Config;

    const T: UnixSeconds = 1_800_000_000;

    /// A key set with one HS256 key, and the `[jwt]` settings with `access_ttl` and `leeway`.
    fn setup(dir: &std::path::Path, access_ttl: &str, leeway: &str) -> (KeySet, JwtConfig) {
        let keys_dir = dir.join("keys");
        if !keys_dir.exists() {
            generate_key(&keys_dir, KeyAlgorithm::HS256, UNIX_EPOCH).unwrap();
        }
        let file = dir.join("config.toml");
        std::fs::write(&file, "").unwrap();
        let env: HashMap<String, String> = [
            ("AUTHD__JWT__KEYS_DIR", keys_dir.display().to_string()),
            ("AUTHD__JWT__ACCESS_TTL", access_ttl.to_owned()),
            ("AUTHD__JWT__LEEWAY", leeway.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let jwt = Config::load_with_env(&file, env).unwrap().jwt;
        let keys = KeySet::load(&keys_dir, KeyAlgorithm::HS256, None).unwrap();
        (keys, jwt)
    }

    /// A token signed with the real key, carrying `iat` and `exp` as given.
    fn signed(keys: &KeySet, iat: i64, exp: i64) -> String {
        let key = keys.signing_key();
        let mut header = Header::new(key.alg.jwt_algorithm());
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(key.kid.clone());
        let claims = json!({"iss": "authd", "aud": "authd", "sub": "alice", "iat": iat,
            "nbf": iat, "exp": exp, "jti": "j", "sid": "s", "roles": []});
        jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
    }

    #[test]
    fn a_token_issued_before_a_reload_that_shortened_access_ttl_lives_until_its_own_exp() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, before) = setup(dir.path(), "10m", "30s");
        let (_, after) = setup(dir.path(), "1m", "30s");
        let issued = TokenRules::new(&before)
            .issue(&keys, "alice", "s", &[], Amr::Password, T)
            .unwrap();
        let reloaded = TokenRules::new(&after);

        assert!(reloaded.verify(&keys, &issued.token, T + 9 * 60).is_ok());
        assert!(reloaded.verify(&keys, &issued.token, T + 600 + 30).is_ok());
        assert_eq!(
            reloaded
                .verify(&keys, &issued.token, T + 600 + 31)
                .unwrap_err(),
            TokenError::Expired
        );
    }

    #[test]
    fn lifetimes_authd_never_issues_are_refused_saying_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, jwt) = setup(dir.path(), "1m", "30s");
        let rules = TokenRules::new(&jwt);
        let day = 24 * 60 * 60;

        let longest = signed(&keys, T, T + day);
        assert!(rules.verify(&keys, &longest, T).is_ok(), "24 h is the cap");
        let cases = [
            (signed(&keys, T, T + day + 1), TokenError::LifetimeTooLong),
            (signed(&keys, T, i64::MAX), TokenError::LifetimeTooLong),
            (signed(&keys, -5, T + 10), TokenError::IssuedBeforeEpoch),
        ];
        for (token, expected) in cases {
            let refused = rules.verify(&keys, &token, T).unwrap_err();
            assert_eq!(refused, expected);
            assert_ne!(refused.to_string(), TokenError::Malformed.to_string());
        }
    }
}

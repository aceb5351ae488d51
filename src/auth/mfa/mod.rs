//! The second factor's primitives, free of storage and HTTP: RFC 6238 codes on an injected
//! clock ([`totp`]), the key that seals secrets at rest and keys the recovery-code MACs
//! ([`key`]), and recovery codes themselves ([`recovery`]).

pub mod key;
pub mod recovery;
pub mod totp;

pub use key::{MfaKey, MfaKeyError};

/// A code as a user typed it: a 6-digit TOTP code or a recovery code.
#[derive(Clone, PartialEq, Eq)]
pub enum Code {
    Totp(String),
    /// Normalised: 12 lower-case base32 characters.
    Recovery(String),
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Code([redacted])")
    }
}

impl Code {
    /// What `input` is, ignoring case, spaces and dashes; `None` when it can be neither
    /// (such input is simply a wrong code).
    pub fn parse(input: &str) -> Option<Code> {
        let cleaned: String = input
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if cleaned.len() == totp::DIGITS && cleaned.bytes().all(|b| b.is_ascii_digit()) {
            return Some(Code::Totp(cleaned));
        }
        recovery::normalise(&cleaned).map(Code::Recovery)
    }
}

/// The `otpauth://` URI authenticator apps read (usually from a QR code), in the form
/// API.md fixes: label `issuer:username`, then secret, issuer, algorithm, digits, period.
pub fn otpauth_uri(issuer: &str, username: &str, secret_base32: &str) -> String {
    use crate::auth::redirect::percent_encode;
    format!(
        "otpauth://totp/{}:{}?secret={secret_base32}&issuer={}&algorithm=SHA1&digits={}&period={}",
        percent_encode(issuer),
        percent_encode(username),
        percent_encode(issuer),
        totp::DIGITS,
        totp::STEP_SECS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_told_apart_ignoring_case_spaces_and_dashes() {
        assert_eq!(Code::parse("123 456"), Some(Code::Totp("123456".into())));
        assert_eq!(
            Code::parse(" ABCD-efgh-2345 "),
            Some(Code::Recovery("abcdefgh2345".into()))
        );
        assert_eq!(Code::parse("12345"), None);
        assert_eq!(Code::parse("1234567"), None);
        assert_eq!(Code::parse("abcd-efgh-2341"), None, "1 is not base32");
        assert_eq!(Code::parse(""), None);
    }

    #[test]
    fn the_uri_has_the_contract_s_shape_and_encodes_the_label() {
        assert_eq!(
            otpauth_uri("ACME Corp", "alice@example.com", "JBSWY3DPEHPK3PXP"),
            "otpauth://totp/ACME%20Corp:alice%40example.com?secret=JBSWY3DPEHPK3PXP\
             &issuer=ACME%20Corp&algorithm=SHA1&digits=6&period=30"
        );
    }
}

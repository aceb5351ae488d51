//! RFC 6238 time-based codes: SHA-1, 6 digits, 30-second steps. The step is computed here
//! from the caller's clock (never the wall clock), and a match names its step, so that a
//! code is taken only for a step after the last one the account used.

use subtle::ConstantTimeEq as _;
use totp_rs::{Algorithm, TOTP};

use crate::store::UnixSeconds;

pub const DIGITS: usize = 6;
pub const STEP_SECS: i64 = 30;
/// Steps accepted either side of the current one (clock drift, a code typed at a boundary).
const SKEW_STEPS: u64 = 1;
/// The secret's length: 160 bits, as RFC 4226 recommends for SHA-1.
pub const SECRET_BYTES: usize = 20;

/// The time step `now` falls in.
pub fn step_at(now: UnixSeconds) -> u64 {
    u64::try_from(now.max(0) / STEP_SECS).unwrap_or(0)
}

/// The code of `secret` for `step`.
pub fn code_for_step(secret: &[u8], step: u64) -> String {
    generator(secret, DIGITS).generate(step.saturating_mul(STEP_SECS as u64))
}

/// The step, among the current one ±1 and after `last_used`, whose code is `code`.
pub fn matching_step(secret: &[u8], code: &str, now: UnixSeconds, last_used: u64) -> Option<u64> {
    let current = step_at(now);
    let first = current
        .saturating_sub(SKEW_STEPS)
        .max(last_used.saturating_add(1));
    // Every candidate is computed and compared in constant time: no early exit tells
    // which step matched or how much of the code was right.
    let mut found = None;
    for step in first..=current.saturating_add(SKEW_STEPS) {
        let expected = code_for_step(secret, step);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// A fresh random secret.
pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_BYTES];
    crate::random::fill(&mut secret);
    secret
}

/// `secret` as RFC 4648 base32, upper case, unpadded: what a user types into an app.
pub fn base32(secret: &[u8]) -> String {
    totp_rs::Secret::Raw(secret.to_vec())
        .to_encoded()
        .to_string()
}

/// The secret `text` spells in base32 (as [`base32`] writes it; case and padding ignored).
pub fn decode_base32(text: &str) -> Option<Vec<u8>> {
    totp_rs::Secret::Encoded(text.trim_end_matches('=').to_ascii_uppercase())
        .to_bytes()
        .ok()
}

/// The code of the secret `base32_secret` at `now`: what an authenticator app shows (for
/// tests and tools; authd itself only checks codes).
pub fn code_at(base32_secret: &str, now: UnixSeconds) -> Option<String> {
    decode_base32(base32_secret).map(|secret| code_for_step(&secret, step_at(now)))
}

fn generator(secret: &[u8], digits: usize) -> TOTP {
    // `new_unchecked`: the checked constructor refuses secrets under 128 bits, which the
    // RFC's own test vector (and nothing authd makes) has.
    TOTP::new_unchecked(
        Algorithm::SHA1,
        digits,
        0,
        STEP_SECS as u64,
        secret.to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn the_rfc_6238_sha1_vectors() {
        // RFC 6238 Appendix B (SHA-1, 8 digits); authd's 6-digit codes are their last six.
        for (time, code) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(generator(RFC_SECRET, 8).generate(time), code, "T={time}");
            let step = step_at(time as i64);
            assert_eq!(code_for_step(RFC_SECRET, step), code[2..], "T={time}");
        }
    }

    #[test]
    fn a_code_matches_the_current_step_and_one_either_side_only() {
        let now = 1_111_111_111;
        let step = step_at(now);
        for (offset, accepted) in [(-2, false), (-1, true), (0, true), (1, true), (2, false)] {
            let at = step.checked_add_signed(offset).unwrap_or_default();
            let code = code_for_step(RFC_SECRET, at);
            assert_eq!(
                matching_step(RFC_SECRET, &code, now, 0),
                accepted.then_some(at),
                "offset {offset}"
            );
        }
    }

    #[test]
    fn a_code_of_a_step_already_used_or_earlier_is_refused() {
        let now = 1_234_567_890;
        let step = step_at(now);
        let code = code_for_step(RFC_SECRET, step);
        assert_eq!(matching_step(RFC_SECRET, &code, now, step - 1), Some(step));
        assert_eq!(matching_step(RFC_SECRET, &code, now, step), None);
        let earlier = code_for_step(RFC_SECRET, step - 1);
        assert_eq!(matching_step(RFC_SECRET, &earlier, now, step), None);
        let next = code_for_step(RFC_SECRET, step + 1);
        assert_eq!(matching_step(RFC_SECRET, &next, now, step), Some(step + 1));
    }

    #[test]
    fn secrets_are_160_bits_shown_as_unpadded_upper_case_base32() {
        let secret = new_secret();
        assert_eq!(secret.len(), 20);
        let text = base32(&secret);
        assert_eq!(text.len(), 32);
        assert!(
            text.bytes().all(|b| matches!(b, b'A'..=b'Z' | b'2'..=b'7')),
            "{text}"
        );
        assert_eq!(base32(b"Hello!\xde\xad\xbe\xef"), "JBSWY3DPEHPK3PXP");
        assert_ne!(new_secret(), secret);
        assert_eq!(decode_base32(&text), Some(secret.clone()));
        assert_eq!(decode_base32(&text.to_lowercase()), Some(secret));
        assert_eq!(
            code_at("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", 59).as_deref(),
            Some("287082")
        );
    }
}

//! Randomness: the operating system's generator, and the forms authd draws from it — raw
//! bytes, URL-safe ids (tokens, session ids, the admin token) and hex names (temporary
//! files). Nothing else reads the random source directly.

use base64::Engine as _;

/// The operating system's generator as a `rand_core` RNG, for the crates that take one
/// (key generation in [`crate::auth::keys`]).
pub use rand_core::OsRng;

/// The operating system's random source failed.
pub use getrandom::Error as RandomError;

/// `bytes` random bytes, base64url without padding.
pub fn random_id(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// `bytes` random bytes as lower-case hex, or the error of the random source, for callers
/// that report it instead of stopping.
pub fn try_random_hex(bytes: usize) -> Result<String, RandomError> {
    let mut buf = vec![0u8; bytes];
    try_fill(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Fills `buf` from the OS random source. Without it no secret can be made, so failing
/// here is fatal by design.
#[allow(clippy::expect_used)]
pub fn fill(buf: &mut [u8]) {
    try_fill(buf).expect("the operating system's random source failed");
}

/// Fills `buf` from the OS random source, or says why it cannot.
pub fn try_fill(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_base64url_of_the_asked_length_and_differ() {
        let first = random_id(32);
        let second = random_id(32);

        assert_eq!(
            first.len(),
            43,
            "32 bytes are 43 base64 characters unpadded"
        );
        assert!(
            first
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{first}"
        );
        assert_ne!(first, second);
    }

    #[test]
    fn hex_names_are_lower_case_two_digits_per_byte() {
        let name = try_random_hex(8).unwrap();

        assert_eq!(name.len(), 16);
        assert!(
            name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{name}"
        );
    }
}

//! Recovery codes: sets of ten single-use codes of 60 random bits, shown as
//! `xxxx-xxxx-xxxx` in lower-case base32 and stored only as MACs (see
//! [`super::MfaKey::recovery_mac`]).

/// Codes in a set.
pub const SET_SIZE: usize = 10;
/// Characters of a code, dashes left out.
const CHARS: usize = 12;
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A fresh set, formatted for the user.
pub fn new_set() -> Vec<String> {
    (0..SET_SIZE).map(|_| new_code()).collect()
}

fn new_code() -> String {
    let mut bytes = [0u8; 8];
    crate::random::fill(&mut bytes);
    let bits = u64::from_be_bytes(bytes);
    let chars: Vec<u8> = (0..CHARS)
        .map(|i| ALPHABET[((bits >> (5 * i)) & 31) as usize])
        .collect();
    let text = String::from_utf8_lossy(&chars).into_owned();
    format!("{}-{}-{}", &text[0..4], &text[4..8], &text[8..12])
}

/// The code `cleaned` (lower case, no spaces or dashes) names, if it can be one.
pub fn normalise(cleaned: &str) -> Option<String> {
    (cleaned.len() == CHARS && cleaned.bytes().all(|b| ALPHABET.contains(&b)))
        .then(|| cleaned.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_is_ten_distinct_codes_of_the_documented_shape() {
        let set = new_set();
        assert_eq!(set.len(), 10);
        for code in &set {
            assert_eq!(code.len(), 14, "{code}");
            let parts: Vec<_> = code.split('-').collect();
            assert_eq!(parts.len(), 3, "{code}");
            assert!(parts.iter().all(|p| p.len() == 4));
            let cleaned = code.replace('-', "");
            assert_eq!(normalise(&cleaned).as_deref(), Some(cleaned.as_str()));
        }
        let distinct: std::collections::HashSet<_> = set.iter().collect();
        assert_eq!(distinct.len(), 10);
    }
}

//! Usernames and role names: the rules of API.md's "Users", applied where a name is set.
//! After parsing, a [`Username`] is lowercase and valid; nothing else can be constructed.

use std::fmt;

const MAX_NAME_CHARS: usize = 64;

/// A valid username: 1–64 characters of `a-z 0-9 . _ @ -` (input is ASCII-lowercased first).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    /// Lowercases ASCII and checks the rules; `None` when the name cannot be a username.
    pub fn parse(input: &str) -> Option<Username> {
        let name = input.to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME_CHARS
            && name
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'@' | b'-'));
        valid.then_some(Username(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a role name: 1–64 characters of `a-z 0-9 . _ : -`.
pub fn is_valid_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= MAX_NAME_CHARS
        && role
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b':' | b'-'))
}

/// Checks a new password against the length rules: at least `min_chars` Unicode scalar
/// values and at most 1024 bytes of UTF-8.
pub fn password_problem(password: &str, min_chars: usize) -> Option<String> {
    if password.len() > 1024 {
        return Some("password must be at most 1024 bytes".into());
    }
    if password.chars().count() < min_chars {
        return Some(format!("password must be at least {min_chars} characters"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lowercased_and_checked() {
        assert_eq!(Username::parse("Alice").map(|u| u.0), Some("alice".into()));
        assert!(Username::parse("a.b_c@d-e9").is_some());
        assert!(Username::parse("").is_none());
        assert!(Username::parse("al ice").is_none());
        assert!(Username::parse("alicé").is_none());
        assert!(Username::parse("a\0b").is_none());
        assert!(Username::parse(&"a".repeat(64)).is_some());
        assert!(Username::parse(&"a".repeat(65)).is_none());
    }

    #[test]
    fn roles_allow_colons_but_not_commas_or_uppercase() {
        assert!(is_valid_role("app:read"));
        assert!(!is_valid_role("a,b"));
        assert!(!is_valid_role("Admin"));
        assert!(!is_valid_role(""));
    }

    #[test]
    fn password_length_counts_characters_not_bytes() {
        assert!(password_problem("éééééééé", 8).is_none());
        assert!(password_problem("short", 8).is_some());
        assert!(password_problem(&"é".repeat(513), 8).is_some());
    }
}

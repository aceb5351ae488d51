//! Reading a new password for `user add` / `user passwd`: a no-echo prompt, asked twice,
//! on a terminal; otherwise the first line of standard input (for scripts and pipes).

use std::fmt;
use std::io::{BufRead, IsTerminal as _};

use anyhow::{Context as _, bail};

/// A password typed by the operator. Its `Debug` never shows it.
pub struct NewPassword(String);

impl NewPassword {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword([redacted])")
    }
}

/// Asks for the new password of `username`.
pub fn read_new_password(username: &str) -> anyhow::Result<NewPassword> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        prompt_twice(username)
    } else {
        first_line(&mut stdin.lock())
    }
}

fn prompt_twice(username: &str) -> anyhow::Result<NewPassword> {
    let first = rpassword::prompt_password(format!("New password for {username}: "))
        .context("cannot read the password from the terminal")?;
    let second = rpassword::prompt_password("Repeat the password: ")
        .context("cannot read the password from the terminal")?;
    if first != second {
        bail!("the two passwords do not match");
    }
    if first.is_empty() {
        bail!("the password is empty");
    }
    Ok(NewPassword(first))
}

/// The first line of `input` without its line ending (`\n` or `\r\n`); nothing else is
/// trimmed, since spaces may be part of a password.
fn first_line(input: &mut impl BufRead) -> anyhow::Result<NewPassword> {
    let mut line = String::new();
    let read = input
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    if read == 0 {
        bail!("no password on standard input (expected one line)");
    }
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    if line.is_empty() {
        bail!("the password on standard input is empty");
    }
    Ok(NewPassword(line))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn read(input: &str) -> anyhow::Result<String> {
        first_line(&mut input.as_bytes()).map(|p| p.as_str().to_owned())
    }

    #[test]
    fn only_the_line_ending_is_stripped() {
        assert_eq!(read(" pass word \nsecond line\n").unwrap(), " pass word ");
        assert_eq!(read("crlf\r\n").unwrap(), "crlf");
        assert_eq!(read("no newline").unwrap(), "no newline");
    }

    #[test]
    fn empty_input_is_refused() {
        assert!(read("").is_err());
        assert!(read("\n").is_err());
    }

    #[test]
    fn debug_output_hides_the_password() {
        assert!(!format!("{:?}", NewPassword("hunter22".into())).contains("hunter22"));
    }
}

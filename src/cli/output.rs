//! What the admin commands print: aligned tables, pretty JSON, and server values made
//! safe for a terminal; written to stdout, where a closed pipe is not an error.

use std::io::Write as _;

use anyhow::Context as _;

/// Pretty JSON with a final newline.
pub(super) fn pretty_json<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(value).context("cannot format JSON")?;
    text.push('\n');
    Ok(text)
}

/// Columns padded to the widest cell, separated by two spaces; no header when `header` is
/// empty.
pub(super) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut lines: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
    if !header.is_empty() {
        lines.push(header.iter().map(|h| (*h).to_owned()).collect());
    }
    lines.extend(rows);
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            lines
                .iter()
                .filter_map(|line| line.get(i))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            text.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// A value from the server made safe for a terminal: control characters are escaped, and
/// an empty value shows as `-` so columns stay aligned.
pub(super) fn cell(value: &str) -> String {
    if value.is_empty() {
        return "-".to_owned();
    }
    value
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `yes` or `no`, for flags in tables.
pub(super) fn yes_no(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

/// Writes the command's output; a closed pipe (`authd user list | head`) is not an error.
pub(super) fn emit(out: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("cannot write to standard output"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_trims_the_last_one() {
        let rows = vec![
            vec!["alice".to_owned(), "admin".to_owned(), "no".to_owned()],
            vec![
                "bob@example.com".to_owned(),
                "-".to_owned(),
                "yes".to_owned(),
            ],
        ];
        let text = table(&["USERNAME", "ROLES", "DISABLED"], rows);
        assert_eq!(
            text,
            "USERNAME         ROLES  DISABLED\n\
             alice            admin  no\n\
             bob@example.com  -      yes\n"
        );
    }

    #[test]
    fn cells_escape_control_characters() {
        assert_eq!(cell("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(cell(""), "-");
    }
}

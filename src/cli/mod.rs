//! The admin commands (`authd user …`, `authd revoke`, `authd revocations …`): a client of
//! the running daemon's admin listener, found through the same configuration file, and
//! authenticated with the admin API token from `admin.token_file`.
//!
//! Their arguments are declared here (`main` only mounts them), the HTTP exchange lives in
//! [`client`], the password prompt in [`password`]. Output goes to stdout; passwords and
//! tokens are never printed.

mod client;
mod password;

use std::future::Future;
use std::io::{BufRead as _, Write as _};

use anyhow::{Context as _, bail};
use clap::{ArgGroup, Subcommand};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Config;
use client::{AdminClient, Subject, encode};

/// Page size asked for when following a list to its end (the server's maximum).
const PAGE_LIMIT: u32 = 1000;

/// `authd user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (password: prompted for, or the first line of stdin).
    ///
    /// On a terminal the password is asked twice without echo; otherwise it is the first
    /// line of standard input, without its line ending.
    Add {
        /// The username (a-z 0-9 . _ @ -; upper case is folded to lower case).
        name: String,
        /// A role to grant (repeat for several).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// List every user: name, roles, disabled flag, creation time.
    List {
        /// Print the users as a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one user.
    Show {
        name: String,
        /// Print the user as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: logins are refused and every token of the user stops working.
    Disable { name: String },
    /// Enable a disabled user again.
    Enable { name: String },
    /// Delete a user; every token of the user stops working at once.
    Delete { name: String },
    /// Set a new password (read like `add`'s); every token of the user stops working.
    Passwd { name: String },
    /// Replace the roles of a user (they apply from the next request).
    #[command(group(ArgGroup::new("new_roles").required(true).args(["roles", "clear"])))]
    Roles {
        name: String,
        /// A role the user keeps or gets (repeat for several); roles not named are removed.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Remove every role.
        #[arg(long)]
        clear: bool,
    },
}

/// `authd revoke …`: exactly one target.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("target").required(true).args(["jti", "sid", "user", "token"])))]
pub struct RevokeArgs {
    /// Revoke one access token by its `jti` claim.
    #[arg(long, value_name = "JTI")]
    jti: Option<String>,
    /// Revoke one login session (`sid` claim) with all its access and refresh tokens.
    #[arg(long, value_name = "SID")]
    sid: Option<String>,
    /// Revoke every session of a user (logins after it work as usual).
    #[arg(long, value_name = "USERNAME")]
    user: Option<String>,
    /// Revoke the access token given whole (its jti); `-` reads it from standard input,
    /// which keeps it out of the shell history and the process list.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Why, for the revocation list (at most 512 bytes).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
}

/// `authd revocations …`
#[derive(Debug, Subcommand)]
pub enum RevocationsCommand {
    /// List the revocations in force (oldest first): kind, id, revoked_at, expires_at, reason.
    List {
        /// Print the entries as a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// A user object of the admin API.
#[derive(Deserialize)]
struct User {
    username: String,
    roles: Vec<String>,
    disabled: bool,
    created_at: String,
}

/// An entry of `GET /admin/v1/revocations`.
#[derive(Deserialize)]
struct Revocation {
    kind: String,
    id: String,
    revoked_at: String,
    expires_at: String,
    reason: Option<String>,
}

/// The answer of `POST /admin/v1/revocations`.
#[derive(Deserialize)]
struct Revoked {
    revoked: String,
    kind: String,
}

/// Runs `authd user …` against the daemon that `config` describes.
pub fn user(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    let client = AdminClient::new(config)?;
    let out = block_on(run_user(&client, command))??;
    emit(&out)
}

/// Runs `authd revoke …` against the daemon that `config` describes.
pub fn revoke(config: &Config, args: RevokeArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(config)?;
    let out = block_on(run_revoke(&client, args))??;
    emit(&out)
}

/// Runs `authd revocations …` against the daemon that `config` describes.
pub fn revocations(config: &Config, command: RevocationsCommand) -> anyhow::Result<()> {
    let client = AdminClient::new(config)?;
    let out = match command {
        RevocationsCommand::List { json } => block_on(list_revocations(&client, json))??,
    };
    emit(&out)
}

/// One request at a time needs no more than a single-threaded runtime.
fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}

async fn run_user(client: &AdminClient, command: UserCommand) -> anyhow::Result<String> {
    match command {
        UserCommand::Add { name, roles } => {
            let password = password::read_new_password(&name)?;
            let body = json!({"username": name, "password": password.as_str(), "roles": roles});
            let user: User = client
                .fetch(
                    Method::POST,
                    "/admin/v1/users",
                    Some(&body),
                    &format!("add user {name}"),
                    Subject::User(&name),
                )
                .await?;
            Ok(format!(
                "created user {} (roles: {})\n",
                cell(&user.username),
                roles_cell(&user.roles)
            ))
        }
        UserCommand::List { json } => {
            let users = all_pages(client, "/admin/v1/users", "users", "list users").await?;
            if json {
                return pretty_json(&users);
            }
            let rows = users
                .into_iter()
                .map(serde_json::from_value::<User>)
                .collect::<Result<Vec<_>, _>>()
                .context("cannot list users: unexpected answer from authd")?
                .iter()
                .map(|user| {
                    vec![
                        cell(&user.username),
                        roles_cell(&user.roles),
                        yes_no(user.disabled).to_owned(),
                        cell(&user.created_at),
                    ]
                })
                .collect();
            Ok(table(
                &["USERNAME", "ROLES", "DISABLED", "CREATED_AT"],
                rows,
            ))
        }
        UserCommand::Show { name, json } => {
            let action = format!("show user {name}");
            let user: Value = client
                .fetch(
                    Method::GET,
                    &user_path(&name),
                    None,
                    &action,
                    Subject::User(&name),
                )
                .await?;
            if json {
                return pretty_json(&user);
            }
            let user: User = serde_json::from_value(user)
                .with_context(|| format!("cannot {action}: unexpected answer from authd"))?;
            let rows = vec![
                vec!["username".to_owned(), cell(&user.username)],
                vec!["roles".to_owned(), roles_cell(&user.roles)],
                vec!["disabled".to_owned(), yes_no(user.disabled).to_owned()],
                vec!["created_at".to_owned(), cell(&user.created_at)],
            ];
            Ok(table(&[], rows))
        }
        UserCommand::Disable { name } => {
            let user = patch_user(client, &name, json!({"disabled": true}), "disable").await?;
            Ok(format!(
                "disabled user {}: logins are refused and every token is revoked\n",
                cell(&user.username)
            ))
        }
        UserCommand::Enable { name } => {
            let user = patch_user(client, &name, json!({"disabled": false}), "enable").await?;
            Ok(format!("enabled user {}\n", cell(&user.username)))
        }
        UserCommand::Passwd { name } => {
            let password = password::read_new_password(&name)?;
            let body = json!({"password": password.as_str()});
            let user = patch_user(client, &name, body, "change the password of").await?;
            Ok(format!(
                "changed the password of {}: every token of the user is revoked\n",
                cell(&user.username)
            ))
        }
        UserCommand::Roles { name, roles, clear } => {
            let roles = if clear { Vec::new() } else { roles };
            let user =
                patch_user(client, &name, json!({"roles": roles}), "set the roles of").await?;
            Ok(format!(
                "roles of {}: {}\n",
                cell(&user.username),
                roles_cell(&user.roles)
            ))
        }
        UserCommand::Delete { name } => {
            client
                .call::<Value>(
                    Method::DELETE,
                    &user_path(&name),
                    None,
                    &format!("delete user {name}"),
                    Subject::User(&name),
                )
                .await?;
            Ok(format!(
                "deleted user {}\n",
                cell(&name.to_ascii_lowercase())
            ))
        }
    }
}

fn user_path(name: &str) -> String {
    format!("/admin/v1/users/{}", encode(name))
}

/// `PATCH /admin/v1/users/{name}`; `verb` completes "cannot … user NAME".
async fn patch_user(
    client: &AdminClient,
    name: &str,
    body: Value,
    verb: &str,
) -> anyhow::Result<User> {
    client
        .fetch(
            Method::PATCH,
            &user_path(name),
            Some(&body),
            &format!("{verb} user {name}"),
            Subject::User(name),
        )
        .await
}

async fn run_revoke(client: &AdminClient, args: RevokeArgs) -> anyhow::Result<String> {
    let RevokeArgs {
        jti,
        sid,
        user,
        token,
        reason,
    } = args;
    let (field, value) = match (jti, sid, user, token) {
        (Some(jti), None, None, None) => ("jti", jti),
        (None, Some(sid), None, None) => ("sid", sid),
        (None, None, Some(user), None) => ("username", user),
        (None, None, None, Some(token)) if token == "-" => ("token", token_from_stdin()?),
        (None, None, None, Some(token)) => ("token", token),
        // clap's group makes this unreachable; say so rather than panic.
        _ => bail!("give exactly one of --jti, --sid, --user or --token"),
    };
    let mut body = json!({ field: value });
    if let Some(reason) = reason {
        body["reason"] = Value::String(reason);
    }
    let (action, subject) = match field {
        "username" => (
            format!("revoke the sessions of user {value}"),
            Subject::User(&value),
        ),
        "token" => ("revoke the token".to_owned(), Subject::Other),
        _ => (format!("revoke {field} {value}"), Subject::Other),
    };
    let revoked: Revoked = client
        .fetch(
            Method::POST,
            "/admin/v1/revocations",
            Some(&body),
            &action,
            subject,
        )
        .await?;
    let id = cell(&revoked.revoked);
    Ok(match revoked.kind.as_str() {
        "user" => format!("revoked every session of user {id}\n"),
        "sid" => format!("revoked session (sid) {id}\n"),
        "jti" if field == "token" => format!("revoked the token: jti {id}\n"),
        "jti" => format!("revoked token (jti) {id}\n"),
        other => format!("revoked {} {id}\n", cell(other)),
    })
}

/// A token piped in (`--token -`): the first line, surrounding whitespace removed.
fn token_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the token from standard input")?;
    let token = line.trim();
    if token.is_empty() {
        bail!("no token on standard input");
    }
    Ok(token.to_owned())
}

async fn list_revocations(client: &AdminClient, json: bool) -> anyhow::Result<String> {
    let entries = all_pages(
        client,
        "/admin/v1/revocations",
        "revocations",
        "list revocations",
    )
    .await?;
    if json {
        return pretty_json(&entries);
    }
    let rows = entries
        .into_iter()
        .map(serde_json::from_value::<Revocation>)
        .collect::<Result<Vec<_>, _>>()
        .context("cannot list revocations: unexpected answer from authd")?
        .iter()
        .map(|entry| {
            vec![
                cell(&entry.kind),
                cell(&entry.id),
                cell(&entry.revoked_at),
                cell(&entry.expires_at),
                entry.reason.as_deref().map_or_else(|| "-".to_owned(), cell),
            ]
        })
        .collect();
    Ok(table(
        &["KIND", "ID", "REVOKED_AT", "EXPIRES_AT", "REASON"],
        rows,
    ))
}

/// Every item of a paged list (`{key: [...], "next": cursor | null}`), following `next`.
async fn all_pages(
    client: &AdminClient,
    path: &str,
    key: &str,
    action: &str,
) -> anyhow::Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let url = match &after {
            Some(cursor) => format!("{path}?limit={PAGE_LIMIT}&after={}", encode(cursor)),
            None => format!("{path}?limit={PAGE_LIMIT}"),
        };
        let mut page: Value = client
            .fetch(Method::GET, &url, None, action, Subject::Other)
            .await?;
        match page.get_mut(key).map(Value::take) {
            Some(Value::Array(page_items)) => items.extend(page_items),
            _ => bail!("cannot {action}: unexpected answer from authd (no {key:?} list)"),
        }
        let next = match page.get("next") {
            Some(Value::String(next)) => next.clone(),
            Some(Value::Null) | None => return Ok(items),
            Some(_) => bail!("cannot {action}: unexpected answer from authd (bad \"next\")"),
        };
        // A cursor that does not move would loop forever.
        if after.as_deref() == Some(next.as_str()) {
            bail!("cannot {action}: authd returned the same page cursor twice");
        }
        after = Some(next);
    }
}

/// Pretty JSON with a final newline.
fn pretty_json<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(value).context("cannot format JSON")?;
    text.push('\n');
    Ok(text)
}

/// Columns padded to the widest cell, separated by two spaces; no header when `header` is
/// empty.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
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
fn cell(value: &str) -> String {
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

fn roles_cell(roles: &[String]) -> String {
    if roles.is_empty() {
        "-".to_owned()
    } else {
        cell(&roles.join(","))
    }
}

fn yes_no(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

/// Writes the command's output; a closed pipe (`authd user list | head`) is not an error.
fn emit(out: &str) -> anyhow::Result<()> {
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

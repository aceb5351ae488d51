//! `authd revoke` and `authd revocations list`: one revocation by jti, sid, user or whole
//! token (read from stdin with `-`), and the list of revocations in force.

use std::io::BufRead as _;

use anyhow::{Context as _, bail};
use clap::{ArgGroup, Subcommand};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::block_on;
use super::client::{AdminClient, Subject};
use super::output::{cell, emit, pretty_json, table};
use crate::config::Config;

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
    let entries = client
        .all_pages("/admin/v1/revocations", "revocations", "list revocations")
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

//! `authd user …`: the subcommands and their arguments, one admin API call each, and the
//! sentence or table each prints. Passwords are read by `password` and never
//! printed.

use anyhow::Context as _;
use clap::{ArgGroup, Subcommand};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::client::{AdminClient, Subject, encode};
use super::output::{cell, emit, pretty_json, table, yes_no};
use super::{block_on, password};
use crate::config::Config;

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
    /// Reset a user's second factor: TOTP and recovery codes removed, every session
    /// ended (the user logs in with the password alone and may enrol again).
    MfaReset { name: String },
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

/// A user object of the admin API.
#[derive(Deserialize)]
struct User {
    username: String,
    roles: Vec<String>,
    disabled: bool,
    created_at: String,
    #[serde(default)]
    mfa: bool,
}

/// Runs `authd user …` against the daemon that `config` describes.
pub fn user(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    let client = AdminClient::new(config)?;
    let out = block_on(run_user(&client, command))??;
    emit(&out)
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
            let users = client
                .all_pages("/admin/v1/users", "users", "list users")
                .await?;
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
                vec!["mfa".to_owned(), yes_no(user.mfa).to_owned()],
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
        UserCommand::MfaReset { name } => {
            client
                .call::<Value>(
                    Method::DELETE,
                    &format!("{}/mfa", user_path(&name)),
                    None,
                    &format!("reset the second factor of {name}"),
                    Subject::User(&name),
                )
                .await?;
            Ok(format!(
                "reset the second factor of {}: TOTP and recovery codes removed, every session ended\n",
                cell(&name.to_ascii_lowercase())
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

/// The roles as one cell: comma-separated, `-` for none.
fn roles_cell(roles: &[String]) -> String {
    if roles.is_empty() {
        "-".to_owned()
    } else {
        cell(&roles.join(","))
    }
}

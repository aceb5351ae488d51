//! `authd cluster status`: the deployment's live members as the daemon's admin listener
//! reports them (`GET /admin/v1/cluster`), one line each, marking the ones whose key set
//! differs from the rest.

use std::collections::HashMap;

use clap::Subcommand;
use reqwest::Method;
use serde::Deserialize;

use super::block_on;
use super::client::{AdminClient, Subject};
use super::output::{cell, emit, table};
use crate::config::Config;

/// `authd cluster …`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// List the live members, one line each: node, public address, version, signing kid,
    /// and `keyset differs` where a member's key set is not the others'.
    Status,
}

/// The answer of `GET /admin/v1/cluster`.
#[derive(Deserialize)]
struct Cluster {
    members: Vec<Member>,
}

/// A member of `GET /admin/v1/cluster` (the fields the status line shows).
#[derive(Deserialize)]
struct Member {
    node: String,
    public_addr: String,
    version: String,
    signing_kid: String,
    keyset: String,
}

/// Runs `authd cluster …` against the daemon that `config` describes.
pub fn cluster(config: &Config, command: ClusterCommand) -> anyhow::Result<()> {
    let client = AdminClient::new(config)?;
    let out = match command {
        ClusterCommand::Status => block_on(status(&client))??,
    };
    emit(&out)
}

async fn status(client: &AdminClient) -> anyhow::Result<String> {
    let cluster: Cluster = client
        .fetch(
            Method::GET,
            "/admin/v1/cluster",
            None,
            "read the cluster's members",
            Subject::Other,
        )
        .await?;
    Ok(status_lines(&cluster.members))
}

/// One aligned line per member, `keyset differs` appended where [`differs`] says so.
fn status_lines(members: &[Member]) -> String {
    let marks = differs(members);
    let rows = members
        .iter()
        .zip(marks)
        .map(|(member, differs)| {
            let mut row = vec![
                cell(&member.node),
                cell(&member.public_addr),
                cell(&member.version),
                cell(&member.signing_kid),
            ];
            if differs {
                row.push("keyset differs".to_owned());
            }
            row
        })
        .collect();
    table(&[], rows)
}

/// Which members to mark: those whose key set is not the one most members hold. When no
/// key set is held by more members than every other (two members, two sets), no side can
/// be called the odd one out, and every member whose set another member lacks is marked.
fn differs(members: &[Member]) -> Vec<bool> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for member in members {
        *counts.entry(member.keyset.as_str()).or_default() += 1;
    }
    if counts.len() <= 1 {
        return vec![false; members.len()];
    }
    let most = counts.values().copied().max().unwrap_or(0);
    let leaders: Vec<&str> = counts
        .iter()
        .filter(|(_, count)| **count == most)
        .map(|(keyset, _)| *keyset)
        .collect();
    match leaders.as_slice() {
        [majority] => members.iter().map(|m| m.keyset != *majority).collect(),
        _ => vec![true; members.len()],
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn member(node: &str, keyset: &str) -> Member {
        Member {
            node: node.to_owned(),
            public_addr: format!("127.0.0.1:80{node}"),
            version: "0.1.0".to_owned(),
            signing_kid: "k1".to_owned(),
            keyset: keyset.to_owned(),
        }
    }

    #[test]
    fn the_member_outside_the_majority_keyset_is_marked() {
        let members = [member("21", "A"), member("22", "B"), member("23", "A")];

        assert_eq!(
            status_lines(&members),
            "21  127.0.0.1:8021  0.1.0  k1\n\
             22  127.0.0.1:8022  0.1.0  k1  keyset differs\n\
             23  127.0.0.1:8023  0.1.0  k1\n"
        );
    }

    #[test]
    fn equal_keysets_mark_nobody_and_a_tie_marks_everybody() {
        let same = [member("1", "A"), member("2", "A")];
        assert_eq!(differs(&same), [false, false]);
        assert_eq!(differs(&[member("1", "A")]), [false]);
        let tie = [member("1", "A"), member("2", "B")];
        assert_eq!(differs(&tie), [true, true]);
    }

    #[test]
    fn server_values_cannot_move_the_terminal() {
        let mut odd = member("1", "A");
        odd.node = "evil\u{1b}[2J".to_owned();

        let text = status_lines(&[odd]);

        assert!(!text.contains('\u{1b}'), "{text:?}");
    }
}

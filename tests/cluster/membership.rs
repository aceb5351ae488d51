//! `GET /admin/v1/cluster` (API.md, admin table): the live instances — each within 2 s of
//! its start, with its own `node` and `public_addr` — and a killed one gone within 30 s.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{Daemon, within_timeout};
use crate::deployment::{Deployment, SERIAL, within};
use crate::need_etcd;

/// `GET /admin/v1/cluster` on `node`.
async fn cluster(node: &Daemon) -> Value {
    let response = node
        .admin_request(Method::GET, "/admin/v1/cluster")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// The `public_addr` of every member `node` lists.
async fn listed_addrs(node: &Daemon) -> HashSet<String> {
    cluster(node).await["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| {
            member["public_addr"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn the_cluster_route_lists_every_live_instance_and_drops_a_killed_one() {
    need_etcd!();
    let _serial = SERIAL.lock().await;
    within_timeout(async {
        let mut d = Deployment::start(17, &[]).await;
        let all: HashSet<String> = (0..3).map(|i| d.node(i).public_addr().to_owned()).collect();
        assert_eq!(all.len(), 3);

        // Every instance lists all three within 2 s of the last one's start.
        let deadline = d.nodes[2].started + Duration::from_secs(2);
        for i in 0..3 {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            within(
                left,
                &format!("3 members listed on authd {i} within 2 s of the last start"),
                async || listed_addrs(d.node(i)).await == all,
            )
            .await;
        }
        let listed = cluster(d.node(0)).await;
        assert_eq!(listed["backend"], "etcd", "{listed}");
        let members = listed["members"].as_array().unwrap();
        let nodes: HashSet<&str> = members.iter().filter_map(|m| m["node"].as_str()).collect();
        assert_eq!(nodes.len(), 3, "one node id each: {listed}");
        for member in members {
            for field in [
                "version",
                "started_at",
                "last_seen",
                "signing_kid",
                "keyset",
            ] {
                assert!(member[field].is_string(), "{field} of {member}");
            }
        }

        let gone = d.node(2).public_addr().to_owned();
        d.kill_node(2);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for i in 0..2 {
            within(
                deadline.saturating_duration_since(tokio::time::Instant::now()),
                &format!("the killed one gone on authd {i}"),
                async || !listed_addrs(d.node(i)).await.contains(&gone),
            )
            .await;
        }
        let left = listed_addrs(d.node(0)).await;
        assert_eq!(left.len(), 2, "{left:?}");
    })
    .await;
}

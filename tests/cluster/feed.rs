//! The revocation feed in a cluster (API.md "Revocation feed", "Cluster mode"): a client
//! following the feed on one instance gets every revocation made on another within 1 s of
//! its `200`, a revoke-all as the `sid` events of the sessions it ended, and a cursor one
//! instance made resumes on any other (cursors carry the deployment's epoch).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::common::client::{SseReader, feed_token};
use crate::common::{claims, text, within_timeout};
use crate::deployment::{Deployment, SERIAL};
use crate::need_etcd;

/// How long a revocation may take to reach a feed client on another instance.
const DELIVERY: Duration = Duration::from_secs(1);

/// The feed token every instance shares (copied from the first, as the admin token is).
fn token(d: &Deployment) -> String {
    feed_token(&d.nodes[0].dir.path().join("data/feed.token"))
}

/// The `data` of the next event of `reader`, which must come within `limit`.
async fn next_data(reader: &mut SseReader, limit: Duration) -> (String, Value) {
    let event = reader.next_event(limit).await;
    let data: Value = serde_json::from_str(&event.data).unwrap();
    (event.id.unwrap_or_default(), data)
}

#[tokio::test]
async fn a_revocation_on_one_instance_reaches_feed_clients_on_the_others_within_1s() {
    need_etcd!();
    let _serial = SERIAL.lock().await;
    within_timeout(async {
        let d = Deployment::start(19, &[]).await;
        let token = token(&d);
        let a = d.node(0);
        a.add_user("alice", &[]).await;
        let sessions = [a.login("alice").await, a.login("alice").await];

        // A follower on B, from now on (a long-poll gives the current cursor).
        let current: Value = d
            .node(1)
            .feed_poll(&token, "?wait=0s")
            .await
            .json()
            .await
            .unwrap();
        let start = text(&current["next"]).to_owned();
        let response = d
            .node(1)
            .feed(Some(&token), &format!("?after={start}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut on_b = SseReader::new(response);

        // A jti revoked on A: on B within 1 s of the 200.
        let revoked = a.revoke(json!({"jti": "cluster-jti"})).await;
        assert_eq!(revoked.status(), StatusCode::OK);
        let answered = Instant::now();
        let (jti_cursor, data) = next_data(&mut on_b, DELIVERY * 5).await;
        assert!(
            answered.elapsed() <= DELIVERY,
            "{:?} after the 200",
            answered.elapsed()
        );
        assert_eq!(
            (text(&data["kind"]), text(&data["id"])),
            ("jti", "cluster-jti")
        );

        // Every session of alice revoked on A: one sid event each, on B.
        let revoked = a.revoke(json!({"username": "alice"})).await;
        assert_eq!(revoked.status(), StatusCode::OK);
        let answered = Instant::now();
        let mut sids = Vec::new();
        for _ in &sessions {
            let (_, data) = next_data(&mut on_b, DELIVERY * 5).await;
            assert_eq!(text(&data["kind"]), "sid", "{data}");
            sids.push(text(&data["id"]).to_owned());
        }
        assert!(
            answered.elapsed() <= DELIVERY,
            "{:?} after the 200",
            answered.elapsed()
        );
        let mut expected: Vec<String> = sessions
            .iter()
            .map(|s| text(&claims(text(&s["access_token"]))["sid"]).to_owned())
            .collect();
        expected.sort();
        sids.sort();
        assert_eq!(sids, expected);

        // B's cursor resumes on C: only what came after it.
        let after_jti: Value = d
            .node(2)
            .feed_poll(&token, &format!("?after={jti_cursor}&wait=0s"))
            .await
            .json()
            .await
            .unwrap();
        let resumed: Vec<&str> = after_jti["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| text(&e["kind"]))
            .collect();
        assert_eq!(resumed, ["sid", "sid"], "{after_jti}");
    })
    .await;
}

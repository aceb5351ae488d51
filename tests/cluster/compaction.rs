//! A watch cut by compaction resyncs from a snapshot by itself (API.md "Cluster mode on
//! etcd"): an instance paused (SIGSTOP) while others revoke and write, and etcd is compacted
//! past everything it saw, refuses the revoked token soon after it runs again.
//!
//! So that its watch cannot simply carry on (the events might wait in its socket buffers),
//! B talks to one etcd member only, and that member is killed and restarted while B is
//! stopped: B must resume its watch after the last revision it saw, which is compacted. A,
//! which writes meanwhile, talks to the other two (what one member down does to an instance
//! that knows it is `failover`'s matter).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{PASSWORD, claims, text, within_timeout};
use crate::deployment::{Deployment, SERIAL, verify_status, within};
use crate::need_etcd;

#[tokio::test]
async fn an_instance_paused_across_a_compaction_resyncs_and_refuses_what_was_revoked_meanwhile() {
    need_etcd!();
    let _serial = SERIAL.lock().await;
    within_timeout(async {
        let mut d = Deployment::start(13, &[]).await;
        // Not the leader: killing that one would fail the writes below in its election.
        let leader = d.etcd.leader();
        let pinned = (0..3).rev().find(|&m| Some(m) != leader).unwrap();
        let only = format!("[\"{}\"]", d.etcd.endpoint(pinned));
        let others: Vec<String> = (0..3)
            .filter(|&m| m != pinned)
            .map(|m| format!("\"{}\"", d.etcd.endpoint(m)))
            .collect();
        let others = format!("[{}]", others.join(", "));
        d.reconfigure_node(1, &[("endpoints", &only)]).await;
        d.reconfigure_node(0, &[("endpoints", &others)]).await;
        d.node(0).add_user("alice", &[]).await;
        let access = d.node(0).access_token("alice", PASSWORD).await;
        let kept = d.node(0).access_token("alice", PASSWORD).await;
        // B knows the session before it stops.
        assert_eq!(verify_status(d.node(1), &access).await, StatusCode::OK);
        assert_eq!(verify_status(d.node(1), &kept).await, StatusCode::OK);
        let paused_at = d.etcd.revision();

        d.node(1).signal("STOP");
        d.etcd.kill(pinned);
        let sid = text(&claims(&access)["sid"]).to_owned();
        let response = d.node(0).revoke(json!({"sid": sid})).await;
        assert_eq!(response.status(), StatusCode::OK, "revoke on A");
        for n in 0..20 {
            d.node(0).add_user(&format!("meanwhile-{n}"), &[]).await;
        }
        let compacted = d.etcd.compact_latest();
        assert!(compacted > paused_at, "the writes moved etcd on");
        d.etcd.restart(pinned);
        d.node(1).signal("CONT");

        within(
            Duration::from_secs(5),
            "the revoked token refused on B",
            async || verify_status(d.node(1), &access).await == StatusCode::UNAUTHORIZED,
        )
        .await;
        // Resynced, not emptied: the untouched session still works there, and so do the
        // users written while it was stopped.
        within(
            Duration::from_secs(5),
            "the other session accepted on B",
            async || verify_status(d.node(1), &kept).await == StatusCode::OK,
        )
        .await;
        assert_eq!(
            d.node(1).try_login("meanwhile-19", PASSWORD).await.status(),
            StatusCode::OK,
            "a user created while B was stopped"
        );
    })
    .await;
}

//! A watch cut by compaction resyncs from a snapshot by itself (API.md "Cluster mode on
//! etcd"): an instance paused (SIGSTOP) while others revoke and write, and etcd is compacted
//! past everything it saw, refuses the revoked token soon after it runs again.

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
        let d = Deployment::start(13, &[]).await;
        let (a, b) = (d.node(0), d.node(1));
        a.add_user("alice", &[]).await;
        let access = a.access_token("alice", PASSWORD).await;
        let kept = a.access_token("alice", PASSWORD).await;
        // B knows the session before it stops.
        assert_eq!(verify_status(b, &access).await, StatusCode::OK);
        assert_eq!(verify_status(b, &kept).await, StatusCode::OK);
        let paused_at = d.etcd.revision();

        b.signal("STOP");
        let sid = text(&claims(&access)["sid"]).to_owned();
        let response = a.revoke(json!({"sid": sid})).await;
        assert_eq!(response.status(), StatusCode::OK, "revoke on A");
        for n in 0..20 {
            a.add_user(&format!("meanwhile-{n}"), &[]).await;
        }
        let compacted = d.etcd.compact_latest();
        assert!(compacted > paused_at, "the writes moved etcd on");
        b.signal("CONT");

        within(
            Duration::from_secs(5),
            "the revoked token refused on B",
            async || verify_status(b, &access).await == StatusCode::UNAUTHORIZED,
        )
        .await;
        // Resynced, not emptied: the untouched session still works there, and so do the
        // users written while it was stopped.
        within(
            Duration::from_secs(5),
            "the other session accepted on B",
            async || verify_status(b, &kept).await == StatusCode::OK,
        )
        .await;
        assert_eq!(
            b.try_login("meanwhile-19", PASSWORD).await.status(),
            StatusCode::OK,
            "a user created while B was stopped"
        );
    })
    .await;
}

//! Without an etcd quorum (API.md "Cluster mode on etcd"): a write answers `503` +
//! `Retry-After` within `etcd.request_timeout`; `/v1/verify` keeps answering from the view
//! until it is older than `etcd.max_staleness`, then `503` (fail closed), and `/readyz` too;
//! once the members are back, verify and writes succeed again. A stale instance ends its
//! revocation-feed streams and refuses new ones.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::time::Instant;

use crate::common::client::{SseRead, SseReader, feed_token};
use crate::common::{PASSWORD, POLL, header_str, within_timeout};
use crate::deployment::{Deployment, SERIAL, public_status, verify_status, within};
use crate::need_etcd;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_STALENESS: Duration = Duration::from_secs(3);
/// Each instance confirms its view once a second (its heartbeat coming back), so the view
/// was confirmed at most about this long before the quorum went.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Scheduling and request time on a shared machine.
const SLACK: Duration = Duration::from_millis(1500);
/// How much earlier than `max_staleness` after its last confirmation a view may be refused
/// (the confirmation's own round trip).
const EARLY: Duration = Duration::from_millis(500);

#[tokio::test]
async fn without_quorum_writes_answer_503_verify_serves_until_max_staleness_then_503_and_recovers()
{
    need_etcd!();
    let _serial = SERIAL.lock().await;
    within_timeout(async {
        let mut d = Deployment::start(
            12,
            &[("request_timeout", "\"2s\""), ("max_staleness", "\"3s\"")],
        )
        .await;
        d.node(0).add_user("alice", &[]).await;
        let access = d.node(0).access_token("alice", PASSWORD).await;
        for i in 0..3 {
            assert_eq!(verify_status(d.node(i), &access).await, StatusCode::OK, "authd {i}");
        }
        // A revocation-feed stream on C, which a stale view must end (API.md "Revocation
        // feed": "a stale instance ends them and answers 503").
        let feed_token = feed_token(&d.nodes[2].dir.path().join("data/feed.token"));
        let stream = d.node(2).feed(Some(&feed_token), "").send().await.unwrap();
        assert_eq!(stream.status(), StatusCode::OK, "the feed on C");
        let mut stream = SseReader::new(stream);

        d.etcd.kill(1);
        d.etcd.kill(2);
        let lost = Instant::now();

        // A write on A while B's verify is watched, both from the moment the quorum went.
        let write = async {
            let sent = Instant::now();
            let response = d.node(0).create_user("bob", &[]).await;
            let took = sent.elapsed();
            let status = response.status();
            let retry_after = header_str(&response, "retry-after");
            (status, retry_after, took)
        };
        let stale = async {
            loop {
                let status = verify_status(d.node(1), &access).await;
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    return lost.elapsed();
                }
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "verify on B {:?} after the quorum went",
                    lost.elapsed()
                );
                assert!(
                    lost.elapsed() < MAX_STALENESS + SLACK,
                    "verify on B still 200 {:?} after the quorum went (max_staleness {MAX_STALENESS:?})",
                    lost.elapsed()
                );
                tokio::time::sleep(POLL).await;
            }
        };
        let ((status, retry_after, took), stale_after) = tokio::join!(write, stale);

        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "a write without quorum");
        assert!(retry_after.is_some(), "Retry-After on the write's 503");
        assert!(
            took <= REQUEST_TIMEOUT + SLACK,
            "the write's 503 took {took:?} (request_timeout {REQUEST_TIMEOUT:?})"
        );
        assert!(
            stale_after + HEARTBEAT + EARLY >= MAX_STALENESS,
            "verify on B refused already {stale_after:?} after the quorum went (max_staleness {MAX_STALENESS:?})"
        );
        for i in 0..3 {
            within(MAX_STALENESS + SLACK, &format!("verify 503 on authd {i}"), async || {
                verify_status(d.node(i), &access).await == StatusCode::SERVICE_UNAVAILABLE
            })
            .await;
            let response = d.node(i).verify(&access).await;
            assert!(
                header_str(&response, "retry-after").is_some(),
                "Retry-After on verify's 503, authd {i}"
            );
            assert_eq!(
                public_status(d.node(i), "/readyz").await,
                Some(StatusCode::SERVICE_UNAVAILABLE),
                "/readyz on authd {i}"
            );
        }
        // C's feed stream has ended (its writer checks the view every second), and a new
        // feed request there is 503.
        loop {
            match stream.next_by(Instant::now() + SLACK).await {
                SseRead::Ended | SseRead::Failed(_) => break,
                SseRead::Item(_) => continue,
                SseRead::TimedOut => panic!("the feed stream on a stale C still runs"),
            }
        }
        let refused = d.node(2).feed_poll(&feed_token, "?wait=0s").await;
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE, "the feed on a stale C");

        d.etcd.restart_all(&[1, 2]);
        for i in 0..3 {
            within(Duration::from_secs(15), &format!("verify 200 again on authd {i}"), async || {
                verify_status(d.node(i), &access).await == StatusCode::OK
            })
            .await;
            within(Duration::from_secs(5), &format!("/readyz 200 again on authd {i}"), async || {
                public_status(d.node(i), "/readyz").await == Some(StatusCode::OK)
            })
            .await;
        }
        let response = d.node(0).create_user("carol", &[]).await;
        assert_eq!(response.status(), StatusCode::CREATED, "a write after recovery");
        crate::deployment::wait_known(d.node(2), "carol").await;
        assert_eq!(
            d.node(2).try_login("carol", PASSWORD).await.status(),
            StatusCode::OK,
            "the new user logs in on C"
        );

        // The refused write is all or nothing, and the same on every instance.
        let seen: Vec<StatusCode> = {
            let mut seen = Vec::new();
            for i in 0..3 {
                seen.push(d.node(i).get_user("bob").await.status());
            }
            seen
        };
        assert!(
            seen.iter().all(|status| *status == seen[0])
                && [StatusCode::OK, StatusCode::NOT_FOUND].contains(&seen[0]),
            "the write answered 503: bob on A, B, C: {seen:?}"
        );
    })
    .await;
}

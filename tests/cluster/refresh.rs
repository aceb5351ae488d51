//! Refresh rotation is one compare-and-swap across instances (API.md "Cluster mode on
//! etcd"): of concurrent refreshes of one token on A, B and C exactly one gets `200`, the
//! others are reuse (`400 invalid_grant`), and the session is revoked — the winner's new
//! tokens too — exactly as on one node.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{Api, text, within_timeout};
use crate::deployment::{Deployment, SERIAL, verify_status, within};
use crate::need_etcd;

/// Rounds of the race: each a fresh session, so that timing varies between them.
const ROUNDS: usize = 5;

/// `POST /v1/token/refresh` on `api` once every racer is ready: (status, body).
async fn racer(
    api: Api,
    barrier: Arc<tokio::sync::Barrier>,
    refresh: String,
) -> (StatusCode, Value) {
    barrier.wait().await;
    let response = api.refresh(&refresh).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn one_refresh_token_on_three_instances_at_once_wins_once_and_revokes_the_session() {
    need_etcd!();
    let _serial = SERIAL.lock().await;
    within_timeout(async {
        let d = Deployment::start(11, &[]).await;
        d.node(0).add_user("alice", &[]).await;
        for round in 0..ROUNDS {
            let tokens = d.node(0).login("alice").await;
            let refresh = text(&tokens["refresh_token"]).to_owned();
            let barrier = Arc::new(tokio::sync::Barrier::new(3));
            let racers: Vec<_> = (0..3)
                .map(|i| tokio::spawn(racer(d.api(i), barrier.clone(), refresh.clone())))
                .collect();
            let mut outcomes = Vec::new();
            for racer in racers {
                outcomes.push(racer.await.unwrap());
            }

            let winners: Vec<&Value> = outcomes
                .iter()
                .filter(|(status, _)| *status == StatusCode::OK)
                .map(|(_, body)| body)
                .collect();
            assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
            for (status, body) in &outcomes {
                if *status != StatusCode::OK {
                    assert_eq!(
                        *status,
                        StatusCode::BAD_REQUEST,
                        "round {round}: {outcomes:?}"
                    );
                    assert_eq!(
                        body["error"], "invalid_grant",
                        "round {round}: {outcomes:?}"
                    );
                }
            }

            // The losers were reuse: the session is gone everywhere, the winner's new
            // tokens included (within the propagation bound).
            let winner = winners[0];
            for access in [&tokens["access_token"], &winner["access_token"]] {
                for i in 0..3 {
                    within(
                        Duration::from_secs(1),
                        &format!("round {round}: the raced session revoked on authd {i}"),
                        async || {
                            verify_status(d.node(i), text(access)).await == StatusCode::UNAUTHORIZED
                        },
                    )
                    .await;
                }
            }
            for i in 0..3 {
                let response = d.node(i).refresh(text(&winner["refresh_token"])).await;
                assert_eq!(
                    response.status(),
                    StatusCode::BAD_REQUEST,
                    "round {round}: the winner's new refresh token on authd {i}"
                );
            }
        }
    })
    .await;
}

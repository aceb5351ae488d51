//! Never a `2xx` for a write etcd did not commit (API.md "Cluster mode on etcd"): clients
//! create users and revoke on all three instances while the etcd leader and one authd are
//! killed; afterwards every acknowledged write is there, on the surviving instances and on
//! the killed one once it is restarted. And one member down is no outage: with a quorum
//! left, every instance writes and logs in as before.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Api, within_timeout};
use crate::deployment::{Deployment, SERIAL, list_all, within};
use crate::need_etcd;

/// The authd instance killed during the load.
const VICTIM: usize = 1;

/// What one client got acknowledged.
#[derive(Default)]
struct Acked {
    users: Vec<String>,
    jtis: Vec<String>,
}

/// Creates users and revokes (unknown) jtis on `api`, alternately, until `stop`; counts
/// acknowledgements in `count`. Errors and refusals are simply not acknowledged.
async fn client(api: Api, name: usize, stop: Arc<AtomicBool>, count: Arc<AtomicUsize>) -> Acked {
    let mut acked = Acked::default();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let user = format!("load-{name}-{n}");
        let created = api
            .admin_request(reqwest::Method::POST, "/admin/v1/users")
            .json(&json!({"username": user, "password": crate::common::PASSWORD}))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let unreachable = created.is_err();
        if created.is_ok_and(|response| response.status() == StatusCode::CREATED) {
            acked.users.push(user);
            count.fetch_add(1, Ordering::SeqCst);
        }
        let jti = format!("jti-{name}-{n}");
        let revoked = api
            .admin_request(reqwest::Method::POST, "/admin/v1/revocations")
            .json(&json!({"jti": jti}))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if revoked.is_ok_and(|response| response.status() == StatusCode::OK) {
            acked.jtis.push(jti);
            count.fetch_add(1, Ordering::SeqCst);
        }
        if unreachable {
            // The killed instance refuses connections at once: pace, do not spin.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    acked
}

/// Every acknowledged user and jti is on `api`.
async fn holds(api: &Api, users: &HashSet<String>, jtis: &HashSet<String>) -> Result<(), String> {
    let listed_users = list_all(api, "/admin/v1/users", "users", "username").await?;
    let listed_jtis = list_all(api, "/admin/v1/revocations", "revocations", "id").await?;
    let lost_users: Vec<_> = users.difference(&listed_users).collect();
    let lost_jtis: Vec<_> = jtis.difference(&listed_jtis).collect();
    if lost_users.is_empty() && lost_jtis.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "lost users {lost_users:?}, lost revocations {lost_jtis:?}"
        ))
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_the_etcd_leader_and_one_authd_killed_under_load() {
    need_etcd!();
    let _serial = SERIAL.lock().await;
    within_timeout(async {
        let mut d = Deployment::start(14, &[]).await;
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::default()).collect();
        let clients: Vec<_> = (0..3)
            .map(|i| tokio::spawn(client(d.api(i), i, stop.clone(), counts[i].clone())))
            .collect();
        let acked_by = |i: usize| counts[i].load(Ordering::SeqCst);

        within(
            Duration::from_secs(20),
            "load on every instance",
            async || (0..3).all(|i| acked_by(i) >= 10),
        )
        .await;
        let leader = d.etcd.leader().expect("an etcd leader");
        d.etcd.kill(leader);
        d.kill_node(VICTIM);
        let before: Vec<usize> = (0..3).map(acked_by).collect();
        // The survivors go on acknowledging (a new leader is elected).
        within(
            Duration::from_secs(30),
            "writes acknowledged after the kills",
            async || {
                (0..3)
                    .filter(|&i| i != VICTIM)
                    .all(|i| acked_by(i) >= before[i] + 10)
            },
        )
        .await;
        stop.store(true, Ordering::SeqCst);
        let mut users = HashSet::new();
        let mut jtis = HashSet::new();
        for client in clients {
            let acked = client.await.unwrap();
            users.extend(acked.users);
            jtis.extend(acked.jtis);
        }

        d.etcd.restart(leader);
        d.restart_node(VICTIM).await;
        assert!(!users.is_empty() && !jtis.is_empty());
        for i in 0..3 {
            // The survivors within the propagation bound; the restarted one from its snapshot.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while let Err(lost) = holds(&d.api(i), &users, &jtis).await {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "authd {i}, of {} users and {} revocations acknowledged: {lost}",
                    users.len(),
                    jtis.len()
                );
                tokio::time::sleep(crate::common::POLL).await;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn with_one_etcd_member_down_every_instance_still_writes_and_logs_in() {
    need_etcd!();
    let _serial = SERIAL.lock().await;
    within_timeout(async {
        let mut d = Deployment::start(18, &[]).await;
        // Not the leader: no election, so no write may fail for one.
        let leader = d.etcd.leader();
        let down = (0..3).find(|&m| Some(m) != leader).unwrap();
        d.etcd.kill(down);
        for round in 0..5 {
            for i in 0..3 {
                let user = format!("user-{round}-{i}");
                let response = d.node(i).create_user(&user, &[]).await;
                assert_eq!(
                    response.status(),
                    StatusCode::CREATED,
                    "creating {user} on authd {i} with etcd member {down} down"
                );
                let login = d
                    .node((i + 1) % 3)
                    .try_login(&user, crate::common::PASSWORD)
                    .await;
                assert_eq!(
                    login.status(),
                    StatusCode::OK,
                    "{user} logging in on authd {} with etcd member {down} down",
                    (i + 1) % 3
                );
            }
        }
    })
    .await;
}

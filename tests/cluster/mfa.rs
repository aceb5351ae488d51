//! The second factor in a cluster (API.md "Cluster mode on etcd" and "Second factor",
//! rev 4): `mfa_token`s live in etcd, so the second login step works on any instance, is
//! single use across all of them, and dies after 5 wrong codes however they are spread;
//! a code one instance took is used on all. `mfa.key_file` is a shared secret: a later
//! instance without it, or with another key, refuses to start naming it.
//!
//! etcd nets: 41 (three members, three instances) and 42 (one member); see `main.rs`.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::second_factor::{
    amr_of, assert_dead_mfa_token, assert_wrong_code, write_other_mfa_key,
};
use crate::common::{Daemon, EtcdCluster, refused_start, set_in_section, text, within_timeout};
use crate::deployment::{
    Deployment, SERIAL, cluster_config, copy_secrets, public_status, verify_status, wait_known,
    within, write_cluster_config,
};
use crate::need_etcd;

#[tokio::test]
async fn the_second_step_works_on_any_instance_and_wrong_codes_spread_over_all_kill_the_token() {
    need_etcd!();
    let _serial = SERIAL.lock().await;
    within_timeout(async {
        // Wrong codes are failed logins: six of them here, which the default throttle
        // (5 per name and address) would answer with 429 before the token's own limit.
        let d = Deployment::start_configured(41, &[], |config| {
            set_in_section(&config, "login", "max_failures", "20")
        })
        .await;
        let (a, b, c) = (d.node(0), d.node(1), d.node(2));
        a.add_user("alice", &[]).await;
        wait_known(b, "alice").await;
        wait_known(c, "alice").await;
        let (_, alice) = a.login_and_enrol("alice").await;
        for i in [1, 2] {
            within(
                Duration::from_secs(1),
                &format!("TOTP on as seen by authd {i}"),
                async || d.node(i).mfa_flag("alice").await,
            )
            .await;
        }

        // The password on A, the code on B.
        let mfa_token = a.password_step("alice").await;
        let code = alice.next_code();
        let tokens = b
            .login_mfa_ok(&mfa_token, &code, "A's mfa_token on B")
            .await;
        assert_eq!(amr_of(&tokens), json!(["pwd", "otp"]));
        let access = text(&tokens["access_token"]);
        assert_eq!(verify_status(c, access).await, StatusCode::OK, "on C");
        // Single use on every instance.
        let response = c.login_mfa(&mfa_token, &alice.recovery_codes[0]).await;
        assert_dead_mfa_token(response, "A's mfa_token again, on C").await;
        // The code B took is used everywhere, at once.
        let replay = c.login_with_code("alice", &code).await;
        assert_wrong_code(replay, "the code B took, again on C").await;

        // Five wrong codes over A, B and C: the token is dead on each of them.
        let mfa_token = a.password_step("alice").await;
        for (n, i) in [0, 1, 0, 1, 2].into_iter().enumerate() {
            let response = d.node(i).login_mfa(&mfa_token, &alice.wrong_code()).await;
            assert_wrong_code(response, &format!("wrong code {} on authd {i}", n + 1)).await;
        }
        for i in [1, 2, 0] {
            let response = d
                .node(i)
                .login_mfa(&mfa_token, &alice.recovery_codes[0])
                .await;
            let what = format!("a right code on the dead token, on authd {i}");
            assert_dead_mfa_token(response, &what).await;
        }
        // The code itself was right: a new token takes it.
        let mfa_token = c.password_step("alice").await;
        let tokens = a
            .login_mfa_ok(&mfa_token, &alice.recovery_codes[0], "a fresh token")
            .await;
        assert_eq!(tokens["recovery_codes_left"], 9, "{tokens}");
    })
    .await;
}

/// A folder for another instance of the deployment of `first`: `config`, and every secret
/// of `first`'s folder.
fn later_instance(first: &Path, config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_cluster_config(dir.path(), config);
    copy_secrets(first, dir.path(), true);
    dir
}

#[tokio::test]
async fn an_instance_with_a_missing_or_different_mfa_key_file_refuses_to_start_naming_it() {
    need_etcd!();
    let _serial = SERIAL.lock().await;
    within_timeout(async {
        let etcd = EtcdCluster::start(42, 1);
        let config = cluster_config(&etcd, &[]);
        let first = tempfile::tempdir().unwrap();
        write_cluster_config(first.path(), &config);
        let _first = Daemon::start(first.path()).await;
        assert!(
            first.path().join("data/mfa.key").is_file(),
            "made by the first"
        );

        // Every other secret copied, the key forgotten.
        let missing = later_instance(first.path(), &config);
        let key_file = missing.path().join("data/mfa.key");
        std::fs::remove_file(&key_file).unwrap();
        let stderr = refused_start(Daemon::command(missing.path()), "without the mfa key").await;
        assert!(stderr.contains("mfa.key_file"), "{stderr}");
        assert!(stderr.contains("data/mfa.key"), "{stderr}");
        assert!(
            !key_file.exists(),
            "a later instance must not make a key of its own"
        );

        // A key of its own instead of the deployment's.
        let different = later_instance(first.path(), &config);
        let other = write_other_mfa_key(&different.path().join("data/mfa.key"));
        let serve = Daemon::command(different.path());
        let stderr = refused_start(serve, "with a different mfa key").await;
        assert!(stderr.contains("mfa.key_file"), "{stderr}");
        assert!(!stderr.contains(&other), "never the key itself:\n{stderr}");

        // The deployment's key: it starts.
        let same = later_instance(first.path(), &config);
        let node = Daemon::start(same.path()).await;
        within(Duration::from_secs(10), "/readyz 200", async || {
            public_status(&node, "/readyz").await == Some(StatusCode::OK)
        })
        .await;
    })
    .await;
}

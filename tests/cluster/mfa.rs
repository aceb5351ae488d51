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
    amr, assert_wrong_code, enrol, login_with_code, mfa_flag, password_step, second_step,
    second_step_ok,
};
use crate::common::{Daemon, EtcdCluster, assert_error, set_in_section, text, within_timeout};
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
        let mut alice = enrol(a, "alice").await;
        for i in [1, 2] {
            within(
                Duration::from_secs(1),
                &format!("TOTP on as seen by authd {i}"),
                async || mfa_flag(d.node(i), "alice").await,
            )
            .await;
        }

        // The password on A, the code on B.
        let mfa_token = password_step(a, "alice").await;
        let code = alice.next_code().await;
        let tokens = second_step_ok(b, &mfa_token, &code, "A's mfa_token on B").await;
        let access = text(&tokens["access_token"]);
        assert_eq!(amr(access), json!(["pwd", "otp"]));
        assert_eq!(verify_status(c, access).await, StatusCode::OK, "on C");
        // Single use on every instance.
        assert_error(
            second_step(c, &mfa_token, &alice.recovery_codes[0]).await,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        )
        .await;
        // The code B took is used everywhere, at once.
        let replay = login_with_code(c, "alice", Some(&code)).await;
        assert_wrong_code(replay, "the code B took, again on C").await;

        // Five wrong codes over A, B and C: the token is dead on each of them.
        let mfa_token = password_step(a, "alice").await;
        for (n, i) in [0, 1, 0, 1, 2].into_iter().enumerate() {
            let response = second_step(d.node(i), &mfa_token, &alice.wrong_code()).await;
            assert_wrong_code(response, &format!("wrong code {} on authd {i}", n + 1)).await;
        }
        for i in [1, 2, 0] {
            let response = second_step(d.node(i), &mfa_token, &alice.recovery_codes[0]).await;
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(
                (status, body["error"].as_str()),
                (StatusCode::BAD_REQUEST, Some("invalid_grant")),
                "a right code on the dead token, on authd {i}: {body}"
            );
        }
        // The code itself was right: a new token takes it.
        let mfa_token = password_step(c, "alice").await;
        let tokens = second_step_ok(a, &mfa_token, &alice.recovery_codes[0], "a fresh token").await;
        assert_eq!(tokens["recovery_codes_left"], 9, "{tokens}");
    })
    .await;
}

/// `serve` on `dir`, expected to refuse: its stderr.
async fn refused(dir: &Path, what: &str) -> String {
    let mut daemon = Daemon::spawn(Daemon::command(dir));
    let status = daemon.wait_exit().await;
    let stderr = daemon.all_stderr().await.join("\n");
    assert!(!status.success(), "started {what}:\n{stderr}");
    stderr
}

#[tokio::test]
async fn an_instance_with_a_missing_or_different_mfa_key_file_refuses_to_start_naming_it() {
    need_etcd!();
    let _serial = SERIAL.lock().await;
    within_timeout(async {
        use base64::Engine as _;
        use std::os::unix::fs::PermissionsExt as _;
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
        let missing = tempfile::tempdir().unwrap();
        write_cluster_config(missing.path(), &config);
        copy_secrets(first.path(), missing.path(), true);
        let key_file = missing.path().join("data/mfa.key");
        std::fs::remove_file(&key_file).unwrap();
        let stderr = refused(missing.path(), "without the mfa key").await;
        assert!(stderr.contains("mfa.key_file"), "{stderr}");
        assert!(stderr.contains("data/mfa.key"), "{stderr}");
        assert!(
            !key_file.exists(),
            "a later instance must not make a key of its own"
        );

        // A key of its own instead of the deployment's.
        let different = tempfile::tempdir().unwrap();
        write_cluster_config(different.path(), &config);
        copy_secrets(first.path(), different.path(), true);
        let mut other = [0u8; 32];
        getrandom::fill(&mut other).unwrap();
        let other = base64::engine::general_purpose::STANDARD.encode(other);
        let key_file = different.path().join("data/mfa.key");
        std::fs::write(&key_file, format!("{other}\n")).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let stderr = refused(different.path(), "with a different mfa key").await;
        assert!(stderr.contains("mfa.key_file"), "{stderr}");
        assert!(!stderr.contains(&other), "never the key itself:\n{stderr}");

        // The deployment's key: it starts.
        let same = tempfile::tempdir().unwrap();
        write_cluster_config(same.path(), &config);
        copy_secrets(first.path(), same.path(), true);
        let node = Daemon::start(same.path()).await;
        within(Duration::from_secs(10), "/readyz 200", async || {
            public_status(&node, "/readyz").await == Some(StatusCode::OK)
        })
        .await;
    })
    .await;
}

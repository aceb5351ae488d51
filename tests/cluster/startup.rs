//! Starting an instance (API.md "Cluster mode on etcd"): `serve` starts without etcd
//! (`/healthz` `200`, `/readyz` and the store's routes `503`) and connects by itself; an
//! instance whose secret file is missing, or differs from the deployment's, refuses to
//! start naming it.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;

use crate::common::{Daemon, EtcdCluster, PASSWORD, config_with, within_timeout};
use crate::deployment::{
    SERIAL, cluster_config, copy_secrets, public_status, within, write_cluster_config,
};
use crate::need_etcd;

/// Secret files made by any authd (one on sled, stopped again): what an operator has in
/// hand before the deployment's etcd exists.
async fn made_secrets() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_cluster_config(dir.path(), &config_with(&[]));
    let daemon = Daemon::start(dir.path()).await;
    daemon.kill_hard();
    dir
}

#[tokio::test]
async fn serve_starts_before_etcd_answers_503_where_it_needs_the_store_and_connects_by_itself() {
    need_etcd!();
    let _serial = SERIAL.lock().await;
    within_timeout(async {
        let secrets = made_secrets().await;
        let mut etcd = EtcdCluster::start_later(15);
        let dir = tempfile::tempdir().unwrap();
        write_cluster_config(dir.path(), &cluster_config(&etcd, &[]));
        copy_secrets(secrets.path(), dir.path(), true);

        let mut node = Daemon::spawn(Daemon::command(dir.path()));
        node.wait_until_listening(dir.path()).await;
        assert_eq!(public_status(&node, "/healthz").await, Some(StatusCode::OK));
        assert_eq!(
            public_status(&node, "/readyz").await,
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(
            node.try_login("alice", PASSWORD).await.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "login before the store is loaded"
        );

        // Blocks this test's thread only: the daemon is another process.
        etcd.start_now();
        within(
            Duration::from_secs(20),
            "/readyz 200 once etcd runs",
            async || public_status(&node, "/readyz").await == Some(StatusCode::OK),
        )
        .await;
        node.add_user("alice", &[]).await;
        assert_eq!(
            node.try_login("alice", PASSWORD).await.status(),
            StatusCode::OK,
            "login once etcd runs"
        );
    })
    .await;
}

#[tokio::test]
async fn an_instance_with_a_missing_or_different_admin_or_feed_token_refuses_to_start_naming_it() {
    need_etcd!();
    let _serial = SERIAL.lock().await;
    within_timeout(async {
        use std::os::unix::fs::PermissionsExt as _;
        let etcd = EtcdCluster::start(16, 1);
        let config = cluster_config(&etcd, &[]);
        let first = tempfile::tempdir().unwrap();
        write_cluster_config(first.path(), &config);
        let _first = Daemon::start(first.path()).await;

        // The keys copied, the admin token forgotten.
        let missing = tempfile::tempdir().unwrap();
        write_cluster_config(missing.path(), &config);
        copy_secrets(first.path(), missing.path(), false);
        let mut refused = Daemon::spawn(Daemon::command(missing.path()));
        let status = refused.wait_exit().await;
        let stderr = refused.all_stderr().await.join("\n");
        assert!(
            !status.success(),
            "started without the admin token:\n{stderr}"
        );
        assert!(stderr.contains("admin.token_file"), "{stderr}");
        assert!(stderr.contains("data/admin.token"), "{stderr}");
        assert!(
            !missing.path().join("data/admin.token").exists(),
            "a later instance must not create its own admin token"
        );

        // A token of its own instead of the deployment's.
        let different = tempfile::tempdir().unwrap();
        write_cluster_config(different.path(), &config);
        copy_secrets(first.path(), different.path(), false);
        let copy_private = |name: &str, to: &Path| {
            let target = to.join("data").join(name);
            std::fs::copy(first.path().join("data").join(name), &target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        copy_private("feed.token", different.path());
        let token_file = different.path().join("data/admin.token");
        std::fs::write(&token_file, "a-different-admin-token-of-plenty-of-length\n").unwrap();
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut refused = Daemon::spawn(Daemon::command(different.path()));
        let status = refused.wait_exit().await;
        let stderr = refused.all_stderr().await.join("\n");
        assert!(
            !status.success(),
            "started with a different admin token:\n{stderr}"
        );
        assert!(stderr.contains("admin.token_file"), "{stderr}");
        assert!(
            !stderr.contains("a-different-admin-token"),
            "never the token itself:\n{stderr}"
        );

        // The admin token copied, a feed token of its own.
        let own_feed = tempfile::tempdir().unwrap();
        write_cluster_config(own_feed.path(), &config);
        copy_secrets(first.path(), own_feed.path(), false);
        copy_private("admin.token", own_feed.path());
        let token_file = own_feed.path().join("data/feed.token");
        std::fs::write(&token_file, "a-different-feed-token-of-plenty-of-length\n").unwrap();
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut refused = Daemon::spawn(Daemon::command(own_feed.path()));
        let status = refused.wait_exit().await;
        let stderr = refused.all_stderr().await.join("\n");
        assert!(
            !status.success(),
            "started with a different feed token:\n{stderr}"
        );
        assert!(stderr.contains("feed.token_file"), "{stderr}");
        assert!(!stderr.contains("a-different-feed-token"), "{stderr}");
    })
    .await;
}

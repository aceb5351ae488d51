//! Backups, restores and moving between backends with the real binary, as an operator does
//! it (API.md "Cluster mode on etcd": `authd restore`; README "Backups and moving to a
//! cluster"): `authd backup` from a running daemon, `authd restore` into a stopped one's
//! store — sled or etcd — and then every password, access token, refresh token (once),
//! session and revocation works exactly as before. Also the refusals (a store with records,
//! a cut-off or unknown file, another second-factor key) and a restore killed midway. A
//! user's second factor (rev 4) moves too: TOTP still required, its codes and unused
//! recovery codes still work, used ones still do not; only the same `mfa.key_file` opens it.
//!
//! etcd: one member on 127.0.40.1 for this binary, a prefix per site.

// The daemons under test run on the system clock, and so do the records this file writes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use reqwest::StatusCode;
use serde_json::{Value, json};

use common::etcd::EtcdCluster;
use common::second_factor::{Enrolled, amr_of, assert_wrong_code, write_other_mfa_key};
use common::{
    Daemon, PASSWORD, assert_tokens, claims, config_with, describe, etcd_config, run_cli, text,
    within_timeout, write_config,
};

/// The etcd member of this binary (`None`: etcd is not installed; etcd cases are skipped).
fn etcd() -> Option<&'static EtcdCluster> {
    static MEMBER: OnceLock<Option<EtcdCluster>> = OnceLock::new();
    MEMBER
        .get_or_init(|| {
            if !EtcdCluster::installed() {
                eprintln!("etcd not installed: the etcd cases are skipped");
                return None;
            }
            Some(EtcdCluster::start(40, 1))
        })
        .as_ref()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Sled,
    Etcd,
}

/// One installation: a folder with its config file (and, on sled, its store).
struct Site {
    dir: tempfile::TempDir,
    /// Its `etcd.prefix`, on etcd.
    prefix: Option<String>,
}

impl Site {
    /// A fresh site on `backend`; `None` when that backend cannot run here.
    fn new(backend: Backend) -> Option<Site> {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_with(&[]);
        let mut site_prefix = None;
        if backend == Backend::Etcd {
            let prefix = format!("/backup-test/{}/", authd::random::random_id(8));
            config = etcd_config(
                &config,
                &[
                    ("endpoints", &etcd()?.endpoints_toml()),
                    ("prefix", &format!("\"{prefix}\"")),
                ],
            );
            site_prefix = Some(prefix);
        }
        write_config(dir.path(), &config);
        Some(Site {
            dir,
            prefix: site_prefix,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    async fn start(&self) -> Daemon {
        Daemon::start(self.path()).await
    }

    /// The same secrets as `other` (an operator copies the key folder, the admin token
    /// and the second factor's key to the new site: a backup's second-factor records open
    /// only with the key they were sealed with).
    fn copy_secrets_from(&self, other: &Site) {
        let keys = other.path().join("data/keys");
        let to = self.path().join("data/keys");
        std::fs::create_dir_all(&to).unwrap();
        for dir in [self.path().join("data"), to.clone()] {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .unwrap();
        }
        for entry in std::fs::read_dir(&keys).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
        std::fs::copy(
            other.path().join("data/admin.token"),
            self.path().join("data/admin.token"),
        )
        .unwrap();
        self.copy_mfa_key_from(other);
    }

    /// `other`'s `mfa.key_file`, owner-only as authd makes it.
    fn copy_mfa_key_from(&self, other: &Site) {
        std::fs::create_dir_all(self.path().join("data")).unwrap();
        let to = self.path().join("data/mfa.key");
        std::fs::copy(other.path().join("data/mfa.key"), &to).unwrap();
        std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }

    fn config_file(&self) -> PathBuf {
        self.path().join("config.toml")
    }

    /// `authd restore --in BACKUP` on this site, to its end.
    fn restore(&self, backup: &Path) -> Output {
        let args = ["restore", "--in", backup.to_str().unwrap()];
        run_cli(self.path(), &args, &self.config_file())
    }

    /// [`Site::restore`], asserted to succeed.
    fn restored(&self, backup: &Path, what: &str) {
        let output = self.restore(backup);
        assert!(output.status.success(), "{what}: {}", describe(&output));
        assert!(String::from_utf8_lossy(&output.stdout).contains("restored"));
    }

    /// [`Site::restore`], asserted to be refused, writing nothing to stdout; its stderr.
    fn restore_refused(&self, backup: &Path, what: &str) -> String {
        let output = self.restore(backup);
        assert!(!output.status.success(), "{what}: {}", describe(&output));
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains("restored"),
            "{what}: {}",
            describe(&output)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// `authd backup` of `daemon` (this site's, running) into `out`.
    fn backup(&self, daemon: &Daemon, out: &Path) {
        let output = daemon.backup_cli(self.path(), out);
        assert!(output.status.success(), "{}", describe(&output));
        assert!(String::from_utf8_lossy(&output.stdout).contains("wrote a backup of"));
    }
}

async fn stop(mut daemon: Daemon) {
    daemon.stop().await;
}

/// What a site held before a move, and how to tell it still holds it.
struct Before {
    /// alice's live access token.
    alive: String,
    /// An access token whose jti was revoked.
    revoked_jti: String,
    /// An access token of a session that logged out.
    logged_out: String,
    /// An access token of carol, whose every session was revoked.
    revoked_user: String,
    /// bob's newest refresh token, never used.
    refresh: String,
    /// The first refresh token of bob's other session, rotated before the backup.
    rotated: String,
    revocations: Vec<(String, String)>,
}

async fn revocations(daemon: &Daemon) -> Vec<(String, String)> {
    let body: Value = daemon
        .list_revocations("?limit=1000")
        .await
        .json()
        .await
        .unwrap();
    let mut entries: Vec<(String, String)> = body["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (text(&r["kind"]).to_owned(), text(&r["id"]).to_owned()))
        .collect();
    entries.sort();
    entries
}

async fn populate(daemon: &Daemon) -> Before {
    for name in ["alice", "bob", "carol"] {
        daemon.add_user(name, &[]).await;
    }
    let alive = daemon.login("alice").await;
    let revoked = daemon.login("alice").await;
    let jti = claims(text(&revoked["access_token"]))["jti"].clone();
    assert_eq!(
        daemon.revoke(json!({"jti": jti})).await.status(),
        StatusCode::OK
    );
    let logged_out = daemon.login("alice").await;
    let response = daemon.logout(text(&logged_out["access_token"]), None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let carol = daemon.login("carol").await;
    let response = daemon.revoke(json!({"username": "carol"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    // Two sessions of bob: one whose rotated token is presented again (reuse ends that
    // session), one whose live refresh token is spent after the move.
    let bob = daemon.login("bob").await;
    let response = daemon.refresh(text(&bob["refresh_token"])).await;
    assert_eq!(response.status(), StatusCode::OK);
    let rotated: Value = response.json().await.unwrap();
    let bob_again = daemon.login("bob").await;
    let response = daemon.refresh(text(&bob_again["refresh_token"])).await;
    assert_eq!(response.status(), StatusCode::OK);
    Before {
        alive: text(&alive["access_token"]).to_owned(),
        revoked_jti: text(&revoked["access_token"]).to_owned(),
        logged_out: text(&logged_out["access_token"]).to_owned(),
        revoked_user: text(&carol["access_token"]).to_owned(),
        refresh: text(&rotated["refresh_token"]).to_owned(),
        rotated: text(&bob_again["refresh_token"]).to_owned(),
        revocations: revocations(daemon).await,
    }
}

/// Everything of `before` holds on `daemon`; with `use_refresh`, bob's refresh token is
/// spent (it works once, then it is reuse).
async fn holds(daemon: &Daemon, before: &Before, use_refresh: bool) {
    for name in ["alice", "bob", "carol"] {
        let status = daemon.try_login(name, PASSWORD).await.status();
        assert_eq!(status, StatusCode::OK, "{name}'s password");
    }
    assert_eq!(daemon.verify(&before.alive).await.status(), StatusCode::OK);
    for (what, token) in [
        ("a revoked jti", &before.revoked_jti),
        ("a logged-out session", &before.logged_out),
        ("a revoked user's session", &before.revoked_user),
    ] {
        let status = daemon.verify(token).await.status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
    }
    let mut now = revocations(daemon).await;
    now.retain(|entry| before.revocations.contains(entry));
    assert_eq!(now, before.revocations, "every revocation entry");
    let status = daemon.refresh(&before.rotated).await.status();
    assert_eq!(status, StatusCode::BAD_REQUEST, "a rotated refresh token");
    if use_refresh {
        let status = daemon.refresh(&before.refresh).await.status();
        assert_eq!(status, StatusCode::OK, "the live refresh token");
        let status = daemon.refresh(&before.refresh).await.status();
        assert_eq!(status, StatusCode::BAD_REQUEST, "the same one again");
    }
}

/// Moves a populated site through `path` (a backend per hop), backing up and restoring at
/// each step; every hop's store holds everything.
async fn move_through(path: &[Backend]) {
    let Some(sites) = path
        .iter()
        .map(|b| Site::new(*b))
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    let daemon = sites[0].start().await;
    let before = populate(&daemon).await;
    let mut daemon = daemon;
    for (hop, pair) in sites.windows(2).enumerate() {
        let (from, to) = (&pair[0], &pair[1]);
        let file = from.path().join("authd.backup");
        from.backup(&daemon, &file);
        stop(daemon).await;
        to.copy_secrets_from(from);
        to.restored(&file, &format!("hop {hop}"));
        daemon = to.start().await;
        let last = hop + 2 == sites.len();
        holds(&daemon, &before, last).await;
    }
    stop(daemon).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sled_store_restored_into_a_new_sled_store_works_exactly_as_before() {
    within_timeout(move_through(&[Backend::Sled, Backend::Sled])).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sled_to_etcd_and_back_keeps_every_password_token_session_and_revocation() {
    within_timeout(move_through(&[Backend::Sled, Backend::Etcd, Backend::Sled])).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_to_etcd_keeps_everything_too() {
    within_timeout(move_through(&[Backend::Etcd, Backend::Etcd])).await;
}

/// Starts `site`'s daemon, asserts that it lists no user, and stops it.
async fn assert_serves_empty(site: &Site, backend: Backend) {
    let daemon = site.start().await;
    let body: Value = daemon.list_users("").await.json().await.unwrap();
    assert_eq!(body["users"], json!([]), "{backend:?}");
    stop(daemon).await;
}

/// A backup of a site with one user, `alice`.
async fn small_backup(site: &Site) -> String {
    let daemon = site.start().await;
    daemon.add_user("alice", &[]).await;
    let file = site.path().join("small.backup");
    site.backup(&daemon, &file);
    stop(daemon).await;
    std::fs::read_to_string(file).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_refuses_a_store_that_holds_records_and_writes_nothing() {
    within_timeout(async {
        for backend in [Backend::Sled, Backend::Etcd] {
            let Some(site) = Site::new(backend) else {
                continue;
            };
            let daemon = site.start().await;
            daemon.add_user("alice", &[]).await;
            daemon.add_user("bob", &[]).await;
            let file = site.path().join("mine.backup");
            site.backup(&daemon, &file);
            daemon.delete_user("bob").await;
            stop(daemon).await;

            let stderr = site.restore_refused(&file, &format!("{backend:?}"));
            assert!(stderr.contains("empty store"), "{stderr}");
            let daemon = site.start().await;
            assert_eq!(daemon.get_user("alice").await.status(), StatusCode::OK);
            let bob = daemon.get_user("bob").await.status();
            assert_eq!(bob, StatusCode::NOT_FOUND, "{backend:?}: nothing written");
            stop(daemon).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_refuses_a_cut_off_malformed_newer_or_foreign_key_backup_and_writes_nothing() {
    within_timeout(async {
        let source = Site::new(Backend::Sled).unwrap();
        let whole = small_backup(&source).await;
        let lines: Vec<&str> = whole.lines().collect();
        let header: Value = serde_json::from_str(lines[0]).unwrap();
        let with_header = |header: Value| {
            let mut text = header.to_string();
            for line in &lines[1..] {
                text.push('\n');
                text.push_str(line);
            }
            text
        };
        let cases = [
            ("cut off", lines[..lines.len() - 1].join("\n")),
            ("cut off", whole[..whole.len() / 2].to_owned()),
            ("line 2", {
                let mut text = lines[0].to_owned();
                text.push_str("\n{\"type\":\"user\",\"username\":7}\n");
                text.push_str(lines[lines.len() - 1]);
                text
            }),
            ("version 2", {
                let mut header = header.clone();
                header["version"] = json!(2);
                with_header(header)
            }),
            ("second-factor", {
                let mut header = header.clone();
                header["mfa_key"] = json!("sha256:0123456789abcdef");
                with_header(header)
            }),
            ("not an authd backup", "{\"hello\": 1}\n".to_owned()),
        ];
        for backend in [Backend::Sled, Backend::Etcd] {
            let Some(site) = Site::new(backend) else {
                continue;
            };
            for (expected, text) in &cases {
                let file = site.path().join("bad.backup");
                std::fs::write(&file, text).unwrap();
                let stderr = site.restore_refused(&file, expected);
                assert!(stderr.contains(expected), "{expected:?} in {stderr}");
            }
            // Nothing was written: the store is empty, and not marked incomplete.
            assert_serves_empty(&site, backend).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_killed_midway_is_refused_by_serve_and_runs_again() {
    within_timeout(async {
        let source = Site::new(Backend::Sled).unwrap();
        let small = small_backup(&source).await;
        // Many revocations, so that the restore is surely killed midway.
        let mut lines: Vec<String> = small.lines().map(str::to_owned).collect();
        lines.pop();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let count = 60_000u64;
        for seq in 1..=count {
            lines.push(
                json!({"type": "revocation", "seq": seq, "kind": "jti", "id": format!("jti-{seq}"),
                       "revoked_at": now, "expires_at": now + 3600, "reason": null})
                .to_string(),
            );
        }
        lines.push(json!({"type": "end", "records": count + 1}).to_string());
        let file = source.path().join("big.backup");
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();

        for backend in [Backend::Sled, Backend::Etcd] {
            let Some(site) = Site::new(backend) else {
                continue;
            };
            site.copy_secrets_from(&source);
            let mut command = Command::new(env!("CARGO_BIN_EXE_authd"));
            command
                .args(["restore", "--in", file.to_str().unwrap(), "--config"])
                .arg(site.config_file());
            Daemon::configure(&mut command, site.path());
            let mut restore = Daemon::spawn(command);
            restore
                .wait_for_line(|line| line.contains("restored 10000 of"))
                .await;
            restore.kill_hard();

            let mut serve = Daemon::spawn(Daemon::command(site.path()));
            let status = serve.wait_exit().await;
            assert!(
                !status.success(),
                "{backend:?}: serve took a cut-off restore"
            );
            let said = serve.all_stderr().await.join("\n");
            assert!(
                said.contains("restore") && said.contains("incomplete"),
                "{backend:?}: {said}"
            );

            site.restored(&file, &format!("{backend:?}"));
            let daemon = site.start().await;
            let status = daemon.try_login("alice", PASSWORD).await.status();
            assert_eq!(status, StatusCode::OK);
            let mut listed = 0;
            let mut query = "?limit=1000".to_owned();
            loop {
                let page: Value = daemon.list_revocations(&query).await.json().await.unwrap();
                listed += page["revocations"].as_array().unwrap().len();
                match page["next"].as_str() {
                    Some(next) => query = format!("?limit=1000&after={next}"),
                    None => break,
                }
            }
            assert_eq!(listed as u64, count, "{backend:?}: every revocation, once");
            stop(daemon).await;
        }
    })
    .await;
}

// ----- the second factor (rev 4) -----

/// A sled site where alice has TOTP on and has spent her first recovery code, backed up
/// with `authd backup` and stopped: the site, alice as she enrolled, the backup file.
async fn enrolled_site() -> (Site, Enrolled, PathBuf) {
    let source = Site::new(Backend::Sled).unwrap();
    let daemon = source.start().await;
    daemon.add_user("alice", &[]).await;
    let (_, alice) = daemon.login_and_enrol("alice").await;
    let spent = daemon
        .login_two_steps("alice", &alice.recovery_codes[0])
        .await;
    assert_eq!(spent["recovery_codes_left"], 9, "{spent}");
    let file = source.path().join("mfa.backup");
    source.backup(&daemon, &file);
    stop(daemon).await;
    (source, alice, file)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_enrolled_user_keeps_the_second_factor_through_sled_to_sled_and_sled_to_etcd() {
    within_timeout(async {
        let (source, alice, file) = enrolled_site().await;
        for (hop, backend) in [Backend::Sled, Backend::Etcd].into_iter().enumerate() {
            let Some(site) = Site::new(backend) else {
                continue;
            };
            site.copy_secrets_from(&source);
            site.restored(&file, &format!("{backend:?}"));
            let daemon = site.start().await;

            assert!(daemon.mfa_flag("alice").await, "{backend:?}: mfa");
            // Each restored store starts from the backup: the confirm's step is the last
            // used, so the next step's code is good on each.
            let mfa_token = daemon.password_step("alice").await;
            let code = alice.next_code();
            let what = format!("{backend:?}: a TOTP code");
            let tokens = daemon.login_mfa_ok(&mfa_token, &code, &what).await;
            assert_eq!(amr_of(&tokens), json!(["pwd", "otp"]));
            let replay = daemon.login_with_code("alice", &code).await;
            assert_wrong_code(replay, &format!("{backend:?}: that code again")).await;

            let unused = &alice.recovery_codes[1 + hop];
            let response = daemon.login_with_code("alice", unused).await;
            let what = format!("{backend:?}: an unused recovery code");
            let body = assert_tokens(response, &what).await;
            assert_eq!(body["recovery_codes_left"], 8, "{backend:?}: {body}");
            let spent = daemon
                .login_with_code("alice", &alice.recovery_codes[0])
                .await;
            assert_wrong_code(spent, &format!("{backend:?}: the code spent before")).await;
            stop(daemon).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_with_another_or_no_mfa_key_file_is_refused_and_writes_nothing() {
    within_timeout(async {
        let (source, _alice, file) = enrolled_site().await;
        let key = authd::auth::mfa::MfaKey::read(&source.path().join("data/mfa.key")).unwrap();
        for backend in [Backend::Sled, Backend::Etcd] {
            let Some(site) = Site::new(backend) else {
                continue;
            };
            site.copy_secrets_from(&source);
            let key_file = site.path().join("data/mfa.key");
            let other = write_other_mfa_key(&key_file);

            let stderr = site.restore_refused(&file, &format!("{backend:?}, another key"));
            assert!(stderr.contains("mfa.key_file"), "{backend:?}: {stderr}");
            assert!(stderr.contains(key.fingerprint()), "{backend:?}: {stderr}");
            assert!(!stderr.contains(&other), "never the key itself: {stderr}");

            std::fs::remove_file(&key_file).unwrap();
            let stderr = site.restore_refused(&file, &format!("{backend:?}, no key"));
            assert!(stderr.contains("mfa.key_file"), "{backend:?}: {stderr}");
            assert!(
                !key_file.exists(),
                "{backend:?}: restore made a key of its own"
            );

            // Nothing was written: no key under the prefix, and the store serves, empty.
            if let Some(prefix) = &site.prefix {
                let keys = etcd().unwrap().keys(prefix);
                assert!(keys.is_empty(), "{backend:?}: written to etcd: {keys:?}");
            }
            assert_serves_empty(&site, backend).await;
        }
    })
    .await;
}

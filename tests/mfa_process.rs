//! The second factor with the real binary (API.md "Second factor: TOTP and recovery codes",
//! rev 4): what only a process, its files and its log show. An enrolment acknowledged
//! right before `kill -9` survives it, and so do the codes used; no encoding of a TOTP
//! secret or a recovery code reaches the store's files, the log or a backup (the secret is
//! stored sealed under `mfa.key_file`); the key file is made owner-only at first start,
//! relative to the configuration file, and one that group or others can read is refused by
//! `serve` and `check-config`, naming `mfa.key_file`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Output;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use common::second_factor::{
    Enrolled, amr_of, assert_wrong_code, files_under, found_in, recovery_code_encodings,
    recovery_codes_of, secret_encodings,
};
use common::{
    Daemon, PASSWORD, assert_tokens, config_with, describe, refused_start, run_cli, set_in_section,
    text, within_timeout, write_config,
};

/// The shipped configuration as process tests change it, with `log.level` at `level`.
fn config_at_level(level: &str) -> String {
    config_with(&[("level", &format!("\"{level}\""))])
}

/// The mode bits (permissions only) of `path`.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A fresh folder with `config` as its `config.toml`.
fn configured(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), config);
    dir
}

/// `authd check-config --config DIR/config.toml` to its end.
fn check_config(dir: &Path) -> Output {
    run_cli(dir, &["check-config"], &dir.join("config.toml"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_enrolment_confirmed_right_before_kill_dash_9_survives_and_so_do_the_codes_used() {
    within_timeout(async {
        let dir = configured(&config_with(&[]));
        let daemon = Daemon::start(dir.path()).await;
        daemon.add_user("alice", &[]).await;

        // The confirm's 200, then at once kill -9: no chance to flush anything.
        let (_, alice) = daemon.login_and_enrol("alice").await;
        daemon.kill_hard();
        let daemon = Daemon::start(dir.path()).await;

        assert!(daemon.mfa_flag("alice").await, "TOTP on after the crash");
        // The confirm's step counts as used: its code is not taken again.
        let replay = daemon.login_with_code("alice", &alice.confirm_code()).await;
        assert_wrong_code(replay, "the confirm's code again, after the crash").await;
        let code = alice.next_code();
        let tokens = daemon.login_two_steps("alice", &code).await;
        assert_eq!(amr_of(&tokens), json!(["pwd", "otp"]));
        let status = daemon.verify(text(&tokens["access_token"])).await.status();
        assert_eq!(status, StatusCode::OK);

        // A recovery code of the confirm's set works, once.
        let recovered = daemon
            .login_two_steps("alice", &alice.recovery_codes[0])
            .await;
        assert_eq!(recovered["recovery_codes_left"], 9, "{recovered}");

        // Both uses are durable when acknowledged: kill -9 right after the last one.
        daemon.kill_hard();
        let daemon = Daemon::start(dir.path()).await;
        for (what, used) in [
            ("a used recovery code", &alice.recovery_codes[0]),
            ("a used TOTP step", &code),
        ] {
            let replay = daemon.login_with_code("alice", used).await;
            assert_wrong_code(replay, &format!("{what}, after a crash")).await;
        }
        let response = daemon
            .login_with_code("alice", &alice.recovery_codes[1])
            .await;
        let body = assert_tokens(response, "an unused recovery code").await;
        assert_eq!(body["recovery_codes_left"], 8, "{body}");
    })
    .await;
}

/// What [`populate`] made: three users' second factors and every encoding of their
/// secrets.
struct Populated {
    alice: Enrolled,
    bob_secret: String,
    needles: Vec<(String, Vec<u8>)>,
}

/// alice: TOTP on, logged in with a code in the login body, with a recovery code (as
/// shown) at the second step and another one typed in upper case without dashes, and
/// refused a wrong code; bob: an enrolment begun, never confirmed (the pending secret is a
/// secret too); carol: TOTP on, then a new set of recovery codes (both sets are secrets).
async fn populate(daemon: &Daemon) -> Populated {
    for name in ["alice", "bob", "carol"] {
        daemon.add_user(name, &[]).await;
    }
    let (_, alice) = daemon.login_and_enrol("alice").await;
    let response = daemon.login_with_code("alice", &alice.next_code()).await;
    assert_tokens(response, "code in the login body").await;
    daemon
        .login_two_steps("alice", &alice.recovery_codes[0])
        .await;
    let typed = alice.recovery_codes[1]
        .replace('-', "")
        .to_ascii_uppercase();
    let response = daemon.login_with_code("alice", &typed).await;
    assert_tokens(response, "a recovery code typed otherwise").await;
    let wrong = daemon.login_with_code("alice", &alice.wrong_code()).await;
    assert_wrong_code(wrong, "a wrong code").await;

    let bob_token = daemon.access_token("bob", PASSWORD).await;
    let pending = daemon.begin_totp_ok(&bob_token).await;
    let bob_secret = text(&pending["secret"]).to_owned();
    let bob_raw = authd::auth::mfa::totp::decode_base32(&bob_secret).unwrap();

    let (carol_token, carol) = daemon.login_and_enrol("carol").await;
    let response = daemon
        .new_recovery_codes(&carol_token, PASSWORD, &carol.next_code())
        .await;
    let carol_new = recovery_codes_of(response, "new recovery codes").await;

    let mut needles = alice.secret_encodings("alice");
    needles.extend(carol.secret_encodings("carol"));
    needles.extend(secret_encodings("bob", &bob_raw, &bob_secret));
    needles.extend(recovery_code_encodings("carol (new set)", &carol_new));
    Populated {
        alice,
        bob_secret,
        needles,
    }
}

/// `authd backup --out OUT` of `daemon`, running on `dir`'s configuration; the file's bytes.
fn backup_file(dir: &Path, daemon: &Daemon, out: &Path) -> Vec<u8> {
    let output = daemon.backup_cli(dir, out);
    assert!(
        output.status.success(),
        "authd backup: {}",
        describe(&output)
    );
    std::fs::read(out).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_encoding_of_a_secret_or_recovery_code_reaches_the_store_files_the_log_or_a_backup() {
    within_timeout(async {
        // The most talkative level: nothing may leak even there.
        let dir = configured(&config_at_level("trace"));
        let log_file = dir.path().join("stdout.log");
        let mut command = Daemon::command(dir.path());
        command.stdout(std::fs::File::create(&log_file).unwrap());
        let mut daemon = Daemon::spawn(command);
        daemon.wait_until_ready(dir.path()).await;
        let populated = populate(&daemon).await;
        let needles = &populated.needles;

        let out = tempfile::tempdir().unwrap();
        let file = backup_file(dir.path(), &daemon, &out.path().join("authd.backup"));
        let leaked = found_in(&file, needles);
        assert!(leaked.is_empty(), "in the backup file: {leaked:?}");
        assert!(
            String::from_utf8_lossy(&file).contains("\"second_factor\""),
            "the backup has second-factor records"
        );
        let response = daemon.backup().await;
        assert_eq!(response.status(), StatusCode::OK);
        let streamed = response.bytes().await.unwrap().to_vec();
        let leaked = found_in(&streamed, needles);
        assert!(leaked.is_empty(), "in GET /admin/v1/backup: {leaked:?}");

        daemon.stop().await;
        let stderr = daemon.all_stderr().await.join("\n");
        let stdout = std::fs::read(&log_file).unwrap();

        let leaked = found_in(stderr.as_bytes(), needles);
        assert!(leaked.is_empty(), "in the log (stderr): {leaked:?}");
        let leaked = found_in(&stdout, needles);
        assert!(leaked.is_empty(), "on stdout: {leaked:?}");
        assert!(
            stderr.contains("totp_enabled"),
            "the log holds the enrolment's audit line (so it was searched): {stderr}"
        );

        let files = files_under(&dir.path().join("data"));
        let mut store_bytes = 0;
        for (path, bytes) in &files {
            let leaked = found_in(bytes, needles);
            assert!(leaked.is_empty(), "in {}: {leaked:?}", path.display());
            store_bytes += bytes.len();
        }
        let names_found = files
            .iter()
            .any(|(_, bytes)| !found_in(bytes, &[("".into(), b"carol".to_vec())]).is_empty());
        assert!(
            names_found,
            "the store's files were searched ({} files, {store_bytes} bytes) but hold no user name",
            files.len()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_carries_each_second_factor_sealed_on_its_own_line_after_the_users() {
    within_timeout(async {
        let dir = configured(&config_with(&[]));
        let daemon = Daemon::start(dir.path()).await;
        let populated = populate(&daemon).await;
        let out = tempfile::tempdir().unwrap();
        let file = backup_file(dir.path(), &daemon, &out.path().join("authd.backup"));
        check_second_factor_lines(&file, dir.path(), &populated.alice, &populated.bob_secret);
    })
    .await;
}

/// The backup is JSON lines; its header names the key's fingerprint, and each enrolled
/// user's line is followed by their `second_factor` line: alice's secret sealed, two of her
/// ten recovery codes gone; bob's pending secret sealed; carol's too.
fn check_second_factor_lines(backup: &[u8], dir: &Path, alice: &Enrolled, bob_secret: &str) {
    let text = String::from_utf8(backup.to_vec()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| {
                panic!("{err}: a backup line that is not one JSON object: {line:?}")
            })
        })
        .collect();
    let key = authd::auth::mfa::MfaKey::read(&dir.join("data/mfa.key")).unwrap();
    assert_eq!(
        lines[0]["mfa_key"],
        key.fingerprint(),
        "header {}",
        lines[0]
    );
    let after_user = |name: &str| {
        let at = lines
            .iter()
            .position(|l| l["type"] == "user" && l["username"] == name)
            .unwrap_or_else(|| panic!("no user line of {name}"));
        (lines[at].clone(), lines[at + 1].clone())
    };
    let (user, factor) = after_user("alice");
    assert_eq!(
        factor["type"], "second_factor",
        "after alice's user line: {factor}"
    );
    assert_eq!(factor["username"], "alice");
    assert_eq!(factor["account_id"], user["account_id"]);
    assert!(factor["pending_sealed"].is_null(), "{factor}");
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(text_of(&factor["totp_sealed"]))
        .unwrap();
    assert!(
        sealed.len() > alice.raw_secret().len(),
        "sealed: nonce and tag around the secret: {factor}"
    );
    assert_eq!(
        factor["last_step"],
        alice.confirmed_step + 1,
        "the step of her last code, the one after the confirm's"
    );
    let macs = factor["recovery_codes"].as_array().unwrap();
    assert_eq!(macs.len(), 8, "two of ten used: {factor}");
    for mac in macs {
        let mac = text_of(mac);
        assert!(
            mac.len() >= 32 && mac.bytes().all(|b| b.is_ascii_hexdigit()),
            "{mac}"
        );
    }
    let (_, factor) = after_user("bob");
    assert_eq!(
        factor["type"], "second_factor",
        "after bob's user line: {factor}"
    );
    assert!(factor["totp_sealed"].is_null(), "{factor}");
    assert!(factor["pending_sealed"].is_string(), "{factor}");
    assert!(!text.contains(bob_secret));
    let (_, factor) = after_user("carol");
    assert_eq!(
        factor["type"], "second_factor",
        "after carol's user line: {factor}"
    );
    let factors = lines
        .iter()
        .filter(|l| l["type"] == "second_factor")
        .count();
    assert_eq!(factors, 3, "alice, bob and carol");
}

fn text_of(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_file_is_made_owner_only_beside_the_config_and_an_open_one_is_refused() {
    within_timeout(async {
        let dir = configured(&set_in_section(
            &config_with(&[]),
            "mfa",
            "key_file",
            "\"data/second-factor.key\"",
        ));
        // Run from another folder: a relative key_file is relative to the config file's.
        let elsewhere = tempfile::tempdir().unwrap();
        let serve = || {
            let mut command = Daemon::command(dir.path());
            Daemon::configure(&mut command, elsewhere.path());
            command
        };
        let mut daemon = Daemon::spawn(serve());
        daemon.wait_until_ready(dir.path()).await;
        let key_file = dir.path().join("data/second-factor.key");
        assert!(key_file.is_file(), "made beside the config file");
        assert!(
            !elsewhere.path().join("data").exists(),
            "not in the working folder"
        );
        assert!(
            !dir.path().join("data/mfa.key").exists(),
            "the configured name only"
        );
        assert_eq!(mode(&key_file), 0o600, "owner-only");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(std::fs::read_to_string(&key_file).unwrap().trim())
            .expect("base64");
        assert_eq!(bytes.len(), 32, "32 random bytes");
        daemon.add_user("alice", &[]).await;
        daemon.login_and_enrol("alice").await;
        daemon.stop().await;
        drop(daemon);
        // The key is kept, not made again.
        let daemon = Daemon::spawn(serve());
        let mut daemon = daemon;
        daemon.wait_until_ready(dir.path()).await;
        let again = std::fs::read_to_string(&key_file).unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(again.trim())
                .unwrap(),
            bytes
        );
        daemon.password_step("alice").await;
        daemon.stop().await;
        drop(daemon);

        for open in [0o640, 0o604, 0o644] {
            set_mode(&key_file, open);
            let what = format!("with a key file of mode {open:o}");
            let stderr = refused_start(serve(), &what).await;
            assert!(
                stderr.contains("mfa.key_file"),
                "mode {open:o}: serve's refusal names mfa.key_file:\n{stderr}"
            );
            let output = check_config(dir.path());
            assert!(
                !output.status.success(),
                "check-config, mode {open:o}: {}",
                describe(&output)
            );
            assert!(
                String::from_utf8_lossy(&output.stderr).contains("mfa.key_file"),
                "mode {open:o}: check-config names mfa.key_file: {}",
                describe(&output)
            );
            assert_eq!(mode(&key_file), open, "left as the operator made it");
        }
        set_mode(&key_file, 0o600);
        let output = check_config(dir.path());
        assert!(output.status.success(), "{}", describe(&output));
        let mut daemon = Daemon::spawn(serve());
        daemon.wait_until_ready(dir.path()).await;
        daemon.password_step("alice").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_file_follows_authd_mfa_key_file_from_the_environment() {
    within_timeout(async {
        let dir = configured(&config_with(&[]));
        let key_file = dir.path().join("from-env.key");
        let mut command = Daemon::command(dir.path());
        command.env("AUTHD__MFA__KEY_FILE", &key_file);
        let mut daemon = Daemon::spawn(command);
        daemon.wait_until_ready(dir.path()).await;
        assert!(key_file.is_file(), "made where the environment says");
        assert_eq!(mode(&key_file), 0o600);
        assert!(!dir.path().join("data/mfa.key").exists());
    })
    .await;
}

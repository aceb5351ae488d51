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
use std::process::{Command, Output};

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use common::second_factor::{
    Enrolled, amr, assert_wrong_code, begun, enrol, files_under, found_in, login_with_code,
    mfa_flag, new_recovery_codes, password_step, recovery_code_encodings, second_step_ok,
    secret_encodings,
};
use common::{Daemon, config_with, set_in_section, text, within_timeout, write_config};

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

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `authd check-config --config DIR/config.toml` to its end.
fn check_config(dir: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_authd"));
    command
        .arg("check-config")
        .arg("--config")
        .arg(dir.join("config.toml"));
    Daemon::configure(&mut command, dir);
    command.stdout(std::process::Stdio::piped());
    command.output().unwrap()
}

/// `serve` on `dir`, expected to refuse to start: its exit status and every stderr line.
async fn refused_start(command: Command) -> (std::process::ExitStatus, String) {
    let mut daemon = Daemon::spawn(command);
    let status = daemon.wait_exit().await;
    let stderr = daemon.all_stderr().await.join("\n");
    (status, stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_enrolment_confirmed_right_before_kill_dash_9_survives_and_so_do_the_codes_used() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_with(&[]));
        let daemon = Daemon::start(dir.path()).await;
        daemon.add_user("alice", &[]).await;

        // The confirm's 200, then at once kill -9: no chance to flush anything.
        let mut alice = enrol(&daemon, "alice").await;
        daemon.kill_hard();
        let daemon = Daemon::start(dir.path()).await;

        assert!(mfa_flag(&daemon, "alice").await, "TOTP on after the crash");
        // The confirm's step counts as used: its code is not taken again.
        let replay = login_with_code(&daemon, "alice", Some(&alice.used_code())).await;
        assert_wrong_code(replay, "the confirm's code again, after the crash").await;
        let mfa_token = password_step(&daemon, "alice").await;
        let code = alice.next_code().await;
        let tokens = second_step_ok(&daemon, &mfa_token, &code, "a fresh code").await;
        assert_eq!(
            amr(text(&tokens["access_token"])),
            serde_json::json!(["pwd", "otp"])
        );
        let status = daemon.verify(text(&tokens["access_token"])).await.status();
        assert_eq!(status, StatusCode::OK);

        // A recovery code of the confirm's set works, once.
        let mfa_token = password_step(&daemon, "alice").await;
        let recovered = second_step_ok(
            &daemon,
            &mfa_token,
            &alice.recovery_codes[0],
            "a recovery code",
        )
        .await;
        assert_eq!(recovered["recovery_codes_left"], 9, "{recovered}");

        // Both uses are durable when acknowledged: kill -9 right after the last one.
        daemon.kill_hard();
        let daemon = Daemon::start(dir.path()).await;
        let replay = login_with_code(&daemon, "alice", Some(&alice.recovery_codes[0])).await;
        assert_wrong_code(replay, "a used recovery code, after a crash").await;
        let replay = login_with_code(&daemon, "alice", Some(&alice.used_code())).await;
        assert_wrong_code(replay, "a used TOTP step, after a crash").await;
        let response = login_with_code(&daemon, "alice", Some(&alice.recovery_codes[1])).await;
        assert_eq!(response.status(), StatusCode::OK, "an unused recovery code");
        let body: Value = response.json().await.unwrap();
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
    let mut alice = enrol(daemon, "alice").await;
    let code = alice.next_code().await;
    let response = login_with_code(daemon, "alice", Some(&code)).await;
    assert_eq!(response.status(), StatusCode::OK, "code in the login body");
    let mfa_token = password_step(daemon, "alice").await;
    second_step_ok(daemon, &mfa_token, &alice.recovery_codes[0], "recovery").await;
    let typed = alice.recovery_codes[1]
        .replace('-', "")
        .to_ascii_uppercase();
    let response = login_with_code(daemon, "alice", Some(&typed)).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a recovery code typed otherwise"
    );
    let wrong = login_with_code(daemon, "alice", Some(&alice.wrong_code())).await;
    assert_wrong_code(wrong, "a wrong code").await;

    let bob_token = daemon.access_token("bob", common::PASSWORD).await;
    let pending = begun(daemon, &bob_token).await;
    let bob_secret = text(&pending["secret"]).to_owned();
    let bob_raw = authd::auth::mfa::totp::decode_base32(&bob_secret).unwrap();

    let mut carol = enrol(daemon, "carol").await;
    let code = carol.next_code().await;
    let response = new_recovery_codes(daemon, &carol.access_token, &code).await;
    assert_eq!(response.status(), StatusCode::OK, "new recovery codes");
    let body: Value = response.json().await.unwrap();
    let carol_new: Vec<String> = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| text(c).to_owned())
        .collect();
    assert_eq!(carol_new.len(), 10);

    let mut needles = alice.secret_encodings();
    needles.extend(carol.secret_encodings());
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
    // The CLI finds the admin listener in its config file: the daemon's real port.
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    let admin = daemon.admin.trim_start_matches("http://");
    let cli = set_in_section(&config, "server", "admin_listen", &format!("\"{admin}\""));
    let file = dir.join("cli.toml");
    std::fs::write(&file, cli).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_authd"));
    command
        .args(["backup", "--out", out.to_str().unwrap(), "--config"])
        .arg(&file);
    Daemon::configure(&mut command, dir);
    command.stdout(std::process::Stdio::piped());
    let output = command.output().unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        // The most talkative level: nothing may leak even there.
        write_config(dir.path(), &config_at_level("trace"));
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
        let response = daemon
            .admin_request(Method::GET, "/admin/v1/backup")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let streamed = response.bytes().await.unwrap().to_vec();
        let leaked = found_in(&streamed, needles);
        assert!(leaked.is_empty(), "in GET /admin/v1/backup: {leaked:?}");

        daemon.signal("TERM");
        assert!(daemon.wait_exit().await.success());
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
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_with(&[]));
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
        factor["last_step"], alice.last_step,
        "the step of her last code"
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
        let dir = tempfile::tempdir().unwrap();
        let config = set_in_section(
            &config_with(&[]),
            "mfa",
            "key_file",
            "\"data/second-factor.key\"",
        );
        write_config(dir.path(), &config);
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
        enrol(&daemon, "alice").await;
        daemon.signal("TERM");
        assert!(daemon.wait_exit().await.success());
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
        password_step(&daemon, "alice").await;
        daemon.signal("TERM");
        assert!(daemon.wait_exit().await.success());
        drop(daemon);

        for open in [0o640, 0o604, 0o644] {
            set_mode(&key_file, open);
            let (status, stderr) = refused_start(serve()).await;
            assert!(
                !status.success(),
                "serve took a key file of mode {open:o}:\n{stderr}"
            );
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
        password_step(&daemon, "alice").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_file_follows_authd_mfa_key_file_from_the_environment() {
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_with(&[]));
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

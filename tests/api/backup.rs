//! `GET /admin/v1/backup` (API.md "Admin listener", rev 4) against the real daemon: what a
//! backup holds, what it never holds (key material, passwords, tokens), who may take one,
//! and that one taken under a write load is one consistent snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{PASSWORD, TestApp, claims, header};

/// A whole backup: its header and its record lines (the end line checked and dropped).
struct Backup {
    text: String,
    header: Value,
    records: Vec<Value>,
}

impl Backup {
    fn of(&self, kind: &str) -> Vec<&Value> {
        self.records.iter().filter(|r| r["type"] == kind).collect()
    }
}

async fn take(app: &TestApp) -> Backup {
    let response = app.backup().await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), "application/jsonl");
    assert_eq!(header(&response, "cache-control"), "no-store");
    let text = response.text().await.unwrap();
    let mut lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let end = lines.pop().expect("an end line");
    assert_eq!(end["type"], "end", "{end}");
    let header = lines.remove(0);
    assert_eq!(
        end["records"],
        json!(lines.len()),
        "the end line counts the records"
    );
    Backup {
        text,
        header,
        records: lines,
    }
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[tokio::test]
async fn a_backup_holds_every_record_of_every_kind_and_no_secret() {
    let app = TestApp::spawn().await;
    app.add_user("alice", &["admin"]).await;
    app.add_user("bob", &[]).await;
    let alice = app.login("alice").await;
    let bob = app.login("bob").await;
    let alice_access = alice["access_token"].as_str().unwrap();
    let revoked_jti = claims(alice_access)["jti"].as_str().unwrap().to_owned();
    let response = app.revoke(json!({"jti": revoked_jti})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let bob_access = bob["access_token"].as_str().unwrap();
    let bob_sid = claims(bob_access)["sid"].as_str().unwrap().to_owned();
    assert_eq!(
        app.logout(bob_access, None).await.status(),
        StatusCode::NO_CONTENT
    );

    let backup = take(&app).await;

    let header = &backup.header;
    assert_eq!(header["format"], "authd-backup");
    assert_eq!(header["version"], 1);
    assert!(["sled", "etcd"].contains(&header["backend"].as_str().unwrap()));
    assert!(header["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(header["revision"].as_u64().unwrap() > 0);
    // The fingerprint of mfa.key_file (32 hex digits), never the key.
    let mfa_key = header["mfa_key"].as_str().unwrap();
    assert!(
        mfa_key.len() == 32 && mfa_key.bytes().all(|b| b.is_ascii_hexdigit()),
        "{mfa_key}"
    );
    let key_file = std::fs::read_to_string(app.dir.join("mfa.key")).unwrap();
    assert!(!backup.text.contains(key_file.trim()));
    let users: HashMap<&str, &Value> = backup
        .of("user")
        .into_iter()
        .map(|u| (u["username"].as_str().unwrap(), u))
        .collect();
    assert_eq!(users.len(), 2);
    assert_eq!(users["alice"]["roles"], json!(["admin"]));
    assert!(
        users["bob"]["password_hash"]
            .as_str()
            .unwrap()
            .starts_with("$argon2id$")
    );
    let alice_sid = claims(alice_access)["sid"].as_str().unwrap().to_owned();
    let sessions: Vec<&str> = backup
        .of("session")
        .iter()
        .map(|s| s["sid"].as_str().unwrap())
        .collect();
    assert_eq!(sessions, [alice_sid.as_str()], "bob's session ended");
    let refresh: HashSet<&str> = backup
        .of("refresh")
        .iter()
        .map(|r| r["hash"].as_str().unwrap())
        .collect();
    for pair in [&alice, &bob] {
        let hash = sha256_hex(pair["refresh_token"].as_str().unwrap());
        assert!(refresh.contains(hash.as_str()), "{hash} in {refresh:?}");
    }
    let revoked: HashSet<(&str, &str)> = backup
        .of("revocation")
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["id"].as_str().unwrap()))
        .collect();
    assert!(revoked.contains(&("jti", revoked_jti.as_str())));
    assert!(revoked.contains(&("sid", bob_sid.as_str())));

    // Never a password, a token, the admin token or key material.
    let mut secrets = vec![
        PASSWORD.to_owned(),
        app.admin_token.clone(),
        alice_access.to_owned(),
        alice["refresh_token"].as_str().unwrap().to_owned(),
        bob["refresh_token"].as_str().unwrap().to_owned(),
    ];
    for entry in std::fs::read_dir(app.dir.join("keys")).unwrap() {
        let path = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if path.extension().is_some_and(|ext| ext == "key") {
            let secret = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(text.trim().trim_end_matches('='))
                .unwrap();
            let engines = [
                base64::engine::general_purpose::STANDARD,
                base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            secrets.extend(engines.iter().map(|engine| engine.encode(&secret)));
            secrets.push(secret.iter().map(|b| format!("{b:02x}")).collect());
        }
        secrets.extend(text.lines().filter(|l| l.len() > 16).map(str::to_owned));
    }
    for secret in &secrets {
        assert!(
            !backup.text.contains(secret.trim_end_matches('=')),
            "the backup holds a secret: {secret:?}"
        );
    }
}

#[tokio::test]
async fn a_backup_needs_the_admin_credential() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(format!("{}/admin/v1/backup", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let user = app.user_token("mallory", &[]).await;
    let response = app
        .client
        .get(format!("{}/admin/v1/backup", app.admin))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let admin = app.user_token("root", &["admin"]).await;
    let response = app
        .client
        .get(format!("{}/admin/v1/backup", app.admin))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        app.public_request(Method::GET, "/admin/v1/backup")
            .bearer_auth(&app.admin_token)
            .send()
            .await
            .unwrap()
            .status()
            .is_client_error(),
        "not on the public listener"
    );
}

/// One user's login → refresh → password change → logout cycle, over and over.
async fn churn(app: Arc<TestApp>, username: String, stop: Arc<AtomicBool>) {
    const OTHER: &str = "another horse battery";
    let mut password = PASSWORD;
    while !stop.load(Ordering::Relaxed) {
        let first = app.login_with(&username, password).await;
        let second = app.login_with(&username, password).await;
        let mut pair = first;
        for _ in 0..2 {
            let response = app.refresh(pair["refresh_token"].as_str().unwrap()).await;
            assert_eq!(response.status(), StatusCode::OK);
            pair = response.json().await.unwrap();
        }
        // Ends the other session (a sid entry) and keeps this one.
        let next = if password == PASSWORD {
            OTHER
        } else {
            PASSWORD
        };
        let access = pair["access_token"].as_str().unwrap();
        let response = app.change_password(access, password, next).await;
        assert!(response.status().is_success(), "{}", response.status());
        password = next;
        let relogged = app.login_with(&username, password).await;
        let access = relogged["access_token"].as_str().unwrap();
        assert_eq!(
            app.logout(access, None).await.status(),
            StatusCode::NO_CONTENT
        );
        drop(second);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_a_write_load_is_one_consistent_snapshot() {
    let app = Arc::new(TestApp::spawn().await);
    // Enough records that a backup is still being read while the load changes them.
    let mut seeding = Vec::new();
    for worker in 0..16 {
        let app = app.clone();
        seeding.push(tokio::spawn(async move {
            for i in 0..60 {
                let name = format!("seed-{worker:02}-{i:03}");
                app.add_user(&name, &[]).await;
                app.login(&name).await;
            }
        }));
    }
    for task in seeding {
        task.await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..6 {
        let username = format!("load-{worker}");
        app.add_user(&username, &[]).await;
        load.push(tokio::spawn(churn(app.clone(), username, stop.clone())));
    }

    for _ in 0..5 {
        let backup = take(&app).await;
        let users: HashMap<&str, u64> = backup
            .of("user")
            .iter()
            .map(|u| {
                (
                    u["username"].as_str().unwrap(),
                    u["account_id"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(users.len(), backup.of("user").len(), "a user sent twice");
        let mut sids = HashSet::new();
        for session in backup.of("session") {
            let owner = session["username"].as_str().unwrap();
            assert_eq!(
                users.get(owner),
                Some(&session["account_id"].as_u64().unwrap()),
                "a session without its user: {session}"
            );
            assert!(sids.insert(session["sid"].as_str().unwrap()), "{session}");
        }
        let revoked_sids: HashSet<&str> = backup
            .of("revocation")
            .iter()
            .filter(|r| r["kind"] == "sid")
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        for refresh in backup.of("refresh") {
            let sid = refresh["sid"].as_str().unwrap();
            assert!(
                sids.contains(sid) || revoked_sids.contains(sid),
                "a refresh token without its session (and its session not ended): {refresh}"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
}

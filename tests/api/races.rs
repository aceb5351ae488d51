//! Races an attacker would try to win, swept over timings rather than hoped for.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{PASSWORD, TestApp};

const NEW_PASSWORD: &str = "a different passphrase";

/// Login start offsets relative to the start of the password change, in milliseconds: from
/// a login well before the change (it completes first, and the change must end it) through
/// logins whose password check overlaps the change (the race) to logins after it. The
/// ±1000 ms ends make both outcomes certain even on a loaded machine.
const OFFSETS_MS: [i64; 19] = [
    -1000, -150, -125, -100, -75, -50, -25, 0, 25, 50, 75, 100, 125, 150, 175, 200, 225, 250, 1000,
];

/// Whatever the offset, a login with the old password that races `POST /v1/password`
/// leaves no live session: it either ends before the change (and the change ends it), or
/// its session commit meets the changed account (401, nothing stored), or it starts after
/// (wrong password). argon2 is set so that one hash takes about 100 ms, which makes the
/// window of the race that long.
#[tokio::test(flavor = "multi_thread")]
async fn no_login_racing_a_password_change_leaves_a_live_session() {
    let app = TestApp::spawn_with(&[
        ("AUTHD__PASSWORD__ARGON2_MEMORY_KIB", "19456"),
        ("AUTHD__PASSWORD__ARGON2_ITERATIONS", "10"),
        // Every offset logs in as its own user from one address: no throttling in the way.
        ("AUTHD__LOGIN__MAX_FAILURES", "1000"),
        ("AUTHD__LOGIN__MAX_FAILURES_PER_IP", "1000"),
    ])
    .await;
    let mut outcomes = Vec::new();
    for (i, offset) in OFFSETS_MS.iter().enumerate() {
        let name = format!("racer{i}");
        app.add_user(&name, &[]).await;
        let owner = app.access_token(&name, PASSWORD).await;
        let pause = Duration::from_millis(offset.unsigned_abs());
        let change = async {
            if *offset < 0 {
                tokio::time::sleep(pause).await;
            }
            app.change_password(&owner, PASSWORD, NEW_PASSWORD).await
        };
        let login = async {
            if *offset > 0 {
                tokio::time::sleep(pause).await;
            }
            app.try_login(&name, PASSWORD).await
        };
        let (changed, login) = tokio::join!(change, login);
        assert_eq!(
            changed.status(),
            StatusCode::NO_CONTENT,
            "offset {offset} ms"
        );
        let status = login.status();
        if status == StatusCode::OK {
            let pair: Value = login.json().await.unwrap();
            let access = pair["access_token"].as_str().unwrap();
            let refresh = pair["refresh_token"].as_str().unwrap();
            assert_eq!(
                app.verify(access).await.status(),
                StatusCode::UNAUTHORIZED,
                "offset {offset} ms: the racing login's session survived the change"
            );
            assert_eq!(
                app.refresh(refresh).await.status(),
                StatusCode::BAD_REQUEST,
                "offset {offset} ms: the racing login's refresh token survived the change"
            );
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "offset {offset} ms");
        }
        // The owner's own session lives on, with the new password.
        assert_eq!(app.verify(&owner).await.status(), StatusCode::OK);
        outcomes.push(status.as_u16());
    }
    // The sweep spans both sides: some logins end before the change, some are refused.
    assert!(
        outcomes.contains(&200) && outcomes.contains(&401),
        "{outcomes:?}"
    );
}

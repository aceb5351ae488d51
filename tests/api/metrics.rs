//! `GET /metrics` on the admin listener: Prometheus text, open on loopback only.

use reqwest::StatusCode;

use crate::common::{PASSWORD, TestApp, assert_error};

async fn scrape(app: &TestApp, url: &str) -> String {
    let response = app.client.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

/// The value of the sample whose line starts with `series` (name plus labels).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_on_a_loopback_admin_listener_need_no_credential_and_count_outcomes() {
    let app = TestApp::spawn().await;
    let token = app.user_token("metrics-user", &[]).await;
    let url = format!("{}/metrics", app.admin);
    let before = scrape(&app, &url).await;

    assert_eq!(app.verify(&token).await.status(), StatusCode::OK);
    assert_eq!(
        app.verify("not-a-token").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let failed = app.try_login("metrics-user", "wrong password").await;
    assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);
    let after = scrape(&app, &url).await;

    // The recorder is process-wide and tests run in parallel: compare growth, not values.
    for series in [
        "authd_verifications_total{outcome=\"valid\"}",
        "authd_verifications_total{outcome=\"malformed\"}",
        "authd_logins_total{outcome=\"invalid_credentials\"}",
    ] {
        assert!(
            sample(&after, series) > sample(&before, series),
            "{series} did not grow"
        );
    }
    assert!(after.contains("authd_build_info{version=\""));
    assert!(after.contains(
        "authd_http_request_duration_seconds_bucket{listener=\"public\",route=\"/v1/verify\""
    ));
    assert!(after.contains("authd_revocation_entries "));
    assert!(after.contains("authd_hash_queue_depth "));
    assert!(!after.contains(PASSWORD) && !after.contains(&token));
}

#[tokio::test]
async fn metrics_on_a_non_loopback_admin_listener_need_the_admin_credential() {
    let app = TestApp::spawn_with(&[("AUTHD__SERVER__ADMIN_LISTEN", "0.0.0.0:0")]).await;
    let port = app.admin.rsplit(':').next().unwrap().to_owned();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let user_token = app.user_token("not-an-admin", &[]).await;

    let anonymous = app.client.get(&url).send().await.unwrap();
    assert_error(anonymous, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let user = app
        .client
        .get(&url)
        .bearer_auth(&user_token)
        .send()
        .await
        .unwrap();
    assert_error(user, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let admin = app
        .client
        .get(&url)
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), StatusCode::OK);
}

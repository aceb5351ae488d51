//! Browser sessions and forward-auth (API.md "Browser sessions and forward-auth"): the
//! login page and its cookies, silent refresh and its grace window, cookie logout, the
//! `rd` rules, the cross-site check, cookies planted by sibling sub-domains, and
//! `/v1/verify` as a proxy's forward-auth target.

use std::collections::HashMap;

use reqwest::header::{
    ACCEPT, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION,
    REFERRER_POLICY, RETRY_AFTER, SET_COOKIE, X_FRAME_OPTIONS,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, assert_error, claims, header, percent_encode};

const LOGIN_URL: &str = "https://auth.example.com/login";
const APP_URL: &str = "https://app.example.com/inbox?folder=a%2Fb&x=1";
const API_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// The overrides of a browser-session daemon.
const COOKIES_ON: &[(&str, &str)] = &[
    ("AUTHD__COOKIE__ENABLED", "true"),
    ("AUTHD__COOKIE__SECURE", "false"),
    ("AUTHD__COOKIE__ALLOWED_REDIRECT_DOMAINS", "example.com"),
    ("AUTHD__COOKIE__LOGIN_URL", LOGIN_URL),
];

// ----- helpers -----

/// A daemon with browser sessions and a client that, like a test of a browser should,
/// does not follow redirects by itself.
struct Browser {
    app: TestApp,
    client: reqwest::Client,
}

impl Browser {
    async fn start() -> Browser {
        Browser::start_with(&[]).await
    }

    async fn start_with(extra: &[(&str, &str)]) -> Browser {
        let mut overrides = COOKIES_ON.to_vec();
        overrides.extend_from_slice(extra);
        let app = TestApp::spawn_with(&overrides).await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Browser { app, client }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.app.public))
    }

    /// Sends `method path` carrying `cookies` (a `Cookie` header's value), nothing else.
    async fn send_with_cookie(
        &self,
        method: Method,
        path: &str,
        cookies: &str,
    ) -> reqwest::Response {
        self.request(method, path)
            .header(COOKIE, cookies)
            .send()
            .await
            .unwrap()
    }

    async fn user(&self, username: &str, roles: &[&str]) {
        self.app.add_user(username, roles).await;
    }

    /// Posts the login form.
    async fn post_login(&self, fields: &[(&str, &str)]) -> reqwest::Response {
        self.request(Method::POST, "/login")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(fields).unwrap())
            .send()
            .await
            .unwrap()
    }

    /// Logs in through the form and returns the cookies it set.
    async fn form_login(&self, username: &str) -> Cookies {
        let response = self
            .post_login(&[("username", username), ("password", PASSWORD)])
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        Cookies::from(&response)
    }

    async fn verify_with(&self, cookies: &str) -> reqwest::Response {
        self.send_with_cookie(Method::GET, "/v1/verify", cookies)
            .await
    }

    async fn get_login(&self, query: &str, cookies: Option<&str>) -> reqwest::Response {
        let mut request = self.request(Method::GET, &format!("/login{query}"));
        if let Some(cookies) = cookies {
            request = request.header(COOKIE, cookies);
        }
        request.send().await.unwrap()
    }
}

/// The `Set-Cookie` headers of a response: name → (value, the whole header line) of the
/// last line of each name (the one a browser ends up with), and every line in order.
struct Cookies(HashMap<String, (String, String)>, Vec<String>);

impl Cookies {
    fn from(response: &reqwest::Response) -> Cookies {
        let mut cookies = HashMap::new();
        let mut lines = Vec::new();
        for line in response.headers().get_all(SET_COOKIE) {
            let line = line.to_str().unwrap().to_owned();
            let pair = line.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            cookies.insert(name.to_owned(), (value.to_owned(), line.clone()));
            lines.push(line);
        }
        Cookies(cookies, lines)
    }

    /// Every `Set-Cookie` line, in the order the browser applies them.
    fn lines(&self) -> Vec<&str> {
        self.1.iter().map(String::as_str).collect()
    }

    fn value(&self, name: &str) -> &str {
        &self
            .0
            .get(name)
            .unwrap_or_else(|| panic!("no cookie {name}"))
            .0
    }

    fn line(&self, name: &str) -> &str {
        &self
            .0
            .get(name)
            .unwrap_or_else(|| panic!("no cookie {name}"))
            .1
    }

    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    fn access(&self) -> String {
        format!("authd={}", self.value("authd"))
    }

    fn refresh(&self) -> String {
        format!("authd_refresh={}", self.value("authd_refresh"))
    }

    fn both(&self) -> String {
        format!("{}; {}", self.access(), self.refresh())
    }
}

fn assert_html(response: &reqwest::Response, status: StatusCode) {
    assert_eq!(response.status(), status);
    assert_eq!(header(response, CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(header(response, X_FRAME_OPTIONS), "DENY");
    assert_eq!(header(response, REFERRER_POLICY), "no-referrer");
    assert_eq!(header(response, CACHE_CONTROL), "no-store");
    assert!(header(response, CONTENT_SECURITY_POLICY).starts_with("default-src 'none'"));
}

// ----- the login page -----

#[tokio::test]
async fn login_page_is_plain_accessible_html_with_the_security_headers() {
    let b = Browser::start().await;

    let response = b.get_login("", None).await;

    assert_html(&response, StatusCode::OK);
    assert_eq!(header(&response, CONTENT_SECURITY_POLICY), API_CSP);
    let html = response.text().await.unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<label for=\"username\">"));
    assert!(html.contains("<label for=\"password\">"));
    assert!(html.contains("autocomplete=\"username\""));
    assert!(html.contains("autocomplete=\"current-password\""));
    assert!(html.contains("<form method=\"post\">"));
    assert!(!html.contains("<script"), "works without JavaScript");
    assert!(!html.contains("src="), "no external assets");
    assert!(!html.contains("<link"), "no external assets");
}

#[tokio::test]
async fn login_page_carries_rd_escaped_and_lets_the_form_reach_its_origin() {
    let b = Browser::start().await;
    // Quotes and angle brackets are printable, so allowed in rd, and must be escaped.
    let rd = "https://app.example.com/a?x=1&y=\"<b>";

    let response = b
        .get_login(&format!("?rd={}", percent_encode(APP_URL)), None)
        .await;

    assert_html(&response, StatusCode::OK);
    // Chromium checks the 303 after the form post against form-action too.
    assert_eq!(
        header(&response, CONTENT_SECURITY_POLICY),
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https://app.example.com; frame-ancestors 'none'"
    );
    let html = response.text().await.unwrap();
    assert!(html.contains(
        "<input type=\"hidden\" name=\"rd\" value=\"https://app.example.com/inbox?folder=a%2Fb&amp;x=1\">"
    ));
    let html = b
        .get_login(&format!("?rd={}", percent_encode(rd)), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(!html.contains("\"<b>"), "rd is escaped: {html}");
    assert!(html.contains("&quot;&lt;b&gt;"), "{html}");
}

// ----- POST /login -----

#[tokio::test]
async fn form_login_sets_both_cookies_and_sends_the_browser_to_rd() {
    let b = Browser::start().await;
    b.user("alice", &[]).await;

    let response = b
        .post_login(&[
            ("username", "alice"),
            ("password", PASSWORD),
            ("rd", APP_URL),
            ("extra", "ignored"),
        ])
        .await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, LOCATION), APP_URL);
    assert_eq!(header(&response, CACHE_CONTROL), "no-store");
    let cookies = Cookies::from(&response);
    let access = cookies.value("authd");
    assert_eq!(claims(access)["sub"], "alice");
    assert_eq!(
        cookies.line("authd"),
        format!("authd={access}; Max-Age=900; Path=/; HttpOnly; SameSite=Lax")
    );
    assert_eq!(
        cookies.line("authd_refresh"),
        format!(
            "authd_refresh={}; Max-Age=1209600; Path=/; HttpOnly; SameSite=Lax",
            cookies.value("authd_refresh")
        )
    );
    assert_eq!(
        b.verify_with(&cookies.access()).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn cookies_are_secure_and_domain_scoped_when_configured() {
    let b = Browser::start_with(&[
        ("AUTHD__COOKIE__SECURE", "true"),
        ("AUTHD__COOKIE__DOMAIN", "example.com"),
        ("AUTHD__COOKIE__NAME", "sso"),
        ("AUTHD__JWT__ACCESS_TTL", "5m"),
        ("AUTHD__JWT__REFRESH_TTL", "1d"),
    ])
    .await;
    b.user("alice", &[]).await;

    let response = b
        .post_login(&[("username", "alice"), ("password", PASSWORD)])
        .await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, LOCATION), "/");
    let cookies = Cookies::from(&response);
    assert!(
        cookies
            .line("sso")
            .ends_with("; Max-Age=300; Path=/; Domain=example.com; HttpOnly; Secure; SameSite=Lax")
    );
    // The refresh cookie is host-only (apps on sibling sub-domains never receive it) and
    // `__Host-`, which browsers accept only from this host, over HTTPS, without `Domain`.
    let refresh = cookies.value("__Host-sso_refresh");
    assert_eq!(
        cookies.line("__Host-sso_refresh"),
        format!(
            "__Host-sso_refresh={refresh}; Max-Age=86400; Path=/; HttpOnly; Secure; SameSite=Lax"
        )
    );
    assert!(!cookies.has("sso_refresh"), "no cookie of the rev-3 name");
    assert_eq!(cookies.lines().len(), 2);
}

#[tokio::test]
async fn the_secure_refresh_cookie_works_under_its_host_name_only() {
    let b = Browser::start_with(&[
        ("AUTHD__COOKIE__SECURE", "true"),
        ("AUTHD__COOKIE__DOMAIN", "example.com"),
    ])
    .await;
    b.user("alice", &[]).await;
    let login = b.form_login("alice").await;
    let token = login.value("__Host-authd_refresh");

    // Under the rev-3 name the token is a cookie any sibling could have read or set: it
    // does not sign the browser in.
    let old_name = b
        .get_login("", Some(&format!("authd_refresh={token}")))
        .await;
    let silent = b
        .get_login("", Some(&format!("__Host-authd_refresh={token}")))
        .await;

    assert_html(&old_name, StatusCode::OK);
    assert!(!Cookies::from(&old_name).has("authd"), "no session");
    assert_eq!(silent.status(), StatusCode::SEE_OTHER);
    let renewed = Cookies::from(&silent);
    assert!(
        renewed
            .line("__Host-authd_refresh")
            .ends_with("; Path=/; HttpOnly; Secure; SameSite=Lax")
    );
    assert_ne!(renewed.value("__Host-authd_refresh"), token);
    assert!(renewed.line("authd").contains("; Domain=example.com;"));
}

#[tokio::test]
async fn form_login_also_takes_json_and_rd_from_the_query() {
    let b = Browser::start().await;
    b.user("alice", &[]).await;

    let response = b
        .request(
            Method::POST,
            &format!("/login?rd={}", percent_encode(APP_URL)),
        )
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, LOCATION), APP_URL);
    assert!(Cookies::from(&response).has("authd_refresh"));
}

#[tokio::test]
async fn failed_form_login_shows_the_form_again_revealing_nothing() {
    let b = Browser::start().await;
    b.user("alice", &[]).await;

    let wrong_password = b
        .post_login(&[
            ("username", "alice"),
            ("password", "s3cret-guess<>"),
            ("rd", APP_URL),
        ])
        .await;
    let unknown_user = b
        .post_login(&[
            ("username", "<nobody>"),
            ("password", "s3cret-guess<>"),
            ("rd", APP_URL),
        ])
        .await;

    for response in [&wrong_password, &unknown_user] {
        assert_html(response, StatusCode::UNAUTHORIZED);
        assert!(response.headers().get(SET_COOKIE).is_none());
    }
    let wrong_password = wrong_password.text().await.unwrap();
    let unknown_user = unknown_user.text().await.unwrap();
    for html in [&wrong_password, &unknown_user] {
        assert!(
            html.contains("The username or password is incorrect."),
            "{html}"
        );
        assert!(!html.contains("s3cret-guess"), "never echoes the password");
        assert!(html.contains("name=\"rd\" value=\"https://app.example.com/inbox"));
    }
    assert!(wrong_password.contains("value=\"alice\""));
    assert!(
        unknown_user.contains("value=\"&lt;nobody&gt;\""),
        "{unknown_user}"
    );
    assert_eq!(
        wrong_password.replace("alice", "X"),
        unknown_user.replace("&lt;nobody&gt;", "X"),
        "the same page for both"
    );
}

#[tokio::test]
async fn throttled_form_login_says_so_with_retry_after() {
    let b = Browser::start_with(&[("AUTHD__LOGIN__MAX_FAILURES", "2")]).await;
    b.user("alice", &[]).await;
    for _ in 0..2 {
        let response = b
            .post_login(&[("username", "alice"), ("password", "wrong password")])
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    let response = b
        .post_login(&[("username", "alice"), ("password", PASSWORD)])
        .await;

    assert_html(&response, StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&response, RETRY_AFTER).parse::<u64>().unwrap() > 0);
    let html = response.text().await.unwrap();
    assert!(html.contains("Too many failed sign-in attempts"), "{html}");
    assert!(html.contains("<form"));
}

#[tokio::test]
async fn disabled_account_gets_the_wrong_password_form_with_401_uncounted() {
    // Anything but the wrong-password page would tell whoever typed the password that it
    // was right. Two failures would lock the name, if the disabled attempts counted.
    let b = Browser::start_with(&[("AUTHD__LOGIN__MAX_FAILURES", "2")]).await;
    b.user("alice", &[]).await;
    let wrong_password = b
        .post_login(&[
            ("username", "alice"),
            ("password", "wrong password"),
            ("rd", APP_URL),
        ])
        .await;
    assert_html(&wrong_password, StatusCode::UNAUTHORIZED);
    let wrong_password = wrong_password.text().await.unwrap();
    let patch = b.app.update_user("alice", json!({"disabled": true})).await;
    assert_eq!(patch.status(), StatusCode::OK);

    for _ in 0..3 {
        let response = b
            .post_login(&[
                ("username", "alice"),
                ("password", PASSWORD),
                ("rd", APP_URL),
            ])
            .await;

        assert_html(&response, StatusCode::UNAUTHORIZED);
        assert!(response.headers().get(SET_COOKIE).is_none());
        assert!(response.headers().get(RETRY_AFTER).is_none());
        let html = response.text().await.unwrap();
        assert!(
            html.contains("The username or password is incorrect."),
            "{html}"
        );
        assert!(!html.contains("disabled"), "{html}");
        assert_eq!(html, wrong_password, "the same page as a wrong password");
    }
    // The JSON API keeps its machine-readable answer.
    assert_error(
        b.app.try_login("alice", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "account_disabled",
    )
    .await;
}

#[tokio::test]
async fn malformed_form_posts_get_html_errors() {
    let b = Browser::start().await;

    let missing = b.post_login(&[("username", "alice")]).await;
    let text = b
        .request(Method::POST, "/login")
        .header(CONTENT_TYPE, "text/plain")
        .body("username=alice")
        .send()
        .await
        .unwrap();
    let unknown_json = b
        .request(Method::POST, "/login")
        .json(&json!({"username": "a", "password": "b", "remember": true}))
        .send()
        .await
        .unwrap();

    assert_html(&missing, StatusCode::BAD_REQUEST);
    assert_html(&text, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_html(&unknown_json, StatusCode::BAD_REQUEST);
}

// ----- cookies on the API -----

#[tokio::test]
async fn verify_accepts_the_cookie_with_identity_headers_and_role_check() {
    let b = Browser::start().await;
    b.user("alice", &[]).await;
    b.user("root", &["admin", "ops"]).await;
    let alice = b.form_login("alice").await;
    let root = b.form_login("root").await;

    let plain = b.verify_with(&alice.access()).await;
    let admin = b.verify_with(&root.access()).await;
    let lacking = b
        .send_with_cookie(Method::GET, "/v1/verify?role=admin", &alice.access())
        .await;
    let having = b
        .send_with_cookie(
            Method::GET,
            "/v1/verify?role=admin",
            &format!("theme=dark; {}", root.access()),
        )
        .await;

    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(header(&plain, "x-auth-user"), "alice");
    assert!(
        plain.headers().contains_key("x-auth-roles"),
        "present even when empty"
    );
    assert_eq!(header(&plain, "x-auth-roles"), "");
    assert_eq!(header(&admin, "x-auth-roles"), "admin,ops");
    assert_eq!(having.status(), StatusCode::OK);
    assert!(
        lacking.headers().get("x-auth-login").is_none(),
        "a 403 is not a login"
    );
    assert_error(lacking, StatusCode::FORBIDDEN, "insufficient_scope").await;
    for response in [plain, admin, having] {
        assert!(
            response.headers().get(SET_COOKIE).is_none(),
            "verify never sets cookies"
        );
    }
}

#[tokio::test]
async fn bearer_routes_accept_the_cookie_and_authorization_wins() {
    let b = Browser::start().await;
    b.user("alice", &[]).await;
    let cookies = b.form_login("alice").await;

    let me = b
        .send_with_cookie(Method::GET, "/v1/me", &cookies.access())
        .await;
    let sessions = b
        .send_with_cookie(Method::GET, "/v1/sessions", &cookies.access())
        .await;
    let bad_bearer = b
        .request(Method::GET, "/v1/me")
        .header(COOKIE, cookies.access())
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    let token_in_query = b
        .request(
            Method::GET,
            &format!("/v1/me?access_token={}", cookies.value("authd")),
        )
        .send()
        .await
        .unwrap();

    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(me.json::<Value>().await.unwrap()["username"], "alice");
    let sessions: Value = sessions.json().await.unwrap();
    assert_eq!(sessions["sessions"][0]["current"], true);
    assert_error(bad_bearer, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert_error(token_in_query, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn the_cookie_is_ignored_while_browser_sessions_are_disabled() {
    let off = TestApp::spawn().await;
    let token = off.user_token("alice", &[]).await;

    let response = off
        .public_request(Method::GET, "/v1/verify")
        .header(COOKIE, format!("authd={token}"))
        .send()
        .await
        .unwrap();

    assert!(response.headers().get("x-auth-login").is_none());
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

// ----- forward-auth: the way to the login page -----

#[tokio::test]
async fn verify_401_names_the_login_page_with_the_original_url_encoded() {
    let b = Browser::start().await;
    let expected = format!("{LOGIN_URL}?rd={}", percent_encode(APP_URL));

    let nginx = b
        .request(Method::GET, "/v1/verify")
        .header("x-original-url", APP_URL)
        .send()
        .await
        .unwrap();
    let caddy = b
        .request(Method::GET, "/v1/verify")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "app.example.com")
        .header("x-forwarded-uri", "/inbox?folder=a%2Fb&x=1")
        .header(COOKIE, "authd=forged.cookie.value")
        .send()
        .await
        .unwrap();
    let foreign = b
        .request(Method::GET, "/v1/verify")
        .header("x-original-url", "https://evil-example.com/x")
        .send()
        .await
        .unwrap();
    let none = b.request(Method::GET, "/v1/verify").send().await.unwrap();

    assert_eq!(header(&nginx, "x-auth-login"), expected);
    assert_eq!(header(&caddy, "x-auth-login"), expected);
    assert_eq!(
        header(&foreign, "x-auth-login"),
        LOGIN_URL,
        "no rd to a foreign host"
    );
    assert_eq!(header(&none, "x-auth-login"), LOGIN_URL);
    assert!(header(&nginx, "www-authenticate").starts_with("Bearer realm=\"authd\""));
    for response in [nginx, caddy, foreign, none] {
        assert!(response.headers().get(SET_COOKIE).is_none());
        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    }
}

#[tokio::test]
async fn login_url_with_a_query_gets_rd_appended_with_an_ampersand() {
    let b = Browser::start_with(&[(
        "AUTHD__COOKIE__LOGIN_URL",
        "https://auth.example.com/sso?theme=dark",
    )])
    .await;

    let response = b
        .request(Method::GET, "/v1/verify")
        .header("x-original-url", "https://example.com/")
        .send()
        .await
        .unwrap();

    assert_eq!(
        header(&response, "x-auth-login"),
        "https://auth.example.com/sso?theme=dark&rd=https%3A%2F%2Fexample.com%2F"
    );
}

#[tokio::test]
async fn redirect_1_sends_browsers_to_the_login_page_and_plain_verify_never_redirects() {
    let b = Browser::start().await;
    let browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let send = |path: &str, accept: &str| {
        b.request(Method::GET, path)
            .header(ACCEPT, accept)
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "app.example.com")
            .header("x-forwarded-uri", "/inbox?folder=a%2Fb&x=1")
            .send()
    };

    let browser = send("/v1/verify?redirect=1", browser_accept).await.unwrap();
    let api_client = send("/v1/verify?redirect=1", "application/json")
        .await
        .unwrap();
    let plain = send("/v1/verify", browser_accept).await.unwrap();

    assert_eq!(browser.status(), StatusCode::FOUND);
    assert_eq!(
        header(&browser, LOCATION),
        format!("{LOGIN_URL}?rd={}", percent_encode(APP_URL))
    );
    assert!(browser.headers().get(SET_COOKIE).is_none());
    assert_eq!(api_client.status(), StatusCode::UNAUTHORIZED);
    assert!(api_client.headers().contains_key("x-auth-login"));
    assert_eq!(plain.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn redirect_1_with_a_valid_session_is_a_plain_200() {
    let b = Browser::start().await;
    b.user("alice", &[]).await;
    let cookies = b.form_login("alice").await;

    let response = b
        .request(Method::POST, "/v1/verify?redirect=1")
        .header(ACCEPT, "text/html")
        .header(COOKIE, cookies.access())
        .body("a body that is never read")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-auth-user"), "alice");
}

// ----- silent refresh and the grace window -----

#[tokio::test]
async fn get_login_with_a_refresh_cookie_refreshes_silently_and_returns_to_rd() {
    let b = Browser::start().await;
    b.user("alice", &[]).await;
    let first = b.form_login("alice").await;

    let response = b
        .get_login(
            &format!("?rd={}", percent_encode(APP_URL)),
            Some(&first.refresh()),
        )
        .await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, LOCATION), APP_URL);
    let renewed = Cookies::from(&response);
    assert_ne!(renewed.value("authd_refresh"), first.value("authd_refresh"));
    assert_eq!(
        claims(renewed.value("authd"))["sid"],
        claims(first.value("authd"))["sid"],
        "the same session"
    );
    assert_eq!(
        b.verify_with(&renewed.access()).await.status(),
        StatusCode::OK
    );

    let without_rd = b.get_login("", Some(&renewed.refresh())).await;
    assert_eq!(without_rd.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&without_rd, LOCATION), "/");
}

#[tokio::test]
async fn parallel_refreshes_within_the_grace_both_succeed_and_the_session_lives() {
    let b = Browser::start().await;
    b.user("alice", &[]).await;
    let login = b.form_login("alice").await;

    // Two tabs present the same refresh cookie at once.
    let cookie = login.refresh();
    let (one, two) = tokio::join!(
        b.get_login("", Some(&cookie)),
        b.get_login("", Some(&cookie))
    );

    assert_eq!(one.status(), StatusCode::SEE_OTHER);
    assert_eq!(two.status(), StatusCode::SEE_OTHER);
    let (one, two) = (Cookies::from(&one), Cookies::from(&two));
    // Exactly one rotated; the other answer sets only a new access cookie.
    let (rotated, grace) = if one.has("authd_refresh") {
        (one, two)
    } else {
        (two, one)
    };
    assert!(rotated.has("authd_refresh"));
    assert!(
        !grace.has("authd_refresh"),
        "the grace answer leaves the refresh cookie be"
    );
    assert!(grace.has("authd"));
    assert_eq!(
        b.verify_with(&rotated.access()).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        b.verify_with(&grace.access()).await.status(),
        StatusCode::OK
    );
    // The browser holds the rotated refresh cookie: it keeps working.
    let next = b.get_login("", Some(&rotated.refresh())).await;
    assert_eq!(next.status(), StatusCode::SEE_OTHER);
    assert!(Cookies::from(&next).has("authd_refresh"));
}

#[tokio::test]
async fn reuse_outside_the_grace_revokes_the_session() {
    let b = Browser::start_with(&[("AUTHD__COOKIE__REFRESH_GRACE", "0s")]).await;
    b.user("alice", &[]).await;
    let login = b.form_login("alice").await;
    let first = b.get_login("", Some(&login.refresh())).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    let renewed = Cookies::from(&first);

    let reuse = b.get_login("", Some(&login.refresh())).await;

    assert_html(&reuse, StatusCode::OK);
    let cleared = Cookies::from(&reuse);
    assert!(cleared.line("authd").contains("Max-Age=0"));
    assert!(cleared.line("authd_refresh").contains("Max-Age=0"));
    assert!(reuse.text().await.unwrap().contains("<form"));
    assert_eq!(
        b.verify_with(&renewed.access()).await.status(),
        StatusCode::UNAUTHORIZED,
        "the whole session is revoked"
    );
    let after = b.get_login("", Some(&renewed.refresh())).await;
    assert_eq!(
        after.status(),
        StatusCode::OK,
        "its newest refresh cookie too"
    );
}

#[tokio::test]
async fn the_token_api_never_grants_grace() {
    let b = Browser::start().await;
    b.user("alice", &[]).await;
    let login = b.form_login("alice").await;
    let refresh = |token: String| {
        b.request(Method::POST, "/v1/token/refresh")
            .json(&json!({"refresh_token": token}))
            .send()
    };
    let first = refresh(login.value("authd_refresh").to_owned())
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);

    let reuse = refresh(login.value("authd_refresh").to_owned())
        .await
        .unwrap();

    assert_error(reuse, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_eq!(
        b.verify_with(&login.access()).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_dead_refresh_cookie_gets_the_form_and_is_cleared() {
    let b = Browser::start().await;

    let response = b.get_login("", Some("authd_refresh=forged")).await;

    assert_html(&response, StatusCode::OK);
    assert!(
        Cookies::from(&response)
            .line("authd_refresh")
            .contains("Max-Age=0")
    );
}

#[tokio::test]
async fn an_api_refresh_token_replayed_as_the_cookie_within_the_grace_is_reuse() {
    // An API client's refresh token, already rotated, falls into the wrong hands; passed
    // off as a browser's refresh cookie within the grace it must not look like a second
    // tab: it is reuse, and the whole session ends.
    let b = Browser::start().await;
    b.user("alice", &[]).await;
    let login = b.app.login("alice").await;
    let stolen = login["refresh_token"].as_str().unwrap();
    let rotated: Value = b.app.refresh(stolen).await.json().await.unwrap();

    let replay = b
        .get_login("", Some(&format!("authd_refresh={stolen}")))
        .await;

    assert_html(&replay, StatusCode::OK);
    let cleared = Cookies::from(&replay);
    assert!(cleared.line("authd_refresh").contains("Max-Age=0"));
    assert!(!cleared.has("authd") || cleared.line("authd").contains("Max-Age=0"));
    assert!(
        replay.text().await.unwrap().contains("<form"),
        "the login form"
    );
    assert_eq!(
        b.app
            .verify(rotated["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "the session is revoked"
    );
    assert_error(
        b.app
            .refresh(rotated["refresh_token"].as_str().unwrap())
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn a_cookie_issued_refresh_token_presented_again_within_the_grace_gets_it() {
    // The counterpart of the replay above: the same timing with a token the form login put
    // in the cookie is a second tab, and the session lives.
    let b = Browser::start().await;
    b.user("alice", &[]).await;
    let login = b.form_login("alice").await;
    let first = b.get_login("", Some(&login.refresh())).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    let renewed = Cookies::from(&first);

    let again = b.get_login("", Some(&login.refresh())).await;

    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    let graced = Cookies::from(&again);
    assert!(!graced.has("authd_refresh"), "no second rotation");
    assert_eq!(
        b.verify_with(&graced.access()).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        b.verify_with(&renewed.access()).await.status(),
        StatusCode::OK,
        "the session lives"
    );
    // And the silently refreshed cookie is itself issued in the cookie: it gets the grace.
    let second = b.get_login("", Some(&renewed.refresh())).await;
    assert_eq!(second.status(), StatusCode::SEE_OTHER);
    let once_more = b.get_login("", Some(&renewed.refresh())).await;
    assert_eq!(once_more.status(), StatusCode::SEE_OTHER);
    assert!(!Cookies::from(&once_more).has("authd_refresh"));
}

// ----- cookies planted by sibling sub-domains (cookie tossing) -----

/// A daemon whose access cookie is shared under `example.com`, alice signed in through the
/// form, and mallory — who controls some sibling sub-domain — holding a session of his own.
async fn tossing_setup(secure: bool) -> (Browser, Cookies, Cookies) {
    let secure = if secure { "true" } else { "false" };
    let b = Browser::start_with(&[
        ("AUTHD__COOKIE__SECURE", secure),
        ("AUTHD__COOKIE__DOMAIN", "example.com"),
    ])
    .await;
    b.user("alice", &[]).await;
    b.user("mallory", &[]).await;
    let alice = b.form_login("alice").await;
    let mallory = b.form_login("mallory").await;
    (b, alice, mallory)
}

/// The HTML `400` of a tossed request: no redirect to follow (no loop), no cookie set or
/// cleared (clearing ours would leave the planted one in charge).
async fn assert_tossing_page(response: reqwest::Response) {
    assert_html(&response, StatusCode::BAD_REQUEST);
    assert!(response.headers().get(LOCATION).is_none());
    assert!(response.headers().get(SET_COOKIE).is_none());
    let html = response.text().await.unwrap();
    assert!(html.contains("two session cookies"), "{html}");
}

#[tokio::test]
async fn a_second_access_cookie_planted_by_a_sibling_counts_as_none() {
    let (b, alice, mallory) = tossing_setup(true).await;
    let access = |one: &Cookies, other: &Cookies| {
        format!(
            "authd={}; authd={}",
            one.value("authd"),
            other.value("authd")
        )
    };

    // Whatever the order, neither cookie wins: the apps see no session at all ...
    for cookies in [access(&mallory, &alice), access(&alice, &mallory)] {
        let verify = b.verify_with(&cookies).await;
        assert!(verify.headers().get("x-auth-user").is_none());
        assert_error(verify, StatusCode::UNAUTHORIZED, "invalid_token").await;
        let me = b.send_with_cookie(Method::GET, "/v1/me", &cookies).await;
        assert_error(me, StatusCode::UNAUTHORIZED, "invalid_token").await;
        // ... and the way to the login page ends on a page, not in a redirect loop: the
        // proxy's redirect leads to /login, which does not send the browser back.
        let to_login = b
            .request(Method::GET, "/v1/verify?redirect=1")
            .header(ACCEPT, "text/html")
            .header("x-original-url", APP_URL)
            .header(COOKIE, &cookies)
            .send()
            .await
            .unwrap();
        assert_eq!(to_login.status(), StatusCode::FOUND);
        let with_refresh = format!(
            "{cookies}; __Host-authd_refresh={}",
            alice.value("__Host-authd_refresh")
        );
        let rd = format!("?rd={}", percent_encode(APP_URL));
        assert_tossing_page(b.get_login(&rd, Some(&with_refresh)).await).await;
        let relogin = b
            .request(Method::POST, "/login")
            .header(COOKIE, &cookies)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(format!(
                "username=alice&password={}&rd={}",
                percent_encode(PASSWORD),
                percent_encode(APP_URL)
            ))
            .send()
            .await
            .unwrap();
        assert_tossing_page(relogin).await;
        let logout = b
            .send_with_cookie(Method::POST, "/logout", &with_refresh)
            .await;
        assert_tossing_page(logout).await;
    }
    // Nothing above rotated or revoked alice's session.
    assert_eq!(
        b.verify_with(&alice.access()).await.status(),
        StatusCode::OK
    );
    let alice_refresh = format!(
        "__Host-authd_refresh={}",
        alice.value("__Host-authd_refresh")
    );
    assert_eq!(
        b.get_login("", Some(&alice_refresh)).await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn a_second_refresh_cookie_counts_as_none() {
    // Without `Secure` the refresh cookie cannot be `__Host-`, so a sibling can plant one
    // under the parent domain; under `Secure` a second `__Host-` one can only come from
    // authd's own host, and is refused all the same.
    for secure in [false, true] {
        let (b, alice, mallory) = tossing_setup(secure).await;
        let name = if secure {
            "__Host-authd_refresh"
        } else {
            "authd_refresh"
        };
        let both = |one: &Cookies, other: &Cookies| {
            format!("{name}={}; {name}={}", one.value(name), other.value(name))
        };

        for cookies in [both(&mallory, &alice), both(&alice, &mallory)] {
            let rd = format!("?rd={}", percent_encode(APP_URL));
            let silent = b.get_login(&rd, Some(&cookies)).await;
            if secure {
                assert_tossing_page(silent).await;
            } else {
                // The only cookie set: expiring a rev-3 cookie of the same name (see
                // `an_old_refresh_cookie_of_the_same_name_is_expired_before_the_new_one`).
                assert_html(&silent, StatusCode::BAD_REQUEST);
                assert!(silent.headers().get(LOCATION).is_none());
                assert_eq!(
                    Cookies::from(&silent).lines(),
                    [
                        "authd_refresh=; Max-Age=0; Path=/; Domain=example.com; HttpOnly; SameSite=Lax"
                    ]
                );
            }
        }
        // Neither session was signed into, rotated or revoked: both refresh tokens still
        // refresh (a rotated one would be reuse here).
        for who in [&alice, &mallory] {
            let refresh = format!("{name}={}", who.value(name));
            let response = b.get_login("", Some(&refresh)).await;
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "secure: {secure}");
        }
    }
}

// ----- the refresh cookie of rev 3 -----

#[tokio::test]
async fn login_expires_a_refresh_cookie_of_the_rev3_name_and_domain() {
    // Rev 3 sent the refresh cookie to every sibling sub-domain (`Domain=example.com`);
    // a browser upgraded to rev 4 still holds it until authd expires it.
    let b = Browser::start_with(&[
        ("AUTHD__COOKIE__SECURE", "true"),
        ("AUTHD__COOKIE__DOMAIN", "example.com"),
    ])
    .await;
    b.user("alice", &[]).await;
    let expiry =
        "authd_refresh=; Max-Age=0; Path=/; Domain=example.com; HttpOnly; Secure; SameSite=Lax";

    let login = b
        .request(Method::POST, "/login")
        .header(COOKIE, "authd_refresh=from-rev-3")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!(
            "username=alice&password={}",
            percent_encode(PASSWORD)
        ))
        .send()
        .await
        .unwrap();
    let page = b.get_login("", Some("authd_refresh=from-rev-3")).await;
    let logout = b
        .send_with_cookie(Method::POST, "/logout", "authd_refresh=from-rev-3")
        .await;
    let without = b
        .post_login(&[("username", "alice"), ("password", PASSWORD)])
        .await;

    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let set = Cookies::from(&login);
    assert_eq!(set.lines()[0], expiry, "expired first");
    assert!(
        set.value("__Host-authd_refresh").len() > 40,
        "the new one is set"
    );
    assert_eq!(set.lines().len(), 3);
    assert_html(&page, StatusCode::OK);
    assert_eq!(Cookies::from(&page).lines(), [expiry]);
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_eq!(Cookies::from(&logout).lines()[0], expiry);
    // Only when the browser sends one.
    assert_eq!(without.status(), StatusCode::SEE_OTHER);
    assert!(!Cookies::from(&without).lines().contains(&expiry));
}

#[tokio::test]
async fn an_old_refresh_cookie_of_the_same_name_is_expired_before_the_new_one() {
    // Without `Secure` the rev-3 and rev-4 refresh cookies share a name and differ only in
    // `Domain`: the expiry of the old one goes with every setting of the new one, first,
    // and the answers that leave the refresh cookie alone carry neither.
    let b = Browser::start_with(&[("AUTHD__COOKIE__DOMAIN", "example.com")]).await;
    b.user("alice", &[]).await;
    let login = b.form_login("alice").await;
    let expiry = "authd_refresh=; Max-Age=0; Path=/; Domain=example.com; HttpOnly; SameSite=Lax";

    let silent = b.get_login("", Some(&login.refresh())).await;
    let grace = b.get_login("", Some(&login.refresh())).await;

    assert_eq!(silent.status(), StatusCode::SEE_OTHER);
    let renewed = Cookies::from(&silent);
    assert_eq!(renewed.lines()[0], expiry);
    assert!(
        renewed
            .line("authd_refresh")
            .ends_with("; Path=/; HttpOnly; SameSite=Lax")
    );
    assert_ne!(renewed.value("authd_refresh"), "");
    assert_eq!(grace.status(), StatusCode::SEE_OTHER);
    let graced = Cookies::from(&grace);
    assert!(!graced.has("authd_refresh"), "{:?}", graced.lines());
}

// ----- logout -----

#[tokio::test]
async fn cookie_logout_revokes_the_session_clears_both_cookies_and_goes_to_rd() {
    let b = Browser::start_with(&[("AUTHD__COOKIE__DOMAIN", "example.com")]).await;
    b.user("alice", &[]).await;
    let cookies = b.form_login("alice").await;

    let response = b
        .request(Method::POST, "/logout")
        .header(COOKIE, cookies.both())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("rd={}", percent_encode(APP_URL)))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, LOCATION), APP_URL);
    let cleared = Cookies::from(&response);
    // Each cookie cleared with its own attributes: the access cookie with its `Domain`, the
    // host-only refresh cookie without — and, first, a rev-3 refresh cookie of the same
    // name and that `Domain`, in case the browser still holds one.
    assert_eq!(
        cleared.lines(),
        [
            "authd_refresh=; Max-Age=0; Path=/; Domain=example.com; HttpOnly; SameSite=Lax",
            "authd=; Max-Age=0; Path=/; Domain=example.com; HttpOnly; SameSite=Lax",
            "authd_refresh=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax",
        ]
    );
    assert_eq!(
        b.verify_with(&cookies.access()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let refresh = b.get_login("", Some(&cookies.refresh())).await;
    assert_eq!(
        refresh.status(),
        StatusCode::OK,
        "no silent refresh after logout"
    );
}

#[tokio::test]
async fn logout_without_rd_is_204_and_finds_the_session_through_the_refresh_cookie() {
    let b = Browser::start().await;
    b.user("alice", &[]).await;
    let cookies = b.form_login("alice").await;

    // The access cookie has expired (the browser dropped it): only the refresh cookie.
    let response = b
        .send_with_cookie(Method::POST, "/logout", &cookies.refresh())
        .await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(Cookies::from(&response).line("authd").contains("Max-Age=0"));
    assert_eq!(
        b.verify_with(&cookies.access()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let sid = claims(cookies.value("authd"))["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let list: Value = b.app.list_revocations("").await.json().await.unwrap();
    assert!(
        list["revocations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "sid" && r["id"] == sid.as_str())
    );
}

#[tokio::test]
async fn logout_with_a_bearer_token_and_rd_in_the_query() {
    let b = Browser::start().await;
    let token = b.app.user_token("alice", &[]).await;

    let response = b
        .request(
            Method::POST,
            &format!("/logout?rd={}", percent_encode(APP_URL)),
        )
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let bad = b
        .request(Method::POST, "/logout")
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, LOCATION), APP_URL);
    assert_eq!(
        b.app.verify(&token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_html(&bad, StatusCode::UNAUTHORIZED);
}

// ----- rd rules -----

#[tokio::test]
async fn rd_outside_the_allowed_domains_is_refused_with_an_html_400() {
    let b = Browser::start().await;
    b.user("alice", &[]).await;
    let cookies = b.form_login("alice").await;
    let refused = [
        "https://evil.com/",
        "https://evil-example.com/",
        "https://example.com.evil.io/",
        "//evil.com/",
        "/relative/path",
        "javascript:alert(1)",
        "https://alice@app.example.com/",
        "https://app.example.com@evil.com/",
        "https://app.example.com\\@evil.com/",
        "https://app.example.com/\r\nSet-Cookie:x=y",
    ];

    for rd in refused {
        let query = format!("?rd={}", percent_encode(rd));
        let page = b.get_login(&query, None).await;
        let silent = b.get_login(&query, Some(&cookies.refresh())).await;
        let login = b
            .post_login(&[("username", "alice"), ("password", PASSWORD), ("rd", rd)])
            .await;
        let logout = b
            .request(Method::POST, &format!("/logout{query}"))
            .send()
            .await
            .unwrap();
        for response in [page, silent, login, logout] {
            assert_html(&response, StatusCode::BAD_REQUEST);
            assert!(response.headers().get(LOCATION).is_none(), "{rd}");
            assert!(response.headers().get(SET_COOKIE).is_none(), "{rd}");
        }
    }
    // Nothing above rotated the refresh cookie.
    assert_eq!(
        b.get_login("", Some(&cookies.refresh())).await.status(),
        StatusCode::SEE_OTHER
    );
}

// ----- cross-site protection -----

#[tokio::test]
async fn cross_site_login_posts_are_refused() {
    let b = Browser::start().await;
    b.user("alice", &[]).await;
    let post = |headers: &[(&'static str, &'static str)]| {
        let mut request = b
            .request(Method::POST, "/login")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(format!(
                "username=alice&password={}",
                percent_encode(PASSWORD)
            ));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };

    for headers in [
        vec![("sec-fetch-site", "cross-site")],
        vec![("origin", "null")],
        vec![("origin", "https://evil.com")],
        vec![
            ("origin", "https://evil-example.com"),
            ("sec-fetch-site", "same-site"),
        ],
    ] {
        let response = post(&headers).await.unwrap();
        assert_html(&response, StatusCode::FORBIDDEN);
        assert!(response.headers().get(SET_COOKIE).is_none());
    }
    let host = b.app.public.trim_start_matches("http://").to_owned();
    let same_host = b
        .request(Method::POST, "/login")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("origin", format!("http://{host}"))
        .header("sec-fetch-site", "same-origin")
        .body(format!(
            "username=alice&password={}",
            percent_encode(PASSWORD)
        ))
        .send()
        .await
        .unwrap();
    for headers in [vec![], vec![("origin", "https://app.example.com")]] {
        assert_eq!(
            post(&headers).await.unwrap().status(),
            StatusCode::SEE_OTHER
        );
    }
    // The login page's own form: its `Referrer-Policy: no-referrer` makes browsers send
    // `Origin: null`, and `Sec-Fetch-Site: same-origin` vouches for it.
    let own_form = b
        .request(Method::POST, "/login")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin")
        .body(format!(
            "username=alice&password={}",
            percent_encode(PASSWORD)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(own_form.status(), StatusCode::SEE_OTHER);
    assert_eq!(same_host.status(), StatusCode::SEE_OTHER);
}

/// Sends each kind of cookie-authenticated state change of the public API, built by
/// `request` (which adds the cookies and the headers under test), on the session `sid`.
async fn cookie_state_changes(
    sid: &str,
    request: impl Fn(Method, &str) -> reqwest::RequestBuilder,
) -> Vec<reqwest::Response> {
    vec![
        request(Method::POST, "/v1/logout").send().await.unwrap(),
        request(Method::POST, "/v1/password")
            .json(&json!({"current_password": PASSWORD, "new_password": "whatever else"}))
            .send()
            .await
            .unwrap(),
        request(Method::DELETE, &format!("/v1/sessions/{sid}"))
            .send()
            .await
            .unwrap(),
        // nginx asks verify with the client's method.
        request(Method::POST, "/v1/verify").send().await.unwrap(),
    ]
}

#[tokio::test]
async fn cookie_authenticated_state_changes_from_other_sites_are_refused() {
    let b = Browser::start().await;
    b.user("alice", &[]).await;
    let cookies = b.form_login("alice").await;
    let sid = claims(cookies.value("authd"))["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let evil = |method: Method, path: &str| {
        b.request(method, path)
            .header(COOKIE, cookies.both())
            .header("origin", "https://evil.com")
    };

    let mut responses = cookie_state_changes(&sid, evil).await;
    responses.push(
        evil(Method::GET, "/v1/verify")
            .header("x-forwarded-method", "DELETE")
            .send()
            .await
            .unwrap(),
    );
    for response in responses {
        assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let logout_page = b
        .request(Method::POST, "/logout")
        .header(COOKIE, cookies.both())
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_html(&logout_page, StatusCode::FORBIDDEN);

    // Reads are fine from anywhere; the session survived all of the above.
    let read = evil(Method::GET, "/v1/me").send().await.unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    // A bearer token is not a cookie: no cross-site check.
    let bearer = b
        .request(Method::GET, "/v1/sessions")
        .bearer_auth(cookies.value("authd"))
        .header("origin", "https://evil.com")
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::OK);
    // Same-site and non-browser state changes pass.
    let same_site = b
        .request(Method::DELETE, &format!("/v1/sessions/{sid}"))
        .header(COOKIE, cookies.access())
        .header("origin", "https://app.example.com")
        .header("sec-fetch-site", "same-site")
        .send()
        .await
        .unwrap();
    assert_eq!(same_site.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn origin_null_is_refused_on_cookie_state_changes_even_when_same_origin() {
    // Only the login page's own form may post with `Origin: null` (its `Referrer-Policy:
    // no-referrer` causes it); a state change on an existing session never may.
    let b = Browser::start().await;
    b.user("alice", &[]).await;
    let cookies = b.form_login("alice").await;
    let sid = claims(cookies.value("authd"))["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let null_origin = |method: Method, path: &str| {
        b.request(method, path)
            .header(COOKIE, cookies.both())
            .header("origin", "null")
            .header("sec-fetch-site", "same-origin")
    };

    let mut responses = cookie_state_changes(&sid, null_origin).await;
    responses.push(
        null_origin(Method::POST, "/v1/logout")
            .json(&json!({"all": true}))
            .send()
            .await
            .unwrap(),
    );
    for response in responses {
        assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    }
    for body in [None, Some(format!("rd={}", percent_encode(APP_URL)))] {
        let mut request = null_origin(Method::POST, "/logout");
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body);
        }
        let logout_page = request.send().await.unwrap();
        assert_html(&logout_page, StatusCode::FORBIDDEN);
        assert!(
            logout_page.headers().get(SET_COOKIE).is_none(),
            "the cookies stay"
        );
    }

    // Nothing was revoked or changed: the access cookie still verifies, the refresh cookie
    // still refreshes silently, and the password is the old one.
    assert_eq!(
        b.verify_with(&cookies.access()).await.status(),
        StatusCode::OK
    );
    let sessions: Value = b
        .send_with_cookie(Method::GET, "/v1/sessions", &cookies.access())
        .await
        .json()
        .await
        .unwrap();
    assert!(
        sessions["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["sid"] == sid.as_str()),
        "{sessions}"
    );
    assert_eq!(
        b.get_login("", Some(&cookies.refresh())).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        b.app.try_login("alice", PASSWORD).await.status(),
        StatusCode::OK
    );
}

// ----- the routes exist only with cookies enabled -----

#[tokio::test]
async fn browser_routes_are_404_while_cookies_are_disabled() {
    let app = TestApp::spawn().await;

    for (method, path) in [
        (Method::GET, "/login"),
        (Method::POST, "/login"),
        (Method::PUT, "/login"),
        (Method::POST, "/logout"),
        (Method::GET, "/logout"),
    ] {
        let response = app
            .client
            .request(method.clone(), format!("{}{path}", app.public))
            .send()
            .await
            .unwrap();
        assert!(response.headers().get("allow").is_none(), "{method} {path}");
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn wrong_methods_on_browser_routes_are_405_pages() {
    let b = Browser::start().await;

    let put = b.request(Method::PUT, "/login").send().await.unwrap();
    let get = b.request(Method::GET, "/logout").send().await.unwrap();

    assert_html(&put, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&put, "allow"), "GET, POST");
    assert_html(&get, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&get, "allow"), "POST");
}

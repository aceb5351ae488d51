//! The self-service account page (API.md "Second factor", its Browser paragraph; "Browser
//! sessions and forward-auth"; `mfa.required_roles`): `GET /account` and its forms, `POST
//! /account/{password, sessions/end, totp, totp/confirm, totp/disable, recovery-codes}`, as a
//! browser drives them with its session cookies: each form's success and its refusals (as
//! the page with a 4xx), the page's headers, `/logout`'s cross-site rule, and the landing of a
//! user whom `mfa.required_roles` holds to a second factor.

use authd::auth::mfa::totp;
use base64::Engine as _;
use reqwest::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION, REFERRER_POLICY,
    RETRY_AFTER, SET_COOKIE, X_FRAME_OPTIONS,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, assert_error, b64_json, claims, header, with_claim};

const APP_URL: &str = "https://app.example.com/inbox?folder=a%2Fb&x=1";
/// The login page's `Content-Security-Policy` (without an `rd`), which the account page
/// carries too.
const PAGE_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";
/// What every refused password or code says, whichever of the two was wrong.
const INCORRECT: &str = "The password or code is incorrect. Nothing was changed.";
const NEW_PASSWORD: &str = "a brand new passphrase";

/// The overrides of a browser-session daemon (plain HTTP, so cookies without `Secure`).
const COOKIES_ON: &[(&str, &str)] = &[
    ("AUTHD__COOKIE__ENABLED", "true"),
    ("AUTHD__COOKIE__SECURE", "false"),
    ("AUTHD__COOKIE__ALLOWED_REDIRECT_DOMAINS", "example.com"),
    ("AUTHD__COOKIE__LOGIN_URL", "https://auth.example.com/login"),
];

/// The path of every form of the page.
const FORMS: &[&str] = &[
    "/account/password",
    "/account/sessions/end",
    "/account/totp",
    "/account/totp/confirm",
    "/account/totp/disable",
    "/account/recovery-codes",
];

// ----- helpers -----

/// A daemon with browser sessions, and a client that, as a browser test should, does not
/// follow redirects by itself.
struct Site {
    app: TestApp,
    client: reqwest::Client,
}

/// A browser's (or an API client's) session: its access and refresh tokens.
struct Session {
    access: String,
    refresh: String,
}

impl Session {
    /// Both cookies, as the browser sends them.
    fn cookie(&self) -> String {
        format!("authd={}; authd_refresh={}", self.access, self.refresh)
    }

    fn sid(&self) -> String {
        claims(&self.access)["sid"].as_str().unwrap().to_owned()
    }
}

impl Site {
    async fn start() -> Site {
        Site::start_with(&[]).await
    }

    async fn start_with(extra: &[(&str, &str)]) -> Site {
        let mut overrides = COOKIES_ON.to_vec();
        overrides.extend_from_slice(extra);
        let app = TestApp::spawn_with(&overrides).await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Site { app, client }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.app.public))
    }

    /// `http://host:port` of the public listener: the page's own origin.
    fn origin(&self) -> &str {
        &self.app.public
    }

    async fn user(&self, username: &str, roles: &[&str]) {
        self.app.add_user(username, roles).await;
    }

    /// Posts the login form (no `Origin`, no `Sec-Fetch-Site`).
    async fn post_login(&self, fields: &[(&str, &str)]) -> reqwest::Response {
        self.request(Method::POST, "/login")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(fields).unwrap())
            .send()
            .await
            .unwrap()
    }

    /// Signs in through the login form with [`PASSWORD`]; the session of its cookies.
    async fn sign_in(&self, username: &str) -> Session {
        let response = self
            .post_login(&[("username", username), ("password", PASSWORD)])
            .await;
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "login of {username}"
        );
        session_of(&response)
    }

    /// A session made through `POST /v1/login` (another device, an API client).
    async fn api_session(&self, username: &str, password: &str) -> Session {
        let body = self.app.login_with(username, password).await;
        Session {
            access: body["access_token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// `GET /account` with the session's cookies.
    async fn account(&self, session: &Session) -> reqwest::Response {
        self.request(Method::GET, "/account")
            .header(COOKIE, session.cookie())
            .send()
            .await
            .unwrap()
    }

    /// `GET /account`, asserting the `200` page; its HTML.
    async fn account_html(&self, session: &Session) -> String {
        page_text(self.account(session).await, StatusCode::OK).await
    }

    /// Posts a form of the page with the session's cookies, as a non-browser client does:
    /// neither `Origin` nor `Sec-Fetch-Site`.
    async fn post(
        &self,
        session: &Session,
        path: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        self.post_with(session, path, fields, &[]).await
    }

    /// [`Site::post`] with extra request headers.
    async fn post_with(
        &self,
        session: &Session,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .request(Method::POST, path)
            .header(COOKIE, session.cookie())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(fields).unwrap());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// `GET /v1/verify` with the session's access token as bearer.
    async fn verify(&self, session: &Session) -> reqwest::Response {
        self.app.verify(&session.access).await
    }

    /// `GET /v1/verify` with the session's cookies (as a forward-auth proxy asks).
    async fn verify_cookie(&self, session: &Session) -> reqwest::Response {
        self.request(Method::GET, "/v1/verify")
            .header(COOKIE, session.cookie())
            .send()
            .await
            .unwrap()
    }

    /// `GET /v1/me` with the session's cookies.
    async fn me(&self, session: &Session) -> Value {
        let response = self
            .request(Method::GET, "/v1/me")
            .header(COOKIE, session.cookie())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET /v1/me");
        response.json().await.unwrap()
    }

    /// Turns TOTP on through the page: the enrol form, then the confirm form with the
    /// code of the current step. Asserts both `200` pages; what they showed.
    async fn enrol(&self, session: &Session) -> OnPage {
        let begun = self
            .post(session, "/account/totp", &[("current_password", PASSWORD)])
            .await;
        let html = page_text(begun, StatusCode::OK).await;
        let secret = secret_on(&html);
        let step = totp::step_at(now());
        let code = code_of(&secret, step);
        let confirmed = self
            .post(session, "/account/totp/confirm", &[("code", &code)])
            .await;
        let html = page_text(confirmed, StatusCode::OK).await;
        let recovery_codes = recovery_codes_on(&html);
        assert_eq!(recovery_codes.len(), 10, "{html}");
        OnPage {
            secret,
            confirmed_step: step,
            recovery_codes,
        }
    }

    /// The first step of a login through the form for an account with TOTP on: the code
    /// page (`200`, no cookie); the hidden `mfa_token` it carries.
    async fn password_step(&self, username: &str, rd: Option<&str>) -> String {
        let mut fields = vec![("username", username), ("password", PASSWORD)];
        if let Some(rd) = rd {
            fields.push(("rd", rd));
        }
        let response = self.post_login(&fields).await;
        assert!(
            response.headers().get(SET_COOKIE).is_none(),
            "no cookie before the code"
        );
        // The code page names `rd`'s origin in its `form-action`: its headers are the
        // login page's (browser.rs), not checked here.
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, CACHE_CONTROL), "no-store");
        let html = response.text().await.unwrap();
        assert!(html.contains("name=\"code\""), "a code field: {html}");
        assert!(!html.contains(PASSWORD), "the password is not echoed");
        hidden_value(&html, "mfa_token").expect("a hidden mfa_token")
    }

    /// The code form's post (the second step of a browser login).
    async fn code_step(&self, mfa_token: &str, code: &str, rd: Option<&str>) -> reqwest::Response {
        let mut fields = vec![("mfa_token", mfa_token), ("code", code)];
        if let Some(rd) = rd {
            fields.push(("rd", rd));
        }
        self.post_login(&fields).await
    }

    /// A full browser login with a second factor: password, then `code`; asserts the `303`
    /// and returns the session of its cookies.
    async fn sign_in_with_code(&self, username: &str, code: &str) -> Session {
        let token = self.password_step(username, None).await;
        let response = self.code_step(&token, code, None).await;
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "code of {username}"
        );
        session_of(&response)
    }
}

/// What enrolment through the page showed (once).
struct OnPage {
    /// The secret in base32, spaces taken out.
    secret: String,
    /// The step of the code that confirmed it: only later steps are taken from then on.
    confirmed_step: u64,
    recovery_codes: Vec<String>,
}

impl OnPage {
    /// The code of the step after the confirmed one: on the system clock it is taken (once)
    /// for at least 30 s after the confirm, whatever step boundary falls in between.
    fn next_code(&self) -> String {
        code_of(&self.secret, self.confirmed_step + 1)
    }

    /// Six digits that are the code of no step near now.
    fn wrong_code(&self) -> String {
        let current = totp::step_at(now());
        let near: Vec<String> = (current.saturating_sub(3)..=current + 3)
            .map(|step| code_of(&self.secret, step))
            .collect();
        (0..1_000_000)
            .map(|n| format!("{n:06}"))
            .find(|code| !near.contains(code))
            .unwrap()
    }
}

/// The system clock (the daemon's) in Unix seconds.
fn now() -> i64 {
    authd::clock::Clock::system().now()
}

fn code_of(secret: &str, step: u64) -> String {
    let bytes = totp::decode_base32(secret).unwrap_or_else(|| panic!("{secret} is not base32"));
    totp::code_for_step(&bytes, step)
}

/// The session of the cookies a response set (both must be there).
fn session_of(response: &reqwest::Response) -> Session {
    let mut access = None;
    let mut refresh = None;
    for line in response.headers().get_all(SET_COOKIE) {
        let line = line.to_str().unwrap();
        let (name, value) = line.split(';').next().unwrap().split_once('=').unwrap();
        match name {
            "authd" => access = Some(value.to_owned()),
            "authd_refresh" => refresh = Some(value.to_owned()),
            _ => {}
        }
    }
    Session {
        access: access.expect("an access cookie"),
        refresh: refresh.expect("a refresh cookie"),
    }
}

/// Asserts a page of the browser routes: `status`, HTML, and the login page's headers plus
/// `no-store`.
fn assert_page(response: &reqwest::Response, status: StatusCode) {
    assert_eq!(response.status(), status, "status");
    assert_eq!(header(response, CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(header(response, CONTENT_SECURITY_POLICY), PAGE_CSP);
    assert_eq!(header(response, X_FRAME_OPTIONS), "DENY");
    assert_eq!(header(response, REFERRER_POLICY), "no-referrer");
    assert_eq!(header(response, CACHE_CONTROL), "no-store");
}

/// [`assert_page`], then the page's HTML.
async fn page_text(response: reqwest::Response, status: StatusCode) -> String {
    let actual = response.status();
    if actual != status {
        let body = response.text().await.unwrap_or_default();
        panic!("expected {status}, got {actual}: {body}");
    }
    assert_page(&response, status);
    let html = response.text().await.unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    html
}

/// The text between `start` and the next `end` after it.
fn between<'a>(html: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = html.find(start)? + start.len();
    let to = html[from..].find(end)? + from;
    Some(&html[from..to])
}

/// The base32 secret the enrolment page shows (grouped in fours; spaces taken out).
fn secret_on(html: &str) -> String {
    let shown = between(
        html,
        "<span class=\"secret\" id=\"totp-secret\">",
        "</span>",
    )
    .unwrap_or_else(|| panic!("no secret on the page: {html}"));
    shown.replace(' ', "")
}

/// The recovery codes in `<ul id="recovery-codes">`.
fn recovery_codes_on(html: &str) -> Vec<String> {
    let list = between(html, "id=\"recovery-codes\">", "</ul>")
        .unwrap_or_else(|| panic!("no recovery codes on the page: {html}"));
    list.split("<li>")
        .skip(1)
        .map(|item| item.split("</li>").next().unwrap().trim().to_owned())
        .collect()
}

/// The value of the hidden input `name`, if the page has one.
fn hidden_value(html: &str, name: &str) -> Option<String> {
    between(
        html,
        &format!("<input type=\"hidden\" name=\"{name}\" value=\""),
        "\"",
    )
    .map(str::to_owned)
}

/// The sids of the page's "End" forms, in order.
fn end_forms(html: &str) -> Vec<String> {
    html.split("<form method=\"post\" action=\"/account/sessions/end\">")
        .skip(1)
        .map(|form| {
            let form = form.split("</form>").next().unwrap();
            assert!(form.contains(">End</button>"), "{form}");
            between(form, "<input type=\"hidden\" name=\"sid\" value=\"", "\"")
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The form posting to `action`, if the page has one.
fn form_to<'a>(html: &'a str, action: &str) -> Option<&'a str> {
    between(
        html,
        &format!("<form method=\"post\" action=\"{action}\""),
        "</form>",
    )
}

/// Whether the page offers to turn TOTP on (the enrol form) or, when on, to make new
/// codes and turn it off.
fn totp_shown_on(html: &str) -> bool {
    let on = form_to(html, "/account/totp/disable").is_some()
        && form_to(html, "/account/recovery-codes").is_some();
    let off = form_to(html, "/account/totp").is_some();
    assert_ne!(on, off, "either on or off: {html}");
    on
}

/// The recovery code format: `xxxx-xxxx-xxxx`, lower-case base32.
fn assert_recovery_code(code: &str) {
    let groups: Vec<&str> = code.split('-').collect();
    assert_eq!(groups.len(), 3, "{code}");
    for group in groups {
        assert_eq!(group.len(), 4, "{code}");
        assert!(
            group
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)),
            "{code}"
        );
    }
}

/// The query value `name` of a `Location` (percent-decoded).
fn query_value(location: &str, name: &str) -> Option<String> {
    let query = location.split_once('?')?.1;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap()
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// The app's HS256 key (`<dir>/keys/<kid>.key`) signing `claims`: a token the daemon
/// accepts the signature of.
fn sign(app: &TestApp, claims: &Value) -> String {
    let mut keys: Vec<_> = std::fs::read_dir(app.dir.join("keys"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "key"))
        .collect();
    keys.sort();
    let path = keys.pop().expect("the app generated an HS256 key");
    let kid = path.file_stem().unwrap().to_str().unwrap().to_owned();
    let secret = base64::engine::general_purpose::STANDARD
        .decode(std::fs::read_to_string(&path).unwrap().trim())
        .unwrap();
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": kid});
    let message = format!("{}.{}", b64_json(&header), b64_json(claims));
    let key = jsonwebtoken::EncodingKey::from_secret(&secret);
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
            .unwrap();
    format!("{message}.{signature}")
}

/// The sids of a user's live sessions (admin API).
async fn live_sids(app: &TestApp, username: &str) -> Vec<String> {
    let response = app.user_sessions(username).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("sessions in {body}"))
        .iter()
        .map(|session| session["sid"].as_str().unwrap().to_owned())
        .collect()
}

// ----- GET /account -----

#[tokio::test]
async fn without_a_session_the_page_sends_the_browser_to_the_login_page() {
    let site = Site::start().await;

    let plain = site.request(Method::GET, "/account").send().await.unwrap();
    // Reached under an allowed host, the login page is told to come back here.
    let allowed_host = site
        .request(Method::GET, "/account")
        .header("host", "auth.example.com")
        .send()
        .await
        .unwrap();
    let other_host = site
        .request(Method::GET, "/account")
        .header("host", "evil.test")
        .send()
        .await
        .unwrap();

    assert_eq!(plain.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&plain, LOCATION), "/login");
    assert_eq!(header(&plain, CACHE_CONTROL), "no-store");
    assert!(plain.headers().get(SET_COOKIE).is_none());
    assert_eq!(allowed_host.status(), StatusCode::SEE_OTHER);
    let location = header(&allowed_host, LOCATION);
    assert!(location.starts_with("/login?rd="), "{location}");
    assert_eq!(
        query_value(location, "rd").as_deref(),
        Some("http://auth.example.com/account"),
        "{location}"
    );
    assert_eq!(other_host.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        header(&other_host, LOCATION),
        "/login",
        "no rd to a foreign host"
    );
}

#[tokio::test]
async fn an_invalid_expired_or_ended_session_is_sent_to_the_login_page() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let real = claims(&session.access);
    let expired_at = now() - 3600;
    let expired = with_claim(&real, "exp", json!(expired_at));
    let expired = with_claim(&expired, "iat", json!(expired_at - 900));
    let expired = with_claim(&expired, "nbf", json!(expired_at - 900));
    let expired = sign(&site.app, &expired);
    let tampered = with_claim(&real, "sub", json!("mallory"));
    let tampered = format!(
        "{}.{}.{}",
        session.access.split('.').next().unwrap(),
        b64_json(&tampered),
        session.access.split('.').nth(2).unwrap()
    );
    let ended = site.sign_in("alice").await;
    assert_eq!(
        site.app.logout(&ended.access, None).await.status(),
        StatusCode::NO_CONTENT
    );

    for (what, cookie) in [
        ("garbage", "authd=not-a-token".to_owned()),
        ("expired", format!("authd={expired}")),
        ("tampered", format!("authd={tampered}")),
        ("logged out", format!("authd={}", ended.access)),
    ] {
        let get = site
            .request(Method::GET, "/account")
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(get.status(), StatusCode::SEE_OTHER, "GET with {what}");
        assert_eq!(header(&get, LOCATION), "/login", "GET with {what}");
        for path in FORMS {
            let post = site
                .request(Method::POST, path)
                .header(COOKIE, &cookie)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(format!(
                    "current_password={}",
                    crate::common::percent_encode(PASSWORD)
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(
                post.status(),
                StatusCode::SEE_OTHER,
                "POST {path} with {what}"
            );
            assert_eq!(header(&post, LOCATION), "/login", "POST {path} with {what}");
        }
    }
    // Nothing was changed by any of them.
    assert!(!site.me(&session).await["mfa"].as_bool().unwrap());
    assert_eq!(site.verify(&session).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_page_shows_the_sessions_the_forms_and_the_security_headers() {
    let site = Site::start().await;
    site.user("alice", &["reader"]).await;
    let session = site.sign_in("alice").await;
    let phone = site.api_session("alice", PASSWORD).await;
    site.user("bob", &[]).await;
    let bobs = site.sign_in("bob").await;

    let response = site.account(&session).await;

    assert_page(&response, StatusCode::OK);
    assert!(response.headers().get(SET_COOKIE).is_none());
    let html = response.text().await.unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("Your account"), "{html}");
    assert!(html.contains("alice"));
    // Sessions: this one marked, the other with its End form, nobody else's.
    assert_eq!(html.matches("This session").count(), 1, "{html}");
    assert_eq!(end_forms(&html), vec![phone.sid()]);
    assert!(
        !html.contains(&bobs.sid()),
        "another user's session is not listed"
    );
    // The password form.
    let password = form_to(&html, "/account/password").expect("a password form");
    for field in ["current_password", "new_password", "new_password_again"] {
        assert!(password.contains(&format!("name=\"{field}\"")), "{field}");
    }
    // Two-factor authentication is off: the enrol form only.
    let enrol = form_to(&html, "/account/totp").expect("an enrol form");
    assert!(enrol.contains("name=\"current_password\""));
    assert!(!totp_shown_on(&html));
    assert!(!html.contains("<svg"), "no QR code before enrolling");
    assert!(!html.contains("totp-secret"));
    assert!(!html.contains("id=\"recovery-codes\""));
    // Sign out.
    let sign_out = between(&html, "id=\"sign-out\"", "</form>").expect("a sign-out form");
    assert!(sign_out.contains(&format!("value=\"{}\"", session.sid())));
    // No token, script or external asset on the page.
    assert!(!html.contains(&session.access));
    assert!(!html.contains(&session.refresh));
    assert!(!html.contains("<script"));
    assert!(!html.contains("src="));
    assert!(!html.contains("<link"));
}

#[tokio::test]
async fn wrong_methods_are_405_pages() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;

    for method in [Method::PUT, Method::DELETE, Method::POST] {
        let response = site
            .request(method.clone(), "/account")
            .header(COOKIE, session.cookie())
            .send()
            .await
            .unwrap();
        assert_page(&response, StatusCode::METHOD_NOT_ALLOWED);
        let allow = header(&response, "allow");
        assert!(allow.split(", ").any(|m| m == "GET"), "{method}: {allow}");
        assert!(!allow.contains("POST"), "{method}: {allow}");
    }
    for path in FORMS {
        for method in [Method::GET, Method::PUT] {
            let response = site
                .request(method.clone(), path)
                .header(COOKIE, session.cookie())
                .send()
                .await
                .unwrap();
            assert_page(&response, StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(header(&response, "allow"), "POST", "{method} {path}");
        }
    }
}

#[tokio::test]
async fn the_page_and_its_forms_are_404_while_cookies_are_disabled() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;

    let mut requests = vec![(Method::GET, "/account")];
    requests.extend(FORMS.iter().map(|path| (Method::POST, *path)));
    for (method, path) in requests {
        for with_token in [false, true] {
            let mut request = app
                .client
                .request(method.clone(), format!("{}{path}", app.public))
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(format!(
                    "current_password={}",
                    crate::common::percent_encode(PASSWORD)
                ));
            if with_token {
                request = request
                    .header(COOKIE, format!("authd={token}"))
                    .bearer_auth(&token);
            }
            let response = request.send().await.unwrap();
            assert!(response.headers().get("allow").is_none(), "{method} {path}");
            assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
        }
    }
    assert!(
        !app.me(&token).await.json::<Value>().await.unwrap()["mfa"]
            .as_bool()
            .unwrap()
    );
}

#[tokio::test]
async fn a_form_that_cannot_be_read_is_the_page_with_a_4xx() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;

    let response = site
        .request(Method::POST, "/account/password")
        .header(COOKIE, session.cookie())
        .header(CONTENT_TYPE, "text/plain")
        .body(format!(
            "current_password={PASSWORD}&new_password={NEW_PASSWORD}"
        ))
        .send()
        .await
        .unwrap();

    let status = response.status();
    assert!(status.is_client_error(), "{status}");
    let html = page_text(response, status).await;
    assert!(html.contains("Your account"), "the page: {html}");
    assert!(!html.contains(PASSWORD));
    assert_eq!(
        site.app.try_login("alice", PASSWORD).await.status(),
        StatusCode::OK,
        "the password is unchanged"
    );
}

// ----- POST /account/sessions/end -----

#[tokio::test]
async fn ending_another_session_kills_its_tokens() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let phone = site.api_session("alice", PASSWORD).await;
    let laptop = site.sign_in("alice").await;

    let response = site
        .post(&session, "/account/sessions/end", &[("sid", &phone.sid())])
        .await;

    let html = page_text(response, StatusCode::OK).await;
    assert!(html.contains("The session has ended."), "{html}");
    assert_eq!(
        end_forms(&html),
        vec![laptop.sid()],
        "the ended one is gone"
    );
    assert_eq!(site.verify(&phone).await.status(), StatusCode::UNAUTHORIZED);
    assert_error(
        site.app.refresh(&phone.refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // This session and the third one live on.
    assert_eq!(site.verify(&session).await.status(), StatusCode::OK);
    assert_eq!(site.verify(&laptop).await.status(), StatusCode::OK);
    let sids = live_sids(&site.app, "alice").await;
    assert!(!sids.contains(&phone.sid()), "{sids:?}");
    assert_eq!(sids.len(), 2, "{sids:?}");
}

#[tokio::test]
async fn ending_an_unknown_or_someone_elses_session_is_a_404_page() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    site.user("bob", &[]).await;
    let session = site.sign_in("alice").await;
    let bobs = site.sign_in("bob").await;

    for sid in [bobs.sid(), "no-such-session".to_owned(), String::new()] {
        let response = site
            .post(&session, "/account/sessions/end", &[("sid", &sid)])
            .await;
        let html = page_text(response, StatusCode::NOT_FOUND).await;
        assert!(html.contains("There is no such session."), "{html}");
        assert!(html.contains("Your account"));
    }
    assert_eq!(site.verify(&bobs).await.status(), StatusCode::OK);
    assert_eq!(site.verify(&session).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn ending_this_session_sends_the_browser_to_the_login_page() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let other = site.api_session("alice", PASSWORD).await;

    let response = site
        .post(
            &session,
            "/account/sessions/end",
            &[("sid", &session.sid())],
        )
        .await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = header(&response, LOCATION);
    assert!(
        location == "/login" || location.starts_with("/login?"),
        "{location}"
    );
    assert_eq!(header(&response, CACHE_CONTROL), "no-store");
    assert_eq!(
        site.verify(&session).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        site.account(&session).await.status(),
        StatusCode::SEE_OTHER,
        "the page is gone for this browser"
    );
    assert_eq!(site.verify(&other).await.status(), StatusCode::OK);
}

// ----- POST /account/password -----

#[tokio::test]
async fn changing_the_password_ends_the_other_sessions_and_keeps_this_one() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let phone = site.api_session("alice", PASSWORD).await;
    let laptop = site.sign_in("alice").await;

    let response = site
        .post(
            &session,
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", NEW_PASSWORD),
                ("new_password_again", NEW_PASSWORD),
            ],
        )
        .await;

    let html = page_text(response, StatusCode::OK).await;
    assert!(html.contains("Your password is changed"), "{html}");
    assert!(!html.contains(PASSWORD), "never echoes a password");
    assert!(!html.contains(NEW_PASSWORD), "never echoes a password");
    assert!(end_forms(&html).is_empty(), "no other session left: {html}");
    for other in [&phone, &laptop] {
        assert_eq!(site.verify(other).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_error(
        site.app.refresh(&phone.refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(site.verify(&session).await.status(), StatusCode::OK);
    assert_eq!(site.verify_cookie(&session).await.status(), StatusCode::OK);
    site.account_html(&session).await;
    let silent = site
        .request(Method::GET, "/login")
        .header(COOKIE, format!("authd_refresh={}", session.refresh))
        .send()
        .await
        .unwrap();
    assert_eq!(
        silent.status(),
        StatusCode::SEE_OTHER,
        "this session's refresh cookie still works"
    );
    assert_eq!(
        site.app.try_login("alice", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    site.api_session("alice", NEW_PASSWORD).await;
}

#[tokio::test]
async fn a_wrong_current_password_is_a_403_that_changes_nothing() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let phone = site.api_session("alice", PASSWORD).await;
    let guess = "s3cret-guess<>";

    let response = site
        .post(
            &session,
            "/account/password",
            &[
                ("current_password", guess),
                ("new_password", NEW_PASSWORD),
                ("new_password_again", NEW_PASSWORD),
            ],
        )
        .await;

    let html = page_text(response, StatusCode::FORBIDDEN).await;
    assert!(html.contains(INCORRECT), "{html}");
    assert!(!html.contains("s3cret-guess"), "never echoes the password");
    assert!(!html.contains(NEW_PASSWORD), "never echoes the password");
    assert_eq!(site.verify(&phone).await.status(), StatusCode::OK);
    assert_eq!(site.verify(&session).await.status(), StatusCode::OK);
    site.api_session("alice", PASSWORD).await;
}

#[tokio::test]
async fn new_passwords_that_differ_are_a_400_that_changes_nothing() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let phone = site.api_session("alice", PASSWORD).await;

    let response = site
        .post(
            &session,
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", NEW_PASSWORD),
                ("new_password_again", "a brand new passphrasE"),
            ],
        )
        .await;

    let html = page_text(response, StatusCode::BAD_REQUEST).await;
    assert!(html.contains("The new passwords do not match."), "{html}");
    assert!(!html.contains(NEW_PASSWORD));
    assert!(!html.contains(PASSWORD));
    assert_eq!(site.verify(&phone).await.status(), StatusCode::OK);
    site.api_session("alice", PASSWORD).await;
}

#[tokio::test]
async fn a_new_password_outside_the_rules_is_a_400_that_changes_nothing() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let phone = site.api_session("alice", PASSWORD).await;

    let response = site
        .post(
            &session,
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", "short"),
                ("new_password_again", "short"),
            ],
        )
        .await;

    let html = page_text(response, StatusCode::BAD_REQUEST).await;
    assert!(html.contains("Your account"), "{html}");
    assert!(!html.contains(PASSWORD));
    assert_eq!(site.verify(&phone).await.status(), StatusCode::OK);
    site.api_session("alice", PASSWORD).await;
}

#[tokio::test]
async fn wrong_passwords_get_throttled_429_with_retry_after() {
    let site = Site::start_with(&[("AUTHD__LOGIN__MAX_FAILURES", "3")]).await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let phone = site.api_session("alice", PASSWORD).await;
    async fn change(site: &Site, session: &Session, current: &str) -> reqwest::Response {
        let fields = [
            ("current_password", current),
            ("new_password", NEW_PASSWORD),
            ("new_password_again", NEW_PASSWORD),
        ];
        site.post(session, "/account/password", &fields).await
    }
    for _ in 0..3 {
        let wrong = change(&site, &session, "wrong guess!").await;
        page_text(wrong, StatusCode::FORBIDDEN).await;
    }

    // Even the right password is held off now, on every form that checks one.
    let throttled = change(&site, &session, PASSWORD).await;
    let enrol = site
        .post(&session, "/account/totp", &[("current_password", PASSWORD)])
        .await;

    for response in [throttled, enrol] {
        let retry_after: u64 = header(&response, RETRY_AFTER)
            .parse()
            .expect("a Retry-After in seconds");
        assert!(retry_after > 0 && retry_after <= 15 * 60, "{retry_after}");
        let html = page_text(response, StatusCode::TOO_MANY_REQUESTS).await;
        assert!(html.contains("Nothing was changed"), "{html}");
        assert!(!html.contains(PASSWORD));
        assert!(!html.contains("totp-secret"), "no enrolment began");
    }
    assert_eq!(
        site.verify(&phone).await.status(),
        StatusCode::OK,
        "the password did not change"
    );
    assert!(!site.me(&session).await["mfa"].as_bool().unwrap());
}

// ----- POST /account/totp, /account/totp/confirm -----

#[tokio::test]
async fn enrol_confirm_and_the_codes_shown_once() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;

    // Enrol: the QR code, the secret as text, the confirm form.
    let begun = site
        .post(&session, "/account/totp", &[("current_password", PASSWORD)])
        .await;
    let html = page_text(begun, StatusCode::OK).await;
    let svg = between(&html, "<svg", "</svg>").expect("an inline SVG QR code");
    assert!(svg.contains("role=\"img\""), "{svg}");
    assert!(svg.contains("aria-label="), "{svg}");
    let shown = between(
        &html,
        "<span class=\"secret\" id=\"totp-secret\">",
        "</span>",
    )
    .unwrap();
    assert!(
        shown
            .split(' ')
            .all(|group| !group.is_empty() && group.len() <= 4),
        "grouped in fours: {shown}"
    );
    let secret = secret_on(&html);
    assert_eq!(secret.len(), 32, "{secret}");
    assert_eq!(
        totp::decode_base32(&secret).map(|bytes| bytes.len()),
        Some(20),
        "{secret}"
    );
    let confirm = form_to(&html, "/account/totp/confirm").expect("a confirm form");
    assert!(confirm.contains("name=\"code\""), "{confirm}");
    assert!(!html.contains(PASSWORD), "never echoes the password");
    assert!(
        !site.me(&session).await["mfa"].as_bool().unwrap(),
        "pending"
    );

    // Confirm: TOTP on, the ten recovery codes, once.
    let step = totp::step_at(now());
    let confirmed = site
        .post(
            &session,
            "/account/totp/confirm",
            &[("code", &code_of(&secret, step))],
        )
        .await;
    let html = page_text(confirmed, StatusCode::OK).await;
    let codes = recovery_codes_on(&html);
    assert_eq!(codes.len(), 10, "{html}");
    codes.iter().for_each(|code| assert_recovery_code(code));
    assert!(totp_shown_on(&html));
    assert!(
        !html.contains("totp-secret"),
        "the secret is not shown again"
    );

    // The page afterwards: on, no codes, no secret.
    let html = site.account_html(&session).await;
    assert!(totp_shown_on(&html));
    for code in &codes {
        assert!(!html.contains(code.as_str()), "{code} shown again");
    }
    assert!(!html.contains("id=\"recovery-codes\""), "{html}");
    assert!(!html.contains(&secret));
    assert!(!html.contains(shown));
    assert!(!html.contains("<svg"));
    assert!(site.me(&session).await["mfa"].as_bool().unwrap());

    // Logging in through the form now asks for a code.
    let token = site.password_step("alice", Some(APP_URL)).await;
    let signed_in = site
        .code_step(&token, &code_of(&secret, step + 1), Some(APP_URL))
        .await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&signed_in, LOCATION), APP_URL);
    let second = session_of(&signed_in);
    let verified = site.verify_cookie(&second).await;
    assert_eq!(verified.status(), StatusCode::OK);
    assert_eq!(header(&verified, "x-auth-mfa"), "true");
    // The session that enrolled began without a code.
    assert_eq!(
        header(&site.verify_cookie(&session).await, "x-auth-mfa"),
        "false"
    );
}

#[tokio::test]
async fn a_wrong_password_on_the_enrol_form_is_a_403() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;

    let response = site
        .post(
            &session,
            "/account/totp",
            &[("current_password", "s3cret-guess")],
        )
        .await;

    let html = page_text(response, StatusCode::FORBIDDEN).await;
    assert!(html.contains(INCORRECT), "{html}");
    assert!(!html.contains("s3cret-guess"));
    assert!(!html.contains("totp-secret"), "no secret");
    assert!(!html.contains("<svg"), "no QR code");
    assert!(!totp_shown_on(&html));
    // Nothing is pending.
    let confirm = site
        .post(&session, "/account/totp/confirm", &[("code", "123456")])
        .await;
    page_text(confirm, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn a_wrong_confirm_code_is_a_400_and_the_enrolment_stays_pending() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let begun = site
        .post(&session, "/account/totp", &[("current_password", PASSWORD)])
        .await;
    let secret = secret_on(&page_text(begun, StatusCode::OK).await);
    let pending = OnPage {
        secret: secret.clone(),
        confirmed_step: 0,
        recovery_codes: Vec::new(),
    };

    let wrong = site
        .post(
            &session,
            "/account/totp/confirm",
            &[("code", &pending.wrong_code())],
        )
        .await;
    let garbage = site
        .post(&session, "/account/totp/confirm", &[("code", "not a code")])
        .await;

    for response in [wrong, garbage] {
        let html = page_text(response, StatusCode::BAD_REQUEST).await;
        assert!(!html.contains("id=\"recovery-codes\""), "{html}");
        // The confirm form is offered again (the key is not shown twice).
        assert!(html.contains("action=\"/account/totp/confirm\""), "{html}");
        assert!(!html.contains(&secret), "{html}");
    }
    assert!(!site.me(&session).await["mfa"].as_bool().unwrap());
    // The right code of the pending secret still turns it on.
    let right = site
        .post(
            &session,
            "/account/totp/confirm",
            &[("code", &code_of(&secret, totp::step_at(now())))],
        )
        .await;
    let html = page_text(right, StatusCode::OK).await;
    assert_eq!(recovery_codes_on(&html).len(), 10);
    assert!(site.me(&session).await["mfa"].as_bool().unwrap());
}

#[tokio::test]
async fn confirming_with_nothing_pending_is_a_409() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;

    let never_begun = site
        .post(&session, "/account/totp/confirm", &[("code", "123456")])
        .await;
    let html = page_text(never_begun, StatusCode::CONFLICT).await;
    assert!(html.contains("out of date"), "{html}");
    assert!(!totp_shown_on(&html));

    // Once on, a second confirm (a form resent) is out of date too, and shows no codes.
    let enrolled = site.enrol(&session).await;
    let again = site
        .post(
            &session,
            "/account/totp/confirm",
            &[("code", &enrolled.next_code())],
        )
        .await;
    let html = page_text(again, StatusCode::CONFLICT).await;
    assert!(!html.contains("id=\"recovery-codes\""), "{html}");
    assert!(totp_shown_on(&html));
}

#[tokio::test]
async fn enrolling_again_before_confirming_replaces_the_pending_secret() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let first = site
        .post(&session, "/account/totp", &[("current_password", PASSWORD)])
        .await;
    let first = secret_on(&page_text(first, StatusCode::OK).await);
    let second = site
        .post(&session, "/account/totp", &[("current_password", PASSWORD)])
        .await;
    let second = secret_on(&page_text(second, StatusCode::OK).await);
    assert_ne!(first, second, "a new secret");
    let step = totp::step_at(now());

    let stale = site
        .post(
            &session,
            "/account/totp/confirm",
            &[("code", &code_of(&first, step))],
        )
        .await;
    page_text(stale, StatusCode::BAD_REQUEST).await;
    let current = site
        .post(
            &session,
            "/account/totp/confirm",
            &[("code", &code_of(&second, step))],
        )
        .await;

    assert_eq!(
        recovery_codes_on(&page_text(current, StatusCode::OK).await).len(),
        10
    );
    assert!(site.me(&session).await["mfa"].as_bool().unwrap());
}

#[tokio::test]
async fn a_code_is_taken_once() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let enrolled = site.enrol(&session).await;
    let code = enrolled.next_code();
    let renewed = site
        .post(
            &session,
            "/account/recovery-codes",
            &[("current_password", PASSWORD), ("code", &code)],
        )
        .await;
    page_text(renewed, StatusCode::OK).await;

    // The same code again, or the confirm's, is refused; so is the recovery code that
    // the renewal killed.
    for replay in [
        code,
        code_of(&enrolled.secret, enrolled.confirmed_step),
        enrolled.recovery_codes[0].clone(),
    ] {
        let response = site
            .post(
                &session,
                "/account/totp/disable",
                &[("current_password", PASSWORD), ("code", &replay)],
            )
            .await;
        let html = page_text(response, StatusCode::FORBIDDEN).await;
        assert!(html.contains(INCORRECT), "{replay}: {html}");
    }
    assert!(site.me(&session).await["mfa"].as_bool().unwrap());
}

#[tokio::test]
async fn enrolling_again_while_on_is_a_409() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let enrolled = site.enrol(&session).await;

    let response = site
        .post(&session, "/account/totp", &[("current_password", PASSWORD)])
        .await;

    let html = page_text(response, StatusCode::CONFLICT).await;
    assert!(!html.contains("totp-secret"), "no new secret: {html}");
    assert!(totp_shown_on(&html));
    // The enrolled secret still works.
    site.sign_in_with_code("alice", &enrolled.next_code()).await;
}

// ----- POST /account/recovery-codes -----

#[tokio::test]
async fn new_recovery_codes_replace_the_old_ones() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let enrolled = site.enrol(&session).await;

    let response = site
        .post(
            &session,
            "/account/recovery-codes",
            &[
                ("current_password", PASSWORD),
                ("code", &enrolled.next_code()),
            ],
        )
        .await;

    let html = page_text(response, StatusCode::OK).await;
    assert!(
        html.contains("Your old recovery codes no longer work."),
        "{html}"
    );
    let codes = recovery_codes_on(&html);
    assert_eq!(codes.len(), 10);
    codes.iter().for_each(|code| assert_recovery_code(code));
    for code in &codes {
        assert!(!enrolled.recovery_codes.contains(code), "{code} is new");
    }
    assert!(
        !site
            .account_html(&session)
            .await
            .contains(codes[0].as_str())
    );
    // An old code is refused at the login's code form; a new one is taken.
    let token = site.password_step("alice", None).await;
    let old = site
        .code_step(&token, &enrolled.recovery_codes[0], None)
        .await;
    assert!(old.headers().get(SET_COOKIE).is_none());
    let old_html = page_text(old, StatusCode::UNAUTHORIZED).await;
    assert!(old_html.contains("name=\"code\""), "the code form again");
    let new = site.code_step(&token, &codes[0], None).await;
    assert_eq!(new.status(), StatusCode::SEE_OTHER);
    session_of(&new);
}

#[tokio::test]
async fn a_wrong_code_or_password_on_the_new_codes_form_is_a_403_that_changes_nothing() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let enrolled = site.enrol(&session).await;

    let wrong_code = site
        .post(
            &session,
            "/account/recovery-codes",
            &[
                ("current_password", PASSWORD),
                ("code", &enrolled.wrong_code()),
            ],
        )
        .await;
    let wrong_password = site
        .post(
            &session,
            "/account/recovery-codes",
            &[
                ("current_password", "s3cret-guess"),
                ("code", &enrolled.recovery_codes[1]),
            ],
        )
        .await;

    let wrong_code = page_text(wrong_code, StatusCode::FORBIDDEN).await;
    let wrong_password = page_text(wrong_password, StatusCode::FORBIDDEN).await;
    for html in [&wrong_code, &wrong_password] {
        assert!(html.contains(INCORRECT), "{html}");
        assert!(!html.contains("id=\"recovery-codes\""), "no new codes");
        assert!(!html.contains("s3cret-guess"));
        assert!(totp_shown_on(html));
    }
    assert_eq!(
        wrong_code, wrong_password,
        "the page never says which was wrong"
    );
    // The old codes still work.
    site.sign_in_with_code("alice", &enrolled.recovery_codes[0])
        .await;
}

#[tokio::test]
async fn new_codes_while_totp_is_off_is_a_409() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;

    let response = site
        .post(
            &session,
            "/account/recovery-codes",
            &[("current_password", PASSWORD), ("code", "123456")],
        )
        .await;

    let html = page_text(response, StatusCode::CONFLICT).await;
    assert!(html.contains("out of date"), "{html}");
    assert!(!html.contains("id=\"recovery-codes\""));
    assert!(!totp_shown_on(&html));
}

// ----- POST /account/totp/disable -----

#[tokio::test]
async fn disable_turns_totp_off() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let enrolled = site.enrol(&session).await;

    let response = site
        .post(
            &session,
            "/account/totp/disable",
            &[
                ("current_password", PASSWORD),
                ("code", &enrolled.next_code()),
            ],
        )
        .await;

    let html = page_text(response, StatusCode::OK).await;
    assert!(html.contains("Two-factor authentication is off."), "{html}");
    assert!(!totp_shown_on(&html));
    assert!(!site.me(&session).await["mfa"].as_bool().unwrap());
    assert!(!totp_shown_on(&site.account_html(&session).await));
    // The password alone signs in again; the recovery codes are gone with TOTP.
    let response = site
        .post_login(&[
            ("username", "alice"),
            ("password", PASSWORD),
            ("rd", APP_URL),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, LOCATION), APP_URL);
    let again = site.sign_in("alice").await;
    assert_eq!(header(&site.verify(&again).await, "x-auth-mfa"), "false");
}

#[tokio::test]
async fn a_wrong_code_or_password_on_the_disable_form_is_a_403_that_changes_nothing() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let enrolled = site.enrol(&session).await;

    let wrong_code = site
        .post(
            &session,
            "/account/totp/disable",
            &[
                ("current_password", PASSWORD),
                ("code", &enrolled.wrong_code()),
            ],
        )
        .await;
    let wrong_password = site
        .post(
            &session,
            "/account/totp/disable",
            &[
                ("current_password", "s3cret-guess"),
                ("code", &enrolled.recovery_codes[1]),
            ],
        )
        .await;
    let no_code = site
        .post(
            &session,
            "/account/totp/disable",
            &[("current_password", PASSWORD)],
        )
        .await;

    let wrong_code = page_text(wrong_code, StatusCode::FORBIDDEN).await;
    let wrong_password = page_text(wrong_password, StatusCode::FORBIDDEN).await;
    let no_code = page_text(no_code, StatusCode::FORBIDDEN).await;
    for html in [&wrong_code, &wrong_password, &no_code] {
        assert!(html.contains(INCORRECT), "{html}");
        assert!(!html.contains("s3cret-guess"));
        assert!(totp_shown_on(html), "still on");
    }
    assert_eq!(
        wrong_code, wrong_password,
        "the page never says which was wrong"
    );
    assert!(site.me(&session).await["mfa"].as_bool().unwrap());
    // The recovery code sent with the wrong password was not used up.
    site.sign_in_with_code("alice", &enrolled.recovery_codes[1])
        .await;
}

#[tokio::test]
async fn disabling_with_a_recovery_code_kills_the_whole_set() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let first = site.enrol(&session).await;

    let response = site
        .post(
            &session,
            "/account/totp/disable",
            &[
                ("current_password", PASSWORD),
                ("code", &first.recovery_codes[0].to_ascii_uppercase()),
            ],
        )
        .await;

    page_text(response, StatusCode::OK).await;
    assert!(!site.me(&session).await["mfa"].as_bool().unwrap());
    // Enrolled again: the first set's codes are dead, the new set's work.
    let second = site.enrol(&session).await;
    let token = site.password_step("alice", None).await;
    let old = site.code_step(&token, &first.recovery_codes[1], None).await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    assert!(old.headers().get(SET_COOKIE).is_none());
    let new = site
        .code_step(&token, &second.recovery_codes[1], None)
        .await;
    assert_eq!(new.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn disable_while_totp_is_off_is_a_409() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;

    let response = site
        .post(
            &session,
            "/account/totp/disable",
            &[("current_password", PASSWORD), ("code", "123456")],
        )
        .await;

    let html = page_text(response, StatusCode::CONFLICT).await;
    assert!(html.contains("out of date"), "{html}");
    assert!(!totp_shown_on(&html));
}

// ----- signing out -----

#[tokio::test]
async fn the_sign_out_form_ends_the_session_and_comes_back_through_the_login_page() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let page = site
        .request(Method::GET, "/account")
        .header(COOKIE, session.cookie())
        .header("host", "auth.example.com")
        .send()
        .await
        .unwrap();
    let html = page_text(page, StatusCode::OK).await;
    // The page signs out through its own form (`/logout` refuses the `Origin: null` that
    // the page's no-referrer policy makes browsers send): it ends this session.
    let form = between(&html, "id=\"sign-out\"", "</form>").expect("a sign-out form");
    assert!(
        html.contains("action=\"/account/sessions/end\" id=\"sign-out\""),
        "{html}"
    );
    let sid = between(form, "name=\"sid\" value=\"", "\"").expect("the session's sid");
    let response = site
        .request(Method::POST, "/account/sessions/end")
        .header(COOKIE, session.cookie())
        .header("host", "auth.example.com")
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("sid", sid)]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        query_value(header(&response, LOCATION), "rd").as_deref(),
        Some("http://auth.example.com/account")
    );
    let cleared: Vec<String> = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|line| line.to_str().unwrap().to_owned())
        .collect();
    for name in ["authd=", "authd_refresh="] {
        assert!(
            cleared
                .iter()
                .any(|line| line.starts_with(name) && line.contains("Max-Age=0")),
            "{name} cleared: {cleared:?}"
        );
    }
    assert_eq!(
        site.verify(&session).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let back = site
        .request(Method::GET, "/account")
        .header(COOKIE, session.cookie())
        .header("host", "auth.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        query_value(header(&back, LOCATION), "rd").as_deref(),
        Some("http://auth.example.com/account")
    );
}

// ----- the cross-site rule -----

#[tokio::test]
async fn posts_from_another_site_are_refused_and_change_nothing() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let phone = site.api_session("alice", PASSWORD).await;
    let phone_sid = phone.sid();
    let forms: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "/account/password",
            vec![
                ("current_password", PASSWORD),
                ("new_password", NEW_PASSWORD),
                ("new_password_again", NEW_PASSWORD),
            ],
        ),
        ("/account/sessions/end", vec![("sid", &phone_sid)]),
        ("/account/sessions/end", vec![("sid", "")]),
        ("/account/totp", vec![("current_password", PASSWORD)]),
        ("/account/totp/confirm", vec![("code", "123456")]),
        (
            "/account/totp/disable",
            vec![("current_password", PASSWORD), ("code", "123456")],
        ),
        (
            "/account/recovery-codes",
            vec![("current_password", PASSWORD), ("code", "123456")],
        ),
    ];
    let foreign: &[&[(&str, &str)]] = &[
        &[("sec-fetch-site", "cross-site")],
        &[("origin", "null")],
        &[("origin", "https://evil.com")],
        &[
            ("origin", "https://evil-example.com"),
            ("sec-fetch-site", "same-site"),
        ],
        &[("origin", "null"), ("sec-fetch-site", "cross-site")],
        &[("origin", site.origin()), ("sec-fetch-site", "cross-site")],
    ];

    for (path, fields) in &forms {
        for headers in foreign {
            let response = site.post_with(&session, path, fields, headers).await;
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "POST {path} with {headers:?}"
            );
            assert_eq!(header(&response, CACHE_CONTROL), "no-store");
            assert_eq!(header(&response, X_FRAME_OPTIONS), "DENY");
            assert!(response.headers().get(SET_COOKIE).is_none());
            let html = response.text().await.unwrap();
            assert!(!html.contains("totp-secret"), "{path}: {html}");
            assert!(!html.contains(PASSWORD));
        }
    }
    // Nothing changed: the other session lives, the password is the old one, TOTP is off
    // with nothing pending, this session lives.
    assert_eq!(site.verify(&phone).await.status(), StatusCode::OK);
    assert_eq!(site.verify(&session).await.status(), StatusCode::OK);
    site.api_session("alice", PASSWORD).await;
    assert!(!site.me(&session).await["mfa"].as_bool().unwrap());
    let confirm = site
        .post(&session, "/account/totp/confirm", &[("code", "123456")])
        .await;
    page_text(confirm, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn posts_from_the_same_site_or_without_browser_headers_are_allowed() {
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let own_origin = site.origin().to_owned();
    let allowed: &[&[(&str, &str)]] = &[
        &[],
        &[("origin", &own_origin), ("sec-fetch-site", "same-origin")],
        &[
            ("origin", "https://app.example.com"),
            ("sec-fetch-site", "same-site"),
        ],
        &[("sec-fetch-site", "same-origin")],
        &[("sec-fetch-site", "none")],
    ];

    // Following a link from another site to the page is a read: fine.
    let linked = site
        .request(Method::GET, "/account")
        .header(COOKIE, session.cookie())
        .header("origin", "https://evil.com")
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    page_text(linked, StatusCode::OK).await;
    for headers in allowed {
        let other = site.api_session("alice", PASSWORD).await;
        let response = site
            .post_with(
                &session,
                "/account/sessions/end",
                &[("sid", &other.sid())],
                headers,
            )
            .await;
        let html = page_text(response, StatusCode::OK).await;
        assert!(
            html.contains("The session has ended."),
            "{headers:?}: {html}"
        );
        assert_eq!(
            site.verify(&other).await.status(),
            StatusCode::UNAUTHORIZED,
            "{headers:?}"
        );
    }
}

/// The `Origin` a browser sends with a form posted from `html`, served with
/// `referrer_policy`, at `origin` (Fetch, "append a request `Origin` header": a POST under
/// the `no-referrer` policy carries `Origin: null`). A `<meta name="referrer">` overrides
/// the header's policy.
fn origin_of_own_form(referrer_policy: &str, html: &str, origin: &str) -> String {
    let meta = between(html, "<meta name=\"referrer\" content=\"", "\"");
    let policy = meta.unwrap_or(referrer_policy).trim().to_ascii_lowercase();
    if policy == "no-referrer" {
        "null".to_owned()
    } else {
        origin.to_owned()
    }
}

#[tokio::test]
async fn the_pages_own_forms_work_as_a_browser_posts_them() {
    // A browser posting one of the page's forms sends `Sec-Fetch-Site: same-origin` and
    // the `Origin` the page's referrer policy allows; with the login page's
    // `Referrer-Policy: no-referrer`, that is `Origin: null` (as for the login page's own
    // form, which `POST /login` accepts for this reason).
    let site = Site::start().await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    let other = site.api_session("alice", PASSWORD).await;
    let page = site.account(&session).await;
    let policy = header(&page, REFERRER_POLICY).to_owned();
    let html = page_text(page, StatusCode::OK).await;
    let origin = origin_of_own_form(&policy, &html, site.origin());
    let browser = [
        ("origin", origin.as_str()),
        ("sec-fetch-site", "same-origin"),
    ];

    let end = site
        .post_with(
            &session,
            "/account/sessions/end",
            &[("sid", &other.sid())],
            &browser,
        )
        .await;
    let enrol = site
        .post_with(
            &session,
            "/account/totp",
            &[("current_password", PASSWORD)],
            &browser,
        )
        .await;
    let sign_out = site
        .post_with(
            &session,
            "/account/sessions/end",
            &[("sid", &session.sid())],
            &browser,
        )
        .await;

    assert_eq!(
        end.status(),
        StatusCode::OK,
        "the End form posted with Origin: {origin}"
    );
    assert_eq!(
        enrol.status(),
        StatusCode::OK,
        "the enrol form posted with Origin: {origin}"
    );
    assert!(
        sign_out.status() == StatusCode::NO_CONTENT || sign_out.status() == StatusCode::SEE_OTHER,
        "the sign-out form posted with Origin: {origin}: {}",
        sign_out.status()
    );
    assert_eq!(
        site.verify(&session).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

// ----- mfa.required_roles -----

#[tokio::test]
async fn a_user_who_must_enrol_lands_on_the_account_page_and_enrols_there() {
    let site = Site::start_with(&[("AUTHD__MFA__REQUIRED_ROLES", "admin")]).await;
    site.user("boss", &["admin"]).await;
    site.user("alice", &["reader"]).await;

    // A user without the role goes where rd says.
    let alice = site
        .post_login(&[
            ("username", "alice"),
            ("password", PASSWORD),
            ("rd", APP_URL),
        ])
        .await;
    assert_eq!(alice.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&alice, LOCATION), APP_URL);

    // The admin signing in with the password alone lands on the account page.
    let landing = site
        .post_login(&[
            ("username", "boss"),
            ("password", PASSWORD),
            ("rd", APP_URL),
        ])
        .await;
    assert_eq!(landing.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&landing, LOCATION), "/account");
    let session = session_of(&landing);
    assert_error(
        site.verify_cookie(&session).await,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    )
    .await;
    let html = site.account_html(&session).await;
    assert!(
        html.contains("Your role requires two-factor authentication"),
        "{html}"
    );
    assert!(!totp_shown_on(&html));

    // Enrolling works there; it does not lift the rule for this session.
    let enrolled = site.enrol(&session).await;
    assert!(site.me(&session).await["mfa"].as_bool().unwrap());
    assert_error(
        site.verify_cookie(&session).await,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    )
    .await;
    assert!(totp_shown_on(&site.account_html(&session).await));

    // A new login with a code goes to rd and is let through.
    let token = site.password_step("boss", Some(APP_URL)).await;
    let signed_in = site
        .code_step(&token, &enrolled.next_code(), Some(APP_URL))
        .await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&signed_in, LOCATION), APP_URL);
    let with_code = session_of(&signed_in);
    let verified = site.verify_cookie(&with_code).await;
    assert_eq!(verified.status(), StatusCode::OK);
    assert_eq!(header(&verified, "x-auth-mfa"), "true");
    site.account_html(&with_code).await;
}

#[tokio::test]
async fn a_user_who_must_enrol_can_use_every_form_of_the_page() {
    let site = Site::start_with(&[("AUTHD__MFA__REQUIRED_ROLES", "admin")]).await;
    site.user("boss", &["admin"]).await;
    let landing = site
        .post_login(&[("username", "boss"), ("password", PASSWORD)])
        .await;
    assert_eq!(header(&landing, LOCATION), "/account");
    let session = session_of(&landing);
    let other = site.api_session("boss", PASSWORD).await;

    let end = site
        .post(&session, "/account/sessions/end", &[("sid", &other.sid())])
        .await;
    page_text(end, StatusCode::OK).await;
    let change = site
        .post(
            &session,
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", NEW_PASSWORD),
                ("new_password_again", NEW_PASSWORD),
            ],
        )
        .await;
    let html = page_text(change, StatusCode::OK).await;
    assert!(html.contains("Your password is changed"), "{html}");
    assert_eq!(site.verify(&other).await.status(), StatusCode::UNAUTHORIZED);
    // The sign-out form ends it.
    let sign_out = site
        .request(Method::POST, "/logout")
        .header(COOKIE, session.cookie())
        .send()
        .await
        .unwrap();
    assert!(
        sign_out.status() == StatusCode::NO_CONTENT || sign_out.status() == StatusCode::SEE_OTHER,
        "{}",
        sign_out.status()
    );
    assert_eq!(site.account(&session).await.status(), StatusCode::SEE_OTHER);
}

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
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use crate::common::second_factor::{Enrolled, now, totp_code, totp_step_now, wrong_code};
use crate::common::{PASSWORD, TestApp, assert_error, b64_json, claims, header, with_claim};

const APP_URL: &str = "https://app.example.com/inbox?folder=a%2Fb&x=1";
/// The login page's `Content-Security-Policy` (without an `rd`), which the account page
/// carries too.
const PAGE_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";
/// What every refused password or code says, whichever of the two was wrong.
const INCORRECT: &str = "The password or code is incorrect. Nothing was changed.";
const NEW_PASSWORD: &str = "a brand new passphrase";
/// A wrong password the page must never echo.
const GUESS: &str = "s3cret-guess";

/// The overrides of a browser-session daemon (plain HTTP, so cookies without `Secure`).
const COOKIES_ON: &[(&str, &str)] = &[
    ("AUTHD__COOKIE__ENABLED", "true"),
    ("AUTHD__COOKIE__SECURE", "false"),
    ("AUTHD__COOKIE__ALLOWED_REDIRECT_DOMAINS", "example.com"),
    ("AUTHD__COOKIE__LOGIN_URL", "https://auth.example.com/login"),
];
/// The overrides that hold the role `admin` to a second factor.
const ADMIN_NEEDS_MFA: &[(&str, &str)] = &[("AUTHD__MFA__REQUIRED_ROLES", "admin")];

/// The `Host` of the auth site under an allowed domain, and the page's address there (the
/// `rd` the login page is given to come back to it).
const AUTH_HOST: (&str, &str) = ("host", "auth.example.com");
const ACCOUNT_ON_AUTH_HOST: &str = "http://auth.example.com/account";

const PASSWORD_FORM: &str = "/account/password";
const END_FORM: &str = "/account/sessions/end";
const ENROL_FORM: &str = "/account/totp";
const CONFIRM_FORM: &str = "/account/totp/confirm";
const DISABLE_FORM: &str = "/account/totp/disable";
const NEW_CODES_FORM: &str = "/account/recovery-codes";
/// The path of every form of the page.
const FORMS: &[&str] = &[
    PASSWORD_FORM,
    END_FORM,
    ENROL_FORM,
    CONFIRM_FORM,
    DISABLE_FORM,
    NEW_CODES_FORM,
];

// ----- helpers: the site and its forms -----

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

/// `request` with a url-encoded form body of `fields`.
fn with_form(request: RequestBuilder, fields: &[(&str, &str)]) -> RequestBuilder {
    request
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(fields).unwrap())
}

/// A site with the user alice, signed in through the login form: the site and that session.
async fn alice_signed_in() -> (Site, Session) {
    alice_signed_in_on(&[]).await
}

/// [`alice_signed_in`] on a daemon with `extra` overrides.
async fn alice_signed_in_on(extra: &[(&str, &str)]) -> (Site, Session) {
    let site = Site::start(extra).await;
    site.user("alice", &[]).await;
    let session = site.sign_in("alice").await;
    (site, session)
}

/// [`alice_signed_in`], with TOTP turned on through the page.
async fn alice_enrolled() -> (Site, Session, Enrolled) {
    let (site, session) = alice_signed_in().await;
    let enrolled = site.enrol(&session).await;
    (site, session, enrolled)
}

impl Site {
    async fn start(extra: &[(&str, &str)]) -> Site {
        let app = TestApp::spawn_with(&[COOKIES_ON, extra].concat()).await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Site { app, client }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
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

    /// Sends `method path` with `headers` (a cookie is a `("cookie", …)` among them) and no
    /// body.
    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Response {
        let request = self.request(method, path);
        let request = headers.iter().fold(request, |request, (name, value)| {
            request.header(*name, *value)
        });
        request.send().await.unwrap()
    }

    /// `GET path` with the session's cookies.
    async fn get(&self, session: &Session, path: &str) -> Response {
        self.send(Method::GET, path, &[("cookie", &session.cookie())])
            .await
    }

    /// Posts the form `fields` to `path` with `headers`.
    async fn post_form(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Response {
        let request = with_form(self.request(Method::POST, path), fields);
        let request = headers.iter().fold(request, |request, (name, value)| {
            request.header(*name, *value)
        });
        request.send().await.unwrap()
    }

    /// Posts a form of the page with the session's cookies, as a non-browser client does:
    /// neither `Origin` nor `Sec-Fetch-Site`.
    async fn post(&self, session: &Session, path: &str, fields: &[(&str, &str)]) -> Response {
        self.post_with(session, path, fields, &[]).await
    }

    /// [`Site::post`] with extra request headers.
    async fn post_with(
        &self,
        session: &Session,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Response {
        let cookie = session.cookie();
        let headers = [&[("cookie", cookie.as_str())][..], headers].concat();
        self.post_form(path, fields, &headers).await
    }

    /// The password form.
    async fn change_password(
        &self,
        session: &Session,
        current: &str,
        new: &str,
        again: &str,
    ) -> Response {
        let fields = [
            ("current_password", current),
            ("new_password", new),
            ("new_password_again", again),
        ];
        self.post(session, PASSWORD_FORM, &fields).await
    }

    /// An "End" form (the sign-out form, for the session's own sid).
    async fn end_session(&self, session: &Session, sid: &str) -> Response {
        self.post(session, END_FORM, &[("sid", sid)]).await
    }

    /// The enrol form.
    async fn begin_totp(&self, session: &Session, current_password: &str) -> Response {
        self.post(
            session,
            ENROL_FORM,
            &[("current_password", current_password)],
        )
        .await
    }

    /// The confirm form.
    async fn confirm_totp(&self, session: &Session, code: &str) -> Response {
        self.post(session, CONFIRM_FORM, &[("code", code)]).await
    }

    /// A form at `path` that asks for the password and a code: the disable form or the
    /// new-codes form.
    async fn post_password_and_code(
        &self,
        session: &Session,
        path: &str,
        current_password: &str,
        code: &str,
    ) -> Response {
        let fields = [("current_password", current_password), ("code", code)];
        self.post(session, path, &fields).await
    }

    /// The disable form.
    async fn disable_totp(
        &self,
        session: &Session,
        current_password: &str,
        code: &str,
    ) -> Response {
        self.post_password_and_code(session, DISABLE_FORM, current_password, code)
            .await
    }

    /// The new-codes form.
    async fn new_recovery_codes(
        &self,
        session: &Session,
        current_password: &str,
        code: &str,
    ) -> Response {
        self.post_password_and_code(session, NEW_CODES_FORM, current_password, code)
            .await
    }

    /// `GET /account` with the session's cookies.
    async fn account(&self, session: &Session) -> Response {
        self.get(session, "/account").await
    }

    /// `GET /account`, asserting the `200` page; its HTML.
    async fn account_html(&self, session: &Session) -> String {
        page_text(self.account(session).await, StatusCode::OK).await
    }

    // ----- logging in -----

    /// Posts the login form (no `Origin`, no `Sec-Fetch-Site`).
    async fn post_login(&self, fields: &[(&str, &str)]) -> Response {
        self.post_form("/login", fields, &[]).await
    }

    /// Posts the login form with [`PASSWORD`], and `rd` when given.
    async fn post_password(&self, username: &str, rd: Option<&str>) -> Response {
        let mut fields = vec![("username", username), ("password", PASSWORD)];
        fields.extend(rd.map(|rd| ("rd", rd)));
        self.post_login(&fields).await
    }

    /// Signs in through the login form with [`PASSWORD`]; the session of its cookies.
    async fn sign_in(&self, username: &str) -> Session {
        let response = self.post_password(username, None).await;
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

    /// The first step of a login through the form for an account with TOTP on: the code
    /// page (`200`, no cookie); the hidden `mfa_token` it carries.
    async fn password_step(&self, username: &str, rd: Option<&str>) -> String {
        let response = self.post_password(username, rd).await;
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
    async fn code_step(&self, mfa_token: &str, code: &str, rd: Option<&str>) -> Response {
        let mut fields = vec![("mfa_token", mfa_token), ("code", code)];
        fields.extend(rd.map(|rd| ("rd", rd)));
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

    /// A full browser login with a second factor on its way to [`APP_URL`]: asserts the
    /// `303` there, and that forward-auth lets the new session through with
    /// `X-Auth-MFA: true`; that session.
    async fn sign_in_to_the_app_with_code(&self, username: &str, code: &str) -> Session {
        let token = self.password_step(username, Some(APP_URL)).await;
        let signed_in = self.code_step(&token, code, Some(APP_URL)).await;
        assert_see_other(&signed_in, APP_URL, "the code step");
        let session = session_of(&signed_in);
        let verified = self.verify_cookie(&session).await;
        assert_eq!(verified.status(), StatusCode::OK);
        assert_eq!(header(&verified, "x-auth-mfa"), "true");
        session
    }

    /// At the login's code form (one `mfa_token`): `dead` is refused (`401`, the code form
    /// again, no cookie), then `live` is taken (`303` with the cookies).
    async fn assert_code_refused_then_taken(&self, username: &str, dead: &str, live: &str) {
        let token = self.password_step(username, None).await;
        let old = self.code_step(&token, dead, None).await;
        assert!(old.headers().get(SET_COOKIE).is_none());
        let old_html = page_text(old, StatusCode::UNAUTHORIZED).await;
        assert!(old_html.contains("name=\"code\""), "the code form again");
        let new = self.code_step(&token, live, None).await;
        assert_eq!(new.status(), StatusCode::SEE_OTHER);
        session_of(&new);
    }

    // ----- the second factor -----

    /// The enrol form with [`PASSWORD`]: asserts the `200` page; the secret it shows.
    async fn pending_secret(&self, session: &Session) -> String {
        secret_on(&page_text(self.begin_totp(session, PASSWORD).await, StatusCode::OK).await)
    }

    /// The confirm form with the code of `step`: asserts the `200` page; the ten recovery
    /// codes it shows.
    async fn confirm_ok(&self, session: &Session, secret: &str, step: u64) -> Vec<String> {
        let confirmed = self.confirm_totp(session, &totp_code(secret, step)).await;
        recovery_codes_on(&page_text(confirmed, StatusCode::OK).await)
    }

    /// Turns TOTP on through the page: the enrol form, then the confirm form with the
    /// code of the current step. Asserts both `200` pages; what they showed.
    async fn enrol(&self, session: &Session) -> Enrolled {
        let secret = self.pending_secret(session).await;
        let step = totp_step_now();
        let recovery_codes = self.confirm_ok(session, &secret, step).await;
        Enrolled {
            secret,
            confirmed_step: step,
            recovery_codes,
        }
    }

    // ----- what the rest of the daemon says -----

    /// `GET /v1/verify` with the session's access token as bearer.
    async fn verify(&self, session: &Session) -> Response {
        self.app.verify(&session.access).await
    }

    /// `GET /v1/verify` with the session's cookies (as a forward-auth proxy asks).
    async fn verify_cookie(&self, session: &Session) -> Response {
        self.get(session, "/v1/verify").await
    }

    /// Whether TOTP is on for the session's user: the `mfa` of `GET /v1/me` (cookies).
    async fn totp_on(&self, session: &Session) -> bool {
        let response = self.get(session, "/v1/me").await;
        assert_eq!(response.status(), StatusCode::OK, "GET /v1/me");
        let me: Value = response.json().await.unwrap();
        me["mfa"].as_bool().unwrap_or_else(|| panic!("mfa in {me}"))
    }

    /// Asserts that each session lives: `GET /v1/verify` with its access token is `200`.
    async fn assert_live(&self, sessions: &[&Session]) {
        for session in sessions {
            let sid = session.sid();
            let status = self.verify(session).await.status();
            assert_eq!(status, StatusCode::OK, "session {sid} lives");
        }
    }

    /// Asserts that each session has ended: its access token is `401` at `GET /v1/verify`,
    /// its refresh token `invalid_grant`.
    async fn assert_ended(&self, sessions: &[&Session]) {
        for session in sessions {
            let sid = session.sid();
            let status = self.verify(session).await.status();
            assert_eq!(status, StatusCode::UNAUTHORIZED, "session {sid} ended");
            let refreshed = self.app.refresh(&session.refresh).await;
            assert_error(refreshed, StatusCode::BAD_REQUEST, "invalid_grant").await;
        }
    }

    /// Asserts that `password` is `username`'s password (`POST /v1/login` takes it).
    async fn assert_password(&self, username: &str, password: &str) {
        let status = self.app.try_login(username, password).await.status();
        assert_eq!(status, StatusCode::OK, "the password of {username}");
    }

    /// Asserts that no enrolment is pending: the confirm form is out of date (`409`).
    async fn assert_nothing_pending(&self, session: &Session) {
        let confirm = self.confirm_totp(session, "123456").await;
        page_text(confirm, StatusCode::CONFLICT).await;
    }

    /// Asserts that nothing of alice's account changed: this session and `others` live,
    /// her password is still [`PASSWORD`], TOTP is off.
    async fn assert_nothing_changed(&self, session: &Session, others: &[&Session]) {
        self.assert_live(&[&[session], others].concat()).await;
        self.assert_password("alice", PASSWORD).await;
        assert!(!self.totp_on(session).await, "TOTP is still off");
    }
}

/// The session of the cookies a response set (both must be there).
fn session_of(response: &Response) -> Session {
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

// ----- helpers: what the answers say -----

/// Asserts a page of the browser routes: `status`, HTML, and the login page's headers plus
/// `no-store`.
fn assert_page(response: &Response, status: StatusCode) {
    assert_eq!(response.status(), status, "status");
    assert_eq!(header(response, CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(header(response, CONTENT_SECURITY_POLICY), PAGE_CSP);
    assert_eq!(header(response, X_FRAME_OPTIONS), "DENY");
    assert_eq!(header(response, REFERRER_POLICY), "no-referrer");
    assert_eq!(header(response, CACHE_CONTROL), "no-store");
}

/// [`assert_page`], then the page's HTML.
async fn page_text(response: Response, status: StatusCode) -> String {
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

/// [`page_text`] of the page that says `message`.
async fn page_saying(response: Response, status: StatusCode, message: &str) -> String {
    let html = page_text(response, status).await;
    assert!(
        html.contains(message),
        "{status} saying {message:?}: {html}"
    );
    html
}

/// The `409` page of a form that does not fit an account with TOTP off ("out of date"),
/// still offering to turn TOTP on.
async fn out_of_date_while_off(response: Response) -> String {
    let html = page_saying(response, StatusCode::CONFLICT, "out of date").await;
    assert!(!totp_shown_on(&html));
    html
}

/// Asserts a `303` to `location`.
fn assert_see_other(response: &Response, location: &str, what: &str) {
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{what}");
    assert_eq!(header(response, LOCATION), location, "{what}");
}

/// The `rd` of a `Location` (percent-decoded).
fn rd_of(response: &Response) -> Option<String> {
    let query = header(response, LOCATION).split_once('?')?.1;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap()
        .into_iter()
        .find(|(key, _)| key == "rd")
        .map(|(_, value)| value)
}

/// Asserts a `303` to the login page, which is told to come back to the page under the
/// auth host.
fn assert_to_login_and_back(response: &Response) {
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = header(response, LOCATION);
    assert!(location.starts_with("/login?rd="), "{location}");
    assert_eq!(
        rd_of(response).as_deref(),
        Some(ACCOUNT_ON_AUTH_HOST),
        "{location}"
    );
}

/// Asserts the answer of a sign-out form (`204`, or a `303` on to the login page).
fn assert_signed_out(response: &Response, what: &str) {
    let status = response.status();
    assert!(
        status == StatusCode::NO_CONTENT || status == StatusCode::SEE_OTHER,
        "{what}: {status}"
    );
}

/// The text between `start` and the next `end` after it.
fn between<'a>(html: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = html.find(start)? + start.len();
    let to = html[from..].find(end)? + from;
    Some(&html[from..to])
}

/// The base32 secret the enrolment page shows, as shown (grouped in fours).
fn shown_secret(html: &str) -> &str {
    between(
        html,
        "<span class=\"secret\" id=\"totp-secret\">",
        "</span>",
    )
    .unwrap_or_else(|| panic!("no secret on the page: {html}"))
}

/// [`shown_secret`], spaces taken out.
fn secret_on(html: &str) -> String {
    shown_secret(html).replace(' ', "")
}

/// The recovery codes in `<ul id="recovery-codes">`: asserts ten of them, each of the
/// recovery code format (`xxxx-xxxx-xxxx`, lower-case base32).
fn recovery_codes_on(html: &str) -> Vec<String> {
    let list = between(html, "id=\"recovery-codes\">", "</ul>")
        .unwrap_or_else(|| panic!("no recovery codes on the page: {html}"));
    let codes: Vec<String> = list
        .split("<li>")
        .skip(1)
        .map(|item| item.split("</li>").next().unwrap().trim().to_owned())
        .collect();
    assert_eq!(codes.len(), 10, "{html}");
    codes.iter().for_each(|code| assert_recovery_code(code));
    codes
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
            hidden_value(form, "sid").unwrap()
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
    let on = form_to(html, DISABLE_FORM).is_some() && form_to(html, NEW_CODES_FORM).is_some();
    let off = form_to(html, ENROL_FORM).is_some();
    assert_ne!(on, off, "either on or off: {html}");
    on
}

/// The app's HS256 key (`<dir>/keys/<kid>.key`, the newest) signing `claims`: a token the
/// daemon accepts the signature of.
fn sign(app: &TestApp, claims: &Value) -> String {
    let path = std::fs::read_dir(app.dir.join("keys"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "key"))
        .max()
        .expect("the app generated an HS256 key");
    let kid = path.file_stem().unwrap().to_str().unwrap();
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
    let site = Site::start(&[]).await;

    let plain = site.send(Method::GET, "/account", &[]).await;
    // Reached under an allowed host, the login page is told to come back here.
    let allowed_host = site.send(Method::GET, "/account", &[AUTH_HOST]).await;
    let other_host = site
        .send(Method::GET, "/account", &[("host", "evil.test")])
        .await;

    assert_see_other(&plain, "/login", "no session");
    assert_eq!(header(&plain, CACHE_CONTROL), "no-store");
    assert!(plain.headers().get(SET_COOKIE).is_none());
    assert_to_login_and_back(&allowed_host);
    assert_see_other(&other_host, "/login", "no rd to a foreign host");
}

#[tokio::test]
async fn an_invalid_expired_or_ended_session_is_sent_to_the_login_page() {
    let (site, session) = alice_signed_in().await;
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
        let cookie = [("cookie", cookie.as_str())];
        let get = site.send(Method::GET, "/account", &cookie).await;
        assert_see_other(&get, "/login", &format!("GET with {what}"));
        for path in FORMS {
            let fields = [("current_password", PASSWORD)];
            let post = site.post_form(path, &fields, &cookie).await;
            assert_see_other(&post, "/login", &format!("POST {path} with {what}"));
        }
    }
    // Nothing was changed by any of them.
    assert!(!site.totp_on(&session).await);
    site.assert_live(&[&session]).await;
}

#[tokio::test]
async fn the_page_shows_the_sessions_the_forms_and_the_security_headers() {
    let site = Site::start(&[]).await;
    site.user("alice", &["reader"]).await;
    let session = site.sign_in("alice").await;
    let phone = site.api_session("alice", PASSWORD).await;
    site.user("bob", &[]).await;
    let bobs = site.sign_in("bob").await;

    let response = site.account(&session).await;

    assert!(response.headers().get(SET_COOKIE).is_none());
    let html = page_text(response, StatusCode::OK).await;
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
    let password = form_to(&html, PASSWORD_FORM).expect("a password form");
    for field in ["current_password", "new_password", "new_password_again"] {
        assert!(password.contains(&format!("name=\"{field}\"")), "{field}");
    }
    // Two-factor authentication is off: the enrol form only.
    let enrol = form_to(&html, ENROL_FORM).expect("an enrol form");
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
    let (site, session) = alice_signed_in().await;
    let cookie = session.cookie();
    let cookie = [("cookie", cookie.as_str())];

    for method in [Method::PUT, Method::DELETE, Method::POST] {
        let response = site.send(method.clone(), "/account", &cookie).await;
        assert_page(&response, StatusCode::METHOD_NOT_ALLOWED);
        let allow = header(&response, "allow");
        assert!(allow.split(", ").any(|m| m == "GET"), "{method}: {allow}");
        assert!(!allow.contains("POST"), "{method}: {allow}");
    }
    for path in FORMS {
        for method in [Method::GET, Method::PUT] {
            let response = site.send(method.clone(), path, &cookie).await;
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
            let request = app.public_request(method.clone(), path);
            let mut request = with_form(request, &[("current_password", PASSWORD)]);
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
    let (site, session) = alice_signed_in().await;

    let response = site
        .request(Method::POST, PASSWORD_FORM)
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
    let html = page_saying(response, status, "Your account").await;
    assert!(!html.contains(PASSWORD));
    // The password is unchanged.
    site.assert_password("alice", PASSWORD).await;
}

// ----- POST /account/sessions/end -----

#[tokio::test]
async fn ending_another_session_kills_its_tokens() {
    let (site, session) = alice_signed_in().await;
    let phone = site.api_session("alice", PASSWORD).await;
    let laptop = site.sign_in("alice").await;

    let response = site.end_session(&session, &phone.sid()).await;

    let html = page_saying(response, StatusCode::OK, "The session has ended.").await;
    assert_eq!(
        end_forms(&html),
        vec![laptop.sid()],
        "the ended one is gone"
    );
    site.assert_ended(&[&phone]).await;
    // This session and the third one live on.
    site.assert_live(&[&session, &laptop]).await;
    let sids = live_sids(&site.app, "alice").await;
    assert!(!sids.contains(&phone.sid()), "{sids:?}");
    assert_eq!(sids.len(), 2, "{sids:?}");
}

#[tokio::test]
async fn ending_an_unknown_or_someone_elses_session_is_a_404_page() {
    let (site, session) = alice_signed_in().await;
    site.user("bob", &[]).await;
    let bobs = site.sign_in("bob").await;

    for sid in [bobs.sid(), "no-such-session".to_owned(), String::new()] {
        let response = site.end_session(&session, &sid).await;
        let html = page_saying(response, StatusCode::NOT_FOUND, "There is no such session.").await;
        assert!(html.contains("Your account"));
    }
    site.assert_live(&[&bobs, &session]).await;
}

#[tokio::test]
async fn ending_this_session_sends_the_browser_to_the_login_page() {
    let (site, session) = alice_signed_in().await;
    let other = site.api_session("alice", PASSWORD).await;

    let response = site.end_session(&session, &session.sid()).await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = header(&response, LOCATION);
    assert!(
        location == "/login" || location.starts_with("/login?"),
        "{location}"
    );
    assert_eq!(header(&response, CACHE_CONTROL), "no-store");
    site.assert_ended(&[&session]).await;
    assert_eq!(
        site.account(&session).await.status(),
        StatusCode::SEE_OTHER,
        "the page is gone for this browser"
    );
    site.assert_live(&[&other]).await;
}

// ----- POST /account/password -----

#[tokio::test]
async fn changing_the_password_ends_the_other_sessions_and_keeps_this_one() {
    let (site, session) = alice_signed_in().await;
    let phone = site.api_session("alice", PASSWORD).await;
    let laptop = site.sign_in("alice").await;

    let response = site
        .change_password(&session, PASSWORD, NEW_PASSWORD, NEW_PASSWORD)
        .await;

    let html = page_saying(response, StatusCode::OK, "Your password is changed").await;
    assert!(!html.contains(PASSWORD), "never echoes a password");
    assert!(!html.contains(NEW_PASSWORD), "never echoes a password");
    assert!(end_forms(&html).is_empty(), "no other session left: {html}");
    site.assert_ended(&[&phone, &laptop]).await;
    site.assert_live(&[&session]).await;
    assert_eq!(site.verify_cookie(&session).await.status(), StatusCode::OK);
    site.account_html(&session).await;
    let refresh_cookie = format!("authd_refresh={}", session.refresh);
    let silent = site
        .send(Method::GET, "/login", &[("cookie", &refresh_cookie)])
        .await;
    assert_eq!(
        silent.status(),
        StatusCode::SEE_OTHER,
        "this session's refresh cookie still works"
    );
    assert_eq!(
        site.app.try_login("alice", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    site.assert_password("alice", NEW_PASSWORD).await;
}

/// Posts alice's password form (`current`, `new`, `again`) from a fresh session while she
/// has another one: asserts the page with `status` saying `message`, and that nothing
/// changed; its HTML.
async fn refused_password_change(
    current: &str,
    new: &str,
    again: &str,
    status: StatusCode,
    message: &str,
) -> String {
    let (site, session) = alice_signed_in().await;
    let phone = site.api_session("alice", PASSWORD).await;

    let response = site.change_password(&session, current, new, again).await;

    let html = page_saying(response, status, message).await;
    site.assert_nothing_changed(&session, &[&phone]).await;
    html
}

#[tokio::test]
async fn a_wrong_current_password_is_a_403_that_changes_nothing() {
    let guess = format!("{GUESS}<>");
    let html = refused_password_change(
        &guess,
        NEW_PASSWORD,
        NEW_PASSWORD,
        StatusCode::FORBIDDEN,
        INCORRECT,
    )
    .await;

    assert!(!html.contains(GUESS), "never echoes the password");
    assert!(!html.contains(NEW_PASSWORD), "never echoes the password");
}

#[tokio::test]
async fn new_passwords_that_differ_are_a_400_that_changes_nothing() {
    let html = refused_password_change(
        PASSWORD,
        NEW_PASSWORD,
        "a brand new passphrasE",
        StatusCode::BAD_REQUEST,
        "The new passwords do not match.",
    )
    .await;

    assert!(!html.contains(NEW_PASSWORD));
    assert!(!html.contains(PASSWORD));
}

#[tokio::test]
async fn a_new_password_outside_the_rules_is_a_400_that_changes_nothing() {
    let html = refused_password_change(
        PASSWORD,
        "short",
        "short",
        StatusCode::BAD_REQUEST,
        "Your account",
    )
    .await;

    assert!(!html.contains(PASSWORD));
}

#[tokio::test]
async fn wrong_passwords_get_throttled_429_with_retry_after() {
    let (site, session) = alice_signed_in_on(&[("AUTHD__LOGIN__MAX_FAILURES", "3")]).await;
    let phone = site.api_session("alice", PASSWORD).await;
    for _ in 0..3 {
        let wrong = site
            .change_password(&session, "wrong guess!", NEW_PASSWORD, NEW_PASSWORD)
            .await;
        page_text(wrong, StatusCode::FORBIDDEN).await;
    }

    // Even the right password is held off now, on every form that checks one.
    let throttled = site
        .change_password(&session, PASSWORD, NEW_PASSWORD, NEW_PASSWORD)
        .await;
    let enrol = site.begin_totp(&session, PASSWORD).await;

    for response in [throttled, enrol] {
        let retry_after: u64 = header(&response, RETRY_AFTER)
            .parse()
            .expect("a Retry-After in seconds");
        assert!(retry_after > 0 && retry_after <= 15 * 60, "{retry_after}");
        let html = page_saying(
            response,
            StatusCode::TOO_MANY_REQUESTS,
            "Nothing was changed",
        )
        .await;
        assert!(!html.contains(PASSWORD));
        assert!(!html.contains("totp-secret"), "no enrolment began");
    }
    // The password did not change (the other session lives), TOTP is still off.
    site.assert_live(&[&phone]).await;
    assert!(!site.totp_on(&session).await);
}

// ----- POST /account/totp, /account/totp/confirm -----

#[tokio::test]
async fn enrol_confirm_and_the_codes_shown_once() {
    let (site, session) = alice_signed_in().await;

    // Enrol: the QR code, the secret as text, the confirm form.
    let html = page_text(site.begin_totp(&session, PASSWORD).await, StatusCode::OK).await;
    let svg = between(&html, "<svg", "</svg>").expect("an inline SVG QR code");
    assert!(svg.contains("role=\"img\""), "{svg}");
    assert!(svg.contains("aria-label="), "{svg}");
    let shown = shown_secret(&html).to_owned();
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
    let confirm = form_to(&html, CONFIRM_FORM).expect("a confirm form");
    assert!(confirm.contains("name=\"code\""), "{confirm}");
    assert!(!html.contains(PASSWORD), "never echoes the password");
    assert!(!site.totp_on(&session).await, "pending");

    // Confirm: TOTP on, the ten recovery codes, once.
    let step = totp_step_now();
    let confirmed = site.confirm_totp(&session, &totp_code(&secret, step)).await;
    let html = page_text(confirmed, StatusCode::OK).await;
    let codes = recovery_codes_on(&html);
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
    assert!(!html.contains(&shown));
    assert!(!html.contains("<svg"));
    assert!(site.totp_on(&session).await);

    // Logging in through the form now asks for a code.
    site.sign_in_to_the_app_with_code("alice", &totp_code(&secret, step + 1))
        .await;
    // The session that enrolled began without a code.
    assert_eq!(
        header(&site.verify_cookie(&session).await, "x-auth-mfa"),
        "false"
    );
}

#[tokio::test]
async fn a_wrong_password_on_the_enrol_form_is_a_403() {
    let (site, session) = alice_signed_in().await;

    let response = site.begin_totp(&session, GUESS).await;

    let html = page_saying(response, StatusCode::FORBIDDEN, INCORRECT).await;
    assert!(!html.contains(GUESS));
    assert!(!html.contains("totp-secret"), "no secret");
    assert!(!html.contains("<svg"), "no QR code");
    assert!(!totp_shown_on(&html));
    site.assert_nothing_pending(&session).await;
}

#[tokio::test]
async fn a_wrong_confirm_code_is_a_400_and_the_enrolment_stays_pending() {
    let (site, session) = alice_signed_in().await;
    let secret = site.pending_secret(&session).await;

    let wrong = site
        .confirm_totp(&session, &wrong_code(&secret, totp_step_now()))
        .await;
    let garbage = site.confirm_totp(&session, "not a code").await;

    for response in [wrong, garbage] {
        let html = page_text(response, StatusCode::BAD_REQUEST).await;
        assert!(!html.contains("id=\"recovery-codes\""), "{html}");
        // The confirm form is offered again (the key is not shown twice).
        assert!(html.contains("action=\"/account/totp/confirm\""), "{html}");
        assert!(!html.contains(&secret), "{html}");
    }
    assert!(!site.totp_on(&session).await);
    // The right code of the pending secret still turns it on.
    site.confirm_ok(&session, &secret, totp_step_now()).await;
    assert!(site.totp_on(&session).await);
}

#[tokio::test]
async fn confirming_with_nothing_pending_is_a_409() {
    let (site, session) = alice_signed_in().await;

    out_of_date_while_off(site.confirm_totp(&session, "123456").await).await;

    // Once on, a second confirm (a form resent) is out of date too, and shows no codes.
    let enrolled = site.enrol(&session).await;
    let again = site.confirm_totp(&session, &enrolled.next_code()).await;
    let html = page_text(again, StatusCode::CONFLICT).await;
    assert!(!html.contains("id=\"recovery-codes\""), "{html}");
    assert!(totp_shown_on(&html));
}

#[tokio::test]
async fn enrolling_again_before_confirming_replaces_the_pending_secret() {
    let (site, session) = alice_signed_in().await;
    let first = site.pending_secret(&session).await;
    let second = site.pending_secret(&session).await;
    assert_ne!(first, second, "a new secret");
    let step = totp_step_now();

    let stale = site.confirm_totp(&session, &totp_code(&first, step)).await;
    page_text(stale, StatusCode::BAD_REQUEST).await;
    site.confirm_ok(&session, &second, step).await;

    assert!(site.totp_on(&session).await);
}

#[tokio::test]
async fn a_code_is_taken_once() {
    let (site, session, enrolled) = alice_enrolled().await;
    let code = enrolled.next_code();
    let renewed = site.new_recovery_codes(&session, PASSWORD, &code).await;
    page_text(renewed, StatusCode::OK).await;

    // The same code again, or the confirm's, is refused; so is the recovery code that
    // the renewal killed.
    for replay in [
        code,
        enrolled.confirm_code(),
        enrolled.recovery_codes[0].clone(),
    ] {
        let response = site.disable_totp(&session, PASSWORD, &replay).await;
        let html = page_text(response, StatusCode::FORBIDDEN).await;
        assert!(html.contains(INCORRECT), "{replay}: {html}");
    }
    assert!(site.totp_on(&session).await);
}

#[tokio::test]
async fn enrolling_again_while_on_is_a_409() {
    let (site, session, enrolled) = alice_enrolled().await;

    let response = site.begin_totp(&session, PASSWORD).await;

    let html = page_text(response, StatusCode::CONFLICT).await;
    assert!(!html.contains("totp-secret"), "no new secret: {html}");
    assert!(totp_shown_on(&html));
    // The enrolled secret still works.
    site.sign_in_with_code("alice", &enrolled.next_code()).await;
}

/// Posts the form at `path` (the password and a code) with a wrong code, then with a wrong
/// password and an unused recovery code (`recovery_codes[1]`): asserts the same `403` page
/// for both (it never says which was wrong), saying [`INCORRECT`], TOTP still on; its HTML.
async fn refused_wrong_code_or_password(
    site: &Site,
    session: &Session,
    enrolled: &Enrolled,
    path: &str,
) -> String {
    let wrong_code = site
        .post_password_and_code(session, path, PASSWORD, &enrolled.wrong_code())
        .await;
    let wrong_password = site
        .post_password_and_code(session, path, GUESS, &enrolled.recovery_codes[1])
        .await;

    let wrong_code = page_saying(wrong_code, StatusCode::FORBIDDEN, INCORRECT).await;
    let wrong_password = page_saying(wrong_password, StatusCode::FORBIDDEN, INCORRECT).await;
    for html in [&wrong_code, &wrong_password] {
        assert!(!html.contains(GUESS));
        assert!(totp_shown_on(html), "still on");
    }
    assert_eq!(
        wrong_code, wrong_password,
        "the page never says which was wrong"
    );
    wrong_code
}

// ----- POST /account/recovery-codes -----

#[tokio::test]
async fn new_recovery_codes_replace_the_old_ones() {
    let (site, session, enrolled) = alice_enrolled().await;

    let response = site
        .new_recovery_codes(&session, PASSWORD, &enrolled.next_code())
        .await;

    let html = page_saying(
        response,
        StatusCode::OK,
        "Your old recovery codes no longer work.",
    )
    .await;
    let codes = recovery_codes_on(&html);
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
    site.assert_code_refused_then_taken("alice", &enrolled.recovery_codes[0], &codes[0])
        .await;
}

#[tokio::test]
async fn a_wrong_code_or_password_on_the_new_codes_form_is_a_403_that_changes_nothing() {
    let (site, session, enrolled) = alice_enrolled().await;

    let html = refused_wrong_code_or_password(&site, &session, &enrolled, NEW_CODES_FORM).await;

    assert!(!html.contains("id=\"recovery-codes\""), "no new codes");
    // The old codes still work.
    site.sign_in_with_code("alice", &enrolled.recovery_codes[0])
        .await;
}

#[tokio::test]
async fn new_codes_while_totp_is_off_is_a_409() {
    let (site, session) = alice_signed_in().await;

    let response = site.new_recovery_codes(&session, PASSWORD, "123456").await;

    let html = out_of_date_while_off(response).await;
    assert!(!html.contains("id=\"recovery-codes\""));
}

// ----- POST /account/totp/disable -----

#[tokio::test]
async fn disable_turns_totp_off() {
    let (site, session, enrolled) = alice_enrolled().await;

    let response = site
        .disable_totp(&session, PASSWORD, &enrolled.next_code())
        .await;

    let html = page_saying(
        response,
        StatusCode::OK,
        "Two-factor authentication is off.",
    )
    .await;
    assert!(!totp_shown_on(&html));
    assert!(!site.totp_on(&session).await);
    assert!(!totp_shown_on(&site.account_html(&session).await));
    // The password alone signs in again; the recovery codes are gone with TOTP.
    let response = site.post_password("alice", Some(APP_URL)).await;
    assert_see_other(&response, APP_URL, "the password alone");
    let again = site.sign_in("alice").await;
    assert_eq!(header(&site.verify(&again).await, "x-auth-mfa"), "false");
}

#[tokio::test]
async fn a_wrong_code_or_password_on_the_disable_form_is_a_403_that_changes_nothing() {
    let (site, session, enrolled) = alice_enrolled().await;

    refused_wrong_code_or_password(&site, &session, &enrolled, DISABLE_FORM).await;
    let no_code = site
        .post(&session, DISABLE_FORM, &[("current_password", PASSWORD)])
        .await;

    let no_code = page_saying(no_code, StatusCode::FORBIDDEN, INCORRECT).await;
    assert!(!no_code.contains(GUESS));
    assert!(totp_shown_on(&no_code), "still on");
    assert!(site.totp_on(&session).await);
    // The recovery code sent with the wrong password was not used up.
    site.sign_in_with_code("alice", &enrolled.recovery_codes[1])
        .await;
}

#[tokio::test]
async fn disabling_with_a_recovery_code_kills_the_whole_set() {
    let (site, session, first) = alice_enrolled().await;

    let upper_case = first.recovery_codes[0].to_ascii_uppercase();
    let response = site.disable_totp(&session, PASSWORD, &upper_case).await;

    page_text(response, StatusCode::OK).await;
    assert!(!site.totp_on(&session).await);
    // Enrolled again: the first set's codes are dead, the new set's work.
    let second = site.enrol(&session).await;
    site.assert_code_refused_then_taken(
        "alice",
        &first.recovery_codes[1],
        &second.recovery_codes[1],
    )
    .await;
}

#[tokio::test]
async fn disable_while_totp_is_off_is_a_409() {
    let (site, session) = alice_signed_in().await;

    let response = site.disable_totp(&session, PASSWORD, "123456").await;

    out_of_date_while_off(response).await;
}

// ----- signing out -----

#[tokio::test]
async fn the_sign_out_form_ends_the_session_and_comes_back_through_the_login_page() {
    let (site, session) = alice_signed_in().await;
    let cookie = session.cookie();
    let browser = [("cookie", cookie.as_str()), AUTH_HOST];
    let page = site.send(Method::GET, "/account", &browser).await;
    let html = page_text(page, StatusCode::OK).await;
    // The page signs out through its own form (`/logout` refuses the `Origin: null` that
    // the page's no-referrer policy makes browsers send): it ends this session.
    let form = between(&html, "id=\"sign-out\"", "</form>").expect("a sign-out form");
    assert!(
        html.contains("action=\"/account/sessions/end\" id=\"sign-out\""),
        "{html}"
    );
    let sid = hidden_value(form, "sid").expect("the session's sid");
    let response = site
        .post_with(
            &session,
            END_FORM,
            &[("sid", &sid)],
            &[
                AUTH_HOST,
                ("origin", "null"),
                ("sec-fetch-site", "same-origin"),
            ],
        )
        .await;
    assert_to_login_and_back(&response);
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
    site.assert_ended(&[&session]).await;
    let back = site.send(Method::GET, "/account", &browser).await;
    assert_to_login_and_back(&back);
}

// ----- the cross-site rule -----

#[tokio::test]
async fn posts_from_another_site_are_refused_and_change_nothing() {
    let (site, session) = alice_signed_in().await;
    let phone = site.api_session("alice", PASSWORD).await;
    let phone_sid = phone.sid();
    let forms: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            PASSWORD_FORM,
            vec![
                ("current_password", PASSWORD),
                ("new_password", NEW_PASSWORD),
                ("new_password_again", NEW_PASSWORD),
            ],
        ),
        (END_FORM, vec![("sid", &phone_sid)]),
        (END_FORM, vec![("sid", "")]),
        (ENROL_FORM, vec![("current_password", PASSWORD)]),
        (CONFIRM_FORM, vec![("code", "123456")]),
        (
            DISABLE_FORM,
            vec![("current_password", PASSWORD), ("code", "123456")],
        ),
        (
            NEW_CODES_FORM,
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
    site.assert_nothing_changed(&session, &[&phone]).await;
    site.assert_nothing_pending(&session).await;
}

#[tokio::test]
async fn posts_from_the_same_site_or_without_browser_headers_are_allowed() {
    let (site, session) = alice_signed_in().await;
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
    let cookie = session.cookie();
    let linked = site
        .send(
            Method::GET,
            "/account",
            &[
                ("cookie", &cookie),
                ("origin", "https://evil.com"),
                ("sec-fetch-site", "cross-site"),
            ],
        )
        .await;
    page_text(linked, StatusCode::OK).await;
    for headers in allowed {
        let other = site.api_session("alice", PASSWORD).await;
        let response = site
            .post_with(&session, END_FORM, &[("sid", &other.sid())], headers)
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
    let (site, session) = alice_signed_in().await;
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
        .post_with(&session, END_FORM, &[("sid", &other.sid())], &browser)
        .await;
    let enrol = site
        .post_with(
            &session,
            ENROL_FORM,
            &[("current_password", PASSWORD)],
            &browser,
        )
        .await;
    let sign_out = site
        .post_with(&session, END_FORM, &[("sid", &session.sid())], &browser)
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
    assert_signed_out(
        &sign_out,
        &format!("the sign-out form posted with Origin: {origin}"),
    );
    site.assert_ended(&[&session]).await;
}

// ----- mfa.required_roles -----

#[tokio::test]
async fn a_user_who_must_enrol_lands_on_the_account_page_and_enrols_there() {
    let site = Site::start(ADMIN_NEEDS_MFA).await;
    site.user("boss", &["admin"]).await;
    site.user("alice", &["reader"]).await;

    // A user without the role goes where rd says.
    let alice = site.post_password("alice", Some(APP_URL)).await;
    assert_see_other(&alice, APP_URL, "alice");

    // The admin signing in with the password alone lands on the account page.
    let landing = site.post_password("boss", Some(APP_URL)).await;
    assert_see_other(&landing, "/account", "boss");
    let session = session_of(&landing);
    assert_error(
        site.verify_cookie(&session).await,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    )
    .await;
    let html = page_saying(
        site.account(&session).await,
        StatusCode::OK,
        "Your role requires two-factor authentication",
    )
    .await;
    assert!(!totp_shown_on(&html));

    // Enrolling works there; it does not lift the rule for this session.
    let enrolled = site.enrol(&session).await;
    assert!(site.totp_on(&session).await);
    assert_error(
        site.verify_cookie(&session).await,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    )
    .await;
    assert!(totp_shown_on(&site.account_html(&session).await));

    // A new login with a code goes to rd and is let through.
    let with_code = site
        .sign_in_to_the_app_with_code("boss", &enrolled.next_code())
        .await;
    site.account_html(&with_code).await;
}

#[tokio::test]
async fn a_user_who_must_enrol_can_use_every_form_of_the_page() {
    let site = Site::start(ADMIN_NEEDS_MFA).await;
    site.user("boss", &["admin"]).await;
    let landing = site.post_password("boss", None).await;
    assert_see_other(&landing, "/account", "boss");
    let session = session_of(&landing);
    let other = site.api_session("boss", PASSWORD).await;

    let end = site.end_session(&session, &other.sid()).await;
    page_text(end, StatusCode::OK).await;
    let change = site
        .change_password(&session, PASSWORD, NEW_PASSWORD, NEW_PASSWORD)
        .await;
    page_saying(change, StatusCode::OK, "Your password is changed").await;
    site.assert_ended(&[&other]).await;
    // The sign-out form ends it.
    let cookie = session.cookie();
    let sign_out = site
        .send(Method::POST, "/logout", &[("cookie", &cookie)])
        .await;
    assert_signed_out(&sign_out, "POST /logout");
    assert_eq!(site.account(&session).await.status(), StatusCode::SEE_OTHER);
}

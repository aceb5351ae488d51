//! authd behind the real reverse proxies: nginx (`auth_request`) and Caddy (`forward_auth`),
//! each run from the shipped `examples/nginx.conf` / `examples/Caddyfile` with only ports
//! and paths substituted, in front of a tiny upstream app that echoes what it received.
//!
//! Needs the `nginx` and `caddy` binaries (`.ci/run` installs them). Without them the tests
//! are skipped with a note on a developer's machine, so `cargo test` works on a fresh
//! clone, but fail in CI (`CI` set), where a missing proxy means a broken install step.

// Real proxies and a real browser, on real time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use authd::activation::InheritedListeners;
use authd::auth::mfa::totp;
use reqwest::header::{ACCEPT, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;
use warp::Filter;

mod common;

use common::{PASSWORD, TestApp, header, percent_encode, second_factor};

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

// ----- the pieces -----

/// authd in-process (the shared `TestApp`), its public listener bound before the
/// configuration is written so that `cookie.login_url` can name its port.
struct Authd {
    app: TestApp,
    /// `127.0.0.1:PORT` of the public listener.
    addr: SocketAddr,
}

impl Authd {
    async fn start() -> Authd {
        let public = StdListener::bind("127.0.0.1:0").unwrap();
        public.set_nonblocking(true).unwrap();
        let addr = public.local_addr().unwrap();
        let login_url = format!("http://auth.example.com:{}/login", addr.port());
        let overrides = [
            ("AUTHD__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
            ("AUTHD__COOKIE__ENABLED", "true"),
            ("AUTHD__COOKIE__SECURE", "false"),
            ("AUTHD__COOKIE__DOMAIN", "example.com"),
            ("AUTHD__COOKIE__ALLOWED_REDIRECT_DOMAINS", "example.com"),
            ("AUTHD__COOKIE__LOGIN_URL", login_url.as_str()),
        ];
        let listeners = InheritedListeners {
            public: Some(public),
            admin: None,
        };
        let app = TestApp::spawn_on(&overrides, listeners).await;
        Authd { app, addr }
    }
}

/// The app behind the proxy: answers every request with a JSON echo of its method, path,
/// headers and body, and counts the requests that reached it.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    _stop: watch::Sender<authd::http::server::Phase>,
}

impl Upstream {
    async fn start() -> Upstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let echo = warp::any()
            .and(warp::method())
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .map(
                move |method: Method,
                      path: warp::path::FullPath,
                      query: String,
                      headers: http::HeaderMap,
                      body: bytes::Bytes| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
                    for (name, value) in &headers {
                        seen.entry(name.as_str().to_owned())
                            .or_default()
                            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
                    }
                    let echo = json!({
                        "method": method.as_str(),
                        "path": path.as_str(),
                        "query": query,
                        "headers": seen,
                        "body": String::from_utf8_lossy(&body),
                    });
                    let mut response =
                        warp::reply::Response::new(serde_json::to_vec(&echo).unwrap().into());
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    response
                },
            )
            .boxed();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, phase) = watch::channel(authd::http::server::Phase::Running);
        tokio::spawn(authd::http::server::serve(
            "upstream",
            listener,
            authd::http::Routes::from_filter(echo),
            phase,
        ));
        Upstream {
            addr,
            hits,
            _stop: stop,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nginx,
    Caddy,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Caddy => "caddy",
        }
    }
}

/// A running proxy process, killed when dropped.
struct Proxy {
    child: Child,
    /// The port that serves the app (`app.example.com`).
    app_port: u16,
    /// The port that serves the login host (`auth.example.com`).
    auth_port: u16,
    /// Its configuration, pid and logs.
    dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago. nginx and Caddy take their ports from a config file,
/// so they cannot be given port 0; between dropping this listener and the proxy binding the
/// port another process may take it. [`start_proxy`] then sees the proxy fail and starts it
/// again on fresh ports.
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The command that runs `binary` (on `PATH`, or in `/usr/sbin`, where Debian puts nginx
/// and which is not on every user's `PATH`); fails the test with a clear message when there
/// is none in CI, else `None` (skip) with a note.
fn proxy_binary(binary: &str) -> Option<PathBuf> {
    let candidates = [PathBuf::from(binary), Path::new("/usr/sbin").join(binary)];
    let found = candidates.into_iter().find(|candidate| {
        Command::new(candidate)
            .arg(if binary == "nginx" { "-v" } else { "version" })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    });
    if found.is_some() {
        return found;
    }
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    if in_ci && std::env::var("AUTHD_SKIP_PROXY_TESTS").as_deref() != Ok("1") {
        panic!(
            "`{binary}` is not installed: the proxy tests need nginx and caddy \
             (apt-get install nginx caddy; `.ci/run` does it)"
        );
    }
    eprintln!(
        "SKIPPED: `{binary}` is not installed, so authd is not tested behind the real \
         proxies here (apt-get install nginx caddy to run these tests)"
    );
    None
}

/// The shipped example with only addresses and paths substituted.
fn example_config(
    kind: Kind,
    authd: SocketAddr,
    upstream: SocketAddr,
    app: u16,
    auth: u16,
) -> String {
    let file = match kind {
        Kind::Nginx => "examples/nginx.conf",
        Kind::Caddy => "examples/Caddyfile",
    };
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    let substitutions = match kind {
        Kind::Nginx => [
            ("listen 127.0.0.1:8000;", format!("listen 127.0.0.1:{app};")),
            (
                "listen 127.0.0.1:8001;",
                format!("listen 127.0.0.1:{auth};"),
            ),
            ("127.0.0.1:8080", authd.to_string()),
            ("127.0.0.1:9000", upstream.to_string()),
        ],
        Kind::Caddy => [
            ("app.example.com:8000", format!("app.example.com:{app}")),
            ("auth.example.com:8001", format!("auth.example.com:{auth}")),
            ("127.0.0.1:8080", authd.to_string()),
            ("127.0.0.1:9000", upstream.to_string()),
        ],
    };
    let mut text = text;
    for (placeholder, value) in substitutions {
        assert!(text.contains(placeholder), "{file} lost its {placeholder}");
        text = text.replace(placeholder, &value);
    }
    text
}

/// Starts the proxy from its example in front of `authd` and `upstream`, retrying on fresh
/// ports when one was taken meanwhile (see [`free_port`]).
async fn start_proxy(binary: &Path, kind: Kind, authd: SocketAddr, upstream: SocketAddr) -> Proxy {
    let mut failures = Vec::new();
    for _attempt in 0..5 {
        let tempdir = tempfile::tempdir().unwrap();
        let dir = tempdir.path().to_owned();
        let (app_port, auth_port) = (free_port(), free_port());
        if app_port == auth_port {
            continue;
        }
        let config = example_config(kind, authd, upstream, app_port, auth_port);
        let mut command = match kind {
            Kind::Nginx => {
                let file = dir.join("nginx.conf");
                std::fs::write(&file, config).unwrap();
                let globals = format!(
                    "daemon off; master_process off; pid {0}/nginx.pid; error_log {0}/error.log;",
                    dir.display()
                );
                let mut command = Command::new(binary);
                command
                    .arg("-p")
                    .arg(format!("{}/", dir.display()))
                    .arg("-c")
                    .arg(&file)
                    .arg("-g")
                    .arg(globals);
                command
            }
            Kind::Caddy => {
                let file = dir.join("Caddyfile");
                std::fs::write(&file, config).unwrap();
                let mut command = Command::new(binary);
                command
                    .args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&file)
                    .env("HOME", &dir)
                    .env("XDG_CONFIG_HOME", dir.join("config"))
                    .env("XDG_DATA_HOME", dir.join("data"));
                command
            }
        };
        let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut proxy = Proxy {
            child,
            app_port,
            auth_port,
            dir,
            _dir: tempdir,
        };
        match wait_until_listening(&mut proxy).await {
            Ok(()) => return proxy,
            Err(problem) => failures.push(problem),
        }
    }
    panic!("{} did not start:\n{}", kind.binary(), failures.join("\n"));
}

/// Polls until both ports accept connections; an exited process is a failure (with its log).
async fn wait_until_listening(proxy: &mut Proxy) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(proxy.dir.join("stderr.log")).unwrap_or_default();
            let error_log =
                std::fs::read_to_string(proxy.dir.join("error.log")).unwrap_or_default();
            return Err(format!("exited with {status}: {log}{error_log}"));
        }
        let up = |port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if up(proxy.app_port) && up(proxy.auth_port) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("not listening after 20 s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ----- a browser-ish client -----

/// Everything one proxy test needs; requests go to `app.example.com` / `auth.example.com`,
/// which resolve to 127.0.0.1.
struct Stack {
    authd: Authd,
    upstream: Upstream,
    proxy: Proxy,
    client: reqwest::Client,
}

impl Stack {
    /// authd, the app and `kind`'s proxy in front of them from its example, with the users
    /// alice and root (admin); `None` (skip) without the proxy's binary (see
    /// [`proxy_binary`]).
    async fn start(kind: Kind) -> Option<Stack> {
        let binary = proxy_binary(kind.binary())?;
        let authd = Authd::start().await;
        let upstream = Upstream::start().await;
        let proxy = start_proxy(&binary, kind, authd.addr, upstream.addr).await;
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .resolve("app.example.com", loopback)
            .resolve("auth.example.com", loopback)
            .resolve("evil-example.com", loopback)
            .build()
            .unwrap();
        authd.app.add_user("alice", &[]).await;
        authd.app.add_user("root", &["admin"]).await;
        Some(Stack {
            authd,
            upstream,
            proxy,
            client,
        })
    }

    /// `http://app.example.com:PORT{path}`, through the proxy.
    fn app_url(&self, path: &str) -> String {
        format!("http://app.example.com:{}{path}", self.proxy.app_port)
    }

    /// `http://auth.example.com:PORT{path}`, authd directly (the configured login host).
    fn authd_url(&self, path: &str) -> String {
        format!("http://auth.example.com:{}{path}", self.authd.addr.port())
    }

    /// `http://auth.example.com:PORT`: the login host of the example, the proxy in front of
    /// authd.
    fn login_host(&self) -> String {
        format!("http://auth.example.com:{}", self.proxy.auth_port)
    }

    fn login_url_for(&self, original: &str) -> String {
        format!(
            "{}?rd={}",
            self.authd_url("/login"),
            percent_encode(original)
        )
    }

    async fn app(&self, method: Method, path: &str, cookies: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, self.app_url(path))
            .header(ACCEPT, BROWSER_ACCEPT);
        if let Some(cookies) = cookies {
            request = request.header(COOKIE, cookies);
        }
        request.send().await.unwrap()
    }

    /// What the app echoed of `GET path` with `cookies` (it must have answered).
    async fn seen_by_app(&self, path: &str, cookies: &str) -> Value {
        echo(self.app(Method::GET, path, Some(cookies)).await).await
    }

    /// authd's login form at `base` (authd itself, or the proxy's [`Stack::login_host`]),
    /// its posts carrying `rd`.
    fn login_form(&self, base: String, rd: &str) -> LoginForm<'_> {
        LoginForm {
            stack: self,
            base,
            rd: rd.to_owned(),
            from: None,
        }
    }

    /// Signs in through the login page's form as a browser would, returning the cookies.
    async fn sign_in(&self, username: &str, rd: &str) -> Cookies {
        let form = self.login_form(self.authd_url(""), rd);
        signed_in(&form.password(username, PASSWORD).await, rd, username)
    }

    /// `GET /login?rd=` at authd with the given cookies.
    async fn login_page(&self, rd: &str, cookies: &str) -> reqwest::Response {
        self.get_with_cookies(&self.login_url_for(rd), cookies)
            .await
    }

    /// `GET url` with `cookies` (redirects not followed).
    async fn get_with_cookies(&self, url: &str, cookies: &str) -> reqwest::Response {
        self.client
            .get(url)
            .header(COOKIE, cookies)
            .send()
            .await
            .unwrap()
    }

    /// The browser goes to the app at `path` with only its refresh cookie of `session` (the
    /// access cookie expired): the app sends it to the login page, which renews the session
    /// silently and sends it straight back. Returns the renewed cookies.
    async fn refresh_silently(&self, path: &str, session: &Cookies, what: &str) -> Cookies {
        let to_login = self.app(Method::GET, path, Some(&session.refresh())).await;
        assert_eq!(to_login.status(), StatusCode::FOUND, "{what}: to the login");
        let silent = self
            .get_with_cookies(header(&to_login, "location"), &session.refresh())
            .await;
        assert_eq!(
            silent.status(),
            StatusCode::SEE_OTHER,
            "{what}: silent refresh"
        );
        assert_eq!(header(&silent, "location"), self.app_url(path), "{what}");
        Cookies::from(&silent)
    }
}

struct Cookies(HashMap<String, String>);

impl Cookies {
    fn from(response: &reqwest::Response) -> Cookies {
        let mut cookies = HashMap::new();
        for line in response.headers().get_all(SET_COOKIE) {
            let pair = line.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            cookies.insert(name.to_owned(), value.to_owned());
        }
        Cookies(cookies)
    }

    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    fn access(&self) -> String {
        format!("authd={}", self.0["authd"])
    }

    fn refresh(&self) -> String {
        format!("authd_refresh={}", self.0["authd_refresh"])
    }

    fn both(&self) -> String {
        format!("{}; {}", self.access(), self.refresh())
    }
}

/// The end of a login: `303` with both session cookies, which it returns.
#[track_caller]
fn session_cookies(response: &reqwest::Response, what: &str) -> Cookies {
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "{what}: signed in"
    );
    let cookies = Cookies::from(response);
    assert!(
        cookies.has("authd") && cookies.has("authd_refresh"),
        "{what}: the session cookies: {:?}",
        response.headers()
    );
    cookies
}

/// [`session_cookies`] of a login that goes back to `rd`.
#[track_caller]
fn signed_in(response: &reqwest::Response, rd: &str, what: &str) -> Cookies {
    assert_eq!(header(response, "location"), rd, "{what}: back to rd");
    session_cookies(response, what)
}

/// The upstream's echo of a request that reached it.
async fn echo(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), StatusCode::OK, "the app answered");
    let echo: Value = response.json().await.unwrap();
    assert!(echo["method"].is_string(), "an echo from the app: {echo}");
    echo
}

fn seen<'v>(echo: &'v Value, header: &str) -> Vec<&'v str> {
    echo["headers"][header]
        .as_array()
        .map(|values| values.iter().map(|v| v.as_str().unwrap()).collect())
        .unwrap_or_default()
}

/// The app saw exactly `expected` under `header`: these values, once each, no other.
#[track_caller]
fn assert_saw(echo: &Value, header: &str, expected: &[&str], what: &str) {
    assert_eq!(seen(echo, header), expected, "{what}: {header}: {echo}");
}

/// The app saw no role (no `X-Auth-Roles`, or an empty one).
#[track_caller]
fn assert_no_roles(echo: &Value, what: &str) {
    assert!(
        seen(echo, "x-auth-roles").iter().all(|r| r.is_empty()),
        "{what}: roles reached the app: {echo}"
    );
}

/// What a request to the app signs in with.
#[derive(Clone, Copy)]
enum Credential<'a> {
    Nothing,
    Cookie(&'a str),
    Bearer(&'a str),
}

impl Stack {
    /// A request to the app at `path` with `credential` and the client's own `X-Auth-*`
    /// claims in several spellings: `X-Auth-MFA: claimed` (and `1`, `yes`), user root, role
    /// admin.
    fn forged_claims(
        &self,
        path: &str,
        credential: Credential<'_>,
        claimed: &str,
    ) -> reqwest::RequestBuilder {
        let request = self
            .client
            .get(self.app_url(path))
            .header("X-Auth-MFA", claimed)
            .header("x-auth-mfa", "1")
            .header("X-Auth-Mfa", "yes")
            .header("X-Auth-User", "root")
            .header("X-Auth-Roles", "admin");
        match credential {
            Credential::Nothing => request,
            Credential::Cookie(cookie) => request.header(COOKIE, cookie),
            Credential::Bearer(token) => request.bearer_auth(token),
        }
    }

    /// The [`Stack::forged_claims`] request reaches the app, which sees authd's
    /// `X-Auth-MFA: expected` alone, whatever the client `claimed`; returns the echo.
    async fn mfa_seen_despite(
        &self,
        path: &str,
        credential: Credential<'_>,
        claimed: &str,
        expected: &str,
        what: &str,
    ) -> Value {
        let request = self.forged_claims(path, credential, claimed);
        let seen_by_app = echo(request.send().await.unwrap()).await;
        let what = format!("{what}, client said {claimed:?}");
        assert_saw(&seen_by_app, "x-auth-mfa", &[expected], &what);
        seen_by_app
    }
}

// ----- the second factor -----

/// A user's enrolled authenticator app, as the test holds it.
struct Authenticator {
    secret: Vec<u8>,
    /// The last step whose code authd took (the confirm's): a code is taken only for a
    /// later step, the current one ±1.
    last_step: u64,
    /// The recovery codes the confirm answered, not yet used.
    recovery_codes: Vec<String>,
    /// An access token of a login made before enrolment (`amr` `["pwd"]`).
    password_only_token: String,
}

impl Authenticator {
    /// The app of a key read off a page, no code of it used yet.
    fn of_key(base32: &str) -> Authenticator {
        let secret = totp::decode_base32(base32)
            .unwrap_or_else(|| panic!("the key on the page is not base32: {base32:?}"));
        Authenticator {
            secret,
            last_step: 0,
            recovery_codes: Vec::new(),
            password_only_token: String::new(),
        }
    }

    /// The next code authd will take: for the step after the last one used, or the
    /// current one when later. Waits (at most one step) when that step is not yet inside
    /// the current step's ±1 window.
    fn next_code(&mut self) -> String {
        loop {
            let now = totp::step_at(second_factor::now());
            let step = (self.last_step + 1).max(now);
            if step <= now + 1 {
                self.last_step = step;
                return totp::code_for_step(&self.secret, step);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Six digits that are no step's code anywhere near now.
    fn wrong_code(&self) -> String {
        let now = totp::step_at(second_factor::now());
        let near: Vec<String> = (now - 4..=now + 4)
            .map(|step| totp::code_for_step(&self.secret, step))
            .collect();
        ["000000", "111111", "222222", "333333", "444444"]
            .into_iter()
            .find(|code| !near.iter().any(|c| c == code))
            .unwrap()
            .to_owned()
    }

    fn take_recovery_code(&mut self) -> String {
        self.recovery_codes.pop().expect("a recovery code left")
    }
}

/// The value of the hidden (or any) input `name` in a page, unescaped.
fn input_value(html: &str, name: &str) -> Option<String> {
    let start = format!("name=\"{name}\" value=\"");
    let from = html.find(&start)? + start.len();
    let raw = &html[from..from + html[from..].find('"')?];
    Some(
        raw.replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// What the code page (the second step of a browser login) must and must not hold.
fn assert_code_page(html: &str, rd: &str) {
    assert!(html.contains("name=\"code\""), "a code input: {html}");
    assert!(html.contains("Authentication code"), "its label: {html}");
    assert!(
        input_value(html, "mfa_token").is_some_and(|t| !t.is_empty()),
        "a hidden mfa_token: {html}"
    );
    assert!(
        html.contains(&format!(
            "type=\"hidden\" name=\"rd\" value=\"{}\"",
            rd.replace('&', "&amp;")
        )),
        "rd carried: {html}"
    );
    assert!(
        !html.contains("name=\"password\""),
        "no password field: {html}"
    );
    assert!(!html.contains(PASSWORD), "the password echoed: {html}");
}

/// What the login form (first step) holds: username and password inputs, no code.
fn assert_login_form(html: &str) {
    assert!(html.contains("name=\"username\""), "{html}");
    assert!(html.contains("name=\"password\""), "{html}");
    assert!(!html.contains("name=\"code\""), "{html}");
    assert!(!html.contains("name=\"mfa_token\""), "{html}");
    assert!(!html.contains(PASSWORD), "the password echoed: {html}");
}

#[track_caller]
fn assert_no_cookie(response: &reqwest::Response, what: &str) {
    assert!(
        response.headers().get(SET_COOKIE).is_none(),
        "{what}: no cookie before the code: {:?}",
        response.headers()
    );
}

/// A login post answered with the plain login form (first step) and `status`, no cookie;
/// returns the page.
async fn assert_login_form_again(
    response: reqwest::Response,
    status: StatusCode,
    what: &str,
) -> String {
    assert_eq!(response.status(), status, "{what}");
    assert_no_cookie(&response, what);
    let html = response.text().await.unwrap();
    assert_login_form(&html);
    html
}

/// A code refused as wrong: `401`, no cookie.
#[track_caller]
fn assert_wrong_code(response: &reqwest::Response, what: &str) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    assert_no_cookie(response, what);
}

/// A login post refused by the throttle: `429` with `Retry-After`, no cookie, no password.
async fn assert_throttled(response: reqwest::Response, what: &str) {
    assert_eq!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "{what}: throttled"
    );
    assert_no_cookie(&response, what);
    assert!(
        response.headers().get("retry-after").is_some(),
        "{what}: {:?}",
        response.headers()
    );
    let html = response.text().await.unwrap();
    assert!(!html.contains(PASSWORD), "{what}: {html}");
}

impl Stack {
    /// Adds `username` and enrols TOTP for it through the API, as its user would with an
    /// authenticator app.
    async fn enrol(&self, username: &str) -> Authenticator {
        self.authd.app.add_user(username, &[]).await;
        let (access_token, enrolled) = self.authd.app.login_and_enrol(username).await;
        Authenticator {
            secret: enrolled.raw_secret(),
            last_step: enrolled.confirmed_step,
            recovery_codes: enrolled.recovery_codes,
            password_only_token: access_token,
        }
    }
}

/// authd's login form at `base`, posted as the browser's form posts it, with `rd` (no `rd`
/// field when empty; see [`Stack::login_form`]).
struct LoginForm<'s> {
    stack: &'s Stack,
    base: String,
    rd: String,
    /// The client address, as an `X-Forwarded-For` that authd believes (the test being one
    /// of its trusted proxies).
    from: Option<&'static str>,
}

impl LoginForm<'_> {
    /// The same form, posted from the client address `address`.
    fn from(self, address: &'static str) -> Self {
        LoginForm {
            from: Some(address),
            ..self
        }
    }

    /// `POST {base}/login` with `fields` and `rd`.
    async fn post(&self, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut fields = fields.to_vec();
        if !self.rd.is_empty() {
            fields.push(("rd", &self.rd));
        }
        let mut request = self
            .stack
            .client
            .post(format!("{}/login", self.base))
            .header(ACCEPT, BROWSER_ACCEPT)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(fields).unwrap());
        if let Some(from) = self.from {
            request = request.header("x-forwarded-for", from);
        }
        request.send().await.unwrap()
    }

    /// The first step: username and password.
    async fn password(&self, username: &str, password: &str) -> reqwest::Response {
        self.post(&[("username", username), ("password", password)])
            .await
    }

    /// The second step: the code page's form, `code` typed.
    async fn code(&self, mfa_token: &str, code: &str) -> reqwest::Response {
        self.post(&[("mfa_token", mfa_token), ("code", code)]).await
    }

    /// The first step of a browser login for an account with TOTP on: the password gets
    /// the code page (checked); returns its `mfa_token`.
    async fn code_page(&self, username: &str) -> String {
        let response = self.password(username, PASSWORD).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{username}: the code page"
        );
        assert_no_cookie(&response, "the code page");
        assert!(
            header(&response, "content-type").starts_with("text/html"),
            "{:?}",
            response.headers()
        );
        assert_eq!(header(&response, "cache-control"), "no-store");
        let html = response.text().await.unwrap();
        assert_code_page(&html, &self.rd);
        input_value(&html, "mfa_token").unwrap()
    }

    /// Signs in through both steps with `code`, returning the cookies.
    async fn sign_in_with_code(&self, username: &str, code: &str) -> Cookies {
        let mfa_token = self.code_page(username).await;
        let response = self.code(&mfa_token, code).await;
        signed_in(&response, &self.rd, &format!("{username}: code"))
    }
}

// ----- the checks, the same for both proxies -----

/// For each `$check: $nginx, $caddy`, the tests `$nginx` and `$caddy`: `$check` on a
/// [`Stack`] behind nginx and on one behind Caddy (skipped without the proxy).
macro_rules! behind_both_proxies {
    ($($check:ident: $nginx:ident, $caddy:ident;)*) => {
        $(
            #[tokio::test]
            async fn $nginx() {
                if let Some(stack) = Stack::start(Kind::Nginx).await {
                    $check(stack, Kind::Nginx).await;
                }
            }

            #[tokio::test]
            async fn $caddy() {
                if let Some(stack) = Stack::start(Kind::Caddy).await {
                    $check(stack, Kind::Caddy).await;
                }
            }
        )*
    };
}

behind_both_proxies! {
    protects_the_app: nginx_example_protects_the_app, caddy_example_protects_the_app;
    mfa_header_cannot_be_spoofed:
        nginx_passes_authd_mfa_header_never_the_clients,
        caddy_passes_authd_mfa_header_never_the_clients;
    login_form_second_step: nginx_login_form_second_step, caddy_login_form_second_step;
}

/// The shipped example keeps the app behind authd: no session, no app; the user and roles
/// the app sees are authd's; the login page sends the browser back; the silent refresh, a
/// foreign `rd`, logout; and the proxy fails closed when authd is down.
async fn protects_the_app(s: Stack, kind: Kind) {
    let proxy = format!("{kind:?}");
    let page = "/inbox/today?folder=a%2Fb&x=1";
    let original = s.app_url(page);

    // No credential, or a forged cookie: refused, and the app is never reached.
    let before = s.upstream.hits();
    let browser = s.app(Method::GET, page, None).await;
    assert_eq!(
        browser.status(),
        StatusCode::FOUND,
        "{kind:?}: browser to login"
    );
    assert_eq!(header(&browser, "location"), s.login_url_for(&original));
    let forged = s
        .app(Method::GET, page, Some("authd=eyJhbGciOiJub25lIn0.e30."))
        .await;
    assert_eq!(forged.status(), StatusCode::FOUND);
    assert_eq!(header(&forged, "location"), s.login_url_for(&original));
    let api_client = s
        .client
        .get(s.app_url(page))
        .header("x-auth-user", "root")
        .header("x-auth-roles", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        api_client.status(),
        StatusCode::UNAUTHORIZED,
        "{kind:?}: no redirect for APIs"
    );
    let post = s
        .client
        .post(s.app_url("/items"))
        .header(COOKIE, "authd=forged")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.upstream.hits(),
        before,
        "{kind:?}: the app was reached without a session"
    );

    // A bearer token: the app sees the user, and the client's own X-Auth-* are replaced.
    let token = s.authd.app.login("alice").await;
    let bearer = s
        .client
        .get(s.app_url("/api/me"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .header("x-auth-user", "root")
        .header("x-auth-roles", "admin")
        .header("x-auth-whatever", "forged")
        .send()
        .await
        .unwrap();
    let seen_by_app = echo(bearer).await;
    assert_saw(&seen_by_app, "x-auth-user", &["alice"], &proxy);
    assert_no_roles(&seen_by_app, &format!("{kind:?}: forged roles"));
    if kind == Kind::Caddy {
        // Caddy drops every X-Auth-* the client sent (nginx can only replace named ones).
        assert_saw(&seen_by_app, "x-auth-whatever", &[], &proxy);
    }
    assert!(!seen(&seen_by_app, "x-forwarded-for").is_empty());

    // The login page, reached through the redirect, brings the browser back with cookies.
    let login_page = s
        .client
        .get(header(&browser, "location"))
        .send()
        .await
        .unwrap();
    assert_eq!(login_page.status(), StatusCode::OK);
    let html = login_page.text().await.unwrap();
    let hidden_rd = original.replace('&', "&amp;");
    assert!(
        html.contains(&format!("name=\"rd\" value=\"{hidden_rd}\"")),
        "{html}"
    );
    let alice = s.sign_in("alice", &original).await;
    let seen_by_app = s.seen_by_app(page, &alice.both()).await;
    assert_saw(&seen_by_app, "x-auth-user", &["alice"], &proxy);
    assert_eq!(seen_by_app["path"], "/inbox/today");
    assert_eq!(seen_by_app["query"], "folder=a%2Fb&x=1");

    // State-changing requests with bodies are authorised too, and the body reaches the app.
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let response = s
            .client
            .request(method.clone(), s.app_url("/items/7"))
            .header(COOKIE, alice.access())
            .header(CONTENT_TYPE, "application/json")
            .body(r#"{"name":"seven"}"#)
            .send()
            .await
            .unwrap();
        let seen_by_app = echo(response).await;
        assert_eq!(seen_by_app["method"], method.as_str());
        assert_eq!(
            seen_by_app["body"], r#"{"name":"seven"}"#,
            "{kind:?} {method}"
        );
        assert_saw(&seen_by_app, "x-auth-user", &["alice"], &proxy);
    }
    // ... but not when a page of another site sends them with the browser's cookie.
    let before = s.upstream.hits();
    let cross_site = s
        .client
        .post(s.app_url("/items"))
        .header(COOKIE, alice.access())
        .header("origin", "https://evil.com")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN, "{kind:?}");
    assert_eq!(s.upstream.hits(), before);

    // ?role= is enforced: /admin/ needs the admin role.
    let root = s.sign_in("root", &s.app_url("/admin/")).await;
    let denied = s
        .app(Method::GET, "/admin/panel", Some(&alice.access()))
        .await;
    assert_eq!(
        denied.status(),
        StatusCode::FORBIDDEN,
        "{kind:?}: role enforced"
    );
    let allowed = s.seen_by_app("/admin/panel", &root.access()).await;
    assert_saw(&allowed, "x-auth-roles", &["admin"], &proxy);

    // An expired access cookie (the browser has dropped it) with a valid refresh cookie:
    // the app sends the browser to the login page, which refreshes silently and sends it
    // straight back.
    let renewed = s.refresh_silently(page, &alice, &proxy).await;
    let seen_by_app = s.seen_by_app(page, &renewed.access()).await;
    assert_saw(&seen_by_app, "x-auth-user", &["alice"], &proxy);

    // Several tabs refresh with the same cookie at once: all get in, the session lives.
    let cookie = renewed.refresh();
    let (one, two, three) = tokio::join!(
        s.login_page(&original, &cookie),
        s.login_page(&original, &cookie),
        s.login_page(&original, &cookie),
    );
    let tabs = [
        Cookies::from(&one),
        Cookies::from(&two),
        Cookies::from(&three),
    ];
    for response in [&one, &two, &three] {
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{kind:?}: grace");
    }
    for tab in &tabs {
        let seen_by_app = s.seen_by_app(page, &tab.access()).await;
        assert_saw(&seen_by_app, "x-auth-user", &["alice"], "a tab");
    }
    let rotated: Vec<&Cookies> = tabs.iter().filter(|t| t.has("authd_refresh")).collect();
    assert_eq!(rotated.len(), 1, "exactly one rotation");
    let later = s.login_page(&original, &rotated[0].refresh()).await;
    assert_eq!(
        later.status(),
        StatusCode::SEE_OTHER,
        "the session still lives"
    );
    let latest = Cookies::from(&later);

    // rd to a foreign or look-alike domain: refused, no redirect.
    for rd in [
        "https://evil.com/",
        "http://evil-example.com/",
        "//evil.com/",
    ] {
        let response = s.login_page(rd, "").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{rd}");
        assert!(response.headers().get(LOCATION).is_none());
    }
    if kind == Kind::Nginx {
        // nginx builds X-Original-URL from the Host the client sent: a foreign one is
        // not offered as rd.
        let response = s
            .client
            .get(format!("http://evil-example.com:{}/x", s.proxy.app_port))
            .header(ACCEPT, BROWSER_ACCEPT)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(header(&response, "location"), s.authd_url("/login"));
    }

    // Log out: the next request with the old cookies is refused.
    let logout = s
        .client
        .post(s.authd_url("/logout"))
        .header(COOKIE, latest.both())
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let before = s.upstream.hits();
    let revoked = s.app(Method::GET, page, Some(&latest.access())).await;
    assert_eq!(
        revoked.status(),
        StatusCode::FOUND,
        "{kind:?}: revoked session refused"
    );
    assert_eq!(s.upstream.hits(), before);

    // The login host in the example proxies authd's pages, cookies included.
    let auth_host = s.login_host();
    let page_via_proxy = s
        .client
        .get(format!("{auth_host}/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(page_via_proxy.status(), StatusCode::OK);
    let login_via_proxy = s
        .login_form(auth_host, "")
        .password("alice", PASSWORD)
        .await;
    let cookies = session_cookies(&login_via_proxy, &proxy);

    // authd unreachable: the proxy fails closed.
    let mut s = s;
    s.authd.app.shut_down().await;
    let before = s.upstream.hits();
    let down = s.app(Method::GET, page, Some(&cookies.access())).await;
    assert!(
        down.status().is_server_error(),
        "{kind:?}: {}",
        down.status()
    );
    assert_eq!(
        s.upstream.hits(),
        before,
        "{kind:?}: the app was reached without authd"
    );
}

// ----- the second factor behind the proxies -----

/// The app learns whether a session used a second factor from `X-Auth-MFA`, which only
/// authd may set: whatever the client sends under that name is replaced by authd's answer
/// (exactly one value), and without a session the app is never reached.
async fn mfa_header_cannot_be_spoofed(s: Stack, kind: Kind) {
    use Credential::{Bearer, Cookie, Nothing};
    let proxy = format!("{kind:?}");
    let page = "/reports?year=2024";
    let original = s.app_url(page);

    // Without a session: refused (401 for an API client, the login page for a browser),
    // and the app never sees the client's header.
    let before = s.upstream.hits();
    let api = s.forged_claims(page, Nothing, "true").send().await.unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED, "{kind:?}");
    let browser = s
        .forged_claims(page, Nothing, "true")
        .header(ACCEPT, BROWSER_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), StatusCode::FOUND, "{kind:?}");
    assert_eq!(header(&browser, "location"), s.login_url_for(&original));
    let bad_cookie = s
        .forged_claims(page, Cookie("authd=forged"), "true")
        .header(ACCEPT, BROWSER_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_cookie.status(), StatusCode::FOUND, "{kind:?}");
    let body = bad_cookie.text().await.unwrap();
    assert!(!body.contains("x-auth-mfa"), "{kind:?}: {body}");
    assert_eq!(
        s.upstream.hits(),
        before,
        "{kind:?}: the app was reached without a session"
    );

    // A session whose login had no second factor (alice has none): "false", never the
    // client's value, never both.
    let alice = s.sign_in("alice", &original).await;
    for claimed in ["true", "false", ""] {
        let seen_by_app = s
            .mfa_seen_despite(page, Cookie(&alice.access()), claimed, "false", &proxy)
            .await;
        assert_saw(&seen_by_app, "x-auth-user", &["alice"], &proxy);
    }
    let alice_bearer = s.authd.app.login("alice").await;
    let bearer = Bearer(alice_bearer["access_token"].as_str().unwrap());
    s.mfa_seen_despite(page, bearer, "true", "false", &format!("{kind:?} bearer"))
        .await;

    // carol has TOTP on. A session from before she enrolled did not use it: "false".
    let mut carol = s.enrol("carol").await;
    let before_enrolment = Bearer(&carol.password_only_token);
    let what = format!("{kind:?}: a login before enrolment used no code");
    let seen_by_app = s
        .mfa_seen_despite(page, before_enrolment, "true", "false", &what)
        .await;
    assert_saw(&seen_by_app, "x-auth-user", &["carol"], &what);

    // Her browser login with a code: "true", whatever the client claims.
    let form = s.login_form(s.authd_url(""), &original);
    let with_code = form.sign_in_with_code("carol", &carol.next_code()).await;
    for claimed in ["false", "true", "0"] {
        let seen_by_app = s
            .mfa_seen_despite(page, Cookie(&with_code.access()), claimed, "true", &proxy)
            .await;
        assert_saw(&seen_by_app, "x-auth-user", &["carol"], &proxy);
        assert_no_roles(&seen_by_app, &proxy);
    }

    // A recovery code counts as a second factor too.
    let recovery = carol.take_recovery_code();
    let with_recovery = form.sign_in_with_code("carol", &recovery).await;
    let what = format!("{kind:?} recovery code");
    s.mfa_seen_despite(
        page,
        Cookie(&with_recovery.access()),
        "false",
        "true",
        &what,
    )
    .await;

    // The silent refresh at the login page keeps it: the renewed access cookie says "true".
    let renewed = s.refresh_silently(page, &with_code, &proxy).await;
    let what = format!("{kind:?} after a refresh");
    s.mfa_seen_despite(page, Cookie(&renewed.access()), "false", "true", &what)
        .await;
    // ... and alice's stays "false".
    let renewed = s.refresh_silently(page, &alice, &proxy).await;
    s.mfa_seen_despite(page, Cookie(&renewed.access()), "true", "false", &what)
        .await;

    // The underscore spellings, which CGI-style apps (PHP, WSGI, Rack) read as the same
    // HTTP_X_AUTH_MFA / HTTP_X_AUTH_USER: nginx drops them, the Caddyfile removes them.
    let seen_by_app = echo(
        s.client
            .get(s.app_url(page))
            .header(COOKIE, alice.access())
            .header("X_Auth_MFA", "true")
            .header("x_auth_user", "root")
            .header("X_AUTH_ROLES", "admin")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let smuggled: Vec<&String> = seen_by_app["headers"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|name| name.contains('_') && name.replace('_', "-").starts_with("x-auth-"))
        .collect();
    assert!(
        smuggled.is_empty(),
        "{kind:?}: the client's {smuggled:?} reached the app: {seen_by_app}"
    );
    assert_saw(&seen_by_app, "x-auth-mfa", &["false"], &proxy);
    assert_saw(&seen_by_app, "x-auth-user", &["alice"], &proxy);

    // The admin location asks authd with ?role=admin: the header is authd's there too.
    let root = s.sign_in("root", &s.app_url("/admin/")).await;
    let seen_by_app = echo(
        s.client
            .get(s.app_url("/admin/panel"))
            .header(COOKIE, root.access())
            .header("X-Auth-MFA", "true")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let what = format!("{kind:?} /admin/");
    assert_saw(&seen_by_app, "x-auth-mfa", &["false"], &what);
    assert_saw(&seen_by_app, "x-auth-roles", &["admin"], &what);
}

/// The login form's second step, over plain HTTP through the proxy's login host: the code
/// page, wrong codes, dead and unknown `mfa_token`s, the throttle.
async fn login_form_second_step(s: Stack, kind: Kind) {
    let mut carol = s.enrol("carol").await;
    let page = "/mail?box=in&x=1";
    let rd = s.app_url(page);
    // The login host of the example, in front of authd.
    let form = s.login_form(s.login_host(), &rd);
    let what = |step: &str| format!("{kind:?}: {step}");

    // A wrong password: the plain login form again, as for an account without TOTP.
    let wrong_password = form.password("carol", "not it").await;
    let status = StatusCode::UNAUTHORIZED;
    assert_login_form_again(wrong_password, status, &what("a wrong password")).await;

    // The right password: the code page (checked by `code_page`), no cookie.
    let token = form.code_page("carol").await;

    // A wrong code: the code page again with 401, the same mfa_token, still no cookie.
    let wrong = form.code(&token, &carol.wrong_code()).await;
    assert_wrong_code(&wrong, &what("a wrong code"));
    let html = wrong.text().await.unwrap();
    assert_code_page(&html, &rd);
    assert_eq!(
        input_value(&html, "mfa_token").as_deref(),
        Some(token.as_str())
    );
    assert!(html.contains("role=\"alert\""), "a message: {html}");

    // An unknown mfa_token: the login form, 400, no cookie.
    for unknown in ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "x", ""] {
        let response = form.code(unknown, &carol.wrong_code()).await;
        let what = what(&format!("an unknown mfa_token {unknown:?}"));
        assert_login_form_again(response, StatusCode::BAD_REQUEST, &what).await;
    }

    // The right code: 303 to rd with both cookies; the app sees a second factor.
    let code = carol.next_code();
    let cookies = signed_in(&form.code(&token, &code).await, &rd, &what("the code"));
    let seen_by_app = s.seen_by_app(page, &cookies.access()).await;
    assert_saw(&seen_by_app, "x-auth-user", &["carol"], &what("the code"));
    assert_saw(&seen_by_app, "x-auth-mfa", &["true"], &what("the code"));

    // The used mfa_token is dead: the login form, 400, no cookie.
    let reused = form.code(&token, &code).await;
    assert_login_form_again(reused, StatusCode::BAD_REQUEST, &what("a used mfa_token")).await;

    // A recovery code as typed by a person (upper case, spaces) signs in too.
    let recovery = carol.take_recovery_code();
    let token = form.code_page("carol").await;
    let typed = format!(" {} ", recovery.to_uppercase().replace('-', " "));
    let response = form.code(&token, &typed).await;
    let cookies = signed_in(&response, &rd, &what("a recovery code"));
    let seen_by_app = s.seen_by_app(page, &cookies.access()).await;
    assert_saw(
        &seen_by_app,
        "x-auth-mfa",
        &["true"],
        &what("a recovery code"),
    );

    // ... once: the second time it is a wrong code (failure 1 since that login). A
    // second code page is kept open meanwhile, as in another tab.
    let token = form.code_page("carol").await;
    let other_tab = form.code_page("carol").await;
    let again = form.code(&token, &recovery).await;
    assert_wrong_code(&again, &what("a used recovery code"));

    // Wrong codes count against the token and as failed logins.
    for attempt in 2..=5 {
        let response = form.code(&token, &carol.wrong_code()).await;
        assert_wrong_code(&response, &what(&format!("wrong code {attempt}")));
    }
    // The sixth code on the token it killed: the login form, 400 (API.md).
    let recovery = carol.take_recovery_code();
    let dead = form.code(&token, &recovery).await;
    assert_login_form_again(dead, StatusCode::BAD_REQUEST, &what("a dead mfa_token")).await;

    // The other tab's token is alive, but five failures throttle the pair: 429, even with
    // a right code; still no cookie, no password.
    let throttled = form.code(&other_tab, &recovery).await;
    assert_throttled(throttled, &what("the other tab")).await;
    // The whole login is throttled for this pair, the password step included.
    let password = form.password("carol", PASSWORD).await;
    assert_throttled(password, &what("the password")).await;
}

/// An `mfa_token` dies after five wrong codes: the sixth post (from another address, so
/// that the throttle of the first is not what answers) gets the login form with 400, even
/// with a right code, and that code is not used up.
#[tokio::test]
async fn an_mfa_token_dies_after_five_wrong_codes() {
    let Some(s) = Stack::start(Kind::Nginx).await else {
        return;
    };
    let mut carol = s.enrol("carol").await;
    let rd = s.app_url("/");
    // authd directly: it believes X-Forwarded-For from 127.0.0.1 (a trusted proxy).
    let first = s.login_form(s.authd_url(""), &rd).from("198.51.100.1");
    let second = s.login_form(s.authd_url(""), &rd).from("198.51.100.2");
    let token = first.code_page("carol").await;
    for attempt in 1..=5 {
        let wrong = first.code(&token, &carol.wrong_code()).await;
        assert_wrong_code(&wrong, &format!("wrong code {attempt}"));
    }
    let recovery = carol.take_recovery_code();
    let dead = second.code(&token, &recovery).await;
    let html = assert_login_form_again(dead, StatusCode::BAD_REQUEST, "a dead mfa_token").await;
    assert!(
        html.contains(&format!("name=\"rd\" value=\"{rd}\"")),
        "rd kept: {html}"
    );

    // The recovery code offered on the dead token still works.
    let token = second.code_page("carol").await;
    let signed_in_with_it = second.code(&token, &recovery).await;
    signed_in(
        &signed_in_with_it,
        &rd,
        "the recovery code offered on a dead token",
    );
}

// ----- a real browser -----

/// A headless Chromium driven over the DevTools protocol (a minimal WebSocket client over a
/// plain TCP stream, so no browser-automation crate is needed). Blocking: run it off the
/// async runtime.
mod chromium {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    /// The Chromium binary, if one is installed.
    pub fn binary() -> Option<PathBuf> {
        ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .map(PathBuf::from)
            .find(|candidate| {
                Command::new(candidate)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success())
            })
    }

    pub struct Browser {
        child: Child,
        socket: TcpStream,
        session: String,
        next_id: u64,
    }

    impl Drop for Browser {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Browser {
        /// Starts Chromium with `*.example.com` resolving to 127.0.0.1 and opens one tab.
        /// The plain-http `secure_origins` are treated as HTTPS would be: a browser sends
        /// `Sec-Fetch-Site` only to secure contexts, and the login page's own form needs it
        /// (its `Referrer-Policy: no-referrer` makes the browser send `Origin: null`).
        pub fn start(binary: &Path, profile: &Path, secure_origins: &[String]) -> Browser {
            let mut child = Command::new(binary)
                .args([
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--remote-debugging-port=0",
                    "--host-resolver-rules=MAP *.example.com 127.0.0.1",
                    "--window-size=800,600",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg(format!(
                    "--unsafely-treat-insecure-origin-as-secure={}",
                    secure_origins.join(",")
                ))
                .arg("about:blank")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let stderr = child.stderr.take().unwrap();
            let mut lines = BufReader::new(stderr).lines();
            let url = loop {
                let line = lines
                    .next()
                    .expect("chromium exited before printing its DevTools address")
                    .unwrap();
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    break url.trim().to_owned();
                }
            };
            // Keep draining stderr so Chromium never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            let rest = url.strip_prefix("ws://").unwrap();
            let (host, path) = rest.split_once('/').unwrap();
            let mut socket = TcpStream::connect(host).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            write!(
                socket,
                "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            )
            .unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                socket.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            assert!(head.starts_with(b"HTTP/1.1 101"), "no WebSocket upgrade");
            let mut browser = Browser {
                child,
                socket,
                session: String::new(),
                next_id: 0,
            };
            let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
            let attached = browser.call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            );
            browser.session = attached["sessionId"].as_str().unwrap().to_owned();
            browser.call("Page.enable", json!({}));
            browser
        }

        /// Sends one command (to the tab once attached) and returns its result.
        pub fn call(&mut self, method: &str, params: Value) -> Value {
            self.next_id += 1;
            let id = self.next_id;
            let mut message = json!({"id": id, "method": method, "params": params});
            if !self.session.is_empty() {
                message["sessionId"] = json!(self.session);
            }
            self.send(&message.to_string());
            loop {
                let reply: Value = serde_json::from_str(&self.receive()).unwrap();
                if reply["id"] == id {
                    assert!(reply["error"].is_null(), "{method}: {reply}");
                    return reply["result"].clone();
                }
            }
        }

        /// Evaluates `expression` in the page and returns its value.
        pub fn eval(&mut self, expression: &str) -> Value {
            let result = self.call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            );
            result["result"]["value"].clone()
        }

        pub fn navigate(&mut self, url: &str) {
            self.call("Page.navigate", json!({"url": url}));
        }

        /// Waits until the tab has fully loaded a page whose URL starts with `prefix`.
        pub fn wait_for_url(&mut self, prefix: &str) -> String {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let state = self.eval("[location.href, document.readyState]");
                let href = state[0].as_str().unwrap_or_default().to_owned();
                if href.starts_with(prefix) && state[1] == "complete" {
                    return href;
                }
                if Instant::now() > deadline {
                    let text = self.eval("document.body ? document.body.innerText : ''");
                    panic!("the browser stayed at {href} instead of reaching {prefix}: {text}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        /// Waits until the tab has fully loaded a page on which `condition` (a JavaScript
        /// expression) is true.
        pub fn wait_for(&mut self, condition: &str, what: &str) {
            let deadline = Instant::now() + Duration::from_secs(20);
            let expression = format!("document.readyState === 'complete' && !!({condition})");
            loop {
                if self.eval(&expression) == true {
                    return;
                }
                if Instant::now() > deadline {
                    let state =
                        self.eval("[location.href, document.body ? document.body.innerText : '']");
                    panic!("the browser never showed {what}: {state}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        /// A PNG of the tab.
        pub fn screenshot(&mut self) -> Vec<u8> {
            use base64::Engine as _;
            let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
            base64::engine::general_purpose::STANDARD
                .decode(shot["data"].as_str().unwrap())
                .unwrap()
        }

        /// Emulates a screen `width`×`height` CSS pixels wide at `scale` device pixels per
        /// CSS pixel (a phone: `mobile`, which honours the page's viewport meta tag).
        pub fn set_viewport(&mut self, width: u32, height: u32, scale: f64, mobile: bool) {
            self.call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile}),
            );
            // The page lays itself out again at the new size before anything is measured.
            self.call(
                "Runtime.evaluate",
                json!({
                    "expression": "new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))",
                    "awaitPromise": true,
                }),
            );
        }

        /// A PNG of the whole page, below the fold too.
        pub fn full_page_screenshot(&mut self) -> Vec<u8> {
            use base64::Engine as _;
            let metrics = self.call("Page.getLayoutMetrics", json!({}));
            let size = &metrics["cssContentSize"];
            let shot = self.call(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
                }),
            );
            base64::engine::general_purpose::STANDARD
                .decode(shot["data"].as_str().unwrap())
                .unwrap()
        }

        /// Types `text` into the element `selector` as a keyboard would (focus, then the
        /// characters).
        pub fn type_into(&mut self, selector: &str, text: &str) {
            let focused = self.eval(&format!(
                "(() => {{ const e = document.querySelector({}); if (!e) return false;                  e.focus(); e.value = ''; return document.activeElement === e; }})()",
                serde_json::to_string(selector).unwrap()
            ));
            assert_eq!(focused, true, "no {selector} to type into");
            self.call("Input.insertText", json!({"text": text}));
            let typed = self.eval(&format!(
                "document.querySelector({}).value",
                serde_json::to_string(selector).unwrap()
            ));
            assert_eq!(typed, text, "what {selector} holds");
        }

        /// Clicks the middle of the element `selector` with the mouse, scrolling it into
        /// view first; fails when something else is on top of it there.
        pub fn click(&mut self, selector: &str) {
            let at = self.eval(&format!(
                "(() => {{ const e = document.querySelector({}); if (!e) return null;                  e.scrollIntoView({{block: 'center', inline: 'center'}});                  const r = e.getBoundingClientRect();                  const x = r.left + r.width / 2, y = r.top + r.height / 2;                  const top = document.elementFromPoint(x, y);                  return {{x, y, hit: !!top && (top === e || e.contains(top))}}; }})()",
                serde_json::to_string(selector).unwrap()
            ));
            assert!(at.is_object(), "no {selector} to click");
            assert_eq!(
                at["hit"], true,
                "{selector} is covered where it is clicked: {at}"
            );
            for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
                self.call(
                    "Input.dispatchMouseEvent",
                    json!({"type": kind, "x": at["x"], "y": at["y"], "button": "left", "clickCount": 1}),
                );
            }
        }

        /// The browser's cookies for `url`, `name` → value (`HttpOnly` ones too).
        pub fn cookies(&mut self, url: &str) -> std::collections::HashMap<String, String> {
            let cookies = self.call("Network.getCookies", json!({"urls": [url]}));
            cookies["cookies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap().to_owned(),
                        c["value"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        }

        fn send(&mut self, text: &str) {
            let payload = text.as_bytes();
            let mut frame = vec![0x81u8];
            match payload.len() {
                len @ 0..=125 => frame.push(0x80 | len as u8),
                len @ 126..=65535 => {
                    frame.push(0x80 | 126);
                    frame.extend_from_slice(&(len as u16).to_be_bytes());
                }
                len => {
                    frame.push(0x80 | 127);
                    frame.extend_from_slice(&(len as u64).to_be_bytes());
                }
            }
            let mask = [0x5a, 0x3c, 0x96, 0x0f];
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            self.socket.write_all(&frame).unwrap();
        }

        /// The next complete text message (server frames are unmasked).
        fn receive(&mut self) -> String {
            let mut message = Vec::new();
            loop {
                let mut head = [0u8; 2];
                self.socket.read_exact(&mut head).unwrap();
                let fin = head[0] & 0x80 != 0;
                let opcode = head[0] & 0x0f;
                let len = match head[1] & 0x7f {
                    126 => {
                        let mut n = [0u8; 2];
                        self.socket.read_exact(&mut n).unwrap();
                        u64::from(u16::from_be_bytes(n))
                    }
                    127 => {
                        let mut n = [0u8; 8];
                        self.socket.read_exact(&mut n).unwrap();
                        u64::from_be_bytes(n)
                    }
                    n => u64::from(n),
                };
                let mut payload = vec![0u8; usize::try_from(len).unwrap()];
                self.socket.read_exact(&mut payload).unwrap();
                match opcode {
                    0x8 => panic!("Chromium closed the DevTools connection"),
                    0x9 | 0xA => continue,
                    _ => message.extend_from_slice(&payload),
                }
                if fin {
                    return String::from_utf8(message).unwrap();
                }
            }
        }
    }
}

/// What a browser test starts from: a headless Chromium to start off the async runtime
/// (in `spawn_blocking`), with its own profile, the stack's two hosts treated as secure
/// origins.
struct BrowserLaunch {
    binary: PathBuf,
    profile: tempfile::TempDir,
    origins: [String; 2],
}

impl BrowserLaunch {
    fn start(&self) -> chromium::Browser {
        chromium::Browser::start(&self.binary, self.profile.path(), &self.origins)
    }
}

/// A stack behind nginx and a Chromium to browse it; `None` (skip, with a note) without
/// Chromium or nginx.
async fn browser_stack() -> Option<(Stack, BrowserLaunch)> {
    let Some(binary) = chromium::binary() else {
        eprintln!("skipping the headless-browser check: Chromium is not installed");
        return None;
    };
    let s = Stack::start(Kind::Nginx).await?;
    let launch = BrowserLaunch {
        binary,
        profile: tempfile::tempdir().unwrap(),
        origins: [s.app_url(""), s.authd_url("")],
    };
    Some((s, launch))
}

/// The screenshot `name` under `target/tmp/`.
fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// The screenshots `names` a test is about to take, any left by an earlier run removed.
fn fresh_screenshots(names: &[&str]) -> Vec<PathBuf> {
    let paths: Vec<PathBuf> = names.iter().map(|name| screenshot_path(name)).collect();
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    paths
}

/// Each screenshot was taken (a PNG); says where on stderr.
fn assert_screenshots(paths: &[PathBuf]) {
    for path in paths {
        let png = std::fs::read(path).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{}", path.display());
        eprintln!("screenshot: {}", path.display());
    }
}

/// authd's pages and the app as a person uses them in the browser.
impl chromium::Browser {
    /// Goes to `url` signed out and waits to be sent to the login page, whose URL starts
    /// with `login`; returns its URL.
    fn visit_signed_out(&mut self, url: &str, login: &str) -> String {
        self.navigate(url);
        self.wait_for_url(login)
    }

    /// Signs in through the login form: types `username` and the password, clicks the
    /// button.
    fn submit_password(&mut self, username: &str) {
        self.wait_for("document.getElementById('password')", "the login form");
        self.type_into("#username", username);
        self.type_into("#password", PASSWORD);
        self.click("button[type=submit]");
    }

    /// Waits for the code page, the second step of a login with TOTP on.
    fn wait_for_code_page(&mut self) {
        self.wait_for("document.getElementById('code')", "the code page");
    }

    /// Types `code` on the code page and clicks the button.
    fn submit_code(&mut self, code: &str) {
        self.type_into("#code", code);
        self.click("button[type=submit]");
    }

    /// Waits to land on the app's `url`; returns where the browser is and what the app
    /// echoed (the page is the echo's JSON).
    fn app_echo(&mut self, url: &str) -> (String, Value) {
        let landed = self.wait_for_url(url);
        let body = self.eval("document.body.innerText");
        let echo = serde_json::from_str(body.as_str().unwrap())
            .unwrap_or_else(|_| panic!("not the app's echo at {landed}: {body}"));
        (landed, echo)
    }

    /// Saves what the window shows as the screenshot `name`.
    fn save_screenshot(&mut self, name: &str) {
        std::fs::write(screenshot_path(name), self.screenshot()).unwrap();
    }

    /// Saves the whole page as the screenshot `name`.
    fn save_full_page(&mut self, name: &str) {
        std::fs::write(screenshot_path(name), self.full_page_screenshot()).unwrap();
    }

    /// A desktop window, 1280×900.
    fn desktop(&mut self) {
        self.set_viewport(1280, 900, 1.0, false);
    }

    /// How wide the page is against the window ([`WIDTHS`]) on a phone 390 CSS pixels wide
    /// (saved as `phone_shot`) and at 200 % zoom of a 1280-pixel window (saved as
    /// `zoom_shot`, if named); back on the desktop after.
    fn phone_and_zoom_widths(&mut self, phone_shot: &str, zoom_shot: Option<&str>) -> [Value; 2] {
        self.set_viewport(390, 844, 2.0, true);
        let phone = self.eval(WIDTHS);
        self.save_full_page(phone_shot);
        self.set_viewport(640, 450, 2.0, false);
        let zoom = self.eval(WIDTHS);
        if let Some(name) = zoom_shot {
            self.save_full_page(name);
        }
        self.desktop();
        [phone, zoom]
    }
}

/// The login flow in a real browser, through nginx: the app's host sends the browser to the
/// login page on another host, the user signs in with the form, and the browser lands back
/// on the app with its session cookies. Optional: skipped (with a note) without Chromium.
/// The login page's screenshot is kept as `target/tmp/authd-login-page.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_signs_in_through_nginx_and_comes_back() {
    let Some((s, launch)) = browser_stack().await else {
        return;
    };
    let app = s.app_url("/inbox?folder=a%2Fb");
    let login_prefix = s.authd_url("/login?rd=");
    let shots = fresh_screenshots(&["authd-login-page.png"]);

    let (landed, seen_by_app) = tokio::task::spawn_blocking(move || {
        let mut browser = launch.start();
        browser.visit_signed_out(&app, &login_prefix);
        browser.save_screenshot("authd-login-page.png");
        browser.submit_password("alice");
        browser.app_echo(&app)
    })
    .await
    .unwrap();

    assert_eq!(landed, s.app_url("/inbox?folder=a%2Fb"));
    assert_saw(&seen_by_app, "x-auth-user", &["alice"], "signed in");
    assert_screenshots(&shots);
}

/// In the browser: what the code page holds.
const CODE_PAGE: &str = "({href: location.href,\
    html: document.documentElement.outerHTML,\
    label: document.querySelector('label[for=code]').textContent,\
    token: document.querySelector('input[name=mfa_token]').value,\
    tokenType: document.querySelector('input[name=mfa_token]').type,\
    rd: document.querySelector('input[name=rd]').value,\
    passwordInputs: document.querySelectorAll('input[type=password]').length,\
    cookies: document.cookie})";

/// A user with TOTP signs in through nginx in a real browser: the app's host sends the
/// browser to the login page, the password leads to the code page, a code from the
/// authenticator finishes the login, and the browser lands back on the app, which sees the
/// user and `X-Auth-MFA: true`. Optional: skipped (with a note) without Chromium.
/// Screenshots: `target/tmp/authd-mfa-code-page.png` and `target/tmp/authd-mfa-signed-in.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_signs_in_with_a_code_through_nginx() {
    let Some((s, launch)) = browser_stack().await else {
        return;
    };
    // Enrolled through the API before the browser starts, as from a phone.
    let mut carol = s.enrol("carol").await;
    let app = s.app_url("/mail?box=in%2Fbox");
    let login_prefix = s.authd_url("/login?rd=");
    let shots = fresh_screenshots(&["authd-mfa-code-page.png", "authd-mfa-signed-in.png"]);

    let expected_rd = app.clone();
    let (code_page, landed, seen_by_app) = tokio::task::spawn_blocking(move || {
        let mut browser = launch.start();
        browser.visit_signed_out(&app, &login_prefix);
        browser.submit_password("carol");
        browser.wait_for_code_page();
        let code_page = browser.eval(CODE_PAGE);
        browser.save_screenshot("authd-mfa-code-page.png");
        // What the authenticator app shows right now.
        browser.submit_code(&carol.next_code());
        let (landed, seen_by_app) = browser.app_echo(&app);
        browser.save_screenshot("authd-mfa-signed-in.png");
        (code_page, landed, seen_by_app)
    })
    .await
    .unwrap();

    // The code page: on authd's login host, a code field with its label, the mfa_token and
    // rd hidden, no password anywhere, no cookie yet.
    assert!(
        code_page["href"]
            .as_str()
            .unwrap()
            .starts_with(&s.authd_url("/login")),
        "{code_page}"
    );
    assert_eq!(code_page["label"], "Authentication code", "{code_page}");
    assert_eq!(code_page["tokenType"], "hidden");
    assert!(!code_page["token"].as_str().unwrap().is_empty());
    assert_eq!(code_page["rd"], expected_rd.as_str());
    assert_eq!(code_page["passwordInputs"], 0);
    assert!(
        !code_page["html"].as_str().unwrap().contains(PASSWORD),
        "the password on the code page"
    );
    assert_eq!(code_page["cookies"], "", "no cookie before the code");

    // Back on the app, signed in with a second factor.
    assert_eq!(landed, expected_rd);
    assert_saw(&seen_by_app, "x-auth-user", &["carol"], "signed in");
    assert_saw(&seen_by_app, "x-auth-mfa", &["true"], "signed in");
    assert_eq!(seen_by_app["path"], "/mail");
    assert_eq!(seen_by_app["query"], "box=in%2Fbox");
    // The app's host got the access cookie, never the host-only refresh cookie.
    let cookie = seen(&seen_by_app, "cookie").join("; ");
    assert!(cookie.contains("authd="), "{cookie}");
    assert!(!cookie.contains("authd_refresh"), "{cookie}");
    assert_screenshots(&shots);
}

/// In the browser: the non-hidden form fields of the page that no non-empty
/// `<label for=…>` names, and the labels whose `for` names no element.
const UNLABELLED: &str = "({\
    inputs: [...document.querySelectorAll('input, select, textarea')].filter(e => e.type !== 'hidden').length,\
    unlabelled: [...document.querySelectorAll('input, select, textarea')]\
        .filter(e => e.type !== 'hidden')\
        .filter(e => !e.id || ![...document.querySelectorAll('label')]\
            .some(l => l.htmlFor === e.id && l.textContent.trim() !== ''))\
        .map(e => e.outerHTML),\
    dangling: [...document.querySelectorAll('label[for]')]\
        .filter(l => !document.getElementById(l.htmlFor))\
        .map(l => l.outerHTML)})";

/// In the browser: how wide the page is against the window (no horizontal scrolling when
/// `scroll <= client`).
const WIDTHS: &str = "({scroll: document.documentElement.scrollWidth,\
    client: document.documentElement.clientWidth, inner: innerWidth})";

/// In the browser: the sessions table as shown.
const SESSIONS: &str = "({\
    rows: document.querySelectorAll('table tbody tr').length,\
    current: [...document.querySelectorAll('table tbody tr')]\
        .filter(r => r.innerText.includes('This session')).length,\
    end: [...document.querySelectorAll('form[action=\"/account/sessions/end\"] button')]\
        .filter(b => b.textContent.trim() === 'End').length})";

/// Whether a recovery code reads `xxxx-xxxx-xxxx` in lower-case base32.
fn is_recovery_code(code: &str) -> bool {
    let groups: Vec<&str> = code.split('-').collect();
    groups.len() == 3
        && groups.iter().all(|group| {
            group.len() == 4
                && group
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        })
}

/// The text of a page's state as read in the browser (`{text: document.body.innerText, …}`).
fn page_text(state: &Value) -> &str {
    state["text"].as_str().unwrap()
}

/// The key the enrolment page shows (its `secret`), without the spaces that group it for
/// reading.
fn key_shown(enrol: &Value) -> String {
    enrol["secret"]
        .as_str()
        .unwrap()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// A user manages their account in a real browser, on authd's login host: the account page
/// sends a signed-out browser to the login form and back; the user turns on two-factor
/// authentication by reading the key off the page (QR code beside it) and confirming with a
/// computed code, sees the ten recovery codes, signs out with the page's button, signs in
/// again with password and code, sees TOTP on, and ends their other session (an API login),
/// whose token `/v1/verify` then refuses. Every field has a label; neither a phone's width
/// nor 200 % zoom needs horizontal scrolling. Optional: skipped (with a note) without
/// Chromium. Screenshots under `target/tmp/`: `authd-account-desktop.png`,
/// `authd-account-enrol-desktop.png`, `authd-account-enrol-phone.png`,
/// `authd-account-codes.png`, `authd-account-phone.png`, `authd-account-zoom200.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_manages_its_account() {
    let Some((s, launch)) = browser_stack().await else {
        return;
    };
    s.authd.app.add_user("dave", &[]).await;
    // The other session: dave signed in through the API elsewhere.
    let other = s.authd.app.login("dave").await;
    let other_access = other["access_token"].as_str().unwrap().to_owned();
    let verify = |token: String| {
        s.authd
            .app
            .public_request(Method::GET, "/v1/verify")
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        verify(other_access.clone()).await.unwrap().status(),
        StatusCode::OK,
        "the other session before"
    );

    let account = s.authd_url("/account");
    let login_url = s.login_url_for(&account);
    let cookie_url = s.authd_url("/");
    let shots = fresh_screenshots(&[
        "authd-account-desktop.png",
        "authd-account-enrol-desktop.png",
        "authd-account-enrol-phone.png",
        "authd-account-codes.png",
        "authd-account-phone.png",
        "authd-account-zoom200.png",
    ]);

    let (page, to) = (account.clone(), login_url.clone());
    let saw = tokio::task::spawn_blocking(move || {
        let (account, login_url) = (page, to);
        let mut browser = launch.start();
        browser.desktop();

        // Signed out, the account page sends the browser to the login form, and the
        // login back to the account page.
        let to_login = browser.visit_signed_out(&account, &login_url);
        browser.submit_password("dave");
        let landed = browser.wait_for_url(&account);
        browser.wait_for("document.getElementById('enrol-password')", "the enrol form");
        let first = browser.eval(&format!(
            "({{text: document.body.innerText, labels: {UNLABELLED}, sessions: {SESSIONS}}})"
        ));
        browser.save_full_page("authd-account-desktop.png");
        let first_cookies = browser.cookies(&cookie_url);

        // Two-factor: the password starts the enrolment; the page shows a QR code and
        // the key, which the "app" reads. (The page's `Referrer-Policy: no-referrer` makes
        // Chromium send its own forms with `Origin: null` and `Sec-Fetch-Site:
        // same-origin`, as on the login page.)
        browser.type_into("#enrol-password", PASSWORD);
        browser.click("form[action='/account/totp'] button[type=submit]");
        browser.wait_for("document.getElementById('totp-secret')", "the enrolment page");
        let enrol = browser.eval(&format!(
            "({{href: location.href, html: document.documentElement.outerHTML,\
               secret: document.getElementById('totp-secret').textContent,\
               qr: !!document.querySelector('.qr svg[role=img][aria-label]'),\
               qrWidth: document.querySelector('.qr svg') ? \
                   document.querySelector('.qr svg').getBoundingClientRect().width : 0,\
               confirm: !!document.querySelector('form[action=\"/account/totp/confirm\"] #confirm-code'),\
               labels: {UNLABELLED}}})"
        ));
        browser.save_full_page("authd-account-enrol-desktop.png");
        let [enrol_phone, enrol_zoom] =
            browser.phone_and_zoom_widths("authd-account-enrol-phone.png", None);

        let mut app = Authenticator::of_key(&key_shown(&enrol));
        browser.type_into("#confirm-code", &app.next_code());
        browser.click("form[action='/account/totp/confirm'] button[type=submit]");
        browser.wait_for("document.getElementById('recovery-codes')", "the recovery codes");
        let codes = browser.eval(
            "({text: document.body.innerText,\
               codes: [...document.querySelectorAll('#recovery-codes li')]\
                   .map(li => li.textContent.trim())})",
        );
        browser.save_full_page("authd-account-codes.png");

        // Sign out with the page's button: the cookies go.
        browser.click("form#sign-out button[type=submit]");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut after_sign_out = browser.cookies(&cookie_url);
        while after_sign_out.contains_key("authd") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            after_sign_out = browser.cookies(&cookie_url);
        }
        // Whatever navigation the button started has settled.
        std::thread::sleep(Duration::from_millis(500));
        browser.wait_for("true", "a page after signing out");
        let signed_out_page =
            browser.eval("({href: location.href, text: document.body.innerText})");

        // Signing in again takes the password, then a code.
        let to_login_again = browser.visit_signed_out(&account, &login_url);
        browser.submit_password("dave");
        browser.wait_for_code_page();
        let code_page_href = browser.eval("location.href");
        browser.submit_code(&app.next_code());
        let landed_again = browser.wait_for_url(&account);
        browser.wait_for("document.getElementById('codes-password')", "TOTP on");
        let on = browser.eval(&format!(
            "({{text: document.body.innerText,\
               enrolForm: !!document.getElementById('enrol-password'),\
               labels: {UNLABELLED}, sessions: {SESSIONS}}})"
        ));
        let second_cookies = browser.cookies(&cookie_url);

        // End the other session with its button.
        browser.click("form[action='/account/sessions/end'] button[type=submit]");
        browser.wait_for(
            "document.body.innerText.includes('The session has ended.')",
            "the session ended",
        );
        let ended = browser.eval(&format!(
            "({{href: location.href, text: document.body.innerText,\
               labels: {UNLABELLED}, sessions: {SESSIONS}}})"
        ));
        let [phone, zoom] = browser
            .phone_and_zoom_widths("authd-account-phone.png", Some("authd-account-zoom200.png"));

        json!({
            "to_login": to_login, "landed": landed, "first": first,
            "first_access": first_cookies.get("authd"),
            "enrol": enrol, "enrol_phone": enrol_phone, "enrol_zoom": enrol_zoom,
            "codes": codes, "after_sign_out": after_sign_out,
            "signed_out_page": signed_out_page, "to_login_again": to_login_again,
            "code_page_href": code_page_href, "landed_again": landed_again, "on": on,
            "second_access": second_cookies.get("authd"),
            "ended": ended, "phone": phone, "zoom": zoom,
        })
    })
    .await
    .unwrap();

    // To the login form and back.
    assert_eq!(saw["to_login"], login_url.as_str());
    assert_eq!(saw["landed"], account.as_str());
    let first = &saw["first"];
    assert!(page_text(first).contains("Signed in as dave"), "{first}");
    assert!(
        page_text(first).contains("Off."),
        "TOTP off at first: {first}"
    );
    // Both sessions listed, this one marked, the other with its End button.
    assert_eq!(
        first["sessions"],
        json!({"rows": 2, "current": 1, "end": 1}),
        "{first}"
    );

    // The enrolment page: QR code, key, confirm form; the password not echoed.
    let enrol = &saw["enrol"];
    let html = enrol["html"].as_str().unwrap();
    assert!(
        !html.contains(PASSWORD),
        "the password on the enrolment page"
    );
    assert_eq!(enrol["qr"], true, "an inline, labelled SVG QR code");
    assert!(
        enrol["qrWidth"].as_f64().unwrap() >= 150.0,
        "{}",
        enrol["qrWidth"]
    );
    assert_eq!(enrol["confirm"], true, "the confirm form");
    let key = key_shown(enrol);
    assert_eq!(key.len(), 32, "20 bytes of base32: {key}");
    assert!(
        enrol["secret"].as_str().unwrap().contains(' '),
        "grouped for reading: {}",
        enrol["secret"]
    );

    // Ten recovery codes, shown once.
    let codes: Vec<&str> = saw["codes"]["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(codes.len(), 10, "{}", saw["codes"]);
    assert!(codes.iter().all(|c| is_recovery_code(c)), "{codes:?}");
    let distinct: std::collections::HashSet<&&str> = codes.iter().collect();
    assert_eq!(distinct.len(), 10, "{codes:?}");

    // Signed out: no cookie left; the next visit to the account page asks for the
    // password and then a code, and comes back with TOTP on.
    let after = &saw["after_sign_out"];
    assert!(
        after.get("authd").is_none() && after.get("authd_refresh").is_none(),
        "cookies after signing out: {after}"
    );
    assert_eq!(saw["to_login_again"], login_url.as_str());
    assert!(
        saw["code_page_href"]
            .as_str()
            .unwrap()
            .starts_with(&s.authd_url("/login")),
        "{}",
        saw["code_page_href"]
    );
    assert_eq!(saw["landed_again"], account.as_str());
    let on = &saw["on"];
    assert!(
        page_text(on).contains("On. Signing in asks for a code"),
        "TOTP shown as on: {on}"
    );
    assert_eq!(on["enrolForm"], false, "{on}");
    // The first browser session ended at sign-out: the API login and this one remain.
    assert_eq!(
        on["sessions"],
        json!({"rows": 2, "current": 1, "end": 1}),
        "{on}"
    );

    // The other session, ended from the page, is gone there and at /v1/verify.
    let ended = &saw["ended"];
    assert_eq!(
        ended["sessions"],
        json!({"rows": 1, "current": 1, "end": 0}),
        "{ended}"
    );
    assert_eq!(
        verify(other_access).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "the ended session's access token"
    );
    // The session signed out with the button is gone too; the one signed in with the code
    // works and counts as two-factor.
    let first_access = saw["first_access"]
        .as_str()
        .expect("a first session cookie");
    assert_eq!(
        verify(first_access.to_owned()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "the signed-out session's access token"
    );
    let second_access = saw["second_access"].as_str().expect("a session cookie");
    let current = verify(second_access.to_owned()).await.unwrap();
    assert_eq!(current.status(), StatusCode::OK, "the current session");
    assert_eq!(header(&current, "x-auth-mfa"), "true");

    // Every field has its label, on every state of the page.
    for state in ["first", "enrol", "on", "ended"] {
        let labels = &saw[state]["labels"];
        assert!(labels["inputs"].as_u64().unwrap() > 0, "{state}: {labels}");
        assert_eq!(labels["unlabelled"], json!([]), "{state}: {labels}");
        assert_eq!(labels["dangling"], json!([]), "{state}: {labels}");
    }
    // No horizontal scrolling on a phone nor at 200 % zoom.
    for (state, width) in [
        ("enrol_phone", 390),
        ("phone", 390),
        ("enrol_zoom", 640),
        ("zoom", 640),
    ] {
        let widths = &saw[state];
        assert_eq!(widths["inner"], width, "{state}: the emulated width");
        assert!(
            widths["scroll"].as_u64().unwrap() <= widths["client"].as_u64().unwrap(),
            "{state}: horizontal scrolling: {widths}"
        );
    }
    assert_screenshots(&shots);
    // Last, as it leaves the flow above intact: the sign-out button shows that the
    // browser is signed out, not the account page it just left.
    let signed_out = &saw["signed_out_page"];
    assert!(
        !page_text(signed_out).contains("Signed in as dave"),
        "after clicking Sign out the browser still shows the account page: {signed_out}"
    );
}

//! Request decoding must never panic, must answer every bad body with a clean `400`/`415`,
//! and must never echo a submitted value in the error description.
//!
//! The input is `<content-type selector byte><body>`. The body goes through the real
//! decoders of `src/http/request.rs` (`decode_body` / `decode_optional_body`) into every
//! login, refresh, logout, password, admin and browser body type, with a request context of
//! a daemon built once (on port 0, in a temporary folder). The same bytes, as text, also go
//! through the pure input parsers: usernames, roles, passwords, `rd` redirect targets,
//! `X-Forwarded-For`.

#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, LazyLock};

use authd::app::{App, AppState};
use authd::auth::names::{Username, is_valid_role, password_problem};
use authd::auth::redirect;
use authd::config::Config;
use authd::http::admin::{CreateUserBody, RevokeBody, UpdateUserBody};
use authd::http::browser::{LoginFields, LoginJson, LogoutFields, LogoutJson};
use authd::http::error::ApiError;
use authd::http::public::{
    LoginBody, LoginForm, LogoutBody, PasswordBody, RefreshBody, RefreshForm,
};
use authd::http::request::{Accepts, Ctx, decode_body, decode_optional_body};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The content types a client may send, picked by the first input byte (the last choice
/// sends none).
const CONTENT_TYPES: [Option<&str>; 6] = [
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("Application/JSON; charset=utf-8"),
    Some("text/plain"),
    Some("multipart/form-data; boundary=x"),
    None,
];

/// The fixed text of every description the decoders produce (authd's templates, the field
/// and struct names, serde's "expected …" phrases): a submitted value that happens to be a
/// piece of it is not an echo.
const OWN_WORDS: &str = "content type must be application/json or \
     application/x-www-form-urlencoded | content type must be application/json | \
     request body is required | request body must be a JSON object | request body is not \
     valid JSON | invalid request body: | invalid form body: | unknown field | missing field | \
     duplicate field | expected one of | wrong type or value, expected | a field has the wrong \
     type or value | a string | a boolean | a sequence | struct | a map | unit | username | \
     password | roles | disabled | jti | token | sid | reason | rd | all | refresh_token | \
     current_password | new_password | LoginBody | LoginForm | RefreshBody | RefreshForm | \
     LogoutBody | PasswordBody | CreateUserBody | UpdateUserBody | RevokeBody | LoginJson | \
     LoginFields | LogoutJson | LogoutFields";

struct Daemon {
    state: Arc<AppState>,
    // Kept alive: the state's store lives in it.
    _app: App,
    _dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

static DAEMON: LazyLock<Daemon> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let env: HashMap<String, String> = [
        ("AUTHD__SERVER__LISTEN", "127.0.0.1:0".to_owned()),
        ("AUTHD__SERVER__ADMIN_LISTEN", "127.0.0.1:0".to_owned()),
        ("AUTHD__STORAGE__PATH", path("data")),
        ("AUTHD__JWT__KEYS_DIR", path("keys")),
        ("AUTHD__ADMIN__TOKEN_FILE", path("admin.token")),
        ("AUTHD__PASSWORD__ARGON2_MEMORY_KIB", "64".to_owned()),
        ("AUTHD__PASSWORD__ARGON2_ITERATIONS", "1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml");
    let config = Config::load_with_env(&shipped, env).expect("shipped config.toml loads");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let app = runtime
        .block_on(App::build(config))
        .expect("the daemon builds");
    Daemon {
        state: app.state(),
        _app: app,
        _dir: dir,
        _runtime: runtime,
    }
});

fn ctx(content_type: Option<&str>) -> Ctx {
    let state = DAEMON.state.clone();
    let mut headers = HeaderMap::new();
    if let Some(content_type) = content_type {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).expect("a valid content type"),
        );
    }
    Ctx {
        settings: state.settings(),
        state,
        now: 1_800_000_000,
        headers,
        peer: None,
        method: http::Method::POST,
    }
}

/// String values (and numbers, as written) and object keys of a JSON document.
fn walk(value: &Value, values: &mut Vec<String>, keys: &mut Vec<String>) {
    match value {
        Value::String(s) => values.push(s.clone()),
        Value::Number(n) => values.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| walk(v, values, keys)),
        Value::Object(map) => {
            for (k, v) in map {
                keys.push(k.clone());
                walk(v, values, keys);
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

/// What a client submitted: values (which must never be echoed) and keys (which may be).
fn submitted(body: &[u8]) -> (Vec<String>, Vec<String>) {
    let (mut values, mut keys) = (Vec::new(), Vec::new());
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        walk(&json, &mut values, &mut keys);
    }
    if let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
        for (k, v) in pairs {
            keys.push(k);
            values.push(v);
        }
    }
    (values, keys)
}

fn check_error(err: &ApiError, content_type: Option<&str>, body: &[u8]) {
    let status = err.status();
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "a body problem answered {status}"
    );
    let expected_code = if status == StatusCode::BAD_REQUEST {
        "invalid_request"
    } else {
        "unsupported_media_type"
    };
    assert_eq!(err.code(), expected_code);
    let description = err.description();
    assert!(!description.is_empty(), "an empty error description");
    let accepted = matches!(
        content_type.map(str::to_ascii_lowercase).as_deref(),
        Some("application/json" | "application/x-www-form-urlencoded")
            | Some("application/json; charset=utf-8")
    );
    if !accepted && !body.is_empty() {
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
    }
    // Keys may be quoted back (they name the client's own typo); values never are. The key
    // of "unknown field `…`, expected …" is the client's even when the rest of the body is
    // not JSON (so not in `keys`).
    let (values, keys) = submitted(body);
    let mut stripped = description.to_owned();
    const UNKNOWN: &str = "unknown field `";
    if let Some(start) = stripped.find(UNKNOWN).map(|i| i + UNKNOWN.len())
        && let Some(end) = stripped[start..].rfind("`, expected")
    {
        stripped.replace_range(start..start + end, "");
    }
    // One line, but for the client's own key quoted back (JSON and HTML escape it).
    assert!(!stripped.contains('\n'), "a multi-line description");
    for key in keys.iter().filter(|k| !k.is_empty()) {
        stripped = stripped.replace(key.as_str(), "");
    }
    for value in values.iter().filter(|v| v.len() >= 8) {
        assert!(
            !stripped.contains(value.as_str()) || OWN_WORDS.contains(value.as_str()),
            "the description {description:?} echoes a submitted value"
        );
    }
}

fn check<T>(result: Result<T, ApiError>, content_type: Option<&str>, body: &[u8]) {
    if let Err(err) = result {
        check_error(&err, content_type, body);
    }
}

/// Every body decoder of the HTTP API, on one body.
fn decode_all(content_type: Option<&str>, body: &[u8]) {
    let ctx = ctx(content_type);
    let raw = || Ok(Bytes::copy_from_slice(body));
    let form = Accepts::JsonOrForm;
    let json = Accepts::Json;
    check(
        decode_body::<LoginBody, LoginForm>(&ctx, raw(), form),
        content_type,
        body,
    );
    check(
        decode_body::<RefreshBody, RefreshForm>(&ctx, raw(), form),
        content_type,
        body,
    );
    check(
        decode_optional_body::<LogoutBody, LogoutBody>(&ctx, raw(), json),
        content_type,
        body,
    );
    check(
        decode_body::<PasswordBody, PasswordBody>(&ctx, raw(), json),
        content_type,
        body,
    );
    check(
        decode_body::<CreateUserBody, CreateUserBody>(&ctx, raw(), json),
        content_type,
        body,
    );
    check(
        decode_body::<UpdateUserBody, UpdateUserBody>(&ctx, raw(), json),
        content_type,
        body,
    );
    check(
        decode_body::<RevokeBody, RevokeBody>(&ctx, raw(), json),
        content_type,
        body,
    );
    check(
        decode_optional_body::<LoginJson, LoginFields>(&ctx, raw(), form),
        content_type,
        body,
    );
    check(
        decode_optional_body::<LogoutJson, LogoutFields>(&ctx, raw(), form),
        content_type,
        body,
    );
}

/// The pure parsers of user input, with the invariants their callers rely on.
fn parse_text(text: &str) {
    if let Some(name) = Username::parse(text) {
        let name = name.as_str();
        assert!((1..=64).contains(&name.len()), "username length");
        assert!(
            name.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'@' | b'-')),
            "username {name:?} has a character outside the rules"
        );
    }
    if is_valid_role(text) {
        assert!(
            !text.contains(','),
            "a role with a comma breaks X-Auth-Roles"
        );
    }
    let _ = password_problem(text, 8);

    let allowed = ["example.com".to_owned()];
    if let Ok(target) = redirect::check_redirect(text, &allowed) {
        let url = target.as_str();
        assert!(
            url.bytes().all(|b| b.is_ascii_graphic()),
            "unsafe Location {url:?}"
        );
        let host = redirect::url_host(url).expect("an accepted target has a host");
        assert!(
            redirect::is_allowed_host(&host, &allowed),
            "open redirect to {url:?}"
        );
        assert!(url.starts_with(target.origin()));
        let login = redirect::login_url_with_rd("https://auth.example.com/login", Some(&target));
        assert!(login.bytes().all(|b| b.is_ascii_graphic()));
    }
    let _ = redirect::url_host(text);
    let _ = redirect::authority_host(text);
    let encoded = redirect::percent_encode(text);
    assert!(
        encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'%')),
        "percent_encode left {encoded:?}"
    );
    let _ = redirect::original_url(Some(text), None, None, None);
    let _ = redirect::original_url(None, Some("https"), Some(text), Some(text));

    if let Ok(value) = HeaderValue::from_str(text) {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value);
        let proxy = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let trusted = ["127.0.0.0/8".parse().expect("a network")];
        assert!(authd::http::client_addr::client_ip(Some(proxy), &headers, &trusted).is_some());
        let untrusted = authd::http::client_addr::client_ip(Some(proxy), &headers, &[]);
        assert_eq!(
            untrusted,
            Some(proxy),
            "X-Forwarded-For believed from an untrusted peer"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    decode_all(content_type, body);
    if let Ok(text) = std::str::from_utf8(body) {
        parse_text(text);
    }
});

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

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, LazyLock};

use authd::auth::names::{Username, is_valid_role, password_problem};
use authd::auth::password::Hasher;
use authd::auth::redirect;
use authd::auth::{Authority, Settings};
use authd::clock::Clock;
use authd::http::account::PasswordBody;
use authd::http::admin::{CreateUserBody, RevokeBody, UpdateUserBody};
use authd::http::browser::{LoginFields, LoginJson, LogoutFields, LogoutJson};
use authd::http::error::ApiError;
use authd::http::request::{Accepts, Ctx, decode_body, decode_optional_body};
use authd::http::tokens::{LoginBody, LoginForm, LogoutBody, RefreshBody, RefreshForm};
use authd::state::AppState;
use authd::store::Store;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The shared test harness's configuration (the shipped `config.toml` with port 0, a
/// private folder and cheap argon2), as every integration test gets it.
#[path = "../../tests/common/config.rs"]
mod harness;

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

/// The descriptions of a body problem that are one fixed sentence (nothing from the body).
const OWN_SENTENCES: [&str; 5] = [
    "content type must be application/json or application/x-www-form-urlencoded",
    "content type must be application/json",
    "request body is required",
    "request body must be a JSON object",
    "request body is not valid JSON",
];

/// The fields of the body types: serde names them in "missing field `…`", "duplicate field
/// `…`" and "expected one of `…`".
const FIELD_NAMES: [&str; 13] = [
    "username",
    "password",
    "roles",
    "disabled",
    "jti",
    "token",
    "sid",
    "reason",
    "rd",
    "all",
    "refresh_token",
    "current_password",
    "new_password",
];

/// The body types: serde names them in "expected struct …".
const TYPE_NAMES: [&str; 13] = [
    "LoginBody",
    "LoginForm",
    "RefreshBody",
    "RefreshForm",
    "LogoutBody",
    "PasswordBody",
    "CreateUserBody",
    "UpdateUserBody",
    "RevokeBody",
    "LoginJson",
    "LoginFields",
    "LogoutJson",
    "LogoutFields",
];

/// What serde says a field's type expects ("wrong type or value, expected a boolean").
const EXPECTATIONS: [&str; 6] = [
    "a string",
    "a boolean",
    "a sequence",
    "a map",
    "unit",
    "field identifier",
];

/// The state handlers run against, made from ready parts: the shared harness's
/// configuration, its files, a store and a manual clock — no listeners.
struct Daemon {
    state: Arc<AppState>,
    _dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

static DAEMON: LazyLock<Daemon> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = harness::in_process_config(dir.path(), &[]);
    let clock = Clock::manual(1_800_000_000);
    authd::app::prepare_files(&config, &clock).expect("the daemon's files");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let store = runtime
        .block_on(Store::open_sled(&config.storage.path))
        .expect("the store opens");
    let settings = Settings::load(config).expect("the settings load");
    let state = AppState::new(
        Authority::new(store, Hasher::new(1), clock.clone()),
        settings,
        "127.0.0.1:8081".parse().expect("an address"),
        clock,
    );
    Daemon {
        state: Arc::new(state),
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

/// String values (and numbers, as written) of a JSON document, at any depth.
fn walk(value: &Value, values: &mut Vec<String>) {
    match value {
        Value::String(s) => values.push(s.clone()),
        Value::Number(n) => values.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| walk(v, values)),
        Value::Object(map) => map.values().for_each(|v| walk(v, values)),
        Value::Null | Value::Bool(_) => {}
    }
}

/// The values a client submitted (never to be echoed; keys may be, so they are not here).
fn submitted(body: &[u8]) -> Vec<String> {
    let mut values = Vec::new();
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        walk(&json, &mut values);
    }
    if let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
        values.extend(pairs.into_iter().map(|(_key, value)| value));
    }
    values
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
    // Values never come back; keys may (they name the client's own typo), and so may
    // authd's own wording, which a submitted value can happen to contain. Only the parts of
    // the description that are neither are searched, and the description is searched as it
    // is: a value that quotes authd's words is no echo, an echo anywhere else is found.
    let values = submitted(body);
    for part in foreign_parts(description) {
        assert!(
            !part.contains('\n'),
            "a multi-line description {description:?}"
        );
        for value in values.iter().filter(|v| v.len() >= 8) {
            assert!(
                !part.contains(value.as_str()),
                "the description {description:?} echoes a submitted value"
            );
        }
    }
}

/// The parts of a description that are neither authd's fixed wording nor a field name
/// serde quotes back: where an echo of a submitted value would show.
///
/// The decoders say one fixed sentence, or "invalid request body: " / "invalid form body: "
/// and serde's words about one field, which quote at most the field's name (the client's
/// own key for an unknown field). A description of any other shape is foreign as a whole.
fn foreign_parts(description: &str) -> Vec<&str> {
    if OWN_SENTENCES.contains(&description) {
        return Vec::new();
    }
    let problem = ["invalid request body: ", "invalid form body: "]
        .iter()
        .find_map(|prefix| description.strip_prefix(prefix));
    let Some(problem) = problem else {
        return vec![description];
    };
    if problem == "a field has the wrong type or value" {
        return Vec::new();
    }
    // A key that does not look like a field name is not quoted at all.
    if ["unknown field", "missing field", "duplicate field"]
        .iter()
        .any(|about| problem == format!("{about} (its name is not shown)"))
    {
        return Vec::new();
    }
    if let Some(expected) = problem.strip_prefix("wrong type or value, expected ") {
        let own = EXPECTATIONS.contains(&expected)
            || expected
                .strip_prefix("struct ")
                .is_some_and(|name| TYPE_NAMES.contains(&name));
        return if own { Vec::new() } else { vec![expected] };
    }
    for template in ["missing field `", "duplicate field `"] {
        if let Some(name) = problem
            .strip_prefix(template)
            .and_then(|rest| rest.strip_suffix('`'))
        {
            return if FIELD_NAMES.contains(&name) {
                Vec::new()
            } else {
                vec![name]
            };
        }
    }
    // "unknown field `KEY`, expected one of `a`, `b`" (or "expected `a`", or "there are no
    // fields"): KEY is the client's own, and may itself hold a backtick or ", expected ",
    // so our list of fields is found from the end.
    if let Some(rest) = problem.strip_prefix("unknown field `") {
        if rest.ends_with("`, there are no fields") {
            return Vec::new();
        }
        if let Some((_key, list)) = rest.rsplit_once("`, expected ")
            && is_field_list(list)
        {
            return Vec::new();
        }
    }
    vec![description]
}

/// serde's list of a struct's fields: "one of `a`, `b`, `c`", "`a` or `b`" or "`a`".
fn is_field_list(list: &str) -> bool {
    let names = list.strip_prefix("one of ").unwrap_or(list);
    let separator = if list.starts_with("one of ") {
        ", "
    } else {
        " or "
    };
    names.split(separator).all(|quoted| {
        quoted
            .strip_prefix('`')
            .and_then(|name| name.strip_suffix('`'))
            .is_some_and(|name| FIELD_NAMES.contains(&name))
    })
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

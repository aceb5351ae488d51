//! The second factor as a client drives it (API.md "Second factor: TOTP and recovery
//! codes"): enrolment and confirm through the API, the codes an authenticator app shows
//! (on the system clock, as the daemon under test runs on it), the two login steps, and the
//! search for every encoding of a secret in bytes the daemon left behind (store files, its
//! log, backups).
//!
//! Free functions over [`Api`], so that they serve the in-process [`TestApp`](super::TestApp)
//! and the child-process [`Daemon`](super::Daemon) alike.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use authd::auth::mfa::totp;
use base64::Engine as _;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::client::{Api, PASSWORD, assert_error, header, text};
use super::process::POLL;

/// The daemon's notion of now: the system clock, in Unix seconds.
pub fn now() -> i64 {
    authd::clock::Clock::system().now()
}

/// A user with TOTP on, and what the enrolment showed them (once).
#[derive(Clone, Debug)]
pub struct Enrolled {
    pub username: String,
    /// The access token the enrolment was made with (a password-only session).
    pub access_token: String,
    /// The refresh token of that session.
    pub refresh_token: String,
    /// The secret as shown: base32, upper case, unpadded.
    pub secret: String,
    pub otpauth_uri: String,
    /// The ten recovery codes of the confirm, as shown (`xxxx-xxxx-xxxx`).
    pub recovery_codes: Vec<String>,
    /// The newest step whose code the account used (the confirm's, then each code's this
    /// value handed out).
    pub last_step: u64,
}

impl Enrolled {
    /// The secret's 20 raw bytes.
    pub fn raw_secret(&self) -> Vec<u8> {
        totp::decode_base32(&self.secret).expect("the secret is base32")
    }

    /// The code of `step`.
    pub fn code_for(&self, step: u64) -> String {
        totp::code_for_step(&self.raw_secret(), step)
    }

    /// The code of the last step used (a replay: must be refused).
    pub fn used_code(&self) -> String {
        self.code_for(self.last_step)
    }

    /// A code the daemon takes now: the step after the last one used, or the current one
    /// when that is later; never beyond the current step + 1 (the daemon's window), so when
    /// every step of the window has been used this waits for the clock to move on.
    pub async fn next_code(&mut self) -> String {
        loop {
            let current = totp::step_at(now());
            let step = (self.last_step + 1).max(current);
            if step <= current + 1 {
                self.last_step = step;
                return self.code_for(step);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Six digits that are the code of no step the daemon could take now (nor of the
    /// steps either side of its window).
    pub fn wrong_code(&self) -> String {
        let current = totp::step_at(now());
        let near: Vec<String> = (current.saturating_sub(3)..=current + 3)
            .map(|step| self.code_for(step))
            .collect();
        (0..1_000_000)
            .map(|n| format!("{n:06}"))
            .find(|code| !near.contains(code))
            .unwrap()
    }

    /// Every way the secret or a recovery code could be written down: the raw bytes, base32
    /// (both cases), hex (both cases), base64 (standard and URL-safe, padded or not), each
    /// recovery code with and without dashes, in both cases. `(what, bytes)` pairs.
    pub fn secret_encodings(&self) -> Vec<(String, Vec<u8>)> {
        let raw = self.raw_secret();
        let mut needles = secret_encodings(&self.username, &raw, &self.secret);
        needles.extend(recovery_code_encodings(
            &self.username,
            &self.recovery_codes,
        ));
        needles
    }
}

/// Every encoding of a TOTP secret (see [`Enrolled::secret_encodings`]).
pub fn secret_encodings(owner: &str, raw: &[u8], base32: &str) -> Vec<(String, Vec<u8>)> {
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64_nopad = base64::engine::general_purpose::STANDARD_NO_PAD;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    vec![
        (format!("{owner}'s raw secret"), raw.to_vec()),
        (
            format!("{owner}'s base32 secret"),
            base32.as_bytes().to_vec(),
        ),
        (
            format!("{owner}'s base32 secret (lower case)"),
            base32.to_ascii_lowercase().into_bytes(),
        ),
        (format!("{owner}'s secret in hex"), hex.clone().into_bytes()),
        (
            format!("{owner}'s secret in upper-case hex"),
            hex.to_ascii_uppercase().into_bytes(),
        ),
        (
            format!("{owner}'s secret in base64"),
            b64.encode(raw).into_bytes(),
        ),
        (
            format!("{owner}'s secret in unpadded base64"),
            b64_nopad.encode(raw).into_bytes(),
        ),
        (
            format!("{owner}'s secret in URL-safe base64"),
            url.encode(raw).into_bytes(),
        ),
    ]
}

/// Every recovery code with and without its dashes, in both cases.
pub fn recovery_code_encodings(owner: &str, codes: &[String]) -> Vec<(String, Vec<u8>)> {
    codes
        .iter()
        .enumerate()
        .flat_map(|(i, code)| {
            let plain = code.replace('-', "");
            [
                code.clone(),
                code.to_ascii_uppercase(),
                plain.clone(),
                plain.to_ascii_uppercase(),
            ]
            .into_iter()
            .map(move |form| (format!("{owner}'s recovery code {i} as {form:?}"), form))
        })
        .map(|(what, form)| (what, form.into_bytes()))
        .collect()
}

/// The `what` of every needle that occurs in `haystack`.
pub fn found_in(haystack: &[u8], needles: &[(String, Vec<u8>)]) -> Vec<String> {
    needles
        .iter()
        .filter(|(_, needle)| {
            !needle.is_empty()
                && haystack
                    .windows(needle.len())
                    .any(|w| w == needle.as_slice())
        })
        .map(|(what, _)| what.clone())
        .collect()
}

/// Every regular file under `dir` (symbolic links not followed), with its bytes.
pub fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files.push((entry.path(), std::fs::read(entry.path()).unwrap()));
            }
        }
    }
    files
}

/// `POST /v1/mfa/totp` with [`PASSWORD`] as the current password.
pub async fn begin(api: &Api, access_token: &str) -> Response {
    api.public_request(Method::POST, "/v1/mfa/totp")
        .bearer_auth(access_token)
        .json(&json!({"current_password": PASSWORD}))
        .send()
        .await
        .unwrap()
}

/// [`begin`], asserting `200` and `no-store`; the `{"secret","otpauth_uri"}` answer.
pub async fn begun(api: &Api, access_token: &str) -> Value {
    let response = begin(api, access_token).await;
    assert_eq!(response.status(), StatusCode::OK, "POST /v1/mfa/totp");
    assert_eq!(header(&response, "cache-control"), "no-store");
    let body: Value = response.json().await.unwrap();
    assert!(body["secret"].is_string(), "{body}");
    body
}

/// `POST /v1/mfa/totp/confirm`.
pub async fn confirm(api: &Api, access_token: &str, code: &str) -> Response {
    api.public_request(Method::POST, "/v1/mfa/totp/confirm")
        .bearer_auth(access_token)
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap()
}

/// `POST /v1/mfa/recovery-codes` with [`PASSWORD`] and `code`.
pub async fn new_recovery_codes(api: &Api, access_token: &str, code: &str) -> Response {
    api.public_request(Method::POST, "/v1/mfa/recovery-codes")
        .bearer_auth(access_token)
        .json(&json!({"current_password": PASSWORD, "code": code}))
        .send()
        .await
        .unwrap()
}

/// Logs in the existing user `username` (password only) and turns TOTP on: enrol, then
/// confirm with the current step's code; returns at the confirm's `200`, without another
/// request.
pub async fn enrol(api: &Api, username: &str) -> Enrolled {
    let session = api.login(username).await;
    let access_token = text(&session["access_token"]).to_owned();
    let begun = begun(api, &access_token).await;
    let secret = text(&begun["secret"]).to_owned();
    let step = totp::step_at(now());
    let code = totp::code_for_step(&totp::decode_base32(&secret).unwrap(), step);
    let response = confirm(api, &access_token, &code).await;
    assert_eq!(response.status(), StatusCode::OK, "confirm of {username}");
    assert_eq!(header(&response, "cache-control"), "no-store");
    let body: Value = response.json().await.unwrap();
    let recovery_codes: Vec<String> = body["recovery_codes"]
        .as_array()
        .unwrap_or_else(|| panic!("no recovery_codes in {body}"))
        .iter()
        .map(|code| text(code).to_owned())
        .collect();
    assert_eq!(recovery_codes.len(), 10, "{body}");
    Enrolled {
        username: username.to_owned(),
        access_token,
        refresh_token: text(&session["refresh_token"]).to_owned(),
        secret,
        otpauth_uri: text(&begun["otpauth_uri"]).to_owned(),
        recovery_codes,
        last_step: step,
    }
}

/// `POST /v1/login` with [`PASSWORD`] and, when given, a `code`.
pub async fn login_with_code(api: &Api, username: &str, code: Option<&str>) -> Response {
    let mut body = json!({"username": username, "password": PASSWORD});
    if let Some(code) = code {
        body["code"] = json!(code);
    }
    api.public_request(Method::POST, "/v1/login")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The first step of a login with TOTP on: the right password alone answers `401
/// mfa_required` with an `mfa_token` and no token; returns the `mfa_token`.
pub async fn password_step(api: &Api, username: &str) -> String {
    let response = login_with_code(api, username, None).await;
    assert_eq!(header(&response, "cache-control"), "no-store");
    let body = assert_error(response, StatusCode::UNAUTHORIZED, "mfa_required").await;
    assert!(body.get("access_token").is_none(), "{body}");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let token = text(&body["mfa_token"]).to_owned();
    assert!(token.len() >= 22, "an mfa_token of >= 128 bits: {token:?}");
    token
}

/// `POST /v1/login/mfa` (JSON).
pub async fn second_step(api: &Api, mfa_token: &str, code: &str) -> Response {
    api.public_request(Method::POST, "/v1/login/mfa")
        .json(&json!({"mfa_token": mfa_token, "code": code}))
        .send()
        .await
        .unwrap()
}

/// [`second_step`], asserting `200`; the token answer.
pub async fn second_step_ok(api: &Api, mfa_token: &str, code: &str, what: &str) -> Value {
    let response = second_step(api, mfa_token, code).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{what}: {body}");
    assert!(body["access_token"].is_string(), "{what}: {body}");
    body
}

/// A full login with a code (either step), asserting that it was refused as a wrong code.
pub async fn assert_wrong_code(response: Response, what: &str) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_credentials")),
        "{what}: {body}"
    );
}

/// The `mfa` flag of the admin user object of `username`.
pub async fn mfa_flag(api: &Api, username: &str) -> bool {
    let response = api.get_user(username).await;
    assert_eq!(response.status(), StatusCode::OK, "GET user {username}");
    let user: Value = response.json().await.unwrap();
    user["mfa"]
        .as_bool()
        .unwrap_or_else(|| panic!("no boolean mfa in {user}"))
}

/// The `amr` claim of an access token.
pub fn amr(access_token: &str) -> Value {
    super::tokens::claims(access_token)["amr"].clone()
}

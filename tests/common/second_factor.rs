//! The second factor as a client drives it (API.md "Second factor: TOTP and recovery
//! codes"), for every test binary: the codes an authenticator app shows (for the system
//! clock, which the daemons under test run on, or for any `now`); one [`Api`] helper per
//! `/v1/mfa/*` route and login step, and enrolment as a user does it; the checks of their
//! answers; and the search for every encoding of a secret in bytes the daemon left behind
//! (store files, its log, backups).
//!
//! The requests are [`Api`] methods, so that they serve the in-process
//! [`TestApp`](super::TestApp) and the child-process [`Daemon`](super::Daemon) alike.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use authd::auth::mfa::totp;
use base64::Engine as _;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::client::{Api, PASSWORD, assert_error, assert_tokens, header, text};

// ----- codes -----

/// The daemon's notion of now: the system clock, in Unix seconds.
pub fn now() -> i64 {
    authd::clock::Clock::system().now()
}

/// The TOTP time step of `now` (Unix seconds): what an authenticator app shows at that
/// time is [`totp_code`] of this step.
pub fn totp_step(now: i64) -> u64 {
    totp::step_at(now)
}

/// The TOTP step the system clock is in now — the daemon's too, give or take a step
/// boundary crossed between the test's reading and the daemon's (a code is taken for the
/// daemon's step ±1, so a code of this step or the next is good either way).
pub fn totp_step_now() -> u64 {
    totp_step(now())
}

/// The 6-digit code of `secret` (base32, as `POST /v1/mfa/totp` answers it) for `step`.
pub fn totp_code(secret: &str, step: u64) -> String {
    let bytes = totp::decode_base32(secret).unwrap_or_else(|| panic!("{secret} is not base32"));
    totp::code_for_step(&bytes, step)
}

/// Six digits that are the code of `secret` for no step within 3 of `step`: no code the
/// daemon could take around then.
pub fn wrong_code(secret: &str, step: u64) -> String {
    let near: Vec<String> = (step.saturating_sub(3)..=step + 3)
        .map(|step| totp_code(secret, step))
        .collect();
    (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|code| !near.contains(code))
        .unwrap()
}

/// What turning TOTP on showed (once), through the API ([`Api::enrol`]) or the account
/// page: the secret, the step whose code the confirm used (codes are taken only for later
/// steps), and the first set of recovery codes.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The secret as shown: base32, upper case, unpadded.
    pub secret: String,
    pub confirmed_step: u64,
    /// The ten recovery codes of the confirm, as shown (`xxxx-xxxx-xxxx`).
    pub recovery_codes: Vec<String>,
}

impl Enrolled {
    /// The secret's 20 raw bytes.
    pub fn raw_secret(&self) -> Vec<u8> {
        totp::decode_base32(&self.secret).expect("the secret is base32")
    }

    /// The code of `step`.
    pub fn code(&self, step: u64) -> String {
        totp_code(&self.secret, step)
    }

    /// The confirm's code: its step is used, so this is a replay, refused.
    pub fn confirm_code(&self) -> String {
        self.code(self.confirmed_step)
    }

    /// The code of the step right after the confirmed one: on the system clock it is taken
    /// (once) from the confirm on for at least 30 s, whatever step boundary falls in
    /// between. For more second factors in one test, use recovery codes.
    pub fn next_code(&self) -> String {
        self.code(self.confirmed_step + 1)
    }

    /// Six digits that are the code of no step the daemon could take now (nor of the
    /// steps either side of its window).
    pub fn wrong_code(&self) -> String {
        wrong_code(&self.secret, totp_step_now())
    }

    /// Every way `owner`'s secret or a recovery code could be written down: the raw bytes,
    /// base32 (both cases), hex (both cases), base64 (standard and URL-safe, padded or
    /// not), each recovery code with and without dashes, in both cases. `(what, bytes)`
    /// pairs.
    pub fn secret_encodings(&self, owner: &str) -> Vec<(String, Vec<u8>)> {
        let mut needles = secret_encodings(owner, &self.raw_secret(), &self.secret);
        needles.extend(recovery_code_encodings(owner, &self.recovery_codes));
        needles
    }
}

// ----- the routes -----

impl Api {
    /// `POST /v1/login` (JSON) with a second-factor `code` when given.
    pub async fn try_login_code(
        &self,
        username: &str,
        password: &str,
        code: Option<&str>,
    ) -> Response {
        let mut body = json!({"username": username, "password": password});
        if let Some(code) = code {
            body["code"] = json!(code);
        }
        self.public_request(Method::POST, "/v1/login")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/login` with [`PASSWORD`] and `code`: a login in one step.
    pub async fn login_with_code(&self, username: &str, code: &str) -> Response {
        self.try_login_code(username, PASSWORD, Some(code)).await
    }

    /// The first step of a login with TOTP on: [`PASSWORD`] alone answers `401
    /// mfa_required` (never cached) with an `mfa_token` and no token; returns the
    /// `mfa_token`.
    pub async fn password_step(&self, username: &str) -> String {
        let response = self.try_login(username, PASSWORD).await;
        assert_eq!(header(&response, "cache-control"), "no-store", "{username}");
        let body = assert_error(response, StatusCode::UNAUTHORIZED, "mfa_required").await;
        assert!(body.get("access_token").is_none(), "{body}");
        assert!(body.get("refresh_token").is_none(), "{body}");
        let token = text(&body["mfa_token"]).to_owned();
        assert!(token.len() >= 22, "an mfa_token of >= 128 bits: {token:?}");
        token
    }

    /// `POST /v1/login/mfa` (JSON): the second step of a login.
    pub async fn login_mfa(&self, mfa_token: &str, code: &str) -> Response {
        self.public_request(Method::POST, "/v1/login/mfa")
            .json(&json!({"mfa_token": mfa_token, "code": code}))
            .send()
            .await
            .unwrap()
    }

    /// [`Api::login_mfa`], asserted a token answer ([`assert_tokens`]).
    pub async fn login_mfa_ok(&self, mfa_token: &str, code: &str, what: &str) -> Value {
        assert_tokens(self.login_mfa(mfa_token, code).await, what).await
    }

    /// A login through both steps with a right `code`; the token answer.
    pub async fn login_two_steps(&self, username: &str, code: &str) -> Value {
        let mfa_token = self.password_step(username).await;
        let what = format!("the second step of {username} with {code:?}");
        self.login_mfa_ok(&mfa_token, code, &what).await
    }

    /// `POST /v1/mfa/totp`: starts an enrolment.
    pub async fn begin_totp(&self, access_token: &str, current_password: &str) -> Response {
        self.public_request(Method::POST, "/v1/mfa/totp")
            .bearer_auth(access_token)
            .json(&json!({"current_password": current_password}))
            .send()
            .await
            .unwrap()
    }

    /// [`Api::begin_totp`] with [`PASSWORD`], asserting `200`, never cached, with a
    /// secret; the `{"secret","otpauth_uri"}` answer.
    pub async fn begin_totp_ok(&self, access_token: &str) -> Value {
        let response = self.begin_totp(access_token, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK, "POST /v1/mfa/totp");
        assert_eq!(header(&response, "cache-control"), "no-store");
        let body: Value = response.json().await.unwrap();
        assert!(body["secret"].is_string(), "{body}");
        body
    }

    /// `POST /v1/mfa/totp/confirm`.
    pub async fn confirm_totp(&self, access_token: &str, code: &str) -> Response {
        self.public_request(Method::POST, "/v1/mfa/totp/confirm")
            .bearer_auth(access_token)
            .json(&json!({"code": code}))
            .send()
            .await
            .unwrap()
    }

    /// `DELETE /v1/mfa/totp`: turns TOTP off.
    pub async fn disable_totp(
        &self,
        access_token: &str,
        current_password: &str,
        code: &str,
    ) -> Response {
        self.public_request(Method::DELETE, "/v1/mfa/totp")
            .bearer_auth(access_token)
            .json(&json!({"current_password": current_password, "code": code}))
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/mfa/recovery-codes`: a new set.
    pub async fn new_recovery_codes(
        &self,
        access_token: &str,
        current_password: &str,
        code: &str,
    ) -> Response {
        self.public_request(Method::POST, "/v1/mfa/recovery-codes")
            .bearer_auth(access_token)
            .json(&json!({"current_password": current_password, "code": code}))
            .send()
            .await
            .unwrap()
    }

    /// `DELETE /admin/v1/users/{username}/mfa`: the admin's reset.
    pub async fn reset_mfa(&self, username: &str) -> Response {
        self.admin_request(Method::DELETE, &format!("/admin/v1/users/{username}/mfa"))
            .send()
            .await
            .unwrap()
    }

    /// The `mfa` flag of the admin user object of `username`.
    pub async fn mfa_flag(&self, username: &str) -> bool {
        let response = self.get_user(username).await;
        assert_eq!(response.status(), StatusCode::OK, "GET user {username}");
        let user: Value = response.json().await.unwrap();
        user["mfa"]
            .as_bool()
            .unwrap_or_else(|| panic!("no boolean mfa in {user}"))
    }

    // ----- enrolment -----

    /// Turns TOTP on for the caller of `access_token` (whose password is [`PASSWORD`]) on
    /// a daemon on the system clock: enrols, then confirms with the current step's code;
    /// returns at the confirm's `200`, without another request.
    pub async fn enrol(&self, access_token: &str) -> Enrolled {
        self.enrol_at(access_token, now()).await
    }

    /// [`Api::enrol`] on a daemon whose clock reads `now`.
    pub async fn enrol_at(&self, access_token: &str, now: i64) -> Enrolled {
        let begun = self.begin_totp_ok(access_token).await;
        let secret = text(&begun["secret"]).to_owned();
        let step = totp_step(now);
        let confirmed = self
            .confirm_totp(access_token, &totp_code(&secret, step))
            .await;
        Enrolled {
            secret,
            confirmed_step: step,
            recovery_codes: recovery_codes_of(confirmed, "the confirm").await,
        }
    }

    /// Logs in the existing user `username` with [`PASSWORD`] and turns TOTP on with that
    /// password-only session ([`Api::enrol`]): the session's access token, and the
    /// enrolment.
    pub async fn login_and_enrol(&self, username: &str) -> (String, Enrolled) {
        let access_token = self.access_token(username, PASSWORD).await;
        let enrolled = self.enrol(&access_token).await;
        (access_token, enrolled)
    }
}

// ----- answers -----

/// A `200` answer with a new set of recovery codes (the confirm's, or `POST
/// /v1/mfa/recovery-codes`'s), never cached: its ten codes.
pub async fn recovery_codes_of(response: Response, what: &str) -> Vec<String> {
    let status = response.status();
    assert_eq!(header(&response, "cache-control"), "no-store", "{what}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{what}: {body}");
    let codes: Vec<String> = body["recovery_codes"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no recovery_codes in {body}"))
        .iter()
        .map(|code| text(code).to_owned())
        .collect();
    assert_eq!(codes.len(), 10, "{what}: {body}");
    codes
}

/// A login (either step) refused as a wrong code: `401 invalid_credentials`, described;
/// the body.
pub async fn assert_wrong_code(response: Response, what: &str) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_credentials")),
        "{what}: {body}"
    );
    assert!(body["error_description"].is_string(), "{what}: {body}");
    body
}

/// A second step refused for its `mfa_token` (unknown, used, expired or dead): `400
/// invalid_grant`, described.
pub async fn assert_dead_mfa_token(response: Response, what: &str) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{what}: {body}"
    );
    assert!(body["error_description"].is_string(), "{what}: {body}");
}

/// The `amr` claim of an access token.
pub fn amr(access_token: &str) -> Value {
    super::tokens::claims(access_token)["amr"].clone()
}

/// The `amr` claim of a token answer's access token.
pub fn amr_of(tokens: &Value) -> Value {
    amr(text(&tokens["access_token"]))
}

// ----- secrets in bytes left behind -----

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

/// Writes, owner-only, a random `mfa.key_file` of another deployment to `path`; its base64
/// text, which no message may show.
pub fn write_other_mfa_key(path: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    std::fs::write(path, format!("{key}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    key
}

//! Signing keys (API.md "Tokens", "Keys"): the key a fresh start generates for each
//! algorithm, the public JWKS and an independent verifier using only it, rotation and staged
//! rotation through reloads, reloads that must be refused, algorithm confusion, and key
//! files others can read.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use authd::auth::keys::{KeyAlgorithm, generate_key};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, assert_error, b64_json, claims, jose_header};

// ----- helpers -----

/// `header.claims` signed with HMAC-SHA256 under `secret`, whatever `header` says.
fn sign_hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let message = format!("{}.{}", b64_json(header), b64_json(claims));
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
            .unwrap();
    format!("{message}.{signature}")
}

/// The key files of a keys folder (hidden temporary files left out), sorted.
fn key_files(keys_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(keys_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| !path.file_name().unwrap().to_str().unwrap().starts_with('.'))
        .collect();
    files.sort();
    files
}

fn kid_of(path: &Path) -> String {
    path.file_stem().unwrap().to_str().unwrap().to_owned()
}

async fn jwks(app: &TestApp) -> Value {
    let response = app.jwks().await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn jwks_kids(jwks: &Value) -> Vec<String> {
    let mut kids: Vec<_> = jwks["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("keys in {jwks}"))
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect();
    kids.sort();
    kids
}

fn header_kid(token: &str) -> String {
    jose_header(token)["kid"].as_str().unwrap().to_owned()
}

async fn assert_accepted(app: &TestApp, token: &str, what: &str) {
    assert_eq!(app.verify(token).await.status(), StatusCode::OK, "{what}");
}

async fn assert_refused(app: &TestApp, token: &str, what: &str) {
    let response = app.verify(token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

/// A daemon whose whole configuration is a file in its own folder, so that reloads re-read
/// what the test writes: the shipped `config.toml` with port 0, the keys in `<dir>/keys`,
/// cheap argon2, and the test's own `[jwt]` settings.
struct FileConfigured {
    app: TestApp,
    file: PathBuf,
    _tempdir: tempfile::TempDir,
}

impl FileConfigured {
    /// Writes the configuration with `jwt` settings (`key`, TOML value) and starts on it.
    async fn start(jwt: &[(&str, &str)]) -> FileConfigured {
        let tempdir = tempfile::tempdir().unwrap();
        let dir = tempdir.path().to_owned();
        let file = dir.join("authd.toml");
        write_config(&file, jwt);
        let app = TestApp::start_with_config_file(&dir, &file).await;
        FileConfigured {
            app,
            file,
            _tempdir: tempdir,
        }
    }

    fn keys_dir(&self) -> PathBuf {
        self.app.dir.join("keys")
    }

    /// Rewrites the configuration with new `jwt` settings and reloads.
    async fn reconfigure(&self, jwt: &[(&str, &str)]) {
        write_config(&self.file, jwt);
        self.app.reload_settled().await;
    }
}

/// The shipped configuration with the test values set.
fn write_config(file: &Path, jwt: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(crate::common::shipped_config()).unwrap();
    for (section, key, value) in [
        ("server", "listen", "\"127.0.0.1:0\""),
        ("server", "admin_listen", "\"127.0.0.1:0\""),
        ("jwt", "keys_dir", "\"keys\""),
        ("password", "argon2_memory_kib", "64"),
        ("password", "argon2_iterations", "1"),
    ] {
        text = set_toml(&text, section, key, value);
    }
    for (key, value) in jwt {
        text = set_toml(&text, "jwt", key, value);
    }
    std::fs::write(file, text).unwrap();
}

/// Replaces the value of `key` in `[section]` of a TOML text written like the shipped file.
fn set_toml(text: &str, section: &str, key: &str, value: &str) -> String {
    let mut in_section = false;
    let mut replaced = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with('[') {
                in_section = line.trim() == format!("[{section}]");
            } else if in_section && !replaced && line.starts_with(&format!("{key} =")) {
                replaced = true;
                return format!("{key} = {value}");
            }
            line.to_owned()
        })
        .collect();
    assert!(
        replaced,
        "{section}.{key} not found in the shipped config.toml"
    );
    lines.join("\n") + "\n"
}

fn quoted(value: &str) -> String {
    format!("\"{value}\"")
}

// ----- a fresh start, per algorithm -----

/// A fresh start with `alg`: one private key file of that algorithm, mode 0600; its tokens
/// carry `alg` and the key's kid and verify; the JWKS publishes exactly its public half, and
/// a verifier that knows nothing but the JWKS accepts the token.
async fn assert_fresh_start_signs_with_a_generated_key(alg: KeyAlgorithm) {
    let app = TestApp::spawn_with(&[("AUTHD__JWT__ALGORITHM", alg.as_str())]).await;

    let files = key_files(&app.dir.join("keys"));
    let token = app.user_token("alice", &[]).await;
    let jwks = jwks(&app).await;

    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode of {}", file.display());
    assert_eq!(
        file.extension().unwrap(),
        alg.file_extension(),
        "{}",
        file.display()
    );
    assert_key_file_is(alg, &std::fs::read_to_string(file).unwrap());
    let header = jose_header(&token);
    assert_eq!(header["alg"], alg.as_str(), "{header}");
    assert_eq!(header["kid"], kid_of(file), "{header}");
    assert_accepted(&app, &token, "token of the generated key").await;
    if !alg.is_asymmetric() {
        assert_eq!(jwks, json!({"keys": []}));
        return;
    }
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    let jwk = &keys[0];
    assert_eq!(jwk["kid"], header["kid"], "{jwk}");
    assert_eq!(jwk["use"], "sig", "{jwk}");
    assert_eq!(jwk["alg"], alg.as_str(), "{jwk}");
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        assert!(
            jwk.get(private).is_none(),
            "private member {private} in {jwk}"
        );
    }
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(alg.jwt_algorithm());
    validation.set_audience(&["authd"]);
    validation.set_issuer(&["authd"]);
    let verified = jsonwebtoken::decode::<Value>(&token, &key, &validation)
        .unwrap_or_else(|err| panic!("independent {alg} verification: {err}"));
    assert_eq!(verified.claims["sub"], "alice");
}

/// The file holds a key of `alg`: 32+ random bytes in base64 for HS256, else PKCS#8 PEM.
fn assert_key_file_is(alg: KeyAlgorithm, text: &str) {
    match alg {
        KeyAlgorithm::HS256 => {
            let secret = STANDARD.decode(text.trim()).unwrap();
            assert!(secret.len() >= 32, "{} bytes", secret.len());
        }
        KeyAlgorithm::EdDSA => {
            use ed25519_dalek::pkcs8::DecodePrivateKey as _;
            ed25519_dalek::SigningKey::from_pkcs8_pem(text).unwrap();
        }
        KeyAlgorithm::ES256 => {
            use p256::pkcs8::DecodePrivateKey as _;
            p256::SecretKey::from_pkcs8_pem(text).unwrap();
        }
        KeyAlgorithm::RS256 => {
            use rsa::pkcs8::DecodePrivateKey as _;
            rsa::RsaPrivateKey::from_pkcs8_pem(text).unwrap();
        }
    }
}

#[tokio::test]
async fn hs256_fresh_start_generates_a_secret_and_publishes_no_key() {
    assert_fresh_start_signs_with_a_generated_key(KeyAlgorithm::HS256).await;
}

#[tokio::test]
async fn eddsa_fresh_start_generates_a_key_and_its_jwks_verifies_tokens() {
    assert_fresh_start_signs_with_a_generated_key(KeyAlgorithm::EdDSA).await;
}

#[tokio::test]
async fn es256_fresh_start_generates_a_key_and_its_jwks_verifies_tokens() {
    assert_fresh_start_signs_with_a_generated_key(KeyAlgorithm::ES256).await;
}

#[tokio::test]
async fn rs256_fresh_start_generates_a_key_and_its_jwks_verifies_tokens() {
    assert_fresh_start_signs_with_a_generated_key(KeyAlgorithm::RS256).await;
}

// ----- rotation -----

#[tokio::test]
async fn rotation_with_keygen_signs_with_the_new_key_and_keeps_old_tokens_valid() {
    let daemon = FileConfigured::start(&[("algorithm", "\"EdDSA\"")]).await;
    let app = &daemon.app;
    let old_kid = kid_of(&key_files(&daemon.keys_dir())[0]);
    app.add_user("alice", &[]).await;
    let old_token = app.access_token("alice", PASSWORD).await;

    let keygen = std::process::Command::new(env!("CARGO_BIN_EXE_authd"))
        .arg("keygen")
        .arg("--config")
        .arg(&daemon.file)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "keygen: {keygen:?}");
    let new_kid = String::from_utf8(keygen.stdout).unwrap().trim().to_owned();
    app.reload_settled().await;
    let new_token = app.access_token("alice", PASSWORD).await;

    assert_ne!(new_kid, old_kid);
    assert_eq!(header_kid(&old_token), old_kid);
    assert_eq!(
        header_kid(&new_token),
        new_kid,
        "new logins sign with the new key"
    );
    assert_accepted(app, &old_token, "token of the old key after rotation").await;
    assert_accepted(app, &new_token, "token of the new key").await;
    let mut both = vec![old_kid, new_kid];
    both.sort();
    assert_eq!(jwks_kids(&jwks(app).await), both);
}

#[tokio::test]
async fn removing_the_old_key_file_and_reloading_refuses_its_tokens() {
    let daemon = FileConfigured::start(&[("algorithm", "\"EdDSA\"")]).await;
    let app = &daemon.app;
    let old_file = key_files(&daemon.keys_dir())[0].clone();
    app.add_user("alice", &[]).await;
    let old_token = app.access_token("alice", PASSWORD).await;
    let new_kid = generate_key(&daemon.keys_dir(), KeyAlgorithm::EdDSA, SystemTime::now()).unwrap();
    app.reload_settled().await;
    let new_token = app.access_token("alice", PASSWORD).await;
    assert_eq!(header_kid(&new_token), new_kid);

    std::fs::remove_file(&old_file).unwrap();
    app.reload_settled().await;

    assert_refused(app, &old_token, "token of the removed key").await;
    assert_accepted(app, &new_token, "token of the remaining key").await;
    assert_eq!(jwks_kids(&jwks(app).await), [new_kid]);
}

#[tokio::test]
async fn staged_rotation_publishes_the_new_key_before_it_signs() {
    let daemon = FileConfigured::start(&[("algorithm", "\"EdDSA\"")]).await;
    let app = &daemon.app;
    let old_kid = kid_of(&key_files(&daemon.keys_dir())[0]);
    app.add_user("alice", &[]).await;

    // Stage: pin the old key, add the new one, reload; the new key is published, not used.
    let new_kid = generate_key(&daemon.keys_dir(), KeyAlgorithm::EdDSA, SystemTime::now()).unwrap();
    let pinned = quoted(&old_kid);
    daemon
        .reconfigure(&[("algorithm", "\"EdDSA\""), ("signing_kid", &pinned)])
        .await;
    let staged_token = app.access_token("alice", PASSWORD).await;
    let mut both = vec![old_kid.clone(), new_kid.clone()];
    both.sort();
    assert_eq!(jwks_kids(&jwks(app).await), both);
    assert_eq!(
        header_kid(&staged_token),
        old_kid,
        "the pinned key still signs"
    );

    // Switch: unpinned, the newest key signs.
    daemon
        .reconfigure(&[("algorithm", "\"EdDSA\""), ("signing_kid", "\"\"")])
        .await;
    let switched_token = app.access_token("alice", PASSWORD).await;

    assert_eq!(header_kid(&switched_token), new_kid, "the newest key signs");
    assert_accepted(app, &staged_token, "token of the formerly pinned key").await;
    assert_accepted(app, &switched_token, "token of the new key").await;
}

// ----- refused reloads -----

#[tokio::test]
async fn reload_to_an_algorithm_without_a_key_is_refused_and_the_old_settings_stay() {
    let daemon = FileConfigured::start(&[("algorithm", "\"EdDSA\"")]).await;
    let app = &daemon.app;
    let old_files = key_files(&daemon.keys_dir());
    app.add_user("alice", &[]).await;

    // The same reload would also shorten access tokens, were it accepted.
    daemon
        .reconfigure(&[("algorithm", "\"ES256\""), ("access_ttl", "\"5m\"")])
        .await;
    let login = app.login("alice").await;

    let token = login["access_token"].as_str().unwrap();
    let header = jose_header(token);
    assert_eq!(header["alg"], "EdDSA", "{header}");
    assert_eq!(header["kid"], kid_of(&old_files[0]), "{header}");
    assert_eq!(login["expires_in"], 900, "the old access_ttl stays");
    assert_accepted(app, token, "token signed after the refused reload").await;
    assert_eq!(
        key_files(&daemon.keys_dir()),
        old_files,
        "a reload generates no key"
    );
}

#[tokio::test]
async fn reload_with_an_unparsable_key_file_is_refused_until_it_is_removed() {
    let daemon = FileConfigured::start(&[("algorithm", "\"EdDSA\"")]).await;
    let app = &daemon.app;
    app.add_user("alice", &[]).await;
    let broken = daemon.keys_dir().join("broken.pem");
    std::fs::write(&broken, "-----BEGIN PRIVATE KEY-----\nnot a key\n").unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o600)).unwrap();
    let shorter = [("algorithm", "\"EdDSA\""), ("access_ttl", "\"5m\"")];

    daemon.reconfigure(&shorter).await;
    let refused = app.login("alice").await;
    std::fs::remove_file(&broken).unwrap();
    app.reload_settled().await;
    let accepted = app.login("alice").await;

    assert_eq!(
        refused["expires_in"], 900,
        "the running configuration stays"
    );
    assert_eq!(accepted["expires_in"], 300, "the fixed key set reloads");
}

// ----- algorithm confusion -----

/// Asserts that `secrets` used as HMAC keys under `kid` forge nothing, while the real token
/// (the same claims, properly signed) is accepted.
async fn assert_hmac_forgeries_refused(
    app: &TestApp,
    real_token: &str,
    kid: &str,
    secrets: &[(&str, Vec<u8>)],
) {
    assert_accepted(app, real_token, "the real token").await;
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": kid});
    for (what, secret) in secrets {
        let forged = sign_hs256(secret, &header, &claims(real_token));
        assert_refused(app, &forged, &format!("HS256 keyed with the {what}")).await;
    }
}

#[tokio::test]
async fn hs256_token_keyed_with_an_eddsa_public_key_is_refused() {
    use ed25519_dalek::pkcs8::EncodePublicKey as _;
    use p256::pkcs8::LineEnding;
    let app = TestApp::spawn_with(&[("AUTHD__JWT__ALGORITHM", "EdDSA")]).await;
    let token = app.user_token("alice", &[]).await;
    let jwk = jwks(&app).await["keys"][0].clone();
    let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let public = ed25519_dalek::VerifyingKey::from_bytes(&x.clone().try_into().unwrap()).unwrap();
    let pem = public.to_public_key_pem(LineEnding::LF).unwrap();
    let der = public.to_public_key_der().unwrap();

    assert_hmac_forgeries_refused(
        &app,
        &token,
        jwk["kid"].as_str().unwrap(),
        &[
            ("raw public key (JWK x)", x),
            ("public key PEM", pem.into_bytes()),
            ("public key DER", der.as_bytes().to_vec()),
        ],
    )
    .await;
}

#[tokio::test]
async fn hs256_token_keyed_with_an_rsa_public_key_is_refused() {
    use rsa::pkcs1::EncodeRsaPublicKey as _;
    use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
    let app = TestApp::spawn_with(&[("AUTHD__JWT__ALGORITHM", "RS256")]).await;
    let token = app.user_token("alice", &[]).await;
    let jwk = jwks(&app).await["keys"][0].clone();
    let component = |name: &str| {
        rsa::BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap())
    };
    let public = rsa::RsaPublicKey::new(component("n"), component("e")).unwrap();

    assert_hmac_forgeries_refused(
        &app,
        &token,
        jwk["kid"].as_str().unwrap(),
        &[
            (
                "SPKI public key PEM",
                public
                    .to_public_key_pem(LineEnding::LF)
                    .unwrap()
                    .into_bytes(),
            ),
            (
                "PKCS#1 public key PEM",
                public.to_pkcs1_pem(LineEnding::LF).unwrap().into_bytes(),
            ),
            (
                "SPKI public key DER",
                public.to_public_key_der().unwrap().as_bytes().to_vec(),
            ),
            (
                "PKCS#1 public key DER",
                public.to_pkcs1_der().unwrap().as_bytes().to_vec(),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn eddsa_header_on_an_hs256_kid_is_refused() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice", &[]).await;
    let file = &key_files(&app.dir.join("keys"))[0];
    let secret = STANDARD
        .decode(std::fs::read_to_string(file).unwrap().trim())
        .unwrap();
    let kid = kid_of(file);
    let honest = sign_hs256(
        &secret,
        &json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}),
        &claims(&token),
    );

    let relabelled = sign_hs256(
        &secret,
        &json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid}),
        &claims(&token),
    );

    assert_accepted(&app, &honest, "HS256 header, HS256 signature").await;
    assert_refused(&app, &relabelled, "EdDSA header on an HS256 kid").await;
}

// ----- key file permissions -----

#[tokio::test]
async fn a_group_readable_key_file_stops_the_start_naming_the_file() {
    let tempdir = tempfile::tempdir().unwrap();
    let keys_dir = tempdir.path().join("keys");
    let kid = generate_key(&keys_dir, KeyAlgorithm::HS256, SystemTime::now()).unwrap();
    let key_file = keys_dir.join(format!("{kid}.key"));
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let config = crate::common::in_process_config(tempdir.path(), &[]);

    let result = authd::app::App::build(config).await;

    let Err(err) = result else {
        panic!("a group-readable key file must stop the start");
    };
    let message = format!("{err:#}");
    assert!(
        message.contains(&key_file.display().to_string()),
        "the error names {}: {message}",
        key_file.display()
    );
}

// ----- the keys folder (rev 4) -----

/// Why a daemon on the shipped configuration in `dir` does not start: the configuration's
/// own error, or `App::build`'s. Panics when it starts.
async fn start_error(dir: &Path) -> String {
    let env = crate::common::in_process_env(dir);
    let config = match authd::config::Config::load_with_env(&crate::common::shipped_config(), env) {
        Ok(config) => config,
        Err(err) => return err.to_string(),
    };
    match authd::app::App::build(config).await {
        Ok(_) => panic!("the daemon started"),
        Err(err) => format!("{err:#}"),
    }
}

#[tokio::test]
async fn a_keys_folder_others_can_write_to_stops_the_start_naming_it() {
    // Whoever can write to the folder can drop in a key of their own and sign tokens.
    let tempdir = tempfile::tempdir().unwrap();
    let keys_dir = tempdir.path().join("keys");
    generate_key(&keys_dir, KeyAlgorithm::HS256, SystemTime::now()).unwrap();
    std::fs::set_permissions(&keys_dir, std::fs::Permissions::from_mode(0o770)).unwrap();

    let message = start_error(tempdir.path()).await;

    assert!(message.contains("jwt.keys_dir"), "{message}");
    assert!(
        message.contains(&format!(
            "{} is writable by group or others",
            keys_dir.display()
        )),
        "{message}"
    );
}

#[tokio::test]
async fn a_symlink_out_of_the_keys_folder_stops_the_start_naming_it() {
    // A link planted in the folder would make authd read (and trust) a key kept elsewhere,
    // whose mode nobody checks: refused without following it.
    let tempdir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let keys_dir = tempdir.path().join("keys");
    generate_key(&keys_dir, KeyAlgorithm::HS256, SystemTime::now()).unwrap();
    let foreign = generate_key(elsewhere.path(), KeyAlgorithm::HS256, SystemTime::now()).unwrap();
    let link = keys_dir.join("zz-planted.key");
    std::os::unix::fs::symlink(elsewhere.path().join(format!("{foreign}.key")), &link).unwrap();

    let message = start_error(tempdir.path()).await;

    assert!(
        message.contains(&format!(
            "{} is a symbolic link pointing outside",
            link.display()
        )),
        "{message}"
    );
}

#[tokio::test]
async fn reload_with_a_keys_folder_others_can_write_to_keeps_the_old_configuration() {
    let daemon = FileConfigured::start(&[]).await;
    let app = &daemon.app;
    app.add_user("alice", &[]).await;
    let before = app.access_token("alice", PASSWORD).await;
    std::fs::set_permissions(daemon.keys_dir(), std::fs::Permissions::from_mode(0o775)).unwrap();

    daemon.reconfigure(&[("access_ttl", "\"5m\"")]).await;
    let refused = app.login("alice").await;
    std::fs::set_permissions(daemon.keys_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    app.reload_settled().await;
    let accepted = app.login("alice").await;

    assert_eq!(
        refused["expires_in"], 900,
        "the running configuration stays"
    );
    assert_accepted(app, &before, "a token of the running configuration").await;
    assert_eq!(accepted["expires_in"], 300, "the fixed folder reloads");
}

#[tokio::test]
async fn reload_with_a_symlink_out_of_the_keys_folder_keeps_the_old_configuration() {
    let daemon = FileConfigured::start(&[]).await;
    let app = &daemon.app;
    app.add_user("alice", &[]).await;
    let elsewhere = tempfile::tempdir().unwrap();
    let foreign = generate_key(elsewhere.path(), KeyAlgorithm::HS256, SystemTime::now()).unwrap();
    let link = daemon.keys_dir().join("zz-planted.key");
    std::os::unix::fs::symlink(elsewhere.path().join(format!("{foreign}.key")), &link).unwrap();

    daemon.reconfigure(&[("access_ttl", "\"5m\"")]).await;
    let refused = app.login("alice").await;

    assert_eq!(
        refused["expires_in"], 900,
        "the running configuration stays"
    );
    let token = refused["access_token"].as_str().unwrap();
    assert_ne!(
        header_kid(token),
        "zz-planted",
        "the planted key never signs"
    );
}

// ----- access_ttl across a reload (rev 4) -----

#[tokio::test]
async fn a_token_issued_under_a_10m_access_ttl_stays_valid_after_a_reload_to_1m() {
    // Tokens issued before a reload that shortens access_ttl live until their own exp
    // (API.md "Signals and lifecycle"): the lifetime cap is the 24 h bound, not today's ttl.
    let daemon = FileConfigured::start(&[("access_ttl", "\"10m\"")]).await;
    let app = &daemon.app;
    app.add_user("alice", &[]).await;
    let before = app.access_token("alice", PASSWORD).await;
    let lifetime =
        claims(&before)["exp"].as_i64().unwrap() - claims(&before)["iat"].as_i64().unwrap();

    daemon.reconfigure(&[("access_ttl", "\"1m\"")]).await;
    let after = app.login("alice").await;

    assert_eq!(lifetime, 600);
    assert_eq!(after["expires_in"], 60, "the reload took effect");
    assert_accepted(
        app,
        &before,
        "a 10-minute token after the reload to 1 minute",
    )
    .await;
}

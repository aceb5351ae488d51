//! `TokenRules::verify` must never panic, and must accept nothing it should not.
//!
//! The first input byte picks a mode:
//! - `0`: the rest is the token, as a client would present it (arbitrary text);
//! - `1` / `2`: the rest is `<JOSE header JSON>\n<claims JSON>`, which the target encodes and
//!   signs with the fixture's HS256 / EdDSA key, so that everything behind the signature
//!   check (header rules, claim types, lifetime arithmetic) is reached too.
//!
//! Every token is verified against three key sets built once in a temporary folder from
//! fixed fixture keys: HS256 only, EdDSA only, and both (where algorithm confusion would
//! show). An accepted token must have non-empty `jti` and `sid`, a lifetime that holds at
//! the fuzzing clock, and a header whose `alg` is its key's own algorithm.

#![no_main]

use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use authd::auth::keys::{KeyAlgorithm, KeySet};
use authd::auth::token::TokenRules;
use authd::config::JwtConfig;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use libfuzzer_sys::fuzz_target;

/// The fuzzing clock: tokens in the corpus are valid around this time.
const NOW: i64 = 1_800_000_000;
const LEEWAY: i64 = 30;

/// Fixture keys: fixed so that corpus tokens signed with them stay meaningful. Never used
/// anywhere but here.
const HMAC_SECRET: &[u8; 32] = b"authd-fuzz-hmac-secret-not-used!";
const ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIMkKhG7y/CHkkQ8hwFAgMlsv9lLIK510W0nCcFvxuo2m
-----END PRIVATE KEY-----
";

/// A key set and the rules of the same snapshot (the rules cache what they verified, so
/// each key set needs its own, as each settings snapshot has).
struct Snapshot {
    rules: TokenRules,
    keys: KeySet,
}

struct Fixture {
    hs256: Snapshot,
    eddsa: Snapshot,
    both: Snapshot,
}

fn write_key(dir: &Path, name: &str, contents: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(name))
        .expect("write fixture key");
    std::io::Write::write_all(&mut file, contents).expect("write fixture key");
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let temp = tempfile::tempdir().expect("tempdir");
    let hmac = STANDARD.encode(HMAC_SECRET);
    let dirs = ["hs256", "eddsa", "both"].map(|name| {
        let dir = temp.path().join(name);
        std::fs::create_dir(&dir).expect("mkdir");
        dir
    });
    write_key(&dirs[0], "hs.key", hmac.as_bytes());
    write_key(&dirs[1], "ed.pem", ED25519_PEM.as_bytes());
    write_key(&dirs[2], "hs.key", hmac.as_bytes());
    write_key(&dirs[2], "ed.pem", ED25519_PEM.as_bytes());
    let jwt = JwtConfig {
        issuer: "authd".into(),
        audience: "authd".into(),
        algorithm: KeyAlgorithm::HS256,
        signing_kid: None,
        access_ttl: Duration::from_secs(900),
        refresh_ttl: Duration::from_secs(14 * 24 * 3600),
        leeway: Duration::from_secs(LEEWAY as u64),
        keys_dir: dirs[0].clone(),
    };
    let load = |dir: &Path, alg| Snapshot {
        rules: TokenRules::new(&jwt),
        keys: KeySet::load(dir, alg, None).expect("fixture key set"),
    };
    let fixture = Fixture {
        hs256: load(&dirs[0], KeyAlgorithm::HS256),
        eddsa: load(&dirs[1], KeyAlgorithm::EdDSA),
        both: load(&dirs[2], KeyAlgorithm::HS256),
    };
    // The key sets hold their keys in memory; the folder is no longer needed.
    drop(temp);
    fixture
});

/// `b64(header).b64(claims).signature` with the fixture key `kid`.
fn signed(keys: &KeySet, kid: &str, header: &[u8], claims: &[u8]) -> String {
    let key = keys.get(kid).expect("fixture kid");
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key.encoding, key.alg.jwt_algorithm())
            .expect("fixture key signs");
    format!("{message}.{signature}")
}

fn check(snapshot: &Snapshot, token: &str) {
    let (rules, keys) = (&snapshot.rules, &snapshot.keys);
    let verified = rules.verify(keys, token, NOW);
    let signature_only = rules.verify_signature(keys, token);
    let Ok(claims) = verified else {
        return;
    };
    assert!(!claims.jti.is_empty(), "accepted a token with an empty jti");
    assert!(!claims.sid.is_empty(), "accepted a token with an empty sid");
    assert!(claims.exp >= NOW - LEEWAY, "accepted an expired token");
    assert!(claims.nbf <= NOW + LEEWAY, "accepted a token before nbf");
    assert!(
        claims.iat <= NOW + LEEWAY,
        "accepted a token issued in the future"
    );
    assert_eq!(
        signature_only.as_ref().ok(),
        Some(&*claims),
        "verify accepted what verify_signature refused"
    );
    let header = jsonwebtoken::decode_header(token).expect("an accepted token has a header");
    let kid = header.kid.as_deref().expect("an accepted token has a kid");
    let key = keys
        .get(kid)
        .expect("an accepted token names a key of the set");
    assert_eq!(
        header.alg,
        key.alg.jwt_algorithm(),
        "alg is not the key's own"
    );
}

fuzz_target!(|data: &[u8]| {
    let fixture = &*FIXTURE;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = match mode % 3 {
        0 => match std::str::from_utf8(rest) {
            Ok(token) => token.to_owned(),
            Err(_) => return,
        },
        signing => {
            let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let (header, claims) = rest.split_at(split);
            let claims = claims.get(1..).unwrap_or_default();
            if signing == 1 {
                signed(&fixture.both.keys, "hs", header, claims)
            } else {
                signed(&fixture.both.keys, "ed", header, claims)
            }
        }
    };
    for snapshot in [&fixture.hs256, &fixture.eddsa, &fixture.both] {
        check(snapshot, &token);
    }
});

//! Criterion micro-benchmarks of the pieces behind `GET /v1/verify`: token verification
//! (signature check vs the verified-token cache), the revocation lookup in a store holding
//! 100k entries, the in-memory user and session reads, and the second factor's code check. The end-to-end figures are
//! `bench/run`'s; these say which piece a change moved.
//!
//! `cargo bench --bench hot_path` (or `-- token_verify` for one group).

// Benchmarks measure real time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use authd::auth::keys::{KeyAlgorithm, KeySet, generate_key};
use authd::auth::token::{Amr, TokenRules};
use authd::config::JwtConfig;
use authd::random::random_id;
use authd::store::{
    NewRevocation, RefreshRecord, RevocationKind, SessionRecord, Store, Txn, UnixSeconds,
    UserRecord,
};
use criterion::{Criterion, criterion_group, criterion_main};

/// Entries in the revocation tree for the lookup benchmarks.
const REVOCATIONS: usize = 100_000;
/// Distinct tokens cycled through in the cache-miss benchmark: more than the verified-token
/// cache holds, so most lookups miss.
const ROTATED_TOKENS: usize = 100_000;
const USERS: usize = 1_000;

fn now() -> UnixSeconds {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn jwt_config(keys_dir: &Path) -> JwtConfig {
    JwtConfig {
        issuer: "authd".into(),
        audience: "authd".into(),
        algorithm: KeyAlgorithm::HS256,
        signing_kid: None,
        access_ttl: Duration::from_secs(15 * 60),
        refresh_ttl: Duration::from_secs(14 * 86_400),
        leeway: Duration::from_secs(30),
        keys_dir: keys_dir.to_owned(),
    }
}

fn token_verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    generate_key(dir.path(), KeyAlgorithm::HS256, SystemTime::now()).unwrap();
    let keys = KeySet::load(dir.path(), KeyAlgorithm::HS256, None).unwrap();
    let rules = TokenRules::new(&jwt_config(dir.path()));
    let now = now();
    let roles = vec!["admin".to_owned()];
    let token = rules
        .issue(&keys, "alice", "sid-1", &roles, Amr::Password, now)
        .unwrap()
        .token;

    let mut group = c.benchmark_group("token_verify");
    // What a cache miss pays on top of the lookup: header, signature and claims.
    group.bench_function("signature_uncached", |b| {
        b.iter(|| rules.verify_signature(&keys, black_box(&token)).unwrap())
    });
    rules.verify(&keys, &token, now).unwrap();
    group.bench_function("cache_hit", |b| {
        b.iter(|| rules.verify(&keys, black_box(&token), now).unwrap())
    });
    let tokens: Vec<String> = (0..ROTATED_TOKENS)
        .map(|i| {
            let sid = format!("sid-{i}");
            rules
                .issue(&keys, "alice", &sid, &roles, Amr::Password, now)
                .unwrap()
                .token
        })
        .collect();
    let mut next = 0;
    group.bench_function("rotating_100k_tokens", |b| {
        b.iter(|| {
            next = (next + 1) % tokens.len();
            rules.verify(&keys, black_box(&tokens[next]), now).unwrap()
        })
    });
    group.finish();
}

/// A store with [`REVOCATIONS`] revoked jtis, [`USERS`] users and one session per user.
/// Returns the store, a revoked jti, a user name and a sid.
fn filled_store(dir: &Path) -> (Store, String, String, String) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open_sled(dir).await.unwrap();
        let now = now();
        let mut revoked = String::new();
        let mut txn = Txn::default();
        for i in 0..REVOCATIONS {
            let id = random_id(16);
            if i == REVOCATIONS / 2 {
                revoked = id.clone();
            }
            txn.revoke(&NewRevocation {
                kind: RevocationKind::Jti,
                id,
                revoked_at: now,
                expires_at: now + 86_400,
                reason: None,
                ended_sessions: Vec::new(),
                serial: None,
            });
            if txn.writes.len() == 1000 {
                store.commit(std::mem::take(&mut txn)).await.unwrap();
            }
        }
        for i in 0..USERS {
            let username = format!("user{i:06}");
            let account_id = store.next_id().await.unwrap();
            let sid = format!("sid-{i:06}");
            let mut refresh_hash = [0u8; 32];
            refresh_hash[..8].copy_from_slice(&(i as u64).to_be_bytes());
            txn.put_user(UserRecord {
                account_id,
                username: username.clone(),
                password_hash: "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
                roles: vec!["admin".into()],
                disabled: false,
                created_at: now,
                generation: 0,
                second_factor: None,
            })
            .put_session(SessionRecord {
                sid: sid.clone(),
                username,
                account_id,
                generation: 0,
                created_at: now,
                last_refreshed_at: now,
                expires_at: now + 86_400,
                access_expires_at: now + 900,
                with_otp: false,
            })
            .put_refresh(
                refresh_hash,
                RefreshRecord {
                    sid,
                    issued_at: now,
                    expires_at: now + 86_400,
                    rotated_at: None,
                    issued_in_cookie: false,
                },
            );
        }
        store.commit(txn).await.unwrap();
        let user = format!("user{:06}", USERS / 2);
        let sid = format!("sid-{:06}", USERS / 2);
        (store, revoked, user, sid)
    })
}

fn store_reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (store, revoked, user, sid) = filled_store(dir.path());
    let unknown = random_id(16);

    let mut group = c.benchmark_group("revocation_lookup_100k");
    group.bench_function("hit", |b| {
        b.iter(|| assert!(store.is_jti_revoked(black_box(&revoked))))
    });
    group.bench_function("miss", |b| {
        b.iter(|| assert!(!store.is_jti_revoked(black_box(&unknown))))
    });
    group.finish();

    let mut group = c.benchmark_group("store_read");
    group.bench_function("user", |b| b.iter(|| store.user(black_box(&user)).unwrap()));
    group.bench_function("user_miss", |b| {
        b.iter(|| assert!(store.user(black_box("nobody")).is_none()))
    });
    group.bench_function("session", |b| {
        b.iter(|| store.session(black_box(&sid)).unwrap())
    });
    group.finish();
}

/// The second factor's per-login work: taking a TOTP code (three candidate steps, each an
/// HMAC-SHA1, after opening the sealed secret) and a recovery code's MAC.
fn second_factor(c: &mut Criterion) {
    use authd::auth::mfa::MfaKey;
    use authd::auth::mfa::totp::{code_for_step, matching_step, new_secret, step_at};
    let key = MfaKey::from_bytes([7; 32]);
    let secret = new_secret();
    let sealed = key.seal(42, &secret);
    let now = now();
    let code = code_for_step(&secret, step_at(now) + 1);
    let mut group = c.benchmark_group("second_factor");
    group.bench_function("open_and_match_totp", |b| {
        b.iter(|| {
            let secret = key.open(42, black_box(&sealed)).unwrap();
            matching_step(&secret, black_box(&code), now, 0).unwrap()
        })
    });
    group.bench_function("recovery_code_mac", |b| {
        b.iter(|| key.recovery_mac(42, black_box("abcdefgh2345")))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = token_verify, store_reads, second_factor
}
criterion_main!(benches);

//! The second factor's rules on the domain, with time as a parameter: exact windows,
//! replays at step boundaries, the `mfa_token`'s lifetime and death, and what the store
//! holds.

#![allow(clippy::unwrap_used)]

use super::testing::{Domain, NOW, PASSWORD};
use super::{AuthError, Channel, MfaToken, Principal, TokenPair};
use crate::auth::mfa::totp::{code_for_step, decode_base32, step_at};
use crate::auth::password::Password;
use crate::store::UnixSeconds;

/// A user enrolled at [`NOW`] (confirmed with the code of `NOW`'s step): its secret (base32)
/// and recovery codes.
async fn enrolled(domain: &Domain, name: &str) -> (String, Vec<String>) {
    domain.create_user(name, &[]).await;
    let pair = domain.login(name).await;
    let principal = principal(domain, &pair);
    let enrolment = domain
        .authority
        .begin_totp(&domain.settings, &principal, &password(), None, NOW)
        .await
        .unwrap();
    let secret = decode_base32(&enrolment.secret).unwrap();
    let codes = domain
        .authority
        .confirm_totp(&principal, &code_for_step(&secret, step_at(NOW)), NOW)
        .await
        .unwrap();
    (enrolment.secret, codes)
}

fn principal(domain: &Domain, pair: &TokenPair) -> Principal {
    domain
        .authority
        .authenticate(&domain.settings, &pair.access_token, NOW)
        .unwrap()
}

fn password() -> Password {
    Password::new(PASSWORD.into())
}

fn code(secret: &str, step: u64) -> String {
    code_for_step(&decode_base32(secret).unwrap(), step)
}

async fn login(
    domain: &Domain,
    name: &str,
    code: Option<&str>,
    now: UnixSeconds,
) -> Result<TokenPair, AuthError> {
    login_as(domain, name, &password(), code, now).await
}

async fn login_as(
    domain: &Domain,
    name: &str,
    password: &Password,
    code: Option<&str>,
    now: UnixSeconds,
) -> Result<TokenPair, AuthError> {
    domain
        .authority
        .login_with_code(
            &domain.settings,
            name,
            password,
            code,
            None,
            Channel::Api,
            now,
        )
        .await
}

async fn mfa_token(domain: &Domain, name: &str, now: UnixSeconds) -> MfaToken {
    match login(domain, name, None, now).await {
        Err(AuthError::MfaRequired(token)) => token,
        other => panic!("expected mfa_required, got {other:?}"),
    }
}

async fn second_step(
    domain: &Domain,
    token: &MfaToken,
    code: &str,
    now: UnixSeconds,
) -> Result<TokenPair, AuthError> {
    domain
        .authority
        .login_second_step(&domain.settings, token, code, None, Channel::Api, now)
        .await
}

#[tokio::test]
async fn a_step_s_code_is_taken_once_and_never_an_earlier_one() {
    let domain = Domain::with(&[("AUTHD__LOGIN__MAX_FAILURES", "50")]).await;
    let (secret, _) = enrolled(&domain, "alice").await;
    let step = step_at(NOW);
    // The confirm used this step: its code is spent.
    let replay = login(&domain, "alice", Some(&code(&secret, step)), NOW).await;
    assert!(
        matches!(replay, Err(AuthError::InvalidCredentials)),
        "{replay:?}"
    );
    // The next step's code is within the window, once.
    let next = code(&secret, step + 1);
    login(&domain, "alice", Some(&next), NOW).await.unwrap();
    let again = login(&domain, "alice", Some(&next), NOW + 30).await;
    assert!(
        matches!(again, Err(AuthError::InvalidCredentials)),
        "{again:?}"
    );
    // Thirty seconds on, the step after is current; two steps ahead is outside the window.
    let far = login(&domain, "alice", Some(&code(&secret, step + 4)), NOW + 30).await;
    assert!(matches!(far, Err(AuthError::InvalidCredentials)), "{far:?}");
    login(&domain, "alice", Some(&code(&secret, step + 2)), NOW + 30)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_code_a_minute_old_is_refused() {
    let domain = Domain::new().await;
    let (secret, _) = enrolled(&domain, "alice").await;
    let later = NOW + 300;
    let old = code(&secret, step_at(later) - 2);
    let result = login(&domain, "alice", Some(&old), later).await;
    assert!(
        matches!(result, Err(AuthError::InvalidCredentials)),
        "{result:?}"
    );
    let previous = code(&secret, step_at(later) - 1);
    login(&domain, "alice", Some(&previous), later)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_mfa_token_lives_five_minutes() {
    let domain = Domain::new().await;
    let (secret, _) = enrolled(&domain, "alice").await;
    let token = mfa_token(&domain, "alice", NOW).await;
    let at = NOW + 5 * 60;
    let late = second_step(&domain, &token, &code(&secret, step_at(at)), at).await;
    assert!(matches!(late, Err(AuthError::InvalidGrant(_))), "{late:?}");
    let token = mfa_token(&domain, "alice", NOW + 60).await;
    let at = NOW + 60 + 5 * 60 - 1;
    second_step(&domain, &token, &code(&secret, step_at(at)), at)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_fifth_wrong_code_kills_the_token_and_a_right_one_uses_it_up() {
    let domain = Domain::with(&[("AUTHD__LOGIN__MAX_FAILURES", "50")]).await;
    let (secret, _) = enrolled(&domain, "alice").await;
    let right = code(&secret, step_at(NOW) + 1);
    let token = mfa_token(&domain, "alice", NOW).await;
    for _ in 0..4 {
        let wrong = second_step(&domain, &token, "000000", NOW).await;
        assert!(
            matches!(wrong, Err(AuthError::InvalidCredentials)),
            "{wrong:?}"
        );
    }
    // The fifth wrong code still answers as a wrong code; then the token is dead.
    let fifth = second_step(&domain, &token, "000000", NOW).await;
    assert!(
        matches!(fifth, Err(AuthError::InvalidCredentials)),
        "{fifth:?}"
    );
    let dead = second_step(&domain, &token, &right, NOW).await;
    assert!(matches!(dead, Err(AuthError::InvalidGrant(_))), "{dead:?}");

    let token = mfa_token(&domain, "alice", NOW).await;
    let pair = second_step(&domain, &token, &right, NOW).await.unwrap();
    assert!(principal(&domain, &pair).with_otp());
    let used = second_step(&domain, &token, &code(&secret, step_at(NOW) + 1), NOW).await;
    assert!(matches!(used, Err(AuthError::InvalidGrant(_))), "{used:?}");
}

#[tokio::test]
async fn a_password_change_between_the_steps_kills_the_token() {
    let domain = Domain::new().await;
    let (secret, _) = enrolled(&domain, "alice").await;
    let token = mfa_token(&domain, "alice", NOW).await;
    domain
        .update(
            "alice",
            super::UserChanges {
                password: Some(Password::new("another good password".into())),
                ..Default::default()
            },
        )
        .await;
    let result = second_step(&domain, &token, &code(&secret, step_at(NOW) + 1), NOW).await;
    assert!(
        matches!(result, Err(AuthError::InvalidGrant(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_recovery_code_works_once_in_any_spelling_and_counts_as_otp() {
    let domain = Domain::new().await;
    let (_, codes) = enrolled(&domain, "alice").await;
    let shouted = format!(" {} ", codes[3].to_uppercase().replace('-', " "));
    let pair = login(&domain, "alice", Some(&shouted), NOW).await.unwrap();
    assert_eq!(pair.recovery_codes_left, Some(9));
    assert!(principal(&domain, &pair).with_otp());
    let again = login(&domain, "alice", Some(&codes[3]), NOW).await;
    assert!(
        matches!(again, Err(AuthError::InvalidCredentials)),
        "{again:?}"
    );
}

#[tokio::test]
async fn the_store_holds_the_secret_only_sealed_and_the_codes_only_as_macs() {
    let domain = Domain::new().await;
    let (secret, codes) = enrolled(&domain, "alice").await;
    let raw = decode_base32(&secret).unwrap();
    let user = domain.authority.store.user("alice").unwrap();
    let factor = user.record.second_factor.clone().unwrap();
    let sealed = factor.totp.unwrap();
    assert!(!sealed.windows(raw.len()).any(|w| w == raw.as_slice()));
    assert_eq!(
        domain
            .authority
            .mfa_key
            .open(user.record.account_id, &sealed)
            .unwrap(),
        raw
    );
    assert_eq!(factor.recovery_codes.len(), 10);
    for code in &codes {
        let plain = code.replace('-', "");
        assert!(
            !factor
                .recovery_codes
                .iter()
                .any(|mac| mac.windows(plain.len()).any(|w| w == plain.as_bytes()))
        );
    }
}

#[tokio::test]
async fn a_wrong_password_answers_alike_with_or_without_totp() {
    let domain = Domain::new().await;
    enrolled(&domain, "alice").await;
    domain.create_user("bob", &[]).await;
    for name in ["alice", "bob"] {
        for code in [None, Some("123456")] {
            let wrong = Password::new("wrong password".into());
            let result = login_as(&domain, name, &wrong, code, NOW).await;
            assert!(
                matches!(result, Err(AuthError::InvalidCredentials)),
                "{name} {code:?}: {result:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_reset_removes_the_second_factor_and_ends_every_session() {
    let domain = Domain::new().await;
    let (secret, _) = enrolled(&domain, "alice").await;
    let pair = login(
        &domain,
        "alice",
        Some(&code(&secret, step_at(NOW) + 1)),
        NOW,
    )
    .await
    .unwrap();
    domain
        .authority
        .reset_second_factor(&domain.settings, "alice", NOW)
        .await
        .unwrap();
    assert!(
        domain
            .authority
            .authenticate(&domain.settings, &pair.access_token, NOW)
            .is_err()
    );
    assert!(
        !domain
            .authority
            .store
            .user("alice")
            .unwrap()
            .record
            .has_totp()
    );
    let plain = login(&domain, "alice", None, NOW).await.unwrap();
    assert!(!principal(&domain, &plain).with_otp());
}

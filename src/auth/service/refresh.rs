//! Exchanging a refresh token (rotation): one compare-and-swap on the token's record, so
//! of concurrent uses exactly one rotates. A token presented again is reuse and ends its
//! session — unless it was issued in the browser's refresh cookie, comes back in it, and
//! within `cookie.refresh_grace` (a browser's parallel tabs): that yields a fresh access
//! token for the same session instead.

use std::time::Duration;

use super::{ATTEMPTS, AuthError, Authority, RefreshToken, TokenPair, refresh_ttl};
use crate::auth::Settings;
use crate::auth::token::Amr;
use crate::store::{
    Key, RefreshRecord, SessionRecord, Shared, StoreError, Txn, UnixSeconds, UserRecord,
};

const UNKNOWN: &str = "refresh token is invalid or expired";
const REUSED: &str = "refresh token was already used";

/// The way a refresh token travels between authd and its holder. A new token goes back the
/// way the request that earned it came, and its record remembers which: only a token
/// issued in the cookie gets the cookie's grace (API.md), so a token an API client holds
/// cannot be replayed as a cookie to dodge reuse detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A JSON body: `POST /v1/login`, `POST /v1/token/refresh`.
    Api,
    /// The browser's refresh cookie: `POST /login`, the silent refresh of `GET /login`.
    Cookie,
}

/// What a refresh token was exchanged for.
#[derive(Debug)]
pub enum Refreshed {
    /// The token was current: it has been rotated; both tokens are new.
    Rotated(TokenPair),
    /// The token had been rotated moments ago (within the grace): a fresh access token for
    /// the same session, no rotation. The caller already holds the new refresh token, and
    /// handing out the old one again would make its next use look like theft.
    Grace {
        access_token: String,
        expires_in: i64,
        username: String,
        sid: String,
    },
}

impl Authority {
    /// Exchanges `presented`, which came by `channel`, for a new pair handed out the same
    /// way. A rotated token is reuse and ends its whole session, except that one issued in
    /// the cookie, presented in the cookie less than `cookie.refresh_grace` after its
    /// rotation, yields [`Refreshed::Grace`].
    pub async fn refresh(
        &self,
        settings: &Settings,
        presented: &RefreshToken,
        channel: Channel,
        now: UnixSeconds,
    ) -> Result<Refreshed, AuthError> {
        self.check_current()?;
        let old_hash = presented.hash();
        for _ in 0..ATTEMPTS {
            let record = self
                .store
                .refresh(&old_hash)
                .await?
                .ok_or(AuthError::InvalidGrant(UNKNOWN))?;
            // The token was read from the store itself; its session may not have reached
            // this instance's view yet (cluster mode).
            self.store.catch_up_session(&record.record.sid).await?;
            if let Some(rotated_at) = record.record.rotated_at {
                let grace = if channel == Channel::Cookie && record.record.issued_in_cookie {
                    settings.config.cookie.refresh_grace
                } else {
                    Duration::ZERO
                };
                let sid = record.record.sid;
                if within_grace(rotated_at, grace, now) {
                    let (session, user) = self
                        .live_session(&sid, now)
                        .ok_or(AuthError::InvalidGrant(UNKNOWN))?;
                    let access = settings.tokens.issue(
                        &settings.keys,
                        &user.record.username,
                        &sid,
                        &user.record.roles,
                        Amr::of(session.record.with_otp),
                        now,
                    )?;
                    return Ok(Refreshed::Grace {
                        access_token: access.token,
                        expires_in: settings.tokens.access_ttl(),
                        username: user.record.username.clone(),
                        sid,
                    });
                }
                self.revoke_session(settings, &sid, Some("refresh token reused".into()), now)
                    .await?;
                return Err(AuthError::InvalidGrant(REUSED));
            }
            if record.record.expires_at <= now {
                return Err(AuthError::InvalidGrant(UNKNOWN));
            }
            // Refuse before rotating when the account can no longer use the session.
            let (session, user) = self
                .live_session(&record.record.sid, now)
                .ok_or(AuthError::InvalidGrant(UNKNOWN))?;
            let next = RefreshToken::generate();
            let expires_at = now + refresh_ttl(settings);
            let mut rotated = record.record.clone();
            rotated.rotated_at = Some(now);
            let mut renewed = (*session.record).clone();
            renewed.last_refreshed_at = now;
            renewed.expires_at = expires_at;
            renewed.access_expires_at = renewed
                .access_expires_at
                .max(now + settings.tokens.access_ttl());
            let mut txn = Txn::default();
            txn.expect(Key::Refresh(old_hash), Some(record.version))
                .expect(Key::Session(renewed.sid.clone()), Some(session.version))
                .expect_user(&user.record.username, Some(&user))
                .put_refresh(old_hash, rotated)
                .put_refresh(
                    next.hash(),
                    RefreshRecord {
                        sid: renewed.sid.clone(),
                        issued_at: now,
                        expires_at,
                        rotated_at: None,
                        issued_in_cookie: channel == Channel::Cookie,
                    },
                )
                .put_session(renewed);
            match self.store.commit(txn).await {
                Ok(_) => {
                    let pair =
                        self.token_pair(settings, &user.record, &session.record, next, now)?;
                    return Ok(Refreshed::Rotated(pair));
                }
                // Another use of the token, or a change of its session or account, won:
                // decide again on what is stored now.
                Err(StoreError::Conflict) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }

    /// [`Authority::refresh`] for the API, which has no grace: the answer is a new pair.
    pub async fn refresh_pair(
        &self,
        settings: &Settings,
        presented: &RefreshToken,
        now: UnixSeconds,
    ) -> Result<TokenPair, AuthError> {
        match self.refresh(settings, presented, Channel::Api, now).await? {
            Refreshed::Rotated(pair) => Ok(pair),
            // Cannot happen without a grace; refusing is the safe answer.
            Refreshed::Grace { .. } => Err(AuthError::InvalidGrant(REUSED)),
        }
    }

    /// The session `sid` and its user, when the session is still live: not expired, its
    /// account still exists under the same identity, is enabled and had no revoke-all since.
    pub(super) fn live_session(
        &self,
        sid: &str,
        now: UnixSeconds,
    ) -> Option<(Shared<SessionRecord>, Shared<UserRecord>)> {
        let session = self.store.session(sid)?;
        if session.record.expires_at <= now {
            return None;
        }
        let user = self.store.user(&session.record.username)?;
        let live = user.record.account_id == session.record.account_id
            && user.record.generation == session.record.generation
            && !user.record.disabled;
        live.then_some((session, user))
    }

    /// Ends the session that `presented` (current or already rotated) belongs to: a
    /// browser logging out after its access cookie expired. `None` for an unknown token.
    pub async fn logout_by_refresh(
        &self,
        settings: &Settings,
        presented: &RefreshToken,
        now: UnixSeconds,
    ) -> Result<Option<String>, AuthError> {
        self.check_current()?;
        let Some(record) = self.store.refresh(&presented.hash()).await? else {
            return Ok(None);
        };
        let sid = record.record.sid;
        self.revoke_session(settings, &sid, Some("logout".into()), now)
            .await?;
        Ok(Some(sid))
    }
}

/// Whether a token rotated at `rotated_at` is still within `grace` at `now`. Times have
/// whole seconds, so a grace of `0s` never applies, and `10s` covers 0–9 elapsed seconds.
fn within_grace(rotated_at: UnixSeconds, grace: Duration, now: UnixSeconds) -> bool {
    // A wall clock that stepped back counts as no time elapsed.
    let elapsed_ms = u128::from((now - rotated_at).max(0).unsigned_abs()) * 1000;
    elapsed_ms < grace.as_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_covers_whole_seconds_below_the_window() {
        let ten = Duration::from_secs(10);
        assert!(within_grace(100, ten, 100));
        assert!(within_grace(100, ten, 109));
        assert!(!within_grace(100, ten, 110));
        assert!(within_grace(100, ten, 95), "clock stepped back");
        assert!(!within_grace(100, Duration::ZERO, 100));
        assert!(within_grace(100, Duration::from_millis(500), 100));
        assert!(!within_grace(100, Duration::from_millis(500), 101));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod flow_tests {
    use super::super::testing::{Domain, NOW, PASSWORD};
    use super::*;
    use crate::auth::password::Password;
    use crate::auth::service::TokenRejection;

    async fn refresh(
        domain: &Domain,
        token: &RefreshToken,
        channel: Channel,
        now: i64,
    ) -> Result<Refreshed, AuthError> {
        domain
            .authority
            .refresh(&domain.settings, token, channel, now)
            .await
    }

    /// A login through the browser's form: its refresh token is issued in the cookie.
    async fn cookie_login(domain: &Domain, username: &str) -> TokenPair {
        domain
            .authority
            .login(
                &domain.settings,
                username,
                &Password::new(PASSWORD.into()),
                None,
                Channel::Cookie,
                NOW,
            )
            .await
            .unwrap()
    }

    fn rotated(result: Result<Refreshed, AuthError>) -> TokenPair {
        match result {
            Ok(Refreshed::Rotated(pair)) => pair,
            other => panic!("expected a rotation, got {other:?}"),
        }
    }

    /// Whether the stored record of `token` says it was issued in the cookie.
    async fn issued_in_cookie(domain: &Domain, token: &RefreshToken) -> bool {
        let record = domain.authority.store.refresh(&token.hash()).await;
        record.unwrap().unwrap().record.issued_in_cookie
    }

    fn assert_session_revoked(domain: &Domain, pair: &TokenPair, now: i64) {
        let refused = domain
            .authority
            .authenticate(&domain.settings, &pair.access_token, now);
        assert!(
            matches!(
                refused,
                Err(AuthError::InvalidToken(TokenRejection::Revoked))
            ),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn refresh_rotates_and_the_new_pair_works() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let first = domain.login("alice").await;
        let second = rotated(refresh(&domain, &first.refresh_token, Channel::Api, NOW + 60).await);
        assert_eq!(second.sid, first.sid);
        assert_ne!(second.refresh_token, first.refresh_token);
        domain
            .authority
            .authenticate(&domain.settings, &second.access_token, NOW + 60)
            .unwrap();
        let third = rotated(refresh(&domain, &second.refresh_token, Channel::Api, NOW + 120).await);
        let session = domain.authority.store.session(&third.sid).unwrap();
        assert_eq!(session.record.last_refreshed_at, NOW + 120);
    }

    #[tokio::test]
    async fn reuse_of_a_rotated_token_ends_the_whole_session() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let first = domain.login("alice").await;
        let second = rotated(refresh(&domain, &first.refresh_token, Channel::Api, NOW).await);
        let reuse = refresh(&domain, &first.refresh_token, Channel::Api, NOW).await;
        assert!(
            matches!(reuse, Err(AuthError::InvalidGrant(REUSED))),
            "{reuse:?}"
        );
        assert_session_revoked(&domain, &second, NOW);
        let after = refresh(&domain, &second.refresh_token, Channel::Api, NOW).await;
        assert!(
            matches!(after, Err(AuthError::InvalidGrant(UNKNOWN))),
            "{after:?}"
        );
    }

    #[tokio::test]
    async fn a_cookie_token_presented_again_within_the_grace_gets_an_access_token_only() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let first = cookie_login(&domain, "alice").await;
        let second = rotated(refresh(&domain, &first.refresh_token, Channel::Cookie, NOW).await);
        match refresh(&domain, &first.refresh_token, Channel::Cookie, NOW + 9).await {
            Ok(Refreshed::Grace {
                access_token, sid, ..
            }) => {
                assert_eq!(sid, first.sid);
                domain
                    .authority
                    .authenticate(&domain.settings, &access_token, NOW + 9)
                    .unwrap();
            }
            other => panic!("expected the grace, got {other:?}"),
        }
        // The grace did not rotate: the token handed out by the rotation still works.
        let late = refresh(&domain, &first.refresh_token, Channel::Cookie, NOW + 10).await;
        assert!(
            matches!(late, Err(AuthError::InvalidGrant(REUSED))),
            "{late:?}"
        );
        let after = refresh(&domain, &second.refresh_token, Channel::Cookie, NOW + 10).await;
        assert!(
            matches!(after, Err(AuthError::InvalidGrant(UNKNOWN))),
            "{after:?}"
        );
    }

    #[tokio::test]
    async fn an_api_token_replayed_as_the_cookie_within_the_grace_is_reuse() {
        // Someone holding an API client's already-rotated refresh token tries to pass it
        // off as a browser's parallel tab.
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let first = domain.login("alice").await;
        let second = rotated(refresh(&domain, &first.refresh_token, Channel::Api, NOW).await);

        let replay = refresh(&domain, &first.refresh_token, Channel::Cookie, NOW + 1).await;

        assert!(
            matches!(replay, Err(AuthError::InvalidGrant(REUSED))),
            "{replay:?}"
        );
        assert_session_revoked(&domain, &second, NOW + 1);
    }

    #[tokio::test]
    async fn a_cookie_token_presented_again_on_the_api_is_reuse() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let first = cookie_login(&domain, "alice").await;
        let second = rotated(refresh(&domain, &first.refresh_token, Channel::Cookie, NOW).await);

        let reuse = refresh(&domain, &first.refresh_token, Channel::Api, NOW + 1).await;

        assert!(
            matches!(reuse, Err(AuthError::InvalidGrant(REUSED))),
            "{reuse:?}"
        );
        assert_session_revoked(&domain, &second, NOW + 1);
    }

    #[tokio::test]
    async fn each_new_token_records_the_channel_it_is_handed_out_in() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let api = domain.login("alice").await;
        let browser = cookie_login(&domain, "alice").await;
        assert!(!issued_in_cookie(&domain, &api.refresh_token).await);
        assert!(issued_in_cookie(&domain, &browser.refresh_token).await);

        // The answer goes back the way the request came.
        let into_cookie = rotated(refresh(&domain, &api.refresh_token, Channel::Cookie, NOW).await);
        let into_body = rotated(refresh(&domain, &browser.refresh_token, Channel::Api, NOW).await);

        assert!(issued_in_cookie(&domain, &into_cookie.refresh_token).await);
        assert!(!issued_in_cookie(&domain, &into_body.refresh_token).await);
    }

    #[tokio::test]
    async fn a_grace_of_zero_seconds_never_applies() {
        let domain = Domain::with(&[("AUTHD__COOKIE__REFRESH_GRACE", "0s")]).await;
        domain.create_user("alice", &[]).await;
        let first = cookie_login(&domain, "alice").await;
        rotated(refresh(&domain, &first.refresh_token, Channel::Cookie, NOW).await);

        let reuse = refresh(&domain, &first.refresh_token, Channel::Cookie, NOW).await;

        assert!(
            matches!(reuse, Err(AuthError::InvalidGrant(REUSED))),
            "{reuse:?}"
        );
    }

    #[tokio::test]
    async fn of_concurrent_refreshes_of_one_token_exactly_one_rotates() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let pair = domain.login("alice").await;
        let results = futures_util::future::join_all(
            (0..4).map(|_| refresh(&domain, &pair.refresh_token, Channel::Api, NOW)),
        )
        .await;
        let rotations = results
            .iter()
            .filter(|r| matches!(r, Ok(Refreshed::Rotated(_))))
            .count();
        assert_eq!(rotations, 1, "{results:?}");
    }

    #[tokio::test]
    async fn expired_unknown_and_disabled_refreshes_are_invalid_grants() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let pair = domain.login("alice").await;
        let ttl = refresh_ttl(&domain.settings);
        let expired = refresh(&domain, &pair.refresh_token, Channel::Api, NOW + ttl).await;
        assert!(
            matches!(expired, Err(AuthError::InvalidGrant(UNKNOWN))),
            "{expired:?}"
        );
        let unknown = refresh(
            &domain,
            &RefreshToken::new("nope".into()),
            Channel::Api,
            NOW,
        )
        .await;
        assert!(matches!(unknown, Err(AuthError::InvalidGrant(UNKNOWN))));
        domain.disable("alice").await;
        let disabled = refresh(&domain, &pair.refresh_token, Channel::Api, NOW).await;
        assert!(matches!(disabled, Err(AuthError::InvalidGrant(UNKNOWN))));
    }
}

//! The browser-session operations of [`Authority`]: refreshing from a cookie with the grace
//! window for parallel tabs, and ending the session a refresh cookie belongs to.

use std::time::Duration;

use super::{AuthError, Authority, RefreshToken, TokenPair, refresh_ttl};
use crate::auth::Settings;
use crate::store::{Rotation, UnixSeconds};

const UNKNOWN: &str = "refresh token is invalid or expired";

/// What a refresh cookie was exchanged for.
#[derive(Debug)]
pub enum BrowserRefresh {
    /// The cookie was current: it has been rotated, and both cookies are to be renewed.
    Rotated(TokenPair),
    /// The cookie had been rotated moments ago (by another tab's request, whose answer set
    /// the new refresh cookie): a fresh access token for the same session, no rotation.
    /// Only the access cookie is to be set — the browser already holds the new refresh
    /// cookie, and setting the old one again would make its next use look like theft.
    Grace {
        access_token: String,
        expires_in: i64,
        username: String,
        sid: String,
    },
}

impl Authority {
    /// [`Authority::refresh`] for a browser's refresh cookie: a cookie presented again
    /// within `grace` after its rotation yields a fresh access token for its (still live)
    /// session instead of counting as theft. Outside the window, reuse ends the session.
    pub async fn refresh_browser(
        &self,
        settings: &Settings,
        presented: &RefreshToken,
        grace: Duration,
        now: UnixSeconds,
    ) -> Result<BrowserRefresh, AuthError> {
        let old_hash = presented.hash();
        let record = self
            .store
            .get_refresh(&old_hash)?
            .ok_or(AuthError::InvalidGrant(UNKNOWN))?;
        if record.rotated_at.is_none() {
            // Refuse before rotating when the account can no longer use the session.
            self.live_session(&record.sid, now)?
                .ok_or(AuthError::InvalidGrant(UNKNOWN))?;
        }
        let next = RefreshToken(crate::auth::random_id(32));
        let expires_at = now + refresh_ttl(settings);
        // Rotating (not just reading `rotated_at` above) decides atomically: of two tabs
        // presenting one cookie at once, one rotates and the other lands in the grace arm.
        match self.store.rotate_refresh(
            &old_hash,
            &next.hash(),
            now,
            expires_at,
            now + settings.tokens.access_ttl(),
        )? {
            Rotation::Rotated(session) => {
                let (_, user) = self
                    .live_session(&session.sid, now)?
                    .ok_or(AuthError::InvalidGrant(UNKNOWN))?;
                let pair = self.token_pair(settings, &user, &session.sid, next, now)?;
                self.store.flush().await?;
                Ok(BrowserRefresh::Rotated(pair))
            }
            Rotation::AlreadyRotated { sid, rotated_at }
                if within_grace(rotated_at, grace, now) =>
            {
                let (_, user) = self
                    .live_session(&sid, now)?
                    .ok_or(AuthError::InvalidGrant(UNKNOWN))?;
                let access = settings.tokens.issue(
                    &settings.keys,
                    &user.username,
                    &sid,
                    &user.roles,
                    now,
                )?;
                Ok(BrowserRefresh::Grace {
                    access_token: access.token,
                    expires_in: settings.tokens.access_ttl(),
                    username: user.username,
                    sid,
                })
            }
            Rotation::AlreadyRotated { sid, .. } => {
                self.store.revoke_session(&self.session_revocation(
                    settings,
                    &sid,
                    "refresh token reused",
                    now,
                ))?;
                self.store.flush().await?;
                Err(AuthError::InvalidGrant("refresh token was already used"))
            }
            Rotation::Unknown => Err(AuthError::InvalidGrant(UNKNOWN)),
        }
    }

    /// Ends the session that `presented` (current or already rotated) belongs to: a
    /// browser logging out after its access cookie expired. `None` for an unknown token.
    pub async fn logout_by_refresh(
        &self,
        settings: &Settings,
        presented: &RefreshToken,
        now: UnixSeconds,
    ) -> Result<Option<String>, AuthError> {
        let Some(record) = self.store.get_refresh(&presented.hash())? else {
            return Ok(None);
        };
        self.store.revoke_session(&self.session_revocation(
            settings,
            &record.sid,
            "logout",
            now,
        ))?;
        self.store.flush().await?;
        Ok(Some(record.sid))
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

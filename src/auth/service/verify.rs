//! Authenticating a bearer access token: its signature and claims, then the revocation
//! state behind it — all from the in-memory view, so it never waits on the store.

use std::sync::Arc;

use super::{AuthError, Authority, TokenRejection};
use crate::auth::Settings;
use crate::auth::token::Claims;
use crate::store::{UnixSeconds, UserRecord};

/// The verified caller of a bearer-protected request: the token's claims and the user's
/// current record (roles, creation time) from the store.
#[derive(Debug, Clone)]
pub struct Principal {
    user: Arc<UserRecord>,
    pub claims: Arc<Claims>,
    /// The session's login took a second factor (`amr` has `otp`).
    with_otp: bool,
}

impl Principal {
    pub fn username(&self) -> &str {
        &self.user.username
    }

    /// The user's current roles.
    pub fn roles(&self) -> &[String] {
        &self.user.roles
    }

    pub fn created_at(&self) -> UnixSeconds {
        self.user.created_at
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.user.roles.iter().any(|r| r == role)
    }

    /// Whether the session's login took a second factor.
    pub fn with_otp(&self) -> bool {
        self.with_otp
    }

    /// Whether the account has TOTP on.
    pub fn has_totp(&self) -> bool {
        self.user.has_totp()
    }

    /// The account as the store holds it now.
    pub fn user(&self) -> &UserRecord {
        &self.user
    }
}

impl Authority {
    /// Verifies a bearer access token: signature and claims, then the revocation state:
    /// the jti is not revoked, the session exists (revoking a sid deletes it) and belongs
    /// to the token's user, whose account is the session's, is enabled, and had no
    /// revoke-all since the session began.
    pub fn authenticate(
        &self,
        settings: &Settings,
        token: &str,
        now: UnixSeconds,
    ) -> Result<Principal, AuthError> {
        use TokenRejection::{Disabled, Revoked, UserGone};
        self.check_current()?;
        let claims = settings.tokens.verify(&settings.keys, token, now)?;
        if self.store.is_jti_revoked(&claims.jti) {
            return Err(AuthError::InvalidToken(Revoked));
        }
        let session = self
            .store
            .session(&claims.sid)
            .filter(|session| session.record.username == claims.sub)
            .ok_or(AuthError::InvalidToken(Revoked))?;
        let user = self
            .store
            .user(&claims.sub)
            .filter(|user| user.record.account_id == session.record.account_id)
            .ok_or(AuthError::InvalidToken(UserGone))?;
        if user.record.disabled {
            return Err(AuthError::InvalidToken(Disabled));
        }
        if user.record.generation != session.record.generation {
            return Err(AuthError::InvalidToken(Revoked));
        }
        Ok(Principal {
            user: user.record,
            claims,
            with_otp: session.record.with_otp,
        })
    }

    /// [`Authority::authenticate`], except that a token whose session or user the view
    /// does not hold is first looked up in the store itself (cluster mode: a login on
    /// another instance may not have reached this one yet). One lookup per session.
    pub async fn authenticate_fresh(
        &self,
        settings: &Settings,
        token: &str,
        now: UnixSeconds,
    ) -> Result<Principal, AuthError> {
        let first = self.authenticate(settings, token, now);
        let Err(AuthError::InvalidToken(TokenRejection::Revoked | TokenRejection::UserGone)) =
            &first
        else {
            return first;
        };
        if !self.store.may_lag() {
            return first;
        }
        let claims = settings.tokens.verify(&settings.keys, token, now)?;
        let missing =
            self.store.session(&claims.sid).is_none() || self.store.user(&claims.sub).is_none();
        if !missing || self.caught_up.get(&claims.sid).is_some() {
            return first;
        }
        self.store.catch_up(&claims.sid, &claims.sub).await?;
        self.caught_up.insert(claims.sid.clone(), ());
        self.authenticate(settings, token, now)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testing::{Domain, NOW};
    use super::*;
    use crate::auth::service::RevocationTarget;
    use crate::auth::token::TokenError;

    fn refusal(domain: &Domain, token: &str, now: UnixSeconds) -> TokenRejection {
        match domain.authority.authenticate(&domain.settings, token, now) {
            Err(AuthError::InvalidToken(rejection)) => rejection,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn each_refusal_names_its_reason() {
        let domain = Domain::new().await;
        for name in ["alice", "bob", "carol", "dave"] {
            domain.create_user(name, &[]).await;
        }
        let ttl = domain.settings.tokens.access_ttl();
        let leeway = domain.settings.tokens.leeway();

        let alice = domain.login("alice").await;
        assert_eq!(
            refusal(&domain, &alice.access_token, NOW + ttl + leeway + 1),
            TokenRejection::Token(TokenError::Expired)
        );
        assert_eq!(
            refusal(&domain, "not.a.token", NOW),
            TokenRejection::Token(TokenError::Malformed)
        );

        let jti = domain
            .authority
            .authenticate(&domain.settings, &alice.access_token, NOW)
            .unwrap()
            .claims
            .jti
            .clone();
        domain.revoke(RevocationTarget::Jti(jti), NOW).await;
        assert_eq!(
            refusal(&domain, &alice.access_token, NOW),
            TokenRejection::Revoked
        );

        let bob = domain.login("bob").await;
        domain
            .revoke(RevocationTarget::Sid(bob.sid.clone()), NOW)
            .await;
        assert_eq!(
            refusal(&domain, &bob.access_token, NOW),
            TokenRejection::Revoked
        );

        let carol = domain.login("carol").await;
        domain.disable("carol").await;
        assert_eq!(
            refusal(&domain, &carol.access_token, NOW),
            TokenRejection::Disabled
        );

        let dave = domain.login("dave").await;
        domain
            .revoke(RevocationTarget::Username("dave".into()), NOW)
            .await;
        assert_eq!(
            refusal(&domain, &dave.access_token, NOW),
            TokenRejection::Revoked
        );
        // A login after the revoke-all works, even within the same second.
        let again = domain.login("dave").await;
        domain
            .authority
            .authenticate(&domain.settings, &again.access_token, NOW)
            .unwrap();
    }

    #[tokio::test]
    async fn a_token_of_a_deleted_and_recreated_user_is_refused() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let old = domain.login("alice").await;
        domain
            .authority
            .delete_user(&domain.settings, "alice", NOW)
            .await
            .unwrap();
        domain.create_user("alice", &[]).await;
        let rejection = refusal(&domain, &old.access_token, NOW);
        assert!(
            matches!(
                rejection,
                TokenRejection::Revoked | TokenRejection::UserGone
            ),
            "{rejection:?}"
        );
        let fresh = domain.login("alice").await;
        domain
            .authority
            .authenticate(&domain.settings, &fresh.access_token, NOW)
            .unwrap();
    }
}

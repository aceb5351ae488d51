//! The admin's revocations: by jti, by token, by sid, by username (a revoke-all), the
//! list, and purging entries that no longer block anything.

use super::{
    AuthError, Authority, blocked_until, longest_token_lifetime, user_not_found, user_revocation,
};
use crate::auth::Settings;
use crate::auth::names::Username;
use crate::store::{NewRevocation, PurgeCounts, RevocationKind, RevocationRecord, UnixSeconds};

/// What to revoke.
#[derive(Debug)]
pub enum RevocationTarget {
    Jti(String),
    Token(String),
    Sid(String),
    Username(String),
}

impl Authority {
    /// Records a revocation and returns once it is durable. Revoking a jti or sid again
    /// answers the first entry; revoking a username again is a new revoke-all.
    pub async fn revoke(
        &self,
        settings: &Settings,
        target: RevocationTarget,
        reason: Option<String>,
        now: UnixSeconds,
    ) -> Result<RevocationRecord, AuthError> {
        match target {
            // An unknown jti: its token, if any, expires at the latest when the longest
            // token issued now would.
            RevocationTarget::Jti(jti) => {
                let revocation = NewRevocation {
                    kind: RevocationKind::Jti,
                    id: check_id(jti, "jti")?,
                    revoked_at: now,
                    expires_at: longest_token_lifetime(now),
                    reason,
                };
                self.record_once(&revocation, |_| {}).await
            }
            RevocationTarget::Token(token) => {
                let claims = settings
                    .tokens
                    .verify_signature(&settings.keys, &token)
                    .map_err(|err| AuthError::InvalidRequest(format!("cannot revoke: {err}")))?;
                let revocation = NewRevocation {
                    kind: RevocationKind::Jti,
                    id: claims.jti,
                    revoked_at: now,
                    expires_at: blocked_until(claims.exp, now),
                    reason,
                };
                self.record_once(&revocation, |_| {}).await
            }
            RevocationTarget::Sid(sid) => {
                let sid = check_id(sid, "sid")?;
                self.revoke_session(settings, &sid, reason, now).await
            }
            RevocationTarget::Username(username) => {
                let name = Username::parse(&username).ok_or_else(|| user_not_found(&username))?;
                let mut revocation = user_revocation(settings, name.as_str(), "", now);
                revocation.reason = reason;
                self.revoke_all(name.as_str(), &revocation, |_| {})
                    .await?
                    .map(|(_, entry)| entry)
                    .ok_or_else(|| user_not_found(&username))
            }
        }
    }

    /// A page of revocation entries, oldest first, and the `next` cursor.
    pub async fn list_revocations(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<RevocationRecord>, Option<u64>), AuthError> {
        Ok(self.store.revocations_page(after, limit).await?)
    }

    /// How many revocation entries are stored (for the metrics).
    pub async fn revocation_count(&self) -> Result<usize, AuthError> {
        Ok(self.store.revocation_count().await?)
    }

    /// Removes revocation entries, sessions and refresh tokens that expired before `now`.
    pub async fn purge_expired(&self, now: UnixSeconds) -> Result<PurgeCounts, AuthError> {
        Ok(self.store.purge_expired(now).await?)
    }
}

/// jti and sid values are opaque, but bounded so the revocation list cannot be stuffed.
fn check_id(id: String, field: &str) -> Result<String, AuthError> {
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(AuthError::InvalidRequest(format!(
            "{field} must be 1-256 printable characters"
        )));
    }
    Ok(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testing::{Domain, NOW};
    use super::*;

    async fn revoke(
        domain: &Domain,
        target: RevocationTarget,
        now: UnixSeconds,
    ) -> RevocationRecord {
        domain
            .authority
            .revoke(&domain.settings, target, None, now)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn revoking_a_jti_or_sid_again_keeps_the_first_entry() {
        let domain = Domain::new().await;
        let first = revoke(&domain, RevocationTarget::Jti("j1".into()), NOW).await;
        let again = revoke(&domain, RevocationTarget::Jti("j1".into()), NOW + 5).await;
        assert_eq!(first, again);
        let first = revoke(&domain, RevocationTarget::Sid("s1".into()), NOW).await;
        let again = revoke(&domain, RevocationTarget::Sid("s1".into()), NOW + 5).await;
        assert_eq!(first, again);
        let (entries, next) = domain.authority.list_revocations(None, 10).await.unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(next, None);
    }

    #[tokio::test]
    async fn revoking_a_username_again_is_a_new_revoke_all_listed_last() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        revoke(&domain, RevocationTarget::Jti("j1".into()), NOW).await;
        let first = revoke(&domain, RevocationTarget::Username("alice".into()), NOW).await;
        let session = domain.login("alice").await;
        let second = revoke(&domain, RevocationTarget::Username("alice".into()), NOW + 1).await;
        assert!(second.seq > first.seq);
        assert_eq!(second.revoked_at, NOW + 1);
        assert!(
            domain
                .authority
                .authenticate(&domain.settings, &session.access_token, NOW + 1)
                .is_err(),
            "the second revoke-all ends the session begun after the first"
        );
        let (entries, _) = domain.authority.list_revocations(None, 10).await.unwrap();
        let kinds: Vec<_> = entries.iter().map(|e| (e.kind, e.revoked_at)).collect();
        assert_eq!(
            kinds,
            vec![(RevocationKind::Jti, NOW), (RevocationKind::User, NOW + 1)]
        );
        let unknown = domain
            .authority
            .revoke(
                &domain.settings,
                RevocationTarget::Username("nobody".into()),
                None,
                NOW,
            )
            .await;
        assert!(matches!(unknown, Err(AuthError::NotFound(_))));
    }

    #[tokio::test]
    async fn the_list_pages_in_commit_order() {
        let domain = Domain::new().await;
        for i in 0..5 {
            revoke(&domain, RevocationTarget::Jti(format!("j{i}")), NOW).await;
        }
        let (page, next) = domain.authority.list_revocations(None, 2).await.unwrap();
        assert_eq!(
            page.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["j0", "j1"]
        );
        let (page, next) = domain.authority.list_revocations(next, 2).await.unwrap();
        assert_eq!(
            page.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["j2", "j3"]
        );
        let (page, next) = domain.authority.list_revocations(next, 2).await.unwrap();
        assert_eq!((page.len(), next), (1, None));
    }

    #[tokio::test]
    async fn purge_removes_what_blocks_nothing_any_more_and_keeps_the_rest() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let pair = domain.login("alice").await;
        let old = revoke(&domain, RevocationTarget::Jti("old".into()), NOW).await;
        let later = NOW + 2_000_000;
        revoke(&domain, RevocationTarget::Jti("new".into()), later).await;
        let counts = domain
            .authority
            .purge_expired(old.expires_at + 1)
            .await
            .unwrap();
        assert_eq!(counts.revocations, 1);
        assert!(!domain.authority.store.is_jti_revoked("old"));
        assert!(domain.authority.store.is_jti_revoked("new"));
        // The session (14 days) outlives the jti entry; then it goes too, with its token.
        assert_eq!((counts.sessions, counts.refresh_tokens), (0, 0));
        let session_end = domain
            .authority
            .store
            .session(&pair.sid)
            .unwrap()
            .record
            .expires_at;
        let counts = domain
            .authority
            .purge_expired(session_end + 1)
            .await
            .unwrap();
        assert_eq!((counts.sessions, counts.refresh_tokens), (1, 1));
        assert!(domain.authority.store.session(&pair.sid).is_none());
        let (entries, _) = domain.authority.list_revocations(None, 10).await.unwrap();
        assert_eq!(
            entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["new"]
        );
    }
}

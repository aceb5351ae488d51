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
        self.check_current()?;
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
                    ended_sessions: Vec::new(),
                    serial: None,
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
                    ended_sessions: Vec::new(),
                    serial: None,
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
    use super::super::TokenRejection;
    use super::super::testing::{Domain, NOW};
    use super::*;

    #[tokio::test]
    async fn revoking_a_jti_or_sid_again_keeps_the_first_entry() {
        let domain = Domain::new().await;
        let first = domain.revoke(RevocationTarget::Jti("j1".into()), NOW).await;
        let again = domain
            .revoke(RevocationTarget::Jti("j1".into()), NOW + 5)
            .await;
        assert_eq!(first, again);
        let first = domain.revoke(RevocationTarget::Sid("s1".into()), NOW).await;
        let again = domain
            .revoke(RevocationTarget::Sid("s1".into()), NOW + 5)
            .await;
        assert_eq!(first, again);
        let (entries, next) = domain.authority.list_revocations(None, 10).await.unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(next, None);
    }

    #[tokio::test]
    async fn revoking_a_username_again_is_a_new_revoke_all_listed_last() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        domain.revoke(RevocationTarget::Jti("j1".into()), NOW).await;
        let first = domain
            .revoke(RevocationTarget::Username("alice".into()), NOW)
            .await;
        let session = domain.login("alice").await;
        let second = domain
            .revoke(RevocationTarget::Username("alice".into()), NOW + 1)
            .await;
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
            vec![
                (RevocationKind::Jti, NOW),
                (RevocationKind::User, NOW),
                (RevocationKind::User, NOW + 1)
            ],
            "each revoke-all is an entry of its own (the feed's earlier events stay)"
        );
        assert_eq!(first.ended_sessions, Vec::<String>::new());
        assert_eq!(second.ended_sessions, vec![session.sid.clone()]);
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
            domain
                .revoke(RevocationTarget::Jti(format!("j{i}")), NOW)
                .await;
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
        let old = domain
            .revoke(RevocationTarget::Jti("old".into()), NOW)
            .await;
        let later = NOW + 2_000_000;
        domain
            .revoke(RevocationTarget::Jti("new".into()), later)
            .await;
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

    /// The settings of `domain` after a reload to `jwt` values (`access_ttl`, `leeway`).
    fn reloaded(domain: &Domain, access_ttl: u64, leeway: u64) -> Settings {
        let mut config = domain.settings.config.clone();
        config.jwt.access_ttl = std::time::Duration::from_secs(access_ttl);
        config.jwt.leeway = std::time::Duration::from_secs(leeway);
        Settings::load(config).unwrap()
    }

    fn exp_of(domain: &Domain, token: &str) -> UnixSeconds {
        domain
            .settings
            .tokens
            .verify_signature(&domain.settings.keys, token)
            .unwrap()
            .exp
    }

    const LARGEST_LEEWAY: i64 = 300;
    const LONGEST_TOKEN: i64 = 24 * 60 * 60;

    #[tokio::test]
    async fn a_revoked_jti_outlives_its_token_under_any_later_leeway() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let pair = domain.login("alice").await;
        let exp = exp_of(&domain, &pair.access_token);
        // Revoked while a reload has the leeway at 0 s ...
        let lowered = reloaded(&domain, 900, 0);

        let entry = domain
            .authority
            .revoke(
                &lowered,
                RevocationTarget::Token(pair.access_token.clone()),
                None,
                NOW,
            )
            .await
            .unwrap();

        assert_eq!(entry.expires_at, exp + LARGEST_LEEWAY);
        // ... then the leeway goes up to its 5 min cap: the purge just before the entry's
        // end keeps it, so the token, accepted by the clock until exp + 5 min, stays revoked.
        let raised = reloaded(&domain, 900, 300);
        let late = exp + LARGEST_LEEWAY - 1;
        domain.authority.purge_expired(late).await.unwrap();
        let refused = domain
            .authority
            .authenticate(&raised, &pair.access_token, late)
            .unwrap_err();
        assert!(
            matches!(refused, AuthError::InvalidToken(TokenRejection::Revoked)),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn unknown_jtis_and_sids_are_kept_for_the_longest_lifetime_a_token_can_have() {
        let domain = Domain::new().await;
        let shortest = reloaded(&domain, 1, 0);

        for target in [
            RevocationTarget::Jti("never-seen".into()),
            RevocationTarget::Sid("never-seen".into()),
        ] {
            let entry = domain
                .authority
                .revoke(&shortest, target, None, NOW)
                .await
                .unwrap();
            assert_eq!(entry.expires_at, NOW + LONGEST_TOKEN + LARGEST_LEEWAY);
        }
    }

    #[tokio::test]
    async fn a_sid_entry_outlives_tokens_issued_before_a_reload_shortened_access_ttl() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let ten_minutes = reloaded(&domain, 600, 30);
        let pair = domain
            .authority
            .login(
                &ten_minutes,
                "alice",
                &crate::auth::password::Password::new(super::super::testing::PASSWORD.into()),
                None,
                crate::auth::service::Channel::Api,
                NOW,
            )
            .await
            .unwrap();
        let one_minute = reloaded(&domain, 60, 0);

        let entry = domain
            .authority
            .revoke(
                &one_minute,
                RevocationTarget::Sid(pair.sid.clone()),
                None,
                NOW + 10,
            )
            .await
            .unwrap();

        assert_eq!(exp_of(&domain, &pair.access_token), NOW + 600);
        assert_eq!(entry.expires_at, NOW + 600 + LARGEST_LEEWAY);
    }

    #[tokio::test]
    async fn a_user_entry_covers_a_day_of_access_tokens_whatever_access_ttl_says_now() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let mut config = domain.settings.config.clone();
        config.jwt.refresh_ttl = std::time::Duration::from_secs(3600);
        config.jwt.access_ttl = std::time::Duration::from_secs(60);
        let short = Settings::load(config).unwrap();

        let entry = domain
            .authority
            .revoke(
                &short,
                RevocationTarget::Username("alice".into()),
                None,
                NOW,
            )
            .await
            .unwrap();
        let default = domain
            .revoke(RevocationTarget::Username("alice".into()), NOW)
            .await;

        assert_eq!(entry.expires_at, NOW + LONGEST_TOKEN + LARGEST_LEEWAY);
        let fourteen_days = 14 * 24 * 60 * 60;
        assert_eq!(default.expires_at, NOW + fourteen_days + LARGEST_LEEWAY);
    }

    #[tokio::test]
    async fn account_name_names_existing_accounts_only() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;

        assert_eq!(
            domain.authority.account_name("Alice").as_deref(),
            Some("alice")
        );
        assert_eq!(domain.authority.account_name("hunter2-correct-horse"), None);
        assert_eq!(domain.authority.account_name("not a name!"), None);
    }
}

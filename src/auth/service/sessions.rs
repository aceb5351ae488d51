//! The caller's own sessions: logout (one or all), listing, ending one, and changing the
//! password (which ends every other session).

use super::{
    ATTEMPTS, AuthError, Authority, Principal, TokenRejection, user_not_found, user_revocation,
};
use crate::auth::Settings;
use crate::auth::names::Username;
use crate::auth::password::{Password, Verification};
use crate::store::{Key, RevocationRecord, SessionRecord, StoreError, Txn, UnixSeconds};

impl Authority {
    /// Ends the caller's session, or with `all` every session of the account.
    pub async fn logout(
        &self,
        settings: &Settings,
        principal: &Principal,
        all: bool,
        now: UnixSeconds,
    ) -> Result<RevocationRecord, AuthError> {
        if all {
            let revocation =
                user_revocation(settings, principal.username(), "logout (all sessions)", now);
            self.revoke_all(principal.username(), &revocation, |_| {})
                .await?
                .map(|(_, entry)| entry)
                .ok_or(AuthError::InvalidToken(TokenRejection::UserGone))
        } else {
            self.revoke_session(settings, &principal.claims.sid, Some("logout".into()), now)
                .await
        }
    }

    /// The live sessions of `username`: not expired, not revoked, of the current account,
    /// oldest first.
    pub fn sessions(
        &self,
        username: &str,
        now: UnixSeconds,
    ) -> Result<Vec<SessionRecord>, AuthError> {
        let name = Username::parse(username).ok_or_else(|| user_not_found(username))?;
        let user = self
            .store
            .user(name.as_str())
            .ok_or_else(|| user_not_found(username))?;
        let mut sessions: Vec<SessionRecord> = self
            .store
            .sessions_of(name.as_str())
            .into_iter()
            .map(|s| (*s.record).clone())
            .filter(|s| {
                s.account_id == user.record.account_id
                    && s.generation == user.record.generation
                    && s.expires_at > now
            })
            .collect();
        sessions.sort_by(|a, b| (a.created_at, &a.sid).cmp(&(b.created_at, &b.sid)));
        Ok(sessions)
    }

    /// Ends one of the caller's own sessions; another user's (or an unknown) sid is
    /// `NotFound`, so sids of others cannot be probed.
    pub async fn end_own_session(
        &self,
        settings: &Settings,
        principal: &Principal,
        sid: &str,
        now: UnixSeconds,
    ) -> Result<(), AuthError> {
        let owned = self
            .sessions(principal.username(), now)?
            .iter()
            .any(|s| s.sid == sid);
        if !owned {
            return Err(AuthError::NotFound("no such session".into()));
        }
        self.revoke_session(settings, sid, Some("session ended by its user".into()), now)
            .await?;
        Ok(())
    }

    /// Changes the caller's password after checking the current one; every other session
    /// of the user ends, in the same commit (each listed one with a sid entry; one that a
    /// racing login committed meanwhile by the account's new generation). A wrong current
    /// password changes nothing.
    pub async fn change_password(
        &self,
        settings: &Settings,
        principal: &Principal,
        current: &Password,
        new: &Password,
        now: UnixSeconds,
    ) -> Result<(), AuthError> {
        super::users::check_password(settings, new)?;
        let user = self
            .store
            .user(principal.username())
            .ok_or(AuthError::InvalidToken(TokenRejection::UserGone))?;
        match self
            .hasher
            .verify(&settings.cost, current, &user.record.password_hash)
            .await?
        {
            Verification::Match { .. } => {}
            Verification::Mismatch => return Err(AuthError::WrongCurrentPassword),
        }
        let new_hash = self.hasher.hash(&settings.cost, new).await?;
        let checked = user;
        for _ in 0..ATTEMPTS {
            // Only the account whose password was checked: a concurrent delete (and
            // re-create) or another password change wins.
            let user = match self.store.user(principal.username()) {
                Some(user)
                    if user.record.account_id == checked.record.account_id
                        && user.record.password_hash == checked.record.password_hash =>
                {
                    user
                }
                _ => return Err(AuthError::InvalidToken(TokenRejection::UserGone)),
            };
            // The generation moves on, so a session begun under the old password ends even
            // if it was committed after the sessions below were listed; the caller's own
            // session moves to the new generation in the same commit and lives on.
            let mut updated = (*user.record).clone();
            updated.password_hash = new_hash.clone();
            updated.generation += 1;
            let own = self
                .store
                .session(&principal.claims.sid)
                .filter(|s| {
                    s.record.account_id == user.record.account_id
                        && s.record.generation == user.record.generation
                })
                .ok_or(AuthError::InvalidToken(TokenRejection::Revoked))?;
            let mut moved = (*own.record).clone();
            moved.generation = updated.generation;
            let mut txn = Txn::default();
            txn.expect_user(principal.username(), Some(&user))
                .expect(Key::Session(moved.sid.clone()), Some(own.version))
                .put_user(updated)
                .put_session(moved);
            for session in self.sessions(principal.username(), now)? {
                if session.sid == principal.claims.sid {
                    continue;
                }
                let key = Key::Session(session.sid.clone());
                let revocation =
                    self.session_revocation(settings, &session.sid, "password changed", now);
                let stored = self.store.session(&session.sid).map(|s| s.version);
                txn.expect(key.clone(), stored).delete(key);
                // The first entry of a sid revoked before stays.
                if self
                    .store
                    .revocation(revocation.kind, &revocation.id)
                    .await?
                    .is_none()
                {
                    txn.expect(
                        Key::Revocation(revocation.kind, revocation.id.clone()),
                        None,
                    )
                    .revoke(&revocation);
                }
            }
            match self.store.commit(txn).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testing::{Domain, NOW, PASSWORD};
    use super::*;

    #[tokio::test]
    async fn a_password_change_ends_every_other_session_even_one_committed_after_the_listing() {
        let domain = Domain::new().await;
        domain.create_user("alice", &[]).await;
        let mine = domain.login("alice").await;
        let other = domain.login("alice").await;
        let principal = domain
            .authority
            .authenticate(&domain.settings, &mine.access_token, NOW)
            .unwrap();
        let before = domain.authority.store.user("alice").unwrap();
        domain
            .authority
            .change_password(
                &domain.settings,
                &principal,
                &Password::new(PASSWORD.into()),
                &Password::new("a brand new password".into()),
                NOW,
            )
            .await
            .unwrap();
        // What a login that checked the old password leaves when its commit lands between
        // the change's listing of sessions and the change's commit: a session of the old
        // generation that no sid entry names. It must be dead all the same.
        let racing_sid = "racing-session".to_owned();
        let mut txn = Txn::default();
        txn.put_session(SessionRecord {
            sid: racing_sid.clone(),
            username: "alice".into(),
            account_id: before.record.account_id,
            generation: before.record.generation,
            created_at: NOW,
            last_refreshed_at: NOW,
            expires_at: NOW + 3600,
            access_expires_at: NOW + 900,
        });
        domain.authority.store.commit(txn).await.unwrap();
        let racing = domain
            .settings
            .tokens
            .issue(&domain.settings.keys, "alice", &racing_sid, &[], NOW)
            .unwrap();
        for dead in [&other.access_token, &racing.token] {
            assert!(
                domain
                    .authority
                    .authenticate(&domain.settings, dead, NOW)
                    .is_err()
            );
        }
        domain
            .authority
            .authenticate(&domain.settings, &mine.access_token, NOW)
            .unwrap();
        let left: Vec<_> = domain
            .authority
            .sessions("alice", NOW)
            .unwrap()
            .into_iter()
            .map(|s| s.sid)
            .collect();
        assert_eq!(left, vec![mine.sid.clone()]);
        let (entries, _) = domain.authority.list_revocations(None, 10).await.unwrap();
        assert!(
            entries.iter().any(|e| e.id == other.sid),
            "the listed session's sid entry"
        );
    }
}

//! The admin's user management: create, read, list, change, delete — and the revoke-all
//! that disabling, re-passwording and deleting a user carry.

use super::{ATTEMPTS, AuthError, Authority, ended_sessions, user_not_found, user_revocation};
use crate::auth::Settings;
use crate::auth::names::{Username, is_valid_role, password_problem};
use crate::auth::password::Password;
use crate::store::{
    Key, NewRevocation, RevocationRecord, Shared, StoreError, Txn, UnixSeconds, UserRecord,
};

/// A user as the admin API shows it.
pub type User = UserRecord;

/// Changes an admin asks for in one `PATCH`.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub password: Option<Password>,
    pub roles: Option<Vec<String>>,
    pub disabled: Option<bool>,
}

impl Authority {
    pub async fn create_user(
        &self,
        settings: &Settings,
        username: &str,
        password: &Password,
        roles: Vec<String>,
        now: UnixSeconds,
    ) -> Result<User, AuthError> {
        self.check_current()?;
        let name = parse_username(username)?;
        check_password(settings, password)?;
        let roles = check_roles(roles)?;
        let taken = || AuthError::Conflict(format!("user {name} already exists"));
        if self.store.user(name.as_str()).is_some() {
            return Err(taken());
        }
        let password_hash = self.hasher.hash(&settings.cost, password).await?;
        let user = UserRecord {
            account_id: self.store.next_id().await?,
            username: name.as_str().to_owned(),
            password_hash,
            roles,
            disabled: false,
            created_at: now,
            generation: 0,
            second_factor: None,
        };
        let mut txn = Txn::default();
        txn.expect_user(name.as_str(), None).put_user(user.clone());
        match self.store.commit(txn).await {
            Ok(_) => Ok(user),
            Err(StoreError::Conflict) => Err(taken()),
            Err(err) => Err(err.into()),
        }
    }

    pub fn get_user(&self, username: &str) -> Result<User, AuthError> {
        self.check_current()?;
        Username::parse(username)
            .and_then(|name| self.store.user(name.as_str()))
            .map(|user| (*user.record).clone())
            .ok_or_else(|| user_not_found(username))
    }

    /// A page of users sorted by name, and the `next` cursor (`None` on the last page).
    pub async fn list_users(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<User>, Option<String>), AuthError> {
        let (users, more) = self.store.users_page(after, limit).await?;
        let next = if more {
            users.last().map(|u| u.username.clone())
        } else {
            None
        };
        Ok((users, next))
    }

    /// Applies an admin's changes; a new password or `disabled: true` revokes all the
    /// user's tokens.
    pub async fn update_user(
        &self,
        settings: &Settings,
        username: &str,
        changes: UserChanges,
        now: UnixSeconds,
    ) -> Result<User, AuthError> {
        self.check_current()?;
        let name = Username::parse(username).ok_or_else(|| user_not_found(username))?;
        if let Some(password) = &changes.password {
            check_password(settings, password)?;
        }
        let roles = changes.roles.map(check_roles).transpose()?;
        if self.store.user(name.as_str()).is_none() {
            return Err(user_not_found(username));
        }
        let password_hash = match &changes.password {
            Some(password) => Some(self.hasher.hash(&settings.cost, password).await?),
            None => None,
        };
        let reason = match (&password_hash, changes.disabled) {
            (Some(_), _) => Some("password changed by admin"),
            (None, Some(true)) => Some("account disabled"),
            _ => None,
        };
        let change = |user: &mut UserRecord| {
            if let Some(hash) = &password_hash {
                user.password_hash = hash.clone();
            }
            if let Some(roles) = &roles {
                user.roles = roles.clone();
            }
            if let Some(disabled) = changes.disabled {
                user.disabled = disabled;
            }
        };
        let updated = match reason {
            Some(reason) => {
                let revocation = user_revocation(settings, name.as_str(), reason, now);
                self.revoke_all(name.as_str(), &revocation, change)
                    .await?
                    .map(|(user, _)| user)
            }
            None => self.change_user(name.as_str(), change).await?,
        };
        updated.ok_or_else(|| user_not_found(username))
    }

    pub async fn delete_user(
        &self,
        settings: &Settings,
        username: &str,
        now: UnixSeconds,
    ) -> Result<(), AuthError> {
        self.check_current()?;
        let name = Username::parse(username).ok_or_else(|| user_not_found(username))?;
        let revocation = user_revocation(settings, name.as_str(), "user deleted", now);
        for _ in 0..ATTEMPTS {
            let user = self
                .store
                .user(name.as_str())
                .ok_or_else(|| user_not_found(username))?;
            let sessions = self.store.sessions_of(name.as_str());
            let revocation = NewRevocation {
                ended_sessions: ended_sessions(&user.record, &sessions, now),
                ..revocation.clone()
            };
            let mut txn = Txn::default();
            txn.expect_user(name.as_str(), Some(&user))
                .delete(Key::User(name.as_str().to_owned()))
                .revoke(&revocation);
            for session in sessions {
                txn.delete(Key::Session(session.record.sid.clone()));
            }
            match self.store.commit(txn).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }

    /// Applies `change` to the user (`None`: no such user).
    async fn change_user(
        &self,
        username: &str,
        change: impl Fn(&mut UserRecord),
    ) -> Result<Option<User>, AuthError> {
        for _ in 0..ATTEMPTS {
            let Some(user) = self.store.user(username) else {
                return Ok(None);
            };
            let updated = changed(&user, &change);
            let mut txn = Txn::default();
            txn.expect_user(username, Some(&user))
                .put_user(updated.clone());
            match self.store.commit(txn).await {
                Ok(_) => return Ok(Some(updated)),
                Err(StoreError::Conflict) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }

    /// Applies `change` and a revoke-all to the user in one commit: the account's
    /// generation moves on (every session begun before is dead) and `revocation` replaces
    /// the user's previous entry. `None`: no such user.
    pub(super) async fn revoke_all(
        &self,
        username: &str,
        revocation: &NewRevocation,
        change: impl Fn(&mut UserRecord),
    ) -> Result<Option<(User, RevocationRecord)>, AuthError> {
        for _ in 0..ATTEMPTS {
            let Some(user) = self.store.user(username) else {
                return Ok(None);
            };
            let mut updated = changed(&user, &change);
            updated.generation += 1;
            let sessions = self.store.sessions_of(username);
            let revocation = NewRevocation {
                ended_sessions: ended_sessions(&user.record, &sessions, revocation.revoked_at),
                ..revocation.clone()
            };
            let mut txn = Txn::default();
            txn.expect_user(username, Some(&user))
                .put_user(updated.clone())
                .revoke(&revocation);
            match self.store.commit(txn).await {
                Ok(committed) => {
                    let entry = super::first_entry(committed.revocations)?;
                    return Ok(Some((updated, entry)));
                }
                Err(StoreError::Conflict) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }
}

fn changed(user: &Shared<UserRecord>, change: impl Fn(&mut UserRecord)) -> UserRecord {
    let mut updated = (*user.record).clone();
    change(&mut updated);
    updated
}

fn parse_username(username: &str) -> Result<Username, AuthError> {
    Username::parse(username).ok_or_else(|| {
        AuthError::InvalidRequest("username must be 1-64 characters of a-z 0-9 . _ @ -".into())
    })
}

pub(super) fn check_password(settings: &Settings, password: &Password) -> Result<(), AuthError> {
    match password_problem(password.expose(), settings.config.password.min_length) {
        Some(problem) => Err(AuthError::InvalidRequest(problem)),
        None => Ok(()),
    }
}

fn check_roles(mut roles: Vec<String>) -> Result<Vec<String>, AuthError> {
    if let Some(bad) = roles.iter().find(|r| !is_valid_role(r)) {
        let shown: String = bad.chars().take(64).collect();
        return Err(AuthError::InvalidRequest(format!(
            "role {shown:?} is invalid: roles are 1-64 characters of a-z 0-9 . _ : -"
        )));
    }
    roles.sort();
    roles.dedup();
    Ok(roles)
}

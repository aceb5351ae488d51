//! The operations of authd: log in, refresh, authenticate a bearer token (signature and
//! revocation), and the admin's user and revocation management. Each takes the settings
//! snapshot of its request and the current time, and makes acknowledged changes durable.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest as _, Sha256};

mod browser;

pub use browser::BrowserRefresh;

use super::Settings;
use super::names::{Username, is_valid_role, password_problem};
use super::password::{Hasher, Password, PasswordError, Verification};
use super::throttle::{Attempt, LoginThrottle, Outcome, Throttled};
use super::token::{Claims, TokenError};
use crate::store::{
    NewRevocation, RefreshHash, RefreshRecord, RevocationKind, RevocationRecord, Rotation,
    SessionRecord, Store, StoreError, UnixSeconds, UserRecord,
};

/// Why an operation failed, in the domain's terms; the HTTP layer maps each to API.md.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("{0}")]
    InvalidToken(TokenRejection),
    #[error("{0}")]
    InvalidGrant(&'static str),
    #[error("account is disabled")]
    AccountDisabled,
    #[error("too many failed logins; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{0}")]
    InsufficientScope(&'static str),
    #[error("current password is wrong")]
    WrongCurrentPassword,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("cannot sign token: {0}")]
    Signing(#[from] jsonwebtoken::errors::Error),
}

impl From<Throttled> for AuthError {
    fn from(throttled: Throttled) -> Self {
        AuthError::TooManyRequests {
            retry_after_secs: throttled.retry_after_secs(),
        }
    }
}

/// Why a bearer token was refused: its own defects, or the revocation state behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("token has been revoked")]
    Revoked,
    #[error("user no longer exists")]
    UserGone,
    #[error("account is disabled")]
    Disabled,
}

impl TokenRejection {
    /// A short stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            TokenRejection::Token(err) => err.label(),
            TokenRejection::Revoked => "revoked",
            TokenRejection::UserGone => "user_gone",
            TokenRejection::Disabled => "disabled",
        }
    }
}

impl From<TokenError> for AuthError {
    fn from(err: TokenError) -> Self {
        AuthError::InvalidToken(TokenRejection::Token(err))
    }
}

/// An opaque refresh token; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    pub fn new(token: String) -> RefreshToken {
        RefreshToken(token)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    fn hash(&self) -> RefreshHash {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken([redacted])")
    }
}

/// What a successful login or refresh hands out.
#[derive(Debug)]
pub struct TokenPair {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: RefreshToken,
    pub refresh_expires_in: i64,
    pub username: String,
    pub sid: String,
}

/// The verified caller of a bearer-protected request: the token's claims and the user's
/// current record (roles, creation time) from the store.
#[derive(Debug, Clone)]
pub struct Principal {
    user: Arc<UserRecord>,
    pub claims: Arc<Claims>,
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
}

/// A user as the admin API shows it.
pub type User = UserRecord;

/// Changes an admin asks for in one `PATCH`.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub password: Option<Password>,
    pub roles: Option<Vec<String>>,
    pub disabled: Option<bool>,
}

/// What to revoke.
#[derive(Debug)]
pub enum RevocationTarget {
    Jti(String),
    Token(String),
    Sid(String),
    Username(String),
}

/// The domain service: the store, the bounded hashing pool and the login throttle (which
/// lives as long as the daemon; its limits come from each call's settings snapshot).
#[derive(Debug, Clone)]
pub struct Authority {
    store: Store,
    hasher: Hasher,
    throttle: Arc<LoginThrottle>,
}

impl Authority {
    pub fn new(store: Store, hasher: Hasher) -> Authority {
        Authority {
            store,
            hasher,
            throttle: Arc::new(LoginThrottle::new()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    // ----- login, refresh, authenticate -----

    /// The login throttle (for its table sizes).
    pub fn throttle(&self) -> &LoginThrottle {
        &self.throttle
    }

    /// Checks the credentials and starts a session. Unknown users and malformed names
    /// cost one argon2 verification, like a wrong password. Attempts are throttled per
    /// username and per `client` address (API.md "Login throttling"): a throttled attempt
    /// is refused before any hashing, and only wrong credentials are counted.
    pub async fn login(
        &self,
        settings: &Settings,
        username: &str,
        password: &Password,
        client: Option<IpAddr>,
        now: UnixSeconds,
    ) -> Result<TokenPair, AuthError> {
        let limits = &settings.config.login;
        let attempt = Attempt::new(username, client);
        // The throttle measures its window on the monotonic clock: `now` has whole
        // seconds only and follows wall-clock jumps.
        self.throttle.check(limits, &attempt, Instant::now())?;
        let checked = self.check_credentials(settings, username, password).await;
        let outcome = match &checked {
            Ok(_) => Some(Outcome::Success),
            Err(AuthError::InvalidCredentials) => Some(Outcome::Failure),
            Err(AuthError::AccountDisabled) => Some(Outcome::NotCounted),
            // An internal error says nothing about the password: nothing to count.
            Err(_) => None,
        };
        if let Some(outcome) = outcome {
            // Checks the limits again: concurrent attempts may have reached one meanwhile.
            self.throttle
                .record(limits, &attempt, outcome, Instant::now())?;
        }
        let (user, needs_rehash) = checked?;
        if needs_rehash {
            self.rehash(settings, &user, password).await?;
        }
        let pair = self.start_session(settings, &user, now)?;
        self.store.flush().await?;
        Ok(pair)
    }

    /// The enabled user `username` names, when `password` is theirs, and whether the
    /// stored hash needs the current parameters.
    async fn check_credentials(
        &self,
        settings: &Settings,
        username: &str,
        password: &Password,
    ) -> Result<(UserRecord, bool), AuthError> {
        let user = match Username::parse(username) {
            Some(name) => self.store.get_user(name.as_str())?,
            None => None,
        };
        let stored_hash = user
            .as_ref()
            .map_or(settings.dummy_hash.as_str(), |u| u.password_hash.as_str());
        let verification = self
            .hasher
            .verify(&settings.cost, password, stored_hash)
            .await?;
        let (user, needs_rehash) = match (user, verification) {
            (Some(user), Verification::Match { needs_rehash }) => (user, needs_rehash),
            _ => return Err(AuthError::InvalidCredentials),
        };
        if user.disabled {
            return Err(AuthError::AccountDisabled);
        }
        Ok((user, needs_rehash))
    }

    async fn rehash(
        &self,
        settings: &Settings,
        user: &UserRecord,
        password: &Password,
    ) -> Result<(), AuthError> {
        let new_hash = self.hasher.hash(&settings.cost, password).await?;
        let old_hash = user.password_hash.clone();
        let account_id = user.account_id;
        // Only replace the hash we verified: a concurrent password change wins.
        self.store.update_user(
            &user.username,
            |u| {
                if u.account_id == account_id && u.password_hash == old_hash {
                    u.password_hash = new_hash.clone();
                }
            },
            None,
        )?;
        Ok(())
    }

    fn start_session(
        &self,
        settings: &Settings,
        user: &UserRecord,
        now: UnixSeconds,
    ) -> Result<TokenPair, AuthError> {
        let refresh_ttl = refresh_ttl(settings);
        let sid = super::random_id(16);
        let refresh_token = RefreshToken(super::random_id(32));
        let session = SessionRecord {
            sid: sid.clone(),
            username: user.username.clone(),
            account_id: user.account_id,
            generation: user.generation,
            created_at: now,
            last_refreshed_at: now,
            expires_at: now + refresh_ttl,
            access_expires_at: now + settings.tokens.access_ttl(),
        };
        let refresh = RefreshRecord {
            sid: sid.clone(),
            issued_at: now,
            expires_at: now + refresh_ttl,
            rotated_at: None,
        };
        self.store
            .create_session(&session, &refresh_token.hash(), &refresh)?;
        self.token_pair(settings, user, &sid, refresh_token, now)
    }

    fn token_pair(
        &self,
        settings: &Settings,
        user: &UserRecord,
        sid: &str,
        refresh_token: RefreshToken,
        now: UnixSeconds,
    ) -> Result<TokenPair, AuthError> {
        let access =
            settings
                .tokens
                .issue(&settings.keys, &user.username, sid, &user.roles, now)?;
        Ok(TokenPair {
            access_token: access.token,
            expires_in: settings.tokens.access_ttl(),
            refresh_token,
            refresh_expires_in: refresh_ttl(settings),
            username: user.username.clone(),
            sid: sid.to_owned(),
        })
    }

    /// Exchanges a refresh token for a new pair (rotation). A token that was already
    /// exchanged ends its whole session.
    pub async fn refresh(
        &self,
        settings: &Settings,
        presented: &RefreshToken,
        now: UnixSeconds,
    ) -> Result<TokenPair, AuthError> {
        const UNKNOWN: &str = "refresh token is invalid or expired";
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
        let next = RefreshToken(super::random_id(32));
        let expires_at = now + refresh_ttl(settings);
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
                Ok(pair)
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

    /// The session `sid` and its user, when the session is still live: not expired, its
    /// account still exists under the same identity, is enabled and had no revoke-all since.
    fn live_session(
        &self,
        sid: &str,
        now: UnixSeconds,
    ) -> Result<Option<(SessionRecord, UserRecord)>, AuthError> {
        let Some(session) = self.store.get_session(sid)? else {
            return Ok(None);
        };
        if session.expires_at <= now {
            return Ok(None);
        }
        let Some(user) = self.store.get_user(&session.username)? else {
            return Ok(None);
        };
        let live = user.account_id == session.account_id
            && user.generation == session.generation
            && !user.disabled;
        Ok(live.then_some((session, user)))
    }

    /// Verifies a bearer access token: signature and claims, then the revocation state.
    pub fn authenticate(
        &self,
        settings: &Settings,
        token: &str,
        now: UnixSeconds,
    ) -> Result<Principal, AuthError> {
        use TokenRejection::{Disabled, Revoked, UserGone};
        let claims = settings.tokens.verify(&settings.keys, token, now)?;
        // A revoked sid has no session (revoking deletes it), so the session lookup
        // covers sid revocations; only the jti needs the revocation list.
        if self.store.is_revoked(RevocationKind::Jti, &claims.jti)? {
            return Err(AuthError::InvalidToken(Revoked));
        }
        let session = self
            .store
            .session(&claims.sid)
            .filter(|session| session.username == claims.sub)
            .ok_or(AuthError::InvalidToken(Revoked))?;
        let user = self
            .store
            .user(&claims.sub)
            .filter(|user| user.account_id == session.account_id)
            .ok_or(AuthError::InvalidToken(UserGone))?;
        if user.disabled {
            return Err(AuthError::InvalidToken(Disabled));
        }
        if user.generation != session.generation {
            return Err(AuthError::InvalidToken(Revoked));
        }
        Ok(Principal { user, claims })
    }

    /// A sid entry. Revoking deletes the session, so only its access tokens remain to be
    /// blocked: until the latest `exp` issued in it (which a reload that shortened
    /// `access_ttl` does not shorten), or a full `access_ttl` from now for unknown sids.
    fn session_revocation(
        &self,
        settings: &Settings,
        sid: &str,
        reason: &str,
        now: UnixSeconds,
    ) -> NewRevocation {
        let issued_until = self
            .store
            .session(sid)
            .map_or(0, |session| session.access_expires_at);
        NewRevocation {
            kind: RevocationKind::Sid,
            id: sid.to_owned(),
            revoked_at: now,
            expires_at: issued_until.max(now + settings.tokens.access_ttl())
                + settings.tokens.leeway(),
            reason: Some(reason.to_owned()),
        }
    }

    // ----- the caller's own sessions -----

    /// Ends the caller's session, or with `all` every session of the account.
    pub async fn logout(
        &self,
        settings: &Settings,
        principal: &Principal,
        all: bool,
        now: UnixSeconds,
    ) -> Result<RevocationRecord, AuthError> {
        let entry = if all {
            let revocation =
                user_revocation(settings, principal.username(), "logout (all sessions)", now);
            self.store
                .update_user(principal.username(), |_| {}, Some(&revocation))?
                .and_then(|(_, entry)| entry)
                .ok_or(AuthError::InvalidToken(TokenRejection::UserGone))?
        } else {
            self.store.revoke_session(&self.session_revocation(
                settings,
                &principal.claims.sid,
                "logout",
                now,
            ))?
        };
        self.store.flush().await?;
        Ok(entry)
    }

    /// The live sessions of `username`: not expired, not revoked, of the current account.
    pub fn sessions(
        &self,
        username: &str,
        now: UnixSeconds,
    ) -> Result<Vec<SessionRecord>, AuthError> {
        let name = Username::parse(username).ok_or_else(|| user_not_found(username))?;
        let user = self
            .store
            .get_user(name.as_str())?
            .ok_or_else(|| user_not_found(username))?;
        let mut sessions: Vec<_> = self
            .store
            .list_sessions(name.as_str())?
            .into_iter()
            .filter(|s| {
                s.account_id == user.account_id
                    && s.generation == user.generation
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
        self.store.revoke_session(&self.session_revocation(
            settings,
            sid,
            "session ended by its user",
            now,
        ))?;
        self.store.flush().await?;
        Ok(())
    }

    /// Changes the caller's password after checking the current one; every other session
    /// of the user ends. A wrong current password changes nothing.
    pub async fn change_password(
        &self,
        settings: &Settings,
        principal: &Principal,
        current: &Password,
        new: &Password,
        now: UnixSeconds,
    ) -> Result<(), AuthError> {
        check_password(settings, new)?;
        let user = self
            .store
            .get_user(principal.username())?
            .ok_or(AuthError::InvalidToken(TokenRejection::UserGone))?;
        match self
            .hasher
            .verify(&settings.cost, current, &user.password_hash)
            .await?
        {
            Verification::Match { .. } => {}
            Verification::Mismatch => return Err(AuthError::WrongCurrentPassword),
        }
        let new_hash = self.hasher.hash(&settings.cost, new).await?;
        let others: Vec<NewRevocation> = self
            .sessions(principal.username(), now)?
            .iter()
            .filter(|s| s.sid != principal.claims.sid)
            .map(|s| self.session_revocation(settings, &s.sid, "password changed", now))
            .collect();
        self.store
            .replace_password(&user.username, user.account_id, &new_hash, &others)?
            .ok_or(AuthError::InvalidToken(TokenRejection::UserGone))?;
        self.store.flush().await?;
        Ok(())
    }

    // ----- users (admin) -----

    pub async fn create_user(
        &self,
        settings: &Settings,
        username: &str,
        password: &Password,
        roles: Vec<String>,
        now: UnixSeconds,
    ) -> Result<User, AuthError> {
        let name = parse_username(username)?;
        check_password(settings, password)?;
        let roles = check_roles(roles)?;
        if self.store.get_user(name.as_str())?.is_some() {
            return Err(AuthError::Conflict(format!("user {name} already exists")));
        }
        let password_hash = self.hasher.hash(&settings.cost, password).await?;
        let user = UserRecord {
            account_id: self.store.next_id()?,
            username: name.as_str().to_owned(),
            password_hash,
            roles,
            disabled: false,
            created_at: now,
            generation: 0,
        };
        if !self.store.create_user(&user)? {
            return Err(AuthError::Conflict(format!("user {name} already exists")));
        }
        self.store.flush().await?;
        Ok(user)
    }

    pub fn get_user(&self, username: &str) -> Result<User, AuthError> {
        Username::parse(username)
            .map(|name| self.store.get_user(name.as_str()))
            .transpose()?
            .flatten()
            .ok_or_else(|| user_not_found(username))
    }

    pub fn list_users(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<User>, Option<String>), AuthError> {
        let (users, more) = self.store.list_users(after, limit)?;
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
        let name = Username::parse(username).ok_or_else(|| user_not_found(username))?;
        if let Some(password) = &changes.password {
            check_password(settings, password)?;
        }
        let roles = changes.roles.map(check_roles).transpose()?;
        if self.store.get_user(name.as_str())?.is_none() {
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
        let revoke_all = reason.map(|reason| user_revocation(settings, name.as_str(), reason, now));
        let (user, _) = self
            .store
            .update_user(
                name.as_str(),
                |user| {
                    if let Some(hash) = &password_hash {
                        user.password_hash = hash.clone();
                    }
                    if let Some(roles) = &roles {
                        user.roles = roles.clone();
                    }
                    if let Some(disabled) = changes.disabled {
                        user.disabled = disabled;
                    }
                },
                revoke_all.as_ref(),
            )?
            .ok_or_else(|| user_not_found(username))?;
        self.store.flush().await?;
        Ok(user)
    }

    pub async fn delete_user(
        &self,
        settings: &Settings,
        username: &str,
        now: UnixSeconds,
    ) -> Result<(), AuthError> {
        let name = Username::parse(username).ok_or_else(|| user_not_found(username))?;
        let revocation = user_revocation(settings, name.as_str(), "user deleted", now);
        self.store
            .delete_user(name.as_str(), &revocation)?
            .ok_or_else(|| user_not_found(username))?;
        self.store.flush().await?;
        Ok(())
    }

    // ----- revocation (admin) -----

    /// Records a revocation and returns once it is durable.
    pub async fn revoke(
        &self,
        settings: &Settings,
        target: RevocationTarget,
        reason: Option<String>,
        now: UnixSeconds,
    ) -> Result<RevocationRecord, AuthError> {
        let access_window = settings.tokens.access_ttl() + settings.tokens.leeway();
        let entry = match target {
            RevocationTarget::Jti(jti) => self.store.revoke(&NewRevocation {
                kind: RevocationKind::Jti,
                id: check_id(jti, "jti")?,
                revoked_at: now,
                expires_at: now + access_window,
                reason,
            })?,
            RevocationTarget::Token(token) => {
                let claims = settings
                    .tokens
                    .verify_signature(&settings.keys, &token)
                    .map_err(|err| AuthError::InvalidRequest(format!("cannot revoke: {err}")))?;
                self.store.revoke(&NewRevocation {
                    kind: RevocationKind::Jti,
                    id: claims.jti,
                    revoked_at: now,
                    expires_at: claims.exp.max(now).saturating_add(settings.tokens.leeway()),
                    reason,
                })?
            }
            RevocationTarget::Sid(sid) => {
                let sid = check_id(sid, "sid")?;
                let mut revocation = self.session_revocation(settings, &sid, "", now);
                revocation.reason = reason;
                self.store.revoke_session(&revocation)?
            }
            RevocationTarget::Username(username) => {
                let name = Username::parse(&username).ok_or_else(|| user_not_found(&username))?;
                let mut revocation = user_revocation(settings, name.as_str(), "", now);
                revocation.reason = reason;
                self.store
                    .update_user(name.as_str(), |_| {}, Some(&revocation))?
                    .and_then(|(_, entry)| entry)
                    .ok_or_else(|| user_not_found(&username))?
            }
        };
        self.store.flush().await?;
        Ok(entry)
    }

    pub fn list_revocations(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<RevocationRecord>, Option<u64>), AuthError> {
        Ok(self.store.list_revocations(after, limit)?)
    }
}

fn refresh_ttl(settings: &Settings) -> i64 {
    i64::try_from(settings.config.jwt.refresh_ttl.as_secs()).unwrap_or(i64::MAX / 4)
}

/// A user entry: it blocks refresh tokens too, so it lives as long as the longest of them.
fn user_revocation(
    settings: &Settings,
    username: &str,
    reason: &str,
    now: UnixSeconds,
) -> NewRevocation {
    let longest = refresh_ttl(settings).max(settings.tokens.access_ttl());
    NewRevocation {
        kind: RevocationKind::User,
        id: username.to_owned(),
        revoked_at: now,
        expires_at: now + longest + settings.tokens.leeway(),
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
    }
}

fn user_not_found(username: &str) -> AuthError {
    let shown: String = username.chars().take(64).collect();
    AuthError::NotFound(format!("user {shown:?} not found"))
}

fn parse_username(username: &str) -> Result<Username, AuthError> {
    Username::parse(username).ok_or_else(|| {
        AuthError::InvalidRequest("username must be 1-64 characters of a-z 0-9 . _ @ -".into())
    })
}

fn check_password(settings: &Settings, password: &Password) -> Result<(), AuthError> {
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

/// jti and sid values are opaque, but bounded so the revocation list cannot be stuffed.
fn check_id(id: String, field: &str) -> Result<String, AuthError> {
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(AuthError::InvalidRequest(format!(
            "{field} must be 1-256 printable characters"
        )));
    }
    Ok(id)
}

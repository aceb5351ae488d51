//! The records authd stores, as plain data: users (with their second factor), sessions,
//! refresh tokens, pending second login steps and revocation entries, the keys that name
//! them, and the version each was last written at. No engine, no encoding: backends store
//! these and nothing else.

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch.
pub type UnixSeconds = i64;

/// A refresh token as stored: the SHA-256 of the token, never the token.
pub type RefreshHash = [u8; 32];

/// A refresh hash as 64 lower-case hex digits (etcd keys, backups).
pub fn refresh_hash_hex(hash: &RefreshHash) -> String {
    hash.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The refresh hash `text` spells in hex; `None` unless it is exactly 64 hex digits.
pub fn refresh_hash_from_hex(text: &[u8]) -> Option<RefreshHash> {
    if text.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (slot, pair) in hash.iter_mut().zip(text.chunks(2)) {
        let digits = std::str::from_utf8(pair).ok()?;
        *slot = u8::from_str_radix(digits, 16).ok()?;
    }
    Some(hash)
}

/// One account. `account_id` is unique for the life of the store, so a user deleted and
/// re-created under the same name is a different account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub account_id: u64,
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created_at: UnixSeconds,
    /// Bumped by every "revoke all": sessions begun under an older generation are dead.
    pub generation: u64,
    /// TOTP and recovery codes; `None` until the user begins to enrol.
    pub second_factor: Option<SecondFactor>,
}

impl UserRecord {
    /// Whether logging in takes a second factor (TOTP confirmed).
    pub fn has_totp(&self) -> bool {
        self.second_factor
            .as_ref()
            .is_some_and(|factor| factor.totp.is_some())
    }
}

/// A user's second factor. Secrets are stored sealed (see `auth::mfa::MfaKey`: AEAD under
/// `mfa.key_file`, the account id as associated data), recovery codes as MACs keyed from
/// that key: the store never holds a secret or a code in a usable form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecondFactor {
    /// The confirmed TOTP secret, sealed; `None` while an enrolment is only pending.
    pub totp: Option<Vec<u8>>,
    /// An enrolment waiting for its first code, sealed.
    pub pending: Option<Vec<u8>>,
    /// The last time step a code was taken for (confirm included): only later ones count.
    pub last_step: u64,
    /// The unused recovery codes' MACs.
    pub recovery_codes: Vec<[u8; 32]>,
}

/// A user record as releases before the second factor stored it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LegacyUserRecord {
    pub account_id: u64,
    pub username: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created_at: UnixSeconds,
    pub generation: u64,
}

impl From<LegacyUserRecord> for UserRecord {
    fn from(old: LegacyUserRecord) -> UserRecord {
        UserRecord {
            account_id: old.account_id,
            username: old.username,
            password_hash: old.password_hash,
            roles: old.roles,
            disabled: old.disabled,
            created_at: old.created_at,
            generation: old.generation,
            second_factor: None,
        }
    }
}

/// One login and everything refreshed from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub sid: String,
    pub username: String,
    pub account_id: u64,
    /// The account's `generation` when the session began.
    pub generation: u64,
    pub created_at: UnixSeconds,
    pub last_refreshed_at: UnixSeconds,
    /// When the newest refresh token of the session expires.
    pub expires_at: UnixSeconds,
    /// The latest `exp` of any access token issued in the session.
    pub access_expires_at: UnixSeconds,
    /// The login took a second factor: the tokens' `amr` has `otp`.
    pub with_otp: bool,
}

/// A session record as releases before the second factor stored it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LegacySessionRecord {
    pub sid: String,
    pub username: String,
    pub account_id: u64,
    pub generation: u64,
    pub created_at: UnixSeconds,
    pub last_refreshed_at: UnixSeconds,
    pub expires_at: UnixSeconds,
    pub access_expires_at: UnixSeconds,
}

impl From<LegacySessionRecord> for SessionRecord {
    fn from(old: LegacySessionRecord) -> SessionRecord {
        SessionRecord {
            sid: old.sid,
            username: old.username,
            account_id: old.account_id,
            generation: old.generation,
            created_at: old.created_at,
            last_refreshed_at: old.last_refreshed_at,
            expires_at: old.expires_at,
            access_expires_at: old.access_expires_at,
            with_otp: false,
        }
    }
}

/// A login waiting for its second step (keyed by the SHA-256 of its `mfa_token`): bound to
/// the account as the password check found it, so that a password change or revoke-all in
/// between kills it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MfaTokenRecord {
    pub username: String,
    pub account_id: u64,
    pub generation: u64,
    /// The password hash that was checked.
    pub password_hash: String,
    pub expires_at: UnixSeconds,
    /// Wrong codes so far; the token dies at the fifth.
    pub failures: u32,
}

/// One issued refresh token (keyed by its hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub sid: String,
    pub issued_at: UnixSeconds,
    pub expires_at: UnixSeconds,
    /// Set once the token has been exchanged for a new one.
    pub rotated_at: Option<UnixSeconds>,
    /// It was handed out in the browser's refresh cookie (`POST /login`, a cookie refresh),
    /// not in a JSON body: only such a token gets the cookie's refresh grace.
    pub issued_in_cookie: bool,
}

/// What a revocation entry blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RevocationKind {
    Jti,
    Sid,
    User,
}

impl RevocationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Jti => "jti",
            RevocationKind::Sid => "sid",
            RevocationKind::User => "user",
        }
    }
}

/// A revocation to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRevocation {
    pub kind: RevocationKind,
    pub id: String,
    pub revoked_at: UnixSeconds,
    /// After this moment nothing the entry blocks could be accepted any more.
    pub expires_at: UnixSeconds,
    pub reason: Option<String>,
    /// A user entry: see [`RevocationRecord::ended_sessions`].
    pub ended_sessions: Vec<String>,
    /// A user entry: see [`RevocationRecord::serial`].
    pub serial: Option<String>,
}

/// A stored revocation entry. `seq` is its position in commit order (the list order,
/// oldest first); the backend assigns it inside the commit that stores the entry. Entries
/// never move: a jti or sid is stored once, and every revoke-all of a user is an entry of
/// its own, so the revocation feed's cursors (which are positions) stay valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevocationRecord {
    pub seq: u64,
    pub kind: RevocationKind,
    pub id: String,
    pub revoked_at: UnixSeconds,
    pub expires_at: UnixSeconds,
    pub reason: Option<String>,
    /// A user entry: the sids of the live sessions the revoke-all ended, which the
    /// revocation feed sends as `sid` events (apps following it know no generations).
    pub ended_sessions: Vec<String>,
    /// A user entry: which revoke-all of the user it is (random), so that each is stored
    /// under a key of its own; `None` for jti and sid entries (and user entries of older
    /// releases, stored under the username alone).
    pub serial: Option<String>,
}

impl RevocationRecord {
    /// The entry `new` describes, before the commit gives it its position.
    pub fn unplaced(new: &NewRevocation) -> RevocationRecord {
        RevocationRecord {
            seq: 0,
            kind: new.kind,
            id: new.id.clone(),
            revoked_at: new.revoked_at,
            expires_at: new.expires_at,
            reason: new.reason.clone(),
            ended_sessions: new.ended_sessions.clone(),
            serial: new.serial.clone(),
        }
    }

    /// The name the entry is stored under.
    pub fn key(&self) -> Key {
        Key::Revocation(self.kind, self.key_id().into_owned())
    }

    /// The id part of [`RevocationRecord::key`]: the id, and for a user entry with a serial
    /// `username#serial` (`#` is in no username).
    pub fn key_id(&self) -> std::borrow::Cow<'_, str> {
        match &self.serial {
            Some(serial) => format!("{}#{serial}", self.id).into(),
            None => self.id.as_str().into(),
        }
    }
}

/// A revocation entry as releases before the revocation feed stored it (sled record
/// formats 1 to 3, etcd format 3).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LegacyRevocationRecord {
    pub seq: u64,
    pub kind: RevocationKind,
    pub id: String,
    pub revoked_at: UnixSeconds,
    pub expires_at: UnixSeconds,
    pub reason: Option<String>,
}

impl From<LegacyRevocationRecord> for RevocationRecord {
    fn from(old: LegacyRevocationRecord) -> RevocationRecord {
        RevocationRecord {
            seq: old.seq,
            kind: old.kind,
            id: old.id,
            revoked_at: old.revoked_at,
            expires_at: old.expires_at,
            reason: old.reason,
            ended_sessions: Vec::new(),
            serial: None,
        }
    }
}

/// One running instance of a deployment, as its heartbeat publishes it (cluster mode) or
/// as the single instance describes itself (sled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Unique per instance, the same across its restarts.
    pub node: String,
    /// As `authd --version`.
    pub version: String,
    /// The public listener's `host:port`.
    pub public_addr: String,
    pub started_at: UnixSeconds,
    /// When its latest heartbeat was written.
    pub last_seen: UnixSeconds,
    /// The kid it signs with.
    pub signing_kid: String,
    /// A fingerprint of its key set (kids and public parts), never a secret.
    pub keyset: String,
}

/// A counted login outcome, shared with every instance of a deployment (cluster mode) so
/// that N instances allow no more guesses than one. The username is only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginEvent {
    /// The SHA-256 of the lowercased username, as the throttle keys it.
    pub user: [u8; 32],
    /// The client address as the throttle keys it (IPv6: the /64).
    pub address: Option<std::net::IpAddr>,
    /// A success (the pair is known and its count starts over) or a failure.
    pub success: bool,
    pub at: UnixSeconds,
}

/// The name of one stored record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    User(String),
    Session(String),
    Refresh(RefreshHash),
    Revocation(RevocationKind, String),
    /// A pending second login step, by its token's hash.
    MfaToken(RefreshHash),
}

/// The revision a record was last written at: the commit's position in the store's
/// commit order. Preconditions compare it; `0` marks a record written before versions
/// were kept (it still compares exactly).
pub type Version = u64;

/// A record with the version it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub version: Version,
    pub record: T,
}

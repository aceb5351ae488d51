//! The backup file, version 1: JSON lines — a header, one line per record, and an `end`
//! line with the record count (so a cut-off file is told from a whole one). These types
//! are the format, kept apart from the stored records so that either can change: a later
//! release adds a reader for each new version and keeps this one.

use serde::{Deserialize, Serialize};

use crate::store::backend::Record;
use crate::store::records::{refresh_hash_from_hex, refresh_hash_hex};
use crate::store::{
    RefreshRecord, RevocationKind, RevocationRecord, SessionRecord, UnixSeconds, UserRecord,
};

/// The header's `format`.
pub const FORMAT: &str = "authd-backup";

/// The version this release writes; it reads it too, and every later release will.
pub const VERSION: u32 = 1;

/// The first line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// RFC 3339, for people.
    pub created_at: String,
    /// The engine it was taken from: `sled` or `etcd`.
    pub backend: String,
    /// The store's epoch when it was taken (a restore makes a new one).
    pub epoch: String,
    /// The revision every record was read at.
    pub revision: u64,
    /// Above every id the store had handed out.
    pub next_id: u64,
    /// The fingerprint of the second factor's key (`mfa.key_file`) its records are
    /// encrypted with; `null` when it had none.
    pub mfa_key: Option<String>,
}

/// Every line after the header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    User(UserLine),
    Session(SessionLine),
    Refresh(RefreshLine),
    Revocation(RevocationLine),
    /// The last line: how many record lines came before it.
    End {
        records: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserLine {
    pub username: String,
    pub account_id: u64,
    /// The argon2id PHC string.
    pub password_hash: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created_at: UnixSeconds,
    pub generation: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionLine {
    pub sid: String,
    pub username: String,
    pub account_id: u64,
    pub generation: u64,
    pub created_at: UnixSeconds,
    pub last_refreshed_at: UnixSeconds,
    pub expires_at: UnixSeconds,
    pub access_expires_at: UnixSeconds,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshLine {
    /// The SHA-256 of the refresh token, in hex (never the token).
    pub hash: String,
    pub sid: String,
    pub issued_at: UnixSeconds,
    pub expires_at: UnixSeconds,
    pub rotated_at: Option<UnixSeconds>,
    pub issued_in_cookie: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationLine {
    /// Its position in the list (commit order).
    pub seq: u64,
    pub kind: Kind,
    pub id: String,
    pub revoked_at: UnixSeconds,
    pub expires_at: UnixSeconds,
    pub reason: Option<String>,
    /// A user entry: the sessions the revoke-all ended (the feed's `sid` events). Absent
    /// when empty, and in backups of releases before the revocation feed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ended_sessions: Vec<String>,
    /// A user entry: which revoke-all of the user it is. Absent for other entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// What a revocation entry blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Jti,
    Sid,
    User,
}

impl From<&Record> for Line {
    fn from(record: &Record) -> Line {
        match record {
            Record::User(user) => Line::User(UserLine {
                username: user.username.clone(),
                account_id: user.account_id,
                password_hash: user.password_hash.clone(),
                roles: user.roles.clone(),
                disabled: user.disabled,
                created_at: user.created_at,
                generation: user.generation,
            }),
            Record::Session(session) => Line::Session(SessionLine {
                sid: session.sid.clone(),
                username: session.username.clone(),
                account_id: session.account_id,
                generation: session.generation,
                created_at: session.created_at,
                last_refreshed_at: session.last_refreshed_at,
                expires_at: session.expires_at,
                access_expires_at: session.access_expires_at,
            }),
            Record::Refresh(hash, refresh) => Line::Refresh(RefreshLine {
                hash: refresh_hash_hex(hash),
                sid: refresh.sid.clone(),
                issued_at: refresh.issued_at,
                expires_at: refresh.expires_at,
                rotated_at: refresh.rotated_at,
                issued_in_cookie: refresh.issued_in_cookie,
            }),
            Record::Revocation(entry) => Line::Revocation(RevocationLine {
                seq: entry.seq,
                kind: match entry.kind {
                    RevocationKind::Jti => Kind::Jti,
                    RevocationKind::Sid => Kind::Sid,
                    RevocationKind::User => Kind::User,
                },
                id: entry.id.clone(),
                revoked_at: entry.revoked_at,
                expires_at: entry.expires_at,
                reason: entry.reason.clone(),
                ended_sessions: entry.ended_sessions.clone(),
                serial: entry.serial.clone(),
            }),
        }
    }
}

impl Line {
    /// The record this line holds (`None` for `end`); `Err` names what is wrong with it.
    pub fn into_record(self) -> Result<Option<Record>, String> {
        Ok(Some(match self {
            Line::User(user) => Record::User(UserRecord {
                account_id: user.account_id,
                username: user.username,
                password_hash: user.password_hash,
                roles: user.roles,
                disabled: user.disabled,
                created_at: user.created_at,
                generation: user.generation,
            }),
            Line::Session(session) => Record::Session(SessionRecord {
                sid: session.sid,
                username: session.username,
                account_id: session.account_id,
                generation: session.generation,
                created_at: session.created_at,
                last_refreshed_at: session.last_refreshed_at,
                expires_at: session.expires_at,
                access_expires_at: session.access_expires_at,
            }),
            Line::Refresh(refresh) => {
                let hash = refresh_hash_from_hex(refresh.hash.as_bytes())
                    .ok_or("a refresh token's hash is not 64 hex digits")?;
                Record::Refresh(
                    hash,
                    RefreshRecord {
                        sid: refresh.sid,
                        issued_at: refresh.issued_at,
                        expires_at: refresh.expires_at,
                        rotated_at: refresh.rotated_at,
                        issued_in_cookie: refresh.issued_in_cookie,
                    },
                )
            }
            Line::Revocation(entry) => Record::Revocation(RevocationRecord {
                seq: entry.seq,
                kind: match entry.kind {
                    Kind::Jti => RevocationKind::Jti,
                    Kind::Sid => RevocationKind::Sid,
                    Kind::User => RevocationKind::User,
                },
                id: entry.id,
                revoked_at: entry.revoked_at,
                expires_at: entry.expires_at,
                reason: entry.reason,
                ended_sessions: entry.ended_sessions,
                serial: entry.serial,
            }),
            Line::End { .. } => return Ok(None),
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn records() -> Vec<Record> {
        vec![
            Record::User(UserRecord {
                account_id: 7,
                username: "alice".into(),
                password_hash: "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA".into(),
                roles: vec!["admin".into()],
                disabled: false,
                created_at: 1_700_000_000,
                generation: 2,
            }),
            Record::Session(SessionRecord {
                sid: "s1".into(),
                username: "alice".into(),
                account_id: 7,
                generation: 2,
                created_at: 1,
                last_refreshed_at: 2,
                expires_at: 3,
                access_expires_at: 4,
            }),
            Record::Refresh(
                [0xab; 32],
                RefreshRecord {
                    sid: "s1".into(),
                    issued_at: 1,
                    expires_at: 5,
                    rotated_at: Some(3),
                    issued_in_cookie: true,
                },
            ),
            Record::Revocation(RevocationRecord {
                seq: 9,
                kind: RevocationKind::User,
                id: "alice".into(),
                revoked_at: 1,
                expires_at: 6,
                reason: Some("left".into()),
                ended_sessions: Vec::new(),
                serial: None,
            }),
        ]
    }

    #[test]
    fn every_record_survives_a_line_unchanged() {
        for record in records() {
            let text = serde_json::to_string(&Line::from(&record)).unwrap();
            let line: Line = serde_json::from_str(&text).unwrap();
            assert_eq!(line.into_record().unwrap(), Some(record), "{text}");
        }
    }

    #[test]
    fn a_revoke_all_keeps_its_ended_sessions_and_serial() {
        let text = r#"{"type":"revocation","seq":9,"kind":"user","id":"alice","revoked_at":1,"expires_at":6,"reason":null,"ended_sessions":["s1","s2"],"serial":"x1"}"#;
        let Some(Record::Revocation(entry)) = serde_json::from_str::<Line>(text)
            .unwrap()
            .into_record()
            .unwrap()
        else {
            panic!("not a revocation");
        };
        assert_eq!(entry.ended_sessions, ["s1", "s2"]);
        assert_eq!(entry.serial.as_deref(), Some("x1"));
        let line = Line::from(&Record::Revocation(entry));
        assert_eq!(serde_json::to_string(&line).unwrap(), text);
    }

    #[test]
    fn version_1_lines_read_as_written_by_this_release() {
        // The format is a promise: these lines, as version 1 writes them, load for ever.
        let user = r#"{"type":"user","username":"alice","account_id":7,"password_hash":"$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA","roles":["admin"],"disabled":false,"created_at":1700000000,"generation":2}"#;
        let refresh = r#"{"type":"refresh","hash":"abababababababababababababababababababababababababababababababab","sid":"s1","issued_at":1,"expires_at":5,"rotated_at":3,"issued_in_cookie":true}"#;
        let revocation = r#"{"type":"revocation","seq":9,"kind":"user","id":"alice","revoked_at":1,"expires_at":6,"reason":"left"}"#;
        let expected = records();
        for (text, record) in
            [user, refresh, revocation]
                .into_iter()
                .zip([&expected[0], &expected[2], &expected[3]])
        {
            assert_eq!(serde_json::to_string(&Line::from(record)).unwrap(), text);
            let line: Line = serde_json::from_str(text).unwrap();
            assert_eq!(line.into_record().unwrap().as_ref(), Some(record));
        }
    }

    #[test]
    fn a_line_with_an_unknown_field_or_a_bad_hash_is_refused() {
        let extra = r#"{"type":"session","sid":"s","username":"a","account_id":1,"generation":0,"created_at":0,"last_refreshed_at":0,"expires_at":0,"access_expires_at":0,"password":"x"}"#;
        assert!(serde_json::from_str::<Line>(extra).is_err());
        let short = r#"{"type":"refresh","hash":"abcd","sid":"s1","issued_at":1,"expires_at":5,"rotated_at":null,"issued_in_cookie":false}"#;
        let line: Line = serde_json::from_str(short).unwrap();
        assert!(line.into_record().is_err());
    }
}

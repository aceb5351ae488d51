//! The backup file, version 1: JSON lines — a header, one line per record, and an `end`
//! line with the record count (so a cut-off file is told from a whole one). These types
//! are the format, kept apart from the stored records so that either can change: a later
//! release adds a reader for each new version and keeps this one.

use serde::{Deserialize, Serialize};

use crate::store::backend::Record;
use crate::store::records::{refresh_hash_from_hex, refresh_hash_hex};
use crate::store::{
    RefreshRecord, RevocationKind, RevocationRecord, SecondFactor, SessionRecord, UnixSeconds,
    UserRecord,
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
    /// A user's second factor; follows its user's line.
    SecondFactor(SecondFactorLine),
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

/// A user's second factor, secrets still sealed under `mfa.key_file` (the header names its
/// fingerprint) and recovery codes as MACs keyed from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorLine {
    pub username: String,
    pub account_id: u64,
    /// The confirmed TOTP secret, sealed, in base64.
    pub totp_sealed: Option<String>,
    /// A pending enrolment's secret, sealed, in base64.
    pub pending_sealed: Option<String>,
    pub last_step: u64,
    /// The unused recovery codes' MACs, in hex.
    pub recovery_codes: Vec<String>,
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
    /// The login took a second factor. Absent when false, and in older backups.
    #[serde(default, skip_serializing_if = "is_false")]
    pub with_otp: bool,
}

fn is_false(value: &bool) -> bool {
    !value
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
                with_otp: session.with_otp,
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

/// The line after a user's own, for a user with a second factor.
pub fn second_factor_line(record: &Record) -> Option<Line> {
    let Record::User(user) = record else {
        return None;
    };
    let factor = user.second_factor.as_ref()?;
    let base64 = |bytes: &Vec<u8>| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    Some(Line::SecondFactor(SecondFactorLine {
        username: user.username.clone(),
        account_id: user.account_id,
        totp_sealed: factor.totp.as_ref().map(base64),
        pending_sealed: factor.pending.as_ref().map(base64),
        last_step: factor.last_step,
        recovery_codes: factor.recovery_codes.iter().map(refresh_hash_hex).collect(),
    }))
}

impl SecondFactorLine {
    fn into_factor(self) -> Result<SecondFactor, String> {
        let sealed = |text: Option<String>| -> Result<Option<Vec<u8>>, String> {
            use base64::Engine as _;
            text.map(|text| {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| "a sealed secret is not base64".to_owned())
            })
            .transpose()
        };
        Ok(SecondFactor {
            totp: sealed(self.totp_sealed)?,
            pending: sealed(self.pending_sealed)?,
            last_step: self.last_step,
            recovery_codes: self
                .recovery_codes
                .iter()
                .map(|mac| {
                    refresh_hash_from_hex(mac.as_bytes())
                        .ok_or_else(|| "a recovery code's MAC is not 64 hex digits".to_owned())
                })
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Turns lines back into records: a user is complete once the line after it shows
/// whether a second-factor line belongs to it.
#[derive(Debug, Default)]
pub struct Assembler {
    user: Option<UserRecord>,
}

impl Assembler {
    /// Takes the next line; answers the records it completes (`end` completes the last).
    pub fn push(&mut self, line: Line) -> Result<Vec<Record>, String> {
        let mut done: Vec<Record> = Vec::with_capacity(2);
        match line {
            Line::SecondFactor(factor) => {
                let Some(user) = self.user.as_mut().filter(|user| {
                    user.username == factor.username && user.account_id == factor.account_id
                }) else {
                    return Err("a second-factor line does not follow its user's line".into());
                };
                if user.second_factor.is_some() {
                    return Err("a second user's second-factor line".into());
                }
                user.second_factor = Some(factor.into_factor()?);
                return Ok(done);
            }
            Line::User(user) => {
                done.extend(self.user.take().map(Record::User));
                self.user = Some(UserRecord {
                    account_id: user.account_id,
                    username: user.username,
                    password_hash: user.password_hash,
                    roles: user.roles,
                    disabled: user.disabled,
                    created_at: user.created_at,
                    generation: user.generation,
                    second_factor: None,
                });
                return Ok(done);
            }
            other => {
                done.extend(self.user.take().map(Record::User));
                done.extend(other.into_record()?);
            }
        }
        Ok(done)
    }
}

impl Line {
    /// The record this line holds on its own (`None` for `end`; users and their second
    /// factor come together through [`Assembler`]); `Err` names what is wrong with it.
    fn into_record(self) -> Result<Option<Record>, String> {
        Ok(Some(match self {
            Line::User(_) | Line::SecondFactor(_) => {
                return Err("a user line out of place".into());
            }
            Line::Session(session) => Record::Session(SessionRecord {
                sid: session.sid,
                username: session.username,
                account_id: session.account_id,
                generation: session.generation,
                created_at: session.created_at,
                last_refreshed_at: session.last_refreshed_at,
                expires_at: session.expires_at,
                access_expires_at: session.access_expires_at,
                with_otp: session.with_otp,
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
                second_factor: None,
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
                with_otp: false,
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

    /// The records `texts` (lines) assemble into.
    fn assemble(texts: &[String]) -> Result<Vec<Record>, String> {
        let mut assembler = Assembler::default();
        let mut records = Vec::new();
        for text in texts {
            records.extend(assembler.push(serde_json::from_str(text).unwrap())?);
        }
        records.extend(assembler.push(Line::End { records: 0 })?);
        Ok(records)
    }

    fn texts(record: &Record) -> Vec<String> {
        std::iter::once(Line::from(record))
            .chain(second_factor_line(record))
            .map(|line| serde_json::to_string(&line).unwrap())
            .collect()
    }

    #[test]
    fn every_record_survives_a_line_unchanged() {
        let mut all = records();
        all.push(Record::User(UserRecord {
            username: "bob".into(),
            account_id: 8,
            second_factor: Some(SecondFactor {
                totp: Some(vec![1, 2, 3]),
                pending: Some(vec![4, 5]),
                last_step: 12345,
                recovery_codes: vec![[0x11; 32], [0x22; 32]],
            }),
            ..match &all[0] {
                Record::User(user) => user.clone(),
                _ => unreachable!(),
            }
        }));
        all.push(Record::Session(SessionRecord {
            with_otp: true,
            ..match &all[1] {
                Record::Session(session) => session.clone(),
                _ => unreachable!(),
            }
        }));
        for record in all {
            let texts = texts(&record);
            assert_eq!(assemble(&texts).unwrap(), vec![record], "{texts:?}");
        }
    }

    #[test]
    fn a_second_factor_line_belongs_right_after_its_user() {
        let bob = r#"{"type":"user","username":"bob","account_id":8,"password_hash":"h","roles":[],"disabled":false,"created_at":0,"generation":0}"#;
        let factor = r#"{"type":"second_factor","username":"bob","account_id":8,"totp_sealed":"AQID","pending_sealed":null,"last_step":1,"recovery_codes":[]}"#;
        let session = r#"{"type":"session","sid":"s","username":"bob","account_id":8,"generation":0,"created_at":0,"last_refreshed_at":0,"expires_at":0,"access_expires_at":0}"#;
        let ok = assemble(&[bob.into(), factor.into()]).unwrap();
        assert!(matches!(&ok[0], Record::User(user) if user.has_totp()));
        assert!(assemble(&[factor.into()]).is_err());
        assert!(assemble(&[bob.into(), session.into(), factor.into()]).is_err());
        let other = factor.replace("\"account_id\":8", "\"account_id\":9");
        assert!(assemble(&[bob.into(), other]).is_err());
        assert!(assemble(&[bob.into(), factor.into(), factor.into()]).is_err());
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
            assert_eq!(assemble(&[text.to_owned()]).unwrap(), vec![record.clone()]);
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

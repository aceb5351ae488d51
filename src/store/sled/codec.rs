//! How records are laid out in sled's values: a format byte, then (from format 2) the
//! record's version, then the record in bincode. bincode is not self-describing, so a record
//! whose fields change gets a new format: format 5 holds today's layouts, format 4 those
//! before users learnt `second_factor` and sessions `with_otp`, format 3 the layouts before
//! revocation entries learnt `ended_sessions` and `serial`, formats 1 and 2 those before the
//! refresh record learnt `issued_in_cookie`. Records of every format
//! still load (format 1, from before versions were kept, as version 0).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::store::StoreError;
use crate::store::records::{
    LegacyRevocationRecord, LegacySessionRecord, LegacyUserRecord, MfaTokenRecord, RefreshRecord,
    RevocationRecord, SessionRecord, UnixSeconds, UserRecord, Version, Versioned,
};

/// Format 1: `[1] ‖ bincode(record in its format-1/2 layout)`.
const FORMAT_UNVERSIONED: u8 = 1;
/// Format 2: `[2] ‖ version (u64, big-endian) ‖ bincode(record in its format-1/2 layout)`.
const FORMAT_VERSIONED: u8 = 2;
/// Format 3: `[3] ‖ version (u64, big-endian) ‖ bincode(record in its format-3 layout)`.
const FORMAT_3: u8 = 3;
/// Format 4: `[4] ‖ version (u64, big-endian) ‖ bincode(record in its format-4 layout)`.
const FORMAT_4: u8 = 4;
/// Format 5: `[5] ‖ version (u64, big-endian) ‖ bincode(record)`, today's layouts.
const FORMAT_CURRENT: u8 = 5;

/// A record type sled stores, with the layouts older formats hold it in.
pub(super) trait Stored: Serialize + DeserializeOwned {
    /// The record as formats 1 and 2 laid it out: the record itself while its fields have
    /// not changed since.
    type Legacy: DeserializeOwned + Into<Self>;
    /// The record as format 3 laid it out.
    type Format3: DeserializeOwned + Into<Self>;
    /// The record as format 4 laid it out.
    type Format4: DeserializeOwned + Into<Self>;
}

impl Stored for UserRecord {
    type Legacy = LegacyUserRecord;
    type Format3 = LegacyUserRecord;
    type Format4 = LegacyUserRecord;
}

impl Stored for SessionRecord {
    type Legacy = LegacySessionRecord;
    type Format3 = LegacySessionRecord;
    type Format4 = LegacySessionRecord;
}

impl Stored for RevocationRecord {
    type Legacy = LegacyRevocationRecord;
    type Format3 = LegacyRevocationRecord;
    type Format4 = Self;
}

impl Stored for RefreshRecord {
    type Legacy = LegacyRefreshRecord;
    type Format3 = Self;
    type Format4 = Self;
}

/// New in format 5: never stored in an older one.
impl Stored for MfaTokenRecord {
    type Legacy = Self;
    type Format3 = Self;
    type Format4 = Self;
}

/// A refresh record of formats 1 and 2, from before `issued_in_cookie`: those tokens were
/// all issued under rev 3, which did not record how, so none gets the cookie grace.
#[derive(Deserialize)]
pub(super) struct LegacyRefreshRecord {
    sid: String,
    issued_at: UnixSeconds,
    expires_at: UnixSeconds,
    rotated_at: Option<UnixSeconds>,
}

impl From<LegacyRefreshRecord> for RefreshRecord {
    fn from(old: LegacyRefreshRecord) -> RefreshRecord {
        RefreshRecord {
            sid: old.sid,
            issued_at: old.issued_at,
            expires_at: old.expires_at,
            rotated_at: old.rotated_at,
            issued_in_cookie: false,
        }
    }
}

pub(super) fn encode<T: Stored>(version: Version, record: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::with_capacity(64);
    bytes.push(FORMAT_CURRENT);
    bytes.extend_from_slice(&version.to_be_bytes());
    bincode::serde::encode_into_std_write(record, &mut bytes, bincode::config::standard())
        .map_err(|err| StoreError::Unavailable(format!("cannot encode a record: {err}")))?;
    Ok(bytes)
}

pub(super) fn decode<T: Stored>(
    bytes: &[u8],
    space: &'static str,
) -> Result<Versioned<T>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { space, reason };
    let truncated = || corrupt("truncated version".into());
    let (format, rest) = bytes
        .split_first()
        .ok_or_else(|| corrupt("empty record".into()))?;
    let (version, record) = match *format {
        FORMAT_UNVERSIONED => (0, body::<T::Legacy>(rest).map(Into::into)),
        FORMAT_VERSIONED => {
            let (version, body_bytes) = split_version(rest).ok_or_else(truncated)?;
            (version, body::<T::Legacy>(body_bytes).map(Into::into))
        }
        FORMAT_3 => {
            let (version, body_bytes) = split_version(rest).ok_or_else(truncated)?;
            (version, body::<T::Format3>(body_bytes).map(Into::into))
        }
        FORMAT_4 => {
            let (version, body_bytes) = split_version(rest).ok_or_else(truncated)?;
            (version, body::<T::Format4>(body_bytes).map(Into::into))
        }
        FORMAT_CURRENT => {
            let (version, body_bytes) = split_version(rest).ok_or_else(truncated)?;
            (version, body::<T>(body_bytes))
        }
        format => return Err(corrupt(format!("unknown record format {format}"))),
    };
    Ok(Versioned {
        version,
        record: record.map_err(corrupt)?,
    })
}

/// The version in front of a format-2 to -5 body, and the body.
fn split_version(rest: &[u8]) -> Option<(Version, &[u8])> {
    rest.split_first_chunk::<8>()
        .map(|(version, body)| (u64::from_be_bytes(*version), body))
}

/// The bincode body of a record, in layout `L`.
fn body<L: DeserializeOwned>(bytes: &[u8]) -> Result<L, String> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(record, _)| record)
        .map_err(|err| err.to_string())
}

/// The version of an encoded record, without decoding the rest.
pub(super) fn version_of(bytes: &[u8]) -> Version {
    match bytes.split_first() {
        Some((&(FORMAT_VERSIONED | FORMAT_3 | FORMAT_4 | FORMAT_CURRENT), rest)) => {
            split_version(rest).map_or(0, |(version, _)| version)
        }
        _ => 0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record() -> RefreshRecord {
        RefreshRecord {
            sid: "s1".into(),
            issued_at: 1,
            expires_at: 2,
            rotated_at: Some(3),
            issued_in_cookie: true,
        }
    }

    /// The refresh record's fields as formats 1 and 2 wrote them (rev 3's struct).
    #[derive(Serialize)]
    struct Rev3RefreshRecord {
        sid: String,
        issued_at: UnixSeconds,
        expires_at: UnixSeconds,
        rotated_at: Option<UnixSeconds>,
    }

    fn rev3_body() -> Vec<u8> {
        let old = Rev3RefreshRecord {
            sid: "s1".into(),
            issued_at: 1,
            expires_at: 2,
            rotated_at: Some(3),
        };
        bincode::serde::encode_to_vec(old, bincode::config::standard()).unwrap()
    }

    /// What a rev-3 refresh record becomes: the same token, never issued in a cookie.
    fn upgraded() -> RefreshRecord {
        RefreshRecord {
            issued_in_cookie: false,
            ..record()
        }
    }

    #[test]
    fn records_round_trip_with_their_version() {
        let bytes = encode(42, &record()).unwrap();
        assert_eq!(bytes[0], FORMAT_CURRENT);
        assert_eq!(version_of(&bytes), 42);
        let decoded: Versioned<RefreshRecord> = decode(&bytes, "refresh_tokens").unwrap();
        assert_eq!((decoded.version, decoded.record), (42, record()));
    }

    #[test]
    fn format_two_refresh_records_load_in_the_new_layout_as_not_issued_in_a_cookie() {
        let mut bytes = vec![FORMAT_VERSIONED];
        bytes.extend(7u64.to_be_bytes());
        bytes.extend(rev3_body());
        let decoded: Versioned<RefreshRecord> = decode(&bytes, "refresh_tokens").unwrap();
        assert_eq!((decoded.version, decoded.record), (7, upgraded()));
        assert_eq!(version_of(&bytes), 7);
    }

    #[test]
    fn format_one_records_load_as_version_zero() {
        let mut bytes = vec![FORMAT_UNVERSIONED];
        bytes.extend(rev3_body());
        let decoded: Versioned<RefreshRecord> = decode(&bytes, "refresh_tokens").unwrap();
        assert_eq!((decoded.version, decoded.record), (0, upgraded()));
        assert_eq!(version_of(&bytes), 0);
    }

    #[test]
    fn format_four_users_and_sessions_load_without_a_second_factor() {
        let legacy_session = LegacySessionRecord {
            sid: "s1".into(),
            username: "alice".into(),
            account_id: 1,
            generation: 2,
            created_at: 3,
            last_refreshed_at: 4,
            expires_at: 5,
            access_expires_at: 6,
        };
        #[derive(Serialize)]
        struct Format4Session<'a>(&'a str, &'a str, u64, u64, i64, i64, i64, i64);
        let body = bincode::serde::encode_to_vec(
            Format4Session("s1", "alice", 1, 2, 3, 4, 5, 6),
            bincode::config::standard(),
        )
        .unwrap();
        for format in [FORMAT_VERSIONED, FORMAT_3, FORMAT_4] {
            let mut old = vec![format];
            old.extend(9u64.to_be_bytes());
            old.extend(&body);
            let decoded: Versioned<SessionRecord> = decode(&old, "sessions").unwrap();
            assert_eq!(decoded.version, 9);
            assert_eq!(decoded.record, SessionRecord::from(legacy_session.clone()));
            assert!(!decoded.record.with_otp);
        }
        #[derive(Serialize)]
        struct Format4User<'a>(u64, &'a str, &'a str, Vec<String>, bool, i64, u64);
        let body = bincode::serde::encode_to_vec(
            Format4User(7, "alice", "$argon2id$x", vec!["admin".into()], false, 3, 4),
            bincode::config::standard(),
        )
        .unwrap();
        let mut old = vec![FORMAT_4];
        old.extend(2u64.to_be_bytes());
        old.extend(&body);
        let user: Versioned<UserRecord> = decode(&old, "users").unwrap();
        assert_eq!((user.record.account_id, user.record.generation), (7, 4));
        assert_eq!(user.record.second_factor, None);
        let enrolled = UserRecord {
            second_factor: Some(crate::store::SecondFactor {
                totp: Some(vec![1, 2, 3]),
                pending: None,
                last_step: 99,
                recovery_codes: vec![[5; 32]],
            }),
            ..user.record
        };
        let decoded: Versioned<UserRecord> =
            decode(&encode(3, &enrolled).unwrap(), "users").unwrap();
        assert_eq!(decoded.record, enrolled);
    }

    #[test]
    fn format_three_revocation_entries_load_without_ended_sessions_or_serial() {
        #[derive(Serialize)]
        struct Format3Entry {
            seq: u64,
            kind: crate::store::RevocationKind,
            id: String,
            revoked_at: UnixSeconds,
            expires_at: UnixSeconds,
            reason: Option<String>,
        }
        let old = Format3Entry {
            seq: 5,
            kind: crate::store::RevocationKind::User,
            id: "alice".into(),
            revoked_at: 1,
            expires_at: 2,
            reason: Some("r".into()),
        };
        let mut bytes = vec![FORMAT_3];
        bytes.extend(3u64.to_be_bytes());
        bytes.extend(bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap());
        let decoded: Versioned<RevocationRecord> = decode(&bytes, "revocations").unwrap();
        let entry = decoded.record;
        assert_eq!(
            (decoded.version, entry.seq, entry.id.as_str()),
            (3, 5, "alice")
        );
        assert_eq!((entry.ended_sessions.len(), &entry.serial), (0, &None));
        assert_eq!(entry.key_id(), "alice");
        let new = RevocationRecord {
            ended_sessions: vec!["s1".into()],
            serial: Some("x".into()),
            ..entry
        };
        let decoded: Versioned<RevocationRecord> =
            decode(&encode(4, &new).unwrap(), "revocations").unwrap();
        assert_eq!(decoded.record, new);
        assert_eq!(new.key_id(), "alice#x");
    }

    #[test]
    fn unknown_formats_and_truncated_records_are_corrupt() {
        let mut bytes = encode(1, &record()).unwrap();
        bytes[0] = 9;
        assert!(decode::<RefreshRecord>(&bytes, "t").is_err());
        assert!(decode::<RefreshRecord>(&[FORMAT_VERSIONED, 0, 0], "t").is_err());
        assert!(decode::<RefreshRecord>(&[FORMAT_CURRENT, 0, 0], "t").is_err());
        assert!(decode::<RefreshRecord>(&[], "t").is_err());
        // A format-3 refresh record cut before its new field is not taken for an old one.
        let mut cut = encode(1, &record()).unwrap();
        cut.pop();
        assert!(decode::<RefreshRecord>(&cut, "t").is_err());
    }
}

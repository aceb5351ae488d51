//! How authd's records sit in etcd: one key per record under `etcd.prefix`, named by kind,
//! and each value a format byte, the commit's nonce and the record in bincode. The version of
//! a record is etcd's `mod_revision` of its key, so it is not stored in the value.
//!
//! ```text
//! <prefix>u/<username>        user              <prefix>l/<seq: 16 hex>  revocation, list order
//! <prefix>s/<sid>             session           <prefix>m/seq, m/id     counters (u64 BE)
//! <prefix>r/<hash: 64 hex>    refresh token     <prefix>m/deployment    the deployment record
//!                                               <prefix>m/epoch         the feed cursors' epoch
//! <prefix>v/<j|s|u>/<id>      revocation entry  <prefix>n/<node>        member heartbeat (leased)
//! <prefix>t/<node>/<n: 16 hex> a login outcome for the shared throttle (leased by login.window)
//! <prefix>f/<hash: 64 hex>    a pending second login step (`mfa_token`, leased to its expiry)
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::StoreError;
use crate::store::records::{
    Key, LegacyRevocationRecord, LegacySessionRecord, LegacyUserRecord, LoginEvent, MfaTokenRecord,
    RefreshRecord, RevocationKind, RevocationRecord, SessionRecord, UserRecord,
    refresh_hash_from_hex, refresh_hash_hex,
};

/// `[1] ‖ nonce (u64 BE) ‖ bincode(record in its format-1 layout)`: revocation entries
/// before they learnt `ended_sessions` and `serial`.
const FORMAT_1: u8 = 1;
/// `[2] ‖ nonce (u64 BE) ‖ bincode(record in its format-2 layout)`: users before they
/// learnt `second_factor`, sessions before `with_otp`.
const FORMAT_2: u8 = 2;
/// `[3] ‖ nonce (u64 BE) ‖ bincode(record)`, today's layouts.
const FORMAT_CURRENT: u8 = 3;

/// A record type stored in etcd values, with the layouts older formats hold it in (bincode
/// is not self-describing: a record whose fields change gets a new format).
pub trait Stored: DeserializeOwned {
    type Format1: DeserializeOwned + Into<Self>;
    type Format2: DeserializeOwned + Into<Self>;
}

impl Stored for UserRecord {
    type Format1 = LegacyUserRecord;
    type Format2 = LegacyUserRecord;
}

impl Stored for SessionRecord {
    type Format1 = LegacySessionRecord;
    type Format2 = LegacySessionRecord;
}

impl Stored for RefreshRecord {
    type Format1 = Self;
    type Format2 = Self;
}

impl Stored for LoginEvent {
    type Format1 = Self;
    type Format2 = Self;
}

impl Stored for RevocationRecord {
    type Format1 = LegacyRevocationRecord;
    type Format2 = Self;
}

/// New in format 3.
impl Stored for MfaTokenRecord {
    type Format1 = Self;
    type Format2 = Self;
}

/// The key names of one deployment (one `etcd.prefix`).
#[derive(Debug, Clone)]
pub struct Layout {
    prefix: Vec<u8>,
}

/// What a key under the prefix names.
#[derive(Debug, Clone, PartialEq)]
pub enum Named {
    Record(Key),
    LogEntry,
    Member(String),
    /// A login event written by the instance `node`.
    LoginEvent(String),
    Meta,
    Other,
}

impl Layout {
    pub fn new(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.as_bytes().to_vec(),
        }
    }

    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    fn under(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut key = self.prefix.clone();
        for part in parts {
            key.extend_from_slice(part);
        }
        key
    }

    pub fn key(&self, key: &Key) -> Vec<u8> {
        match key {
            Key::User(name) => self.under(&[b"u/", name.as_bytes()]),
            Key::Session(sid) => self.under(&[b"s/", sid.as_bytes()]),
            Key::Refresh(hash) => self.under(&[b"r/", refresh_hash_hex(hash).as_bytes()]),
            Key::MfaToken(hash) => self.under(&[b"f/", refresh_hash_hex(hash).as_bytes()]),
            Key::Revocation(kind, id) => {
                self.under(&[b"v/", &[kind_char(*kind)], b"/", id.as_bytes()])
            }
        }
    }

    /// The first key of a kind's space: `u/`, `s/`, `r/`, `v/j/`, `l/`, `n/`.
    pub fn space(&self, space: &str) -> Vec<u8> {
        self.under(&[space.as_bytes()])
    }

    pub fn log_entry(&self, seq: u64) -> Vec<u8> {
        self.under(&[b"l/", format!("{seq:016x}").as_bytes()])
    }

    pub fn member(&self, node: &str) -> Vec<u8> {
        self.under(&[b"n/", node.as_bytes()])
    }

    pub fn login_event(&self, node: &str, number: u64) -> Vec<u8> {
        self.under(&[
            b"t/",
            node.as_bytes(),
            b"/",
            format!("{number:016x}").as_bytes(),
        ])
    }

    pub fn meta(&self, name: &str) -> Vec<u8> {
        self.under(&[b"m/", name.as_bytes()])
    }

    /// What `key` names (keys outside the prefix are `Other`).
    pub fn name(&self, key: &[u8]) -> Named {
        let Some(rest) = key.strip_prefix(self.prefix.as_slice()) else {
            return Named::Other;
        };
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        match rest {
            [b'u', b'/', name @ ..] => Named::Record(Key::User(text(name))),
            [b's', b'/', sid @ ..] => Named::Record(Key::Session(text(sid))),
            [b'r', b'/', hash @ ..] => match refresh_hash_from_hex(hash) {
                Some(hash) => Named::Record(Key::Refresh(hash)),
                None => Named::Other,
            },
            [b'f', b'/', hash @ ..] => match refresh_hash_from_hex(hash) {
                Some(hash) => Named::Record(Key::MfaToken(hash)),
                None => Named::Other,
            },
            [b'v', b'/', kind, b'/', id @ ..] => match kind_of(*kind) {
                Some(kind) => Named::Record(Key::Revocation(kind, text(id))),
                None => Named::Other,
            },
            [b'l', b'/', ..] => Named::LogEntry,
            [b'n', b'/', node @ ..] => Named::Member(text(node)),
            [b't', b'/', rest @ ..] => match rest.iter().position(|byte| *byte == b'/') {
                Some(end) => Named::LoginEvent(text(&rest[..end])),
                None => Named::Other,
            },
            [b'm', b'/', ..] => Named::Meta,
            _ => Named::Other,
        }
    }
}

/// The smallest key after every key that starts with `prefix` (etcd's range end).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn kind_char(kind: RevocationKind) -> u8 {
    match kind {
        RevocationKind::Jti => b'j',
        RevocationKind::Sid => b's',
        RevocationKind::User => b'u',
    }
}

fn kind_of(byte: u8) -> Option<RevocationKind> {
    match byte {
        b'j' => Some(RevocationKind::Jti),
        b's' => Some(RevocationKind::Sid),
        b'u' => Some(RevocationKind::User),
        _ => None,
    }
}

pub fn encode<T: Serialize>(nonce: u64, record: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::with_capacity(64);
    bytes.push(FORMAT_CURRENT);
    bytes.extend_from_slice(&nonce.to_be_bytes());
    bincode::serde::encode_into_std_write(record, &mut bytes, bincode::config::standard())
        .map_err(|err| StoreError::Unavailable(format!("cannot encode a record: {err}")))?;
    Ok(bytes)
}

/// The commit nonce a value was written with.
pub fn nonce_of(bytes: &[u8]) -> Option<u64> {
    match bytes.split_first() {
        Some((&(FORMAT_1 | FORMAT_2 | FORMAT_CURRENT), rest)) => rest
            .split_first_chunk::<8>()
            .map(|(nonce, _)| u64::from_be_bytes(*nonce)),
        _ => None,
    }
}

pub fn decode<T: Stored>(bytes: &[u8], space: &'static str) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { space, reason };
    let body = |rest: &[u8]| -> Result<Vec<u8>, StoreError> {
        rest.split_first_chunk::<8>()
            .map(|(_, body)| body.to_vec())
            .ok_or_else(|| corrupt("truncated nonce".into()))
    };
    let config = bincode::config::standard();
    match bytes.split_first() {
        Some((&FORMAT_CURRENT, rest)) => bincode::serde::decode_from_slice(&body(rest)?, config)
            .map(|(record, _)| record)
            .map_err(|err| corrupt(err.to_string())),
        Some((&FORMAT_2, rest)) => {
            bincode::serde::decode_from_slice::<T::Format2, _>(&body(rest)?, config)
                .map(|(record, _)| record.into())
                .map_err(|err| corrupt(err.to_string()))
        }
        Some((&FORMAT_1, rest)) => {
            bincode::serde::decode_from_slice::<T::Format1, _>(&body(rest)?, config)
                .map(|(record, _)| record.into())
                .map_err(|err| corrupt(err.to_string()))
        }
        Some((format, _)) => Err(corrupt(format!("unknown record format {format}"))),
        None => Err(corrupt("empty record".into())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::records::UserRecord;

    #[test]
    fn every_record_key_names_itself_back() {
        let layout = Layout::new("/authd/");
        for key in [
            Key::User("alice@example.com".into()),
            Key::Session("c2lk".into()),
            Key::Refresh([0xab; 32]),
            Key::MfaToken([0xcd; 32]),
            Key::Revocation(RevocationKind::Jti, "a/b".into()),
            Key::Revocation(RevocationKind::User, "bob".into()),
        ] {
            assert_eq!(layout.name(&layout.key(&key)), Named::Record(key));
        }
        assert_eq!(
            layout.name(&layout.member("n1")),
            Named::Member("n1".into())
        );
        assert_eq!(layout.name(&layout.log_entry(7)), Named::LogEntry);
        assert_eq!(
            layout.name(&layout.login_event("n1", 3)),
            Named::LoginEvent("n1".into())
        );
        assert_eq!(layout.name(b"/other/u/alice"), Named::Other);
    }

    #[test]
    fn log_entries_sort_in_seq_order_and_prefix_ends_bound_a_space() {
        let layout = Layout::new("/p/");
        assert!(layout.log_entry(9) < layout.log_entry(10));
        assert!(layout.log_entry(0xffff) < layout.log_entry(0x1_0000));
        assert_eq!(prefix_end(b"/p/u/"), b"/p/u0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
    }

    #[test]
    fn values_carry_their_commit_nonce_and_refuse_unknown_formats() {
        let user = UserRecord {
            account_id: 1,
            username: "alice".into(),
            password_hash: "$argon2id$x".into(),
            roles: vec!["admin".into()],
            disabled: false,
            created_at: 5,
            generation: 2,
            second_factor: None,
        };
        let bytes = encode(42, &user).unwrap();
        assert_eq!(nonce_of(&bytes), Some(42));
        assert_eq!(decode::<UserRecord>(&bytes, "users").unwrap(), user);
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(matches!(
            decode::<UserRecord>(&bad, "users"),
            Err(StoreError::Corrupt { .. })
        ));
    }
}

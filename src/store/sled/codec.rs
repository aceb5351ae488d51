//! How records are laid out in sled's values: a format byte, then (from format 2) the
//! record's version, then the record in bincode. Format 1 records (before versions were
//! kept) still load, as version 0.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::StoreError;
use crate::store::records::{Version, Versioned};

/// Format 1: `[1] ‖ bincode(record)`.
const FORMAT_UNVERSIONED: u8 = 1;
/// Format 2: `[2] ‖ version (u64, big-endian) ‖ bincode(record)`.
const FORMAT_VERSIONED: u8 = 2;

pub(super) fn encode<T: Serialize>(version: Version, record: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::with_capacity(64);
    bytes.push(FORMAT_VERSIONED);
    bytes.extend_from_slice(&version.to_be_bytes());
    bincode::serde::encode_into_std_write(record, &mut bytes, bincode::config::standard())
        .map_err(|err| StoreError::Unavailable(format!("cannot encode a record: {err}")))?;
    Ok(bytes)
}

pub(super) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    space: &'static str,
) -> Result<Versioned<T>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { space, reason };
    let (version, body) = match bytes.split_first() {
        Some((&FORMAT_UNVERSIONED, body)) => (0, body),
        Some((&FORMAT_VERSIONED, rest)) => {
            let (version, body) = rest
                .split_first_chunk::<8>()
                .ok_or_else(|| corrupt("truncated version".into()))?;
            (u64::from_be_bytes(*version), body)
        }
        Some((format, _)) => return Err(corrupt(format!("unknown record format {format}"))),
        None => return Err(corrupt("empty record".into())),
    };
    let (record, _) = bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map_err(|err| corrupt(err.to_string()))?;
    Ok(Versioned { version, record })
}

/// The version of an encoded record, without decoding the rest.
pub(super) fn version_of(bytes: &[u8]) -> Version {
    match bytes.split_first() {
        Some((&FORMAT_VERSIONED, rest)) => rest
            .split_first_chunk::<8>()
            .map_or(0, |(version, _)| u64::from_be_bytes(*version)),
        _ => 0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::records::RefreshRecord;

    fn record() -> RefreshRecord {
        RefreshRecord {
            sid: "s1".into(),
            issued_at: 1,
            expires_at: 2,
            rotated_at: None,
        }
    }

    #[test]
    fn records_round_trip_with_their_version() {
        let bytes = encode(42, &record()).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSIONED);
        assert_eq!(version_of(&bytes), 42);
        let decoded: Versioned<RefreshRecord> = decode(&bytes, "refresh_tokens").unwrap();
        assert_eq!((decoded.version, decoded.record), (42, record()));
    }

    #[test]
    fn format_one_records_load_as_version_zero() {
        let mut bytes = vec![FORMAT_UNVERSIONED];
        bytes.extend(bincode::serde::encode_to_vec(record(), bincode::config::standard()).unwrap());
        let decoded: Versioned<RefreshRecord> = decode(&bytes, "refresh_tokens").unwrap();
        assert_eq!((decoded.version, decoded.record), (0, record()));
        assert_eq!(version_of(&bytes), 0);
    }

    #[test]
    fn unknown_formats_and_truncated_records_are_corrupt() {
        let mut bytes = encode(1, &record()).unwrap();
        bytes[0] = 9;
        assert!(decode::<RefreshRecord>(&bytes, "t").is_err());
        assert!(decode::<RefreshRecord>(&[FORMAT_VERSIONED, 0, 0], "t").is_err());
        assert!(decode::<RefreshRecord>(&[], "t").is_err());
    }
}

//! The revocation feed (API.md "Revocation feed"): every revocation as `jti` and `sid`
//! events in commit order, each with a cursor that carries the store's epoch, for apps
//! that verify access tokens themselves. Plain Rust over the [`Store`]; HTTP is elsewhere.
//!
//! A user entry (a revoke-all) becomes one `sid` event per session it ended, so a cursor
//! is an entry's `seq` and the event's index within it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::watch;

use crate::store::{RevocationKind, RevocationRecord, Store, StoreError, UnixSeconds};

/// How many entries one read of the store takes.
const READ_ENTRIES: usize = 256;

/// A position in the feed: the event `index` of the entry at `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub seq: u64,
    pub index: u32,
}

impl Cursor {
    /// The cursor as clients see it: `<epoch>.<seq in hex>.<index>`.
    pub fn render(&self, epoch: &str) -> String {
        format!("{epoch}.{:x}.{}", self.seq, self.index)
    }

    /// Reads a cursor a client sent back, made under `epoch`.
    pub fn parse(text: &str, epoch: &str) -> Result<Cursor, CursorError> {
        let mut parts = text.rsplitn(3, '.');
        let (Some(index), Some(seq), Some(made_under)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(CursorError::Malformed);
        };
        let hex_digits =
            |s: &str| !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let decimal =
            |s: &str| !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit());
        let epoch_like = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !hex_digits(seq) || !decimal(index) || !epoch_like(made_under) {
            return Err(CursorError::Malformed);
        }
        let cursor = Cursor {
            seq: u64::from_str_radix(seq, 16).map_err(|_| CursorError::Malformed)?,
            index: index.parse().map_err(|_| CursorError::Malformed)?,
        };
        if made_under != epoch {
            return Err(CursorError::OtherEpoch);
        }
        Ok(cursor)
    }
}

/// Why a cursor a client sent cannot be resumed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("the cursor is not one authd makes")]
    Malformed,
    #[error(
        "the cursor is of another store (restored since, or another deployment's): start over without one"
    )]
    OtherEpoch,
}

/// What an event says is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Jti,
    Sid,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Jti => "jti",
            EventKind::Sid => "sid",
        }
    }
}

/// One revocation as the feed sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub cursor: Cursor,
    pub kind: EventKind,
    pub id: String,
    /// After this the event blocks nothing (the entry's `expires_at`).
    pub expires_at: UnixSeconds,
}

/// The events of one entry: itself (jti, sid), or the sessions a revoke-all ended.
pub fn events_of(entry: &RevocationRecord) -> Vec<Event> {
    let event = |index: usize, kind, id: &str| Event {
        cursor: Cursor {
            seq: entry.seq,
            index: u32::try_from(index).unwrap_or(u32::MAX),
        },
        kind,
        id: id.to_owned(),
        expires_at: entry.expires_at,
    };
    match entry.kind {
        RevocationKind::Jti => vec![event(0, EventKind::Jti, &entry.id)],
        RevocationKind::Sid => vec![event(0, EventKind::Sid, &entry.id)],
        RevocationKind::User => entry
            .ended_sessions
            .iter()
            .enumerate()
            .map(|(index, sid)| event(index, EventKind::Sid, sid))
            .collect(),
    }
}

/// One client's way through the feed: the events after its position, then the new ones
/// as they become durable.
pub struct Follower {
    store: Store,
    /// The last event handed out (or the client's cursor); `None`: from the start.
    position: Option<Cursor>,
    /// The `seq` of the last entry read from the store.
    read_up_to: u64,
    pending: VecDeque<Event>,
    updates: watch::Receiver<u64>,
}

impl Follower {
    /// Follows `store` from after `position` (`None`: every entry in force first).
    pub fn new(store: Store, position: Option<Cursor>) -> Follower {
        let updates = store.revocation_updates();
        Follower {
            // An entry is read again from its start when the cursor is inside it.
            read_up_to: position.map_or(0, |cursor| cursor.seq.saturating_sub(1)),
            store,
            position,
            pending: VecDeque::new(),
            updates,
        }
    }

    /// Up to `limit` events after the position that have not expired by `now`, without
    /// waiting; empty when there are none yet.
    pub async fn next_events(
        &mut self,
        limit: usize,
        now: UnixSeconds,
    ) -> Result<Vec<Event>, StoreError> {
        let mut events = Vec::new();
        while events.len() < limit {
            if let Some(event) = self.pending.pop_front() {
                if self
                    .position
                    .is_some_and(|position| event.cursor <= position)
                {
                    continue;
                }
                self.position = Some(event.cursor);
                if event.expires_at >= now {
                    events.push(event);
                }
                continue;
            }
            // Marks what is seen now, so a wait after an empty read misses nothing.
            self.updates.borrow_and_update();
            let entries: Vec<Arc<RevocationRecord>> = self
                .store
                .revocations_after(self.read_up_to, READ_ENTRIES)
                .await?;
            let Some(last) = entries.last() else {
                break;
            };
            self.read_up_to = last.seq;
            self.pending
                .extend(entries.iter().flat_map(|entry| events_of(entry)));
        }
        Ok(events)
    }

    /// Waits until the store may have events after the position.
    pub async fn changed(&mut self) {
        if self.updates.changed().await.is_err() {
            // The store is gone (shutting down): nothing will come.
            std::future::pending::<()>().await;
        }
    }

    /// Where the follower is: the last event handed out, or else the newest durable
    /// position there is (a client resuming from it misses nothing that comes later).
    pub fn position(&self) -> Cursor {
        self.position.unwrap_or(Cursor {
            seq: self.read_up_to,
            index: u32::MAX,
        })
    }
}

/// The feed's clients of one instance, counted against `feed.max_clients`.
#[derive(Debug, Default)]
pub struct Clients(Arc<AtomicUsize>);

/// One admitted client; its place frees when this drops (the request or stream ended).
#[derive(Debug)]
pub struct Client(Arc<AtomicUsize>);

impl Clients {
    /// A place for one more client, unless `max` are served already.
    pub fn admit(&self, max: usize) -> Option<Client> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < max).then_some(count + 1)
            })
            .ok()?;
        metrics::gauge!(crate::metrics::FEED_CLIENTS).increment(1.0);
        Some(Client(self.0.clone()))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(crate::metrics::FEED_CLIENTS).decrement(1.0);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_name_their_epoch() {
        let cursor = Cursor {
            seq: 0x1f,
            index: 3,
        };
        let text = cursor.render("ep-Och_1");
        assert_eq!(text, "ep-Och_1.1f.3");
        assert_eq!(Cursor::parse(&text, "ep-Och_1"), Ok(cursor));
        assert_eq!(Cursor::parse(&text, "other"), Err(CursorError::OtherEpoch));
        for bad in [
            "",
            "x",
            "e.1",
            "e.zz.1",
            "e.1.-1",
            "e.1.1.",
            ".1.1",
            "e.1.99999999999",
            "e f.1.1",
        ] {
            assert_eq!(
                Cursor::parse(bad, "e"),
                Err(CursorError::Malformed),
                "{bad:?}"
            );
        }
        assert!(Cursor { seq: 2, index: 0 } > Cursor { seq: 1, index: 5 });
    }

    #[test]
    fn a_revoke_all_is_one_sid_event_per_session_it_ended() {
        let entry = RevocationRecord {
            seq: 7,
            kind: RevocationKind::User,
            id: "alice".into(),
            revoked_at: 1,
            expires_at: 9,
            reason: None,
            ended_sessions: vec!["s1".into(), "s2".into()],
            serial: Some("x".into()),
        };
        let events = events_of(&entry);
        let seen: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.cursor.seq,
                    e.cursor.index,
                    e.kind,
                    e.id.as_str(),
                    e.expires_at,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (7, 0, EventKind::Sid, "s1", 9),
                (7, 1, EventKind::Sid, "s2", 9)
            ]
        );
        let jti = RevocationRecord {
            kind: RevocationKind::Jti,
            id: "j".into(),
            ended_sessions: Vec::new(),
            serial: None,
            ..entry
        };
        assert_eq!(events_of(&jti)[0].kind, EventKind::Jti);
    }

    #[test]
    fn clients_past_the_cap_are_refused_until_one_leaves() {
        let clients = Clients::default();
        let first = clients.admit(2).unwrap();
        let _second = clients.admit(2).unwrap();
        assert!(clients.admit(2).is_none());
        drop(first);
        assert!(clients.admit(2).is_some());
    }
}

//! `GET /v1/revocations/feed` (API.md "Revocation feed"): the feed's events as Server-Sent
//! Events, or with `Accept: application/json` as a long-poll, for the holder of the feed
//! token. Each stream is written by a task of its own into a short queue, so a client that
//! stops reading holds a few chunks, never the backlog, and is dropped once it stalls.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use warp::Reply as _;
use warp::reply::Response;

use super::error::ApiError;
use super::reply::{json, rfc3339};
use super::request::Ctx;
use super::server::Streaming;
use crate::auth::AuthError;
use crate::feed::{Client, Cursor, Event, Follower};
use crate::state::AppState;
use crate::store::Store;

/// A comment goes out after this long without anything else, so proxies and clients see
/// the stream alive (API.md: at least every 15 s).
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A client that has not taken the next chunk for this long is dropped.
const SLOW_READER: Duration = Duration::from_secs(10);
/// Chunks written ahead of a client's reading.
const QUEUE: usize = 16;
/// Events put in one chunk of a stream.
const EVENTS_PER_CHUNK: usize = 64;
/// Events one long-poll answer holds at most.
const LONG_POLL_EVENTS: usize = 1000;
/// How often a stream checks that this instance's view is still current (cluster mode).
const CURRENCY_CHECK: Duration = Duration::from_secs(1);
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
const MAX_WAIT: Duration = Duration::from_secs(60);

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

pub async fn feed(ctx: Ctx, query: HashMap<String, String>) -> Result<Response, ApiError> {
    let Some(token) = ctx.settings.feed_token.as_ref() else {
        return Err(ApiError::not_found());
    };
    if !token.matches(ctx.bearer()?) {
        return Err(ApiError::invalid_token("not the feed token"));
    }
    let store = ctx.state.authority.store().clone();
    store.check_current().map_err(AuthError::from)?;
    let epoch = store.epoch().map_err(AuthError::from)?;
    let after = match ctx.headers.get(LAST_EVENT_ID) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::invalid_request("Last-Event-ID is not a cursor"))?
                .to_owned(),
        ),
        None => query.get("after").cloned(),
    };
    let position = after
        .as_deref()
        .map(|text| Cursor::parse(text, &epoch))
        .transpose()?;
    let long_poll = ctx
        .headers
        .get(ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"));
    let wait = if long_poll {
        wait(&query)?
    } else {
        DEFAULT_WAIT
    };
    let client = ctx
        .state
        .feed_clients
        .admit(ctx.settings.config.feed.max_clients)
        .ok_or_else(|| ApiError::unavailable("too many feed clients; try again shortly"))?;
    let follower = Follower::new(store.clone(), position);
    if long_poll {
        let answer = LongPoll {
            follower,
            epoch,
            after,
        };
        answer.run(&ctx, wait, client).await
    } else {
        Ok(stream(ctx, store, follower, epoch, client))
    }
}

/// `wait` of a long-poll: a duration up to [`MAX_WAIT`].
fn wait(query: &HashMap<String, String>) -> Result<Duration, ApiError> {
    let Some(text) = query.get("wait") else {
        return Ok(DEFAULT_WAIT);
    };
    let wait = humantime::parse_duration(text.trim())
        .map_err(|_| ApiError::invalid_request("wait must be a duration such as \"30s\""))?;
    if wait > MAX_WAIT {
        return Err(ApiError::invalid_request("wait must be at most 60s"));
    }
    Ok(wait)
}

struct LongPoll {
    follower: Follower,
    epoch: String,
    /// The client's cursor as it sent it.
    after: Option<String>,
}

#[derive(Serialize)]
struct LongPollAnswer {
    events: Vec<EventView>,
    next: String,
}

#[derive(Serialize)]
struct EventView {
    cursor: String,
    kind: &'static str,
    id: String,
    expires_at: String,
}

impl LongPoll {
    /// Answers the events after the cursor at once, else the first ones made within
    /// `wait`, else none.
    async fn run(
        mut self,
        ctx: &Ctx,
        wait: Duration,
        _client: Client,
    ) -> Result<Response, ApiError> {
        let state = &ctx.state;
        let deadline = Instant::now() + wait;
        let drained = state.drained();
        tokio::pin!(drained);
        loop {
            let events = self
                .follower
                .next_events(LONG_POLL_EVENTS, state.clock().now())
                .await
                .map_err(AuthError::from)?;
            if let Some(last) = events.last() {
                let next = last.cursor.render(&self.epoch);
                return Ok(self.answer(events, next));
            }
            tokio::select! {
                () = self.follower.changed() => {}
                () = tokio::time::sleep_until(deadline) => break,
                () = &mut drained => break,
            }
            state
                .authority
                .store()
                .check_current()
                .map_err(AuthError::from)?;
        }
        let next = match self.after.take() {
            Some(after) => after,
            None => self.follower.position().render(&self.epoch),
        };
        Ok(self.answer(Vec::new(), next))
    }

    fn answer(&self, events: Vec<Event>, next: String) -> Response {
        metrics::counter!(crate::metrics::FEED_EVENTS_SENT).increment(events.len() as u64);
        let events = events
            .into_iter()
            .map(|event| EventView {
                cursor: event.cursor.render(&self.epoch),
                kind: event.kind.as_str(),
                id: event.id,
                expires_at: rfc3339(event.expires_at),
            })
            .collect();
        let mut response = json(StatusCode::OK, &LongPollAnswer { events, next });
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// The Server-Sent Events answer, fed by a task of its own.
fn stream(ctx: Ctx, store: Store, follower: Follower, epoch: String, client: Client) -> Response {
    let (chunks, queue) = mpsc::channel::<Bytes>(QUEUE);
    tokio::spawn(
        Writer {
            state: ctx.state.clone(),
            store,
            follower,
            epoch,
            chunks,
        }
        .run(client),
    );
    let body = futures_util::stream::unfold(queue, |mut queue| async move {
        queue
            .recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), queue))
    });
    let mut response = warp::reply::stream(body).into_response();
    response.extensions_mut().insert(Streaming);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    response
}

/// Writes one stream: the events after the client's cursor, then new ones as they come,
/// keep-alive comments in between. Ends when the client goes or stalls, the daemon
/// drains, or this instance's view is no longer current.
struct Writer {
    state: std::sync::Arc<AppState>,
    store: Store,
    follower: Follower,
    epoch: String,
    chunks: mpsc::Sender<Bytes>,
}

/// Why a stream ended, for the debug log.
enum End {
    Gone,
    Stalled,
    Draining,
    Stale,
    Store(crate::store::StoreError),
}

impl Writer {
    async fn run(mut self, _client: Client) {
        let end = self.write().await;
        let why = match end {
            End::Gone => "the client went away".to_owned(),
            End::Stalled => "the client stopped reading".to_owned(),
            End::Draining => "the daemon is shutting down".to_owned(),
            End::Stale => "this instance's view is not current".to_owned(),
            End::Store(err) => format!("the store failed: {err}"),
        };
        tracing::debug!(why = %why, "revocation feed stream ended");
    }

    async fn write(&mut self) -> End {
        let drained = self.state.drained();
        tokio::pin!(drained);
        let mut currency = tokio::time::interval(CURRENCY_CHECK);
        let mut quiet_since = Instant::now();
        loop {
            let events = match self
                .follower
                .next_events(EVENTS_PER_CHUNK, self.state.clock().now())
                .await
            {
                Ok(events) => events,
                Err(err) => return End::Store(err),
            };
            if !events.is_empty() {
                let sent = events.len() as u64;
                if let Err(end) = self.send(sse_chunk(&events, &self.epoch)).await {
                    return end;
                }
                metrics::counter!(crate::metrics::FEED_EVENTS_SENT).increment(sent);
                quiet_since = Instant::now();
                continue;
            }
            tokio::select! {
                () = self.follower.changed() => {}
                () = tokio::time::sleep_until(quiet_since + KEEP_ALIVE) => {
                    if let Err(end) = self.send(Bytes::from_static(b": keep-alive\n\n")).await {
                        return end;
                    }
                    quiet_since = Instant::now();
                }
                _ = currency.tick(), if self.store.may_lag() => {
                    if self.store.check_current().is_err() {
                        return End::Stale;
                    }
                }
                () = &mut drained => return End::Draining,
                () = self.chunks.closed() => return End::Gone,
            }
        }
    }

    async fn send(&self, chunk: Bytes) -> Result<(), End> {
        match tokio::time::timeout(SLOW_READER, self.chunks.send(chunk)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Stalled),
        }
    }
}

/// Events in the SSE format: `id`, `event`, `data`, then a blank line each.
fn sse_chunk(events: &[Event], epoch: &str) -> Bytes {
    #[derive(Serialize)]
    struct Data<'a> {
        kind: &'static str,
        id: &'a str,
        expires_at: String,
    }
    let mut out = String::with_capacity(events.len() * 160);
    for event in events {
        let data = Data {
            kind: event.kind.as_str(),
            id: &event.id,
            expires_at: rfc3339(event.expires_at),
        };
        // Ids are printable (no line breaks): JSON keeps the data on one line.
        let data = serde_json::to_string(&data).unwrap_or_default();
        out.push_str("id: ");
        out.push_str(&event.cursor.render(epoch));
        out.push_str("\nevent: revoked\ndata: ");
        out.push_str(&data);
        out.push_str("\n\n");
    }
    Bytes::from(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::feed::EventKind;

    #[test]
    fn events_are_written_as_server_sent_events() {
        let event = Event {
            cursor: Cursor { seq: 26, index: 1 },
            kind: EventKind::Sid,
            id: "s-1".into(),
            expires_at: 0,
        };
        let chunk = sse_chunk(&[event], "ep");
        assert_eq!(
            std::str::from_utf8(&chunk).unwrap(),
            "id: ep.1a.1\nevent: revoked\ndata: {\"kind\":\"sid\",\"id\":\"s-1\",\"expires_at\":\"1970-01-01T00:00:00Z\"}\n\n"
        );
    }

    #[test]
    fn a_wait_is_a_duration_up_to_a_minute() {
        let query = |wait: &str| HashMap::from([("wait".to_owned(), wait.to_owned())]);
        assert_eq!(wait(&HashMap::new()).unwrap(), DEFAULT_WAIT);
        assert_eq!(wait(&query("2s")).unwrap(), Duration::from_secs(2));
        assert_eq!(wait(&query("60s")).unwrap(), MAX_WAIT);
        assert!(wait(&query("61s")).is_err());
        assert!(wait(&query("soon")).is_err());
    }
}

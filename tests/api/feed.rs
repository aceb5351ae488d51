//! The revocation feed (API.md rev 4, "Revocation feed"): `GET /v1/revocations/feed` as
//! Server-Sent Events and as a long-poll, with the feed token alone. What it sends without a
//! cursor and after one, how revoke-alls become `sid` events, cursors across restarts and
//! epochs, the client cap, keep-alives, metrics and the drain.
//!
//! Every daemon here keeps its feed token in its own folder (`feed.token`), so that no two
//! tests share one. "Nothing else was sent" is shown without waiting: a marker revocation
//! made afterwards must be the very next event.

use std::collections::BTreeSet;
use std::ops::Deref;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::common::client::{SseEvent, SseItem, SseRead, SseReader, feed_token};
use crate::common::{
    Daemon, PASSWORD, TestApp, assert_error, claims, config_with, header_str, percent_encode,
    random_suffix, set_in_section, within_timeout, write_config,
};

/// API.md: "Each event reaches every connected client within 1 s of the `200` that made it."
const LIVE: Duration = Duration::from_secs(1);
/// For events already there when the request is made (no promise in API.md, only speed).
const BACKLOG: Duration = Duration::from_secs(5);
/// Bound of the loops that poll for a state.
const DEADLINE: Duration = Duration::from_secs(20);

// ----- the daemon -----

/// A [`TestApp`] whose feed token lives in its own folder, with that token.
struct FeedApp {
    app: TestApp,
    token: String,
    overrides: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Deref for FeedApp {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.app
    }
}

/// The overrides of a daemon in `dir`: its feed token file there, then `extra`.
fn feed_overrides(dir: &Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut overrides = vec![(
        "AUTHD__FEED__TOKEN_FILE".to_owned(),
        dir.join("feed.token").display().to_string(),
    )];
    overrides.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    overrides
}

fn as_pairs(overrides: &[(String, String)]) -> Vec<(&str, &str)> {
    overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// The feed token of a daemon in `dir` (empty when it made none: feed disabled).
fn token_in(dir: &Path) -> String {
    let file = dir.join("feed.token");
    if file.exists() {
        feed_token(&file)
    } else {
        String::new()
    }
}

/// A daemon on the shipped configuration plus `extra` (`AUTHD__…`), in a fresh folder.
async fn feed_app(extra: &[(&str, &str)]) -> FeedApp {
    let dir = tempfile::tempdir().unwrap();
    let overrides = feed_overrides(dir.path(), extra);
    let app = TestApp::start_in(dir.path(), &as_pairs(&overrides)).await;
    FeedApp {
        app,
        token: token_in(dir.path()),
        overrides,
        dir,
    }
}

/// [`feed_app`] on a clock the test holds.
async fn feed_app_on_clock(extra: &[(&str, &str)], clock: authd::clock::Clock) -> FeedApp {
    let dir = tempfile::tempdir().unwrap();
    let overrides = feed_overrides(dir.path(), extra);
    let app = TestApp::start_in_with_clock(dir.path(), &as_pairs(&overrides), clock).await;
    FeedApp {
        app,
        token: token_in(dir.path()),
        overrides,
        dir,
    }
}

impl FeedApp {
    /// Shuts the daemon down and starts it again on the same data (and feed token file).
    async fn restart(self) -> FeedApp {
        let FeedApp {
            app,
            overrides,
            dir,
            ..
        } = self;
        app.stop().await;
        let app = TestApp::start_in(dir.path(), &as_pairs(&overrides)).await;
        FeedApp {
            app,
            token: token_in(dir.path()),
            overrides,
            dir,
        }
    }
}

// ----- what the feed sends -----

/// One revocation event, from either form.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FeedEvent {
    cursor: String,
    kind: String,
    id: String,
    expires_at: String,
}

fn string_field(object: &Value, name: &str) -> String {
    object[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {object}"))
        .to_owned()
}

fn keys(object: &Value) -> BTreeSet<&str> {
    object
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {object}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// An SSE event as API.md shapes it: `event: revoked`, the cursor as `id`, `data` exactly
/// `{"kind","id","expires_at"}` with `kind` `jti` or `sid`.
fn from_sse(event: &SseEvent) -> FeedEvent {
    assert_eq!(event.event.as_deref(), Some("revoked"), "{event:?}");
    let cursor = event
        .id
        .clone()
        .unwrap_or_else(|| panic!("no id (cursor) in {event:?}"));
    let data: Value = serde_json::from_str(&event.data)
        .unwrap_or_else(|err| panic!("data of {event:?} is not JSON: {err}"));
    assert_eq!(
        keys(&data),
        BTreeSet::from(["kind", "id", "expires_at"]),
        "{event:?}"
    );
    checked(FeedEvent {
        cursor,
        kind: string_field(&data, "kind"),
        id: string_field(&data, "id"),
        expires_at: string_field(&data, "expires_at"),
    })
}

/// A long-poll entry: exactly `{"cursor","kind","id","expires_at"}`.
fn from_poll(entry: &Value) -> FeedEvent {
    assert_eq!(
        keys(entry),
        BTreeSet::from(["cursor", "kind", "id", "expires_at"]),
        "{entry}"
    );
    checked(FeedEvent {
        cursor: string_field(entry, "cursor"),
        kind: string_field(entry, "kind"),
        id: string_field(entry, "id"),
        expires_at: string_field(entry, "expires_at"),
    })
}

fn checked(event: FeedEvent) -> FeedEvent {
    assert!(
        event.kind == "jti" || event.kind == "sid",
        "kind is jti or sid, never a user: {event:?}"
    );
    assert!(
        !event.cursor.is_empty() && !event.cursor.contains(char::is_whitespace),
        "a cursor has no spaces: {event:?}"
    );
    super::admin::assert_rfc3339_utc(&json!(event.expires_at));
    event
}

/// `(kind, id)` of each event, in order.
fn summary(events: &[FeedEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e.kind.clone(), e.id.clone()))
        .collect()
}

fn pair(kind: &str, id: &str) -> (String, String) {
    (kind.to_owned(), id.to_owned())
}

/// The parts of a cursor as the lead documented them: `<epoch>.<seq hex>.<index decimal>`.
fn cursor_parts(cursor: &str) -> (String, u64, u64) {
    let parts: Vec<&str> = cursor.split('.').collect();
    assert_eq!(parts.len(), 3, "cursor {cursor:?} is <epoch>.<seq>.<index>");
    let seq = u64::from_str_radix(parts[1], 16)
        .unwrap_or_else(|_| panic!("seq of {cursor:?} is lower hex"));
    let index = parts[2]
        .parse()
        .unwrap_or_else(|_| panic!("index of {cursor:?} is decimal"));
    (parts[0].to_owned(), seq, index)
}

/// `cursor` with its epoch changed to another string of the same characters.
fn with_other_epoch(cursor: &str) -> String {
    let (epoch, rest) = cursor.split_once('.').unwrap();
    let first = epoch.chars().next().unwrap();
    let other = epoch
        .chars()
        .find(|c| *c != first)
        .unwrap_or(if first == 'a' { 'b' } else { 'a' });
    let changed: String = std::iter::once(other)
        .chain(epoch.chars().skip(1))
        .collect();
    assert_ne!(changed, epoch);
    format!("{changed}.{rest}")
}

// ----- requests -----

/// Opens the event stream (`query` empty or `?…`, `Last-Event-ID` when given), asserting 200.
async fn open_stream(app: &FeedApp, query: &str, last_event_id: Option<&str>) -> SseReader {
    let mut request = app.feed(Some(&app.token), query);
    if let Some(cursor) = last_event_id {
        request = request.header("last-event-id", cursor);
    }
    let response = request.send().await.unwrap();
    if response.status() != StatusCode::OK {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        panic!(
            "GET /v1/revocations/feed{query} (Last-Event-ID {last_event_id:?}): {status} {body}"
        );
    }
    SseReader::new(response)
}

/// The next `count` events of a stream, each within [`BACKLOG`].
async fn next_events(stream: &mut SseReader, count: usize) -> Vec<FeedEvent> {
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        events.push(from_sse(&stream.next_event(BACKLOG).await));
    }
    events
}

/// A long-poll (`Accept: application/json`), asserted `200 application/json`: the events
/// and `next`.
async fn poll(app: &FeedApp, query: &str) -> (Vec<FeedEvent>, String) {
    let response = app.feed_poll(&app.token, query).await;
    let status = response.status();
    let content_type = header_str(&response, "content-type").unwrap_or_default();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "long-poll {query}: {body}");
    assert!(
        content_type.starts_with("application/json"),
        "long-poll {query}: {content_type}"
    );
    assert_eq!(keys(&body), BTreeSet::from(["events", "next"]), "{body}");
    let events = body["events"]
        .as_array()
        .unwrap_or_else(|| panic!("events in {body}"))
        .iter()
        .map(from_poll)
        .collect();
    (events, string_field(&body, "next"))
}

/// `POST /admin/v1/revocations`, asserted `200`; returns when that `200` arrived.
async fn revoke_ok(app: &TestApp, body: Value) -> Instant {
    let response = app.revoke(body.clone()).await;
    let answered = Instant::now();
    assert_eq!(response.status(), StatusCode::OK, "revoking {body}");
    answered
}

/// Revokes a fresh unknown jti (a marker) and returns it.
async fn marker(app: &TestApp) -> String {
    let jti = format!("marker-{}", random_suffix());
    revoke_ok(app, json!({"jti": jti})).await;
    jti
}

/// Makes a marker, then reads the stream up to it: the events sent before it, in order.
async fn events_until_marker(app: &TestApp, stream: &mut SseReader) -> Vec<FeedEvent> {
    let marker = marker(app).await;
    let mut before = Vec::new();
    loop {
        let event = from_sse(&stream.next_event(BACKLOG).await);
        if event.id == marker {
            return before;
        }
        before.push(event);
    }
}

fn sid_of(pair: &Value) -> String {
    claims(pair["access_token"].as_str().unwrap())["sid"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn access(pair: &Value) -> &str {
    pair["access_token"].as_str().unwrap()
}

/// The sids of `events` (all of kind `sid`), as a set.
fn sids(events: &[FeedEvent]) -> BTreeSet<String> {
    for event in events {
        assert_eq!(event.kind, "sid", "{events:?}");
    }
    events.iter().map(|e| e.id.clone()).collect()
}

/// Every entry of the revocation list (one page).
async fn listed(app: &TestApp) -> Vec<Value> {
    let body: Value = app
        .list_revocations("?limit=1000")
        .await
        .json()
        .await
        .unwrap();
    body["revocations"].as_array().unwrap().clone()
}

fn listed_expiry(entries: &[Value], kind: &str, id: &str) -> String {
    let entry = entries
        .iter()
        .find(|e| e["kind"] == kind && e["id"] == id)
        .unwrap_or_else(|| panic!("{kind} {id} in {entries:?}"));
    string_field(entry, "expires_at")
}

// ----- without a cursor, then live -----

#[tokio::test]
async fn without_a_cursor_the_stream_sends_every_entry_in_force_oldest_first_then_each_new_one_within_a_second()
 {
    let app = feed_app(&[]).await;
    app.add_user("alice", &[]).await;
    let alice = [app.login("alice").await, app.login("alice").await];
    let alice_sids: BTreeSet<String> = alice.iter().map(sid_of).collect();
    revoke_ok(&app, json!({"jti": "jti-before"})).await;
    revoke_ok(&app, json!({"sid": "sid-before"})).await;
    revoke_ok(&app, json!({"username": "alice"})).await;
    revoke_ok(&app, json!({"jti": "jti-last"})).await;
    let entries = listed(&app).await;

    let mut stream = open_stream(&app, "", None).await;
    let backlog = next_events(&mut stream, 5).await;

    let shape = summary(&backlog);
    assert_eq!(shape[0], pair("jti", "jti-before"), "{backlog:?}");
    assert_eq!(shape[1], pair("sid", "sid-before"), "{backlog:?}");
    assert_eq!(
        sids(&backlog[2..4]),
        alice_sids,
        "the user entry as its sessions"
    );
    assert_eq!(shape[4], pair("jti", "jti-last"), "{backlog:?}");
    for (event, kind) in [
        (&backlog[0], "jti"),
        (&backlog[1], "sid"),
        (&backlog[4], "jti"),
    ] {
        assert_eq!(
            event.expires_at,
            listed_expiry(&entries, kind, &event.id),
            "the entry's expires_at"
        );
    }

    let answered = revoke_ok(&app, json!({"jti": "jti-live"})).await;
    let live = match stream.next_by(answered + LIVE).await {
        SseRead::Item(SseItem::Event(event)) => from_sse(&event),
        other => panic!("no event within {LIVE:?} of the revocation's 200: {other:?}"),
    };
    assert_eq!(summary(&[live]), [pair("jti", "jti-live")]);
}

#[tokio::test]
async fn a_long_poll_without_after_answers_at_once_with_every_entry_in_force() {
    let app = feed_app(&[]).await;
    app.add_user("alice", &[]).await;
    let session = app.login("alice").await;
    revoke_ok(&app, json!({"jti": "jti-1"})).await;
    revoke_ok(&app, json!({"username": "alice"})).await;
    revoke_ok(&app, json!({"sid": "sid-1"})).await;

    let started = Instant::now();
    let (events, next) = poll(&app, "").await;

    assert!(
        started.elapsed() < Duration::from_secs(2),
        "at once, not after wait: {:?}",
        started.elapsed()
    );
    assert_eq!(
        summary(&events),
        [
            pair("jti", "jti-1"),
            pair("sid", &sid_of(&session)),
            pair("sid", "sid-1")
        ]
    );
    assert_eq!(next, events[2].cursor);
}

// ----- resuming -----

#[tokio::test]
async fn resuming_with_last_event_id_or_after_sends_only_what_follows_that_cursor_and_the_header_wins()
 {
    let app = feed_app(&[]).await;
    for i in 1..=4 {
        revoke_ok(&app, json!({"jti": format!("e{i}")})).await;
    }
    let all = next_events(&mut open_stream(&app, "", None).await, 4).await;
    let cursor = |i: usize| all[i].cursor.as_str();
    let after = |i: usize| format!("?after={}", percent_encode(cursor(i)));

    let mut by_header = open_stream(&app, "", Some(cursor(1))).await;
    let mut by_query = open_stream(&app, &after(1), None).await;
    let mut both = open_stream(&app, &after(0), Some(cursor(2))).await;

    assert_eq!(next_events(&mut by_header, 2).await, all[2..4]);
    assert_eq!(next_events(&mut by_query, 2).await, all[2..4]);
    assert_eq!(
        next_events(&mut both, 1).await,
        all[3..4],
        "the header wins"
    );
    // Then live, and nothing before: the next event of each is a new revocation.
    let live = marker(&app).await;
    for stream in [&mut by_header, &mut by_query, &mut both] {
        let next = from_sse(&stream.next_event(BACKLOG).await);
        assert_eq!(next.id, live);
    }
}

#[tokio::test]
async fn a_long_poll_after_a_cursor_answers_at_once_with_what_follows_and_next_the_last_cursor() {
    let app = feed_app(&[]).await;
    for i in 1..=3 {
        revoke_ok(&app, json!({"jti": format!("e{i}")})).await;
    }
    let (all, _) = poll(&app, "").await;
    assert_eq!(all.len(), 3, "{all:?}");

    let started = Instant::now();
    let (events, next) = poll(
        &app,
        &format!("?after={}&wait=30s", percent_encode(&all[0].cursor)),
    )
    .await;

    assert!(
        started.elapsed() < Duration::from_secs(2),
        "at once, not after wait: {:?}",
        started.elapsed()
    );
    assert_eq!(events, all[1..]);
    assert_eq!(next, all[2].cursor);
}

// ----- cursors -----

#[tokio::test]
async fn cursors_increase_one_per_event_and_stay_valid_across_a_restart() {
    let app = feed_app(&[]).await;
    app.add_user("bob", &[]).await;
    app.login("bob").await;
    app.login("bob").await;
    revoke_ok(&app, json!({"jti": "a"})).await;
    revoke_ok(&app, json!({"sid": "b"})).await;
    revoke_ok(&app, json!({"username": "bob"})).await;
    revoke_ok(&app, json!({"jti": "c"})).await;
    let streamed = next_events(&mut open_stream(&app, "", None).await, 5).await;
    let (polled, _) = poll(&app, "").await;

    assert_eq!(
        polled, streamed,
        "one cursor per event, the same in both forms"
    );
    let parts: Vec<(String, u64, u64)> = streamed.iter().map(|e| cursor_parts(&e.cursor)).collect();
    for window in parts.windows(2) {
        assert_eq!(window[0].0, window[1].0, "one epoch: {streamed:?}");
        assert!(
            (window[0].1, window[0].2) < (window[1].1, window[1].2),
            "increasing in commit order: {streamed:?}"
        );
    }

    let app = app.restart().await;

    let (resumed, next) = poll(
        &app,
        &format!("?after={}&wait=0s", percent_encode(&streamed[1].cursor)),
    )
    .await;
    assert_eq!(
        resumed,
        streamed[2..],
        "the same events under the same cursors"
    );
    assert_eq!(next, streamed[4].cursor);
    let mut stream = open_stream(&app, "", Some(&streamed[1].cursor)).await;
    assert_eq!(next_events(&mut stream, 3).await, streamed[2..]);
    revoke_ok(&app, json!({"jti": "after-restart"})).await;
    let new = from_sse(&stream.next_event(BACKLOG).await);
    assert_eq!(new.id, "after-restart");
    let (epoch, seq, index) = cursor_parts(&new.cursor);
    assert_eq!(epoch, parts[4].0, "the store's epoch survives a restart");
    assert!(
        (seq, index) > (parts[4].1, parts[4].2),
        "{new:?} after {streamed:?}"
    );
}

/// `cursor` sent every way the feed takes one: `Last-Event-ID` and `?after` on the stream,
/// and `?after` on the long-poll; each answer with the form's name.
async fn with_cursor_in_every_form(
    app: &FeedApp,
    cursor: &str,
) -> [(&'static str, reqwest::Response); 3] {
    let query = format!("?after={}", percent_encode(cursor));
    let by_header = app
        .feed(Some(&app.token), "")
        .header("last-event-id", cursor)
        .send()
        .await
        .unwrap();
    let by_query = app.feed(Some(&app.token), &query).send().await.unwrap();
    let long_poll = app.feed_poll(&app.token, &format!("{query}&wait=0s")).await;
    [
        ("Last-Event-ID", by_header),
        ("?after", by_query),
        ("long-poll", long_poll),
    ]
}

#[tokio::test]
async fn a_cursor_of_another_epoch_is_410_cursor_expired_on_the_stream_and_the_long_poll() {
    let app = feed_app(&[]).await;
    let other = feed_app(&[]).await;
    revoke_ok(&app, json!({"jti": "here"})).await;
    revoke_ok(&other, json!({"jti": "elsewhere"})).await;
    let (mine, _) = poll(&app, "").await;
    let (theirs, _) = poll(&other, "").await;
    let own = mine[0].cursor.clone();
    // Sanity: the daemon's own cursor is taken.
    let (after_own, _) = poll(&app, &format!("?after={}&wait=0s", percent_encode(&own))).await;
    assert!(after_own.is_empty(), "{after_own:?}");

    for cursor in [with_other_epoch(&own), theirs[0].cursor.clone()] {
        for (form, response) in with_cursor_in_every_form(&app, &cursor).await {
            assert_eq!(response.status(), StatusCode::GONE, "{form} {cursor}");
            assert_error(response, StatusCode::GONE, "cursor_expired").await;
        }
    }
}

#[tokio::test]
async fn a_cursor_authd_did_not_make_is_400_invalid_request_on_the_stream_and_the_long_poll() {
    let app = feed_app(&[]).await;
    revoke_ok(&app, json!({"jti": "here"})).await;
    let (events, _) = poll(&app, "").await;
    let (epoch, _, _) = cursor_parts(&events[0].cursor);

    for cursor in [
        "garbage".to_owned(),
        format!("{epoch}.not-hex.0"),
        format!("{epoch}.1"),
    ] {
        for (form, response) in with_cursor_in_every_form(&app, &cursor).await {
            assert_eq!(
                response.status(),
                StatusCode::BAD_REQUEST,
                "{form} {cursor}"
            );
            assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        }
    }
}

// ----- revoke-alls and session ends -----

#[tokio::test]
async fn revoking_a_user_sends_one_sid_event_per_session_it_ended_and_never_a_user_event() {
    let app = feed_app(&[]).await;
    app.add_user("carol", &[]).await;
    app.add_user("dave", &[]).await;
    let mut first_sids = BTreeSet::new();
    for _ in 0..3 {
        first_sids.insert(sid_of(&app.login("carol").await));
    }
    app.login("dave").await;
    let start = marker(&app).await;
    let mut stream = open_stream(&app, "", None).await;
    let before = from_sse(&stream.next_event(BACKLOG).await);
    assert_eq!(before.id, start);

    revoke_ok(&app, json!({"username": "carol"})).await;
    let first = events_until_marker(&app, &mut stream).await;
    assert_eq!(first.len(), 3, "exactly one event per session: {first:?}");
    assert_eq!(sids(&first), first_sids);

    let new_sid = sid_of(&app.login("carol").await);
    revoke_ok(&app, json!({"username": "carol"})).await;
    let second = events_until_marker(&app, &mut stream).await;
    assert_eq!(
        summary(&second),
        [pair("sid", &new_sid)],
        "only the session begun since"
    );

    // The earlier events stay: a resume from before both sends both.
    let (resumed, _) = poll(
        &app,
        &format!("?after={}&wait=0s", percent_encode(&before.cursor)),
    )
    .await;
    assert_eq!(resumed.len(), 6, "{resumed:?}");
    assert_eq!(sids(&resumed[..3]), first_sids);
    assert_eq!(resumed[4], second[0]);
    let mut again = open_stream(&app, "", Some(&before.cursor)).await;
    assert_eq!(next_events(&mut again, 6).await, resumed);
}

#[tokio::test]
async fn logout_all_disable_delete_and_an_admin_password_change_send_a_sid_event_per_live_session()
{
    let app = feed_app(&[]).await;
    let mut sessions = Vec::new();
    for user in ["u-logout", "u-disable", "u-delete", "u-password"] {
        app.add_user(user, &[]).await;
        sessions.push([
            app.login(user).await,
            app.login(user).await,
            app.login(user).await,
        ]);
    }
    // One session of each already ended: it is not sent again.
    for pairs in &sessions {
        let logout = app.logout(access(&pairs[2]), None).await;
        assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    }
    let live = |i: usize| -> BTreeSet<String> { sessions[i][..2].iter().map(sid_of).collect() };
    let mut stream = open_stream(&app, "", None).await;
    let backlog = next_events(&mut stream, 4).await;
    assert_eq!(sids(&backlog).len(), 4, "the four logouts: {backlog:?}");

    let logout_all = app
        .logout(access(&sessions[0][0]), Some(json!({"all": true})))
        .await;
    assert_eq!(logout_all.status(), StatusCode::NO_CONTENT);
    let events = events_until_marker(&app, &mut stream).await;
    assert_eq!(events.len(), 2, "logout all: {events:?}");
    assert_eq!(sids(&events), live(0), "logout all");

    let disabled = app
        .update_user("u-disable", json!({"disabled": true}))
        .await;
    assert_eq!(disabled.status(), StatusCode::OK);
    let events = events_until_marker(&app, &mut stream).await;
    assert_eq!(events.len(), 2, "disable: {events:?}");
    assert_eq!(sids(&events), live(1), "disable");

    let deleted = app.delete_user("u-delete").await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let events = events_until_marker(&app, &mut stream).await;
    assert_eq!(events.len(), 2, "delete: {events:?}");
    assert_eq!(sids(&events), live(2), "delete");

    let changed = app
        .update_user("u-password", json!({"password": format!("{PASSWORD}!")}))
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let events = events_until_marker(&app, &mut stream).await;
    assert_eq!(events.len(), 2, "admin password change: {events:?}");
    assert_eq!(sids(&events), live(3), "admin password change");
}

#[tokio::test]
async fn logout_ending_a_session_refresh_reuse_and_a_password_change_send_sid_events() {
    let app = feed_app(&[]).await;
    app.add_user("erin", &[]).await;
    let mut pairs = Vec::new();
    for _ in 0..5 {
        pairs.push(app.login("erin").await);
    }
    let sid = |i: usize| sid_of(&pairs[i]);
    let mut stream = open_stream(&app, "", None).await;

    let logout = app.logout(access(&pairs[0]), None).await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let events = events_until_marker(&app, &mut stream).await;
    assert_eq!(summary(&events), [pair("sid", &sid(0))], "logout");

    let ended = app.end_session(access(&pairs[2]), &sid(1)).await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    let events = events_until_marker(&app, &mut stream).await;
    assert_eq!(
        summary(&events),
        [pair("sid", &sid(1))],
        "DELETE /v1/sessions"
    );

    let refresh = pairs[3]["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(app.refresh(&refresh).await.status(), StatusCode::OK);
    let reuse = app.refresh(&refresh).await;
    assert_error(reuse, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let events = events_until_marker(&app, &mut stream).await;
    assert_eq!(summary(&events), [pair("sid", &sid(3))], "refresh reuse");

    let changed = app
        .change_password(access(&pairs[2]), PASSWORD, &format!("{PASSWORD}!"))
        .await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    let events = events_until_marker(&app, &mut stream).await;
    assert_eq!(
        summary(&events),
        [pair("sid", &sid(4))],
        "POST /v1/password: the other live session"
    );
}

#[tokio::test]
async fn a_session_ended_by_the_session_cap_is_a_sid_event() {
    let app = feed_app(&[("AUTHD__LOGIN__MAX_SESSIONS_PER_USER", "2")]).await;
    app.add_user("fay", &[]).await;
    let oldest = app.login("fay").await;
    app.login("fay").await;
    let mut stream = open_stream(&app, "", None).await;

    app.login("fay").await;

    let events = events_until_marker(&app, &mut stream).await;
    assert_eq!(summary(&events), [pair("sid", &sid_of(&oldest))]);
}

#[tokio::test]
async fn revoking_a_jti_or_sid_again_sends_nothing() {
    let app = feed_app(&[]).await;
    let mut stream = open_stream(&app, "", None).await;
    revoke_ok(&app, json!({"jti": "once-jti"})).await;
    revoke_ok(&app, json!({"sid": "once-sid"})).await;
    let first = events_until_marker(&app, &mut stream).await;
    assert_eq!(
        summary(&first),
        [pair("jti", "once-jti"), pair("sid", "once-sid")]
    );

    revoke_ok(&app, json!({"jti": "once-jti", "reason": "again"})).await;
    revoke_ok(&app, json!({"sid": "once-sid", "reason": "again"})).await;

    let again = events_until_marker(&app, &mut stream).await;
    assert_eq!(again, [], "a second revocation of the same jti or sid");
    let (all, _) = poll(&app, "").await;
    let ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids.iter().filter(|id| **id == "once-jti").count(),
        1,
        "{ids:?}"
    );
    assert_eq!(
        ids.iter().filter(|id| **id == "once-sid").count(),
        1,
        "{ids:?}"
    );
}

// ----- who may read it -----

/// Asserts a 401 `invalid_token` with the bearer challenge; `presented` when a token was sent.
async fn assert_refused(response: reqwest::Response, presented: bool, case: &str) {
    let challenge = header_str(&response, "www-authenticate")
        .unwrap_or_else(|| panic!("{case}: no WWW-Authenticate"));
    assert!(
        challenge.starts_with("Bearer realm=\"authd\""),
        "{case}: {challenge}"
    );
    if presented {
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{case}: {challenge}"
        );
    }
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn anything_but_the_feed_token_is_401_invalid_token_with_a_challenge() {
    let app = feed_app(&[]).await;
    let access_token = app.user_token("gus", &["admin"]).await;
    revoke_ok(&app, json!({"jti": "something"})).await;
    let almost = format!("{}x", app.token);
    let cases: [(&str, Option<&str>); 5] = [
        ("no token", None),
        (
            "another token",
            Some("not-the-feed-token-but-long-enough-0123456789"),
        ),
        ("the feed token with a byte more", Some(&almost)),
        ("an access token", Some(&access_token)),
        ("the admin API token", Some(&app.admin_token)),
    ];

    for (case, token) in cases {
        let stream = app.feed(token, "").send().await.unwrap();
        assert_refused(stream, token.is_some(), case).await;
        let long_poll = app
            .feed(token, "?wait=0s")
            .header(ACCEPT, "application/json")
            .send()
            .await
            .unwrap();
        assert_refused(long_poll, token.is_some(), case).await;
    }
    // The feed token itself is taken by both forms.
    assert_eq!(
        app.feed(Some(&app.token), "")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let (events, _) = poll(&app, "?wait=0s").await;
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn a_disabled_feed_is_404_not_found() {
    let app = feed_app(&[("AUTHD__FEED__ENABLED", "false")]).await;
    let token = "a-token-that-would-be-long-enough-0123456789";

    for presented in [None, Some(token)] {
        let stream = app.feed(presented, "").send().await.unwrap();
        assert_error(stream, StatusCode::NOT_FOUND, "not_found").await;
        let long_poll = app
            .feed(presented, "?wait=0s")
            .header(ACCEPT, "application/json")
            .send()
            .await
            .unwrap();
        assert_error(long_poll, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_feed_token_file_is_made_at_first_start_private_and_kept_across_restarts() {
    use std::os::unix::fs::PermissionsExt as _;

    let app = feed_app(&[]).await;
    let file = app.dir.path().join("feed.token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    let first = app.token.clone();

    let app = app.restart().await;

    assert_eq!(mode, 0o600, "mode of {}", file.display());
    assert!(first.len() >= 32, "at least 32 bytes: {} here", first.len());
    assert_eq!(app.token, first, "never overwritten");
    assert_eq!(
        app.feed(Some(&first), "").send().await.unwrap().status(),
        StatusCode::OK
    );
}

// ----- the long-poll -----

#[tokio::test]
async fn a_waiting_long_poll_answers_within_a_second_of_the_next_revocation() {
    // One client at most: once a probe is refused (503), the waiting poll holds the slot, so
    // it was waiting when the revocation came.
    let app = feed_app(&[("AUTHD__FEED__MAX_CLIENTS", "1")]).await;
    revoke_ok(&app, json!({"jti": "first"})).await;
    let (events, _) = poll(&app, "").await;
    let after = format!("?after={}", percent_encode(&events[0].cursor));
    let start_waiting = || {
        tokio::spawn(
            app.feed(Some(&app.token), &format!("{after}&wait=30s"))
                .header(ACCEPT, "application/json")
                .send(),
        )
    };
    let mut waiting = start_waiting();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let probe = app.feed_poll(&app.token, &format!("{after}&wait=0s")).await;
        if waiting.is_finished() {
            // It came while a probe held the slot: refused, it is sent again.
            let early = waiting.await.unwrap().unwrap();
            assert_eq!(
                early.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "the long-poll answered before any new event"
            );
            waiting = start_waiting();
        } else if probe.status() == StatusCode::SERVICE_UNAVAILABLE {
            break;
        } else {
            assert_eq!(probe.status(), StatusCode::OK);
        }
        assert!(
            Instant::now() < deadline,
            "the waiting long-poll never took the one client slot"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let answered = revoke_ok(&app, json!({"jti": "second"})).await;

    let response = tokio::time::timeout_at(answered + LIVE, waiting)
        .await
        .unwrap_or_else(|_| panic!("no answer within {LIVE:?} of the revocation's 200"))
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let events: Vec<FeedEvent> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(from_poll)
        .collect();
    assert_eq!(summary(&events), [pair("jti", "second")], "{body}");
    assert_eq!(body["next"], json!(events[0].cursor));
}

#[tokio::test]
async fn a_long_poll_with_nothing_new_answers_after_wait_with_no_events_and_next_its_cursor() {
    let app = feed_app(&[]).await;
    revoke_ok(&app, json!({"jti": "only"})).await;
    let (events, _) = poll(&app, "").await;
    let cursor = events[0].cursor.clone();
    let after = format!("?after={}", percent_encode(&cursor));

    let started = Instant::now();
    let (waited, next) = poll(&app, &format!("{after}&wait=1s")).await;
    let took = started.elapsed();

    assert!(waited.is_empty(), "{waited:?}");
    assert_eq!(next, cursor);
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(4),
        "wait=1s took {took:?}"
    );
    let started = Instant::now();
    let (none, next) = poll(&app, &format!("{after}&wait=0s")).await;
    assert!(none.is_empty() && next == cursor, "{none:?} {next}");
    assert!(started.elapsed() < Duration::from_secs(2), "wait=0s");
}

#[tokio::test]
async fn a_long_poll_wait_over_60s_or_not_a_duration_is_400_invalid_request() {
    let app = feed_app(&[]).await;
    revoke_ok(&app, json!({"jti": "only"})).await;

    for wait in ["61s", "2m", "soon"] {
        let response = app.feed_poll(&app.token, &format!("?wait={wait}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "wait={wait}");
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    // 60s itself is allowed (and answers at once, entries being in force).
    let (events, _) = poll(&app, "?wait=60s").await;
    assert_eq!(events.len(), 1);
}

// ----- the stream itself -----

#[tokio::test]
async fn the_stream_is_an_unbuffered_uncached_event_stream_of_id_event_data_blocks() {
    let app = feed_app(&[]).await;
    revoke_ok(&app, json!({"jti": "shaped"})).await;

    let mut stream = open_stream(&app, "", None).await;
    let html = app
        .feed(Some(&app.token), "")
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();

    let response = stream.response();
    let content_type = header_str(response, "content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    assert_eq!(
        header_str(response, "x-accel-buffering").as_deref(),
        Some("no")
    );
    let cache = header_str(response, "cache-control").unwrap_or_default();
    assert!(cache.contains("no-store"), "Cache-Control {cache:?}");
    let event = stream.next_event(BACKLOG).await;
    let parsed = from_sse(&event);
    assert_eq!(
        event.raw,
        format!(
            "id: {}\nevent: revoked\ndata: {}\n\n",
            parsed.cursor, event.data
        ),
        "one event block"
    );
    assert_eq!(summary(&[parsed]), [pair("jti", "shaped")]);
    // Any Accept but JSON asks for the stream.
    assert_eq!(html.status(), StatusCode::OK);
    let html_type = header_str(&html, "content-type").unwrap_or_default();
    assert!(html_type.starts_with("text/event-stream"), "{html_type}");
}

#[tokio::test]
async fn with_nothing_to_send_a_keep_alive_comment_arrives_within_16_seconds() {
    let app = feed_app(&[]).await;
    let mut stream = open_stream(&app, "", None).await;
    let deadline = Instant::now() + Duration::from_secs(16);

    match stream.next_by(deadline).await {
        SseRead::Item(SseItem::Comment(comment)) => assert_eq!(comment.trim(), "keep-alive"),
        other => panic!("no keep-alive comment within 16 s: {other:?}"),
    }
    // The stream still works after it.
    let answered = revoke_ok(&app, json!({"jti": "after-the-silence"})).await;
    match stream.next_by(answered + LIVE).await {
        SseRead::Item(SseItem::Event(event)) => {
            assert_eq!(from_sse(&event).id, "after-the-silence")
        }
        other => panic!("no event after the keep-alive: {other:?}"),
    }
}

// ----- the cap, metrics, the drain -----

#[tokio::test]
async fn past_max_clients_a_feed_request_is_503_with_retry_after_until_a_stream_closes() {
    let app = feed_app(&[("AUTHD__FEED__MAX_CLIENTS", "2")]).await;
    revoke_ok(&app, json!({"jti": "in-force"})).await;
    let mut first = open_stream(&app, "", None).await;
    let mut second = open_stream(&app, "", None).await;
    next_events(&mut first, 1).await;
    next_events(&mut second, 1).await;

    let third = app.feed(Some(&app.token), "").send().await.unwrap();
    let third_poll = app.feed_poll(&app.token, "?wait=0s").await;

    for (form, response) in [("stream", third), ("long-poll", third_poll)] {
        let retry_after = header_str(&response, "retry-after")
            .unwrap_or_else(|| panic!("{form}: 503 without Retry-After"));
        assert!(
            retry_after.parse::<u64>().is_ok_and(|s| s >= 1),
            "{form}: Retry-After {retry_after:?}"
        );
        assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    }

    drop(first);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let probe = app.feed_poll(&app.token, "?wait=0s").await;
        if probe.status() == StatusCode::OK {
            break;
        }
        assert_eq!(probe.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            Instant::now() < deadline,
            "a closed stream's slot was not freed within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(second);
}

/// The value of the unlabelled sample `name` in a Prometheus text (absent: `None`).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.split([' ', '{']).next() == Some(name))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn authd_feed_clients_counts_the_open_streams() {
    // A process of its own: the metrics recorder is process-wide, and the other tests of
    // this binary open feeds in parallel.
    within_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_with(&[]));
        let daemon = Daemon::start(dir.path()).await;
        let token = feed_token(&dir.path().join("data/feed.token"));
        let scrape = || async {
            let response = daemon
                .client
                .get(format!("{}/metrics", daemon.admin))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.text().await.unwrap()
        };
        let gauge_reaches = |value: f64| {
            let scrape = &scrape;
            async move {
                let deadline = Instant::now() + DEADLINE;
                loop {
                    let text = scrape().await;
                    let now = sample(&text, "authd_feed_clients");
                    if now == Some(value) {
                        return text;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "authd_feed_clients stayed {now:?}, expected {value}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let before = scrape().await;
        assert!(
            matches!(sample(&before, "authd_feed_clients"), None | Some(0.0)),
            "{before}"
        );
        let sent_before = sample(&before, "authd_feed_events_sent_total").unwrap_or(0.0);

        let response = daemon.feed(Some(&token), "").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut stream = SseReader::new(response);
        gauge_reaches(1.0).await;
        let revoked = daemon.revoke(json!({"jti": "counted"})).await;
        assert_eq!(revoked.status(), StatusCode::OK);
        assert_eq!(from_sse(&stream.next_event(BACKLOG).await).id, "counted");
        let during = gauge_reaches(1.0).await;
        let sent = sample(&during, "authd_feed_events_sent_total").unwrap_or(0.0);
        assert!(
            sent >= sent_before + 1.0,
            "authd_feed_events_sent_total {sent}"
        );

        drop(stream);
        gauge_reaches(0.0).await;
    })
    .await;
}

#[tokio::test]
async fn a_stream_ends_when_the_daemon_shuts_down() {
    let mut app = feed_app(&[]).await;
    let mut stream = open_stream(&app, "", None).await;
    revoke_ok(&app, json!({"jti": "before-the-drain"})).await;
    assert_eq!(
        from_sse(&stream.next_event(BACKLOG).await).id,
        "before-the-drain"
    );
    // Well within the drain's grace (server.shutdown_grace, 10 s): the stream ends itself
    // rather than being cut when the grace runs out.
    let deadline = Instant::now() + Duration::from_secs(5);

    let (_, end) = tokio::join!(app.app.shut_down(), async {
        loop {
            match stream.next_by(deadline).await {
                SseRead::Item(SseItem::Comment(_)) => {}
                other => return other,
            }
        }
    });

    assert!(
        matches!(end, SseRead::Ended),
        "the body did not finish cleanly on shutdown: {end:?}"
    );
}

// ----- expiry -----

#[tokio::test]
async fn a_resume_skips_the_events_that_expired_since() {
    let clock = authd::clock::Clock::manual(1_800_000_000);
    let app = feed_app_on_clock(
        &[
            ("AUTHD__JWT__ACCESS_TTL", "1m"),
            ("AUTHD__JWT__REFRESH_TTL", "2m"),
            ("AUTHD__JWT__LEEWAY", "0s"),
        ],
        clock.clone(),
    )
    .await;
    app.add_user("hal", &[]).await;
    let token = app.access_token("hal", PASSWORD).await;
    revoke_ok(&app, json!({"jti": "long-before"})).await;
    revoke_ok(&app, json!({"token": token})).await;
    revoke_ok(&app, json!({"jti": "long-after"})).await;
    let (all, _) = poll(&app, "").await;
    assert_eq!(all.len(), 3, "{all:?}");
    let short = &all[1];
    assert!(short.expires_at < all[0].expires_at, "{all:?}");
    let expiry = humantime::parse_rfc3339(&short.expires_at)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    clock.set(i64::try_from(expiry).unwrap() + 1);

    let after = format!("?after={}&wait=0s", percent_encode(&all[0].cursor));
    let (resumed, _) = poll(&app, &after).await;
    assert_eq!(resumed, all[2..], "the expired event is skipped");
    let mut stream = open_stream(&app, "", Some(&all[0].cursor)).await;
    assert_eq!(next_events(&mut stream, 1).await, all[2..]);
    let (fresh, _) = poll(&app, "").await;
    assert_eq!(
        fresh,
        [all[0].clone(), all[2].clone()],
        "no longer in force"
    );
}

#[tokio::test]
async fn a_long_poll_answers_at_most_1000_events_and_next_resumes_after_them() {
    let app = feed_app(&[]).await;
    let mut revocations = tokio::task::JoinSet::new();
    for batch in 0..8 {
        let (admin, token) = (app.admin.clone(), app.admin_token.clone());
        revocations.spawn(async move {
            let client = reqwest::Client::new();
            for i in (batch..1001).step_by(8) {
                let response = client
                    .post(format!("{admin}/admin/v1/revocations"))
                    .bearer_auth(&token)
                    .json(&json!({"jti": format!("bulk-{i:04}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            }
        });
    }
    while let Some(done) = revocations.join_next().await {
        done.unwrap();
    }

    let (first, next) = poll(&app, "").await;
    let (rest, last) = poll(&app, &format!("?after={}&wait=0s", percent_encode(&next))).await;

    assert_eq!(first.len(), 1000, "at most 1000 events per answer");
    assert_eq!(next, first[999].cursor);
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(last, rest[0].cursor);
    let ids: BTreeSet<&str> = first.iter().chain(&rest).map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 1001, "each revocation once");
}

#[cfg(unix)]
#[tokio::test]
async fn a_reload_takes_a_new_feed_token_and_refuses_the_old_one() {
    use std::os::unix::fs::PermissionsExt as _;

    // Configured by a file alone, so that the reload reads the same configuration.
    let dir = tempfile::tempdir().unwrap();
    let text = set_in_section(&config_with(&[]), "feed", "token_file", "\"feed.token\"");
    let config = write_config(dir.path(), &text);
    let app = TestApp::start_with_config_file(dir.path(), &config).await;
    let file = dir.path().join("feed.token");
    let old = feed_token(&file);
    assert_eq!(
        app.feed(Some(&old), "").send().await.unwrap().status(),
        StatusCode::OK
    );
    let new = format!("new-feed-token-{}{}", random_suffix(), random_suffix());
    let staging = dir.path().join("feed.token.new");
    std::fs::write(&staging, format!("  {new}\n")).unwrap();
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&staging, &file).unwrap();

    app.reload_settled().await;

    let with_new = app.feed(Some(&new), "").send().await.unwrap();
    assert_eq!(with_new.status(), StatusCode::OK, "the new token, trimmed");
    let with_old = app.feed(Some(&old), "").send().await.unwrap();
    assert_refused(with_old, true, "the old token after the reload").await;
}

// ----- bounded resources -----

/// API.md "Revocation feed" and the issue: slow readers are dropped rather than buffered
/// without bound. A client that asks for a backlog far larger than the queue and the
/// sockets between can hold, then never reads, loses its stream (and its place under
/// `feed.max_clients`) once it has stalled 10 s.
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_its_place_freed() {
    within_timeout(async {
        let app = feed_app(&[("AUTHD__FEED__MAX_CLIENTS", "1")]).await;
        // 20,000 events of ~340 bytes (jtis of 256 characters, the longest taken): about
        // 6.8 MB, past the 16 chunks of 64 events the server queues plus the most a socket
        // can buffer here (net.ipv4.tcp_wmem's 4 MB; the client's receive buffer is 4 KB).
        let jtis: Vec<String> = (0..20_000).map(|i| format!("{i:0>256}")).collect();
        for batch in jtis.chunks(100) {
            let revoked = futures_util::future::join_all(
                batch.iter().map(|jti| app.revoke(json!({ "jti": jti }))),
            )
            .await;
            assert!(revoked.iter().all(|r| r.status() == StatusCode::OK));
        }
        let address = app.public.trim_start_matches("http://").to_owned();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stalled = socket.connect(address.parse().unwrap()).await.unwrap();
        let request = format!(
            "GET /v1/revocations/feed HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\r\n",
            app.token
        );
        tokio::io::AsyncWriteExt::write_all(&mut stalled, request.as_bytes())
            .await
            .unwrap();

        // Its place is taken (the only one)...
        let start = Instant::now();
        loop {
            let status = app.feed_poll(&app.token, "?wait=0s").await.status();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                break;
            }
            assert!(start.elapsed() < DEADLINE, "the stalled stream never took its place");
            tokio::time::sleep(crate::common::POLL).await;
        }
        // ...until it has not read for 10 s: then the place is free again.
        let stalled_at = Instant::now();
        loop {
            let status = app.feed_poll(&app.token, "?wait=0s").await.status();
            if status == StatusCode::OK {
                break;
            }
            assert!(
                stalled_at.elapsed() < DEADLINE,
                "a client that reads nothing still holds its place after {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(stalled);
    })
    .await;
}

//! A complete client of authd's revocation feed, to copy into an application that verifies
//! access tokens itself (README "Verifying tokens in your own application", API.md
//! "Revocation feed").
//!
//! It does the two things such an application needs:
//!
//! 1. **Verifies access tokens locally** with the public keys of
//!    `GET /.well-known/jwks.json`: the key named by `kid`, `alg` equal to that key's own,
//!    `typ`, `iss`, `aud`, `exp` and `nbf`.
//! 2. **Refuses what authd has revoked** by following `GET /v1/revocations/feed`: it keeps a
//!    set of revoked `jti`s and `sid`s (each until its `expires_at`, after which it blocks
//!    nothing), resumes after a dropped connection or an authd restart with its last
//!    cursor (`Last-Event-ID`), and starts over on `410 cursor_expired`.
//!
//! How the feed is followed: one long-poll (`Accept: application/json`, `wait=0s`) loads
//! everything in force and answers a cursor — so the client knows when it has caught up,
//! which a stream cannot tell — then the Server-Sent Events stream is opened after that
//! cursor and delivers each new revocation within a second.
//!
//! ```sh
//! cargo run --example feed_client -- --url http://127.0.0.1:8080 \
//!     --feed-token-file data/feed.token --issuer authd --audience authd
//! ```
//!
//! It reads access tokens on stdin, one per line, and prints one verdict per line on stdout:
//! `valid <sub>` or `refused <reason>` (`revoked`, `expired`, `unknown_kid`, …). The line
//! `recheck` verifies the previous token again. Lines are answered once the revocations in
//! force are loaded (`feed: caught up` on stderr). The feed's state goes to stderr:
//! `feed: connected` each time a stream opens, and why it reconnects.
//!
//! While it reconnects it keeps answering from the set it has (nothing is missed: the
//! cursor brings what was revoked meanwhile once it is back). An app that must not accept
//! a token while it may be behind could refuse after some time without a stream.
//!
//! Only authd's own dependencies are used (reqwest, jsonwebtoken, tokio, serde, humantime,
//! getrandom, clap, anyhow); the event stream is parsed by hand, it takes a few lines.

// An application reads the wall clock; authd's own code takes it as a parameter instead.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use clap::Parser;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CACHE_CONTROL, RETRY_AFTER};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

/// How long a JWKS is trusted before it is fetched again (authd serves it with
/// `Cache-Control: max-age=300`).
const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// A token with an unknown `kid` makes the client fetch the JWKS again (a new key may have
/// been published), but not more often than this: forged kids must not make it hammer authd.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
/// authd sends `: keep-alive` after 15 s of silence; three times that without a byte means
/// the connection is dead (a peer gone without closing it), so reconnect.
const STREAM_IDLE: Duration = Duration::from_secs(45);
/// Backoff between reconnects: doubles from the first to the last, with jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A long-poll answers at most this many events; fewer means the backlog is all loaded.
const LONG_POLL_PAGE: usize = 1000;
/// How often entries past their `expires_at` are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Bounds every request but the stream itself.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(
    about = "Verify authd access tokens locally and refuse revoked ones (the revocation feed)"
)]
struct Args {
    /// authd's public listener, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: String,
    /// File holding the feed token (authd's `feed.token_file`); re-read on every
    /// reconnect, so a rotated token is picked up.
    #[arg(long)]
    feed_token_file: PathBuf,
    /// The expected `iss` claim (authd's `jwt.issuer`).
    #[arg(long, default_value = "authd")]
    issuer: String,
    /// The expected `aud` claim (authd's `jwt.audience`).
    #[arg(long, default_value = "authd")]
    audience: String,
    /// Clock skew tolerated on `exp` and `nbf`; keep it at most authd's `jwt.leeway`, so
    /// that a revocation is never forgotten while its token still passes here.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    leeway: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = args.url.trim_end_matches('/').to_owned();
    // No overall timeout on the client: the stream is meant to stay open. Requests that
    // should end get their own (REQUEST_TIMEOUT); a silent stream is caught by STREAM_IDLE.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("building the HTTP client")?;

    let revoked = Arc::new(Mutex::new(Revoked::default()));
    let (caught_up_tx, mut caught_up) = watch::channel(false);
    let feed = Feed {
        http: http.clone(),
        url: format!("{base}/v1/revocations/feed"),
        token_file: args.feed_token_file.clone(),
        revoked: revoked.clone(),
        caught_up: caught_up_tx,
    };
    tokio::spawn(feed.follow());
    tokio::spawn(sweep(revoked.clone()));

    let mut verifier = Verifier {
        http,
        jwks_url: format!("{base}/.well-known/jwks.json"),
        issuer: args.issuer,
        audience: args.audience,
        leeway: args.leeway,
        keys: JwkSet { keys: Vec::new() },
        fetched_at: None,
        revoked,
    };
    verifier.refresh_keys().await;

    // Fail closed: answer nothing until the revocations in force are loaded, or a revoked
    // token would pass in the first moments after a start.
    if caught_up.wait_for(|done| *done).await.is_err() {
        bail!("the feed task ended");
    }

    // stdin is read on a thread of its own (blocking reads), one line at a time.
    let mut lines = stdin_lines();
    let mut previous: Option<String> = None;
    while let Some(line) = lines.recv().await {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line != "recheck" {
            previous = Some(line.to_owned());
        }
        let verdict = match &previous {
            Some(token) => verifier.verify(token).await,
            None => Verdict::Refused("no_token_yet".into()),
        };
        // stdout is line-buffered: each verdict leaves at its newline.
        match verdict {
            Verdict::Valid(sub) => println!("valid {sub}"),
            Verdict::Refused(reason) => println!("refused {reason}"),
        }
    }
    Ok(())
}

/// The lines of stdin, read by a thread (std's stdin blocks) until it closes.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

// ----- the revoked set -----

/// What the feed says is revoked: each `jti` and `sid` until its `expires_at`. After that
/// instant every token it could block has expired (authd's leeway included), so it is
/// forgotten and the set stays as small as authd's own list.
#[derive(Default)]
struct Revoked {
    jti: HashMap<String, SystemTime>,
    sid: HashMap<String, SystemTime>,
}

impl Revoked {
    fn apply(&mut self, event: &RevokedEvent) {
        let Ok(expires_at) = humantime::parse_rfc3339(&event.expires_at) else {
            eprintln!(
                "feed: ignored an event with a bad expires_at: {:?}",
                event.expires_at
            );
            return;
        };
        let set = match event.kind.as_str() {
            "jti" => &mut self.jti,
            "sid" => &mut self.sid,
            // API.md promises only these two; an unknown kind from a newer authd is skipped.
            _ => return,
        };
        // Keep the later instant should the same id come twice.
        let entry = set.entry(event.id.clone()).or_insert(expires_at);
        *entry = (*entry).max(expires_at);
    }

    fn forget_expired(&mut self, now: SystemTime) {
        self.jti.retain(|_, expires_at| *expires_at > now);
        self.sid.retain(|_, expires_at| *expires_at > now);
    }

    fn refuses(&self, jti: &str, sid: &str) -> bool {
        self.jti.contains_key(jti) || self.sid.contains_key(sid)
    }
}

/// Locks the set; a panic elsewhere while holding it leaves it usable (it is only maps).
fn lock(revoked: &Mutex<Revoked>) -> std::sync::MutexGuard<'_, Revoked> {
    revoked.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Forgets expired entries now and then.
async fn sweep(revoked: Arc<Mutex<Revoked>>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        every.tick().await;
        lock(&revoked).forget_expired(SystemTime::now());
    }
}

// ----- following the feed -----

/// One revocation, as the stream's `data:` carries it (`{"kind","id","expires_at"}`) and as
/// the long-poll lists it (with its `cursor` as well).
#[derive(Deserialize)]
struct RevokedEvent {
    kind: String,
    id: String,
    expires_at: String,
}

/// The long-poll answer: `{"events":[{"cursor","kind","id","expires_at"}],"next"}`.
#[derive(Deserialize)]
struct LongPollAnswer {
    events: Vec<LongPollEvent>,
    next: String,
}

#[derive(Deserialize)]
struct LongPollEvent {
    #[serde(flatten)]
    event: RevokedEvent,
}

/// Why a feed request did not give what was asked.
enum FeedError {
    /// `410 cursor_expired`: the store was restored or is another deployment's; load
    /// everything again without a cursor.
    CursorExpired,
    /// `400`: authd does not know the cursor at all; start over as well.
    BadCursor,
    /// Anything else (connection refused, 401, 503, a cut stream): try again after a
    /// pause; `retry_after` is authd's own hint (`503` + `Retry-After`).
    Retry {
        why: String,
        retry_after: Option<Duration>,
    },
}

impl From<reqwest::Error> for FeedError {
    fn from(err: reqwest::Error) -> FeedError {
        FeedError::Retry {
            why: error_chain(&err),
            retry_after: None,
        }
    }
}

struct Feed {
    http: reqwest::Client,
    /// `<url>/v1/revocations/feed`.
    url: String,
    token_file: PathBuf,
    revoked: Arc<Mutex<Revoked>>,
    /// Set once the revocations in force are loaded.
    caught_up: watch::Sender<bool>,
}

impl Feed {
    /// Follows the feed forever: load the backlog (long-poll), stream from its cursor,
    /// resume with the last cursor when the stream ends, start over when the cursor is
    /// refused.
    async fn follow(self) {
        // The cursor of the last event applied (or of the backlog's end): the point to
        // resume after. None: nothing loaded yet, or starting over.
        let mut cursor: Option<String> = None;
        let mut backoff = Backoff::new();
        loop {
            let error = if cursor.is_none() {
                match self.load_backlog().await {
                    Ok(next) => {
                        // The backlog is in: open the stream after it at once.
                        cursor = Some(next);
                        continue;
                    }
                    Err(err) => err,
                }
            } else {
                self.stream(&mut cursor, &mut backoff).await
            };
            let retry_after = match error {
                FeedError::CursorExpired => {
                    eprintln!("feed: cursor expired (410), starting over without a cursor");
                    cursor = None;
                    None
                }
                FeedError::BadCursor => {
                    eprintln!("feed: cursor refused (400), starting over without a cursor");
                    cursor = None;
                    None
                }
                FeedError::Retry { why, retry_after } => {
                    eprintln!("feed: {why}");
                    retry_after
                }
            };
            // Even a start-over pauses a little: an authd that answered the same error
            // again and again must not be hammered.
            let pause = backoff.next(retry_after);
            tokio::time::sleep(pause).await;
            if let Some(cursor) = &cursor {
                eprintln!(
                    "feed: resuming after {cursor} (waited {} ms)",
                    pause.as_millis()
                );
            }
        }
    }

    /// The feed token, re-read each time (authd re-reads its file on SIGHUP: a rotation
    /// only needs the new file here too).
    fn token(&self) -> Result<String, FeedError> {
        let token = std::fs::read_to_string(&self.token_file).map_err(|err| FeedError::Retry {
            why: format!("cannot read {}: {err}", self.token_file.display()),
            retry_after: None,
        })?;
        Ok(token.trim().to_owned())
    }

    /// Loads every revocation in force with long-polls that do not wait (`wait=0s`), a
    /// page of at most 1000 at a time, into a fresh set that then replaces the current one
    /// (after a `410` the old entries belong to another store). Answers the cursor to
    /// stream from.
    async fn load_backlog(&self) -> Result<String, FeedError> {
        let mut fresh = Revoked::default();
        let mut after: Option<String> = None;
        loop {
            let mut request = self
                .http
                .get(&self.url)
                .bearer_auth(self.token()?)
                .header(ACCEPT, "application/json")
                .timeout(REQUEST_TIMEOUT)
                .query(&[("wait", "0s")]);
            if let Some(after) = &after {
                request = request.query(&[("after", after)]);
            }
            let response = check(request.send().await?).await?;
            let page: LongPollAnswer = response.json().await?;
            for event in &page.events {
                fresh.apply(&event.event);
            }
            let full_page = page.events.len() >= LONG_POLL_PAGE;
            after = Some(page.next);
            if !full_page {
                break;
            }
        }
        *lock(&self.revoked) = fresh;
        eprintln!("feed: caught up");
        self.caught_up.send_replace(true);
        // `after` is always set here: the loop ran at least once.
        after.ok_or_else(|| FeedError::Retry {
            why: "the long-poll gave no cursor".into(),
            retry_after: None,
        })
    }

    /// Opens the stream after `cursor` and applies its events until it ends, moving
    /// `cursor` past each event applied. A stream never ends well: it answers why it ended,
    /// the reason to reconnect.
    async fn stream(&self, cursor: &mut Option<String>, backoff: &mut Backoff) -> FeedError {
        match self.try_stream(cursor, backoff).await {
            Ok(never) => match never {},
            Err(err) => err,
        }
    }

    /// [`Feed::stream`] with `?` for its errors.
    async fn try_stream(
        &self,
        cursor: &mut Option<String>,
        backoff: &mut Backoff,
    ) -> Result<std::convert::Infallible, FeedError> {
        let mut request = self
            .http
            .get(&self.url)
            .bearer_auth(self.token()?)
            .header(ACCEPT, "text/event-stream")
            .header(CACHE_CONTROL, "no-cache");
        if let Some(cursor) = cursor.as_deref() {
            // Resume: only the events after it (the header form; `?after=` works too).
            request = request.header("Last-Event-ID", cursor);
        }
        let mut response = check(request.send().await?).await?;
        eprintln!("feed: connected");
        // A stream that opened resets the backoff: the next failure retries quickly.
        backoff.reset();

        let mut parser = SseParser::default();
        loop {
            let chunk = match tokio::time::timeout(STREAM_IDLE, response.chunk()).await {
                Err(_) => {
                    return Err(FeedError::Retry {
                        why: format!("nothing received for {} s", STREAM_IDLE.as_secs()),
                        retry_after: None,
                    });
                }
                Ok(chunk) => chunk?,
            };
            let Some(bytes) = chunk else {
                // authd ends streams when it drains (restart, shutdown).
                return Err(FeedError::Retry {
                    why: "the stream ended".into(),
                    retry_after: None,
                });
            };
            for event in parser.push(&bytes) {
                if event.event != "revoked" {
                    continue;
                }
                match serde_json::from_str::<RevokedEvent>(&event.data) {
                    Ok(revocation) => lock(&self.revoked).apply(&revocation),
                    Err(err) => eprintln!("feed: ignored an event that does not parse: {err}"),
                }
                // Only now, with the event applied, is it safe to resume after it.
                if let Some(id) = event.id {
                    *cursor = Some(id);
                }
            }
        }
    }
}

/// The answer if it is a `200`, else what to do about it.
async fn check(response: reqwest::Response) -> Result<reqwest::Response, FeedError> {
    let status = response.status();
    if status == StatusCode::OK {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // The body is API.md's error: {"error": code, "error_description": sentence}.
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let code = body["error"].as_str().unwrap_or("");
    match (status, code) {
        (StatusCode::GONE, _) => Err(FeedError::CursorExpired),
        (StatusCode::BAD_REQUEST, _) => Err(FeedError::BadCursor),
        _ => Err(FeedError::Retry {
            why: format!(
                "{status} {code}: {}",
                body["error_description"].as_str().unwrap_or("")
            ),
            retry_after,
        }),
    }
}

/// An error with its causes (`connecting: connection refused`).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Exponential backoff with jitter, so that many clients cut at once (an authd restart)
/// do not all come back in the same millisecond.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: BACKOFF_FIRST,
        }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }

    /// The pause before the next attempt: authd's `Retry-After` when it gave one, else the
    /// current step plus up to half of it, random.
    fn next(&mut self, retry_after: Option<Duration>) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        if let Some(wait) = retry_after {
            return wait;
        }
        let mut random = [0u8; 2];
        let fraction = match getrandom::fill(&mut random) {
            Ok(()) => f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX),
            Err(_) => 0.5,
        };
        step + step.mul_f64(fraction / 2.0)
    }
}

// ----- Server-Sent Events, by hand -----

/// One dispatched event: its `id` (the cursor), `event` (the type) and `data`.
struct SseEvent {
    id: Option<String>,
    event: String,
    data: String,
}

/// The WHATWG event-stream format, the part authd uses: lines end with `\n` (or `\r\n`);
/// `field: value` lines (one optional space after the colon) build an event; a blank line
/// dispatches it; lines starting with `:` are comments (authd's `: keep-alive`).
#[derive(Default)]
struct SseParser {
    /// Bytes not yet ending in a newline: a chunk may end mid-line, even mid-character.
    buffer: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    /// Takes the next bytes of the body; returns the events they complete.
    fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches('\n').trim_end_matches('\r');
            if line.is_empty() {
                // A blank line ends the event; one without data is not dispatched.
                let data = std::mem::take(&mut self.data);
                let id = self.id.take();
                let event = self.event.take();
                if !data.is_empty() {
                    events.push(SseEvent {
                        id,
                        event: event.unwrap_or_else(|| "message".into()),
                        data: data.join("\n"),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.id = Some(value.to_owned()),
                "event" => self.event = Some(value.to_owned()),
                "data" => self.data.push(value.to_owned()),
                // `retry` and unknown fields: nothing this client needs.
                _ => {}
            }
        }
        events
    }
}

// ----- verifying a token -----

/// The claims this client reads; `jti` and `sid` are required (authd always sets them).
/// `iss`, `aud`, `exp` and `nbf` are checked by jsonwebtoken's [`Validation`].
#[derive(Deserialize)]
struct Claims {
    sub: String,
    jti: String,
    sid: String,
}

enum Verdict {
    Valid(String),
    Refused(String),
}

fn refused(reason: &str) -> Verdict {
    Verdict::Refused(reason.to_owned())
}

struct Verifier {
    http: reqwest::Client,
    jwks_url: String,
    issuer: String,
    audience: String,
    leeway: Duration,
    keys: JwkSet,
    /// When `keys` were fetched; None: never.
    fetched_at: Option<Instant>,
    revoked: Arc<Mutex<Revoked>>,
}

impl Verifier {
    /// Fetches the JWKS; on failure keeps the keys it had.
    async fn refresh_keys(&mut self) {
        let fetched = async {
            let response = self
                .http
                .get(&self.jwks_url)
                .timeout(REQUEST_TIMEOUT)
                .send()
                .await?
                .error_for_status()?;
            response.json::<JwkSet>().await
        };
        match fetched.await {
            Ok(keys) => {
                self.keys = keys;
                self.fetched_at = Some(Instant::now());
            }
            Err(err) => eprintln!("jwks: {}", error_chain(&err)),
        }
    }

    /// Fetches the JWKS again when it is older than its max-age, or when `kid` is not in it
    /// and the last fetch is old enough (a new key may have been published since).
    async fn keys_for(&mut self, kid: &str) {
        let age = self.fetched_at.map(|at| at.elapsed());
        let stale = age.is_none_or(|age| age > JWKS_MAX_AGE);
        let unknown = self.keys.find(kid).is_none();
        if stale || (unknown && age.is_none_or(|age| age > JWKS_MIN_REFETCH)) {
            self.refresh_keys().await;
        }
    }

    async fn verify(&mut self, token: &str) -> Verdict {
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return refused("malformed");
        };
        // RFC 9068 access tokens: `typ` is `at+jwt` (the media type form allowed too).
        let typ = header.typ.as_deref().unwrap_or("").to_ascii_lowercase();
        if typ != "at+jwt" && typ != "application/at+jwt" {
            return refused("wrong_typ");
        }
        // A critical extension this client does not understand must not be ignored.
        if header.crit.is_some() {
            return refused("unsupported_crit");
        }
        let Some(kid) = header.kid else {
            return refused("missing_kid");
        };
        self.keys_for(&kid).await;
        let Some(jwk) = self.keys.find(&kid) else {
            return refused("unknown_kid");
        };
        // The algorithm comes from the key, never from the token: a token naming another
        // one (HS256 "signed" with the public key, `none`) is refused.
        let key_alg = jwk
            .common
            .key_algorithm
            .and_then(|alg| Algorithm::try_from(alg).ok());
        let Some(alg) = key_alg else {
            return refused("unknown_kid");
        };
        if alg != header.alg
            || matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
        {
            return refused("wrong_alg");
        }
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            return refused("unknown_kid");
        };

        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true; // off by default in jsonwebtoken
        validation.leeway = self.leeway.as_secs(); // 60 s by default in jsonwebtoken
        let claims = match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
            Ok(data) => data.claims,
            Err(err) => {
                return refused(match err.kind() {
                    ErrorKind::ExpiredSignature => "expired",
                    ErrorKind::ImmatureSignature => "not_yet_valid",
                    ErrorKind::InvalidSignature => "bad_signature",
                    ErrorKind::InvalidIssuer => "wrong_issuer",
                    ErrorKind::InvalidAudience => "wrong_audience",
                    ErrorKind::InvalidAlgorithm => "wrong_alg",
                    ErrorKind::MissingRequiredClaim(_) => "missing_claim",
                    _ => "malformed",
                });
            }
        };

        // Signature and claims hold: now what the feed says.
        if lock(&self.revoked).refuses(&claims.jti, &claims.sid) {
            return refused("revoked");
        }
        Verdict::Valid(claims.sub)
    }
}

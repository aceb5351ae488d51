//! Runs one listener: accepts connections under a cap — a global one, and one per TCP peer
//! address (`server.max_connections_per_ip`) — serves HTTP/1.1 with hyper (header read
//! timeout, bounded header buffer), stamps each request with its peer address and an
//! `X-Request-Id`, and drains in-flight requests when asked to stop.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument as _;
use warp::reply::Response;

use super::Routes;
use super::client_addr;
use crate::clock::Clock;

/// How long a client may take to send a request's head, counted from the connection's
/// start or its previous answer (so it also bounds idle keep-alive connections).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes buffered while reading a request head: caps header size.
const MAX_HEAD_BYTES: usize = 32 * 1024;
/// Open connections per listener; more wait in the kernel's backlog. One peer address may
/// hold only `server.max_connections_per_ip` of them (see [`PeerTable`]).
const MAX_CONNECTIONS: usize = 4096;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The phases of a listener's life, driven by the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Stop accepting; let in-flight requests finish.
    Draining,
    /// Stop waiting for in-flight requests.
    Abort,
}

/// Serves `routes` on `listener` until the phase leaves `Running`, then waits for open
/// connections to finish their requests until the phase becomes `Abort`.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    routes: Routes,
    mut phase: watch::Receiver<Phase>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper's own header timeout arms and disarms a timer for every request; the
    // connection's idle deadline below does the same job with one timer per connection.
    http.header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let peers = Arc::new(PeerTable::default());
    let refused = metrics::counter!(crate::metrics::CONNECTIONS_REFUSED, "listener" => name);
    let graceful = GracefulShutdown::new();
    let mut stopping = phase.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = reached(&mut phase, Phase::Draining) => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => tokio::select! {
                    biased;
                    _ = reached(&mut stopping, Phase::Draining) => break,
                    accepted = listener.accept() => accepted.map(|a| (a, permit)),
                },
                Err(_) => break,
            },
        };
        let ((stream, peer), permit) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Usually EMFILE: back off briefly instead of spinning.
                tracing::warn!(listener = name, error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // The canonical form, so that a dual-stack listener counts an IPv4 peer as itself.
        let ip = peer.ip().to_canonical();
        let Some(slot) = peers.admit(ip, peer_limit(&routes, ip)) else {
            // Dropping the stream closes it: nothing read, nothing answered. Logged at debug
            // only, as a flood would flood the log; the counter shows it.
            refused.increment(1);
            tracing::debug!(listener = name, %peer, "connection refused: too many from this address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Per connection, so that the per-request clones touch no counter shared with
        // other connections (and other cores).
        let routes = Arc::new(routes.clone());
        let activity = Arc::new(Activity::new(routes.clock().clone()));
        let service = {
            let activity = activity.clone();
            hyper::service::service_fn(move |request| {
                handle(routes.clone(), activity.clone(), name, peer, request)
            })
        };
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            match activity.close_when_idle(connection).await {
                Some(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
                Some(Ok(())) => {}
                None => tracing::debug!(%peer, "connection closed: no request head in time"),
            }
            // However the connection ended (answered, failed, timed out), its slots return.
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(
        listener = name,
        open = graceful.count(),
        "stopped accepting; draining"
    );
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!(listener = name, "drained"),
        _ = reached(&mut phase, Phase::Abort) => {
            tracing::warn!(listener = name, "drain cut short");
        }
    }
}

/// How many connections `ip` may hold, from the settings snapshot of this connection (so a
/// reload applies to new connections): `None` — no limit of its own — for a trusted proxy,
/// which carries many clients, and for routes without settings (a bare filter in tests).
fn peer_limit(routes: &Routes, ip: IpAddr) -> Option<usize> {
    let settings = routes.settings()?;
    let server = &settings.config.server;
    if client_addr::is_trusted(ip, &server.trusted_proxies) {
        return None;
    }
    Some(server.max_connections_per_ip)
}

/// The open connections of one listener per peer address (API.md "Conventions",
/// `server.max_connections_per_ip`), so that one client cannot take every slot of
/// [`MAX_CONNECTIONS`]. An address is in the table only while it has a connection open, so
/// the table never outgrows the connections themselves. Exempt peers are counted too (and
/// never refused), so that a reload which withdraws their trust finds their true count.
///
/// One lock per connection opened or closed, never per request.
#[derive(Debug, Default)]
struct PeerTable {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PeerTable {
    /// Counts a connection from `ip` until the returned slot drops; `None` when `ip`
    /// already holds `limit` connections (no limit: always counted).
    fn admit(self: &Arc<Self>, ip: IpAddr, limit: Option<usize>) -> Option<PeerSlot> {
        let mut open = self.lock();
        let count = open.get(&ip).copied().unwrap_or(0);
        if limit.is_some_and(|limit| count >= limit) {
            return None;
        }
        open.insert(ip, count + 1);
        Some(PeerSlot {
            table: self.clone(),
            ip,
        })
    }

    /// The counts stay consistent under a poisoned lock: each change is one map operation.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> Option<usize> {
        self.lock().get(&ip).copied()
    }
}

/// One open connection counted in a [`PeerTable`]; dropping it (whatever ended the
/// connection) gives the slot back, and forgets the address with its last connection.
#[derive(Debug)]
struct PeerSlot {
    table: Arc<PeerTable>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.table.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Resolves once the phase is `at_least` or later (or the app is gone).
async fn reached(phase: &mut watch::Receiver<Phase>, at_least: Phase) {
    let rank = |p: Phase| p as u8;
    let _ = phase.wait_for(|p| rank(*p) >= rank(at_least)).await;
}

/// What a connection is doing, for its idle deadline: a client must send the whole head
/// of its next request within [`HEADER_READ_TIMEOUT`] of connecting or of its previous
/// answer. That bounds slowloris clients and idle keep-alive connections alike.
struct Activity {
    clock: Clock,
    opened: Instant,
    /// Requests being answered.
    busy: AtomicU64,
    /// When the connection last went idle, in milliseconds since `opened`.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new(clock: Clock) -> Activity {
        Activity {
            opened: clock.instant(),
            clock,
            busy: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    /// Marks a request as being answered until the guard drops.
    fn request_started(self: Arc<Self>) -> Answering {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Answering(self)
    }

    /// When the connection must be closed unless a request arrives first; `None` while a
    /// request is being answered.
    fn deadline(&self) -> Option<Instant> {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let idle_since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        Some(self.opened + idle_since + HEADER_READ_TIMEOUT)
    }

    /// Drives `connection` to its end, or drops it (closing the socket) once it has been
    /// idle past its deadline. One timer per connection, re-armed only when it fires.
    async fn close_when_idle<F: Future>(&self, connection: F) -> Option<F::Output> {
        let mut connection = std::pin::pin!(connection);
        let timer = tokio::time::sleep(HEADER_READ_TIMEOUT);
        let mut timer = std::pin::pin!(timer);
        loop {
            tokio::select! {
                biased;
                output = &mut connection => return Some(output),
                () = &mut timer => {
                    let now = self.clock.instant();
                    match self.deadline() {
                        Some(deadline) if deadline <= now => return None,
                        Some(deadline) => timer.as_mut().reset(deadline.into()),
                        None => timer.as_mut().reset((now + HEADER_READ_TIMEOUT).into()),
                    }
                }
            }
        }
    }
}

/// A request being answered (see [`Activity::request_started`]).
struct Answering(Arc<Activity>);

impl Drop for Answering {
    fn drop(&mut self) {
        let activity = &self.0;
        let ms = (activity.clock.instant() - activity.opened).as_millis() as u64;
        activity.idle_since_ms.store(ms, Ordering::Relaxed);
        activity.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Marks a response whose body goes on for as long as it has something to send (a backup
/// of a large store): its connection counts as busy until the body ends, instead of idle
/// from the moment the head is sent (which would cut the body off at the idle deadline).
#[derive(Debug, Clone, Copy)]
pub struct Streaming;

/// The body type of warp's responses (warp does not name it).
type WarpBody = <Response as HasBody>::Body;

trait HasBody {
    type Body;
}

impl<B> HasBody for http::Response<B> {
    type Body = B;
}

/// A response body as sent: a [`Streaming`] one holds its connection busy until it ends.
struct AnswerBody {
    body: WarpBody,
    answering: Option<Answering>,
}

impl hyper::body::Body for AnswerBody {
    type Data = <WarpBody as hyper::body::Body>::Data;
    type Error = <WarpBody as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(None | Some(Err(_))) = polled {
            self.answering = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

async fn handle(
    routes: Arc<Routes>,
    activity: Arc<Activity>,
    listener: &'static str,
    peer: SocketAddr,
    request: http::Request<Incoming>,
) -> Result<http::Response<AnswerBody>, Infallible> {
    let answering = activity.request_started();
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|value| is_sane_request_id(value.as_bytes()))
        .cloned()
        .unwrap_or_else(new_request_id);
    let route = routes.label(request.uri().path());
    let started = routes.clock().instant();
    if routes.is_direct(&request) {
        // `/v1/verify` runs for every protected request of every app behind authd, and
        // the request span was a tenth of its cost. Nothing on its path logs at INFO or
        // above, so the span is built only while DEBUG is on — or for its one possible
        // log line, an internal error, which is answered (and logged) in it here.
        let span = if tracing::enabled!(tracing::Level::DEBUG) {
            request_span(&request_id)
        } else {
            tracing::Span::none()
        };
        let answered = routes
            .answer_directly(request, peer)
            .instrument(span.clone())
            .await;
        let response = answered.unwrap_or_else(|internal| {
            if span.is_none() {
                request_span(&request_id).in_scope(|| internal.into_response())
            } else {
                span.in_scope(|| internal.into_response())
            }
        });
        let elapsed = routes.clock().instant() - started;
        return Ok(
            span.in_scope(|| finished(response, request_id, elapsed, answering, listener, route))
        );
    }
    let span = request_span(&request_id);
    async move {
        let response = routes.answer(request, peer).await;
        let elapsed = routes.clock().instant() - started;
        Ok(finished(
            response, request_id, elapsed, answering, listener, route,
        ))
    }
    .instrument(span)
    .await
}

/// The span of a request's log lines. One field only: handlers log what else matters.
fn request_span(request_id: &HeaderValue) -> tracing::Span {
    tracing::info_span!("request", request_id = %RequestIdField(request_id))
}

/// Stamps the answer with its request id, counts it, and frees the connection's deadline
/// (a [`Streaming`] answer's once its body ends).
fn finished(
    mut response: Response,
    request_id: HeaderValue,
    elapsed: Duration,
    answering: Answering,
    listener: &'static str,
    route: &'static str,
) -> http::Response<AnswerBody> {
    response.headers_mut().insert(REQUEST_ID, request_id);
    let answering = response
        .extensions()
        .get::<Streaming>()
        .is_some()
        .then_some(answering);
    crate::metrics::record_request(listener, route, response.status().as_u16(), elapsed);
    tracing::debug!(
        status = response.status().as_u16(),
        micros = elapsed.as_micros() as u64,
        "request finished"
    );
    response.map(|body| AnswerBody { body, answering })
}

/// A fresh request id: a random per-process prefix, the worker thread's number and its
/// own counter, in hex. Unique, cheap (no system call, no counter shared between cores)
/// and not a secret.
fn new_request_id() -> HeaderValue {
    static PREFIX: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| crate::auth::random_id(6));
    static THREADS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static NEXT: (u64, std::cell::Cell<u64>) =
            (THREADS.fetch_add(1, Ordering::Relaxed), std::cell::Cell::new(0));
    }
    let (thread, n) = NEXT.with(|(thread, next)| {
        let n = next.get();
        next.set(n.wrapping_add(1));
        (*thread, n)
    });
    let mut id = Vec::with_capacity(PREFIX.len() + 2 * 17);
    id.extend_from_slice(PREFIX.as_bytes());
    for part in [thread, n] {
        id.push(b'-');
        push_hex(&mut id, part);
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(id)).unwrap_or(HeaderValue::from_static("-"))
}

/// Appends `n` in lower-case hex, without leading zeros.
fn push_hex(out: &mut Vec<u8>, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let nibbles = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..nibbles).rev() {
        out.push(DIGITS[((n >> (4 * i)) & 0xf) as usize]);
    }
}

/// A request id as the request span records it: shown as is (a sane or generated id is
/// plain ASCII, so there is nothing to quote or escape).
struct RequestIdField<'a>(&'a HeaderValue);

impl std::fmt::Display for RequestIdField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.to_str().unwrap_or("-"))
    }
}

/// A client-supplied request id is kept when it is short and plain.
fn is_sane_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use warp::{Filter as _, Reply as _};

    /// Serves one route whose body sends `first`, then, after longer than a connection may
    /// sit idle, `last`; marked [`Streaming`] when `streaming`. Answers the body a client
    /// got before the connection ended.
    async fn slow_body(streaming: bool) -> String {
        let route = warp::any()
            .map(move || {
                let chunks = futures_util::stream::unfold(0, |n| async move {
                    match n {
                        0 => Some((Ok::<_, Infallible>("first;"), 1)),
                        1 => {
                            tokio::time::sleep(HEADER_READ_TIMEOUT + Duration::from_secs(2)).await;
                            Some((Ok("last"), 2))
                        }
                        _ => None,
                    }
                });
                let mut response = warp::reply::stream(chunks).into_response();
                if streaming {
                    response.extensions_mut().insert(Streaming);
                }
                response
            })
            .boxed();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_phase, phase_rx) = watch::channel(Phase::Running);
        tokio::spawn(serve(
            "test",
            listener,
            Routes::from_filter(route),
            phase_rx,
        ));
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let _ = client.read_to_end(&mut got).await;
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn a_streaming_body_outlives_the_idle_deadline_and_any_other_is_cut_at_it() {
        let (streaming, plain) = tokio::join!(slow_body(true), slow_body(false));
        assert!(
            streaming.contains("first;") && streaming.contains("last"),
            "{streaming}"
        );
        assert!(
            plain.contains("first;") && !plain.contains("last"),
            "{plain}"
        );
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_peer_at_its_limit_is_refused_while_others_are_not() {
        let table = Arc::new(PeerTable::default());
        let greedy: Vec<_> = (0..3)
            .map(|_| table.admit(ip("192.0.2.1"), Some(3)).unwrap())
            .collect();

        assert!(table.admit(ip("192.0.2.1"), Some(3)).is_none());
        assert!(table.admit(ip("192.0.2.2"), Some(3)).is_some());
        assert_eq!(table.count(ip("192.0.2.1")), Some(3));
        drop(greedy);
    }

    #[test]
    fn a_closed_connection_frees_its_slot_and_the_last_one_its_entry() {
        let table = Arc::new(PeerTable::default());
        let first = table.admit(ip("192.0.2.1"), Some(2)).unwrap();
        let second = table.admit(ip("192.0.2.1"), Some(2)).unwrap();
        assert!(table.admit(ip("192.0.2.1"), Some(2)).is_none());

        drop(first);
        let third = table.admit(ip("192.0.2.1"), Some(2)).unwrap();
        assert_eq!(table.count(ip("192.0.2.1")), Some(2));
        drop((second, third));

        // Bounded memory: an address without open connections is forgotten.
        assert_eq!(table.count(ip("192.0.2.1")), None);
        assert!(table.lock().is_empty());
    }

    #[test]
    fn an_exempt_peer_is_counted_but_never_refused() {
        let table = Arc::new(PeerTable::default());
        let proxy: Vec<_> = (0..10)
            .map(|_| table.admit(ip("10.0.0.1"), None).unwrap())
            .collect();

        assert_eq!(table.count(ip("10.0.0.1")), Some(10));
        // Trust withdrawn by a reload: its open connections already exceed the limit.
        assert!(table.admit(ip("10.0.0.1"), Some(5)).is_none());
        drop(proxy);
        assert!(table.lock().is_empty());
    }

    #[test]
    fn hex_has_no_leading_zeros() {
        for (n, want) in [(0, "0"), (9, "9"), (255, "ff"), (4096, "1000")] {
            let mut out = Vec::new();
            push_hex(&mut out, n);
            assert_eq!(out, want.as_bytes());
        }
        let mut out = Vec::new();
        push_hex(&mut out, u64::MAX);
        assert_eq!(out, b"ffffffffffffffff");
    }

    #[test]
    fn generated_request_ids_are_sane_and_distinct() {
        let first = new_request_id();
        let second = new_request_id();
        assert!(is_sane_request_id(first.as_bytes()), "{first:?}");
        assert_ne!(first, second);
    }
}

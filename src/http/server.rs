//! Runs one listener: accepts connections under a cap, serves HTTP/1.1 with hyper (header
//! read timeout, bounded header buffer), stamps each request with its peer address and an
//! `X-Request-Id`, and drains in-flight requests when asked to stop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::HeaderValue;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower_service::Service as _;
use tracing::Instrument as _;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::request::PeerAddr;

/// How long a client may take to send a request's headers (also bounds idle keep-alive).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes buffered while reading a request head: caps header size.
const MAX_HEAD_BYTES: usize = 32 * 1024;
/// Open connections per listener; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 4096;

const REQUEST_ID: &str = "x-request-id";

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
    routes: BoxedFilter<(Response,)>,
    route_label: fn(&str) -> &'static str,
    mut phase: watch::Receiver<Phase>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        let _ = stream.set_nodelay(true);
        let routes = routes.clone();
        let service = hyper::service::service_fn(move |request| {
            handle(routes.clone(), name, route_label, peer, request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
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

/// Resolves once the phase is `at_least` or later (or the app is gone).
async fn reached(phase: &mut watch::Receiver<Phase>, at_least: Phase) {
    let rank = |p: Phase| p as u8;
    let _ = phase.wait_for(|p| rank(*p) >= rank(at_least)).await;
}

async fn handle(
    routes: BoxedFilter<(Response,)>,
    listener: &'static str,
    route_label: fn(&str) -> &'static str,
    peer: SocketAddr,
    mut request: http::Request<Incoming>,
) -> Result<Response, Infallible> {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .filter(|value| is_sane_request_id(value.as_bytes()))
        .cloned()
        .unwrap_or_else(new_request_id);
    request.headers_mut().insert(REQUEST_ID, request_id.clone());
    request.extensions_mut().insert(PeerAddr(peer));
    // One field only: the span is built for every request, and each field costs a
    // formatting pass while INFO is enabled. Handlers log what else matters.
    let span = tracing::info_span!("request", request_id = request_id.to_str().unwrap_or("-"));
    let route = route_label(request.uri().path());
    async move {
        let started = Instant::now();
        let mut response = warp::service(routes).call(request).await?;
        response.headers_mut().insert(REQUEST_ID, request_id);
        let elapsed = started.elapsed();
        crate::metrics::record_request(listener, route, response.status().as_u16(), elapsed);
        tracing::debug!(
            status = response.status().as_u16(),
            micros = elapsed.as_micros() as u64,
            "request finished"
        );
        Ok(response)
    }
    .instrument(span)
    .await
}

/// A fresh request id: a random per-process prefix and a counter. Unique, cheap (no
/// system call per request) and not a secret.
fn new_request_id() -> HeaderValue {
    static PREFIX: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| crate::auth::random_id(6));
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{}-{n:x}", *PREFIX)).unwrap_or(HeaderValue::from_static("-"))
}

/// A client-supplied request id is kept when it is short and plain.
fn is_sane_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

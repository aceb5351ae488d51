//! Prometheus metrics: request counts and latency per listener, route and status, login
//! and verify outcomes, revocation-list size, hashing queue depth and build info. Recorded
//! through the `metrics` facade; rendered for `GET /metrics` on the admin listener.

use std::cell::RefCell;
use std::sync::OnceLock;

use metrics::{Counter, Histogram};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "authd_http_requests_total";
pub const HTTP_DURATION: &str = "authd_http_request_duration_seconds";
pub const LOGINS: &str = "authd_logins_total";
pub const VERIFICATIONS: &str = "authd_verifications_total";
pub const REFRESHES: &str = "authd_refreshes_total";
pub const REVOCATION_ENTRIES: &str = "authd_revocation_entries";
pub const HASH_QUEUE_DEPTH: &str = "authd_hash_queue_depth";
pub const THROTTLE_TRACKED: &str = "authd_login_throttle_tracked";
/// Cluster mode: seconds since an etcd quorum last confirmed this instance's view current.
pub const VIEW_AGE: &str = "authd_store_view_age_seconds";
pub const BUILD_INFO: &str = "authd_build_info";
/// Revocation-feed requests being served (streams and long-polls), all instances' of
/// this process together.
pub const FEED_CLIENTS: &str = "authd_feed_clients";
/// Events the revocation feed sent (each counted once per client it went to).
pub const FEED_EVENTS_SENT: &str = "authd_feed_events_sent_total";
/// Connections closed unanswered at once: their peer held `server.max_connections_per_ip`.
pub const CONNECTIONS_REFUSED: &str = "authd_connections_refused_total";

/// Latency buckets in seconds: verify answers in microseconds, logins in tens of ms.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once (later calls reuse it).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), LATENCY_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
                    Some(handle)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot install the metrics recorder");
                    None
                }
            }
        })
        .as_ref()
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    install().map(PrometheusHandle::render).unwrap_or_default()
}

/// Drains histogram samples into their buckets; run it regularly so memory stays flat
/// between scrapes.
pub fn upkeep() {
    if let Some(handle) = install() {
        handle.run_upkeep();
    }
}

/// How often [`upkeep`] runs.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Handles of the per-request series, kept per thread and found by the labels' addresses
/// (they are `&'static str`s): looking a series up in the recorder on every request would
/// hash and allocate its label set, and a shared cache would bounce between cores.
struct HandleCache<K, H> {
    entries: Vec<(K, H)>,
}

impl<K: Copy + PartialEq, H: Clone> HandleCache<K, H> {
    const fn new() -> Self {
        HandleCache {
            entries: Vec::new(),
        }
    }

    fn get_or_register(&mut self, key: K, register: impl FnOnce() -> H) -> &H {
        let index = match self.entries.iter().position(|(k, _)| *k == key) {
            Some(index) => index,
            None => {
                self.entries.push((key, register()));
                self.entries.len() - 1
            }
        };
        &self.entries[index].1
    }
}

/// Labels compared by address: every label is a `&'static str` constant.
#[derive(Clone, Copy)]
struct Label(&'static str);

impl PartialEq for Label {
    fn eq(&self, other: &Label) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

/// (listener, route, status) → the request counter and the latency histogram.
type RequestSeries = HandleCache<(Label, Label, Label), (Counter, Histogram)>;

thread_local! {
    static REQUEST_SERIES: RefCell<RequestSeries> =
        const { RefCell::new(HandleCache::new()) };
    static OUTCOME_COUNTERS: RefCell<HandleCache<(Label, Label), Counter>> =
        const { RefCell::new(HandleCache::new()) };
}

/// Records one answered request.
pub fn record_request(listener: &'static str, route: &'static str, status: u16, elapsed: Duration) {
    let status = status_label(status);
    REQUEST_SERIES.with_borrow_mut(|cache| {
        let (counter, histogram) =
            cache.get_or_register((Label(listener), Label(route), Label(status)), || {
                (
                    metrics::counter!(HTTP_REQUESTS, "listener" => listener, "route" => route, "status" => status),
                    metrics::histogram!(HTTP_DURATION, "listener" => listener, "route" => route),
                )
            });
        counter.increment(1);
        histogram.record(elapsed.as_secs_f64());
    });
}

/// Counts one `outcome` of the counter `name` (e.g. [`VERIFICATIONS`]), reusing its handle.
pub fn count_outcome(name: &'static str, outcome: &'static str) {
    OUTCOME_COUNTERS.with_borrow_mut(|cache| {
        cache
            .get_or_register(
                (Label(name), Label(outcome)),
                || metrics::counter!(name, "outcome" => outcome),
            )
            .increment(1);
    });
}

/// Status codes as static labels (no allocation per request).
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        302 => "302",
        303 => "303",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        415 => "415",
        429 => "429",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

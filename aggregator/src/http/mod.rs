//! HTTP listener (axum on hyper-util's server): the dashboard (embedded
//! `web/` assets), a JSON API from the snapshot and the RRD tree, CSV/JSON
//! downloads through the rrd-export library, PNG graphs, and `/metrics`.
//!
//! Only this module knows the JSON shapes. Handlers read an immutable snapshot
//! or RRD files (after flushing the write-back cache for the files they read),
//! never the live state under a lock, and every request has a timeout (30 s;
//! `POST /api/flush`, which waits for a pass over every file, 600 s) — a
//! client can never slow ingest. API reference: `web/API.md`.
//!
//! Layout: [`server`] (accept loop under the connection governor, header and
//! keep-alive timeouts, graceful shutdown), [`select`] (pure: query →
//! files, times, caps), `browse` (`/api/grid|cluster|host|search`),
//! `series`, `export` (streamed), `graph` (`rrdtool graph`),
//! [`admin`] (`POST /api/flush`), `metrics`, `assets`; securing the port:
//! [`tls`] (HTTPS, certificate reload on SIGHUP), [`auth`] (basic auth,
//! bcrypt cached and bounded) and [`security`] (their wiring and counters).
//!
//! Bounded work: `/api/series`, `/api/export` and `/api/search` run under
//! `http.max_heavy_requests` permits and `rrdtool graph` under
//! `http.max_graph_processes`; a request that finds none free within
//! [`BUSY_WAIT`] is answered `503` with `Retry-After`.

pub mod admin;
mod alerts;
mod assets;
pub mod auth;
mod browse;
mod export;
mod graph;
mod hosts_metrics;
mod metrics;
pub mod security;
pub mod select;
mod senders;
mod series;
pub mod server;
pub mod tls;

pub use server::{ServerParams, serve};

use crate::config::{HttpConfig, Trusted};
use crate::flush_gate::FlushGate;
use crate::listen::ListenCounters;
use crate::state::State;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::timeout::TimeoutLayer;

/// How long a heavy request waits for a permit before it is answered `503`:
/// long enough for a dashboard's burst of charts (a browser opens six
/// connections) to be served in turn, short enough to refuse fast.
pub const BUSY_WAIT: Duration = Duration::from_secs(2);

/// The `Retry-After` given with `503` for a busy endpoint, in seconds.
const BUSY_RETRY_SECS: u64 = 2;

/// Largest request body taken (no endpoint reads one; `POST /api/flush`
/// has none).
const MAX_BODY_BYTES: usize = 16 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Cluster state.
    pub state: Arc<State>,
    /// The RRD writer (flush-before-read, counters), when `write_rrds` is on.
    pub storage: Option<crate::storage::StorageHandle>,
    /// Root of the RRD tree.
    pub rrd_root: PathBuf,
    /// gmetad `case_sensitive_hostnames`.
    pub case_sensitive_hostnames: bool,
    /// Caps, semaphores and counters of this listener.
    pub limits: Arc<HttpLimits>,
    /// Full flushes (`POST /api/flush`), shared with the daemon socket.
    pub flush: Option<Arc<FlushGate>>,
    /// `trusted_hosts`, for `POST /api/flush`.
    pub trusted: Arc<Vec<Trusted>>,
    /// `all_trusted`.
    pub all_trusted: bool,
    /// Counters of every listener (for `/metrics`).
    pub listen_counters: Arc<ListenCounters>,
    /// Health, alerts and events (`/api/alerts`, `/api/events`), when enabled.
    pub alerts: Option<crate::alerts::Alerts>,
    /// The authenticated transport (`/api/senders`, `/metrics`).
    pub auth: Arc<crate::auth::Registry>,
    /// Every `[[forward]]`'s counters (`/api/forwards`, `/metrics`).
    pub forwards: crate::forward::Forwards,
}

/// Refusals the HTTP side counts, by reason.
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// `503`: no heavy-request permit within [`BUSY_WAIT`].
    pub busy: AtomicU64,
    /// `503`: no `rrdtool graph` slot within [`BUSY_WAIT`].
    pub graph_busy: AtomicU64,
    /// `400`: a column or row cap.
    pub over_cap: AtomicU64,
    /// `403`: `POST /api/flush` from outside `trusted_hosts`.
    pub flush_forbidden: AtomicU64,
    /// `429`: `POST /api/flush` sooner than `http.flush_min_interval_secs`.
    pub flush_rate_limited: AtomicU64,
    /// Connections closed by the header-read timeout (slowloris).
    pub header_timeouts: AtomicU64,
    /// Idle keep-alive connections closed.
    pub idle_closed: AtomicU64,
    /// TLS connections closed by `http.tls_handshake_timeout_secs`.
    pub tls_handshake_timeouts: AtomicU64,
    /// TLS handshakes that failed (not TLS, no common cipher, bad record…).
    pub tls_handshake_failed: AtomicU64,
}

impl HttpCounters {
    fn labelled(&self) -> crate::telemetry::LabelledCounter {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (
            "ganglion_http_refused_total",
            "HTTP requests or connections refused or closed by a limit, by reason",
            "reason",
            vec![
                ("busy", g(&self.busy)),
                ("graph_busy", g(&self.graph_busy)),
                ("over_cap", g(&self.over_cap)),
                ("flush_forbidden", g(&self.flush_forbidden)),
                ("flush_rate_limited", g(&self.flush_rate_limited)),
                ("header_timeout", g(&self.header_timeouts)),
                ("idle_keepalive", g(&self.idle_closed)),
                ("tls_handshake_timeout", g(&self.tls_handshake_timeouts)),
                ("tls_handshake_failed", g(&self.tls_handshake_failed)),
            ],
        )
    }
}

/// The HTTP listener's request limits.
pub struct HttpLimits {
    heavy: Arc<Semaphore>,
    heavy_max: usize,
    graph: Arc<Semaphore>,
    graph_max: usize,
    /// Query caps.
    pub caps: select::Caps,
    /// Counters.
    pub counters: HttpCounters,
    /// Authentication and TLS reload counters.
    pub security: security::SecurityCounters,
    /// Rate limit of per-client log lines (TLS handshakes).
    pub(crate) diag: crate::diag::Diag<std::net::IpAddr>,
}

impl HttpLimits {
    /// From `[http]`.
    pub fn new(c: &HttpConfig) -> Arc<HttpLimits> {
        Arc::new(HttpLimits {
            heavy: Arc::new(Semaphore::new(c.max_heavy_requests.max(1))),
            heavy_max: c.max_heavy_requests.max(1),
            graph: Arc::new(Semaphore::new(c.max_graph_processes.max(1))),
            graph_max: c.max_graph_processes.max(1),
            caps: select::Caps {
                max_columns: c.max_series_columns,
                max_rows: c.max_series_rows,
                max_export_rows: c.max_export_rows,
            },
            counters: HttpCounters::default(),
            security: security::SecurityCounters::default(),
            diag: crate::diag::Diag::new(Duration::from_secs(60)),
        })
    }

    /// A heavy-request permit, or the `503` to answer.
    async fn heavy(&self) -> Result<OwnedSemaphorePermit, Response> {
        match tokio::time::timeout(BUSY_WAIT, self.heavy.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => {
                self.counters.busy.fetch_add(1, Ordering::Relaxed);
                Err(busy(&format!(
                    "busy: {} heavy requests (series, export, search) are running (http.max_heavy_requests); retry in {BUSY_RETRY_SECS} s",
                    self.heavy_max
                )))
            }
        }
    }

    /// An `rrdtool graph` slot, or the `503` to answer.
    async fn graph(&self) -> Result<OwnedSemaphorePermit, Response> {
        match tokio::time::timeout(BUSY_WAIT, self.graph.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => {
                self.counters.graph_busy.fetch_add(1, Ordering::Relaxed);
                Err(busy(&format!(
                    "busy: {} rrdtool graph processes are running (http.max_graph_processes); retry in {BUSY_RETRY_SECS} s",
                    self.graph_max
                )))
            }
        }
    }
}

/// The router (tests drive it with `oneshot`).
pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{*path}", get(assets::asset))
        .route("/api/grid", get(browse::grid))
        .route("/api/cluster/{cluster}", get(browse::cluster))
        .route("/api/host/{cluster}/{host}", get(browse::host))
        .route("/api/search", get(browse::search))
        .route("/api/senders", get(senders::senders))
        .route("/api/series", get(series::series))
        .route("/api/export", get(export::export))
        .route("/api/graph.png", get(graph::graph_png))
        .route("/api/alerts", get(alerts::alerts))
        .route("/api/events", get(alerts::events))
        .route("/metrics", get(metrics::metrics))
        .route("/metrics/hosts", get(hosts_metrics::hosts_metrics))
        .route("/api/forwards", get(hosts_metrics::forwards))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        // Added after the 30 s layer, so outside it: a full pass over a
        // million files takes a minute or two, and the caller (a script
        // about to read the tree) needs the answer, not a timeout while the
        // pass goes on. It has its own, longer limit.
        .route("/api/flush", post(admin::flush))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

fn bad(message: impl AsRef<str>) -> Response {
    error(StatusCode::BAD_REQUEST, message.as_ref())
}

/// `status` with a JSON error and `Retry-After: secs`.
fn retry_after(status: StatusCode, secs: u64, message: &str) -> Response {
    let mut r = error(status, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

fn busy(message: &str) -> Response {
    retry_after(StatusCode::SERVICE_UNAVAILABLE, BUSY_RETRY_SECS, message)
}

/// A failed read of RRD files. librrd refuses a file another writer holds
/// locked ("could not lock RRD": rrdcached or another tool writing it at
/// that instant); that is a moment's contention, answered `503` with
/// `Retry-After: 1`, not a server fault.
fn read_failed(message: &str) -> Response {
    if message.contains("could not lock") {
        retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            1,
            &format!("{message} (being written right now; retry)"),
        )
    } else {
        error(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

/// A small error for helpers (a full `Response` is too big to pass around).
#[derive(Debug, PartialEq, Eq)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    fn bad(m: impl AsRef<str>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, m.as_ref().to_string())
    }
    fn not_found(m: String) -> ApiError {
        ApiError(StatusCode::NOT_FOUND, m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, &self.1)
    }
}

trait IntoJson {
    fn into_response_json(self) -> Response;
}

impl IntoJson for serde_json::Value {
    fn into_response_json(self) -> Response {
        axum::Json(self).into_response()
    }
}

#[cfg(test)]
mod tests;

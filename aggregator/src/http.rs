//! HTTP listener (axum): a placeholder overview page until the dashboard lands,
//! a small JSON API from the snapshot, and `/metrics` self-telemetry. Only this
//! module knows JSON shapes; handlers read an immutable snapshot, so no request
//! can block ingest, and every request has a timeout.

use crate::state::{State, now_secs};
use axum::Router;
use axum::extract::{Path, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Cluster state.
    pub state: Arc<State>,
    /// The RRD writer (flush-before-read, counters).
    pub storage: Option<crate::storage::StorageHandle>,
}

/// The router (tests drive it with `oneshot`).
pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/clusters", get(clusters))
        .route("/api/clusters/{cluster}/hosts", get(hosts))
        .route("/metrics", get(metrics))
        .route("/api/flush", axum::routing::post(flush))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .with_state(app)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

async fn clusters(AxState(app): AxState<AppState>) -> axum::Json<Value> {
    let snap = app.state.snapshot(now_secs());
    let list: Vec<Value> = snap
        .clusters
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "localtime": c.localtime,
                "stale": c.stale,
                "hosts_up": c.summary.hosts_up,
                "hosts_down": c.summary.hosts_down,
            })
        })
        .collect();
    axum::Json(json!({ "grid": snap.grid_name, "localtime": snap.localtime, "clusters": list }))
}

async fn hosts(AxState(app): AxState<AppState>, Path(cluster): Path<String>) -> Response {
    let snap = app.state.snapshot(now_secs());
    let Some(c) = snap.cluster(&cluster) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("unknown cluster {cluster:?}"),
        );
    };
    let hosts: Vec<Value> = c
        .hosts
        .iter()
        .map(|h| {
            let metrics: Vec<Value> = h
                .metrics
                .iter()
                .map(|m| {
                    json!({
                        "name": m.name, "val": m.val, "value": m.number,
                        "type": m.metric_type.as_str(), "units": m.units, "slope": m.slope.as_str(),
                        "tn": m.tn, "tmax": m.tmax, "dmax": m.dmax,
                        "group": m.extra("GROUP"), "title": m.extra("TITLE"), "desc": m.extra("DESC"),
                    })
                })
                .collect();
            json!({
                "name": h.name, "ip": h.ip, "alive": h.alive, "reported": h.reported, "tn": h.tn,
                "location": h.location, "tags": h.tags, "gmond_started": h.gmond_started, "metrics": metrics,
            })
        })
        .collect();
    axum::Json(json!({ "cluster": c.name, "hosts": hosts })).into_response()
}

async fn metrics(AxState(app): AxState<AppState>) -> Response {
    let mut text = app.state.counters().render_prometheus();
    if let Some(s) = &app.storage {
        let c = &s.counters;
        let g = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        for (name, help, v) in [
            (
                "ganglion_rrd_samples_total",
                "Samples accepted for RRD storage",
                g(&c.samples),
            ),
            (
                "ganglion_rrd_dropped_batches_total",
                "Sample batches dropped (writer queue full)",
                g(&c.dropped_batches),
            ),
            (
                "ganglion_rrd_files_created_total",
                "RRD files created",
                g(&c.files_created),
            ),
            (
                "ganglion_rrd_file_writes_total",
                "RRD file writes (many samples each)",
                g(&c.file_writes),
            ),
            (
                "ganglion_rrd_samples_written_total",
                "Samples written to RRD files",
                g(&c.samples_written),
            ),
            (
                "ganglion_rrd_write_errors_total",
                "RRD create/update failures",
                g(&c.write_errors),
            ),
            (
                "ganglion_rrd_journal_replayed_total",
                "Samples replayed from the journal at start",
                g(&c.replayed),
            ),
        ] {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `POST /api/flush`: write every cached sample to disk now (what readers such as
/// `rrd-export` call before reading the tree of a live aggregator).
async fn flush(AxState(app): AxState<AppState>) -> Response {
    let Some(s) = app.storage.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "RRD storage is off (write_rrds = false)",
        );
    };
    let ok = tokio::task::spawn_blocking(move || s.flush(Vec::new(), Duration::from_secs(25)))
        .await
        .unwrap_or(false);
    if ok {
        axum::Json(json!({ "flushed": true })).into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the RRD writer did not finish in time",
        )
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn index(AxState(app): AxState<AppState>) -> Html<String> {
    let snap = app.state.snapshot(now_secs());
    let mut body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Ganglion — {}</title>\
         <meta http-equiv=\"refresh\" content=\"15\"><style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
         table{{border-collapse:collapse}}td,th{{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left}}\
         .down{{color:#b00}}</style></head><body><h1>Ganglion grid “{}”</h1>\
         <p>Interactive graphs are coming; this overview refreshes every 15 s. JSON: <a href=\"/api/clusters\">/api/clusters</a>, \
         self-metrics: <a href=\"/metrics\">/metrics</a>.</p>",
        esc(&snap.grid_name),
        esc(&snap.grid_name)
    );
    for c in &snap.clusters {
        body.push_str(&format!(
            "<h2>{} — {} up, {} down</h2><table><tr><th>host</th><th>ip</th><th>state</th><th>load_one</th><th>cpu_idle</th><th>metrics</th></tr>",
            esc(&c.name),
            c.summary.hosts_up,
            c.summary.hosts_down
        ));
        for h in &c.hosts {
            let val = |n: &str| {
                h.metrics
                    .iter()
                    .find(|m| m.name == n)
                    .map(|m| esc(&m.val))
                    .unwrap_or_default()
            };
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&h.name),
                esc(&h.ip),
                if h.alive { "up" } else { "down" },
                if h.alive { "up" } else { "down" },
                val("load_one"),
                val("cpu_idle"),
                h.metrics.len()
            ));
        }
        body.push_str("</table>");
    }
    body.push_str("</body></html>");
    Html(body)
}

//! HTTP listener (axum): the dashboard (embedded `web/` assets), a JSON API
//! from the snapshot and the RRD tree, CSV/JSON downloads through the
//! rrd-export library, PNG graphs, and `/metrics`.
//!
//! Only this module knows the JSON shapes. Handlers read an immutable snapshot
//! or RRD files (after flushing the write-back cache for the files they read),
//! never the live state under a lock, and every request has a timeout (30 s;
//! `POST /api/flush`, which waits for a pass over every file, 600 s) — a
//! client can never slow ingest. API reference: `web/API.md`.

use crate::state::{Census, ClusterSnap, HostSnap, Snapshot, State, now_secs};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ganglion_rrd::layout::{self, Series};
use rust_embed::RustEmbed;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;

#[derive(RustEmbed)]
#[folder = "../web/"]
struct Assets;

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
}

/// The router (tests drive it with `oneshot`).
pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
        .route("/api/grid", get(grid))
        .route("/api/cluster/{cluster}", get(cluster))
        .route("/api/host/{cluster}/{host}", get(host))
        .route("/api/search", get(search))
        .route("/api/series", get(series))
        .route("/api/export", get(export))
        .route("/api/graph.png", get(graph_png))
        .route("/metrics", get(metrics))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        // Added after the 30 s layer, so outside it: a full pass over a
        // million files takes a minute or two, and the caller (a script
        // about to read the tree) needs the answer, not a timeout while the
        // pass goes on. It has its own, longer limit.
        .route("/api/flush", post(flush))
        .with_state(app)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

fn bad(message: impl AsRef<str>) -> Response {
    error(StatusCode::BAD_REQUEST, message.as_ref())
}

async fn index() -> Response {
    asset_response("index.html")
}

async fn asset(Path(path): Path<String>) -> Response {
    asset_response(&path)
}

fn asset_response(path: &str) -> Response {
    match Assets::get(path) {
        Some(f) => {
            let mime = match path.rsplit('.').next() {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("svg") => "image/svg+xml",
                _ => "application/octet-stream",
            };
            (
                [
                    (header::CONTENT_TYPE, mime),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                f.data.into_owned(),
            )
                .into_response()
        }
        None => error(StatusCode::NOT_FOUND, "no such asset"),
    }
}

fn summary_json(s: &crate::state::Summary) -> Value {
    json!({
        "hosts_up": s.hosts_up,
        "hosts_down": s.hosts_down,
        "metrics": s.metrics.iter().map(|m| json!({
            "name": m.name, "sum": m.sum, "num": m.num, "units": m.units, "sum_text": m.sum_text(),
        })).collect::<Vec<_>>(),
    })
}

fn host_brief(h: &HostSnap) -> Value {
    let num = |n: &str| {
        h.metrics
            .iter()
            .find(|m| *m.name == *n)
            .and_then(|m| m.number)
    };
    json!({
        "name": h.name, "ip": h.ip, "alive": h.alive, "tn": h.tn, "reported": h.reported,
        "load_one": num("load_one"), "cpu_num": num("cpu_num"), "cpu_idle": num("cpu_idle"),
        "mem_free": num("mem_free"), "mem_total": num("mem_total"),
    })
}

fn cluster_brief(c: &ClusterSnap) -> Value {
    json!({
        "name": c.name, "localtime": c.localtime, "stale": c.stale, "owner": c.owner, "url": c.url,
        "hosts_up": c.summary.hosts_up, "hosts_down": c.summary.hosts_down,
    })
}

async fn grid(AxState(app): AxState<AppState>) -> axum::Json<Value> {
    let snap = app.state.snapshot(now_secs());
    axum::Json(json!({
        "grid": snap.grid_name,
        "authority": snap.authority,
        "localtime": snap.localtime,
        "clusters": snap.clusters.iter().map(cluster_brief).collect::<Vec<_>>(),
        "grids": snap.grids.iter().map(|g| json!({
            "name": g.name, "authority": g.authority, "localtime": g.localtime, "stale": g.stale,
            "hosts_up": g.summary.hosts_up, "hosts_down": g.summary.hosts_down,
        })).collect::<Vec<_>>(),
        "summary": summary_json(&snap.grid_summary()),
    }))
}

#[derive(Deserialize)]
struct ClusterQ {
    /// Adds each host's current value of this metric as `value` (the
    /// dashboard sorts small multiples by it).
    metric: Option<String>,
}

async fn cluster(
    AxState(app): AxState<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ClusterQ>,
) -> Response {
    let snap = app.state.snapshot(now_secs());
    let Some(c) = snap.cluster(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("unknown cluster {name:?}"));
    };
    let mut metrics: Vec<&str> = c
        .hosts
        .iter()
        .flat_map(|h| h.metrics.iter())
        .filter(|m| m.metric_type.is_numeric())
        .map(|m| &*m.name)
        .collect();
    metrics.sort_unstable();
    metrics.dedup();
    let mut v = cluster_brief(c);
    v["hosts"] = c
        .hosts
        .iter()
        .map(|h| {
            let mut b = host_brief(h);
            if let Some(m) = &q.metric {
                b["value"] = h
                    .metrics
                    .iter()
                    .find(|x| *x.name == **m)
                    .and_then(|x| x.number)
                    .filter(|x| x.is_finite())
                    .into();
            }
            b
        })
        .collect::<Vec<_>>()
        .into();
    v["metrics"] = metrics.into();
    v["summary"] = summary_json(&c.summary);
    v.into_response_json()
}

trait IntoJson {
    fn into_response_json(self) -> Response;
}

impl IntoJson for Value {
    fn into_response_json(self) -> Response {
        axum::Json(self).into_response()
    }
}

async fn host(
    AxState(app): AxState<AppState>,
    Path((cluster, host)): Path<(String, String)>,
) -> Response {
    let snap = app.state.snapshot(now_secs());
    let Some(c) = snap.cluster(&cluster) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("unknown cluster {cluster:?}"),
        );
    };
    let Some(h) = c.hosts.iter().find(|h| h.name == host) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("unknown host {host:?} in cluster {cluster:?}"),
        );
    };
    let mut v = host_brief(h);
    v["cluster"] = cluster.into();
    v["location"] = h.location.clone().into();
    v["tags"] = h.tags.clone().into();
    v["gmond_started"] = h.gmond_started.into();
    v["metrics"] = h
        .metrics
        .iter()
        .map(|m| {
            json!({
                "name": m.name, "val": m.val, "value": m.number, "type": m.metric_type.as_str(),
                "units": m.units, "slope": m.slope.as_str(), "tn": m.tn, "tmax": m.tmax, "dmax": m.dmax,
                "group": m.extra("GROUP").unwrap_or("other"), "title": m.extra("TITLE").unwrap_or(&*m.name),
                "desc": m.extra("DESC").unwrap_or(""), "numeric": m.metric_type.is_numeric(),
            })
        })
        .collect::<Vec<_>>()
        .into();
    v.into_response_json()
}

#[derive(Deserialize)]
struct SearchQ {
    q: String,
}

async fn search(AxState(app): AxState<AppState>, Query(q): Query<SearchQ>) -> Response {
    let needle = q.q.to_lowercase();
    if needle.is_empty() || needle.len() > 200 {
        return bad("q must be 1 to 200 characters");
    }
    let snap = app.state.snapshot(now_secs());
    let mut hosts = Vec::new();
    let mut metrics = Vec::new();
    for c in &snap.clusters {
        for h in &c.hosts {
            if h.name.to_lowercase().contains(&needle) || h.ip.contains(&needle) {
                hosts.push(json!({ "cluster": c.name, "host": h.name, "alive": h.alive }));
            }
            for m in &h.metrics {
                if m.name.to_lowercase().contains(&needle) && metrics.len() < 200 {
                    metrics.push(json!({ "cluster": c.name, "host": h.name, "metric": m.name }));
                }
            }
        }
    }
    hosts.truncate(200);
    json!({ "hosts": hosts, "metrics": metrics }).into_response_json()
}

#[derive(Deserialize)]
struct SeriesQ {
    cluster: Option<String>,
    host: Option<String>,
    /// Regex over host names: one series per matching host (aggregate graphs).
    hosts: Option<String>,
    metric: String,
    start: Option<String>,
    end: Option<String>,
    /// Width in pixels: picks the RRA so a year of 1000 hosts stays small.
    points: Option<u64>,
    cf: Option<String>,
    format: Option<String>,
}

/// A small error for helpers (a full `Response` is too big to pass around).
struct ApiError(StatusCode, String);

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

struct Resolved {
    sources: Vec<rrd_export::Source>,
    start: i64,
    end: i64,
    resolution: Option<u64>,
    /// Most rows a series answer may have (the graph's width in pixels).
    points: usize,
    cf: rrd_export::Cf,
}

fn resolve(app: &AppState, snap: &Snapshot, q: &SeriesQ) -> Result<Resolved, ApiError> {
    let cf = match &q.cf {
        None => rrd_export::Cf::Average,
        Some(s) => {
            rrd_export::Cf::parse(s).ok_or_else(|| ApiError::bad(format!("unknown cf {s:?}")))?
        }
    };
    let (start, end) = rrd_export::resolve_time(
        q.start.as_deref().unwrap_or("end-1h"),
        q.end.as_deref().unwrap_or("now"),
    )
    .map_err(|e| ApiError::bad(e.to_string()))?;
    let points = q.points.unwrap_or(600);
    if !(10..=10_000).contains(&points) {
        return Err(ApiError::bad("points must be between 10 and 10000"));
    }
    if q.metric.is_empty() {
        return Err(ApiError::bad("metric is required"));
    }
    let path = |s: &Series| layout::path(&app.rrd_root, s, app.case_sensitive_hostnames);
    let mut sources = Vec::new();
    match (&q.cluster, &q.host, &q.hosts) {
        (None, None, None) => sources.push(Series::Root {
            metric: q.metric.clone(),
        }),
        (Some(c), None, None) => {
            if snap.cluster(c).is_none() && !snap.grids.iter().any(|g| &g.name == c) {
                return Err(ApiError::not_found(format!("unknown cluster {c:?}")));
            }
            sources.push(Series::Summary {
                source: c.clone(),
                metric: q.metric.clone(),
            });
        }
        (Some(c), Some(h), None) => {
            let cl = snap
                .cluster(c)
                .ok_or_else(|| ApiError::not_found(format!("unknown cluster {c:?}")))?;
            if !cl.hosts.iter().any(|x| &x.name == h) {
                return Err(ApiError::not_found(format!("unknown host {h:?}")));
            }
            sources.push(Series::Host {
                cluster: c.clone(),
                host: h.clone(),
                metric: q.metric.clone(),
            });
        }
        (Some(c), None, Some(re)) => {
            let cl = snap
                .cluster(c)
                .ok_or_else(|| ApiError::not_found(format!("unknown cluster {c:?}")))?;
            let re = regex::RegexBuilder::new(re)
                .size_limit(1 << 16)
                .build()
                .map_err(|e| ApiError::bad(format!("bad hosts regex: {e}")))?;
            for h in cl.hosts.iter().filter(|h| re.is_match(&h.name)).take(1000) {
                sources.push(Series::Host {
                    cluster: c.clone(),
                    host: h.name.clone(),
                    metric: q.metric.clone(),
                });
            }
        }
        _ => {
            return Err(ApiError::bad(
                "give cluster (+ host, or + hosts regex), or nothing for the grid summary",
            ));
        }
    }
    let sources: Vec<rrd_export::Source> = sources
        .into_iter()
        .map(|s| rrd_export::Source {
            path: path(&s),
            series: Some(s),
        })
        .filter(|s| s.path.is_file() || app.storage.is_some())
        .collect();
    let resolution = Some(((end - start).max(1) as u64).div_ceil(points).max(1));
    Ok(Resolved {
        sources,
        start,
        end,
        resolution,
        points: points as usize,
        cf,
    })
}

/// Writes cached samples of these files first, so readers never see stale NaN.
async fn flush_for(app: &AppState, sources: &[rrd_export::Source]) {
    if let Some(s) = app.storage.clone() {
        let paths: Vec<PathBuf> = sources.iter().map(|s| s.path.clone()).collect();
        let _ = tokio::task::spawn_blocking(move || s.flush(paths, Duration::from_secs(10))).await;
    }
}

async fn series(AxState(app): AxState<AppState>, Query(q): Query<SeriesQ>) -> Response {
    let snap = app.state.snapshot(now_secs());
    let r = match resolve(&app, &snap, &q) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    flush_for(&app, &r.sources).await;
    let sources: Vec<rrd_export::Source> =
        r.sources.into_iter().filter(|s| s.path.is_file()).collect();
    if sources.is_empty() {
        return json!({ "start": r.start, "end": r.end, "step": 0, "columns": [], "times": [], "values": [] }).into_response_json();
    }
    let req = rrd_export::Request {
        sources,
        start: r.start,
        end: r.end,
        cf: r.cf,
        resolution: r.resolution,
        window_rows: None,
    };
    let points = r.points;
    let out = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let mut j = rrd_export::join(&req, |_, _| {}).map_err(|e| e.to_string())?;
        let (times, step, cols) = j.decimated(points).map_err(|e| e.to_string())?;
        Ok(series_json(&j, &times, step, &cols))
    })
    .await;
    match out {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The series document, written straight to bytes: a 1000-host day is about
/// a million numbers, and building a `serde_json::Value` tree of them first
/// would cost more than reading the RRD files.
fn series_json(j: &rrd_export::Joined, times: &[i64], step: u64, cols: &[Vec<f64>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + times.len() * 12 * (cols.len() + 1));
    let mut ib = itoa::Buffer::new();
    let mut rb = ryu::Buffer::new();
    let start = times.first().map_or(j.first, |t| t - step as i64);
    out.extend_from_slice(b"{\"start\":");
    out.extend_from_slice(ib.format(start).as_bytes());
    out.extend_from_slice(b",\"end\":");
    out.extend_from_slice(ib.format(j.end).as_bytes());
    out.extend_from_slice(b",\"step\":");
    out.extend_from_slice(ib.format(step).as_bytes());
    out.extend_from_slice(b",\"columns\":");
    let columns: Vec<Value> = j
        .columns
        .iter()
        .map(|c| {
            let host = match &c.series {
                Some(Series::Host { host, .. }) => Some(host.as_str()),
                _ => None,
            };
            json!({ "name": c.name, "ds": c.ds, "host": host })
        })
        .collect();
    out.extend_from_slice(Value::from(columns).to_string().as_bytes());
    out.extend_from_slice(b",\"times\":[");
    for (i, t) in times.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(ib.format(*t).as_bytes());
    }
    out.extend_from_slice(b"],\"values\":[");
    for (c, col) in cols.iter().enumerate() {
        out.extend_from_slice(if c > 0 { b",[" } else { b"[" });
        for (i, v) in col.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Charts draw gaps for null; ±Inf cannot be plotted either.
            if v.is_finite() {
                out.extend_from_slice(trim_float(rb.format_finite(*v)).as_bytes());
            } else {
                out.extend_from_slice(b"null");
            }
        }
        out.push(b']');
    }
    out.extend_from_slice(b"]}");
    out
}

/// `1.0` → `1`: ryu always writes a fraction; JSON readers do not need it.
fn trim_float(s: &str) -> &str {
    s.strip_suffix(".0").unwrap_or(s)
}

/// Downloads of the shown data, through the same library as the CLI.
async fn export(AxState(app): AxState<AppState>, Query(q): Query<SeriesQ>) -> Response {
    let snap = app.state.snapshot(now_secs());
    let r = match resolve(&app, &snap, &q) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let (format, mime, ext) = match q.format.as_deref().unwrap_or("csv") {
        "csv" => (rrd_export::Format::Csv, "text/csv; charset=utf-8", "csv"),
        "json" => (rrd_export::Format::Json, "application/json", "json"),
        "ndjson" => (rrd_export::Format::Ndjson, "application/x-ndjson", "ndjson"),
        other => return bad(format!("unknown format {other:?} (csv, json, ndjson)")),
    };
    flush_for(&app, &r.sources).await;
    let sources: Vec<rrd_export::Source> =
        r.sources.into_iter().filter(|s| s.path.is_file()).collect();
    if sources.is_empty() {
        return error(StatusCode::NOT_FOUND, "no RRD files for that selection yet");
    }
    let req = rrd_export::Request {
        sources,
        start: r.start,
        end: r.end,
        cf: r.cf,
        resolution: r.resolution,
        window_rows: None,
    };
    let opts = rrd_export::Options {
        format,
        ..rrd_export::Options::default()
    };
    let body = tokio::task::spawn_blocking(move || {
        let mut v = Vec::new();
        rrd_export::export(&req, &opts, &mut v, |_, _| {})
            .map(|_| v)
            .map_err(|e| e.to_string())
    })
    .await;
    match body {
        Ok(Ok(v)) => (
            [
                (header::CONTENT_TYPE, mime.to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"{}.{ext}\"",
                        q.metric.replace(['"', '/', '\\'], "_")
                    ),
                ),
            ],
            Body::from(v),
        )
            .into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// A PNG for mails and wikis. librrd's graph code is not thread-safe, so the
/// image is drawn by an `rrdtool graph` subprocess, never in-process.
async fn graph_png(AxState(app): AxState<AppState>, Query(q): Query<SeriesQ>) -> Response {
    let snap = app.state.snapshot(now_secs());
    let r = match resolve(&app, &snap, &q) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    flush_for(&app, &r.sources).await;
    let Some(src) = r.sources.into_iter().find(|s| s.path.is_file()) else {
        return error(StatusCode::NOT_FOUND, "no RRD file for that selection yet");
    };
    let width = q.points.unwrap_or(600).clamp(100, 2000).to_string();
    let title = match &src.series {
        Some(Series::Host {
            cluster,
            host,
            metric,
        }) => format!("{metric} — {host} ({cluster})"),
        Some(Series::Summary { source, metric }) => format!("{metric} — {source}"),
        _ => q.metric.clone(),
    };
    let file = src.path.display().to_string().replace(':', "\\:");
    let mut cmd = tokio::process::Command::new("rrdtool");
    cmd.args([
        "graph",
        "-",
        "--imgformat",
        "PNG",
        "--width",
        &width,
        "--height",
        "200",
    ])
    .args([
        "--start",
        &r.start.to_string(),
        "--end",
        &r.end.to_string(),
        "--title",
        &title,
    ])
    .arg(format!("DEF:v={file}:sum:{}", r.cf.as_str()))
    .arg("LINE1:v#2563eb:value")
    .kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(20), cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => {
            ([(header::CONTENT_TYPE, "image/png")], out.stdout).into_response()
        }
        Ok(Ok(out)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            String::from_utf8_lossy(&out.stderr).trim(),
        ),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot run rrdtool: {e}"),
        ),
        Err(_) => error(StatusCode::GATEWAY_TIMEOUT, "rrdtool graph timed out"),
    }
}

async fn metrics(AxState(app): AxState<AppState>, headers: axum::http::HeaderMap) -> Response {
    let mut counters = app.state.counters().list();
    let mut labelled = Vec::new();
    if let Some(s) = &app.storage {
        counters.extend(s.counters.list());
        labelled.extend(s.counters.labelled());
    }
    let census = app.state.census(now_secs());
    let per_cluster = |f: &dyn Fn(&Census) -> usize| {
        census
            .iter()
            .map(|c| (c.cluster.clone(), f(c) as i64))
            .collect::<Vec<_>>()
    };
    let gauges = vec![
        (
            "ganglion_hosts_up",
            "Hosts alive (TN < 4 x TMAX) per cluster",
            per_cluster(&|c| c.hosts_up as usize),
        ),
        (
            "ganglion_hosts_down",
            "Hosts not heard from for 4 x TMAX per cluster",
            per_cluster(&|c| c.hosts_down as usize),
        ),
        (
            "ganglion_metrics",
            "Metrics held per cluster",
            per_cluster(&|c| c.metrics),
        ),
    ];
    // OpenMetrics when the scraper asks for it (Prometheus does), else the
    // classic text format.
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let text = crate::telemetry::Exposition {
        counters,
        labelled,
        gauges,
    }
    .render(openmetrics);
    let ctype = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    ([(header::CONTENT_TYPE, ctype)], text).into_response()
}

/// How long `POST /api/flush` waits for the writer's pass over every file.
const FULL_FLUSH_WAIT: Duration = Duration::from_secs(600);

/// `POST /api/flush`: write every cached sample to disk now (what readers such as
/// `rrd-export` call before reading the tree of a live aggregator). Answers
/// when the pass is done (up to [`FULL_FLUSH_WAIT`]).
async fn flush(AxState(app): AxState<AppState>) -> Response {
    let Some(s) = app.storage.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "RRD storage is off (write_rrds = false)",
        );
    };
    // One waiting thread at a time: more callers queue here (asynchronously)
    // instead of each holding a blocking thread, which polling and sampling
    // need, for up to FULL_FLUSH_WAIT. Their requests would be merged into
    // one pass by the writer anyway.
    static GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let _turn = GATE.acquire().await;
    let ok = tokio::task::spawn_blocking(move || s.flush(Vec::new(), FULL_FLUSH_WAIT))
        .await
        .unwrap_or(false);
    if ok {
        json!({ "flushed": true }).into_response_json()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "the RRD writer did not finish within {} s; the pass goes on in the background",
                FULL_FLUSH_WAIT.as_secs()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ClusterInfo, Limits};
    use crate::telemetry::Counters;
    use axum::http::Request;
    use ganglion_proto::MetricMeta;
    use ganglion_proto::xdr::{Message, MetadataMsg, MetricId, Value as XValue, ValueMsg};
    use tower::ServiceExt;

    fn app() -> (Router, tempfile::TempDir) {
        let state = Arc::new(State::new(
            "g".into(),
            "http://x/".into(),
            vec![ClusterInfo {
                name: "c1".into(),
                owner: "o".into(),
                latlong: "l".into(),
                url: "u".into(),
                host_tmax: 20,
                host_dmax: 0,
                trust_packet_hostname: false,
            }],
            Limits {
                max_hosts: 10,
                max_metrics: 10,
                max_string_bytes: 100,
            },
            Arc::new(Counters::default()),
        ));
        let id = MetricId {
            host: "h".into(),
            name: "load_one".into(),
            spoof: false,
        };
        let src = "10.0.0.1:1".parse().unwrap();
        let now = now_secs();
        state.apply(
            0,
            src,
            Some("node1"),
            Message::Metadata(MetadataMsg {
                id: id.clone(),
                meta: MetricMeta {
                    type_name: "float".into(),
                    name: "load_one".into(),
                    units: " ".into(),
                    slope: 3,
                    tmax: 70,
                    dmax: 0,
                    extra: vec![("GROUP".into(), "load".into())],
                },
            }),
            now,
        );
        state.apply(
            0,
            src,
            None,
            Message::Value(ValueMsg {
                id,
                fmt: "%.2f".into(),
                value: XValue::Float(0.5),
            }),
            now,
        );
        let dir = tempfile::tempdir().unwrap();
        let a = AppState {
            state,
            storage: None,
            rrd_root: dir.path().to_path_buf(),
            case_sensitive_hostnames: false,
        };
        (router(a), dir)
    }

    async fn get(r: &Router, uri: &str) -> (StatusCode, Value) {
        let resp = r
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn api_answers_and_rejects_bad_parameters() {
        let (r, _dir) = app();
        let (s, v) = get(&r, "/api/grid").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["clusters"][0]["name"], "c1");
        assert_eq!(v["summary"]["hosts_up"], 1);
        let (s, v) = get(&r, "/api/cluster/c1").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["hosts"][0]["name"], "node1");
        assert_eq!(v["hosts"][0]["load_one"], 0.5);
        let (s, v) = get(&r, "/api/host/c1/node1").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["metrics"][0]["group"], "load");
        assert_eq!(v["metrics"][0]["val"], "0.50");
        let (s, v) = get(&r, "/api/search?q=NODE").await;
        assert_eq!(
            (s, v["hosts"][0]["host"].clone()),
            (StatusCode::OK, "node1".into())
        );

        for (uri, want) in [
            ("/api/cluster/nope", StatusCode::NOT_FOUND),
            ("/api/host/c1/ghost", StatusCode::NOT_FOUND),
            (
                "/api/series?cluster=c1&host=ghost&metric=load_one",
                StatusCode::NOT_FOUND,
            ),
            (
                "/api/series?cluster=c1&host=node1&metric=load_one&start=now&end=now-1d",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/api/series?cluster=c1&host=node1&metric=load_one&points=99999999",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/api/series?cluster=c1&host=node1&metric=load_one&cf=MEDIAN",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/api/series?cluster=c1&hosts=(&metric=load_one",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/api/series?host=node1&metric=load_one",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/api/export?cluster=c1&host=node1&metric=load_one&format=xml",
                StatusCode::BAD_REQUEST,
            ),
            ("/api/search?q=", StatusCode::BAD_REQUEST),
        ] {
            let (s, v) = get(&r, uri).await;
            assert_eq!(s, want, "{uri}: {v}");
            assert!(v["error"].is_string(), "{uri}: JSON error body");
        }
        // No RRD yet: an empty series, not an error.
        let (s, v) = get(&r, "/api/series?cluster=c1&host=node1&metric=load_one").await;
        assert_eq!(
            (s, v["times"].as_array().map(Vec::len)),
            (StatusCode::OK, Some(0))
        );
    }

    #[tokio::test]
    async fn series_is_decimated_to_points_and_names_hosts() {
        let (r, dir) = app();
        let file = layout::path(
            dir.path(),
            &Series::Host {
                cluster: "c1".into(),
                host: "node1".into(),
                metric: "load_one".into(),
            },
            false,
        );
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let last = (now_secs() as i64 / 15 - 1) * 15;
        let first = last - 7200;
        let defs = ["DS:sum:GAUGE:120:U:U", "RRA:AVERAGE:0.5:1:1000"].map(String::from);
        ganglion_rrd::create(&file, 15, first - 15, &defs).unwrap();
        let ups: Vec<String> = (0..=480)
            .map(|k| format!("{}:{k}", first + k * 15))
            .collect();
        ganglion_rrd::update(&file, &ups).unwrap();

        let uri = format!(
            "/api/series?cluster=c1&hosts=node&metric=load_one&start={}&end={last}&points=100",
            first
        );
        let (s, v) = get(&r, &uri).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let times = v["times"].as_array().unwrap();
        assert!(
            times.len() <= 100 && times.len() >= 90,
            "{} rows",
            times.len()
        );
        assert_eq!(v["step"], 75, "480 rows of 15 s merged 5 by 5");
        assert_eq!(v["columns"][0]["host"], "node1");
        // Each merged row is the average of its five 15 s rows, ending on a
        // multiple of 75 s: the value k at time first + 15k averages to
        // the middle member's k.
        let t = times[10].as_i64().unwrap();
        assert_eq!(t % 75, 0);
        let want = ((t - 30 - first) / 15) as f64;
        assert_eq!(v["values"][0][10].as_f64(), Some(want));

        let (s, v) = get(&r, "/api/cluster/c1?metric=load_one").await;
        assert_eq!(
            (s, v["hosts"][0]["value"].as_f64()),
            (StatusCode::OK, Some(0.5))
        );
    }

    #[tokio::test]
    async fn metrics_in_prometheus_text_and_openmetrics() {
        let (r, _dir) = app();
        let fetch = |accept: &'static str| {
            let r = r.clone();
            async move {
                let resp = r
                    .oneshot(
                        Request::get("/metrics")
                            .header("accept", accept)
                            .body(Body::empty())
                            .unwrap(),
                    )
                    .await
                    .unwrap();
                let ctype = resp.headers()[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .to_string();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (ctype, String::from_utf8(body.to_vec()).unwrap())
            }
        };
        let (ctype, text) = fetch("text/plain").await;
        assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
        assert!(
            text.contains("# TYPE ganglion_values_received_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("\nganglion_values_received_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ganglion_hosts_up{cluster=\"c1\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        let (ctype, text) = fetch("application/openmetrics-text; version=1.0.0").await;
        assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
        assert!(
            text.contains("# TYPE ganglion_values_received counter\n"),
            "{text}"
        );
        assert!(
            text.contains("\nganglion_values_received_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ganglion_metrics{cluster=\"c1\"} 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[tokio::test]
    async fn assets_are_embedded() {
        let (r, _dir) = app();
        let resp = r
            .clone()
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = r
            .oneshot(
                Request::get("/assets/vendor/uPlot.iife.min.js")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}

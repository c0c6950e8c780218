//! `/api/series`: one or many series, decimated to `points` rows while the
//! files are read, so memory is O(points × columns) whatever the range.

use super::select::{Resolved, SeriesQ, resolve};
use super::{AppState, IntoJson, error, read_failed};
use crate::state::now_secs;
use axum::extract::{Query, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ganglion_rrd::layout::Series;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// Values the readers of one request hold at once (8 bytes each): long
/// ranges are read in windows of this many values over all files.
const READ_WINDOW_VALUES: usize = 1 << 20;

/// Rows per file per read window for `files` files.
pub(super) fn window_rows(files: usize) -> usize {
    (READ_WINDOW_VALUES / files.max(1)).max(256)
}

/// The fields the handlers use, flattened from [`Resolved`].
pub(super) struct Flat {
    pub(super) sources: Vec<rrd_export::Source>,
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) resolution: Option<u64>,
    pub(super) points: usize,
    pub(super) cf: rrd_export::Cf,
}

impl From<Resolved> for Flat {
    fn from(r: Resolved) -> Flat {
        Flat {
            sources: r.sources,
            start: r.params.start,
            end: r.params.end,
            resolution: Some(r.params.resolution),
            points: r.params.points,
            cf: r.params.cf,
        }
    }
}

/// Writes cached samples of these files first, so readers never see stale NaN.
pub(super) async fn flush_for(app: &AppState, sources: &[rrd_export::Source]) {
    if let Some(s) = app.storage.clone() {
        let paths: Vec<PathBuf> = sources.iter().map(|s| s.path.clone()).collect();
        let _ = tokio::task::spawn_blocking(move || s.flush(paths, Duration::from_secs(10))).await;
    }
}

pub(super) async fn series(AxState(app): AxState<AppState>, Query(q): Query<SeriesQ>) -> Response {
    let snap = app.state.snapshot(now_secs());
    let r = match resolve(&app, &snap, &q) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    drop(snap);
    let permit = match app.limits.heavy().await {
        Ok(p) => p,
        Err(busy) => return busy,
    };
    flush_for(&app, &r.sources).await;
    let r = Flat::from(r);
    let sources: Vec<rrd_export::Source> =
        r.sources.into_iter().filter(|s| s.path.is_file()).collect();
    let n_sources = sources.len();
    if sources.is_empty() {
        return json!({ "start": r.start, "end": r.end, "step": 0, "columns": [], "times": [], "values": [] }).into_response_json();
    }
    let req = rrd_export::Request {
        sources,
        start: r.start,
        end: r.end,
        cf: r.cf,
        resolution: r.resolution,
        window_rows: Some(window_rows(n_sources)),
    };
    let points = r.points;
    let out = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let _permit = permit;
        let mut j = rrd_export::join(&req, |_, _| {}).map_err(|e| e.to_string())?;
        let (times, step, cols) = j.decimated(points).map_err(|e| e.to_string())?;
        Ok(series_json(&j, &times, step, &cols))
    })
    .await;
    match out {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Err(e)) => read_failed(&e),
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

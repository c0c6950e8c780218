//! `/api/graph.png`: a PNG for mails and wikis, drawn by an `rrdtool graph`
//! subprocess (at most `http.max_graph_processes` at once).

use super::select::{SeriesQ, resolve};
use super::series::{Flat, flush_for};
use super::{AppState, error};
use crate::state::now_secs;
use axum::extract::{Query, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ganglion_rrd::layout::Series;
use std::time::Duration;

/// A PNG for mails and wikis. librrd's graph code is not thread-safe, so the
/// image is drawn by an `rrdtool graph` subprocess, never in-process.
pub(super) async fn graph_png(
    AxState(app): AxState<AppState>,
    Query(q): Query<SeriesQ>,
) -> Response {
    let snap = app.state.snapshot(now_secs());
    let r = match resolve(&app, &snap, &q) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    drop(snap);
    let r = Flat::from(r);
    // One slot per subprocess: each is a process, descriptors and memory.
    let _slot = match app.limits.graph().await {
        Ok(p) => p,
        Err(busy) => return busy,
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

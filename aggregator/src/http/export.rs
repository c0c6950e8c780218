//! `/api/export`: downloads of the shown data, through the same library as
//! the CLI, streamed: a blocking task writes chunks into a small bounded
//! channel that the response body drains, so memory stays a few chunks
//! whatever the range. A client that stops reading for [`SEND_TIMEOUT`], or
//! an export still running after [`EXPORT_DEADLINE`], ends with a cut body
//! (and frees its permit).

use super::select::{SeriesQ, check_export_rows, resolve};
use super::series::{Flat, flush_for, window_rows};
use super::{AppState, bad, error, read_failed};
use crate::state::now_secs;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;

/// Chunks (about 60 KiB each) buffered between the export and the client.
const CHANNEL_CHUNKS: usize = 4;

/// A client that takes no chunk for this long ends its export.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest an export may stream: it holds a heavy-request permit, so a
/// client reading a trickle cannot keep it for hours.
const EXPORT_DEADLINE: Duration = Duration::from_secs(600);

type Chunk = Result<Bytes, io::Error>;

/// `io::Write` into the body channel, from a blocking thread.
struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    rt: tokio::runtime::Handle,
    deadline: std::time::Instant,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if std::time::Instant::now() >= self.deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the export took longer than {} s",
                    EXPORT_DEADLINE.as_secs()
                ),
            ));
        }
        let chunk = Bytes::copy_from_slice(buf);
        let sent = self
            .rt
            .block_on(tokio::time::timeout(SEND_TIMEOUT, self.tx.send(Ok(chunk))));
        match sent {
            Ok(Ok(())) => Ok(buf.len()),
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client went away",
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `attachment` with an ASCII `filename` and the exact name as RFC 6266's
/// `filename*` (any metric name gives a valid header).
fn content_disposition(metric: &str, ext: &str) -> String {
    let ascii: String = metric
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '/' | '\\' | ';' | '%') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in format!("{metric}.{ext}").bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}.{ext}\"; filename*=UTF-8''{encoded}")
}

pub(super) async fn export(AxState(app): AxState<AppState>, Query(q): Query<SeriesQ>) -> Response {
    let snap = app.state.snapshot(now_secs());
    let r = match resolve(&app, &snap, &q) {
        Ok(r) => Flat::from(r),
        Err(e) => return e.into_response(),
    };
    drop(snap);
    let (format, mime, ext) = match q.format.as_deref().unwrap_or("csv") {
        "csv" => (rrd_export::Format::Csv, "text/csv; charset=utf-8", "csv"),
        "json" => (rrd_export::Format::Json, "application/json", "json"),
        "ndjson" => (rrd_export::Format::Ndjson, "application/x-ndjson", "ndjson"),
        other => return bad(format!("unknown format {other:?} (csv, json, ndjson)")),
    };
    let permit = match app.limits.heavy().await {
        Ok(p) => p,
        Err(busy) => return busy,
    };
    flush_for(&app, &r.sources).await;
    let sources: Vec<rrd_export::Source> =
        r.sources.into_iter().filter(|s| s.path.is_file()).collect();
    if sources.is_empty() {
        return error(StatusCode::NOT_FOUND, "no RRD files for that selection yet");
    }
    let req = rrd_export::Request {
        window_rows: Some(window_rows(sources.len())),
        sources,
        start: r.start,
        end: r.end,
        cf: r.cf,
        resolution: r.resolution,
    };
    // Open and align first, so a cap or a librrd error is a proper status.
    let joined = tokio::task::spawn_blocking(move || rrd_export::join(&req, |_, _| {})).await;
    let joined = match joined {
        Ok(Ok(j)) => j,
        Ok(Err(e)) => return read_failed(&e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    if let Err(e) = check_export_rows(joined.rows(), joined.step, &app.limits.caps) {
        app.limits.counters.over_cap.fetch_add(1, Ordering::Relaxed);
        return e.into_response();
    }
    let opts = rrd_export::Options {
        format,
        ..rrd_export::Options::default()
    };
    let (tx, rx) = mpsc::channel::<Chunk>(CHANNEL_CHUNKS);
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut w = ChannelWriter {
            tx,
            rt,
            deadline: std::time::Instant::now() + EXPORT_DEADLINE,
        };
        if let Err(e) = rrd_export::export_joined(joined, &opts, &mut w) {
            // Ends the body with an error: the client sees a cut download,
            // never a silently short one.
            let msg = e.to_string();
            tracing::debug!(error = %msg, "export ended early");
            let _ = w.tx.blocking_send(Err(io::Error::other(msg)));
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    (
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (
                header::CONTENT_DISPOSITION,
                content_disposition(&q.metric, ext),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn any_metric_name_makes_a_valid_header() {
        for m in [
            "load_one",
            "room temp",
            "a\"b/c\\d",
            "x\ny",
            "température;%",
        ] {
            let v = content_disposition(m, "csv");
            assert!(
                axum::http::HeaderValue::from_str(&v).is_ok(),
                "{m:?} → {v:?}"
            );
            assert!(v.starts_with("attachment; filename=\""), "{v}");
        }
        assert_eq!(
            content_disposition("room temp", "csv"),
            "attachment; filename=\"room temp.csv\"; filename*=UTF-8''room%20temp.csv"
        );
    }
}

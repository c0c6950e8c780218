//! `GET /metrics/hosts`: every numeric metric of every alive host, in the
//! Prometheus text format or OpenMetrics (negotiated like `/metrics`), so a
//! Prometheus can scrape a whole Ganglia grid through one target; and
//! `GET /api/forwards`, the forwards' status for the dashboard.
//!
//! Names are `ganglia_` + the gmond name with every byte outside
//! `[a-zA-Z0-9_]` as `_` (the rule remote write uses too), labels
//! `cluster` and `host`, every family a gauge (gmond does not say which
//! metrics are counters in a way a scraper could rely on) except names
//! ending in `_total`, which are untyped (`unknown` in OpenMetrics) since
//! only counters may carry that suffix; HELP = the gmond name, units and
//! description. Rendered from the shared snapshot on the
//! blocking pool and streamed in 64 KiB chunks: memory is one index entry
//! per sample plus a chunk, never the whole text; at most
//! `http.max_heavy_requests` renders run at once (else `503`).

use super::AppState;
use crate::forward::remote_write::metric_name;
use crate::forward::scheduler::numeric;
use crate::state::{Snapshot, now_secs};
use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::fmt::Write as _;

/// Bytes rendered before a chunk is handed to the connection.
const CHUNK: usize = 64 * 1024;

pub(super) async fn forwards(AxState(app): AxState<AppState>) -> Response {
    axum::Json(app.forwards.status()).into_response()
}

pub(super) async fn hosts_metrics(
    AxState(app): AxState<AppState>,
    headers: axum::http::HeaderMap,
) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    // A heavy request like /api/export: at most http.max_heavy_requests
    // renders at once (each holds an index of every sample), else 503.
    let permit = match app.limits.heavy().await {
        Ok(p) => p,
        Err(busy) => return busy,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let state = app.state.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let snap = state.snapshot(now_secs());
        render(&snap, openmetrics, &mut |chunk| {
            tx.blocking_send(chunk).is_ok()
        });
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    let ctype = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    ([(header::CONTENT_TYPE, ctype)], Body::from_stream(stream)).into_response()
}

fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            // OpenMetrics escapes quotes in HELP too; 0.0.4 does not need it.
            '"' => out.push('\''),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
}

fn number(out: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        out.push_str(ryu::Buffer::new().format(v));
    }
}

/// Renders `snap`, calling `emit` with each chunk; stops when `emit`
/// returns false (the client went away).
pub fn render(snap: &Snapshot, openmetrics: bool, emit: &mut dyn FnMut(Bytes) -> bool) {
    // Index: (family, cluster, host, metric) for every sample shown.
    let mut families: HashMap<String, u32> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut index: Vec<(u32, u32, u32, u32)> = Vec::new();
    let mut name = String::new();
    for (ci, c) in snap.clusters.iter().enumerate() {
        if c.stale {
            continue;
        }
        for (hi, h) in c.hosts.iter().enumerate().filter(|(_, h)| h.alive) {
            for (mi, m) in h.metrics.iter().enumerate() {
                if numeric(m).is_none() {
                    continue;
                }
                name.clear();
                metric_name(&mut name, "ganglia_", &m.name);
                let f = match families.get(&name) {
                    Some(f) => *f,
                    None => {
                        let f = names.len() as u32;
                        names.push(name.clone());
                        families.insert(name.clone(), f);
                        f
                    }
                };
                index.push((f, ci as u32, hi as u32, mi as u32));
            }
        }
    }
    drop(families);
    let mut order: Vec<u32> = (0..names.len() as u32).collect();
    order.sort_unstable_by(|a, b| names[*a as usize].cmp(&names[*b as usize]));
    let mut rank = vec![0u32; names.len()];
    for (r, f) in order.iter().enumerate() {
        rank[*f as usize] = r as u32;
    }
    index.sort_unstable_by_key(|(f, c, h, m)| (rank[*f as usize], *c, *h, *m));
    // Two gmond names can sanitise to one (`a.b`, `a_b`): one sample per
    // host and family, the first.
    index.dedup_by_key(|(f, c, h, _)| (*f, *c, *h));
    let mut out = String::with_capacity(CHUNK + 1024);
    let mut current = u32::MAX;
    for (f, ci, hi, mi) in index {
        let c = &snap.clusters[ci as usize];
        let h = &c.hosts[hi as usize];
        let m = &h.metrics[mi as usize];
        let family = &names[f as usize];
        if f != current {
            current = f;
            let _ = write!(out, "# HELP {family} Ganglia metric ");
            escape_help(&mut out, &m.name);
            let units = m.units.trim();
            if !units.is_empty() {
                out.push_str(" (");
                escape_help(&mut out, units);
                out.push(')');
            }
            if let Some(d) = m.extra("DESC").filter(|d| !d.trim().is_empty()) {
                out.push_str(": ");
                escape_help(&mut out, d.trim());
            }
            // Gauges all, except that gmond names ending in `_total`
            // (mem_total, disk_total, proc_total…) are not counters and a
            // gauge may not carry the counter suffix: those are untyped.
            let kind = match (family.ends_with("_total"), openmetrics) {
                (false, _) => "gauge",
                (true, true) => "unknown",
                (true, false) => "untyped",
            };
            let _ = writeln!(out, "\n# TYPE {family} {kind}");
        }
        out.push_str(family);
        out.push_str("{cluster=\"");
        escape_label(&mut out, &c.name);
        out.push_str("\",host=\"");
        escape_label(&mut out, &h.name);
        out.push_str("\"} ");
        number(&mut out, numeric(m).unwrap_or(0.0));
        out.push('\n');
        if out.len() >= CHUNK && !emit(Bytes::from(std::mem::take(&mut out))) {
            return;
        }
    }
    if openmetrics {
        out.push_str("# EOF\n");
    }
    if !out.is_empty() {
        emit(Bytes::from(out));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_contiguous_and_strings_left_out() {
        let s = crate::forward::tests::state();
        let snap = s.snapshot(now_secs());
        let mut text = String::new();
        render(&snap, true, &mut |b| {
            text.push_str(std::str::from_utf8(&b).unwrap());
            true
        });
        assert_eq!(
            text,
            "# HELP ganglia_disk_free Ganglia metric disk free\n\
             # TYPE ganglia_disk_free gauge\n\
             ganglia_disk_free{cluster=\"my cluster\",host=\"Node1.example.com\"} 12\n\
             # HELP ganglia_load_one Ganglia metric load_one\n\
             # TYPE ganglia_load_one gauge\n\
             ganglia_load_one{cluster=\"my cluster\",host=\"Node1.example.com\"} 0.42\n\
             # EOF\n"
        );
    }

    #[test]
    fn names_ending_in_total_are_untyped() {
        let s = crate::forward::tests::state();
        let now = now_secs();
        add_metric(&s, "mem_total", now);
        let snap = s.snapshot(now);
        for (om, kind) in [(true, "unknown"), (false, "untyped")] {
            let mut text = String::new();
            render(&snap, om, &mut |b| {
                text.push_str(std::str::from_utf8(&b).unwrap());
                true
            });
            assert!(
                text.contains(&format!("# TYPE ganglia_mem_total {kind}\n")),
                "{text}"
            );
            assert!(text.contains("# TYPE ganglia_load_one gauge\n"), "{text}");
        }
    }

    /// Hostile host and metric names, units and descriptions: every line
    /// is a comment or one sample whose labels read back as the names.
    #[test]
    fn hostile_names_keep_the_format() {
        let s = crate::forward::tests::state_sized("my \"cluster\"\n\\ <&>", 1000);
        let now = now_secs();
        let names = crate::hostile::names();
        for (i, n) in names.iter().enumerate() {
            add_metric_on(&s, Some(i), n, n, n, now);
        }
        let snap = s.snapshot(now);
        for om in [true, false] {
            let mut text = String::new();
            render(&snap, om, &mut |b| {
                text.push_str(std::str::from_utf8(&b).unwrap());
                true
            });
            let mut hosts = std::collections::HashSet::new();
            for l in text.lines() {
                if l.starts_with("# HELP ganglia_") || l.starts_with("# TYPE ganglia_") {
                    continue;
                }
                if l == "# EOF" {
                    assert!(om);
                    continue;
                }
                let (name, rest) = l.split_once('{').expect(l);
                assert!(name.starts_with("ganglia_"), "{l:?}");
                assert!(
                    name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                    "{l:?}"
                );
                let rest = rest.strip_prefix("cluster=\"").expect(l);
                let (_, rest) = crate::hostile::label_value(rest).expect(l);
                let rest = rest.strip_prefix(",host=\"").expect(l);
                let (host, rest) = crate::hostile::label_value(rest).expect(l);
                let value = rest.strip_prefix("} ").expect(l);
                assert!(value.parse::<f64>().is_ok(), "{l:?}");
                hosts.insert(host);
            }
            // Every hostile host the state took is shown, under its name.
            for h in snap.clusters.iter().flat_map(|c| &c.hosts) {
                assert!(hosts.contains(&*h.name), "{:?} missing", h.name);
            }
            let n: usize = snap.clusters.iter().map(|c| c.hosts.len()).sum();
            assert!(
                hosts.len() > names.len() / 2,
                "{} of {n}: {hosts:?}",
                hosts.len()
            );
        }
    }

    /// Adds a uint32 metric `name` = 1024 to the test state's host.
    fn add_metric(s: &crate::state::State, name: &str, now: u64) {
        add_metric_on(s, None, "Node1.example.com", name, "KB", now);
    }

    /// Adds a uint32 metric `name` (units and description `units`) = 1024
    /// to host `host`, spoofed as `10.9.x.y:host` when `key` is given.
    fn add_metric_on(
        s: &crate::state::State,
        key: Option<usize>,
        host: &str,
        name: &str,
        units: &str,
        now: u64,
    ) {
        use ganglion_proto::MetricMeta;
        use ganglion_proto::xdr::{Message, MetadataMsg, MetricId, Value, ValueMsg};
        let id = match key {
            Some(i) => MetricId {
                host: format!("10.9.{}.{}:{host}", i / 256, i % 256),
                name: name.into(),
                spoof: true,
            },
            None => MetricId {
                host: "h".into(),
                name: name.into(),
                spoof: false,
            },
        };
        let src = "10.0.0.1:1".parse().unwrap();
        s.apply(
            0,
            src,
            Some(host),
            Message::Metadata(MetadataMsg {
                id: id.clone(),
                meta: MetricMeta {
                    type_name: "uint32".into(),
                    name: name.into(),
                    units: units.into(),
                    slope: 0,
                    tmax: 70,
                    dmax: 0,
                    extra: vec![("DESC".into(), units.into())],
                },
            }),
            now,
        );
        s.apply(
            0,
            src,
            Some(host),
            Message::Value(ValueMsg {
                id,
                fmt: "%u".into(),
                value: Value::UInt(1024),
            }),
            now,
        );
    }
}

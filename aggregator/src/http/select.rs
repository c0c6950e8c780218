//! What a series/export/graph query asks for: parameters checked against
//! the caps ([`params`], [`shape`] — pure, table-tested), then resolved to
//! RRD files against the snapshot ([`resolve`]).

use super::{ApiError, AppState};
use crate::state::Snapshot;
use ganglion_rrd::layout::{self, Series};
use serde::Deserialize;

/// The query string of `/api/series`, `/api/export` and `/api/graph.png`.
#[derive(Debug, Default, Deserialize)]
pub struct SeriesQ {
    /// Cluster (or grid) name.
    pub cluster: Option<String>,
    /// One host.
    pub host: Option<String>,
    /// Regex over host names: one series per matching host (aggregate graphs).
    pub hosts: Option<String>,
    /// Metric name.
    pub metric: String,
    /// Start (rrdtool AT-style or RFC 3339); default `end-1h`.
    pub start: Option<String>,
    /// End; default `now`.
    pub end: Option<String>,
    /// Width in pixels: picks the RRA so a year of 1000 hosts stays small.
    pub points: Option<u64>,
    /// Consolidation function.
    pub cf: Option<String>,
    /// Export format.
    pub format: Option<String>,
}

/// Caps on one answer (`[http]` keys).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// `http.max_series_columns`.
    pub max_columns: usize,
    /// `http.max_series_rows`: most `points`.
    pub max_rows: usize,
    /// `http.max_export_rows`: most rows an export writes.
    pub max_export_rows: usize,
}

/// Checked scalar parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Consolidation function.
    pub cf: rrd_export::Cf,
    /// Start (epoch).
    pub start: i64,
    /// End (epoch).
    pub end: i64,
    /// Most rows a series answer may have (the graph's width in pixels).
    pub points: usize,
    /// Seconds per point, for the RRA choice.
    pub resolution: u64,
}

/// Which series the query names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape<'a> {
    /// The grid summary (no cluster).
    Root,
    /// A cluster's (or grid's) summary.
    Summary(&'a str),
    /// One host.
    Host(&'a str, &'a str),
    /// Hosts of a cluster matching a regex.
    Hosts(&'a str, &'a str),
}

/// Checks cf, times and points.
pub fn params(q: &SeriesQ, caps: &Caps) -> Result<Params, ApiError> {
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
    let points = q.points.unwrap_or(600.min(caps.max_rows as u64));
    if points < 10 || points > caps.max_rows as u64 {
        return Err(ApiError::bad(format!(
            "points must be between 10 and {} (http.max_series_rows)",
            caps.max_rows
        )));
    }
    if q.metric.is_empty() {
        return Err(ApiError::bad("metric is required"));
    }
    let span = end.saturating_sub(start).max(1) as u64;
    Ok(Params {
        cf,
        start,
        end,
        points: points as usize,
        resolution: span.div_ceil(points).max(1),
    })
}

/// Which series: `cluster` (+ `host` or + `hosts`), or nothing.
pub fn shape(q: &SeriesQ) -> Result<Shape<'_>, ApiError> {
    match (q.cluster.as_deref(), q.host.as_deref(), q.hosts.as_deref()) {
        (None, None, None) => Ok(Shape::Root),
        (Some(c), None, None) => Ok(Shape::Summary(c)),
        (Some(c), Some(h), None) => Ok(Shape::Host(c, h)),
        (Some(c), None, Some(re)) => Ok(Shape::Hosts(c, re)),
        _ => Err(ApiError::bad(
            "give cluster (+ host, or + hosts regex), or nothing for the grid summary",
        )),
    }
}

/// The columns cap, checked on a count: `400` naming the key.
pub fn check_columns(n: usize, caps: &Caps) -> Result<(), ApiError> {
    if n > caps.max_columns {
        return Err(ApiError::bad(format!(
            "the hosts regex matches {n} hosts; at most {} columns per answer (http.max_series_columns): narrow the regex",
            caps.max_columns
        )));
    }
    Ok(())
}

/// The export rows cap, checked on the joined table: `400` naming the key.
pub fn check_export_rows(rows: usize, step: u64, caps: &Caps) -> Result<(), ApiError> {
    if rows > caps.max_export_rows {
        return Err(ApiError::bad(format!(
            "the export would have {rows} rows at a {step} s step; at most {} (http.max_export_rows): narrow the range or lower points",
            caps.max_export_rows
        )));
    }
    Ok(())
}

/// A query resolved to files.
pub struct Resolved {
    /// The files (existing, or about to be written from the cache).
    pub sources: Vec<rrd_export::Source>,
    /// Checked parameters.
    pub params: Params,
}

/// Resolves a query against the snapshot to RRD files.
pub fn resolve(app: &AppState, snap: &Snapshot, q: &SeriesQ) -> Result<Resolved, ApiError> {
    let caps = app.limits.caps;
    let params = params(q, &caps)?;
    let metric = || q.metric.clone();
    let mut series = Vec::new();
    match shape(q)? {
        Shape::Root => series.push(Series::Root { metric: metric() }),
        Shape::Summary(c) => {
            if snap.cluster(c).is_none() && !snap.grids.iter().any(|g| g.name == c) {
                return Err(ApiError::not_found(format!("unknown cluster {c:?}")));
            }
            series.push(Series::Summary {
                source: c.to_string(),
                metric: metric(),
            });
        }
        Shape::Host(c, h) => {
            let cl = snap
                .cluster(c)
                .ok_or_else(|| ApiError::not_found(format!("unknown cluster {c:?}")))?;
            if !cl.hosts.iter().any(|x| x.name == h) {
                return Err(ApiError::not_found(format!("unknown host {h:?}")));
            }
            series.push(Series::Host {
                cluster: c.to_string(),
                host: h.to_string(),
                metric: metric(),
            });
        }
        Shape::Hosts(c, re) => {
            let cl = snap
                .cluster(c)
                .ok_or_else(|| ApiError::not_found(format!("unknown cluster {c:?}")))?;
            let re = regex::RegexBuilder::new(re)
                .size_limit(1 << 16)
                .build()
                .map_err(|e| ApiError::bad(format!("bad hosts regex: {e}")))?;
            let matching: Vec<&str> = cl
                .hosts
                .iter()
                .filter(|h| re.is_match(&h.name))
                .map(|h| h.name.as_str())
                .collect();
            check_columns(matching.len(), &caps)?;
            series.extend(matching.into_iter().map(|h| Series::Host {
                cluster: c.to_string(),
                host: h.to_string(),
                metric: metric(),
            }));
        }
    }
    let sources = series
        .into_iter()
        .map(|s| rrd_export::Source {
            path: layout::path(&app.rrd_root, &s, app.case_sensitive_hostnames),
            series: Some(s),
        })
        .filter(|s| s.path.is_file() || app.storage.is_some())
        .collect();
    Ok(Resolved { sources, params })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    const CAPS: Caps = Caps {
        max_columns: 3,
        max_rows: 1000,
        max_export_rows: 50,
    };

    fn q(pairs: &str) -> SeriesQ {
        serde_urlencoded_like(pairs)
    }

    /// `a=b&c=d` → SeriesQ (the same deserializer axum's `Query` uses).
    fn serde_urlencoded_like(s: &str) -> SeriesQ {
        let uri: axum::http::Uri = format!("/x?{s}").parse().unwrap();
        axum::extract::Query::<SeriesQ>::try_from_uri(&uri)
            .unwrap()
            .0
    }

    #[test]
    fn params_table() {
        for (query, want) in [
            ("metric=m", Ok(600)),
            ("metric=m&points=10", Ok(10)),
            ("metric=m&points=1000", Ok(1000)),
            ("metric=m&points=1001", Err("http.max_series_rows")),
            ("metric=m&points=9", Err("http.max_series_rows")),
            ("metric=m&cf=MEDIAN", Err("unknown cf")),
            ("metric=", Err("metric is required")),
            ("metric=m&start=now&end=now-1d", Err("")),
            ("metric=m&start=end-10years", Ok(600)),
        ] {
            match (params(&q(query), &CAPS), want) {
                (Ok(p), Ok(points)) => {
                    assert_eq!(p.points, points, "{query}");
                    assert!(p.resolution >= 1, "{query}");
                    assert_eq!(
                        p.resolution,
                        ((p.end - p.start) as u64).div_ceil(points as u64),
                        "{query}"
                    );
                }
                (Err(e), Err(text)) => {
                    assert_eq!(e.0, StatusCode::BAD_REQUEST, "{query}");
                    assert!(e.1.contains(text), "{query}: {}", e.1);
                }
                (got, want) => panic!("{query}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn shape_table() {
        for (query, want) in [
            ("metric=m", Some(Shape::Root)),
            ("metric=m&cluster=c", Some(Shape::Summary("c"))),
            ("metric=m&cluster=c&host=h", Some(Shape::Host("c", "h"))),
            ("metric=m&cluster=c&hosts=^a", Some(Shape::Hosts("c", "^a"))),
            ("metric=m&host=h", None),
            ("metric=m&cluster=c&host=h&hosts=x", None),
            ("metric=m&hosts=x", None),
        ] {
            let sq = q(query);
            assert_eq!(shape(&sq).ok(), want, "{query}");
        }
    }

    #[test]
    fn caps_name_their_keys() {
        assert!(check_columns(3, &CAPS).is_ok());
        let e = check_columns(4, &CAPS).unwrap_err();
        assert!(e.1.contains("http.max_series_columns") && e.1.contains("4 hosts"));
        assert!(check_export_rows(50, 15, &CAPS).is_ok());
        let e = check_export_rows(51, 15, &CAPS).unwrap_err();
        assert!(e.1.contains("http.max_export_rows") && e.1.contains("51 rows"));
    }
}

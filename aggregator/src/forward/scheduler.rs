//! Once per interval: take the shared snapshot (never the ingest lock),
//! encode every selected sample into batches, queue them. Runs on the
//! blocking pool, so a million samples of encoding never delays a reactor
//! thread.
//!
//! Timestamps: every sample of a pass carries the pass's interval boundary
//! (a multiple of the interval, in seconds since the epoch), the snapshot
//! model gmetad uses (every metric once per step, changed or not). The
//! first boundary is strictly after the process started, and a previous
//! process only ever stamped boundaries before it stopped, so timestamps
//! per series rise across restarts without any state on disk; within a
//! process the last boundary is remembered and a pass not newer (the clock
//! stepped back) is dropped whole, counted `reason="out_of_order"`, rather
//! than have the engine refuse its batches.

use super::graphite::{self, PathRules};
use super::queue::Batch;
use super::remote_write::{self, Encoder};
use crate::state::{ClusterSnap, HostSnap, MetricSnap, Snapshot};
use ganglion_proto::model::MetricType;
use globset::{GlobSet, GlobSetBuilder};
use std::time::Instant;

/// Which metrics a forward sends: globs on `cluster/host/metric`.
pub struct Filter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl Filter {
    /// From `include`/`exclude` (already validated).
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter, globset::Error> {
        let build = |globs: &[String]| -> Result<Option<GlobSet>, globset::Error> {
            if globs.is_empty() {
                return Ok(None);
            }
            let mut b = GlobSetBuilder::new();
            for g in globs {
                b.add(globset::Glob::new(g)?);
            }
            b.build().map(Some)
        };
        Ok(Filter {
            include: build(include)?,
            exclude: build(exclude)?,
        })
    }

    fn all(&self) -> bool {
        self.include.is_none() && self.exclude.is_none()
    }

    /// Is `cluster/host/metric` sent?
    pub fn wants(&self, key: &str) -> bool {
        self.include.as_ref().is_none_or(|s| s.is_match(key))
            && !self.exclude.as_ref().is_some_and(|s| s.is_match(key))
    }
}

/// The wire a forward encodes for.
pub enum Wire {
    /// Graphite lines.
    Graphite(PathRules),
    /// Remote write, with the labels every series carries besides
    /// `__name__`, `cluster` and `host` (sorted by name; `grid` included).
    RemoteWrite(Vec<(String, String)>),
}

/// Everything a pass needs besides the snapshot.
pub struct Plan {
    /// The wire.
    pub wire: Wire,
    /// Selection.
    pub filter: Filter,
    /// Samples per batch.
    pub per_batch: usize,
    /// Send cluster summaries too.
    pub summaries: bool,
    /// Remote write: `cluster\0host` of every host sent in the last pass
    /// (to send stale markers when one stops being sent).
    pub alive: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Prometheus' stale marker: a NaN with exactly these bits.
pub const STALE_NAN: f64 = f64::from_bits(0x7ff0_0000_0000_0002);

/// The value of a metric gmetad would export (numeric type, finite), read
/// from the VAL text as received when it parses, so a float sent as `0.42`
/// is 0.42 and not the f32's 0.41999998688697815.
pub fn numeric(m: &MetricSnap) -> Option<f64> {
    if matches!(m.metric_type, MetricType::String | MetricType::Timestamp) {
        return None;
    }
    let n = m.number?;
    let v = m.val.trim().parse::<f64>().unwrap_or(n);
    Some(if v.is_finite() { v } else { n }).filter(|v| v.is_finite())
}

/// The clusters and hosts a pass reads: live sources, alive hosts.
fn alive_hosts(c: &ClusterSnap) -> impl Iterator<Item = &HostSnap> {
    c.hosts.iter().filter(move |h| !c.stale && h.alive)
}

impl Plan {
    /// Encodes one pass stamped `ts` (seconds).
    pub fn encode(&self, snap: &Snapshot, ts: u64) -> Vec<Batch> {
        match &self.wire {
            Wire::Graphite(rules) => self.graphite(rules, snap, ts),
            Wire::RemoteWrite(labels) => self.remote_write(labels, snap, ts),
        }
    }

    fn graphite(&self, rules: &PathRules, snap: &Snapshot, ts: u64) -> Vec<Batch> {
        let made = Instant::now();
        let mut batches = Vec::new();
        let mut buf = Vec::new();
        let mut lines = 0u64;
        let mut path = String::new();
        let mut key = String::new();
        let mut flush = |buf: &mut Vec<u8>, lines: &mut u64, force: bool| {
            if *lines > 0 && (force || *lines as usize >= self.per_batch) {
                batches.push(Batch {
                    ts,
                    samples: *lines,
                    payload: std::mem::take(buf).into(),
                    made,
                });
                *lines = 0;
            }
        };
        for c in &snap.clusters {
            let cluster = rules.cluster(&c.name);
            for h in alive_hosts(c) {
                let host = rules.host(&h.name);
                for m in &h.metrics {
                    let Some(v) = numeric(m) else { continue };
                    if !self.filter.all()
                        && !self.filter.wants(self.key(&mut key, c, &h.name, &m.name))
                    {
                        continue;
                    }
                    path.clear();
                    rules.path(&mut path, &cluster, &host, &m.name);
                    graphite::line(&mut buf, &path, &m.val, v, ts);
                    lines += 1;
                    flush(&mut buf, &mut lines, false);
                }
            }
            if self.summaries {
                for s in &c.summary.metrics {
                    if !s.sum.is_finite() {
                        continue;
                    }
                    for (suffix, v) in [("sum", s.sum), ("num", f64::from(s.num))] {
                        path.clear();
                        rules.path(
                            &mut path,
                            &cluster,
                            "__SummaryInfo__",
                            &format!("{}.{suffix}", s.name),
                        );
                        graphite::line(&mut buf, &path, "", v, ts);
                        lines += 1;
                        flush(&mut buf, &mut lines, false);
                    }
                }
            }
        }
        flush(&mut buf, &mut lines, true);
        batches
    }

    fn key<'k>(&self, key: &'k mut String, c: &ClusterSnap, host: &str, metric: &str) -> &'k str {
        key.clear();
        key.push_str(&c.name);
        key.push('/');
        key.push_str(host);
        key.push('/');
        key.push_str(metric);
        key
    }

    fn remote_write(&self, extra: &[(String, String)], snap: &Snapshot, ts: u64) -> Vec<Batch> {
        let made = Instant::now();
        let ts_ms = (ts as i64).saturating_mul(1000);
        let mut batches = Vec::new();
        let mut enc = Encoder::default();
        let mut labels = Vec::new();
        let mut name = String::new();
        let mut key = String::new();
        let mut flush = |enc: &mut Encoder, force: bool| {
            if enc.count > 0 && (force || enc.count as usize >= self.per_batch) {
                let samples = enc.count;
                batches.push(Batch {
                    ts,
                    samples,
                    payload: enc.finish(),
                    made,
                });
            }
        };
        let mut previously = self.alive.lock().unwrap_or_else(|p| p.into_inner());
        let mut alive = std::collections::HashSet::with_capacity(previously.len());
        for c in &snap.clusters {
            for h in &c.hosts {
                let host_key = format!("{}\0{}", c.name, h.name);
                let sending = h.alive && !c.stale;
                // A host sent last pass and not now (dead, or its source
                // stale) gets one stale marker per series, so PromQL stops
                // showing its last value at once instead of for 5 minutes.
                let stale = !sending && previously.contains(&host_key);
                if !sending && !stale {
                    continue;
                }
                if sending {
                    alive.insert(host_key);
                }
                labels.clear();
                // Sorted by name: cluster, then the extras (grid…) around host.
                let mut set: Vec<(&str, &str)> = vec![("cluster", &c.name), ("host", &h.name)];
                set.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                set.sort_unstable();
                for (k, v) in set.iter().filter(|(_, v)| !v.is_empty()) {
                    remote_write::put_label(&mut labels, k, v);
                }
                for m in &h.metrics {
                    let Some(v) = numeric(m) else { continue };
                    if !self.filter.all()
                        && !self.filter.wants(self.key(&mut key, c, &h.name, &m.name))
                    {
                        continue;
                    }
                    name.clear();
                    remote_write::metric_name(&mut name, "ganglia_", &m.name);
                    let v = if stale { STALE_NAN } else { v };
                    enc.series(&name, &labels, v, ts_ms);
                    flush(&mut enc, false);
                }
            }
            if self.summaries {
                labels.clear();
                let mut set: Vec<(&str, &str)> = vec![("cluster", &c.name)];
                set.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                set.sort_unstable();
                for (k, v) in set.iter().filter(|(_, v)| !v.is_empty()) {
                    remote_write::put_label(&mut labels, k, v);
                }
                for s in &c.summary.metrics {
                    if !s.sum.is_finite() {
                        continue;
                    }
                    for (suffix, v) in [("sum", s.sum), ("count", f64::from(s.num))] {
                        name.clear();
                        name.push_str("cluster:");
                        remote_write::metric_name(&mut name, "ganglia_", &s.name);
                        name.push(':');
                        name.push_str(suffix);
                        enc.series(&name, &labels, v, ts_ms);
                        flush(&mut enc, false);
                    }
                }
            }
        }
        flush(&mut enc, true);
        *previously = alive;
        batches
    }
}

//! The sampler: every step, a snapshot becomes gmetad's samples (pure:
//! [`samples`] is `Snapshot → Vec<Sample>`, testable without a writer), and
//! [`run_sampler`] hands them to the writer.

use super::StorageHandle;
use crate::state::{Snapshot, now_secs};
use compact_str::{CompactString, format_compact};
use ganglion_rrd::layout::Series;
use std::sync::Arc;
use std::time::Duration;

/// Which file a sample belongs to. Names are shared (`Arc`) with the
/// snapshot they come from, so a sample copies no strings; the writer maps
/// each key to its file once ([`ganglion_rrd::layout::path`]).
#[derive(Debug, Clone, Eq)]
pub enum SeriesKey {
    /// One host's metric.
    Host {
        /// Cluster.
        cluster: Arc<str>,
        /// Host.
        host: Arc<str>,
        /// Metric.
        metric: Arc<str>,
    },
    /// A cluster's or child grid's summary.
    Summary {
        /// Cluster or grid.
        source: Arc<str>,
        /// Metric.
        metric: Arc<str>,
    },
    /// This grid's own summary.
    Root {
        /// Metric.
        metric: Arc<str>,
    },
}

/// Equal names, looked at by address first: metric names are interned by
/// the state, so the writer's index finds a known series without reading the
/// (cold) text it stored the first time.
impl PartialEq for SeriesKey {
    fn eq(&self, other: &Self) -> bool {
        fn same(a: &Arc<str>, b: &Arc<str>) -> bool {
            Arc::ptr_eq(a, b) || **a == **b
        }
        match (self, other) {
            (
                SeriesKey::Host {
                    cluster: c1,
                    host: h1,
                    metric: m1,
                },
                SeriesKey::Host {
                    cluster: c2,
                    host: h2,
                    metric: m2,
                },
            ) => same(m1, m2) && same(h1, h2) && same(c1, c2),
            (
                SeriesKey::Summary {
                    source: s1,
                    metric: m1,
                },
                SeriesKey::Summary {
                    source: s2,
                    metric: m2,
                },
            ) => same(m1, m2) && same(s1, s2),
            (SeriesKey::Root { metric: m1 }, SeriesKey::Root { metric: m2 }) => same(m1, m2),
            _ => false,
        }
    }
}

/// By the names' texts, as equality compares them.
impl std::hash::Hash for SeriesKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match self {
            SeriesKey::Host {
                cluster,
                host,
                metric,
            } => (0u8, &**cluster, &**host, &**metric).hash(h),
            SeriesKey::Summary { source, metric } => (1u8, &**source, &**metric).hash(h),
            SeriesKey::Root { metric } => (2u8, &**metric).hash(h),
        }
    }
}

impl SeriesKey {
    /// The layout's view of the same series.
    pub fn to_series(&self) -> Series {
        match self {
            SeriesKey::Host {
                cluster,
                host,
                metric,
            } => Series::Host {
                cluster: cluster.to_string(),
                host: host.to_string(),
                metric: metric.to_string(),
            },
            SeriesKey::Summary { source, metric } => Series::Summary {
                source: source.to_string(),
                metric: metric.to_string(),
            },
            SeriesKey::Root { metric } => Series::Root {
                metric: metric.to_string(),
            },
        }
    }

    pub(super) fn metric(&self) -> &str {
        match self {
            SeriesKey::Host { metric, .. }
            | SeriesKey::Summary { metric, .. }
            | SeriesKey::Root { metric } => metric,
        }
    }
}

/// One value (or sum/num pair) for one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Which file.
    pub series: SeriesKey,
    /// RRD DS type (GAUGE, COUNTER, DERIVE).
    pub ds_type: &'static str,
    /// Step of the file.
    pub step: u32,
    /// Timestamp (epoch).
    pub time: u64,
    /// The update's values as librrd takes them: `sum`, or `sum:num` for
    /// summaries.
    pub values: CompactString,
    /// How many values (1 for hosts, 2 for summaries): the file's DS count.
    pub dss: u8,
}

/// Which summaries get RRD files: gmetad's `unsummarized_metrics` (name
/// prefixes), `unsummarized_sflow_vm_metrics` and, for the grid's root
/// summary only, `summarized_metrics` (`gmetad/process_xml.c`
/// `finish_processing_source`, `gmetad/gmetad.c` `write_root_summary`).
#[derive(Debug, Clone, Default)]
pub struct SummaryRrds {
    /// Name prefixes without summary files.
    pub unsummarized: Vec<String>,
    /// Skip names whose last `.` is followed by `v`.
    pub sflow_vm: bool,
    /// When not empty, the only root summaries (exact names).
    pub root_only: Vec<String>,
}

impl SummaryRrds {
    /// Whether a cluster's or child grid's summary of `name` gets a file.
    pub fn source(&self, name: &str) -> bool {
        let sflow_vm = self.sflow_vm
            && name
                .rfind('.')
                .is_some_and(|i| name[i + 1..].starts_with('v'));
        !sflow_vm
            && !self
                .unsummarized
                .iter()
                .any(|p| name.starts_with(p.as_str()))
    }

    /// Whether the grid's root summary of `name` gets a file.
    pub fn root(&self, name: &str) -> bool {
        (self.root_only.is_empty() || self.root_only.iter().any(|m| m == name)) && self.source(name)
    }
}

/// gmetad's samples for one snapshot (consumed: its strings move into the
/// samples).
pub fn samples(snap: &Snapshot, step: u32, rrds: &SummaryRrds) -> Vec<Sample> {
    let grid = snap.grid_summary();
    // One sample per metric and summary line at most: sized once instead of
    // regrown (and moved) a dozen times per step.
    let most = snap
        .clusters
        .iter()
        .map(|c| c.summary.metrics.len() + c.hosts.iter().map(|h| h.metrics.len()).sum::<usize>())
        .sum::<usize>()
        + snap
            .grids
            .iter()
            .map(|g| g.summary.metrics.len())
            .sum::<usize>()
        + grid.metrics.len();
    let mut out = Vec::with_capacity(most);
    // Read from the shared snapshot (readers hold it too): names are Arc
    // clones, values inline CompactStrings.
    for c in snap.clusters.iter().filter(|c| !c.stale) {
        let cluster: Arc<str> = c.name.as_str().into();
        let time = c.localtime;
        for h in c.hosts.iter().filter(|h| h.alive) {
            let host: Arc<str> = h.name.as_str().into();
            // A numeric type with a value that is not a number (a confused
            // sender) would make librrd reject the whole batch from there on.
            for m in h
                .metrics
                .iter()
                .filter(|m| m.metric_type.is_numeric() && m.number.is_some())
            {
                let ds_type = m.slope.rrd_ds_type();
                let mut values = m.val.clone();
                if values.trim().len() != values.len() {
                    values = values.trim().into();
                }
                out.push(Sample {
                    series: SeriesKey::Host {
                        cluster: cluster.clone(),
                        host: host.clone(),
                        metric: m.name.clone(),
                    },
                    ds_type,
                    step,
                    time,
                    values,
                    dss: 1,
                });
            }
        }
        for m in c.summary.metrics.iter().filter(|m| rrds.source(&m.name)) {
            out.push(Sample {
                series: SeriesKey::Summary {
                    source: cluster.clone(),
                    metric: m.name.as_str().into(),
                },
                ds_type: m.slope.rrd_ds_type(),
                step,
                time,
                values: format_compact!("{}:{}", m.sum_text(), m.num),
                dss: 2,
            });
        }
    }
    for g in snap.grids.iter().filter(|g| !g.stale) {
        let source: Arc<str> = g.name.as_str().into();
        for m in g.summary.metrics.iter().filter(|m| rrds.source(&m.name)) {
            out.push(Sample {
                series: SeriesKey::Summary {
                    source: source.clone(),
                    metric: m.name.as_str().into(),
                },
                ds_type: m.slope.rrd_ds_type(),
                step,
                time: g.localtime,
                values: format_compact!("{}:{}", m.sum_text(), m.num),
                dss: 2,
            });
        }
    }
    for m in grid.metrics.iter().filter(|m| rrds.root(&m.name)) {
        out.push(Sample {
            series: SeriesKey::Root {
                metric: m.name.as_str().into(),
            },
            ds_type: "GAUGE",
            step: 15,
            time: snap.localtime,
            values: format_compact!("{:.5}:{}", m.sum, m.num),
            dss: 2,
        });
    }
    out
}

/// The sampler: every step, turn a snapshot into samples (gmetad's poll cycle).
pub async fn run_sampler(
    state: Arc<crate::state::State>,
    handle: StorageHandle,
    step: u32,
    rrds: Arc<SummaryRrds>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(u64::from(step.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                // One last sample so a clean stop loses nothing of the final step.
                handle.submit(samples(&state.snapshot(now_secs()), step, &rrds));
                return;
            }
            _ = tick.tick() => {}
        }
        let snap = state.snapshot(now_secs());
        let r = rrds.clone();
        let batch = tokio::task::spawn_blocking(move || samples(&snap, step, &r))
            .await
            .unwrap_or_default();
        handle.submit(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_files_follow_gmetads_summary_options() {
        let all = SummaryRrds::default();
        assert!(all.source("cpu_user") && all.root("cpu_user"));
        let r = SummaryRrds {
            unsummarized: vec!["diskstat".into(), "CPU".into()],
            sflow_vm: true,
            root_only: vec!["load_one".into(), "diskstat_sda".into()],
        };
        // Prefixes, case-sensitive, as gmetad's strncmp.
        assert!(!r.source("diskstat_sda_reads") && !r.source("CPU_x"));
        assert!(r.source("cpu_user") && r.source("load_one"));
        // sFlow VM metrics: the last dot is followed by `v`.
        assert!(!r.source("cpu_user.vm1") && !r.source("a.b.v2"));
        assert!(r.source("a.vb.x") && r.source("net.eth0"));
        // The root keeps only the listed names that are summarized at all.
        assert!(r.root("load_one") && !r.root("cpu_user") && !r.root("diskstat_sda"));
    }
}

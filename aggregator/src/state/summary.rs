//! gmetad's summary arithmetic (HOSTS up/down, METRICS SUM/NUM), over one
//! host view for our own and polled hosts alike.

use foldhash::HashMap;
use ganglion_proto::model::{MetricType, Slope};
use std::sync::Arc;

use super::snapshot::HostSnap;

/// Summary lines being built: a metric name's line, and the description
/// whose extras were last merged into it.
pub(super) type Lines = HashMap<Box<str>, (usize, *const ())>;

/// gmetad's liveness: heard from within 4 × TMAX; a host without TMAX (an
/// old gmond) within 60 s.
pub fn host_alive(tn: u64, tmax: u32) -> bool {
    if tmax == 0 {
        tn < 60
    } else {
        tn < 4 * u64::from(tmax)
    }
}

/// HOSTS and METRICS of a cluster or grid.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Alive hosts.
    pub hosts_up: u32,
    /// Dead hosts.
    pub hosts_down: u32,
    /// Per-metric sums over alive hosts, numeric metrics only, sorted by name.
    pub metrics: Vec<SummaryMetric>,
}

/// One METRICS line.
#[derive(Debug, Clone)]
pub struct SummaryMetric {
    /// `NAME`
    pub name: String,
    /// Sum over contributing hosts.
    pub sum: f64,
    /// Number of contributing hosts.
    pub num: u32,
    /// Type of the first contributor (decides SUM formatting).
    pub metric_type: MetricType,
    /// `UNITS`
    pub units: String,
    /// `SLOPE`
    pub slope: Slope,
    /// VAL of the first contributor (gmetad takes SUM's precision from it).
    pub precision_from: String,
    /// Union of distinct extras, SPOOF_HOST excluded.
    pub extras: Vec<(String, String)>,
}

impl SummaryMetric {
    /// SUM formatted as gmetad prints it.
    pub fn sum_text(&self) -> String {
        ganglion_proto::xml::format_sum(self.sum, self.metric_type, &self.precision_from)
    }
}

impl Summary {
    /// The summary of a cluster's hosts, in their listing order (the first
    /// contributor decides a SUM's precision, as in gmetad).
    pub(super) fn of_hosts(hosts: &[HostSnap]) -> Summary {
        let mut summary = Summary::default();
        let mut acc = Lines::default();
        for h in hosts {
            summary.add_host(h, &mut acc);
        }
        summary.metrics.sort_by(|a, b| a.name.cmp(&b.name));
        summary
    }

    /// The summary of a polled cluster's hosts as the document lists them
    /// (a cluster inside a polled grid that carries no HOSTS/METRICS of its
    /// own): the same arithmetic as the snapshot's cluster summaries, over the
    /// document's view of each host.
    pub fn of_polled_hosts(c: &ganglion_proto::xml::Cluster) -> Summary {
        let mut summary = Summary::default();
        let mut acc = Lines::default();
        for h in &c.hosts {
            // No TMAX (an old gmond): how long ago, by the source's clock.
            let tn = if h.tmax == 0 {
                c.localtime.abs_diff(h.reported)
            } else {
                h.tn
            };
            if !host_alive(tn, h.tmax) {
                summary.hosts_down += 1;
                continue;
            }
            summary.hosts_up += 1;
            for m in h.metrics.iter().filter(|m| m.metric_type.is_numeric()) {
                let Ok(x) = m.val.trim().parse::<f64>() else {
                    continue;
                };
                let extras = m.extras.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                // Each metric is its own description here: extras always merged.
                let desc = std::ptr::from_ref(m).cast::<()>();
                summary.add_line(
                    &mut acc,
                    &m.name,
                    x,
                    m.metric_type,
                    &m.units,
                    m.slope,
                    &m.val,
                    desc,
                    extras,
                );
            }
        }
        summary.metrics.sort_by(|a, b| a.name.cmp(&b.name));
        summary
    }

    /// Adds one host.
    pub(super) fn add_host(&mut self, h: &HostSnap, acc: &mut Lines) {
        if !h.alive {
            self.hosts_down += 1;
            return;
        }
        self.hosts_up += 1;
        for m in &h.metrics {
            let (Some(x), true) = (m.number, m.metric_type.is_numeric()) else {
                continue;
            };
            let desc = Arc::as_ptr(&m.meta).cast::<()>();
            self.add_line(
                acc,
                &m.name,
                x,
                m.metric_type,
                &m.units,
                m.slope,
                &m.val,
                desc,
                m.extras(),
            );
        }
    }

    /// Adds one alive host's value of one metric. `desc` identifies the
    /// description the extras come from: hosts mostly share descriptions,
    /// so the union of extras is only recomputed when one differs.
    #[allow(
        clippy::too_many_arguments,
        reason = "one metric's parts, from two host views"
    )]
    fn add_line<'a>(
        &mut self,
        acc: &mut Lines,
        name: &str,
        x: f64,
        metric_type: MetricType,
        units: &str,
        slope: Slope,
        val: &str,
        desc: *const (),
        extras: impl Iterator<Item = (&'a str, &'a str)>,
    ) {
        let (i, seen) = match acc.get_mut(name) {
            Some(e) => e,
            None => {
                self.metrics.push(SummaryMetric {
                    name: name.to_string(),
                    sum: 0.0,
                    num: 0,
                    metric_type,
                    units: units.to_string(),
                    slope,
                    precision_from: val.to_string(),
                    extras: Vec::new(),
                });
                acc.entry(name.into())
                    .or_insert((self.metrics.len() - 1, std::ptr::null()))
            }
        };
        let Some(s) = self.metrics.get_mut(*i) else {
            return;
        };
        s.sum += x;
        s.num += 1;
        if std::ptr::eq(*seen, desc) {
            return;
        }
        *seen = desc;
        for (k, v) in extras {
            if k != "SPOOF_HOST" && !s.extras.iter().any(|(a, b)| a == k && b == v) {
                s.extras.push((k.to_string(), v.to_string()));
            }
        }
    }

    /// Adds another summary into this one (grid totals).
    pub fn merge(&mut self, other: &Summary) {
        self.hosts_up += other.hosts_up;
        self.hosts_down += other.hosts_down;
        for m in &other.metrics {
            match self.metrics.iter_mut().find(|s| s.name == m.name) {
                Some(s) => {
                    s.sum += m.sum;
                    s.num += m.num;
                }
                None => self.metrics.push(m.clone()),
            }
        }
        self.metrics.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

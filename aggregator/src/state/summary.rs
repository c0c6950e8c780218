//! gmetad's summary arithmetic (HOSTS up/down, METRICS SUM/NUM), over one
//! host view for our own and polled hosts alike.

use foldhash::HashMap;
use ganglion_proto::model::{MetricType, Slope};
use std::sync::Arc;

use super::intern::Meta;
use super::snapshot::HostSnap;

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
        let mut acc = HashMap::default();
        for h in hosts {
            summary.add_host(h, &mut acc);
        }
        summary.metrics.sort_by(|a, b| a.name.cmp(&b.name));
        summary
    }

    /// Adds one host. `acc` maps a metric name to its line and the last
    /// description whose extras were merged into it: hosts mostly share
    /// descriptions, so the union is only recomputed when one differs.
    pub(super) fn add_host(
        &mut self,
        h: &HostSnap,
        acc: &mut HashMap<Arc<str>, (usize, *const Meta)>,
    ) {
        if !h.alive {
            self.hosts_down += 1;
            return;
        }
        self.hosts_up += 1;
        for m in &h.metrics {
            let (Some(x), true) = (m.number, m.metric_type.is_numeric()) else {
                continue;
            };
            let (i, seen) = acc.entry(m.name.clone()).or_insert_with(|| {
                self.metrics.push(SummaryMetric {
                    name: m.name.to_string(),
                    sum: 0.0,
                    num: 0,
                    metric_type: m.metric_type,
                    units: m.units.to_string(),
                    slope: m.slope,
                    precision_from: m.val.to_string(),
                    extras: Vec::new(),
                });
                (self.metrics.len() - 1, std::ptr::null())
            });
            let s = &mut self.metrics[*i];
            s.sum += x;
            s.num += 1;
            if std::ptr::eq(*seen, Arc::as_ptr(&m.meta)) {
                continue;
            }
            *seen = Arc::as_ptr(&m.meta);
            for (k, v) in m.extras() {
                if k != "SPOOF_HOST" && !s.extras.iter().any(|(a, b)| a == k && b == v) {
                    s.extras.push((k.to_string(), v.to_string()));
                }
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

//! What the state holds per host and metric (mutable, under the state lock).

use compact_str::CompactString;
use ganglion_proto::format::render;
use ganglion_proto::xdr::Value;
use std::sync::Arc;

use super::intern::{Interner, Meta};

#[derive(Debug)]
pub(super) struct MetricEntry {
    pub(super) name: Arc<str>,
    /// The description and when it last arrived (dmax is measured from it).
    pub(super) meta: Option<(Arc<Meta>, u64)>,
    /// SPOOF_HOST of the last metadata, when it had one.
    pub(super) spoof_host: Option<Arc<str>>,
    pub(super) value: Option<StoredValue>,
}

impl MetricEntry {
    pub(super) fn new(name: Arc<str>) -> MetricEntry {
        MetricEntry {
            name,
            meta: None,
            spoof_host: None,
            value: None,
        }
    }
}

/// The value as received, and when.
#[derive(Debug, Clone)]
pub(super) struct StoredValue {
    pub(super) held: Held,
    pub(super) at: u64,
}

/// A sender's typed value with its format: rendering is deferred to snapshot
/// time, so ingest never formats floats. Or a polled source's VAL, already
/// rendered: short texts are held inline, so copying one into a snapshot
/// (and on into an RRD sample) allocates nothing.
#[derive(Debug, Clone)]
pub(super) enum Held {
    Sent(Value, Arc<str>),
    Polled(CompactString),
}

impl Held {
    pub(super) fn number(&self) -> Option<f64> {
        match self {
            Held::Sent(v, _) => v.as_f64(),
            Held::Polled(t) => t.trim().parse().ok(),
        }
    }

    pub(super) fn render(self) -> CompactString {
        match self {
            Held::Sent(Value::Str(s), _) => s.into(),
            Held::Sent(v, fmt) => render(&fmt, &v).into(),
            Held::Polled(t) => t,
        }
    }
}

#[derive(Debug)]
pub(super) struct HostEntry {
    pub(super) name: String,
    pub(super) ip: String,
    pub(super) location: String,
    pub(super) tags: String,
    pub(super) reported: u64,
    pub(super) gmond_started: u64,
    /// TMAX/DMAX of a polled host as its source reported them (gmetad passes
    /// them through); `None` for our own UDP hosts, which use the cluster's.
    pub(super) polled_limits: Option<(u32, u32)>,
    /// Position in the polled source's document (0 for UDP hosts). gmetad
    /// takes a summary's precision from the first host in that order, so
    /// polled clusters are summarised and listed in it.
    pub(super) order: usize,
    /// Sorted by name: one small allocation per host instead of a hash
    /// table, lookups by binary search, and snapshots come out sorted.
    pub(super) metrics: Vec<MetricEntry>,
}

impl HostEntry {
    pub(super) fn find(&self, name: &str) -> Result<usize, usize> {
        self.metrics.binary_search_by(|e| (*e.name).cmp(name))
    }

    /// Index of metric `name`, added when new and the host has room for it;
    /// `None` when refused by the `max` metrics per host.
    pub(super) fn slot(
        &mut self,
        name: &str,
        max: usize,
        interner: &mut Interner,
    ) -> Option<usize> {
        match self.find(name) {
            Ok(i) => Some(i),
            Err(_) if self.metrics.len() >= max => None,
            Err(p) => {
                self.metrics.insert(p, MetricEntry::new(interner.str(name)));
                Some(p)
            }
        }
    }
}

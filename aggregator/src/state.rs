//! Cluster state with gmond's semantics, and immutable snapshots of it.
//!
//! Writers (`apply`) hold the lock only to update maps; nothing formats, does IO
//! or awaits under it. Readers take an `Arc<Snapshot>` built from the state and
//! render XML/JSON from it with no lock held, so a slow client cannot delay
//! ingest.

use crate::telemetry::Counters;
use ganglion_proto::format::render;
use ganglion_proto::model::{MetricMeta, MetricType, Slope, special};
use ganglion_proto::xdr::{Message, MetricId, Value};
// Keys are sender-chosen names, so the hasher is seeded per process;
// foldhash is that and several times cheaper than SipHash on these short keys.
use compact_str::CompactString;
use foldhash::{HashMap, HashMapExt, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Per-cluster settings that shape its state.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    /// `NAME`
    pub name: String,
    /// `OWNER`
    pub owner: String,
    /// `LATLONG`
    pub latlong: String,
    /// `URL`
    pub url: String,
    /// host_tmax (printed as every HOST's TMAX)
    pub host_tmax: u32,
    /// host_dmax (0 = never forget)
    pub host_dmax: u32,
    /// Use the packet's host string for non-spoofed messages.
    pub trust_packet_hostname: bool,
}

/// Memory bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Hosts per cluster.
    pub max_hosts: usize,
    /// Metrics per host.
    pub max_metrics: usize,
    /// Bytes per string value.
    pub max_string_bytes: usize,
}

/// A metric description as many hosts share it. Every text in it is interned,
/// and the description itself is interned as a whole: the thousand hosts of a
/// cluster that send the same `load_one` metadata point at one `Meta`. The
/// per-host SPOOF_HOST extra is kept out of it (in the host's entry) so that
/// spoofed hosts share descriptions too.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Meta {
    type_name: Arc<str>,
    units: Arc<str>,
    slope: u32,
    tmax: u32,
    dmax: u32,
    /// Extra data in print order (gmond prints reverse arrival order),
    /// SPOOF_HOST left out.
    extras: Box<[(Arc<str>, Arc<str>)]>,
    /// Where the first SPOOF_HOST stood in print order.
    spoof_at: Option<u16>,
}

/// Deduplicates the texts and descriptions held by the state. Entries nobody
/// else references any more are swept by the periodic cleanup.
#[derive(Debug, Default)]
struct Interner {
    strings: HashSet<Arc<str>>,
    metas: HashSet<Arc<Meta>>,
}

impl Interner {
    fn str(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }

    /// Interns a metadata message's description; returns it and the
    /// SPOOF_HOST value it carried.
    fn meta(&mut self, m: MetricMeta) -> (Arc<Meta>, Option<Arc<str>>) {
        let units = cut(m.units, 255);
        let extras = m.extra.iter().rev().map(|(k, v)| (k.as_str(), v.as_str()));
        self.meta_parts(&m.type_name, &units, m.slope, m.tmax, m.dmax, extras)
    }

    /// As [`Interner::meta`], from borrowed parts with the extras already in
    /// print order (a polled document has them so): nothing is allocated
    /// when the description is known.
    fn meta_parts<'a>(
        &mut self,
        type_name: &str,
        units: &str,
        slope: u32,
        tmax: u32,
        dmax: u32,
        extras_printed: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> (Arc<Meta>, Option<Arc<str>>) {
        let mut spoof = None;
        let mut spoof_at = None;
        let mut extras = Vec::new();
        for (k, v) in extras_printed {
            if spoof_at.is_none() && k == "SPOOF_HOST" {
                spoof_at = u16::try_from(extras.len()).ok();
                spoof = Some(self.str(v));
                continue;
            }
            extras.push((self.str(k), self.str(v)));
        }
        let meta = Meta {
            type_name: self.str(type_name),
            units: self.str(units),
            slope,
            tmax,
            dmax,
            extras: extras.into_boxed_slice(),
            spoof_at,
        };
        let meta = match self.metas.get(&meta) {
            Some(a) => a.clone(),
            None => {
                let a = Arc::new(meta);
                self.metas.insert(a.clone());
                a
            }
        };
        (meta, spoof)
    }

    /// Forgets what only the interner still holds.
    fn sweep(&mut self) {
        self.metas.retain(|m| Arc::strong_count(m) > 1);
        self.strings.retain(|s| Arc::strong_count(s) > 1);
    }
}

#[derive(Debug)]
struct MetricEntry {
    name: Arc<str>,
    /// The description and when it last arrived (dmax is measured from it).
    meta: Option<(Arc<Meta>, u64)>,
    /// SPOOF_HOST of the last metadata, when it had one.
    spoof_host: Option<Arc<str>>,
    value: Option<StoredValue>,
}

impl MetricEntry {
    fn new(name: Arc<str>) -> MetricEntry {
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
struct StoredValue {
    held: Held,
    at: u64,
}

/// A sender's typed value with its format: rendering is deferred to snapshot
/// time, so ingest never formats floats. Or a polled source's VAL, already
/// rendered: short texts are held inline, so copying one into a snapshot
/// (and on into an RRD sample) allocates nothing.
#[derive(Debug, Clone)]
enum Held {
    Sent(Value, Arc<str>),
    Polled(CompactString),
}

impl Held {
    fn number(&self) -> Option<f64> {
        match self {
            Held::Sent(v, _) => v.as_f64(),
            Held::Polled(t) => t.trim().parse().ok(),
        }
    }

    fn render(self) -> CompactString {
        match self {
            Held::Sent(Value::Str(s), _) => s.into(),
            Held::Sent(v, fmt) => render(&fmt, &v).into(),
            Held::Polled(t) => t,
        }
    }
}

#[derive(Debug)]
struct HostEntry {
    name: String,
    ip: String,
    location: String,
    tags: String,
    reported: u64,
    gmond_started: u64,
    /// TMAX/DMAX of a polled host as its source reported them (gmetad passes
    /// them through); `None` for our own UDP hosts, which use the cluster's.
    polled_limits: Option<(u32, u32)>,
    /// Position in the polled source's document (0 for UDP hosts). gmetad
    /// takes a summary's precision from the first host in that order, so
    /// polled clusters are summarised and listed in it.
    order: usize,
    /// Sorted by name: one small allocation per host instead of a hash
    /// table, lookups by binary search, and snapshots come out sorted.
    metrics: Vec<MetricEntry>,
}

impl HostEntry {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.metrics.binary_search_by(|e| (*e.name).cmp(name))
    }

    /// Index of metric `name`, added when new and the host has room for it;
    /// `None` when refused by the `max` metrics per host.
    fn slot(&mut self, name: &str, max: usize, interner: &mut Interner) -> Option<usize> {
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

#[derive(Debug)]
struct ClusterEntry {
    info: ClusterInfo,
    /// Keyed by the host's IP text (source address, or the IP part of a spoof).
    hosts: HashMap<String, HostEntry>,
    /// Set when the cluster comes from a polled source (its XML LOCALTIME).
    remote: Option<RemoteMeta>,
}

#[derive(Debug, Clone)]
struct RemoteMeta {
    localtime: u64,
    stale: bool,
    polled_at: u64,
}

/// What the receive path must do after applying a message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Ask the sender for this metric's metadata (gmond's 136 request).
    pub request_metadata: Option<MetricId>,
    /// The metadata turned a numeric metric into a string or back (worth a
    /// log line: its RRD file stops or resumes getting samples).
    pub type_change: Option<TypeChange>,
}

/// A metric whose metadata moved it between numeric and string types.
#[derive(Debug, PartialEq, Eq)]
pub struct TypeChange {
    /// Host name.
    pub host: String,
    /// Metric name.
    pub metric: String,
    /// The type it had.
    pub from: String,
    /// The type it has now.
    pub to: String,
}

/// The aggregator's cluster state: one per process, shared by receivers,
/// pollers and readers.
pub struct State {
    inner: Mutex<Inner>,
    limits: Limits,
    counters: Arc<Counters>,
    grid_name: String,
    authority: String,
    /// gmetad `summarized_metrics` (see [`State::summarize_only`]).
    root_only: Arc<[String]>,
}

struct Inner {
    clusters: Vec<ClusterEntry>,
    grids: Vec<GridSnap>,
    interner: Interner,
}

/// A whole-grid view at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// `GRID NAME`
    pub grid_name: String,
    /// `GRID AUTHORITY`
    pub authority: String,
    /// When the snapshot was taken.
    pub localtime: u64,
    /// Clusters (received over UDP or polled), in configuration order.
    pub clusters: Vec<ClusterSnap>,
    /// Child grids from polled gmetad sources (summary only).
    pub grids: Vec<GridSnap>,
    /// gmetad `summarized_metrics` (empty: all).
    pub root_only: Arc<[String]>,
}

/// One cluster.
#[derive(Debug, Clone)]
pub struct ClusterSnap {
    /// `NAME`
    pub name: String,
    /// `OWNER`
    pub owner: String,
    /// `LATLONG`
    pub latlong: String,
    /// `URL`
    pub url: String,
    /// `LOCALTIME`: now for our own clusters, the source's clock for polled ones.
    pub localtime: u64,
    /// Polled source whose last poll failed: data kept but stale.
    pub stale: bool,
    /// Hosts sorted by name.
    pub hosts: Vec<HostSnap>,
    /// HOSTS/METRICS summary of alive hosts.
    pub summary: Summary,
}

/// One host.
#[derive(Debug, Clone)]
pub struct HostSnap {
    /// `NAME`
    pub name: String,
    /// `IP`
    pub ip: String,
    /// `TAGS`
    pub tags: String,
    /// `LOCATION`
    pub location: String,
    /// `REPORTED`
    pub reported: u64,
    /// `TN`
    pub tn: u64,
    /// `TMAX`
    pub tmax: u32,
    /// `DMAX`
    pub dmax: u32,
    /// `GMOND_STARTED`
    pub gmond_started: u64,
    /// TN < 4 × TMAX
    pub alive: bool,
    /// Position in a polled source's document (0 for UDP hosts).
    pub order: usize,
    /// Metrics with both metadata and a value, sorted by name.
    pub metrics: Vec<MetricSnap>,
}

/// One metric.
#[derive(Debug, Clone)]
pub struct MetricSnap {
    /// `NAME`
    pub name: Arc<str>,
    /// `VAL` as rendered with the sender's format
    pub val: CompactString,
    /// The value as a number, for numeric types.
    pub number: Option<f64>,
    /// `TYPE`
    pub metric_type: MetricType,
    /// `UNITS`
    pub units: Arc<str>,
    /// `SLOPE`
    pub slope: Slope,
    /// `TN`
    pub tn: u64,
    /// `TMAX`
    pub tmax: u32,
    /// `DMAX`
    pub dmax: u32,
    meta: Arc<Meta>,
    spoof_host: Option<Arc<str>>,
    /// Kept until the value is rendered outside the state lock.
    raw: Option<Held>,
}

impl MetricSnap {
    /// Extra data as gmond prints it (reverse arrival order).
    pub fn extras(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let spoof = self
            .meta
            .spoof_at
            .map(usize::from)
            .zip(self.spoof_host.as_deref());
        let at = move |i: usize| {
            spoof
                .filter(|(a, _)| *a == i)
                .map(|(_, v)| ("SPOOF_HOST", v))
        };
        self.meta
            .extras
            .iter()
            .enumerate()
            .flat_map(move |(i, (k, v))| at(i).into_iter().chain([(&**k, &**v)]))
            .chain(at(self.meta.extras.len()))
    }

    /// The first value of an extra-data key (GROUP, TITLE, DESC…).
    pub fn extra(&self, key: &str) -> Option<&str> {
        self.extras().find(|(k, _)| *k == key).map(|(_, v)| v)
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

/// A child grid from a polled gmetad.
#[derive(Debug, Clone)]
pub struct GridSnap {
    /// `NAME`
    pub name: String,
    /// `AUTHORITY`
    pub authority: String,
    /// `LOCALTIME`
    pub localtime: u64,
    /// Its summary.
    pub summary: Summary,
    /// Last poll failed.
    pub stale: bool,
}

impl Summary {
    /// Adds one host. `acc` maps a metric name to its line and the last
    /// description whose extras were merged into it: hosts mostly share
    /// descriptions, so the union is only recomputed when one differs.
    fn add_host(&mut self, h: &HostSnap, acc: &mut HashMap<Arc<str>, (usize, *const Meta)>) {
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

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut i = max;
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        s.truncate(i);
    }
    s
}

impl State {
    /// A state for the given clusters (index = cluster id used by `apply`).
    pub fn new(
        grid_name: String,
        authority: String,
        clusters: Vec<ClusterInfo>,
        limits: Limits,
        counters: Arc<Counters>,
    ) -> State {
        State {
            inner: Mutex::new(Inner {
                clusters: clusters
                    .into_iter()
                    .map(|info| ClusterEntry {
                        info,
                        hosts: HashMap::new(),
                        remote: None,
                    })
                    .collect(),
                grids: Vec::new(),
                interner: Interner::default(),
            }),
            limits,
            counters,
            grid_name,
            authority,
            root_only: Arc::new([]),
        }
    }

    /// gmetad's `summarized_metrics`: when not empty, the grid's own summary
    /// ([`Snapshot::grid_summary`]: the XML root summary, the dashboard's
    /// grid totals) holds only these metrics (`gmetad/gmetad.c`
    /// `do_root_summary`). Cluster and child-grid summaries keep them all.
    pub fn summarize_only(mut self, metrics: Vec<String>) -> State {
        self.root_only = metrics.into();
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take ingest down with a poisoned lock.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Applies one decoded datagram from `src` to cluster `cluster`.
    /// `resolved_name` is the reverse-DNS name for `src`, when known.
    pub fn apply(
        &self,
        cluster: usize,
        src: SocketAddr,
        resolved_name: Option<&str>,
        msg: Message,
        now: u64,
    ) -> ApplyOutcome {
        let c = &self.counters;
        let id = msg.metric_id();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let trust = inner
            .clusters
            .get(cluster)
            .is_some_and(|c| c.info.trust_packet_hostname);
        // Host identity as gmond: source IP, or the IP part of "IP:name" when spoofed.
        let (key, name) = if id.spoof {
            match id.spoof_parts() {
                Some((ip, name)) => (ip.to_string(), name.to_string()),
                None => {
                    c.bad_spoof.fetch_add(1, Ordering::Relaxed);
                    return ApplyOutcome::default();
                }
            }
        } else {
            let ip = canonical_ip(src.ip()).to_string();
            let name = if trust && !id.host.is_empty() {
                id.host.clone()
            } else {
                resolved_name
                    .map(str::to_string)
                    .unwrap_or_else(|| ip.clone())
            };
            (ip, name)
        };
        // gmond turns ':' into '_' in non-spoofed names (its sanitiser's only effect).
        let metric_name = if !id.spoof && id.name.contains(':') {
            id.name.replace(':', "_")
        } else {
            id.name.clone()
        };

        let Some(ce) = inner.clusters.get_mut(cluster) else {
            return ApplyOutcome::default();
        };
        let nhosts = ce.hosts.len();
        let host = match ce.hosts.get_mut(&key) {
            Some(h) => h,
            None => {
                if nhosts >= self.limits.max_hosts {
                    c.refused_hosts.fetch_add(1, Ordering::Relaxed);
                    return ApplyOutcome::default();
                }
                ce.hosts.entry(key.clone()).or_insert_with(|| HostEntry {
                    name: cut(name, 255),
                    ip: key.clone(),
                    location: "unspecified".into(),
                    tags: String::new(),
                    reported: now,
                    gmond_started: 0,
                    polled_limits: None,
                    order: 0,
                    metrics: Vec::new(),
                })
            }
        };
        // The reverse lookup may finish before the host's first packet is
        // applied (then `rename_host` found nothing to rename): name it now.
        if !id.spoof
            && !trust
            && host.name == host.ip
            && let Some(n) = resolved_name
        {
            host.name = cut(n.to_string(), 255);
        }
        // Any decoded packet refreshes REPORTED (drives TN and liveness).
        host.reported = now;
        match msg {
            Message::MetadataRequest(_) => {
                c.metadata_requests_received.fetch_add(1, Ordering::Relaxed);
                ApplyOutcome::default()
            }
            Message::Metadata(m) => {
                let max = self.limits.max_metrics;
                let Some(i) = host.slot(&metric_name, max, &mut inner.interner) else {
                    c.refused_metrics.fetch_add(1, Ordering::Relaxed);
                    return ApplyOutcome::default();
                };
                if MetricType::parse(&m.meta.type_name).is_none() {
                    c.unknown_types.fetch_add(1, Ordering::Relaxed);
                }
                let (meta, spoof) = inner.interner.meta(m.meta);
                // Only the numeric/string divide matters downstream (RRD
                // samples are taken of numeric metrics only).
                let numeric =
                    |m: &Meta| MetricType::parse(&m.type_name).is_some_and(MetricType::is_numeric);
                let e = &mut host.metrics[i];
                let type_change = match &e.meta {
                    Some((old, _)) if numeric(old) != numeric(&meta) => {
                        c.metric_type_changes.fetch_add(1, Ordering::Relaxed);
                        Some(TypeChange {
                            host: host.name.clone(),
                            metric: metric_name.clone(),
                            from: old.type_name.to_string(),
                            to: meta.type_name.to_string(),
                        })
                    }
                    _ => None,
                };
                e.meta = Some((meta, now));
                e.spoof_host = spoof;
                c.metadata_received.fetch_add(1, Ordering::Relaxed);
                ApplyOutcome {
                    request_metadata: None,
                    type_change,
                }
            }
            Message::Value(v) => {
                c.values_received.fetch_add(1, Ordering::Relaxed);
                if metric_name == special::HEARTBEAT {
                    host.gmond_started = match &v.value {
                        Value::Str(s) => s.trim().parse().unwrap_or(0),
                        other => other.as_f64().map(|x| x as u64).unwrap_or(0),
                    };
                } else if metric_name == special::LOCATION
                    && let Value::Str(s) = &v.value
                {
                    host.location = cut(s.clone(), 255);
                }
                let max = self.limits.max_metrics;
                let Some(i) = host.slot(&metric_name, max, &mut inner.interner) else {
                    c.refused_metrics.fetch_add(1, Ordering::Relaxed);
                    return ApplyOutcome::default();
                };
                let value = match v.value {
                    Value::Str(s) => Value::Str(cut(s, self.limits.max_string_bytes)),
                    other => other,
                };
                let e = &mut host.metrics[i];
                // Senders repeat the same format: keep the shared copy.
                let fmt = match &e.value {
                    Some(StoredValue {
                        held: Held::Sent(_, old),
                        ..
                    }) if **old == *v.fmt => old.clone(),
                    _ => inner.interner.str(&v.fmt),
                };
                e.value = Some(StoredValue {
                    held: Held::Sent(value, fmt),
                    at: now,
                });
                if e.meta.is_none() {
                    ApplyOutcome {
                        type_change: None,
                        request_metadata: Some(MetricId {
                            host: if v.id.spoof {
                                v.id.host
                            } else {
                                host.name.clone()
                            },
                            name: v.id.name,
                            spoof: v.id.spoof,
                        }),
                    }
                } else {
                    ApplyOutcome::default()
                }
            }
        }
    }

    /// Gives hosts still named by their IP the reverse-DNS name that just arrived.
    pub fn rename_host(&self, ip: &str, name: &str) {
        let mut inner = self.lock();
        for c in inner.clusters.iter_mut().filter(|c| c.remote.is_none()) {
            if let Some(h) = c.hosts.get_mut(ip)
                && h.name == h.ip
            {
                h.name = cut(name.to_string(), 255);
            }
        }
    }

    /// gmond's cleanup pass: forget hosts silent longer than host_dmax and
    /// metrics whose *metadata* is older than their dmax.
    pub fn cleanup(&self, now: u64) -> (usize, usize) {
        let mut inner = self.lock();
        let (mut hosts, mut metrics) = (0, 0);
        for c in inner.clusters.iter_mut().filter(|c| c.remote.is_none()) {
            let hdmax = u64::from(c.info.host_dmax);
            let before = c.hosts.len();
            c.hosts
                .retain(|_, h| hdmax == 0 || now.saturating_sub(h.reported) <= hdmax);
            hosts += before - c.hosts.len();
            for h in c.hosts.values_mut() {
                let before = h.metrics.len();
                h.metrics.retain(|m| match &m.meta {
                    Some((meta, at)) => {
                        meta.dmax == 0 || now.saturating_sub(*at) <= u64::from(meta.dmax)
                    }
                    None => m
                        .value
                        .as_ref()
                        .is_some_and(|v| now.saturating_sub(v.at) <= 3600),
                });
                metrics += before - h.metrics.len();
            }
        }
        inner.interner.sweep();
        (hosts, metrics)
    }

    /// Replaces a polled cluster's content (gmond source, or a gmetad's cluster
    /// in authority mode). Creates the cluster on first sight.
    pub fn replace_polled_cluster(&self, mut cluster: ganglion_proto::xml::Cluster, now: u64) {
        let tmax = cluster.hosts.first().map(|h| h.tmax).unwrap_or(20).max(1);
        let mut guard = self.lock();
        let inner = &mut *guard;
        // The previous poll's hosts: a metric whose description did not
        // change takes its interned name and description from there, which
        // is one binary search instead of half a dozen hash lookups.
        let mut previous = match inner
            .clusters
            .iter_mut()
            .find(|c| c.info.name == cluster.name)
        {
            Some(c) => std::mem::take(&mut c.hosts),
            None => HashMap::new(),
        };
        let mut retired = Vec::with_capacity(previous.len());
        let mut hosts = HashMap::with_capacity(cluster.hosts.len());
        for (order, h) in std::mem::take(&mut cluster.hosts).into_iter().enumerate() {
            let before = previous.remove(&h.name);
            let mut metrics: Vec<MetricEntry> = Vec::with_capacity(h.metrics.len());
            for m in h.metrics {
                if m.dmax != 0 && m.tn > u64::from(m.dmax) {
                    continue; // gmetad drops metrics past their dmax at ingest
                }
                let at = now.saturating_sub(m.tn);
                let known = before.as_ref().and_then(|b| {
                    let e = &b.metrics[b.find(&m.name).ok()?];
                    let (meta, _) = e.meta.as_ref()?;
                    same_description(meta, &m).then(|| (e.name.clone(), meta.clone()))
                });
                let (name, meta, spoof_host) = match known {
                    Some((name, meta)) => (name, meta, None),
                    None => {
                        let (meta, spoof_host) = inner.interner.meta_parts(
                            m.metric_type.as_str(),
                            &m.units,
                            m.slope.to_wire(),
                            m.tmax,
                            m.dmax,
                            m.extras.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                        );
                        (inner.interner.str(&m.name), meta, spoof_host)
                    }
                };
                // Polled VALs are already rendered: keep them verbatim.
                metrics.push(MetricEntry {
                    name,
                    meta: Some((meta, at)),
                    spoof_host,
                    value: Some(StoredValue {
                        held: Held::Polled(m.val),
                        at,
                    }),
                });
            }
            // Freed after the lock is released, with the hosts that left.
            retired.extend(before);
            if !metrics.is_sorted_by(|a, b| a.name <= b.name) {
                metrics.sort_by(|a, b| a.name.cmp(&b.name));
            }
            // A name twice in one host: the last one wins, as a map would have it.
            metrics.dedup_by(|later, earlier| {
                let same = later.name == earlier.name;
                if same {
                    std::mem::swap(later, earlier);
                }
                same
            });
            hosts.insert(
                h.name.clone(),
                HostEntry {
                    name: h.name,
                    ip: h.ip,
                    location: h.location,
                    tags: h.tags,
                    reported: now.saturating_sub(h.tn),
                    gmond_started: h.gmond_started,
                    polled_limits: Some((h.tmax, h.dmax)),
                    order,
                    metrics,
                },
            );
        }
        let remote = RemoteMeta {
            localtime: cluster.localtime,
            stale: false,
            polled_at: now,
        };
        match inner
            .clusters
            .iter_mut()
            .find(|c| c.info.name == cluster.name)
        {
            Some(c) => {
                c.hosts = hosts;
                c.remote = Some(remote);
                c.info.owner = cluster.owner;
                c.info.latlong = cluster.latlong;
                c.info.url = cluster.url;
                // Freeing thousands of hosts is done after the lock is released.
                drop(guard);
                drop(previous);
                drop(retired);
            }
            None => inner.clusters.push(ClusterEntry {
                info: ClusterInfo {
                    name: cluster.name,
                    owner: cluster.owner,
                    latlong: cluster.latlong,
                    url: cluster.url,
                    host_tmax: tmax,
                    host_dmax: 0,
                    trust_packet_hostname: false,
                },
                hosts,
                remote: Some(remote),
            }),
        }
    }

    /// Replaces a child grid's summary.
    pub fn replace_grid(&self, grid: GridSnap) {
        let mut inner = self.lock();
        match inner.grids.iter_mut().find(|g| g.name == grid.name) {
            Some(g) => *g = grid,
            None => inner.grids.push(grid),
        }
    }

    /// Marks what a failed source last delivered as stale (kept visible).
    pub fn mark_stale(&self, cluster_names: &[String], grid_names: &[String]) {
        let mut inner = self.lock();
        for c in inner.clusters.iter_mut() {
            if cluster_names.contains(&c.info.name)
                && let Some(r) = &mut c.remote
            {
                r.stale = true;
            }
        }
        for g in inner.grids.iter_mut() {
            if grid_names.contains(&g.name) {
                g.stale = true;
            }
        }
    }

    /// Hosts up/down and metrics shown, per cluster, counted under the lock
    /// with the snapshot's rules but without building one: a `/metrics`
    /// scrape at a million series would otherwise copy every one of them.
    pub fn census(&self, now: u64) -> Vec<Census> {
        let inner = self.lock();
        inner
            .clusters
            .iter()
            .map(|c| {
                let mut out = Census {
                    cluster: c.info.name.clone(),
                    ..Census::default()
                };
                for h in c.hosts.values() {
                    let tmax = h.polled_limits.map_or(c.info.host_tmax, |(t, _)| t);
                    if now.saturating_sub(h.reported) < 4 * u64::from(tmax.max(1)) {
                        out.hosts_up += 1;
                    } else {
                        out.hosts_down += 1;
                    }
                    out.metrics += h
                        .metrics
                        .iter()
                        .filter(|e| *e.name != *special::HEARTBEAT && *e.name != *special::LOCATION)
                        .filter(|e| match (&e.meta, &e.value) {
                            (Some((meta, _)), Some(v)) => {
                                meta.dmax == 0 || now.saturating_sub(v.at) <= u64::from(meta.dmax)
                            }
                            _ => false,
                        })
                        .count();
                }
                out
            })
            .collect()
    }

    /// An immutable view of everything, for readers.
    pub fn snapshot(&self, now: u64) -> Arc<Snapshot> {
        // Under the lock only reference counts and a few host strings are
        // copied; values are rendered, hosts sorted and summaries computed
        // after releasing it.
        let (raw, grids) = {
            let inner = self.lock();
            let raw: Vec<(ClusterInfo, Option<RemoteMeta>, Vec<HostSnap>)> = inner
                .clusters
                .iter()
                .map(|c| {
                    let hosts = c.hosts.values().map(|h| host_snap(&c.info, h, now));
                    (c.info.clone(), c.remote.clone(), hosts.collect())
                })
                .collect();
            (raw, inner.grids.clone())
        };
        let clusters = raw
            .into_iter()
            .map(|(info, remote, hosts)| build_cluster(info, remote, hosts, now))
            .collect();
        Arc::new(Snapshot {
            grid_name: self.grid_name.clone(),
            authority: self.authority.clone(),
            localtime: now,
            clusters,
            grids,
            root_only: self.root_only.clone(),
        })
    }
}

/// Whether a polled metric's description is `meta` (SPOOF_HOST aside, which
/// the interned description keeps out: such metrics take the long way).
fn same_description(meta: &Meta, m: &ganglion_proto::xml::Metric) -> bool {
    meta.spoof_at.is_none()
        && *meta.type_name == *m.metric_type.as_str()
        && *meta.units == *m.units
        && meta.slope == m.slope.to_wire()
        && meta.tmax == m.tmax
        && meta.dmax == m.dmax
        && meta.extras.len() == m.extras.len()
        && meta
            .extras
            .iter()
            .zip(&m.extras)
            .all(|((k, v), (mk, mv))| **k == **mk && **v == **mv)
}

/// One cluster's counts for telemetry (see [`State::census`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Census {
    /// Cluster name.
    pub cluster: String,
    /// Hosts alive (TN < 4 × TMAX).
    pub hosts_up: u32,
    /// Hosts not heard from for 4 × TMAX.
    pub hosts_down: u32,
    /// Metrics a snapshot would show, dead hosts' included.
    pub metrics: usize,
}

/// A host as readers see it, with values not yet rendered (see
/// [`build_cluster`]).
fn host_snap(info: &ClusterInfo, h: &HostEntry, now: u64) -> HostSnap {
    let tn = now.saturating_sub(h.reported);
    let (tmax, dmax) = h.polled_limits.unwrap_or((info.host_tmax, info.host_dmax));
    let metrics = h
        .metrics
        .iter()
        .filter(|e| *e.name != *special::HEARTBEAT && *e.name != *special::LOCATION)
        .filter_map(|e| {
            let (meta, _) = e.meta.as_ref()?;
            let v = e.value.as_ref()?;
            let metric_type = MetricType::parse(&meta.type_name).unwrap_or(MetricType::String);
            Some(MetricSnap {
                name: e.name.clone(),
                val: CompactString::default(),
                number: if metric_type.is_numeric() {
                    v.held.number()
                } else {
                    None
                },
                metric_type,
                units: meta.units.clone(),
                slope: Slope::from_wire(meta.slope),
                tn: now.saturating_sub(v.at),
                tmax: meta.tmax,
                dmax: meta.dmax,
                meta: meta.clone(),
                spoof_host: e.spoof_host.clone(),
                raw: Some(v.held.clone()),
            })
        })
        .filter(|m| m.dmax == 0 || m.tn <= u64::from(m.dmax))
        .collect();
    HostSnap {
        alive: tn < 4 * u64::from(tmax.max(1)),
        name: h.name.clone(),
        ip: h.ip.clone(),
        tags: h.tags.clone(),
        location: h.location.clone(),
        reported: h.reported,
        tn,
        tmax,
        dmax,
        gmond_started: h.gmond_started,
        order: h.order,
        metrics,
    }
}

fn build_cluster(
    info: ClusterInfo,
    remote: Option<RemoteMeta>,
    mut hosts: Vec<HostSnap>,
    now: u64,
) -> ClusterSnap {
    // Source order for polled hosts, then by name (our UDP hosts are all 0).
    hosts.sort_by(|a, b| (a.order, &a.name, &a.ip).cmp(&(b.order, &b.name, &b.ip)));
    for h in &mut hosts {
        for m in &mut h.metrics {
            if let Some(held) = m.raw.take() {
                m.val = held.render();
            }
        }
    }
    let mut summary = Summary::default();
    let mut acc = HashMap::new();
    for h in &hosts {
        summary.add_host(h, &mut acc);
    }
    summary.metrics.sort_by(|a, b| a.name.cmp(&b.name));
    ClusterSnap {
        name: info.name,
        owner: info.owner,
        latlong: info.latlong,
        url: info.url,
        localtime: remote
            .as_ref()
            .map(|r| r.localtime + now.saturating_sub(r.polled_at))
            .unwrap_or(now),
        stale: remote.is_some_and(|r| r.stale),
        hosts,
        summary,
    }
}

/// IPv4-mapped IPv6 sources are shown as plain IPv4, as a dual-stack gmond would.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl Snapshot {
    /// Grid-wide summary: every cluster and child grid added up.
    pub fn grid_summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.clusters {
            s.merge(&c.summary);
        }
        for g in &self.grids {
            s.merge(&g.summary);
        }
        if !self.root_only.is_empty() {
            s.metrics.retain(|m| self.root_only.contains(&m.name));
        }
        s
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&ClusterSnap> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ganglion_proto::xdr::{MetadataMsg, ValueMsg};

    fn state() -> State {
        state_with(2)
    }

    fn state_with(max_hosts: usize) -> State {
        State::new(
            "g".into(),
            "http://x/".into(),
            vec![ClusterInfo {
                name: "c".into(),
                owner: "o".into(),
                latlong: "l".into(),
                url: "u".into(),
                host_tmax: 20,
                host_dmax: 86400,
                trust_packet_hostname: false,
            }],
            Limits {
                max_hosts,
                max_metrics: 3,
                max_string_bytes: 8,
            },
            Arc::new(Counters::default()),
        )
    }

    fn id(host: &str, name: &str, spoof: bool) -> MetricId {
        MetricId {
            host: host.into(),
            name: name.into(),
            spoof,
        }
    }

    fn meta(name: &str, t: &str, dmax: u32) -> Message {
        Message::Metadata(MetadataMsg {
            id: id("h", name, false),
            meta: MetricMeta {
                type_name: t.into(),
                name: name.into(),
                units: "u".into(),
                slope: 3,
                tmax: 60,
                dmax,
                extra: vec![("GROUP".into(), "g".into()), ("TITLE".into(), "T".into())],
            },
        })
    }

    fn value(name: &str, v: Value, fmt: &str) -> Message {
        Message::Value(ValueMsg {
            id: id("h", name, false),
            fmt: fmt.into(),
            value: v,
        })
    }

    const SRC: &str = "10.0.0.1:5000";

    #[test]
    fn the_census_counts_what_a_snapshot_shows() {
        let s = state_with(3);
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        for (src, at) in [(a, 100), (b, 10)] {
            s.apply(0, src, None, meta("load", "float", 0), at);
            s.apply(0, src, None, value("load", Value::Float(1.0), "%.1f"), at);
            // Expires 5 s after its value: gone from both views at 150.
            s.apply(0, src, None, meta("short", "float", 5), at);
            s.apply(0, src, None, value("short", Value::Float(1.0), "%.1f"), at);
            // A value without metadata is held, not shown.
            s.apply(0, src, None, value("nometa", Value::Float(1.0), "%.1f"), at);
        }
        for now in [101, 150] {
            let snap = s.snapshot(now);
            let c = &snap.clusters[0];
            let census = s.census(now);
            assert_eq!(
                census,
                [Census {
                    cluster: c.name.clone(),
                    hosts_up: c.summary.hosts_up,
                    hosts_down: c.summary.hosts_down,
                    metrics: c.hosts.iter().map(|h| h.metrics.len()).sum(),
                }],
                "at {now}"
            );
        }
        // The check above is not vacuous: at 150 one host is down and the
        // short-lived metric is gone.
        let at_150 = &s.census(150)[0];
        assert_eq!(
            (at_150.hosts_up, at_150.hosts_down, at_150.metrics),
            (1, 1, 2)
        );
    }

    #[test]
    fn value_without_metadata_is_kept_hidden_and_requests_metadata() {
        let s = state();
        let out = s.apply(
            0,
            SRC.parse().unwrap(),
            None,
            value("load", Value::Float(1.5), "%.2f"),
            100,
        );
        assert_eq!(out.request_metadata.map(|m| m.name), Some("load".into()));
        let snap = s.snapshot(100);
        assert!(snap.clusters[0].hosts[0].metrics.is_empty());
        s.apply(0, SRC.parse().unwrap(), None, meta("load", "float", 0), 101);
        let snap = s.snapshot(102);
        let m = &snap.clusters[0].hosts[0].metrics[0];
        assert_eq!((m.val.as_str(), m.tn, m.number), ("1.50", 2, Some(1.5)));
        assert_eq!(
            m.extras().next().unwrap().0,
            "TITLE",
            "reverse arrival order"
        );
    }

    #[test]
    fn spoofed_hosts_share_one_description_and_keep_their_spoof_host() {
        let s = state_with(3);
        let src: SocketAddr = SRC.parse().unwrap();
        let sends = [
            ("10.0.0.7:a", 0),
            ("10.0.0.8:b", 1),
            ("10.0.0.7:a", 2),
            ("10.0.0.9:c", 2),
        ];
        for (h, at) in sends {
            // SPOOF_HOST first, in the middle, last: printed in reverse.
            let mut extra: Vec<(String, String)> =
                vec![("GROUP".into(), "g".into()), ("TITLE".into(), "T".into())];
            extra.insert(at, ("SPOOF_HOST".into(), h.into()));
            let m = MetadataMsg {
                id: id(h, "load", true),
                meta: MetricMeta {
                    type_name: "float".into(),
                    name: "load".into(),
                    units: "u".into(),
                    slope: 3,
                    tmax: 60,
                    dmax: 0,
                    extra,
                },
            };
            s.apply(0, src, None, Message::Metadata(m), 100);
            let v = ValueMsg {
                id: id(h, "load", true),
                fmt: "%.1f".into(),
                value: Value::Float(2.0),
            };
            s.apply(0, src, None, Message::Value(v), 100);
            let snap = s.snapshot(100);
            let host = snap.clusters[0]
                .hosts
                .iter()
                .find(|x| h.ends_with(x.name.as_str()))
                .unwrap();
            let got: Vec<(&str, &str)> = host.metrics[0].extras().collect();
            let mut want = vec![("GROUP", "g"), ("TITLE", "T")];
            want.insert(at, ("SPOOF_HOST", h));
            want.reverse();
            assert_eq!(got, want);
            assert_eq!(host.metrics[0].extra("SPOOF_HOST"), Some(h));
        }
        let snap = s.snapshot(100);
        let hs = &snap.clusters[0].hosts;
        let names: Vec<&str> = hs.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        // a and c sent the same description (SPOOF_HOST at the same place):
        // one copy. b's differs in where SPOOF_HOST stands.
        assert!(Arc::ptr_eq(&hs[0].metrics[0].meta, &hs[2].metrics[0].meta));
        assert!(!Arc::ptr_eq(&hs[0].metrics[0].meta, &hs[1].metrics[0].meta));
        assert!(Arc::ptr_eq(&hs[0].metrics[0].name, &hs[1].metrics[0].name));
        // Nothing references a's first description any more.
        drop(snap);
        let mut inner = s.lock();
        let before = inner.interner.metas.len();
        inner.interner.sweep();
        assert_eq!((before, inner.interner.metas.len()), (3, 2));
    }

    #[test]
    fn numeric_to_string_and_back_is_reported() {
        let s = state();
        let src: SocketAddr = SRC.parse().unwrap();
        let change = |t: &str, now| s.apply(0, src, Some("n"), meta("m", t, 0), now).type_change;
        assert_eq!(change("float", 100), None, "first metadata");
        assert_eq!(change("double", 101), None, "still numeric");
        let tc = change("string", 102).unwrap();
        assert_eq!(
            (tc.metric.as_str(), tc.from.as_str(), tc.to.as_str()),
            ("m", "double", "string")
        );
        assert_eq!(change("string", 103), None, "resent, unchanged");
        assert!(change("uint32", 104).is_some());
        assert_eq!(s.counters().metric_type_changes.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn heartbeat_location_spoof_and_liveness() {
        let s = state();
        let src: SocketAddr = SRC.parse().unwrap();
        s.apply(
            0,
            src,
            Some("node1"),
            value("heartbeat", Value::UInt(1234), "%u"),
            100,
        );
        s.apply(
            0,
            src,
            None,
            value("location", Value::Str("rack1".into()), "%s"),
            100,
        );
        let mut sp = value("jobs", Value::Str("7".into()), "%s");
        if let Message::Value(v) = &mut sp {
            v.id = id("10.9.9.9:spoofy", "jobs", true);
        }
        s.apply(0, src, None, sp, 100);
        let snap = s.snapshot(150);
        let h = snap.clusters[0]
            .hosts
            .iter()
            .find(|h| h.name == "node1")
            .unwrap();
        assert_eq!(
            (h.gmond_started, h.location.as_str(), h.ip.as_str()),
            (1234, "rack1", "10.0.0.1")
        );
        assert!(h.metrics.is_empty(), "heartbeat/location hidden");
        assert!(h.alive);
        assert!(
            snap.clusters[0]
                .hosts
                .iter()
                .any(|h| h.name == "spoofy" && h.ip == "10.9.9.9")
        );
        let snap = s.snapshot(181);
        assert!(!snap.clusters[0].hosts[0].alive, "TN ≥ 4×TMAX is dead");
    }

    #[test]
    fn limits_refuse_and_count() {
        let s = state();
        for i in 0..3 {
            let src: SocketAddr = format!("10.0.0.{i}:1").parse().unwrap();
            s.apply(0, src, None, meta("m", "float", 0), 1);
        }
        assert_eq!(s.snapshot(1).clusters[0].hosts.len(), 2);
        assert_eq!(s.counters().refused_hosts.load(Ordering::Relaxed), 1);
        let src: SocketAddr = SRC.parse().unwrap();
        // This host already has "m"; the cap of 3 admits a and b only.
        for n in ["a", "b", "c", "d"] {
            s.apply(0, src, None, meta(n, "float", 0), 1);
        }
        assert_eq!(s.counters().refused_metrics.load(Ordering::Relaxed), 2);
        s.apply(
            0,
            src,
            None,
            value("a", Value::Str("0123456789abc".into()), "%s"),
            1,
        );
        s.apply(0, src, None, meta("a", "string", 0), 1);
        let snap = s.snapshot(1);
        let h = snap.clusters[0]
            .hosts
            .iter()
            .find(|h| h.ip == "10.0.0.1")
            .unwrap();
        assert_eq!(
            h.metrics.iter().find(|m| &*m.name == "a").unwrap().val,
            "01234567"
        );
    }

    #[test]
    fn summaries_and_cleanup() {
        let s = state();
        for (i, v) in [(1, "1.5"), (2, "2.25")] {
            let src: SocketAddr = format!("10.0.0.{i}:1").parse().unwrap();
            s.apply(0, src, None, meta("load", "float", 50), 100);
            s.apply(0, src, None, value("load", Value::Str(v.into()), "%s"), 100);
            s.apply(0, src, None, meta("os", "string", 0), 100);
            s.apply(
                0,
                src,
                None,
                value("os", Value::Str("Linux".into()), "%s"),
                100,
            );
        }
        let snap = s.snapshot(110);
        let sum = &snap.clusters[0].summary;
        assert_eq!((sum.hosts_up, sum.hosts_down), (2, 0));
        assert_eq!(sum.metrics.len(), 1, "strings are not summarised");
        assert_eq!(
            (sum.metrics[0].sum_text(), sum.metrics[0].num),
            ("3.8".into(), 2)
        );
        // dmax counts from the metadata time.
        assert_eq!(s.cleanup(151), (0, 2));
        assert_eq!(s.cleanup(100 + 86401), (2, 0));
    }

    #[test]
    fn bad_spoof_is_dropped() {
        let s = state();
        let mut m = value("x", Value::Int(1), "%d");
        if let Message::Value(v) = &mut m {
            v.id = id("nocolon", "x", true);
        }
        s.apply(0, SRC.parse().unwrap(), None, m, 1);
        assert!(s.snapshot(1).clusters[0].hosts.is_empty());
        assert_eq!(s.counters().bad_spoof.load(Ordering::Relaxed), 1);
    }
}

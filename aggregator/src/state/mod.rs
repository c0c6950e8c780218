//! Cluster state with gmond's semantics, and immutable snapshots of it.
//!
//! Writers hold the lock only to update maps; nothing formats, does IO or
//! awaits under it. Readers share one `Arc<Snapshot>` rebuilt at most once a
//! second (see [`State::snapshot`]) and render XML/JSON from it with no
//! lock held, so neither a slow client nor many clients can delay ingest.
//!
//! - `intern`: shared texts and metric descriptions.
//! - `entry`: what is held per host and metric.
//! - `gmond`: the UDP front door (`apply`, `rename_host`, `cleanup`).
//! - `polled`: the gmetad front door (`replace_polled_cluster`,
//!   `replace_grid`, `mark_stale`), with cluster-name ownership.
//! - `snapshot`: reader views and the shared snapshot cache.
//! - `summary`: gmetad's HOSTS/METRICS arithmetic.

mod entry;
mod gmond;
mod intern;
mod polled;
mod snapshot;
mod summary;

pub use gmond::Datagram;
pub use polled::{Refusal, SUMMARY_DIR};
pub use snapshot::{
    Census, ClusterSnap, ClusterView, GridSnap, HostSnap, MetricSnap, SNAPSHOT_INTERVAL, Snapshot,
};
pub use summary::{Summary, SummaryMetric, host_alive};

use crate::telemetry::Counters;
use ganglion_proto::xdr::MetricId;
// Keys are sender-chosen names, so the hasher is seeded per process;
// foldhash is that and several times cheaper than SipHash on these short keys.
use foldhash::{HashMap, HashMapExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use entry::HostEntry;
use intern::Interner;

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

#[derive(Debug)]
struct ClusterEntry {
    info: ClusterInfo,
    /// Keyed by the host's IP text (source address, or the IP part of a spoof).
    hosts: HashMap<String, HostEntry>,
    /// Set when the cluster comes from a polled source (its XML LOCALTIME).
    remote: Option<RemoteMeta>,
    /// The state generation of this cluster's last change: a snapshot
    /// rebuild copies only the clusters whose generation moved.
    generation: u64,
}

#[derive(Debug, Clone)]
struct RemoteMeta {
    /// The data source that owns this cluster name.
    source: Arc<str>,
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
    /// Bumped by every change (under the lock); a snapshot records the value
    /// it reflects.
    generation: AtomicU64,
    /// `trust_packet_hostname` of the configured (UDP) clusters, by index:
    /// read by `apply` before it takes the lock.
    trust: Box<[bool]>,
    cache: snapshot::Cache,
    limits: Limits,
    counters: Arc<Counters>,
    grid_name: String,
    authority: String,
    /// gmetad `summarized_metrics` (see [`State::summarize_only`]).
    root_only: Arc<[String]>,
}

struct Inner {
    clusters: Vec<ClusterEntry>,
    /// Child grids, with the data source that owns each name.
    grids: Vec<(Arc<str>, GridSnap)>,
    interner: Interner,
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
            trust: clusters.iter().map(|c| c.trust_packet_hostname).collect(),
            inner: Mutex::new(Inner {
                clusters: clusters
                    .into_iter()
                    .map(|info| ClusterEntry {
                        info,
                        hosts: HashMap::new(),
                        remote: None,
                        generation: 0,
                    })
                    .collect(),
                grids: Vec::new(),
                interner: Interner::default(),
            }),
            generation: AtomicU64::new(0),
            cache: snapshot::Cache::new(SNAPSHOT_INTERVAL),
            limits,
            counters,
            grid_name,
            authority,
            root_only: Arc::new([]),
        }
    }

    /// How long the shared snapshot may lag data changes within one second
    /// (default [`SNAPSHOT_INTERVAL`]; zero rebuilds on every change).
    pub fn snapshot_interval(mut self, interval: Duration) -> State {
        self.cache = snapshot::Cache::new(interval);
        self
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

    /// Stamps a change: returns the new state generation.
    fn bump(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }
}

pub use crate::acl::canonical_ip;

#[cfg(test)]
mod tests {
    use super::*;
    use ganglion_proto::model::MetricMeta;
    use ganglion_proto::xdr::{Message, MetadataMsg, MetricId, Value, ValueMsg};
    use std::net::SocketAddr;

    fn state() -> State {
        state_with(2)
    }

    fn state_with(max_hosts: usize) -> State {
        // These tests look at every change at once.
        state_for(max_hosts, Duration::ZERO)
    }

    fn state_for(max_hosts: usize, interval: Duration) -> State {
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
        .snapshot_interval(interval)
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

    fn one_value(s: &State, src: &str, name: &str, at: u64) {
        let src: SocketAddr = src.parse().unwrap();
        s.apply(0, src, None, meta(name, "float", 0), at);
        s.apply(0, src, None, value(name, Value::Float(1.0), "%.1f"), at);
    }

    #[test]
    fn readers_share_one_snapshot_within_the_interval() {
        let s = state_for(3, Duration::from_secs(3600));
        one_value(&s, SRC, "load", 100);
        let a = s.snapshot(100);
        assert!(Arc::ptr_eq(&a, &s.snapshot(100)), "nothing changed");
        // A change within the same second and the interval: still shared.
        one_value(&s, SRC, "disk", 100);
        let b = s.snapshot(100);
        assert!(Arc::ptr_eq(&a, &b), "changed, but within the interval");
        // An earlier second is served by the newer snapshot.
        assert!(Arc::ptr_eq(&a, &s.snapshot(99)));
        // A new second always rebuilds (TN must be exact), and shows the change.
        let c = s.snapshot(101);
        assert!(!Arc::ptr_eq(&b, &c));
        assert_eq!(c.localtime, 101);
        let names: Vec<&str> = c.clusters[0].hosts[0]
            .metrics
            .iter()
            .map(|m| &*m.name)
            .collect();
        assert_eq!(names, ["disk", "load"]);
        assert_eq!(c.clusters[0].hosts[0].tn, 1);
    }

    #[test]
    fn a_change_is_seen_once_the_interval_has_passed() {
        // A zero interval has always passed.
        let s = state_with(3);
        one_value(&s, SRC, "load", 100);
        let a = s.snapshot(100);
        assert!(Arc::ptr_eq(&a, &s.snapshot(100)), "nothing changed");
        one_value(&s, SRC, "disk", 100);
        let b = s.snapshot(100);
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(b.clusters[0].hosts[0].metrics.len(), 2);
        assert!(Arc::ptr_eq(&b, &s.snapshot(100)));
    }

    fn two_clusters(interval: Duration) -> State {
        let info = |name: &str| ClusterInfo {
            name: name.into(),
            owner: "o".into(),
            latlong: "l".into(),
            url: "u".into(),
            host_tmax: 20,
            host_dmax: 0,
            trust_packet_hostname: false,
        };
        State::new(
            "g".into(),
            "http://x/".into(),
            vec![info("a"), info("b")],
            Limits {
                max_hosts: 10,
                max_metrics: 10,
                max_string_bytes: 8,
            },
            Arc::new(Counters::default()),
        )
        .snapshot_interval(interval)
    }

    fn both(s: &State, at: u64) {
        let src: SocketAddr = SRC.parse().unwrap();
        for cluster in [0, 1] {
            s.apply(cluster, src, None, meta("load", "float", 0), at);
            s.apply(
                cluster,
                src,
                None,
                value("load", Value::Float(2.0), "%.1f"),
                at,
            );
            // Expires 30 s after its value.
            s.apply(cluster, src, None, meta("short", "float", 30), at);
            s.apply(
                cluster,
                src,
                None,
                value("short", Value::Float(1.0), "%.1f"),
                at,
            );
        }
    }

    #[test]
    fn a_rebuild_copies_only_the_clusters_that_changed() {
        let s = two_clusters(Duration::ZERO);
        both(&s, 100);
        s.snapshot(100);
        assert_eq!(s.last_rebuild_copied(), Some(2), "first build copies all");
        one_value(&s, SRC, "disk", 105);
        let snap = s.snapshot(110);
        assert_eq!(s.last_rebuild_copied(), Some(1), "b is carried over");
        assert_eq!(snap.clusters[1].hosts[0].tn, 10, "with its TN advanced");
        s.snapshot(111);
        assert_eq!(
            s.last_rebuild_copied(),
            Some(0),
            "a new second alone copies nothing"
        );
    }

    #[test]
    fn a_carried_over_cluster_reads_as_if_built_at_that_second() {
        // TN, liveness, DMAX and summaries of an unchanged cluster advance
        // with the clock: the same as building from the state at that time.
        for later in [100, 110, 131, 179, 180, 500] {
            let carried = two_clusters(Duration::ZERO);
            both(&carried, 100);
            carried.snapshot(100);
            let fresh = two_clusters(Duration::ZERO);
            both(&fresh, 100);
            let (c, f) = (carried.snapshot(later), fresh.snapshot(later));
            if later > 100 {
                assert_eq!(carried.last_rebuild_copied(), Some(0), "at {later}");
            }
            assert_eq!(format!("{c:?}"), format!("{f:?}"), "at {later}");
        }
    }

    #[test]
    fn census_is_counted_from_the_shared_snapshot() {
        let s = two_clusters(Duration::ZERO);
        both(&s, 100);
        let census = s.census(200);
        assert_eq!(
            (census[1].hosts_up, census[1].hosts_down, census[1].metrics),
            (0, 1, 1),
            "dead, and the short-lived metric is gone"
        );
        assert!(Arc::ptr_eq(&s.snapshot(200), &s.snapshot(200)));
        let view = s.cluster_snapshot("b", 200).unwrap();
        assert_eq!(view.name, "b");
        assert!(view.host("10.0.0.1").is_some());
        assert!(Arc::ptr_eq(view.snapshot(), &s.snapshot(200)), "no copy");
        assert!(s.cluster_snapshot("nope", 200).is_none());
    }

    fn polled(name: &str, host: &str) -> ganglion_proto::xml::Cluster {
        ganglion_proto::xml::Cluster {
            name: name.into(),
            localtime: 100,
            hosts: vec![ganglion_proto::xml::Host {
                name: host.into(),
                ip: "10.9.0.1".into(),
                reported: 100,
                tmax: 20,
                ..Default::default()
            }],
            complete: true,
            ..Default::default()
        }
    }

    #[test]
    fn polled_names_are_owned_and_never_replace_local_clusters() {
        let s = state_with(3);
        one_value(&s, SRC, "load", 100);
        // A source naming our own cluster is refused; its hosts stay.
        let r = s.replace_polled_cluster("src1", polled("c", "intruder"), 100);
        assert!(matches!(r, Err(Refusal::Local { .. })), "{r:?}");
        // The first source to deliver a name owns it.
        s.replace_polled_cluster("src1", polled("p", "h1"), 100)
            .unwrap();
        let r = s.replace_polled_cluster("src2", polled("p", "h2"), 100);
        assert!(
            matches!(&r, Err(Refusal::Owned { owner, .. }) if owner == "src1"),
            "{r:?}"
        );
        s.replace_polled_cluster("src1", polled("p", "h3"), 101)
            .unwrap();
        let r = s.replace_polled_cluster("src1", polled(SUMMARY_DIR, "h"), 101);
        assert!(matches!(r, Err(Refusal::Reserved { .. })), "{r:?}");
        // Another source's failure does not mark src1's cluster stale.
        s.mark_stale("src2", &["p".into()], &[]);
        let snap = s.snapshot(101);
        let names = |c: &ClusterSnap| c.hosts.iter().map(|h| h.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(snap.cluster("c").unwrap()), ["10.0.0.1"]);
        assert_eq!(names(snap.cluster("p").unwrap()), ["h3"]);
        assert!(!snap.cluster("p").unwrap().stale);
        assert_eq!(snap.clusters.len(), 2, "nothing else was created");
        s.mark_stale("src1", &["p".into()], &[]);
        assert!(s.snapshot(101).cluster("p").unwrap().stale);
        // Grids too.
        let grid = |name: &str| GridSnap {
            name: name.into(),
            authority: String::new(),
            localtime: 100,
            summary: Summary::default(),
            stale: false,
        };
        s.replace_grid("src1", grid("G")).unwrap();
        assert!(s.replace_grid("src2", grid("G")).is_err());
        assert!(s.replace_grid("src1", grid(SUMMARY_DIR)).is_err());
    }

    #[test]
    fn a_batch_is_applied_as_its_datagrams_one_by_one() {
        let src: SocketAddr = SRC.parse().unwrap();
        let mut bad = value("x", Value::Int(1), "%d");
        if let Message::Value(v) = &mut bad {
            v.id = id("nocolon", "x", true);
        }
        let msgs = || {
            vec![
                value("load", Value::Float(1.5), "%.2f"),
                bad.clone(),
                meta("load", "float", 0),
                meta("os", "string", 0),
            ]
        };
        let one = state();
        let single: Vec<ApplyOutcome> = msgs()
            .into_iter()
            .map(|m| one.apply(0, src, Some("n1"), m, 100))
            .collect();
        let batched = state();
        let mut batch: Vec<Datagram> = msgs()
            .into_iter()
            .map(|m| (src, Some("n1".to_string()), m))
            .collect();
        let mut outcomes = Vec::new();
        batched.apply_batch(0, &mut batch, 100, &mut outcomes);
        assert!(batch.is_empty(), "drained");
        let (srcs, outcomes): (Vec<SocketAddr>, Vec<ApplyOutcome>) = outcomes.into_iter().unzip();
        assert_eq!(srcs, [src; 4]);
        assert_eq!(outcomes, single);
        assert!(outcomes[0].request_metadata.is_some());
        assert_eq!(batched.counters().bad_spoof.load(Ordering::Relaxed), 1);
        assert_eq!(
            format!("{:?}", batched.snapshot(101)),
            format!("{:?}", one.snapshot(101))
        );
    }

    #[test]
    fn a_polled_cluster_is_summarised_alike_in_state_and_straight_from_its_document() {
        use ganglion_proto::xml::{Cluster, Host, Metric};
        let metric = |name: &str, val: &str, group: &str| Metric {
            name: name.into(),
            val: val.into(),
            metric_type: ganglion_proto::MetricType::Float,
            units: "u".into(),
            tn: 5,
            tmax: 60,
            dmax: 0,
            slope: ganglion_proto::Slope::Both,
            source: "gmond".into(),
            extras: vec![("GROUP".into(), group.into())],
        };
        let host = |name: &str, tn: u64, tmax: u32, metrics: Vec<Metric>| Host {
            name: name.into(),
            ip: "10.0.0.9".into(),
            reported: 1000 - tn,
            tn,
            tmax,
            metrics,
            ..Default::default()
        };
        let c = Cluster {
            name: "p".into(),
            localtime: 1000,
            hosts: vec![
                host("a", 10, 20, vec![metric("load", "1.50", "cpu")]),
                // No TMAX: alive within 60 s.
                host("b", 50, 0, vec![metric("load", "2", "load")]),
                host("dead", 100, 20, vec![metric("load", "9", "cpu")]),
            ],
            complete: true,
            ..Default::default()
        };
        let direct = Summary::of_polled_hosts(&c);
        let s = state();
        s.replace_polled_cluster("src", c, 1000).unwrap();
        let snap = s.snapshot(1000);
        let held = &snap.cluster("p").unwrap().summary;
        assert_eq!(format!("{direct:?}"), format!("{held:?}"));
        assert_eq!((direct.hosts_up, direct.hosts_down), (2, 1));
        let load = &direct.metrics[0];
        assert_eq!((load.sum_text(), load.num), ("3.50".to_string(), 2));
        assert_eq!(load.extras.len(), 2, "extras of both descriptions");
    }

    #[test]
    fn concurrent_readers_never_get_an_older_second_than_they_ask_for() {
        let s = Arc::new(state_for(100, SNAPSHOT_INTERVAL));
        let src: SocketAddr = SRC.parse().unwrap();
        let writer = {
            let s = s.clone();
            std::thread::spawn(move || {
                for now in 100..400 {
                    s.apply(0, src, None, meta("m", "float", 0), now);
                    s.apply(0, src, None, value("m", Value::Float(1.0), "%.1f"), now);
                }
            })
        };
        let readers: Vec<_> = (0..4)
            .map(|k| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..300u64 {
                        let now = 100 + (i + k * 7) % 300;
                        let snap = s.snapshot(now);
                        assert!(snap.localtime >= now, "{} for {now}", snap.localtime);
                        for h in &snap.clusters[0].hosts {
                            assert_eq!(h.tn, snap.localtime.saturating_sub(h.reported));
                        }
                    }
                })
            })
            .collect();
        writer.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }
    }
}

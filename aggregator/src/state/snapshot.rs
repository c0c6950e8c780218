//! Immutable views of the state for readers, and the one shared snapshot
//! that serves them all.
//!
//! Every reader (the XML ports, `/api`, `/metrics`, the sampler) asks
//! [`State::snapshot`] and gets the same `Arc<Snapshot>`, rebuilt only when
//! the second changed (TN, LOCALTIME and liveness are exact to the second the
//! snapshot is for) or when the state changed and the last rebuild is older
//! than [`SNAPSHOT_INTERVAL`]. Fifty clients looping over dumps therefore cost
//! one rebuild per second, not fifty copies of the world.
//!
//! A rebuild takes the ingest lock only to copy the clusters whose generation
//! moved since the previous snapshot (every change to a cluster stamps it with
//! a new generation); an unchanged cluster is carried over from the previous
//! snapshot with its times advanced ([`retime`]), outside the lock. Values are
//! rendered, hosts sorted and summaries computed outside the lock too. Only
//! one thread rebuilds at a time: a reader that finds a rebuild running takes
//! the previous snapshot when it is of the same second (only fresher data is
//! at stake), and waits for the rebuild (not for the ingest lock) when it is
//! older, so no reader is ever given a wrong TN.
//!
//! The price is memory: the last snapshot stays alive between reads (one
//! copy of what readers see), where each read used to build and drop its own.

use compact_str::CompactString;
use ganglion_proto::model::{MetricType, Slope, special};
use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use super::entry::{Held, HostEntry};
use super::intern::Meta;
use super::summary::Summary;
use super::{ClusterInfo, RemoteMeta, State};

/// Shortest time between two rebuilds of the shared snapshot when only data
/// changed within one second (a new second always rebuilds, so TN stays exact).
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

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
    pub(super) meta: Arc<Meta>,
    pub(super) spoof_host: Option<Arc<str>>,
    /// Kept until the value is rendered outside the state lock.
    pub(super) raw: Option<Held>,
    /// When the value arrived (`tn` is counted from it).
    pub(super) at: u64,
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

/// The shared snapshot and what is needed to rebuild it.
pub(super) struct Cache {
    /// See [`SNAPSHOT_INTERVAL`].
    interval: Duration,
    /// The last snapshot built (cloning the `Arc` is all a reader pays).
    current: Mutex<Option<Arc<Built>>>,
    /// Held by the one thread that rebuilds.
    rebuilding: Mutex<()>,
}

/// A snapshot and what it was built from.
struct Built {
    snap: Arc<Snapshot>,
    /// State generation it reflects.
    generation: u64,
    /// Each cluster's generation, by index (the state's cluster order).
    clusters: Vec<u64>,
    /// When it was built.
    at: Instant,
    /// Clusters copied from the state (under its lock) for it.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "read by the tests of a rebuild's cost")
    )]
    copied: usize,
}

impl Built {
    fn serves(&self, now: u64, generation: u64, interval: Duration) -> bool {
        now <= self.snap.localtime
            && (generation == self.generation || self.at.elapsed() < interval)
    }
}

impl Cache {
    pub(super) fn new(interval: Duration) -> Cache {
        Cache {
            interval,
            current: Mutex::new(None),
            rebuilding: Mutex::new(()),
        }
    }

    fn current(&self) -> Option<Arc<Built>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, built: Built) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(built));
    }

    /// The rebuild permit; `None` when another thread holds it and
    /// `take_previous` says not to wait for it.
    fn permit(&self, take_previous: bool) -> Option<MutexGuard<'_, ()>> {
        match self.rebuilding.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) if take_previous => None,
            Err(TryLockError::WouldBlock) => {
                Some(self.rebuilding.lock().unwrap_or_else(|p| p.into_inner()))
            }
        }
    }
}

/// One cluster of the shared snapshot, without copying it: derefs to
/// [`ClusterSnap`] and keeps its snapshot alive.
#[derive(Debug, Clone)]
pub struct ClusterView {
    snap: Arc<Snapshot>,
    index: usize,
}

impl ClusterView {
    /// The whole snapshot this cluster is part of.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snap
    }

    /// A host of this cluster by name.
    pub fn host(&self, name: &str) -> Option<&HostSnap> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

impl Deref for ClusterView {
    type Target = ClusterSnap;
    fn deref(&self) -> &ClusterSnap {
        // `index` was found in this very snapshot (see `State::cluster_snapshot`).
        &self.snap.clusters[self.index]
    }
}

impl State {
    /// The shared view of everything, for readers: see the module docs for
    /// when it is rebuilt. `now` is the second it must be exact for (the
    /// result may be for a later second when another reader got there first).
    pub fn snapshot(&self, now: u64) -> Arc<Snapshot> {
        let cache = &self.cache;
        let current = cache.current();
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(b) = &current
            && b.serves(now, generation, cache.interval)
        {
            return b.snap.clone();
        }
        // Same second, only fresher data wanted: if someone is rebuilding,
        // what there is will do.
        let same_second = current.as_ref().filter(|b| now <= b.snap.localtime);
        let _permit = match (cache.permit(same_second.is_some()), same_second) {
            (Some(permit), _) => permit,
            (None, Some(b)) => return b.snap.clone(),
            // `permit` only declines when told a previous snapshot will do.
            (None, None) => return self.snapshot(now),
        };
        // Rebuilt by the thread we waited for?
        let current = cache.current();
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(b) = &current
            && b.serves(now, generation, cache.interval)
        {
            return b.snap.clone();
        }
        let built = self.rebuild(current.as_deref(), now);
        let snap = built.snap.clone();
        cache.set(built);
        snap
    }

    /// One cluster of the shared snapshot (for `/api/cluster` and
    /// `/api/host`): no copy, see [`ClusterView`].
    pub fn cluster_snapshot(&self, name: &str, now: u64) -> Option<ClusterView> {
        let snap = self.snapshot(now);
        let index = snap.clusters.iter().position(|c| c.name == name)?;
        Some(ClusterView { snap, index })
    }

    /// Builds the snapshot for `now` (never earlier than `previous`'s)
    /// from `previous` and what changed since.
    fn rebuild(&self, previous: Option<&Built>, now: u64) -> Built {
        let now = previous.map_or(now, |p| now.max(p.snap.localtime));
        let kept = |i: usize, generation: u64| {
            previous.and_then(|p| {
                (p.clusters.get(i) == Some(&generation))
                    .then(|| p.snap.clusters.get(i))
                    .flatten()
            })
        };
        // Under the lock: reference counts and a few host strings, of the
        // changed clusters only.
        let (fresh, generations, grids, generation) = {
            let inner = self.lock();
            let generation = self.generation.load(Ordering::Acquire);
            let mut fresh = Vec::new();
            for (i, c) in inner.clusters.iter().enumerate() {
                if kept(i, c.generation).is_none() {
                    let hosts = c.hosts.values().map(|h| host_snap(&c.info, h, now));
                    fresh.push((i, c.info.clone(), c.remote.clone(), hosts.collect()));
                }
            }
            let generations: Vec<u64> = inner.clusters.iter().map(|c| c.generation).collect();
            let grids: Vec<GridSnap> = inner.grids.iter().map(|(_, g)| g.clone()).collect();
            (fresh, generations, grids, generation)
        };
        let copied = fresh.len();
        let mut fresh = fresh.into_iter().peekable();
        let mut clusters = Vec::with_capacity(generations.len());
        for (i, g) in generations.iter().enumerate() {
            if let Some((_, info, remote, hosts)) = fresh.next_if(|(j, ..)| *j == i) {
                clusters.push(build_cluster(info, remote, hosts, now));
            } else if let Some((old, p)) = kept(i, *g).zip(previous) {
                clusters.push(retime(old, p.snap.localtime, now));
            }
        }
        Built {
            snap: Arc::new(Snapshot {
                grid_name: self.grid_name.clone(),
                authority: self.authority.clone(),
                localtime: now,
                clusters,
                grids,
                root_only: self.root_only.clone(),
            }),
            generation,
            clusters: generations,
            at: Instant::now(),
            copied,
        }
    }

    /// Clusters the last rebuild copied from the state (the others were
    /// carried over): for tests of the rebuild's cost.
    #[cfg(test)]
    pub(super) fn last_rebuild_copied(&self) -> Option<usize> {
        self.cache.current().map(|b| b.copied)
    }

    /// Hosts up/down and metrics shown, per cluster, from the shared
    /// snapshot: a `/metrics` scrape costs no walk of the state.
    pub fn census(&self, now: u64) -> Vec<Census> {
        self.snapshot(now)
            .clusters
            .iter()
            .map(|c| Census {
                cluster: c.name.clone(),
                hosts_up: c.summary.hosts_up,
                hosts_down: c.summary.hosts_down,
                metrics: c.hosts.iter().map(|h| h.metrics.len()).sum(),
            })
            .collect()
    }
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

/// A cluster view built at `then`, as it reads at `now` with nothing
/// received meanwhile: TN grows (counted from REPORTED and each value's
/// arrival, exactly as a build at `now` counts it), hosts may die, metrics
/// may pass their DMAX (and once past it they stay past it, so what was
/// left out stays out).
fn retime(c: &ClusterSnap, then: u64, now: u64) -> ClusterSnap {
    let by = now.saturating_sub(then);
    let mut hosts = c.hosts.clone();
    if by > 0 {
        for h in &mut hosts {
            h.tn = now.saturating_sub(h.reported);
            h.alive = alive(h.tn, h.tmax);
            h.metrics.retain_mut(|m| {
                m.tn = now.saturating_sub(m.at);
                shown(m.tn, m.dmax)
            });
        }
    }
    ClusterSnap {
        name: c.name.clone(),
        owner: c.owner.clone(),
        latlong: c.latlong.clone(),
        url: c.url.clone(),
        localtime: c.localtime.saturating_add(by),
        stale: c.stale,
        summary: if by > 0 {
            Summary::of_hosts(&hosts)
        } else {
            c.summary.clone()
        },
        hosts,
    }
}

fn alive(tn: u64, tmax: u32) -> bool {
    super::summary::host_alive(tn, tmax)
}

/// A metric is shown until its value is older than DMAX (0: forever).
fn shown(tn: u64, dmax: u32) -> bool {
    dmax == 0 || tn <= u64::from(dmax)
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
                at: v.at,
            })
        })
        .filter(|m| shown(m.tn, m.dmax))
        .collect();
    HostSnap {
        alive: alive(tn, tmax),
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
    let summary = Summary::of_hosts(&hosts);
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

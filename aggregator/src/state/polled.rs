//! The gmetad front door: documents polled from data sources replace whole
//! clusters (`replace_polled_cluster`) and child-grid summaries
//! (`replace_grid`); a failed poll marks what the source last gave as stale.
//!
//! Both front doors write the same cluster list, so a polled name is checked
//! against it: our own UDP clusters and other sources' clusters are never
//! overwritten (first owner keeps the name).

use foldhash::{HashMap, HashMapExt};
use thiserror::Error;

use super::entry::{Held, HostEntry, MetricEntry, StoredValue};
use super::intern::Meta;
use super::snapshot::GridSnap;
use super::{ClusterEntry, ClusterInfo, RemoteMeta, State};

/// gmetad's grid-summary directory: no cluster may take this name (its RRD
/// directory would collide with the grid's own summary files).
pub const SUMMARY_DIR: &str = "__SummaryInfo__";

/// Why a polled cluster or grid was not taken.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// The name is one of this aggregator's own (UDP) clusters.
    #[error("cluster {name:?} is a local cluster of this aggregator")]
    Local {
        /// Cluster name.
        name: String,
    },
    /// Another data source delivered this name first.
    #[error("{what} {name:?} already comes from data source {owner:?}")]
    Owned {
        /// `cluster` or `grid`.
        what: &'static str,
        /// Its name.
        name: String,
        /// The data source that owns it.
        owner: String,
    },
    /// The name is reserved.
    #[error("name {name:?} is reserved for the grid summary")]
    Reserved {
        /// Cluster name.
        name: String,
    },
}

impl Refusal {
    /// The refused name.
    pub fn name(&self) -> &str {
        match self {
            Refusal::Local { name } | Refusal::Owned { name, .. } | Refusal::Reserved { name } => {
                name
            }
        }
    }
}

impl State {
    /// Replaces a polled cluster's content (gmond source, or a gmetad's cluster
    /// in authority mode). Creates the cluster on first sight, owned by
    /// `source` from then on.
    ///
    /// Refused, with nothing changed, when the name is one of our own UDP
    /// clusters (their hosts would be wiped at every poll), belongs to another
    /// data source (two sources would overwrite each other), or is gmetad's
    /// reserved summary directory `__SummaryInfo__`.
    pub fn replace_polled_cluster(
        &self,
        source: &str,
        mut cluster: ganglion_proto::xml::Cluster,
        now: u64,
    ) -> Result<(), Refusal> {
        if cluster.name == SUMMARY_DIR {
            return Err(Refusal::Reserved { name: cluster.name });
        }
        let tmax = cluster.hosts.first().map(|h| h.tmax).unwrap_or(20).max(1);
        let mut guard = self.lock();
        let inner = &mut *guard;
        let existing = inner
            .clusters
            .iter()
            .position(|c| c.info.name == cluster.name);
        if let Some(i) = existing {
            match inner.clusters.get(i).map(|c| c.remote.as_ref()) {
                Some(None) => {
                    return Err(Refusal::Local { name: cluster.name });
                }
                Some(Some(r)) if *r.source != *source => {
                    return Err(Refusal::Owned {
                        what: "cluster",
                        name: cluster.name,
                        owner: r.source.to_string(),
                    });
                }
                _ => {}
            }
        }
        // The previous poll's hosts: a metric whose description did not
        // change takes its interned name and description from there, which
        // is one binary search instead of half a dozen hash lookups.
        let mut previous = match existing.and_then(|i| inner.clusters.get_mut(i)) {
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
            source: source.into(),
            localtime: cluster.localtime,
            stale: false,
            polled_at: now,
        };
        let generation = self.bump();
        match existing.and_then(|i| inner.clusters.get_mut(i)) {
            Some(c) => {
                c.generation = generation;
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
                generation,
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
        Ok(())
    }

    /// Replaces a child grid's summary. A grid name is owned by the first
    /// source that delivers it, as a cluster name is.
    pub fn replace_grid(&self, source: &str, grid: GridSnap) -> Result<(), Refusal> {
        if grid.name == SUMMARY_DIR {
            // Its summary files would be the grid's own.
            return Err(Refusal::Reserved { name: grid.name });
        }
        let mut inner = self.lock();
        match inner.grids.iter_mut().find(|(_, g)| g.name == grid.name) {
            Some((owner, _)) if **owner != *source => {
                return Err(Refusal::Owned {
                    what: "grid",
                    name: grid.name,
                    owner: owner.to_string(),
                });
            }
            Some((_, g)) => *g = grid,
            None => inner.grids.push((source.into(), grid)),
        }
        self.bump();
        Ok(())
    }

    /// Marks what a failed source last delivered as stale (kept visible).
    /// Only what `source` owns is touched.
    pub fn mark_stale(&self, source: &str, cluster_names: &[String], grid_names: &[String]) {
        let mut inner = self.lock();
        let mut changed = false;
        for c in inner.clusters.iter_mut() {
            if cluster_names.contains(&c.info.name)
                && let Some(r) = &mut c.remote
                && *r.source == *source
                && !r.stale
            {
                r.stale = true;
                c.generation = self.bump();
                changed = true;
            }
        }
        for (owner, g) in inner.grids.iter_mut() {
            if grid_names.contains(&g.name) && **owner == *source && !g.stale {
                g.stale = true;
                changed = true;
            }
        }
        if changed {
            self.bump();
        }
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

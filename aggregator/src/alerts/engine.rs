//! The evaluation: one pass over a [`Snapshot`] turns host liveness and every
//! rule's value into results for the state machines of [`super::machine`],
//! then into events, changed state rows and a [`HealthSnapshot`].
//!
//! Cost: globs are compiled once; which rules apply to a cluster is decided
//! the first time the cluster is seen, which apply to a host the first time
//! the host is seen; a rule's value is one binary search in the host's sorted
//! metrics; a state is 24 bytes updated in place. Strings are made only for
//! events and for the health entries of hosts and of services that are not
//! OK/HARD — a pass over a quiet grid allocates per host, never per
//! (rule, host).
//!
//! Host results: DOWN when the snapshot says the host is not alive (gmetad's
//! TN ≥ 4 × TMAX, [`crate::state::host_alive`]) or, with
//! `alerts.host_down_after_secs`, when TN exceeds it. A host the store knew
//! but that has not reported since start is DOWN once warm-up is over; a host
//! that leaves the snapshot after reporting (`host_dmax`) is forgotten. The
//! rules of a host that is not UP are not evaluated (their states hold, as
//! Nagios holds services of a DOWN host), and a host's rules wait
//! `alerts.warmup_secs` after it is first heard before a missing metric
//! counts as UNKNOWN (its metrics arrive over a few seconds).
//!
//! Storm control: the host events of a cluster are held until the cluster
//! is judged. When at least `max(storm_min_hosts, ⌈storm_fraction × hosts⌉)`
//! of its hosts went DOWN within `storm_window_secs`, one
//! `cluster_incident` replaces them; while it is open the cluster's host
//! events are suppressed (counted); it closes with `cluster_recovered` when
//! fewer hosts than that are DOWN.

use super::machine::{Change, FlapParams, HostState, SvcState};
use super::store::Batch;
use super::{
    Event, EventKind, HealthSnapshot, HostHealth, Incident, ServiceHealth, StateType, Stats,
};
use crate::config::alerts::{Aggregate, AlertRule, AlertsConfig};
use crate::state::host_alive;
use crate::state::{ClusterSnap, HostSnap, Snapshot};
use foldhash::{HashMap, HashMapExt};
use ganglion_proto::range::{Range, Status, classify};
use globset::{Glob, GlobMatcher};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

mod services;
use services::*;

/// A rule, compiled.
pub struct Rule {
    name: String,
    metric: String,
    /// `None`: a glob that does not compile (validated at start) matches all.
    cluster: Option<GlobMatcher>,
    hosts: Option<GlobMatcher>,
    warning: Option<Range>,
    critical: Option<Range>,
    each: Option<Range>,
    warning_text: Option<String>,
    critical_text: Option<String>,
    max: u8,
    aggregate: Aggregate,
}

impl Rule {
    fn compile(r: &AlertRule, default_max: u32) -> Rule {
        let glob = |g: &str| Glob::new(g).ok().map(|g| g.compile_matcher());
        let warning = r.warning_range();
        let critical = r.critical_range();
        let max = r.max_check_attempts.unwrap_or(default_max).clamp(1, 255);
        Rule {
            name: r.name.clone(),
            metric: r.metric.clone(),
            cluster: glob(r.cluster_glob()),
            hosts: glob(r.hosts_glob()),
            warning_text: warning.map(|w| w.to_string()),
            critical_text: critical.map(|c| c.to_string()),
            warning,
            critical,
            each: r.each_range(),
            max: u8::try_from(max).unwrap_or(u8::MAX),
            aggregate: r.aggregate,
        }
    }

    fn status(&self, v: f64) -> Status {
        classify(v, self.warning.as_ref(), self.critical.as_ref())
    }

    fn matches_cluster(&self, name: &str) -> bool {
        self.cluster.as_ref().is_none_or(|g| g.is_match(name))
    }

    fn matches_host(&self, name: &str) -> bool {
        self.hosts.as_ref().is_none_or(|g| g.is_match(name))
    }
}

struct HostSlot {
    state: HostState,
    /// `(rule index, state)` of the host-scope rules that match it.
    services: Vec<(u16, SvcState)>,
    /// Where each service's metric was in the host's sorted metrics last
    /// time: checked with one comparison before a binary search.
    hints: Vec<u8>,
    /// Indexes into the cluster's `cluster_rules` whose `hosts` glob matches.
    in_cluster_rules: Vec<u16>,
    /// The pass that last saw it in a snapshot.
    seen: u64,
    /// Seen in a snapshot since start.
    heard: bool,
    /// First seen since start (unix seconds).
    first_heard: i64,
    tn: u64,
    tmax: u64,
    /// Its row exists in the store.
    stored: bool,
}

struct ClusterRuleSlot {
    rule: u16,
    state: SvcState,
    acc: Acc,
    value: Option<f64>,
}

#[derive(Default, Clone, Copy)]
struct Acc {
    matched: u32,
    down: u32,
    num: u32,
    sum: f64,
    min: f64,
    max: f64,
    count: u32,
}

struct ClusterSlot {
    /// Host-scope rules whose `cluster` glob matches.
    host_rules: Vec<u16>,
    cluster_rules: Vec<ClusterRuleSlot>,
    hosts: HashMap<Box<str>, HostSlot>,
    incident: Option<Incident>,
    /// The pass that last saw it in a snapshot.
    seen: u64,
}

/// What one evaluation produced.
pub struct Output {
    /// Events and changed rows for the store.
    pub batch: Batch,
    /// The new health.
    pub health: HealthSnapshot,
}

/// The engine's whole state.
pub struct Engine {
    cfg: AlertsConfig,
    rules: Vec<Rule>,
    by_name: HashMap<String, u16>,
    clusters: HashMap<Box<str>, ClusterSlot>,
    started: i64,
    pass: u64,
    stats: Arc<Stats>,
    /// Sizes of the last health, to allocate the next one at once.
    hosts_known: usize,
    problems_known: usize,
}

impl Engine {
    /// An engine for these rules, started at `started` (warm-up counts from it).
    pub fn new(cfg: AlertsConfig, rules: &[AlertRule], started: i64, stats: Arc<Stats>) -> Engine {
        let rules: Vec<Rule> = rules
            .iter()
            .take(usize::from(u16::MAX))
            .map(|r| Rule::compile(r, cfg.max_check_attempts))
            .collect();
        let by_name = rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i as u16))
            .collect();
        Engine {
            cfg,
            rules,
            by_name,
            clusters: HashMap::new(),
            started,
            pass: 0,
            stats,
            hosts_known: 0,
            problems_known: 0,
        }
    }

    fn host_max(&self) -> u8 {
        u8::try_from(self.cfg.max_check_attempts.clamp(1, 255)).unwrap_or(u8::MAX)
    }

    fn flap(&self) -> Option<FlapParams> {
        self.cfg.flap_detection.then_some(FlapParams {
            low: self.cfg.low_flap_threshold,
            high: self.cfg.high_flap_threshold,
        })
    }

    fn cluster_slot(&mut self, name: &str) -> &mut ClusterSlot {
        cluster_slot(&self.rules, &mut self.clusters, name)
    }

    fn new_host(rules: &[Rule], c: &ClusterSlot, host: &str) -> HostSlot {
        let services: Vec<(u16, SvcState)> = c
            .host_rules
            .iter()
            .filter(|&&i| rules[usize::from(i)].matches_host(host))
            .map(|&i| (i, SvcState::default()))
            .collect();
        HostSlot {
            state: HostState::default(),
            hints: vec![0; services.len()],
            services,
            in_cluster_rules: c
                .cluster_rules
                .iter()
                .enumerate()
                .filter(|(_, s)| rules[usize::from(s.rule)].matches_host(host))
                .map(|(i, _)| i as u16)
                .collect(),
            seen: 0,
            heard: false,
            first_heard: 0,
            tn: 0,
            tmax: 0,
            stored: false,
        }
    }

    /// Restores what the store persisted (before the first evaluation).
    pub fn restore(&mut self, loaded: super::store::Loaded) -> Batch {
        let mut stale = Batch::default();
        for (cluster, host, state) in loaded.hosts {
            let c = cluster_slot(&self.rules, &mut self.clusters, &cluster);
            let mut slot = Self::new_host(&self.rules, c, &host);
            slot.state = state;
            slot.stored = true;
            c.hosts.insert(host.into(), slot);
        }
        for (rule, cluster, host, state) in loaded.services {
            let Some(&ri) = self.by_name.get(&rule) else {
                // The rule is gone from the configuration.
                stale.services.push((rule, cluster, host, None));
                continue;
            };
            let c = cluster_slot(&self.rules, &mut self.clusters, &cluster);
            let placed = if host.is_empty() {
                c.cluster_rules
                    .iter_mut()
                    .find(|s| s.rule == ri)
                    .map(|s| s.state = state)
            } else {
                c.hosts.get_mut(host.as_str()).and_then(|h| {
                    h.services
                        .iter_mut()
                        .find(|(i, _)| *i == ri)
                        .map(|(_, s)| *s = state)
                })
            };
            if placed.is_none() {
                stale.services.push((rule, cluster, host, None));
            }
        }
        for (cluster, since, down, total) in loaded.incidents {
            let slot = self.cluster_slot(&cluster);
            slot.incident = Some(Incident {
                output: incident_text(down, total),
                cluster,
                since,
                down,
                total,
            });
        }
        stale
    }

    /// Applies a new `[alerts]` and `[[alert]]` (SIGHUP). A rule is known by
    /// its name: a rule that stays keeps every target's state, attempt and
    /// flap history (also when its ranges or attempts changed, as Nagios'
    /// retention keeps a service's state across a reload); a target its new
    /// globs no longer match, and every target of a removed rule, is dropped
    /// (the returned batch deletes their rows; no event: nothing recovered);
    /// a new rule starts OK/HARD/1. Host states, incidents and warm-up are
    /// untouched. Returns the rows to delete and how many problem states
    /// (not OK/HARD/1) were dropped, by rule.
    pub fn reload(
        &mut self,
        cfg: AlertsConfig,
        rules: &[AlertRule],
    ) -> (Batch, std::collections::BTreeMap<String, usize>) {
        let old_rules = std::mem::take(&mut self.rules);
        let old_clusters = std::mem::take(&mut self.clusters);
        self.rules = rules
            .iter()
            .take(usize::from(u16::MAX))
            .map(|r| Rule::compile(r, cfg.max_check_attempts))
            .collect();
        self.by_name = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i as u16))
            .collect();
        self.cfg = cfg;
        let mut batch = Batch::default();
        let mut dropped = std::collections::BTreeMap::<String, usize>::new();
        let mut drop_state = |rule: &str, cluster: &str, host: &str, s: &SvcState| {
            if !s.is_quiet() {
                *dropped.entry(rule.to_string()).or_default() += 1;
                batch
                    .services
                    .push((rule.to_string(), cluster.into(), host.into(), None));
            }
        };
        for (name, old) in old_clusters {
            let rules = &self.rules;
            let slot = cluster_slot(rules, &mut self.clusters, &name);
            slot.incident = old.incident;
            slot.seen = old.seen;
            for ocr in old.cluster_rules {
                let rn = &old_rules[usize::from(ocr.rule)].name;
                match slot
                    .cluster_rules
                    .iter_mut()
                    .find(|s| rules[usize::from(s.rule)].name == *rn)
                {
                    Some(n) => {
                        n.state = ocr.state;
                        n.value = ocr.value;
                    }
                    None => drop_state(rn, &name, "", &ocr.state),
                }
            }
            for (hname, ohs) in old.hosts {
                let mut hs = Self::new_host(rules, slot, &hname);
                hs.state = ohs.state;
                hs.seen = ohs.seen;
                hs.heard = ohs.heard;
                hs.first_heard = ohs.first_heard;
                hs.tn = ohs.tn;
                hs.tmax = ohs.tmax;
                hs.stored = ohs.stored;
                for (ori, st) in ohs.services {
                    let rn = &old_rules[usize::from(ori)].name;
                    match hs
                        .services
                        .iter_mut()
                        .find(|(i, _)| rules[usize::from(*i)].name == *rn)
                    {
                        Some((_, s)) => *s = st,
                        None => drop_state(rn, &name, &hname, &st),
                    }
                }
                slot.hosts.insert(hname, hs);
            }
        }
        (batch, dropped)
    }

    /// True within `warmup_secs` of start.
    pub fn warming_up(&self, now: i64) -> bool {
        now < self.started + i64::from(self.cfg.warmup_secs)
    }

    /// One evaluation of `snap` at `now`.
    pub fn evaluate(&mut self, snap: &Snapshot, now: i64) -> Output {
        self.pass += 1;
        let pass = self.pass;
        let warming = self.warming_up(now);
        let flap = self.flap();
        let host_max = self.host_max();
        let mut batch = Batch::default();
        let mut health = HealthSnapshot {
            time: now,
            warming_up: warming,
            hosts: Vec::with_capacity(self.hosts_known),
            services: Vec::with_capacity(self.problems_known),
            incidents: Vec::new(),
        };
        let rules = std::mem::take(&mut self.rules);
        let cfg = self.cfg.clone();
        let mut pending: Vec<Event> = Vec::new();
        for c in &snap.clusters {
            let slot = cluster_slot(&rules, &mut self.clusters, &c.name);
            slot.seen = pass;
            for acc in &mut slot.cluster_rules {
                acc.acc = Acc {
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                    ..Acc::default()
                };
            }
            pending.clear();
            for h in &c.hosts {
                if !slot.hosts.contains_key(h.name.as_str()) {
                    let mut s = Self::new_host(&rules, slot, &h.name);
                    s.state.since = now;
                    slot.hosts.insert(h.name.as_str().into(), s);
                }
                let Some(hs) = slot.hosts.get_mut(h.name.as_str()) else {
                    continue;
                };
                hs.seen = pass;
                if !hs.heard {
                    hs.heard = true;
                    hs.first_heard = now;
                }
                hs.tn = h.tn;
                hs.tmax = u64::from(h.tmax);
                let down = if cfg.host_down_after_secs > 0 {
                    h.tn > u64::from(cfg.host_down_after_secs)
                } else {
                    !h.alive
                };
                for &i in &hs.in_cluster_rules {
                    if let Some(cr) = slot.cluster_rules.get_mut(usize::from(i)) {
                        accumulate(&rules[usize::from(cr.rule)], &mut cr.acc, h, down);
                    }
                }
                if warming {
                    if !hs.stored {
                        hs.stored = true;
                        batch
                            .hosts
                            .push((c.name.clone(), h.name.clone(), Some(hs.state)));
                    }
                    push_service_health(
                        &mut health,
                        &rules,
                        &c.name,
                        &h.name,
                        hs,
                        Some(h),
                        host_max,
                    );
                    continue;
                }
                let before = hs.state;
                let o = hs.state.check(!down, host_max, now, flap);
                if let Some(ch) = o.change {
                    pending.push(host_event(&c.name, &h.name, ch, host_max, h.tn, now));
                }
                if let Some(k) = o.flap {
                    batch.events.push(host_flap_event(
                        &c.name, &h.name, &hs.state, k, o.percent, flap, host_max, now,
                    ));
                }
                if hs.state != before || !hs.stored {
                    hs.stored = true;
                    batch
                        .hosts
                        .push((c.name.clone(), h.name.clone(), Some(hs.state)));
                }
                if hs.state.up && now - hs.first_heard >= i64::from(cfg.warmup_secs) {
                    evaluate_services(&rules, &c.name, h, hs, now, flap, &mut batch);
                } else if hs.state.up {
                    // Within the host's own warm-up, only present metrics count.
                    evaluate_present(&rules, &c.name, h, hs, now, flap, &mut batch);
                }
                push_service_health(&mut health, &rules, &c.name, &h.name, hs, Some(h), host_max);
            }
            let ctx = Pass {
                rules: &rules,
                pass,
                warming,
                host_max,
                now,
                flap,
            };
            unseen_hosts(&ctx, &c.name, slot, &mut pending, &mut batch, &mut health);
            if !warming {
                storm(
                    &cfg,
                    &c.name,
                    slot,
                    now,
                    &mut pending,
                    &mut batch,
                    &self.stats,
                );
                batch.events.append(&mut pending);
                evaluate_cluster_rules(&rules, c, slot, now, flap, &mut batch);
            }
            push_cluster_health(&mut health, &rules, &c.name, slot);
        }
        // Clusters known from the store that the snapshot does not have (a
        // data source not polled since start): their hosts are not heard.
        for (name, slot) in self.clusters.iter_mut() {
            if slot.seen == pass {
                continue;
            }
            pending.clear();
            let ctx = Pass {
                rules: &rules,
                pass,
                warming,
                host_max,
                now,
                flap,
            };
            unseen_hosts(&ctx, name, slot, &mut pending, &mut batch, &mut health);
            if !warming {
                storm(&cfg, name, slot, now, &mut pending, &mut batch, &self.stats);
                batch.events.append(&mut pending);
            }
            push_cluster_health(&mut health, &rules, name, slot);
        }
        self.rules = rules;
        self.hosts_known = health.hosts.len();
        self.problems_known = health.services.len();
        Output { batch, health }
    }
}

/// What every cluster's part of a pass shares.
struct Pass<'a> {
    rules: &'a [Rule],
    pass: u64,
    warming: bool,
    host_max: u8,
    now: i64,
    flap: Option<FlapParams>,
}

/// Hosts of `slot` the snapshot does not have this pass: forgotten when they
/// reported since start (expired by `host_dmax`), else not heard: DOWN once
/// warm-up is over.
fn unseen_hosts(
    ctx: &Pass<'_>,
    cluster: &str,
    slot: &mut ClusterSlot,
    pending: &mut Vec<Event>,
    batch: &mut Batch,
    health: &mut HealthSnapshot,
) {
    let mut forget = Vec::new();
    for (name, hs) in slot.hosts.iter_mut() {
        if hs.seen == ctx.pass {
            continue;
        }
        if hs.heard {
            // Gone after reporting: expired by host_dmax.
            forget.push(name.clone());
            continue;
        }
        if !ctx.warming {
            let before = hs.state;
            let o = hs.state.check(false, ctx.host_max, ctx.now, ctx.flap);
            if let Some(ch) = o.change {
                pending.push(host_event(cluster, name, ch, ctx.host_max, 0, ctx.now));
            }
            if let Some(k) = o.flap {
                batch.events.push(host_flap_event(
                    cluster,
                    name,
                    &hs.state,
                    k,
                    o.percent,
                    ctx.flap,
                    ctx.host_max,
                    ctx.now,
                ));
            }
            if hs.state != before {
                batch
                    .hosts
                    .push((cluster.to_string(), name.to_string(), Some(hs.state)));
            }
        }
        push_service_health(health, ctx.rules, cluster, name, hs, None, ctx.host_max);
    }
    for name in forget {
        if let Some(hs) = slot.hosts.remove(&name) {
            batch
                .hosts
                .push((cluster.to_string(), name.to_string(), None));
            for (ri, s) in &hs.services {
                if !s.is_quiet() {
                    batch.services.push((
                        ctx.rules[usize::from(*ri)].name.clone(),
                        cluster.to_string(),
                        name.to_string(),
                        None,
                    ));
                }
            }
        }
    }
}

fn cluster_slot<'a>(
    rules: &[Rule],
    clusters: &'a mut HashMap<Box<str>, ClusterSlot>,
    name: &str,
) -> &'a mut ClusterSlot {
    if !clusters.contains_key(name) {
        let mut host_rules = Vec::new();
        let mut cluster_rules = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            if !r.matches_cluster(name) {
                continue;
            }
            if r.aggregate == Aggregate::None {
                host_rules.push(i as u16);
            } else {
                cluster_rules.push(ClusterRuleSlot {
                    rule: i as u16,
                    state: SvcState::default(),
                    acc: Acc::default(),
                    value: None,
                });
            }
        }
        clusters.insert(
            name.into(),
            ClusterSlot {
                host_rules,
                cluster_rules,
                hosts: HashMap::new(),
                incident: None,
                seen: 0,
            },
        );
    }
    clusters
        .get_mut(name)
        .unwrap_or_else(|| unreachable!("inserted above"))
}

fn incident_text(down: u32, total: u32) -> String {
    format!("{down} of {total} hosts DOWN")
}

fn storm(
    cfg: &AlertsConfig,
    cluster: &str,
    slot: &mut ClusterSlot,
    now: i64,
    pending: &mut Vec<Event>,
    batch: &mut Batch,
    stats: &Stats,
) {
    if cfg.storm_fraction <= 0.0 && slot.incident.is_none() {
        return;
    }
    let total = slot.hosts.len() as u32;
    let window = i64::from(cfg.storm_window_secs);
    let (mut down, mut recent) = (0u32, 0u32);
    for hs in slot.hosts.values() {
        if !hs.state.up {
            down += 1;
            if hs.state.since >= now - window {
                recent += 1;
            }
        }
    }
    let threshold = (cfg.storm_fraction * f64::from(total))
        .ceil()
        .max(f64::from(cfg.storm_min_hosts)) as u32;
    let suppress = |pending: &mut Vec<Event>| {
        let n = pending
            .iter()
            .filter(|e| matches!(e.kind, EventKind::HostDown | EventKind::HostUp))
            .count();
        stats
            .suppressed_by_storm
            .fetch_add(n as u64, Ordering::Relaxed);
        pending.retain(|e| !matches!(e.kind, EventKind::HostDown | EventKind::HostUp));
    };
    let mk = |kind, state: &str, output: String| Event {
        id: 0,
        time: now,
        kind,
        cluster: cluster.to_string(),
        host: None,
        rule: None,
        metric: None,
        state: state.into(),
        state_type: StateType::Hard,
        attempt: 1,
        max_attempts: 1,
        value: Some(f64::from(down)),
        output,
        handler: None,
    };
    match &mut slot.incident {
        None if cfg.storm_fraction > 0.0 && recent >= threshold => {
            suppress(pending);
            let output =
                format!("{recent} of {total} hosts went DOWN within {window} s ({down} DOWN)");
            pending.push(mk(EventKind::ClusterIncident, "CRITICAL", output.clone()));
            slot.incident = Some(Incident {
                cluster: cluster.to_string(),
                since: now,
                down,
                total,
                output,
            });
            batch
                .incidents
                .push((cluster.to_string(), Some((now, down, total))));
        }
        None => {}
        Some(inc) => {
            suppress(pending);
            if down < threshold {
                let output =
                    format!("{down} of {total} hosts DOWN, below the storm threshold {threshold}");
                pending.push(mk(EventKind::ClusterRecovered, "OK", output));
                slot.incident = None;
                batch.incidents.push((cluster.to_string(), None));
            } else if inc.down != down || inc.total != total {
                inc.down = down;
                inc.total = total;
                batch
                    .incidents
                    .push((cluster.to_string(), Some((inc.since, down, total))));
            }
        }
    }
}

/// A host's `flap_start`/`flap_stop` (Nagios' host wording uses `>`/`<`).
#[allow(clippy::too_many_arguments)]
fn host_flap_event(
    cluster: &str,
    host: &str,
    s: &HostState,
    kind: EventKind,
    percent: Option<f64>,
    flap: Option<FlapParams>,
    max: u8,
    now: i64,
) -> Event {
    let pct = percent.unwrap_or(0.0);
    let (high, low) = flap.map_or((0.0, 0.0), |p| (p.high, p.low));
    Event {
        id: 0,
        time: now,
        kind,
        cluster: cluster.into(),
        host: Some(host.into()),
        rule: None,
        metric: None,
        state: if s.up { "UP" } else { "DOWN" }.into(),
        state_type: s.state_type(),
        attempt: u32::from(s.attempt),
        max_attempts: u32::from(max),
        value: percent,
        output: if kind == EventKind::FlapStart {
            format!(
                "{host} appears to have started flapping ({pct:.1}% change > {high:.1}% threshold)"
            )
        } else {
            format!(
                "{host} appears to have stopped flapping ({pct:.1}% change < {low:.1}% threshold)"
            )
        },
        handler: None,
    }
}

fn host_event(cluster: &str, host: &str, ch: Change, max: u8, tn: u64, now: i64) -> Event {
    let up = ch.kind == EventKind::HostUp;
    Event {
        id: 0,
        time: now,
        kind: ch.kind,
        cluster: cluster.into(),
        host: Some(host.into()),
        rule: None,
        metric: None,
        state: if up { "UP" } else { "DOWN" }.into(),
        state_type: ch.state_type,
        attempt: u32::from(ch.attempt),
        max_attempts: u32::from(max),
        value: None,
        output: if up {
            format!("{host} reports again")
        } else if tn > 0 {
            format!("{host} not heard for {tn} s")
        } else {
            format!("{host} not heard since the aggregator started")
        },
        handler: None,
    }
}

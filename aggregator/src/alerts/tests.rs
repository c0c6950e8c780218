//! The engine over real snapshots: rules, hosts, warm-up, storm control,
//! cluster rules, and persistence across a restart through the store.

use super::engine::{Engine, Output};
use super::{Event, EventKind, StateType, Stats, store};
use crate::config::alerts::{Aggregate, AlertRule, AlertsConfig};
use crate::state::{Limits, State};
use compact_str::CompactString;
use ganglion_proto::model::{MetricType, Slope};
use ganglion_proto::range::Status;
use ganglion_proto::xml::{Cluster, Host, Metric};
use std::sync::Arc;
use std::time::Duration;

const T0: i64 = 1_700_000_000;

fn state() -> State {
    State::new(
        "g".into(),
        "http://x/".into(),
        Vec::new(),
        Limits {
            max_hosts: 100_000,
            max_metrics: 1000,
            max_string_bytes: 1024,
        },
        Arc::default(),
    )
    .snapshot_interval(Duration::ZERO)
}

/// A host: name, TN, metrics as `(name, VAL)` (a non-number VAL is a string metric).
struct H<'a>(&'a str, u64, Vec<(&'a str, &'a str)>);

fn feed(st: &State, cluster: &str, hosts: &[H<'_>], now: i64) {
    let c = Cluster {
        name: cluster.into(),
        localtime: now as u64,
        owner: String::new(),
        latlong: String::new(),
        url: String::new(),
        hosts: hosts
            .iter()
            .map(|H(name, tn, metrics)| Host {
                name: (*name).into(),
                ip: "10.0.0.1".into(),
                reported: now as u64 - tn,
                tn: *tn,
                tmax: 20,
                metrics: metrics
                    .iter()
                    .map(|(m, v)| Metric {
                        name: CompactString::from(*m),
                        val: CompactString::from(*v),
                        metric_type: if v.parse::<f64>().is_ok() {
                            MetricType::Float
                        } else {
                            MetricType::String
                        },
                        units: "".into(),
                        tn: 1,
                        tmax: 60,
                        dmax: 0,
                        slope: Slope::Both,
                        source: "gmond".into(),
                        extras: Vec::new(),
                    })
                    .collect(),
                ..Host::default()
            })
            .collect(),
        hosts_summary: None,
        metrics: Vec::new(),
        complete: true,
    };
    st.replace_polled_cluster(&format!("src-{cluster}"), c, now as u64)
        .unwrap();
}

fn cfg() -> AlertsConfig {
    AlertsConfig {
        warmup_secs: 0,
        ..AlertsConfig::default()
    }
}

fn load_rule(max: Option<u32>) -> AlertRule {
    AlertRule {
        name: "load".into(),
        metric: "load_one".into(),
        warning: "4".into(),
        critical: "8".into(),
        max_check_attempts: max,
        ..AlertRule::default()
    }
}

fn engine(cfg: AlertsConfig, rules: &[AlertRule]) -> Engine {
    Engine::new(cfg, rules, T0, Arc::new(Stats::default()))
}

fn step(e: &mut Engine, st: &State, now: i64) -> Output {
    e.evaluate(&st.snapshot(now as u64), now)
}

fn kinds(o: &Output) -> Vec<(EventKind, String, StateType, u32)> {
    o.batch
        .events
        .iter()
        .map(|e| (e.kind, e.state.clone(), e.state_type, e.attempt))
        .collect()
}

use EventKind::*;
use StateType::{Hard, Soft};

#[test]
fn a_metric_over_critical_goes_soft_then_hard_then_recovers() {
    let st = state();
    let mut e = engine(cfg(), &[load_rule(None)]);
    let mut t = T0;
    let mut run = |load: &str| {
        t += 15;
        feed(&st, "c", &[H("n1", 1, vec![("load_one", load)])], t);
        step(&mut e, &st, t)
    };
    assert!(kinds(&run("1.0")).is_empty());
    let o = run("9.5");
    assert_eq!(kinds(&o), vec![(Alert, "CRITICAL".into(), Soft, 1)]);
    let ev = &o.batch.events[0];
    assert_eq!(ev.output, "load_one = 9.5 (critical 8)");
    assert_eq!(
        (ev.rule.as_deref(), ev.host.as_deref()),
        (Some("load"), Some("n1"))
    );
    assert_eq!(
        kinds(&run("9.5")),
        vec![(Alert, "CRITICAL".into(), Soft, 2)]
    );
    let o = run("9.5");
    assert_eq!(kinds(&o), vec![(Alert, "CRITICAL".into(), Hard, 3)]);
    let s = &o.health.services[0];
    assert_eq!(
        (s.state, s.state_type, s.attempt),
        (Status::Critical, Hard, 3)
    );
    assert_eq!(s.perfdata, "'load_one'=9.5;4;8;;");
    assert!(kinds(&run("9.0")).is_empty(), "same HARD problem is silent");
    assert_eq!(kinds(&run("5")), vec![(Alert, "WARNING".into(), Hard, 3)]);
    let o = run("1");
    assert_eq!(kinds(&o), vec![(Recovery, "OK".into(), Hard, 3)]);
    assert!(o.health.services.is_empty(), "OK/HARD is not listed");
}

#[test]
fn missing_stale_or_text_metrics_are_unknown() {
    let st = state();
    let rules = [
        load_rule(Some(1)),
        AlertRule {
            name: "os".into(),
            metric: "os_name".into(),
            critical: "1".into(),
            max_check_attempts: Some(1),
            ..AlertRule::default()
        },
        AlertRule {
            name: "gone".into(),
            metric: "no_such_metric".into(),
            critical: "1".into(),
            max_check_attempts: Some(1),
            ..AlertRule::default()
        },
    ];
    let mut e = engine(cfg(), &rules);
    feed(
        &st,
        "c",
        &[H("n1", 1, vec![("load_one", "1"), ("os_name", "Linux")])],
        T0 + 15,
    );
    let o = step(&mut e, &st, T0 + 15);
    let mut got: Vec<_> = o
        .batch
        .events
        .iter()
        .map(|e| (e.rule.clone().unwrap(), e.state.clone(), e.output.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "gone".into(),
                "UNKNOWN".into(),
                "no_such_metric missing".into()
            ),
            ("os".into(), "UNKNOWN".into(), "os_name not numeric".into()),
        ]
    );
}

#[test]
fn a_host_that_stops_goes_down_hard_after_its_attempts_and_comes_back() {
    let st = state();
    let mut e = engine(cfg(), &[load_rule(Some(1))]);
    let mut t = T0;
    let mut run = |tn: u64, load: &str| {
        t += 15;
        feed(&st, "c", &[H("n1", tn, vec![("load_one", load)])], t);
        step(&mut e, &st, t)
    };
    assert!(kinds(&run(1, "1")).is_empty());
    // TN ≥ 4 × TMAX (80 s): DOWN, SOFT 1 and 2 silent, HARD 3 reported.
    let o = run(80, "9");
    assert!(kinds(&o).is_empty());
    assert_eq!(
        (o.health.hosts[0].up, o.health.hosts[0].state_type),
        (false, Soft)
    );
    assert!(kinds(&run(95, "9")).is_empty());
    let o = run(110, "9");
    assert_eq!(kinds(&o), vec![(HostDown, "DOWN".into(), Hard, 3)]);
    assert!(
        o.health.services.is_empty(),
        "rules of a DOWN host are held"
    );
    assert!(kinds(&run(125, "9")).is_empty());
    let o = run(1, "1");
    assert_eq!(kinds(&o), vec![(HostUp, "UP".into(), Hard, 3)]);
}

#[test]
fn host_down_after_secs_overrides_tmax() {
    let st = state();
    let c = AlertsConfig {
        host_down_after_secs: 30,
        max_check_attempts: 1,
        ..cfg()
    };
    let mut e = engine(c, &[]);
    feed(&st, "c", &[H("n1", 31, vec![])], T0 + 1);
    let o = step(&mut e, &st, T0 + 1);
    assert_eq!(kinds(&o), vec![(HostDown, "DOWN".into(), Hard, 1)]);
}

#[test]
fn warm_up_makes_no_events_and_hosts_not_heard_are_not_down() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.sqlite");
    let mut db = store::open(&path).unwrap();
    // A first run learns two hosts.
    let st = state();
    let mut e = engine(
        AlertsConfig {
            max_check_attempts: 1,
            ..cfg()
        },
        &[],
    );
    feed(&st, "c", &[H("a", 1, vec![]), H("b", 1, vec![])], T0);
    let mut o = step(&mut e, &st, T0);
    store::write_batch(&mut db, &mut o.batch).unwrap();
    // Restart with a 60 s warm-up; only `a` reports again.
    let st = state();
    let c = AlertsConfig {
        warmup_secs: 60,
        max_check_attempts: 1,
        ..AlertsConfig::default()
    };
    let mut e = Engine::new(c, &[], T0 + 100, Arc::default());
    e.restore(store::load(&db).unwrap());
    feed(&st, "c", &[H("a", 1, vec![])], T0 + 110);
    let o = step(&mut e, &st, T0 + 110);
    assert!(o.health.warming_up);
    assert!(o.batch.events.is_empty());
    assert!(
        o.health.hosts.iter().all(|h| h.up),
        "b not heard yet is not DOWN"
    );
    feed(&st, "c", &[H("a", 1, vec![])], T0 + 165);
    let o = step(&mut e, &st, T0 + 165);
    assert!(!o.health.warming_up);
    let down: Vec<_> = o
        .batch
        .events
        .iter()
        .map(|e| (e.kind, e.host.clone()))
        .collect();
    assert_eq!(down, vec![(HostDown, Some("b".into()))]);
}

#[test]
fn twenty_of_thirty_down_at_once_is_one_cluster_incident() {
    let st = state();
    let mut e = engine(cfg(), &[load_rule(None)]);
    let names: Vec<String> = (0..30).map(|i| format!("n{i:02}")).collect();
    let hosts = |tn_dead: u64| -> Vec<H<'_>> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| H(n, if i < 20 { tn_dead } else { 1 }, vec![("load_one", "1")]))
            .collect()
    };
    let mut all = Vec::new();
    let mut t = T0;
    for tn in [1, 1, 80, 95, 110, 125, 140] {
        t += 15;
        feed(&st, "c", &hosts(tn), t);
        let o = step(&mut e, &st, t);
        all.extend(o.batch.events);
        if tn == 140 {
            assert_eq!(o.health.hosts.iter().filter(|h| !h.up).count(), 20);
            assert_eq!(o.health.incidents.len(), 1);
            assert_eq!(o.health.incidents[0].down, 20);
        }
    }
    let k: Vec<_> = all.iter().map(|e| e.kind).collect();
    assert_eq!(k, vec![ClusterIncident], "{all:#?}");
    assert_eq!(all[0].host, None);
    // They come back: one cluster_recovered, no host_up each.
    t += 15;
    feed(&st, "c", &hosts(1), t);
    let o = step(&mut e, &st, t);
    assert_eq!(kinds(&o), vec![(ClusterRecovered, "OK".into(), Hard, 1)]);
}

#[test]
fn a_few_hosts_down_are_reported_one_by_one() {
    let st = state();
    let c = AlertsConfig {
        max_check_attempts: 1,
        ..cfg()
    };
    let mut e = engine(c, &[]);
    let names: Vec<String> = (0..30).map(|i| format!("n{i:02}")).collect();
    let hs: Vec<H<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| H(n, if i < 3 { 80 } else { 1 }, vec![]))
        .collect();
    feed(&st, "c", &hs, T0 + 15);
    let o = step(&mut e, &st, T0 + 15);
    assert_eq!(o.batch.events.len(), 3);
    assert!(o.batch.events.iter().all(|e| e.kind == HostDown));
}

#[test]
fn state_survives_a_restart_without_duplicate_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.sqlite");
    let mut db = store::open(&path).unwrap();
    let rules = [load_rule(Some(1))];
    let c = AlertsConfig {
        max_check_attempts: 1,
        ..cfg()
    };
    let hosts = |down_tn: u64, load: &'static str| {
        vec![
            H("busy", 1, vec![("load_one", load)]),
            H("dead", down_tn, vec![("load_one", "1")]),
        ]
    };
    let st = state();
    let mut e = engine(c.clone(), &rules);
    feed(&st, "c", &hosts(1, "1"), T0);
    store::write_batch(&mut db, &mut step(&mut e, &st, T0).batch).unwrap();
    feed(&st, "c", &hosts(80, "9"), T0 + 15);
    let mut o = step(&mut e, &st, T0 + 15);
    assert_eq!(o.batch.events.len(), 2, "{:?}", kinds(&o));
    store::write_batch(&mut db, &mut o.batch).unwrap();
    drop(e);
    // Restart: the same conditions give no event.
    let st = state();
    let mut e = Engine::new(c, &rules, T0 + 100, Arc::default());
    e.restore(store::load(&db).unwrap());
    feed(&st, "c", &hosts(200, "9.5"), T0 + 115);
    let o = step(&mut e, &st, T0 + 115);
    assert!(o.batch.events.is_empty(), "{:?}", kinds(&o));
    assert_eq!(o.health.services.len(), 1);
    assert_eq!(o.health.services[0].state, Status::Critical);
    // And changes after it are reported once.
    feed(&st, "c", &hosts(1, "1"), T0 + 130);
    let o = step(&mut e, &st, T0 + 130);
    let mut k: Vec<_> = o.batch.events.iter().map(|e| e.kind).collect();
    k.sort_by_key(|k| k.as_str());
    assert_eq!(k, vec![HostUp, Recovery]);
}

#[test]
fn cluster_rules_sum_and_k_of_n() {
    let st = state();
    let rules = [
        AlertRule {
            name: "total-load".into(),
            metric: "load_one".into(),
            aggregate: Aggregate::Sum,
            critical: "10".into(),
            max_check_attempts: Some(1),
            ..AlertRule::default()
        },
        AlertRule {
            name: "busy-hosts".into(),
            metric: "load_one".into(),
            aggregate: Aggregate::Count,
            each: "~:4".into(),
            warning: "1".into(),
            max_check_attempts: Some(1),
            ..AlertRule::default()
        },
    ];
    let mut e = engine(cfg(), &rules);
    feed(
        &st,
        "c",
        &[
            H("a", 1, vec![("load_one", "5")]),
            H("b", 1, vec![("load_one", "5")]),
            H("c", 1, vec![("load_one", "1")]),
        ],
        T0 + 15,
    );
    let o = step(&mut e, &st, T0 + 15);
    let mut got: Vec<_> = o
        .batch
        .events
        .iter()
        .map(|e| {
            (
                e.rule.clone().unwrap(),
                e.state.clone(),
                e.value,
                e.host.clone(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("busy-hosts".into(), "WARNING".into(), Some(2.0), None),
            ("total-load".into(), "CRITICAL".into(), Some(11.0), None),
        ]
    );
    assert!(o.health.services.iter().all(|s| s.host == "c"));
}

#[test]
fn rules_match_cluster_and_host_globs() {
    let st = state();
    let rule = AlertRule {
        cluster: "web*".into(),
        hosts: "front-*".into(),
        ..load_rule(Some(1))
    };
    let mut e = engine(cfg(), &[rule]);
    for c in ["web1", "db"] {
        feed(
            &st,
            c,
            &[
                H("front-1", 1, vec![("load_one", "9")]),
                H("back-1", 1, vec![("load_one", "9")]),
            ],
            T0 + 15,
        );
    }
    let o = step(&mut e, &st, T0 + 15);
    let got: Vec<_> = o
        .batch
        .events
        .iter()
        .map(|e: &Event| (e.cluster.as_str(), e.host.as_deref()))
        .collect();
    assert_eq!(got, vec![("web1", Some("front-1"))]);
}

#[test]
fn a_full_store_queue_drops_and_counts_events_and_carries_state_rows() {
    use super::{Alerts, HealthSnapshot, Inner, store::Batch, store::Msg};
    use std::sync::Mutex;
    use std::sync::atomic::Ordering::Relaxed;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(1);
    let (btx, _) = tokio::sync::broadcast::channel(16);
    let a = Alerts {
        inner: Arc::new(Inner {
            tx: btx,
            store: Some(tx.clone()),
            health: Mutex::new(Arc::new(HealthSnapshot::default())),
            reader: None,
            stats: Arc::default(),
            ctl: Mutex::new(None),
            runs: Arc::default(),
        }),
    };
    let event = |t| super::Event {
        id: 0,
        time: t,
        kind: HostDown,
        cluster: "c".into(),
        host: Some("h".into()),
        rule: None,
        metric: None,
        state: "DOWN".into(),
        state_type: Hard,
        attempt: 1,
        max_attempts: 1,
        value: None,
        output: String::new(),
        handler: None,
    };
    a.record(event(1));
    a.record(event(2));
    a.record(event(3));
    assert_eq!(a.stats().dropped_queue_full.load(Relaxed), 2);
    // A batch refused by the full queue: its events count as dropped, its
    // rows come back to be sent with the next one.
    let rows = Batch {
        events: vec![event(4)],
        hosts: vec![("c".into(), "h".into(), Some(Default::default()))],
        ..Batch::default()
    };
    let carry = a.flush(&tx, Batch::default(), rows);
    assert_eq!(a.stats().dropped_queue_full.load(Relaxed), 3);
    assert_eq!((carry.events.len(), carry.hosts.len()), (0, 1));
    drop(rx);
    a.record(event(5));
    assert_eq!(a.stats().dropped_closed.load(Relaxed), 1);
}

#[test]
fn alternating_results_start_flapping_on_the_fourth_change() {
    let st = state();
    let mut e = engine(cfg(), &[load_rule(Some(1))]);
    let mut flaps = Vec::new();
    for (i, load) in ["9", "1", "9", "1", "9"].iter().enumerate() {
        let t = T0 + 15 * (i as i64 + 1);
        feed(&st, "c", &[H("n1", 1, vec![("load_one", load)])], t);
        let o = step(&mut e, &st, t);
        for ev in o.batch.events.iter().filter(|e| e.kind == FlapStart) {
            flaps.push((i, ev.output.clone()));
        }
        if i == 4 {
            assert!(o.health.services[0].flapping);
        }
    }
    assert_eq!(
        flaps,
        vec![(
            3,
            "load appears to have started flapping (24.2% change >= 20.0% threshold)".to_string()
        )]
    );
}

#[test]
fn a_cluster_missing_from_the_snapshot_after_restart_has_its_hosts_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = store::open(&dir.path().join("a.sqlite")).unwrap();
    let c = AlertsConfig {
        max_check_attempts: 1,
        ..cfg()
    };
    let st = state();
    let mut e = engine(c.clone(), &[]);
    feed(&st, "polled", &[H("p1", 1, vec![])], T0);
    store::write_batch(&mut db, &mut step(&mut e, &st, T0).batch).unwrap();
    // After a restart the source is not polled yet: nothing in the snapshot.
    let st = state();
    let mut e = Engine::new(c, &[], T0 + 100, Arc::default());
    e.restore(store::load(&db).unwrap());
    let o = step(&mut e, &st, T0 + 115);
    assert_eq!(kinds(&o), vec![(HostDown, "DOWN".into(), Hard, 1)]);
    assert_eq!(o.health.hosts.len(), 1);
    assert!(!o.health.hosts[0].up);
}

#[test]
fn a_storm_noticed_over_several_evaluations_is_still_one_incident() {
    // The dead hosts' last reports were up to 20 s apart, so they cross
    // 4 × TMAX in three different evaluations; with 3 attempts none is
    // HARD before all are at least SOFT DOWN.
    let st = state();
    let mut e = engine(cfg(), &[]);
    let names: Vec<String> = (0..30).map(|i| format!("n{i:02}")).collect();
    let mut all = Vec::new();
    for k in 0..6u64 {
        let t = T0 + 15 * (k as i64 + 1);
        let hs: Vec<H<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let tn = if i < 20 {
                    60 + 15 * k + 10 * (i as u64 % 3)
                } else {
                    1
                };
                H(n, tn, vec![])
            })
            .collect();
        feed(&st, "c", &hs, t);
        all.extend(step(&mut e, &st, t).batch.events);
    }
    let k: Vec<_> = all.iter().map(|e| e.kind).collect();
    assert_eq!(k, vec![ClusterIncident], "{all:#?}");
}

#[test]
fn a_reload_keeps_the_state_of_rules_that_stay_drops_removed_ones_and_starts_new_ones_ok() {
    let st = state();
    let mem = |name: &str, max: u32| AlertRule {
        name: name.into(),
        metric: "mem".into(),
        critical: "50".into(),
        max_check_attempts: Some(max),
        ..AlertRule::default()
    };
    let mut e = engine(cfg(), &[load_rule(Some(1)), mem("mem", 1)]);
    let mut t = T0;
    let mut run = |e: &mut Engine| {
        t += 15;
        feed(
            &st,
            "c",
            &[H("n1", 1, vec![("load_one", "9"), ("mem", "90")])],
            t,
        );
        step(e, &st, t)
    };
    // Both CRITICAL HARD.
    let o = run(&mut e);
    assert_eq!(o.batch.events.len(), 2);
    // "mem" goes, "disk" (a new rule, 3 attempts) comes, "load" stays with
    // other thresholds and attempts.
    let disk = AlertRule {
        name: "disk".into(),
        ..mem("disk", 3)
    };
    let mut load = load_rule(Some(5));
    load.critical = "7".into();
    let (rows, dropped) = e.reload(cfg(), &[disk, load]);
    assert_eq!(dropped.get("mem"), Some(&1));
    assert_eq!(
        rows.services,
        vec![("mem".into(), "c".into(), "n1".into(), None)],
        "the removed rule's row is deleted"
    );
    let o = run(&mut e);
    // load: still CRITICAL HARD, nothing reported again; disk: SOFT 1.
    assert_eq!(kinds(&o), vec![(Alert, "CRITICAL".into(), Soft, 1)]);
    assert_eq!(o.batch.events[0].rule.as_deref(), Some("disk"));
    let load = o.health.services.iter().find(|s| s.rule == "load").unwrap();
    assert_eq!(
        (load.state, load.state_type, load.attempt),
        (Status::Critical, Hard, 1)
    );
    assert_eq!(load.critical.as_deref(), Some("7"), "new thresholds apply");
    assert!(o.health.services.iter().all(|s| s.rule != "mem"));
}

#[test]
fn a_host_that_comes_and_goes_flaps_and_says_so() {
    let st = state();
    let mut e = engine(
        AlertsConfig {
            host_down_after_secs: 30,
            max_check_attempts: 1,
            ..cfg()
        },
        &[],
    );
    let mut t = T0;
    let mut flaps = Vec::new();
    let mut last = None;
    // Four changes from the initial UP: 24.2 % (as for services).
    for tn in [100, 1, 100, 1] {
        t += 15;
        feed(&st, "c", &[H("n1", tn, vec![])], t);
        let o = step(&mut e, &st, t);
        flaps.extend(
            o.batch
                .events
                .iter()
                .filter(|e| matches!(e.kind, FlapStart | FlapStop))
                .cloned(),
        );
        last = Some(o);
    }
    assert_eq!(flaps.len(), 1, "{flaps:?}");
    let f = &flaps[0];
    assert_eq!(f.kind, FlapStart);
    assert_eq!((f.host.as_deref(), f.rule.as_deref()), (Some("n1"), None));
    assert!(
        f.output
            .starts_with("n1 appears to have started flapping (24.2% change > 20.0% threshold"),
        "{}",
        f.output
    );
    let o = last.unwrap();
    assert!(o.health.hosts[0].flapping);
    assert!(
        o.batch
            .hosts
            .iter()
            .any(|(_, h, s)| h == "n1" && s.is_some_and(|s| s.flapping)),
        "the flag is persisted"
    );
}

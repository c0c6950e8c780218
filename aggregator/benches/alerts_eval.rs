//! The health engine's cost per evaluation (issue #17 item 6): 100 rules
//! against 33,000 hosts × 30 metrics (33 clusters of 1,000 hosts), about 1 %
//! of (rule, host) pairs in a problem state, so the health listing is not
//! empty. `cargo bench -p ganglion-aggregator --bench alerts_eval`.
//!
//! `steady` is what every step costs once the states have settled, health
//! listing included (the snapshot is the shared one every reader uses,
//! rebuilt once a second whatever the engine does, so it is not counted);
//! `first` is the first evaluation, which creates every state;
//! `steady_all_ok` is `steady` with thresholds no value reaches. The share
//! of one core is `steady / 15 s`.

use criterion::{Criterion, criterion_group, criterion_main};
use ganglion_aggregator::alerts::engine::Engine;
use ganglion_aggregator::config::alerts::{AlertRule, AlertsConfig};
use ganglion_aggregator::state::{Limits, State};
use ganglion_proto::model::{MetricType, Slope};
use ganglion_proto::xml::{Cluster, Host, Metric};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

const CLUSTERS: usize = 33;
const HOSTS: usize = 1000;
const METRICS: usize = 30;
const RULES: usize = 100;
const NOW: u64 = 1_700_000_000;

fn state() -> State {
    let st = State::new(
        "grid".into(),
        "http://localhost/".into(),
        Vec::new(),
        Limits {
            max_hosts: 100_000,
            max_metrics: 1000,
            max_string_bytes: 1024,
        },
        Arc::default(),
    )
    .snapshot_interval(Duration::ZERO);
    for c in 0..CLUSTERS {
        let hosts = (0..HOSTS)
            .map(|h| Host {
                name: format!("c{c:02}-node{h:04}"),
                ip: "10.0.0.1".into(),
                reported: NOW - 5,
                tn: 5,
                tmax: 20,
                metrics: (0..METRICS)
                    .map(|m| Metric {
                        name: format!("m{m:02}").into(),
                        // 0.0..99.9: one value in a hundred is ≥ 99.
                        val: format!("{:.1}", ((h * 7 + m * 13 + c) % 1000) as f64 / 10.0).into(),
                        metric_type: MetricType::Float,
                        units: "u".into(),
                        tn: 5,
                        tmax: 60,
                        dmax: 0,
                        slope: Slope::Both,
                        source: "gmond".into(),
                        extras: Vec::new(),
                    })
                    .collect(),
                ..Host::default()
            })
            .collect();
        let cl = Cluster {
            name: format!("cluster{c:02}"),
            localtime: NOW,
            owner: String::new(),
            latlong: String::new(),
            url: String::new(),
            hosts,
            hosts_summary: None,
            metrics: Vec::new(),
            complete: true,
        };
        st.replace_polled_cluster(&format!("src{c}"), cl, NOW)
            .unwrap();
    }
    st
}

fn rules_with(warning: &str, critical: &str) -> Vec<AlertRule> {
    let mut r = rules();
    for x in &mut r {
        x.warning = warning.into();
        x.critical = critical.into();
    }
    r
}

fn rules() -> Vec<AlertRule> {
    (0..RULES)
        .map(|i| AlertRule {
            name: format!("rule{i:03}"),
            metric: format!("m{:02}", i % METRICS),
            cluster: if i % 2 == 0 {
                "*".into()
            } else {
                "cluster*".into()
            },
            hosts: if i % 3 == 0 {
                "c*-node*".into()
            } else {
                "*".into()
            },
            warning: "99".into(),
            critical: "99.5".into(),
            ..AlertRule::default()
        })
        .collect()
}

fn alerts_eval(c: &mut Criterion) {
    let st = state();
    let snap = st.snapshot(NOW);
    let cfg = AlertsConfig {
        warmup_secs: 0,
        ..AlertsConfig::default()
    };
    let mut g = c.benchmark_group("alerts_eval");
    g.sample_size(10);
    g.bench_function("first", |b| {
        b.iter_batched(
            || Engine::new(cfg.clone(), &rules(), NOW as i64, Arc::default()),
            |mut e| black_box(e.evaluate(&snap, NOW as i64).health.services.len()),
            criterion::BatchSize::PerIteration,
        )
    });
    let mut e = Engine::new(cfg.clone(), &rules(), NOW as i64, Arc::default());
    let mut t = NOW as i64;
    for _ in 0..5 {
        t += 15;
        e.evaluate(&snap, t);
    }
    let problems = e.evaluate(&snap, t).health.services.len();
    eprintln!(
        "{} (rule, host) pairs, {problems} not OK",
        CLUSTERS * HOSTS * RULES
    );
    g.bench_function("steady", |b| {
        b.iter(|| {
            t += 15;
            black_box(e.evaluate(&snap, t).batch.events.len())
        })
    });
    // The same grid with every pair OK: the per-(rule, host) cost alone.
    let mut q = Engine::new(
        cfg.clone(),
        &rules_with("200", "300"),
        NOW as i64,
        Arc::default(),
    );
    let mut tq = NOW as i64;
    q.evaluate(&snap, tq);
    g.bench_function("steady_all_ok", |b| {
        b.iter(|| {
            tq += 15;
            black_box(q.evaluate(&snap, tq).health.hosts.len())
        })
    });
    g.finish();
}

criterion_group!(benches, alerts_eval);
criterion_main!(benches);

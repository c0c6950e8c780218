//! Rules and cluster rules: a metric's value looked up in a host, classified
//! against the rule's ranges, turned into a state-machine result, an event
//! and the plugin-style output and perfdata Nagios shows.

use super::*;

/// The metric's value or why there is none.
pub(super) fn lookup<'a>(h: &'a HostSnap, metric: &str) -> Result<(f64, &'a str), &'static str> {
    lookup_at(h, metric, &mut 0)
}

/// As [`lookup`], trying position `hint` first and leaving the found
/// position there (a host's metrics rarely move).
pub(super) fn lookup_at<'a>(
    h: &'a HostSnap,
    metric: &str,
    hint: &mut u8,
) -> Result<(f64, &'a str), &'static str> {
    let i = match h.metrics.get(usize::from(*hint)) {
        Some(m) if *m.name == *metric => usize::from(*hint),
        _ => {
            let i = h
                .metrics
                .binary_search_by(|m| (*m.name).cmp(metric))
                .map_err(|_| "missing")?;
            *hint = u8::try_from(i).unwrap_or(0);
            i
        }
    };
    let m = &h.metrics[i];
    if !host_alive(m.tn, m.tmax) {
        return Err("stale");
    }
    m.number.map(|v| (v, &*m.units)).ok_or("not numeric")
}

pub(super) fn accumulate(rule: &Rule, acc: &mut Acc, h: &HostSnap, down: bool) {
    acc.matched += 1;
    if down {
        acc.down += 1;
        return;
    }
    if rule.aggregate.is_host_count() {
        return;
    }
    if let Ok((v, _)) = lookup(h, &rule.metric) {
        acc.num += 1;
        acc.sum += v;
        acc.min = acc.min.min(v);
        acc.max = acc.max.max(v);
        if rule.each.as_ref().is_some_and(|r| r.alerts(v)) {
            acc.count += 1;
        }
    }
}

pub(super) fn max_of(r: &Rule) -> u32 {
    u32::from(r.max)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn service_event(
    r: &Rule,
    cluster: &str,
    host: Option<&str>,
    ch: Option<Change>,
    flap: Option<(EventKind, String)>,
    s: &SvcState,
    value: Option<f64>,
    output: &str,
    now: i64,
) -> impl Iterator<Item = Event> {
    let mk = |kind: EventKind, state: Status, st: StateType, attempt: u32, out: String| Event {
        id: 0,
        time: now,
        kind,
        cluster: cluster.into(),
        host: host.map(Into::into),
        rule: Some(r.name.clone()),
        metric: (!r.metric.is_empty()).then(|| r.metric.clone()),
        state: state.as_str().into(),
        state_type: st,
        attempt,
        max_attempts: max_of(r),
        value,
        output: out,
        handler: None,
    };
    let a = ch.map(|c| {
        let state = if c.kind == EventKind::Recovery {
            Status::Ok
        } else {
            s.state
        };
        mk(
            c.kind,
            state,
            c.state_type,
            u32::from(c.attempt),
            output.to_string(),
        )
    });
    let b = flap.map(|(k, text)| mk(k, s.state, s.state_type(), u32::from(s.attempt), text));
    a.into_iter().chain(b)
}

pub(super) fn plugin_output(
    r: &Rule,
    status: Status,
    v: Option<f64>,
    why: &str,
    units: &str,
) -> String {
    let mut o = String::new();
    match v {
        None => {
            let _ = write!(
                o,
                "{} {why}",
                if r.metric.is_empty() {
                    &r.name
                } else {
                    &r.metric
                }
            );
        }
        Some(v) => {
            let _ = write!(
                o,
                "{} = {}",
                if r.metric.is_empty() {
                    &r.name
                } else {
                    &r.metric
                },
                v
            );
            if !units.is_empty() {
                let _ = write!(o, " {units}");
            }
            let range = match status {
                Status::Critical => r.critical_text.as_deref().map(|t| ("critical", t)),
                Status::Warning => r.warning_text.as_deref().map(|t| ("warning", t)),
                _ => None,
            };
            if let Some((k, t)) = range {
                let _ = write!(o, " ({k} {t})");
            }
        }
    }
    o
}

/// Applies one result and records what changed.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply(
    r: &Rule,
    cluster: &str,
    host: &str,
    s: &mut SvcState,
    status: Status,
    value: Option<f64>,
    why: &str,
    units: &str,
    now: i64,
    flap: Option<FlapParams>,
    batch: &mut Batch,
) {
    let before = *s;
    let o = s.step(status, r.max, now, flap);
    if o.change.is_some() || o.flap.is_some() {
        let out = plugin_output(r, status, value, why, units);
        let h = (!host.is_empty()).then_some(host);
        // Nagios' wording: "… started flapping (24.2% change >= 20.0% threshold)".
        let pct = o.percent.unwrap_or(0.0);
        let flap_text = o.flap.zip(flap).map(|(k, p)| {
            let text = if k == EventKind::FlapStart {
                format!(
                    "{} appears to have started flapping ({pct:.1}% change >= {:.1}% threshold)",
                    r.name, p.high
                )
            } else {
                format!(
                    "{} appears to have stopped flapping ({pct:.1}% change <= {:.1}% threshold)",
                    r.name, p.low
                )
            };
            (k, text)
        });
        batch.events.extend(service_event(
            r, cluster, h, o.change, flap_text, s, value, &out, now,
        ));
    }
    let key_changed = (before.state, before.hard, before.attempt, before.flapping)
        != (s.state, s.hard, s.attempt, s.flapping);
    if key_changed {
        batch.services.push((
            r.name.clone(),
            cluster.into(),
            host.into(),
            (!s.is_quiet()).then_some(*s),
        ));
    }
}

pub(super) fn evaluate_services(
    rules: &[Rule],
    cluster: &str,
    h: &HostSnap,
    hs: &mut HostSlot,
    now: i64,
    flap: Option<FlapParams>,
    batch: &mut Batch,
) {
    for ((ri, s), hint) in hs.services.iter_mut().zip(hs.hints.iter_mut()) {
        let r = &rules[usize::from(*ri)];
        let (status, value, why, units) = match lookup_at(h, &r.metric, hint) {
            Ok((v, u)) => (r.status(v), Some(v), "", u),
            Err(why) => (Status::Unknown, None, why, ""),
        };
        apply(
            r, cluster, &h.name, s, status, value, why, units, now, flap, batch,
        );
    }
}

pub(super) fn evaluate_present(
    rules: &[Rule],
    cluster: &str,
    h: &HostSnap,
    hs: &mut HostSlot,
    now: i64,
    flap: Option<FlapParams>,
    batch: &mut Batch,
) {
    for ((ri, s), hint) in hs.services.iter_mut().zip(hs.hints.iter_mut()) {
        let r = &rules[usize::from(*ri)];
        match lookup_at(h, &r.metric, hint) {
            Ok((v, u)) => apply(
                r,
                cluster,
                &h.name,
                s,
                r.status(v),
                Some(v),
                "",
                u,
                now,
                flap,
                batch,
            ),
            Err("missing") => {}
            Err(why) => apply(
                r,
                cluster,
                &h.name,
                s,
                Status::Unknown,
                None,
                why,
                "",
                now,
                flap,
                batch,
            ),
        }
    }
}

pub(super) fn cluster_value(r: &Rule, a: &Acc) -> Option<f64> {
    let pct = |n: u32, of: u32| (of > 0).then(|| 100.0 * f64::from(n) / f64::from(of));
    match r.aggregate {
        Aggregate::None => None,
        Aggregate::Sum => (a.num > 0).then_some(a.sum),
        Aggregate::Num => Some(f64::from(a.num)),
        Aggregate::Mean => (a.num > 0).then(|| a.sum / f64::from(a.num)),
        Aggregate::Min => (a.num > 0).then_some(a.min),
        Aggregate::Max => (a.num > 0).then_some(a.max),
        Aggregate::Count => (a.num > 0).then_some(f64::from(a.count)),
        Aggregate::Percent => pct(a.count, a.num),
        Aggregate::HostsDown => Some(f64::from(a.down)),
        Aggregate::HostsDownPercent => pct(a.down, a.matched),
    }
}

pub(super) fn evaluate_cluster_rules(
    rules: &[Rule],
    c: &ClusterSnap,
    slot: &mut ClusterSlot,
    now: i64,
    flap: Option<FlapParams>,
    batch: &mut Batch,
) {
    for cr in &mut slot.cluster_rules {
        let r = &rules[usize::from(cr.rule)];
        let v = cluster_value(r, &cr.acc);
        cr.value = v;
        let (status, why) = match v {
            Some(v) => (r.status(v), ""),
            None => (Status::Unknown, "has no host reporting it"),
        };
        apply(
            r,
            &c.name,
            "",
            &mut cr.state,
            status,
            v,
            why,
            "",
            now,
            flap,
            batch,
        );
    }
}

pub(super) fn perfdata(r: &Rule, v: Option<f64>, units: &str) -> String {
    let label = if r.metric.is_empty() {
        &r.name
    } else {
        &r.metric
    };
    let uom = match units {
        "s" | "ms" | "us" | "%" | "B" | "KB" | "MB" | "TB" | "c" => units,
        _ => "",
    };
    let mut p = format!("'{}'=", label.replace('\'', "''"));
    match v {
        Some(v) => {
            let _ = write!(p, "{v}{uom}");
        }
        None => p.push('U'),
    }
    let _ = write!(
        p,
        ";{};{};;",
        r.warning_text.as_deref().unwrap_or(""),
        r.critical_text.as_deref().unwrap_or("")
    );
    p
}

pub(super) fn push_service_health(
    health: &mut HealthSnapshot,
    rules: &[Rule],
    cluster: &str,
    host: &str,
    hs: &HostSlot,
    h: Option<&HostSnap>,
    host_max: u8,
) {
    let s = &hs.state;
    health.hosts.push(HostHealth {
        cluster: cluster.into(),
        host: host.into(),
        up: s.up,
        state_type: s.state_type(),
        attempt: u32::from(s.attempt),
        max_attempts: u32::from(host_max),
        since: s.since,
        tn: hs.tn,
        tmax: hs.tmax,
        flapping: s.flapping,
        output: if s.up {
            String::new()
        } else if h.is_some() {
            format!("not heard for {} s", hs.tn)
        } else {
            "not heard since the aggregator started".into()
        },
    });
    for (ri, st) in &hs.services {
        if st.state == Status::Ok && st.hard && !st.flapping {
            continue;
        }
        let r = &rules[usize::from(*ri)];
        let (value, units, why) = match h.map(|h| lookup(h, &r.metric)) {
            Some(Ok((v, u))) => (Some(v), u, ""),
            Some(Err(why)) => (None, "", why),
            None => (None, "", "host not reporting"),
        };
        health.services.push(ServiceHealth {
            rule: r.name.clone(),
            cluster: cluster.into(),
            host: host.into(),
            metric: r.metric.clone(),
            state: st.state,
            state_type: st.state_type(),
            attempt: u32::from(st.attempt),
            max_attempts: max_of(r),
            since: st.since,
            value,
            units: units.into(),
            warning: r.warning_text.clone(),
            critical: r.critical_text.clone(),
            output: plugin_output(r, st.state, value, why, units),
            perfdata: perfdata(r, value, units),
            flapping: st.flapping,
        });
    }
}

pub(super) fn push_cluster_health(
    health: &mut HealthSnapshot,
    rules: &[Rule],
    cluster: &str,
    slot: &ClusterSlot,
) {
    for cr in &slot.cluster_rules {
        let st = &cr.state;
        if st.state == Status::Ok && st.hard && !st.flapping {
            continue;
        }
        let r = &rules[usize::from(cr.rule)];
        health.services.push(ServiceHealth {
            rule: r.name.clone(),
            cluster: cluster.to_string(),
            host: cluster.to_string(),
            metric: r.metric.clone(),
            state: st.state,
            state_type: st.state_type(),
            attempt: u32::from(st.attempt),
            max_attempts: max_of(r),
            since: st.since,
            value: cr.value,
            units: String::new(),
            warning: r.warning_text.clone(),
            critical: r.critical_text.clone(),
            output: plugin_output(r, st.state, cr.value, "has no host reporting it", ""),
            perfdata: perfdata(r, cr.value, ""),
            flapping: st.flapping,
        });
    }
    if let Some(i) = &slot.incident {
        health.incidents.push(i.clone());
    }
}

//! The gmond front door: datagrams received over UDP (`apply`), reverse-DNS
//! names arriving late (`rename_host`) and gmond's cleanup pass.

use ganglion_proto::model::{MetricType, special};
use ganglion_proto::xdr::{Message, MetricId, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use super::entry::{Held, HostEntry, StoredValue};
use super::intern::Meta;
use super::{ApplyOutcome, Inner, State, TypeChange, canonical_ip, cut};

/// A received datagram for [`State::apply_batch`]: its source, the
/// source's reverse-DNS name when known, and the decoded message.
pub type Datagram = (SocketAddr, Option<String>, Message);

/// A datagram's host key, host name and metric name, computed before the
/// lock is taken.
struct Prepared {
    key: String,
    name: String,
    metric_name: String,
    trust: bool,
}

impl State {
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
        let Some(p) = self.prepare(cluster, src, resolved_name, &msg) else {
            return ApplyOutcome::default();
        };
        let mut guard = self.lock();
        self.apply_prepared(&mut guard, cluster, p, resolved_name, msg, now)
    }

    /// Applies a receive batch (`recvmmsg`) to cluster `cluster` under one
    /// lock instead of one per datagram, draining `batch`; each datagram's
    /// outcome is pushed to `outcomes` with its source, in order.
    pub fn apply_batch(
        &self,
        cluster: usize,
        batch: &mut Vec<Datagram>,
        now: u64,
        outcomes: &mut Vec<(SocketAddr, ApplyOutcome)>,
    ) {
        if batch.is_empty() {
            return;
        }
        let prepared: Vec<Option<Prepared>> = batch
            .iter()
            .map(|(src, name, msg)| self.prepare(cluster, *src, name.as_deref(), msg))
            .collect();
        let mut guard = self.lock();
        for ((src, name, msg), p) in batch.drain(..).zip(prepared) {
            let out = match p {
                Some(p) => self.apply_prepared(&mut guard, cluster, p, name.as_deref(), msg, now),
                None => ApplyOutcome::default(),
            };
            outcomes.push((src, out));
        }
    }

    /// What only depends on the datagram, worked out before the lock is
    /// taken (the lock is shared with every other sender); `None` for a
    /// spoofed message without a usable `IP:name` (counted).
    fn prepare(
        &self,
        cluster: usize,
        src: SocketAddr,
        resolved_name: Option<&str>,
        msg: &Message,
    ) -> Option<Prepared> {
        let id = msg.metric_id();
        let trust = self.trust.get(cluster).copied().unwrap_or(false);
        // Host identity as gmond: source IP, or the IP part of "IP:name" when spoofed.
        let (key, name) = if id.spoof {
            match id.spoof_parts() {
                Some((ip, name)) => (ip.to_string(), name.to_string()),
                None => {
                    self.counters.bad_spoof.fetch_add(1, Ordering::Relaxed);
                    return None;
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
        Some(Prepared {
            key,
            name,
            metric_name,
            trust,
        })
    }

    /// The part of `apply` that needs the lock.
    fn apply_prepared(
        &self,
        inner: &mut Inner,
        cluster: usize,
        p: Prepared,
        resolved_name: Option<&str>,
        msg: Message,
        now: u64,
    ) -> ApplyOutcome {
        let c = &self.counters;
        let id = msg.metric_id();
        let Prepared {
            key,
            name,
            metric_name,
            trust,
        } = p;
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
        // Any decoded packet refreshes REPORTED (drives TN and liveness),
        // so every one changes what a snapshot shows.
        host.reported = now;
        ce.generation = self.bump();
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
                c.generation = self.bump();
            }
        }
    }

    /// gmond's cleanup pass: forget hosts silent longer than host_dmax and
    /// metrics whose *metadata* is older than their dmax.
    pub fn cleanup(&self, now: u64) -> (usize, usize) {
        let mut inner = self.lock();
        let (mut hosts, mut metrics) = (0, 0);
        for c in inner.clusters.iter_mut().filter(|c| c.remote.is_none()) {
            let counted = (hosts, metrics);
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
            if (hosts, metrics) != counted {
                c.generation = self.bump();
            }
        }
        inner.interner.sweep();
        (hosts, metrics)
    }
}

//! Collection groups with gmond's semantics (`gmond/gmond.c`): everything is
//! collected and sent at start; each group collects every `collect_every` and
//! sends at least every `time_threshold`; a change of at least
//! `value_threshold` sends the whole group at once; metadata goes out first,
//! every `send_metadata_interval`, and immediately when a metadata request (136)
//! for one of our metrics arrives on the sending socket.

use crate::collect::{Collector, HostFacts};
use crate::config::AgentConfig;
use crate::metrics::{self, MetricDef};
use crate::send::{Channels, Identity, resolve};
use anyhow::Context;
use ganglion_proto::xdr::{self, Message, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

struct MetricState {
    def: &'static MetricDef,
    title: String,
    value_threshold: f64,
    last: Option<Value>,
    meta_sent: Option<Instant>,
    meta_requested: bool,
    warned: bool,
}

struct Group {
    collect_once: bool,
    every: Duration,
    threshold: Duration,
    next_collect: Instant,
    next_send: Instant,
    metrics: Vec<MetricState>,
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(
    config: AgentConfig,
    extra_dests: Vec<SocketAddr>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut dests = extra_dests;
    for (i, s) in config.send.iter().enumerate() {
        match resolve(&s.host, s.port) {
            Ok(a) if !a.is_empty() => dests.push(a[0]),
            // An unresolvable destination is logged; the others keep working.
            Ok(_) | Err(_) => {
                tracing::warn!(key = %format!("send[{i}]"), host = %s.host, "cannot resolve destination; skipping it")
            }
        }
    }
    anyhow::ensure!(
        !dests.is_empty(),
        "no destination: configure [[send]] or pass --send-to HOST:PORT"
    );
    let mut ch = Channels::open(dests.clone()).context("opening UDP sockets")?;
    let identity = Identity::new(
        config.override_hostname.as_deref(),
        config.override_ip.as_deref(),
        config.cluster.clone(),
    );
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    let mut collector = Collector::new(HostFacts {
        location: config.location.clone(),
        gexec: config.gexec,
        started,
    });
    let now = Instant::now();
    let mut groups: Vec<Group> = config
        .collection_group
        .iter()
        .map(|g| Group {
            collect_once: g.collect_once,
            every: Duration::from_secs(u64::from(g.collect_every_secs.max(1))),
            threshold: Duration::from_secs(u64::from(g.time_threshold_secs)),
            next_collect: now,
            next_send: now,
            metrics: g
                .metric
                .iter()
                .filter_map(|m| {
                    let def = metrics::find(&m.name)?;
                    Some(MetricState {
                        def,
                        title: m.title.clone().unwrap_or_else(|| def.title.to_string()),
                        value_threshold: m.value_threshold,
                        last: None,
                        meta_sent: None,
                        meta_requested: false,
                        warned: false,
                    })
                })
                .collect(),
        })
        .collect();
    let meta_interval = (config.send_metadata_interval_secs > 0)
        .then(|| Duration::from_secs(u64::from(config.send_metadata_interval_secs)));
    tracing::info!(destinations = ?dests, host = %identity.host, "agent started");

    // Metadata requests come back to our sending sockets: a thread reads them.
    let (req_tx, mut req_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for s in ch.sockets() {
        let s = s.try_clone()?;
        let tx = req_tx.clone();
        // Blocks in recv (no polling timeout: an idle agent must not wake up
        // several times a second); the thread ends with the process.
        std::thread::Builder::new()
            .name("agent-requests".into())
            .spawn(move || {
                let mut buf = [0u8; 1500];
                loop {
                    match s.recv_from(&mut buf) {
                        Ok((n, _)) => {
                            if let Ok(Message::MetadataRequest(id)) = xdr::decode(&buf[..n])
                                && tx.send(id.name).is_err()
                            {
                                return;
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            })?;
    }
    drop(req_tx);

    let mut send_failing = false;
    loop {
        let now = Instant::now();
        // Everything due within SLACK runs in this wakeup, so groups with the
        // same period stay on one wakeup instead of drifting a timer tick
        // apart (each extra wakeup is a few syscalls on every VM).
        let soon = now + SLACK;
        for g in &mut groups {
            if soon >= g.next_collect
                && !(g.collect_once && g.metrics.iter().all(|m| m.last.is_some()))
            {
                let mut changed = false;
                for m in &mut g.metrics {
                    match collector.collect(m.def.name) {
                        Ok(v) => {
                            if m.value_threshold >= 0.0
                                && let (Some(new), Some(old)) =
                                    (v.as_f64(), m.last.as_ref().and_then(Value::as_f64))
                                && (new - old).abs() >= m.value_threshold
                            {
                                changed = true;
                            }
                            m.last = Some(v);
                            m.warned = false;
                        }
                        Err(crate::collect::CollectError::NotReady) => {}
                        Err(e) => {
                            if !m.warned {
                                tracing::warn!(metric = m.def.name, error = %e, "collection failed; other metrics continue");
                                m.warned = true;
                            }
                        }
                    }
                }
                advance(&mut g.next_collect, g.every, now);
                if changed {
                    g.next_send = now;
                }
            }
            let requested = g.metrics.iter().any(|m| m.meta_requested);
            if soon >= g.next_send || requested {
                let mut failures = 0;
                for m in &mut g.metrics {
                    let Some(v) = m.last.clone() else { continue };
                    let need_meta = m.meta_requested
                        || m.meta_sent.is_none_or(|t| {
                            meta_interval.is_some_and(|i| now.duration_since(t) >= i)
                        });
                    if need_meta {
                        failures += ch.send(&identity.metadata(m.def, &m.title)).unwrap_or(1);
                        m.meta_sent = Some(now);
                        m.meta_requested = false;
                    }
                    failures += ch.send(&identity.value(m.def, v)).unwrap_or(1);
                }
                // One line when sending starts failing (e.g. the collector is
                // down: connected sockets see its ICMP refusals), one when it
                // recovers; not one per send.
                if failures > 0 && !send_failing {
                    tracing::warn!(failures, "some sends failed; will keep sending");
                    send_failing = true;
                } else if failures == 0 && send_failing {
                    tracing::info!("sends succeed again");
                    send_failing = false;
                }
                if requested && soon < g.next_send {
                    // An answer to a metadata request keeps the schedule.
                } else {
                    advance(&mut g.next_send, g.threshold, now);
                }
            }
        }
        let wake = groups
            .iter()
            .flat_map(|g| {
                [if g.collect_once {
                    g.next_send
                } else {
                    g.next_collect.min(g.next_send)
                }]
            })
            .min()
            .unwrap_or(now + Duration::from_secs(60));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(wake.into()) => {}
            Some(name) = req_rx.recv() => {
                let mut hit = false;
                for m in groups.iter_mut().flat_map(|g| g.metrics.iter_mut()) {
                    if m.def.name == name {
                        m.meta_requested = true;
                        hit = true;
                    }
                }
                if hit {
                    tracing::debug!(metric = %name, "metadata requested by collector");
                }
            }
        }
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// How early a due group may run to share a wakeup with another.
const SLACK: Duration = Duration::from_millis(250);

/// Moves a schedule one period on along its own grid (no drift from late
/// wakeups); after a long stall it restarts from `now`.
fn advance(next: &mut Instant, every: Duration, now: Instant) {
    *next += every;
    if *next <= now {
        *next = now + every;
    }
}

/// The names and values collected now for every default metric (for `--once`).
pub fn collect_all(config: &AgentConfig) -> HashMap<String, Result<Value, String>> {
    let mut c = Collector::new(HostFacts {
        location: config.location.clone(),
        gexec: config.gexec,
        started: 0,
    });
    metrics::ALL
        .iter()
        .map(|m| {
            (
                m.name.to_string(),
                c.collect(m.name).map_err(|e| e.to_string()),
            )
        })
        .collect()
}

//! Collection groups with gmond's semantics (`gmond/gmond.c`): everything is
//! collected and sent at start; each group collects every `collect_every` and
//! sends at least every `time_threshold`; a change of at least
//! `value_threshold` sends the whole group at once; metadata goes out first,
//! every `send_metadata_interval`, and immediately when a metadata request (136)
//! for one of our metrics arrives on the sending socket.

use crate::collect::{Collector, HostFacts};
use crate::config::AgentConfig;
use crate::metrics::{self, MetricDef};
use crate::send::{Channels, Identity, SendOpts, resolve, wire_value};
use anyhow::Context;
use ganglion_proto::xdr::{self, Message, Value};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::socket::{MsgFlags, recv};
use nix::sys::time::TimeSpec;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

struct MetricState {
    def: &'static MetricDef,
    value_threshold: f64,
    last: Option<Value>,
    // Metadata never changes: encoded once (None if it does not fit in a
    // datagram, which then counts as a failed send each time, as before).
    meta: Option<Vec<u8>>,
    // The value message with host, name and format filled in once; only the
    // value changes per send, so sending allocates nothing.
    value_msg: Message,
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

/// Most metadata requests handled per wakeup: a flood must not delay the
/// collections (the rest wait in the socket for the next turn).
const MAX_REQUESTS_PER_WAKE: usize = 64;

/// Runs the agent until `shutdown` becomes readable (the binary passes a
/// signalfd for SIGTERM and SIGINT; a SIGHUP on it re-reads `key_file`
/// instead: the stream moves to its current key).
///
/// One thread, no async runtime: it sleeps in `ppoll` on `shutdown` and the
/// sending sockets (where metadata requests arrive) until the next group is
/// due, so an idle agent wakes exactly once per due time. (A runtime's timer
/// wheel woke it three or four times per sleep, and its request thread and
/// scheduler cost RSS.)
pub fn run(
    config: AgentConfig,
    extra_dests: Vec<SocketAddr>,
    shutdown: BorrowedFd<'_>,
) -> anyhow::Result<()> {
    let mut dests: Vec<(SocketAddr, SendOpts)> = extra_dests
        .into_iter()
        .map(|d| (d, SendOpts::default()))
        .collect();
    for (i, s) in config.send.iter().enumerate() {
        match resolve(&s.host, s.port) {
            Ok(a) if !a.is_empty() => dests.push((
                a[0],
                SendOpts {
                    ttl: s.ttl,
                    mcast_if: s.mcast_if.clone(),
                    sealer: None,
                },
            )),
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
    let identity = Identity::new(
        config.override_hostname.as_deref(),
        config.override_ip.as_deref(),
        config.cluster.clone(),
    );
    let mut sealer = None;
    if let Some(path) = &config.key_file {
        // One authenticated stream for the whole process (scripts and
        // modules included): every destination gets the envelope.
        let kf = crate::keys::read(path).context("key_file")?;
        let s = crate::keys::Sealer::daemon(&kf, &identity.host).context("key_file")?;
        let (key_id, sender_id, epoch) = s.describe();
        tracing::info!(key_id, sender_id, epoch, "sending authenticated datagrams");
        for d in &mut dests {
            d.1.sealer = Some(s.clone());
        }
        sealer = Some(s);
    }
    let ch = Channels::open_with(dests.clone()).context("opening UDP sockets")?;
    // Scripts and Python modules run on their own threads and sockets; they
    // are stopped (children killed) when this function returns.
    let _custom = crate::custom::start(&config, &dests, &identity)
        .context("starting [[script]] and [[module]] threads")?;
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
                    let title = m.title.as_deref().unwrap_or(def.title);
                    Some(MetricState {
                        def,
                        value_threshold: m.value_threshold,
                        last: None,
                        meta: xdr::encode(&identity.metadata(def, title)).ok(),
                        // The placeholder value is replaced before every send.
                        value_msg: identity.value(def, Value::UInt(0)),
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
    tracing::info!(destinations = ?ch.dests, host = %identity.host, "agent started");

    // Metadata requests come back to the sending sockets; these handles of the
    // same sockets are only read, after ppoll says so, never blocking.
    let readers = ch
        .sockets()
        .map(UdpSocket::try_clone)
        .collect::<Result<Vec<_>, _>>()
        .context("cloning UDP sockets")?;
    let mut fds: Vec<PollFd<'_>> = std::iter::once(shutdown)
        .chain(readers.iter().map(AsFd::as_fd))
        .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
        .collect();
    let mut out = Vec::with_capacity(xdr::MAX_MESSAGE_LEN);
    let mut request = [0u8; 1500];

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
                    let Some(v) = &m.last else { continue };
                    let need_meta = m.meta_requested
                        || m.meta_sent.is_none_or(|t| {
                            meta_interval.is_some_and(|i| now.duration_since(t) >= i)
                        });
                    if need_meta {
                        failures += m.meta.as_deref().map_or(1, |b| ch.send_encoded(b));
                        m.meta_sent = Some(now);
                        m.meta_requested = false;
                    }
                    if let Message::Value(vm) = &mut m.value_msg {
                        vm.value = wire_value(m.def, v.clone());
                    }
                    failures += match xdr::encode_into(&m.value_msg, &mut out) {
                        Ok(()) => ch.send_encoded(&out),
                        Err(_) => 1,
                    };
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
        let timeout = TimeSpec::from_duration(wake.saturating_duration_since(Instant::now()));
        match ppoll(&mut fds, Some(timeout), None) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e).context("waiting for the next collection"),
        }
        // Unknown event bits (None) count as ready too: the read decides.
        let ready = |fd: &PollFd<'_>| fd.revents() != Some(PollFlags::empty());
        if ready(&fds[0]) {
            let (stop, hup) = signals(shutdown);
            if hup {
                reload_key(config.key_file.as_deref(), sealer.as_ref());
            }
            if stop {
                break;
            }
        }
        for (s, fd) in readers.iter().zip(&fds[1..]) {
            if !ready(fd) {
                continue;
            }
            for _ in 0..MAX_REQUESTS_PER_WAKE {
                // Ends on EAGAIN (drained); an error also takes a queued
                // socket error (an ICMP refusal on a connected socket).
                let Ok(n) = recv(s.as_raw_fd(), &mut request, MsgFlags::MSG_DONTWAIT) else {
                    break;
                };
                let Ok(Message::MetadataRequest(id)) = xdr::decode(&request[..n]) else {
                    continue;
                };
                let mut hit = false;
                for m in groups.iter_mut().flat_map(|g| g.metrics.iter_mut()) {
                    if m.def.name == id.name {
                        m.meta_requested = true;
                        hit = true;
                    }
                }
                if hit {
                    tracing::debug!(metric = %id.name, "metadata requested by collector");
                }
            }
        }
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// Reads every queued signal from the signalfd `fd`: (stop, reload). Any
/// other readable descriptor, or a failed read, means stop (the contract
/// before SIGHUP existed).
fn signals(fd: BorrowedFd<'_>) -> (bool, bool) {
    // struct signalfd_siginfo: 128 bytes, ssi_signo first.
    let mut info = [0u8; 128];
    let (mut stop, mut hup) = (false, false);
    loop {
        match nix::unistd::read(fd, &mut info) {
            Ok(128) => {
                let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
                if signo == nix::sys::signal::Signal::SIGHUP as u32 {
                    hup = true;
                } else {
                    stop = true;
                }
            }
            Err(Errno::EAGAIN) => return (stop, hup),
            Err(Errno::EINTR) => {}
            _ => return (true, hup),
        }
    }
}

/// SIGHUP: moves the authenticated stream to the key file's current key
/// from the next datagram on; a file that does not load is logged and the
/// current key stays.
fn reload_key(path: Option<&std::path::Path>, sealer: Option<&crate::keys::Sealer>) {
    let (Some(path), Some(sealer)) = (path, sealer) else {
        tracing::info!("SIGHUP: no key_file, nothing to reload");
        return;
    };
    match crate::keys::read(path).and_then(|kf| sealer.rekey(&kf)) {
        Ok(()) => {
            let (key_id, sender_id, epoch) = sealer.describe();
            tracing::info!(key_id, sender_id, epoch, "key file reloaded (SIGHUP)");
        }
        Err(e) => {
            tracing::error!(error = %e, "key file reload failed (SIGHUP); keeping the current key")
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_stay_on_their_grid() {
        let t0 = Instant::now();
        let p = Duration::from_secs(20);
        // Woken 3 ms late: the next time still counts from the last one.
        let mut next = t0;
        advance(&mut next, p, t0 + Duration::from_millis(3));
        assert_eq!(next, t0 + p);
        // Far behind (a suspended host): one period from now, no burst.
        let mut next = t0;
        let late = t0 + Duration::from_secs(65);
        advance(&mut next, p, late);
        assert_eq!(next, late + p);
    }
}

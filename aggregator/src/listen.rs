//! One connection governor for every TCP (and unix) listener: the HTTP port,
//! each cluster's gmond XML port, 8651, 8652 and the rrdcached-protocol
//! socket. It keeps a client, however many connections it opens, from taking
//! the descriptors that storage, the journal and rrdcached need.
//!
//! - A permit is taken *before* `accept` (as mini-redis' server does), so the
//!   process never holds more sockets than its caps. At `max_connections` the
//!   listener keeps draining its backlog through [`REFUSAL_SLOTS`] short-lived
//!   refusal permits — HTTP only: each such connection is accepted and
//!   answered `503` with `Retry-After` at once ([`Admission::OverCap`]), so a
//!   fresh dashboard client gets a fast, clear answer instead of waiting
//!   behind idle sockets in the kernel's queue. The XML and daemon ports keep
//!   their clients waiting in the backlog instead: gmetad and rrdtool wait
//!   for their own timeouts, and a slot frees as soon as a holder's
//!   `client_timeout_secs` expires, so waiting serves them where a refusal
//!   would fail their poll.
//! - A client address holding `max_connections_per_ip` connections has its
//!   next one accepted and closed at once ([`Admission::OverIpCap`]; HTTP
//!   answers `503` with `Retry-After` first).
//! - Accept errors (`EMFILE`, `ENFILE`, `ENOBUFS`…) back off from 10 ms up to
//!   1 s and are logged at most once a minute per listener, with the count.
//!
//! At start, [`raise_nofile`] lifts the soft `RLIMIT_NOFILE` to the hard one
//! and [`check_fd_budget`] refuses a configuration whose caps, together with
//! `limits.fd_reserve`, do not fit in it.

use crate::diag::{self, Diag, Event, Level, LogAs};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The kinds of listener, the `listener` label of their counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Dashboard, `/api`, `/metrics`.
    Http,
    /// A cluster's gmond-compatible XML port.
    Gmond,
    /// gmetad's dump port (8651).
    Dump,
    /// gmetad's interactive port (8652).
    Query,
    /// rrdcached's protocol for readers.
    Daemon,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Http,
        Kind::Gmond,
        Kind::Dump,
        Kind::Query,
        Kind::Daemon,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Gmond => "gmond",
            Kind::Dump => "dump",
            Kind::Query => "query",
            Kind::Daemon => "daemon",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Connection counters of every listener, by [`Kind`].
#[derive(Debug, Default)]
pub struct ListenCounters {
    /// Connections accepted and closed at once: the client address was at
    /// its `max_connections_per_ip`.
    refused_per_ip: [AtomicU64; 5],
    /// Times a listener reached `max_connections` and stopped accepting
    /// until a connection ended.
    at_cap: [AtomicU64; 5],
    /// `accept` failures (`EMFILE`, `ENFILE`, …), each followed by a backoff.
    accept_errors: [AtomicU64; 5],
}

impl ListenCounters {
    /// Per-IP refusals of one kind (tests read it).
    pub fn refused_per_ip(&self, k: Kind) -> u64 {
        self.refused_per_ip[k.index()].load(Ordering::Relaxed)
    }

    /// Times one kind of listener was at its cap.
    pub fn at_cap(&self, k: Kind) -> u64 {
        self.at_cap[k.index()].load(Ordering::Relaxed)
    }

    /// Accept errors of one kind.
    pub fn accept_errors(&self, k: Kind) -> u64 {
        self.accept_errors[k.index()].load(Ordering::Relaxed)
    }

    /// The labelled counters for `/metrics`.
    pub fn labelled(&self) -> Vec<crate::telemetry::LabelledCounter> {
        let by_kind = |a: &[AtomicU64; 5]| {
            Kind::ALL
                .iter()
                .map(|k| (k.as_str(), a[k.index()].load(Ordering::Relaxed)))
                .collect::<Vec<_>>()
        };
        vec![
            (
                "ganglion_connections_refused_per_ip_total",
                "Connections closed at once because the client address was at max_connections_per_ip",
                "listener",
                by_kind(&self.refused_per_ip),
            ),
            (
                "ganglion_listener_at_cap_total",
                "Times a listener reached max_connections and paused accepting",
                "listener",
                by_kind(&self.at_cap),
            ),
            (
                "ganglion_accept_errors_total",
                "accept() failures (e.g. EMFILE), each followed by a backoff",
                "listener",
                by_kind(&self.accept_errors),
            ),
        ]
    }
}

/// Connections a listener at `max_connections` may hold at once while it
/// refuses them (each for the time it takes to write a 503, at most 1 s);
/// counted in the descriptor budget.
pub const REFUSAL_SLOTS: usize = 8;

/// A listener's caps.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections one client address may hold at once.
    pub max_connections_per_ip: usize,
}

/// Admits connections to one listener. Cheap to share (`Arc`).
pub struct Governor {
    kind: Kind,
    name: String,
    caps: Caps,
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    counters: Arc<ListenCounters>,
    diag: Diag<()>,
}

/// `accept` failed (`EMFILE`, `ENFILE`, `ENOBUFS`…):
/// `ganglion_accept_errors_total{listener}`, logged at most once a minute
/// per listener with the total so far.
struct AcceptFailed<'a> {
    kind: Kind,
    listener: &'a str,
    error: &'a std::io::Error,
}

impl Event for AcceptFailed<'_> {
    type Counters = ListenCounters;
    type Key = ();
    const LEVEL: Level = Level::WARN;

    fn count(&self, c: &ListenCounters) {
        diag::inc(&c.accept_errors[self.kind.index()]);
    }

    fn log_as(&self) -> LogAs<()> {
        // The governor (and its limiter) is the listener's own.
        LogAs::PerKey(())
    }

    fn log(&self, c: &ListenCounters) {
        diag::line!(
            Self::LEVEL,
            listener = %self.listener,
            error = %self.error,
            errors_total = c.accept_errors(self.kind),
            "accept failed; backing off (logged at most once a minute)"
        );
    }
}

/// What holds a connection's place: its slot and its per-address count,
/// both given back when this is dropped (when the connection's task ends).
pub struct ConnPermit {
    _slot: OwnedSemaphorePermit,
    ip: Option<IpGuard>,
}

struct IpGuard {
    ip: IpAddr,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl ConnPermit {
    /// Whether the connection counts against a client address.
    pub fn has_ip(&self) -> bool {
        self.ip.is_some()
    }
}

/// An accepted connection.
pub enum Admission<S> {
    /// Serve it; keep the permit until the connection ends.
    Serve(S, Option<SocketAddr>, ConnPermit),
    /// Its address is at `max_connections_per_ip`: close it (HTTP answers
    /// 503 first). The permit bounds the descriptor meanwhile.
    OverIpCap(S, SocketAddr, ConnPermit),
    /// The listener is at `max_connections`: refuse it at once (HTTP answers
    /// 503 first), holding one of the [`REFUSAL_SLOTS`] meanwhile.
    OverCap(S, OwnedSemaphorePermit),
}

/// Backoff after accept errors: 10 ms doubling to 1 s, reset by a success.
struct Backoff(Duration);

impl Backoff {
    const MIN: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        d
    }

    fn reset(&mut self) {
        self.0 = Self::MIN;
    }
}

/// How often a listener's accept errors are logged (with the count since).
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(60);

impl Governor {
    /// A governor for one listener; `name` is for the log (`http.listen`).
    pub fn new(
        kind: Kind,
        name: impl Into<String>,
        caps: Caps,
        counters: Arc<ListenCounters>,
    ) -> Arc<Governor> {
        Arc::new(Governor {
            kind,
            name: name.into(),
            caps,
            slots: Arc::new(Semaphore::new(caps.max_connections.max(1))),
            refusals: Arc::new(Semaphore::new(REFUSAL_SLOTS)),
            per_ip: Arc::new(Mutex::new(HashMap::new())),
            counters,
            diag: Diag::new(ACCEPT_LOG_EVERY),
        })
    }

    /// The caps this listener runs with.
    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Waits for a free slot, then accepts with `accept` (which gives the
    /// peer address for TCP, `None` for a unix socket), retrying with a
    /// backoff after errors. `None` once `shutdown` is cancelled.
    pub async fn accept<S, F, Fut>(
        &self,
        shutdown: &CancellationToken,
        mut accept: F,
    ) -> Option<Admission<S>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::io::Result<(S, Option<SocketAddr>)>>,
    {
        let mut backoff = Backoff(Backoff::MIN);
        loop {
            let slot = match self.slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) if !matches!(self.kind, Kind::Http) => {
                    self.counters.at_cap[self.kind.index()].fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        p = self.slots.clone().acquire_owned() => p.ok()?,
                    }
                }
                Err(_) => {
                    self.counters.at_cap[self.kind.index()].fetch_add(1, Ordering::Relaxed);
                    // At the cap: keep the backlog moving with fast refusals
                    // while a refusal slot is free, else wait for either.
                    let refusal = match self.refusals.clone().try_acquire_owned() {
                        Ok(r) => r,
                        Err(_) => {
                            tokio::select! {
                                _ = shutdown.cancelled() => return None,
                                p = self.slots.clone().acquire_owned() => {
                                    let Ok(p) = p else { return None };
                                    drop(p);
                                    continue;
                                }
                                r = self.refusals.clone().acquire_owned() => r.ok()?,
                            }
                        }
                    };
                    let r = tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        r = accept() => r,
                    };
                    match r {
                        Ok((s, _)) => return Some(Admission::OverCap(s, refusal)),
                        Err(_) => {
                            drop(refusal);
                            let wait = backoff.next();
                            tokio::select! {
                                _ = shutdown.cancelled() => return None,
                                _ = tokio::time::sleep(wait) => {}
                            }
                            continue;
                        }
                    }
                }
            };
            let r = tokio::select! {
                _ = shutdown.cancelled() => return None,
                r = accept() => r,
            };
            match r {
                Ok((s, peer)) => {
                    backoff.reset();
                    let Some(peer) = peer else {
                        return Some(Admission::Serve(
                            s,
                            None,
                            ConnPermit {
                                _slot: slot,
                                ip: None,
                            },
                        ));
                    };
                    let ip = crate::state::canonical_ip(peer.ip());
                    let admitted = {
                        let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
                        let n = m.entry(ip).or_insert(0);
                        if *n >= self.caps.max_connections_per_ip {
                            false
                        } else {
                            *n += 1;
                            true
                        }
                    };
                    let permit = ConnPermit {
                        _slot: slot,
                        ip: admitted.then(|| IpGuard {
                            ip,
                            per_ip: self.per_ip.clone(),
                        }),
                    };
                    if admitted {
                        return Some(Admission::Serve(s, Some(peer), permit));
                    }
                    // The entry may have been created just now by or_insert
                    // with 0 only when the cap is 0, which validation forbids.
                    self.counters.refused_per_ip[self.kind.index()].fetch_add(1, Ordering::Relaxed);
                    return Some(Admission::OverIpCap(s, peer, permit));
                }
                Err(e) => {
                    drop(slot);
                    self.diag.emit(
                        AcceptFailed {
                            kind: self.kind,
                            listener: &self.name,
                            error: &e,
                        },
                        &self.counters,
                    );
                    let wait = backoff.next();
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (as nginx and Go's
/// runtime do): 1024 is the usual soft default, far below what a server with
/// thousands of RRD files and client sockets needs. Returns the soft limit
/// in force afterwards. Done once per process; later calls only read it.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(
                soft_was = soft,
                hard,
                "raised the open-file limit (RLIMIT_NOFILE) to the hard limit"
            ),
            Err(e) => tracing::warn!(
                soft,
                hard,
                error = %e,
                "cannot raise the open-file limit (RLIMIT_NOFILE)"
            ),
        },
        Ok((soft, hard)) => {
            tracing::info!(soft, hard, "open-file limit (RLIMIT_NOFILE)");
        }
        Err(e) => tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE"),
    });
    getrlimit(Resource::RLIMIT_NOFILE).map_or(u64::MAX, |(soft, _)| soft)
}

/// One line of the descriptor budget: a config key and what it takes.
pub type BudgetLine = (String, u64);

/// Checks that the listeners' caps plus the reserve fit in `limit`
/// descriptors; the error names every key, so the operator knows what to
/// lower (or to raise `LimitNOFILE=`/`ulimit -n`).
pub fn check_fd_budget(lines: &[BudgetLine], limit: u64) -> Result<u64, String> {
    let total: u64 = lines.iter().map(|(_, n)| *n).sum();
    if total <= limit {
        return Ok(total);
    }
    let parts: Vec<String> = lines.iter().map(|(k, n)| format!("{k} = {n}")).collect();
    Err(format!(
        "the connection caps need {total} file descriptors ({}) but RLIMIT_NOFILE allows \
         {limit}: lower those keys or raise the limit (LimitNOFILE= in the systemd unit, \
         ulimit -n)",
        parts.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    #[test]
    fn the_config_budget_counts_the_refusal_slots() {
        // config::fd_budget cannot import this module (tidy rule); it counts 8.
        assert_eq!(REFUSAL_SLOTS, 8);
    }

    #[test]
    fn budget_names_the_keys() {
        let lines = vec![
            ("http.max_connections".to_string(), 600),
            ("limits.fd_reserve".to_string(), 500),
        ];
        assert_eq!(check_fd_budget(&lines, 2000), Ok(1100));
        let e = check_fd_budget(&lines, 1024).unwrap_err();
        assert!(
            e.contains("http.max_connections = 600") && e.contains("limits.fd_reserve"),
            "{e}"
        );
    }

    #[test]
    fn backoff_doubles_to_a_second() {
        let mut b = Backoff(Backoff::MIN);
        let waits: Vec<u128> = (0..9).map(|_| b.next().as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.next(), Backoff::MIN);
    }

    #[tokio::test]
    async fn per_ip_cap_and_slots_are_given_back() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let counters = Arc::new(ListenCounters::default());
        let g = Governor::new(
            Kind::Dump,
            "test",
            Caps {
                max_connections: 10,
                max_connections_per_ip: 2,
            },
            counters.clone(),
        );
        let sd = CancellationToken::new();
        let mut clients = Vec::new();
        let mut kept = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let a = g
                .accept(&sd, || async {
                    l.accept().await.map(|(s, p)| (s, Some(p)))
                })
                .await
                .unwrap();
            kept.push(a);
        }
        assert!(matches!(kept[0], Admission::Serve(..)));
        assert!(matches!(kept[1], Admission::Serve(..)));
        assert!(matches!(kept[2], Admission::OverIpCap(..)));
        assert_eq!(counters.refused_per_ip(Kind::Dump), 1);
        // One served connection ends: its address may connect again.
        kept.truncate(1);
        clients.push(TcpStream::connect(addr).await.unwrap());
        let a = g
            .accept(&sd, || async {
                l.accept().await.map(|(s, p)| (s, Some(p)))
            })
            .await
            .unwrap();
        assert!(matches!(a, Admission::Serve(..)));
    }

    #[tokio::test]
    async fn waits_at_max_connections_until_one_ends() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let counters = Arc::new(ListenCounters::default());
        let g = Governor::new(
            Kind::Dump,
            "test",
            Caps {
                max_connections: 1,
                max_connections_per_ip: 5,
            },
            counters.clone(),
        );
        let sd = CancellationToken::new();
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let acc = || async { l.accept().await.map(|(s, p)| (s, Some(p))) };
        let first = g.accept(&sd, acc).await.unwrap();
        // The second waits for a slot: cancelling shows it did not accept.
        let g2 = g.clone();
        let sd2 = sd.clone();
        let waiting = async move { g2.accept(&sd2, acc).await.is_none() };
        let cancel = async {
            tokio::task::yield_now().await;
            sd.cancel();
        };
        let (none, ()) = tokio::join!(waiting, cancel);
        assert!(none);
        assert_eq!(counters.at_cap(Kind::Dump), 1);
        drop(first);
    }
    #[tokio::test]
    async fn http_at_max_connections_refuses_at_once() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let counters = Arc::new(ListenCounters::default());
        let g = Governor::new(
            Kind::Http,
            "test",
            Caps {
                max_connections: 1,
                max_connections_per_ip: 5,
            },
            counters.clone(),
        );
        let sd = CancellationToken::new();
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let acc = || async { l.accept().await.map(|(s, p)| (s, Some(p))) };
        let first = g.accept(&sd, acc).await.unwrap();
        // The second is accepted to be refused (503) at once, not queued.
        let second = g.accept(&sd, acc).await.unwrap();
        assert!(matches!(second, Admission::OverCap(..)));
        assert_eq!(counters.at_cap(Kind::Http), 1);
        drop(first);
    }
}

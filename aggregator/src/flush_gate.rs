//! Full flushes requested by clients (`POST /api/flush`, the daemon socket's
//! `FLUSHALL`), made single-flight and rate-limited, so a hundred callers
//! cost at most two passes over the tree, never a hundred queued ones.
//!
//! At any time there is at most one pass running and one pass queued. A
//! caller arriving while a pass runs joins the *queued* pass (which starts
//! when the running one ends), because samples that arrived after the running
//! pass began may not be in it; a caller arriving while one is queued joins
//! that. A caller arriving when nothing runs starts a pass — unless one
//! started less than `min_interval` ago, in which case it is told how long to
//! wait ([`Ticket::RateLimited`]; HTTP answers `429` with `Retry-After`).

use crate::storage::StorageHandle;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The outcome of a pass: `None` while it is pending, then whether the
/// writer finished it within the wait.
type Outcome = watch::Receiver<Option<bool>>;

/// Joins or starts full flushes.
pub struct FlushGate {
    storage: StorageHandle,
    min_interval: Duration,
    wait: Duration,
    runtime: tokio::runtime::Handle,
    inner: Mutex<Inner>,
    passes: AtomicU64,
}

#[derive(Default)]
struct Inner {
    last_start: Option<Instant>,
    running: Option<Outcome>,
    queued: Option<Outcome>,
}

/// What a caller got.
pub enum Ticket {
    /// A pass the caller takes part in; [`Ticket::wait`] for its end.
    Pass(Outcome),
    /// Too soon after the last pass: retry after this long.
    RateLimited(Duration),
}

impl Ticket {
    /// Waits for the pass: `Some(true)` when it is on disk, `Some(false)`
    /// when the writer did not finish within the wait, `None` when rate
    /// limited.
    pub async fn wait(self) -> Option<bool> {
        match self {
            Ticket::Pass(mut rx) => {
                let r = rx.wait_for(|v| v.is_some()).await;
                Some(r.ok().and_then(|v| *v).unwrap_or(false))
            }
            Ticket::RateLimited(_) => None,
        }
    }
}

fn pending(o: &Option<Outcome>) -> bool {
    o.as_ref().is_some_and(|rx| rx.borrow().is_none())
}

impl FlushGate {
    /// A gate over `storage`: a new pass at most every `min_interval`, each
    /// waited for up to `wait`. Must be created inside the runtime.
    pub fn new(storage: StorageHandle, min_interval: Duration, wait: Duration) -> Arc<FlushGate> {
        Arc::new(FlushGate {
            storage,
            min_interval,
            wait,
            runtime: tokio::runtime::Handle::current(),
            inner: Mutex::new(Inner::default()),
            passes: AtomicU64::new(0),
        })
    }

    /// Fewest seconds between two passes started from idle.
    pub fn min_interval(&self) -> Duration {
        self.min_interval
    }

    /// Joins the queued pass, queues one behind a running pass, or starts
    /// one. Callable from async code and from blocking threads.
    pub fn request(self: &Arc<Self>) -> Ticket {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if pending(&g.queued)
            && let Some(q) = &g.queued
        {
            return Ticket::Pass(q.clone());
        }
        if pending(&g.running)
            && let Some(running) = g.running.clone()
        {
            let (tx, rx) = watch::channel(None);
            g.queued = Some(rx.clone());
            let me = self.clone();
            self.runtime.spawn(async move {
                let mut running = running;
                let _ = running.wait_for(|v| v.is_some()).await;
                {
                    let mut g = me.inner.lock().unwrap_or_else(|p| p.into_inner());
                    g.running = g.queued.take();
                    g.last_start = Some(Instant::now());
                }
                let ok = me.pass().await;
                let _ = tx.send(Some(ok));
            });
            return Ticket::Pass(rx);
        }
        if let Some(t) = g.last_start {
            let since = t.elapsed();
            if since < self.min_interval {
                return Ticket::RateLimited(self.min_interval - since);
            }
        }
        let (tx, rx) = watch::channel(None);
        g.running = Some(rx.clone());
        g.last_start = Some(Instant::now());
        let me = self.clone();
        self.runtime.spawn(async move {
            let ok = me.pass().await;
            let _ = tx.send(Some(ok));
        });
        Ticket::Pass(rx)
    }

    /// Passes started so far.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// One full pass on one blocking thread, whatever the number of callers.
    async fn pass(&self) -> bool {
        self.passes.fetch_add(1, Ordering::Relaxed);
        let s = self.storage.clone();
        let wait = self.wait;
        tokio::task::spawn_blocking(move || s.flush(Vec::new(), wait))
            .await
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_callers_cost_at_most_two_passes() {
        let dir = tempfile::tempdir().unwrap();
        let (h, writer) = crate::storage::start(
            crate::storage::StorageParams {
                rrd_root: dir.path().to_path_buf(),
                step_secs: 15,
                rras: vec!["RRA:AVERAGE:0.5:1:10".into()],
                case_sensitive_hostnames: false,
                // The gate rate-limits here; the writer's own limit on forced
                // passes (30 s by default) would make the queued pass outlast
                // this test's 30 s wait.
                config: crate::storage::StorageConfig {
                    min_forced_flush_interval_secs: Some(0),
                    ..Default::default()
                },
                rrdcached: None,
            },
            &Arc::new(crate::telemetry::Counters::default()),
        )
        .unwrap();
        let gate = FlushGate::new(h, Duration::from_secs(3600), Duration::from_secs(30));
        let tickets: Vec<Ticket> = (0..100).map(|_| gate.request()).collect();
        let mut passed = 0;
        let mut limited = 0;
        for t in tickets {
            match t {
                Ticket::RateLimited(d) => {
                    assert!(d <= Duration::from_secs(3600));
                    limited += 1;
                }
                t => {
                    assert_eq!(t.wait().await, Some(true));
                    passed += 1;
                }
            }
        }
        assert_eq!(passed + limited, 100);
        assert!(passed >= 1);
        assert!(gate.passes() <= 2, "{} passes", gate.passes());
        // Idle and within the interval: told to come back, no pass.
        assert!(matches!(gate.request(), Ticket::RateLimited(_)));
        assert!(gate.passes() <= 2);
        drop(gate);
        tokio::task::spawn_blocking(move || writer.join().unwrap())
            .await
            .unwrap();
    }
}

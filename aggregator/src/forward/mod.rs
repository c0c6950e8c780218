//! Forwarding to time-series engines (`[[forward]]`): Graphite plaintext
//! and Prometheus remote write 1.0.
//!
//! Each forward is two tasks joined by a byte-bounded queue:
//!
//! ```text
//! shared snapshot ──(every interval)── scheduler ──try-push──▶ Queue ──▶ sender ──▶ engine
//! ```
//!
//! The scheduler ([`scheduler`]) reads the shared snapshot once per interval
//! (never the live state under the ingest lock), encodes on the blocking
//! pool and pushes without waiting: a full queue drops its oldest batches
//! ([`queue`]). The sender retries 5xx, 429 and connection errors with
//! exponential backoff, drops any other 4xx, and drops batches older than
//! `max_sample_age_secs`; every drop is counted by reason ([`stats`]). So an
//! engine that is slow, down, or accepting but never reading costs one
//! queue's memory and nothing else: ingest, XML, storage and the other
//! forwards run on their own tasks and never wait for it.

pub mod graphite;
pub mod queue;
pub mod remote_write;
pub mod scheduler;
pub mod stats;

use crate::config::Config;
use crate::config::forward::{ForwardConfig, ForwardKind};
use crate::state::{State, now_secs};
use queue::{Batch, Queue};
use scheduler::{Filter, Plan, Wire};
pub use stats::{Reason, Stats};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What one send came to.
#[derive(Debug)]
pub enum Outcome {
    /// Accepted (2xx) or written.
    Sent,
    /// Worth retrying: 5xx, 429, timeout, connection error.
    Retry {
        /// Why.
        error: String,
        /// The engine's `Retry-After`, if any.
        after: Option<Duration>,
    },
    /// Refused for good (a 4xx other than 429).
    Rejected(String),
}

/// Every forward's counters (empty when none is configured).
#[derive(Default, Clone)]
pub struct Forwards {
    list: Vec<Arc<Stats>>,
}

impl Forwards {
    /// The forwards' counters, in configuration order.
    pub fn stats(&self) -> &[Arc<Stats>] {
        &self.list
    }

    /// `GET /api/forwards`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::Value::Array(self.list.iter().map(|s| s.status()).collect())
    }
}

/// A forward that cannot start (bad URL, unreadable credentials or CA).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Remote-write setup.
    #[error(transparent)]
    RemoteWrite(#[from] remote_write::SetupError),
    /// Globs (already validated, so only on a bug).
    #[error("forward {0:?}: {1}")]
    Glob(String, globset::Error),
}

enum Sender {
    Graphite(graphite::Sender),
    RemoteWrite(remote_write::Sender),
}

impl Sender {
    async fn send(&mut self, b: &Batch) -> Outcome {
        match self {
            Sender::Graphite(s) => s.send(&b.payload).await,
            Sender::RemoteWrite(s) => s.send(&b.payload).await,
        }
    }
}

/// A URL with any `user:password@` removed, for logs and the dashboard.
fn public_target(c: &ForwardConfig) -> String {
    match c.kind {
        ForwardKind::RemoteWrite => match c.url.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('@') {
                Some((_, after)) if !after.contains('/') || rest.find('@') < rest.find('/') => {
                    format!("{scheme}://{after}")
                }
                _ => c.url.clone(),
            },
            None => c.url.clone(),
        },
        _ => format!(
            "{}://{}",
            match c.protocol {
                crate::config::forward::GraphiteProtocol::Tcp => "tcp",
                crate::config::forward::GraphiteProtocol::Udp => "udp",
            },
            c.address
        ),
    }
}

/// Starts every `[[forward]]`'s scheduler and sender on `tasks`.
pub fn start(
    config: &Config,
    state: &Arc<State>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<Forwards, StartError> {
    let mut list = Vec::new();
    for c in &config.forward {
        let stats = Arc::new(Stats::new(c.label(), c.kind.as_str(), &public_target(c)));
        let filter = Filter::new(&c.include, &c.exclude)
            .map_err(|e| StartError::Glob(c.label().to_string(), e))?;
        let timeout = Duration::from_secs(u64::from(c.timeout_secs));
        let (wire, sender) = match c.kind {
            ForwardKind::RemoteWrite => {
                let mut labels: Vec<(String, String)> = c
                    .external_labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !c.external_labels.contains_key("grid") {
                    labels.push(("grid".into(), config.grid_name.clone()));
                }
                labels.sort();
                (
                    Wire::RemoteWrite(labels),
                    Sender::RemoteWrite(remote_write::Sender::new(c)?),
                )
            }
            _ => (
                Wire::Graphite(graphite::PathRules {
                    prefix: c.prefix.clone(),
                    template: c.path.clone(),
                    case_sensitive_hostnames: config.case_sensitive_hostnames,
                    compat: c.compat,
                }),
                Sender::Graphite(graphite::Sender::new(&c.address, c.protocol, timeout)),
            ),
        };
        if matches!(c.kind, ForwardKind::Graphite) && c.prefix.len() == 1 {
            tracing::warn!(forward = %c.label(), prefix = %c.prefix, "a one-character prefix is ignored, as gmetad ignores it");
        }
        let plan = Arc::new(Plan {
            wire,
            filter,
            per_batch: c.max_samples_per_send,
            summaries: c.summaries,
            alive: Default::default(),
        });
        let queue = Arc::new(Queue::new(c.queue_max_bytes, stats.clone()));
        tracing::info!(forward = %c.label(), kind = c.kind.as_str(), target = %stats.target, "forwarding");
        tasks.spawn(schedule(
            plan,
            u64::from(c.interval(config.step_secs)),
            state.clone(),
            queue.clone(),
            stats.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(send_loop(
            sender,
            queue,
            stats.clone(),
            Backoff {
                min: Duration::from_millis(c.backoff_min_ms),
                max: Duration::from_millis(c.backoff_max_ms),
            },
            Duration::from_secs(u64::from(c.max_sample_age_secs)),
            shutdown.clone(),
        ));
        list.push(stats);
    }
    Ok(Forwards { list })
}

/// The first interval boundary strictly after `now`.
fn next_boundary(now: u64, interval: u64) -> u64 {
    (now / interval + 1) * interval
}

async fn schedule(
    plan: Arc<Plan>,
    interval: u64,
    state: Arc<State>,
    queue: Arc<Queue>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    let interval = interval.max(1);
    let limiter = crate::telemetry::LogLimiter::<u8>::new(Duration::from_secs(600));
    let mut last = 0u64;
    let mut next = next_boundary(now_secs(), interval);
    loop {
        // Wall-clock boundaries: sleep in short steps so a clock change
        // cannot make one sleep last forever.
        let now = now_secs();
        if now < next {
            let wait = Duration::from_secs((next - now).min(5));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let ts = next;
        next = next_boundary(now, interval);
        if ts <= last {
            // Counted per pass: there is no sample count without encoding.
            stats.drop_samples(Reason::OutOfOrder, 1);
            continue;
        }
        last = ts;
        let (p, st) = (plan.clone(), state.clone());
        let batches = match tokio::task::spawn_blocking(move || {
            let snap = st.snapshot(now_secs());
            p.encode(&snap, ts)
        })
        .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(forward = %stats.name, "encoding failed: {e}");
                continue;
            }
        };
        stats.last_ts.store(ts, Ordering::Relaxed);
        let bytes: u64 = batches.iter().map(|b| b.payload.len() as u64).sum();
        if bytes > queue.max_bytes() && limiter.allow(0) {
            tracing::warn!(
                forward = %stats.name,
                pass_bytes = bytes,
                queue_max_bytes = queue.max_bytes(),
                "one pass is larger than queue_max_bytes: its oldest batches are dropped even when the engine keeps up; raise queue_max_bytes"
            );
        }
        for b in batches {
            stats.samples.fetch_add(b.samples, Ordering::Relaxed);
            queue.push(b);
        }
    }
}

/// Retry delays.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub min: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay after `failures` consecutive failures (≥ 1), with up to
    /// 25 % jitter so many aggregators do not retry in step.
    pub fn delay(&self, failures: u32) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.max);
        let nanos = Instant::now().elapsed().subsec_nanos() ^ failures.wrapping_mul(2_654_435_761);
        let jitter = base.mul_f64(f64::from(nanos % 1000) / 4000.0);
        (base + jitter).min(self.max)
    }
}

async fn send_loop(
    mut sender: Sender,
    queue: Arc<Queue>,
    stats: Arc<Stats>,
    backoff: Backoff,
    max_age: Duration,
    shutdown: CancellationToken,
) {
    let limiter = crate::telemetry::LogLimiter::<u8>::new(Duration::from_secs(60));
    loop {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => break,
            b = queue.pop() => b,
        };
        let mut failures = 0u32;
        loop {
            if batch.made.elapsed() > max_age {
                stats.drop_samples(Reason::TooOld, batch.samples);
                break;
            }
            let t0 = Instant::now();
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => {
                    stats.drop_samples(Reason::Shutdown, batch.samples);
                    break;
                }
                o = sender.send(&batch) => o,
            };
            stats.observe(t0.elapsed().as_secs_f64());
            match outcome {
                Outcome::Sent => {
                    stats.sent.fetch_add(batch.samples, Ordering::Relaxed);
                    stats.last_success.store(now_secs(), Ordering::Relaxed);
                    stats.up.store(true, Ordering::Relaxed);
                    break;
                }
                Outcome::Rejected(e) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    stats.drop_samples(Reason::Rejected, batch.samples);
                    stats.set_error(&e);
                    if limiter.allow(1) {
                        tracing::warn!(forward = %stats.name, "batch refused, dropped: {e}");
                    }
                    break;
                }
                Outcome::Retry { error, after } => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    stats.retried.fetch_add(1, Ordering::Relaxed);
                    stats.set_error(&error);
                    if limiter.allow(0) {
                        tracing::warn!(forward = %stats.name, "send failed, retrying: {error}");
                    }
                    failures += 1;
                    let wait = after
                        .map(|a| a.min(backoff.max.max(Duration::from_secs(1)) * 4))
                        .unwrap_or_else(|| backoff.delay(failures));
                    tokio::select! {
                        _ = shutdown.cancelled() => {
                            stats.drop_samples(Reason::Shutdown, batch.samples);
                            break;
                        }
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        queue.done(&batch);
        if shutdown.is_cancelled() {
            break;
        }
    }
    queue.drain(Reason::Shutdown);
}

/// Registers every forward's self-metrics (called from
/// `telemetry::Exposition::render`); returns the counter base names, for
/// the 0.0.4 text format's `TYPE` lines.
pub fn register_metrics(
    forwards: &Forwards,
    reg: &mut prometheus_client::registry::Registry,
) -> Vec<&'static str> {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    type L = Vec<(&'static str, String)>;
    if forwards.list.is_empty() {
        return Vec::new();
    }
    let lbl = |s: &Stats| vec![("forward", s.name.clone())];
    let counter = |name: &'static str,
                   help: &str,
                   f: &dyn Fn(&Stats) -> u64,
                   reg: &mut prometheus_client::registry::Registry| {
        let fam = Family::<L, Counter>::default();
        for s in &forwards.list {
            fam.get_or_create(&lbl(s)).inc_by(f(s));
        }
        reg.register(name, help, fam);
    };
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    counter(
        "ganglion_forward_samples",
        "Samples queued for sending, per forward",
        &|s| g(&s.samples),
        reg,
    );
    counter(
        "ganglion_forward_sent",
        "Samples the engine accepted (remote write 2xx) or written to its socket (Graphite)",
        &|s| g(&s.sent),
        reg,
    );
    counter(
        "ganglion_forward_retried",
        "Requests or writes retried after a 5xx, 429, timeout or connection error",
        &|s| g(&s.retried),
        reg,
    );
    counter(
        "ganglion_forward_failed_requests",
        "Requests or writes that failed",
        &|s| g(&s.failed),
        reg,
    );
    let dropped = Family::<Vec<(&'static str, String)>, Counter>::default();
    for s in &forwards.list {
        for r in Reason::ALL {
            dropped
                .get_or_create(&vec![
                    ("forward", s.name.clone()),
                    ("reason", r.as_str().to_string()),
                ])
                .inc_by(s.dropped(r));
        }
    }
    reg.register(
        "ganglion_forward_dropped",
        "Samples not delivered, by forward and reason",
        dropped,
    );
    let gauge = |name: &'static str,
                 help: &str,
                 f: &dyn Fn(&Stats) -> i64,
                 reg: &mut prometheus_client::registry::Registry| {
        let fam = Family::<L, Gauge>::default();
        for s in &forwards.list {
            fam.get_or_create(&lbl(s)).set(f(s));
        }
        reg.register(name, help, fam);
    };
    gauge(
        "ganglion_forward_queue_bytes",
        "Bytes of encoded batches queued or being sent",
        &|s| s.queue_bytes() as i64,
        reg,
    );
    gauge(
        "ganglion_forward_queue_max_bytes",
        "queue_max_bytes of the forward",
        &|s| g(&s.queue_max_bytes) as i64,
        reg,
    );
    gauge(
        "ganglion_forward_up",
        "1 when the forward's last send succeeded",
        &|s| i64::from(s.up.load(Ordering::Relaxed)),
        reg,
    );
    gauge(
        "ganglion_forward_last_success_timestamp_seconds",
        "Unix time of the last successful send (0: none)",
        &|s| g(&s.last_success) as i64,
        reg,
    );
    reg.register(
        "ganglion_forward_send_duration_seconds",
        "Time per request (remote write) or write (Graphite), failures included",
        LatencyFamily(forwards.list.clone()),
    );
    vec![
        "ganglion_forward_samples",
        "ganglion_forward_sent",
        "ganglion_forward_retried",
        "ganglion_forward_failed_requests",
        "ganglion_forward_dropped",
    ]
}

/// The send-latency histograms of every forward, as one family.
#[derive(Debug)]
struct LatencyFamily(Vec<Arc<Stats>>);

impl prometheus_client::encoding::EncodeMetric for LatencyFamily {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        for s in &self.0 {
            let (sum, count, buckets) = s.latency();
            let labels = vec![("forward", s.name.clone())];
            let mut e = encoder.encode_family(&labels)?;
            e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum, count, &buckets, None,
            )?;
        }
        Ok(())
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

#[cfg(test)]
pub(crate) mod tests;

//! Polling data sources the way gmetad does (`gmetad/data_thread.c`): connect to
//! the first address that answers (remembering the last good one), send nothing,
//! read to EOF with a per-read timeout, gunzip if needed, parse. A gmond source
//! becomes a cluster; a gmetad source's clusters become clusters and its grids
//! become child grids (summary only). A bad poll marks that source's last data
//! stale instead of discarding it, and never touches other sources.
//!
//! A source is a remote peer, so what it can cost is bounded: a document
//! (as received, and again once gunzipped) may hold at most
//! `data_source.max_document_mb` ([`max_document_bytes`], default
//! [`MAX_DOCUMENT_BYTES`]) and must arrive within [`poll_deadline`]; a cluster
//! or grid name that belongs to one of our own clusters or to another source
//! is refused (counted, logged once per name per 10 minutes), so no source
//! can wipe or overwrite data it does not own.
//!
//! What goes wrong is reported as [`crate::diag`] events: a failing
//! source is logged when it starts failing and then once per 10 minutes, as
//! are partial polls and each refused name; every occurrence is counted.

use crate::config::DataSourceConfig;
use crate::diag::{self, Diag, Event, Level, LogAs};
use crate::state::{GridSnap, Refusal, State, Summary, SummaryMetric, now_secs};
use crate::telemetry::Counters;
use ganglion_proto::xml::{self, Item, Limits, XmlError};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Default largest document accepted from one source
/// (`data_source.max_document_mb`), both as received and after gunzip (a
/// gzip bomb inflates about 1000:1, so the inflated size is what needs the
/// bound). A 1M-series gmetad document is about 300 MB. A poll holds up to
/// this much memory while it reads, so the sum over sources bounds what
/// hostile sources can make the aggregator hold.
pub const MAX_DOCUMENT_BYTES: usize = 512 * 1024 * 1024;

/// The document bound of one source, in bytes.
pub fn max_document_bytes(ds: &DataSourceConfig) -> usize {
    usize::try_from(ds.max_document_mb)
        .unwrap_or(usize::MAX)
        .saturating_mul(1024 * 1024)
}

/// How long one poll may take from connect to the end of the document:
/// twice the poll interval (at least twice the per-read timeout). A source
/// that keeps sending without ever ending its document is cut there, where
/// the per-read timeout alone would never fire.
pub fn poll_deadline(ds: &DataSourceConfig) -> Duration {
    Duration::from_secs(2 * u64::from(ds.poll_secs.max(ds.timeout_secs).max(1)))
}

/// The reader's limits for polled documents.
fn limits(max: usize) -> Limits {
    Limits {
        max_input_bytes: max,
        ..Limits::default()
    }
}

/// Why a poll failed.
#[derive(Debug, Error)]
pub enum PollError {
    /// No address accepted a connection.
    #[error("no address answered: {0}")]
    Connect(String),
    /// Reading stalled or failed.
    #[error("read from {addr} failed: {error}")]
    Read {
        /// Address.
        addr: String,
        /// Cause.
        error: String,
    },
    /// The document is larger than we accept.
    #[error("document from {0} exceeds {1} bytes (data_source.max_document_mb)")]
    TooLarge(String, usize),
    /// The document did not end within the poll deadline.
    #[error("document from {addr} not complete after {secs} s")]
    TooSlow {
        /// Address.
        addr: String,
        /// The deadline.
        secs: u64,
    },
}

/// What a source's log lines are limited by (each source has its own
/// limiter).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PollKey {
    /// The source failing (connect, read, size, deadline).
    Failing,
    /// Polls that were only partly usable.
    Partial,
    /// A cluster or grid name refused.
    Name(String),
}

/// How often each [`PollKey`] of a source is logged.
const POLL_LOG_EVERY: Duration = Duration::from_secs(600);

/// Names remembered per source for the log limit.
const POLL_LOG_KEYS: usize = 1024;

/// A poll failed: `ganglion_polls_failed_total`, and
/// `ganglion_poll_too_large_total` / `ganglion_poll_too_slow_total` by cause.
struct PollFailed<'a> {
    source: &'a str,
    error: &'a PollError,
}

impl Event for PollFailed<'_> {
    type Counters = Counters;
    type Key = PollKey;
    const LEVEL: Level = Level::WARN;

    fn count(&self, c: &Counters) {
        diag::inc(&c.polls_failed);
        match self.error {
            PollError::TooLarge(..) => diag::inc(&c.poll_too_large),
            PollError::TooSlow { .. } => diag::inc(&c.poll_too_slow),
            PollError::Connect(_) | PollError::Read { .. } => {}
        }
    }

    fn log_as(&self) -> LogAs<PollKey> {
        LogAs::PerKey(PollKey::Failing)
    }

    fn log(&self, _: &Counters) {
        diag::line!(Self::LEVEL, source = %self.source, error = %self.error, "poll failed; keeping the last data as stale");
    }
}

/// A document over its size bound once parsed (gunzipped): nothing of it is
/// taken (`ganglion_polls_failed_total`, `ganglion_poll_too_large_total`).
struct PollRefused<'a> {
    source: &'a str,
    error: Option<&'a XmlError>,
}

impl Event for PollRefused<'_> {
    type Counters = Counters;
    type Key = PollKey;
    const LEVEL: Level = Level::WARN;

    fn count(&self, c: &Counters) {
        diag::inc(&c.polls_failed);
        diag::inc(&c.poll_too_large);
    }

    fn log_as(&self) -> LogAs<PollKey> {
        LogAs::PerKey(PollKey::Failing)
    }

    fn log(&self, _: &Counters) {
        let e = self.error.map(|e| e.to_string()).unwrap_or_default();
        diag::line!(Self::LEVEL, source = %self.source, error = %e, "poll refused; keeping the last data as stale");
    }
}

/// A document that broke off: complete clusters were taken, the rest kept
/// as stale (`ganglion_polls_failed_total`).
struct PartialPoll<'a> {
    source: &'a str,
    error: &'a XmlError,
}

impl Event for PartialPoll<'_> {
    type Counters = Counters;
    type Key = PollKey;
    const LEVEL: Level = Level::WARN;

    fn count(&self, c: &Counters) {
        diag::inc(&c.polls_failed);
    }

    fn log_as(&self) -> LogAs<PollKey> {
        LogAs::PerKey(PollKey::Partial)
    }

    fn log(&self, _: &Counters) {
        diag::line!(Self::LEVEL, source = %self.source, error = %self.error, "partial poll: complete clusters updated, the rest kept as stale");
    }
}

/// A polled cluster or grid name that belongs to someone else
/// (`ganglion_poll_cluster_collisions_total`).
struct NameRefused<'a> {
    source: &'a str,
    refusal: &'a Refusal,
}

impl Event for NameRefused<'_> {
    type Counters = Counters;
    type Key = PollKey;
    const LEVEL: Level = Level::WARN;

    fn count(&self, c: &Counters) {
        diag::inc(&c.poll_cluster_collisions);
    }

    fn log_as(&self) -> LogAs<PollKey> {
        LogAs::PerKey(PollKey::Name(self.refusal.name().to_string()))
    }

    fn log(&self, _: &Counters) {
        diag::line!(Self::LEVEL, source = %self.source, error = %self.refusal, "refusing a polled name (logged once per name per 10 minutes)");
    }
}

fn with_default_port(a: &str) -> String {
    // "host", "1.2.3.4", "[v6]" get gmetad's default 8649; "host:port" is kept.
    let has_port = if let Some(rest) = a.strip_prefix('[') {
        rest.contains("]:")
    } else {
        a.matches(':').count() == 1
    };
    if has_port {
        a.to_string()
    } else if a.matches(':').count() > 1 && !a.starts_with('[') {
        format!("[{a}]:8649")
    } else {
        format!("{a}:8649")
    }
}

/// One poll's document. `size_hint` is the previous document's size: the
/// buffer starts there, so a multi-megabyte document is not regrown (and
/// copied) a dozen times per poll.
async fn fetch(
    ds: &DataSourceConfig,
    last_good: &mut usize,
    size_hint: usize,
) -> Result<Vec<u8>, PollError> {
    let timeout = Duration::from_secs(u64::from(ds.timeout_secs));
    let n = ds.addresses.len();
    let mut errors = Vec::new();
    for k in 0..n {
        let i = (*last_good + k) % n;
        let addr = with_default_port(&ds.addresses[i]);
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                errors.push(format!("{addr}: {e}"));
                continue;
            }
            Err(_) => {
                errors.push(format!("{addr}: connect timed out"));
                continue;
            }
        };
        *last_good = i;
        let deadline = poll_deadline(ds);
        return match tokio::time::timeout(
            deadline,
            read_all(stream, &addr, timeout, size_hint, max_document_bytes(ds)),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(PollError::TooSlow {
                addr,
                secs: deadline.as_secs(),
            }),
        };
    }
    Err(PollError::Connect(errors.join("; ")))
}

async fn read_all(
    mut s: TcpStream,
    addr: &str,
    timeout: Duration,
    size_hint: usize,
    max: usize,
) -> Result<Vec<u8>, PollError> {
    const CHUNK: usize = 64 * 1024;
    let mut out = Vec::with_capacity((size_hint + size_hint / 8 + CHUNK).min(max));
    loop {
        // Read straight into the document's spare capacity. Growth doubles,
        // except near the size limit, where one byte over is enough to
        // refuse (doubling there would ask for twice the limit).
        let room = (max + 1).saturating_sub(out.len());
        if out.capacity() - out.len() < CHUNK.min(room) {
            if out.capacity().saturating_mul(2) > max {
                out.reserve_exact(room);
            } else {
                out.reserve(CHUNK);
            }
        }
        let n = match tokio::time::timeout(timeout, s.read_buf(&mut out)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                return Err(PollError::Read {
                    addr: addr.into(),
                    error: e.to_string(),
                });
            }
            Err(_) => {
                return Err(PollError::Read {
                    addr: addr.into(),
                    error: format!("no data for {} s", timeout.as_secs()),
                });
            }
        };
        if n == 0 {
            return Ok(out);
        }
        if out.len() > max {
            return Err(PollError::TooLarge(addr.into(), max));
        }
    }
}

fn summary_metrics(ms: &[xml::SummaryMetric]) -> Vec<SummaryMetric> {
    ms.iter()
        .map(|m| SummaryMetric {
            name: m.name.to_string(),
            sum: m.sum.trim().parse().unwrap_or(0.0),
            num: m.num,
            metric_type: m.metric_type,
            units: m.units.to_string(),
            slope: m.slope,
            precision_from: m.sum.to_string(),
            extras: m
                .extras
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .collect()
}

/// A cluster's summary: its HOSTS/METRICS when it carries them, else computed
/// from its hosts with the same arithmetic as our own clusters'
/// ([`Summary::of_polled_hosts`]).
fn summarize_cluster(c: &xml::Cluster) -> Summary {
    if let Some(h) = c.hosts_summary {
        let mut metrics = summary_metrics(&c.metrics);
        metrics.sort_by(|a, b| a.name.cmp(&b.name));
        return Summary {
            hosts_up: h.up,
            hosts_down: h.down,
            metrics,
        };
    }
    Summary::of_polled_hosts(c)
}

/// A grid seen from above is summary only (gmetad's authority rule): its own
/// HOSTS/METRICS when present, else the sum of everything nested in it.
fn summarize_grid(g: &xml::Grid) -> Summary {
    if let Some(h) = g.hosts {
        let mut metrics = summary_metrics(&g.metrics);
        metrics.sort_by(|a, b| a.name.cmp(&b.name));
        return Summary {
            hosts_up: h.up,
            hosts_down: h.down,
            metrics,
        };
    }
    let mut s = Summary::default();
    for c in &g.clusters {
        s.merge(&summarize_cluster(c));
    }
    for cg in &g.grids {
        s.merge(&summarize_grid(cg));
    }
    s
}

fn grid_snap(g: &xml::Grid, now: u64) -> GridSnap {
    GridSnap {
        name: g.name.clone(),
        authority: g.authority.clone(),
        localtime: g.localtime.unwrap_or(now),
        summary: summarize_grid(g),
        stale: !g.complete,
    }
}

/// What one document did to the state.
#[derive(Debug, Default)]
pub struct Applied {
    /// Cluster names it delivered (complete or not), so a later failure can
    /// mark exactly those stale.
    pub clusters: Vec<String>,
    /// Grid names it delivered.
    pub grids: Vec<String>,
    /// Clusters and grids refused for their name.
    pub refused: Vec<Refusal>,
}

/// Applies one parsed document from an unnamed source; returns the cluster
/// and grid names it delivered (see [`apply_from`]).
pub fn apply(state: &State, document: xml::Document, now: u64) -> (Vec<String>, Vec<String>) {
    let a = apply_from(state, "", document, now);
    (a.clusters, a.grids)
}

/// Applies one parsed document from data source `source`, which owns the
/// cluster and grid names it delivers first.
pub fn apply_from(state: &State, source: &str, document: xml::Document, now: u64) -> Applied {
    let mut out = Applied::default();
    let (mut stale_c, mut stale_g) = (vec![], vec![]);
    for item in document.items {
        match item {
            Item::Cluster(c) => {
                out.clusters.push(c.name.clone());
                if c.complete {
                    if let Err(r) = state.replace_polled_cluster(source, c, now) {
                        out.refused.push(r);
                    }
                } else {
                    stale_c.push(c.name);
                }
            }
            // A gmond source gives clusters (shown in full); a gmetad source
            // gives its GRID, which becomes a child grid: summary only, like
            // gmetad's `scalable` mode.
            Item::Grid(g) => {
                out.grids.push(g.name.clone());
                if g.complete {
                    if let Err(r) = state.replace_grid(source, grid_snap(&g, now)) {
                        out.refused.push(r);
                    }
                } else {
                    stale_g.push(g.name.clone());
                }
            }
            Item::Host(_) => {}
        }
    }
    state.mark_stale(source, &stale_c, &stale_g);
    out
}

/// Polls one source until shutdown.
pub async fn run_source(ds: DataSourceConfig, state: Arc<State>, shutdown: CancellationToken) {
    let mut last_good = 0usize;
    let mut last_size = 0usize;
    let mut seen: (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    let diag: Diag<PollKey> = Diag::with_capacity(POLL_LOG_EVERY, POLL_LOG_KEYS);
    let mut jitter = (now_secs() as u32).wrapping_mul(2654435761);
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = fetch(&ds, &mut last_good, last_size) => r,
        };
        let counters = state.counters().clone();
        match result {
            Ok(bytes) => {
                last_size = bytes.len();
                let max = max_document_bytes(&ds);
                let parsed =
                    tokio::task::spawn_blocking(move || xml::parse_bytes(&bytes, &limits(max)))
                        .await;
                match parsed {
                    Ok(out) if matches!(out.error, Some(XmlError::LimitExceeded { .. })) => {
                        // Nothing of an oversized document is taken.
                        state.mark_stale(&ds.name, &seen.0, &seen.1);
                        diag.emit(
                            PollRefused {
                                source: &ds.name,
                                error: out.error.as_ref(),
                            },
                            &counters,
                        );
                    }
                    Ok(mut out) => {
                        counters
                            .poll_skipped_elements
                            .fetch_add(out.skipped.len() as u64, Ordering::Relaxed);
                        let applied = apply_from(
                            &state,
                            &ds.name,
                            std::mem::take(&mut out.document),
                            now_secs(),
                        );
                        for r in &applied.refused {
                            diag.emit(
                                NameRefused {
                                    source: &ds.name,
                                    refusal: r,
                                },
                                &counters,
                            );
                        }
                        if let Some(e) = &out.error {
                            diag.emit(
                                PartialPoll {
                                    source: &ds.name,
                                    error: e,
                                },
                                &counters,
                            );
                        } else {
                            counters.polls_ok.fetch_add(1, Ordering::Relaxed);
                            diag.reset(&PollKey::Partial);
                        }
                        if !applied.clusters.is_empty() || !applied.grids.is_empty() {
                            seen = (applied.clusters, applied.grids);
                        }
                        // The source answers again: its next failure is news.
                        diag.reset(&PollKey::Failing);
                    }
                    Err(e) => tracing::error!(source = %ds.name, error = %e, "parser task failed"),
                }
            }
            Err(e) => {
                state.mark_stale(&ds.name, &seen.0, &seen.1);
                // One line when a source goes bad, then once every 10 minutes.
                diag.emit(
                    PollFailed {
                        source: &ds.name,
                        error: &e,
                    },
                    &counters,
                );
            }
        }
        // gmetad sleeps step × (1 ± 5 %) minus the time the poll took.
        jitter = jitter.wrapping_mul(1103515245).wrapping_add(12345);
        let frac = f64::from(jitter % 1000) / 1000.0 * 0.1 - 0.05;
        let period = Duration::from_secs_f64(f64::from(ds.poll_secs) * (1.0 + frac));
        let wait = period.saturating_sub(started.elapsed());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_default_port;

    #[test]
    fn default_port_like_gmetad() {
        assert_eq!(with_default_port("10.1.2.3"), "10.1.2.3:8649");
        assert_eq!(with_default_port("host:8651"), "host:8651");
        assert_eq!(with_default_port("::1"), "[::1]:8649");
        assert_eq!(with_default_port("[::1]:9000"), "[::1]:9000");
    }
}

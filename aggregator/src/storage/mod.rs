//! Round-robin storage in gmetad's exact layout, off the ingest path.
//!
//! ```text
//! sampler (every step): Snapshot → samples (gmetad's rules)      sampler.rs
//!   └─▶ bounded sample queue (full = counted drop, never blocks)  mailbox.rs
//!       readers' flush requests: their own bounded queue (full = "busy");
//!       flush-all: single-flight passes, rate-limited; never in the sample queue
//!   └─▶ writer thread                                             writer.rs, flush.rs
//!          journal: every accepted sample appended, fsync'd about  journal.rs
//!            once a second; records checksummed, a torn or damaged
//!            record never replays
//!          write-back cache: many samples per file (slots), written slot.rs
//!            every flush interval
//!          librrd (one rrd_updatex_r call per file) or rrdcached BATCH
//! ```
//!
//! gmetad's rules, as the sampler applies them: only numeric metrics of alive
//! hosts; host files hold the VAL string verbatim with DS `sum`; cluster and
//! child-grid summaries hold `sum` and `num`; the grid's own summary is always
//! GAUGE with a 15 s step and `%.5f` sums (gmetad's quirk, kept for
//! compatibility); positive slope → COUNTER, derivative → DERIVE; heartbeat
//! 8 × step; timestamps are the cluster's LOCALTIME.
//!
//! Crash safety: a sample is in the journal (and on disk after the next commit,
//! ≤ `journal_commit_interval_ms`) before it is written to any RRD. On start the
//! journal is replayed; updates at or before a file's last update are skipped,
//! so replay is idempotent and never trips librrd's "minimum one second step".
//! RRD files are only ever written by librrd (or rrdcached).
//!
//! Faults cost only the files they touch. Every failed file write is counted
//! by cause ([`Cause`]: `no_space`, `read_only`, `bad_file`, `transient`,
//! `other`) and
//! logged at most once per 10 minutes (per cause for the disk, per file for a
//! file). A full or read-only disk is temporary: the file's samples stay
//! cached (up to `retry_window_secs`) and are retried at every flush, and the
//! journal keeps them. So are the samples of a write that failed for want of
//! a resource that comes back ([`Cause::Transient`]: no file descriptors or
//! memory, rrdcached down or restarting, whose client reconnects with
//! backoff). When rrdcached is configured it is the only way files are
//! updated: if it is down, even at start, samples wait for it (logged), and
//! nothing is written around it. A file librrd cannot use (foreign,
//! truncated, corrupt) is never touched: its samples are dropped and counted
//! until someone repairs or removes it. A metric whose DS type changes keeps writing into
//! its existing file, as gmetad does.

mod flush;
mod incidents;
mod journal;
mod mailbox;
mod metrics;
mod sampler;
mod slot;
mod writer;

pub use crate::config::{RrdcachedConfig, StorageConfig};
use crate::telemetry::Counters;
pub use ganglion_rrd::Cause;
use ganglion_rrd::layout::{self, Series};
pub use mailbox::FlushError;
use mailbox::{Closer, Mailbox, StopGuard};
pub use metrics::{StorageCounters, WriteErrors};
pub use sampler::{Sample, SeriesKey, SummaryRrds, run_sampler, samples};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Where and how files are written.
#[derive(Debug, Clone)]
pub struct StorageParams {
    /// The tree.
    pub rrd_root: PathBuf,
    /// Step of cluster and host files.
    pub step_secs: u32,
    /// RRA definitions for new files.
    pub rras: Vec<String>,
    /// gmetad `case_sensitive_hostnames`.
    pub case_sensitive_hostnames: bool,
    /// `[storage]`.
    pub config: StorageConfig,
    /// `[rrdcached]`.
    pub rrdcached: Option<RrdcachedConfig>,
}

/// A cheap handle to the writer.
#[derive(Clone)]
pub struct StorageHandle {
    mailbox: Arc<Mailbox>,
    /// Closes the mailbox when the last handle goes.
    _closer: Arc<Closer>,
    /// Counters.
    pub counters: Arc<StorageCounters>,
    params: Arc<StorageParams>,
}

impl StorageHandle {
    /// Queues samples; never blocks (a full queue drops the batch and
    /// counts it). Flush requests never take its place.
    pub fn submit(&self, batch: Vec<Sample>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        match self.mailbox.submit(batch) {
            Ok(()) => {
                self.counters.samples.fetch_add(n, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters
                    .dropped_batches
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes everything cached for `paths` (all files when empty) and returns
    /// once it is on disk — readers call this first so they never see stale
    /// NaN. `false` when it did not happen in `timeout` (see
    /// [`StorageHandle::try_flush`] for why).
    pub fn flush(&self, paths: Vec<PathBuf>, timeout: Duration) -> bool {
        self.try_flush(paths, timeout).is_ok()
    }

    /// As [`StorageHandle::flush`], saying why it did not happen:
    /// [`FlushError::Busy`] at once when too many readers' requests wait
    /// (`storage.control_queue_max`; answer 503), [`FlushError::Timeout`],
    /// or [`FlushError::Stopped`]. For every file (`paths` empty) the call
    /// joins the next pass over every file: callers arriving together share
    /// one, and forced passes are rate-limited
    /// (`storage.min_forced_flush_interval_secs`). A zero timeout only asks.
    pub fn try_flush(&self, paths: Vec<PathBuf>, timeout: Duration) -> Result<(), FlushError> {
        let r = if paths.is_empty() {
            self.counters
                .flush_all_requests
                .fetch_add(1, Ordering::Relaxed);
            self.mailbox.flush_all(timeout)
        } else {
            self.mailbox.flush_files(paths, timeout)
        };
        if r == Err(FlushError::Busy) {
            self.counters
                .flush_requests_refused
                .fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// The file of a series.
    pub fn path_of(&self, series: &Series) -> PathBuf {
        layout::path(
            &self.params.rrd_root,
            series,
            self.params.case_sensitive_hostnames,
        )
    }
}

/// Starts the writer thread. Returns the handle and the thread (joined at
/// shutdown after all handles are dropped).
///
/// With `[rrdcached]` configured, files are updated only through it: if it
/// cannot be reached now, that is logged and samples wait (cached and
/// journaled) while the client keeps trying with backoff.
pub fn start(
    params: StorageParams,
    _counters: &Arc<Counters>,
) -> std::io::Result<(StorageHandle, std::thread::JoinHandle<()>)> {
    let invalid = |(key, message): (&str, &str)| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("invalid `{key}`: {message}"),
        )
    };
    params.config.validate().map_err(invalid)?;
    if let Some(r) = &params.rrdcached {
        r.validate().map_err(invalid)?;
    }
    // The journal names files by path as text: a root that is not UTF-8
    // would lose every path in it.
    if params.rrd_root.to_str().is_none() {
        return Err(invalid((
            "rrd_root",
            "must be valid UTF-8 (the journal names files by it)",
        )));
    }
    std::fs::create_dir_all(&params.rrd_root)?;
    let params = Arc::new(params);
    let journal = if params.config.journal {
        Some(journal::open_journal(&params.rrd_root)?)
    } else {
        None
    };
    let cached = params.rrdcached.as_ref().map(|c| {
        let mut client = ganglion_rrd::rrdcached::Client::new(&c.address, c.options());
        if let Err(e) = client.ensure() {
            tracing::error!(
                daemon = %c.address,
                error = %e,
                "rrdcached is configured but not reachable; RRD files are written only through \
                 it, so samples stay cached and journaled and are retried (reconnecting with \
                 backoff) until it answers"
            );
        }
        client
    });
    let counters = Arc::new(StorageCounters::default());
    let mailbox = Arc::new(Mailbox::new(
        params.config.queue_max_batches,
        params.config.control_queue_max,
    ));
    let w = writer::Writer::new(params.clone(), counters.clone(), journal, cached);
    let mb = mailbox.clone();
    let t = std::thread::Builder::new()
        .name("rrd-writer".into())
        .spawn(move || {
            // Whoever waits is released even if the writer panics.
            let _stopped = StopGuard(mb.clone());
            w.run(mb)
        })?;
    Ok((
        StorageHandle {
            _closer: Arc::new(Closer(mailbox.clone())),
            mailbox,
            counters,
            params,
        },
        t,
    ))
}

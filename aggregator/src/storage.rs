//! Round-robin storage in gmetad's exact layout, off the ingest path.
//!
//! ```text
//! sampler (every step): Snapshot → samples (gmetad's rules)
//!   └─▶ bounded queue (full = counted drop, never blocks) ─▶ writer thread
//!          journal: every accepted sample appended, fsync'd about once a second
//!          write-back cache: many samples per file, written every flush interval
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
//! by cause ([`Cause`]: `no_space`, `read_only`, `bad_file`, `other`) and
//! logged at most once per 10 minutes (per cause for the disk, per file for a
//! file). A full or read-only disk is temporary: the file's samples stay
//! cached (up to `retry_window_secs`) and are retried at every flush, and the
//! journal keeps them. A file librrd cannot use (foreign, truncated, corrupt)
//! is never touched: its samples are dropped and counted until someone
//! repairs or removes it. A metric whose DS type changes keeps writing into
//! its existing file, as gmetad does.

use crate::state::{Snapshot, now_secs};
use crate::telemetry::{Counters, LabelledCounter, LogLimiter};
use compact_str::{CompactString, format_compact};
pub use ganglion_rrd::Cause;
use ganglion_rrd::layout::{self, Series};
use serde::Deserialize;
// Keys are sender-chosen names, so the hasher is seeded per process;
// foldhash is that and several times cheaper than SipHash on these short keys.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Write cached samples to the RRD files this often.
    pub flush_interval_secs: u32,
    /// At most this many file writes per second (0 = unlimited).
    pub max_file_writes_per_sec: u32,
    /// Samples waiting for the writer; beyond this, new batches are dropped and counted.
    pub queue_max_batches: usize,
    /// Keep a write-ahead journal for crash safety.
    pub journal: bool,
    /// Journal group-commit interval.
    pub journal_commit_interval_ms: u32,
    /// After a write fails because the disk is full or read-only, keep the
    /// file's samples for retry while they are at most this old (0 = drop
    /// them at once). Costs about 64 bytes per sample held.
    pub retry_window_secs: u32,
    /// Serve rrdcached's protocol for readers here (`unix:/path`, `/path` or
    /// `host:port`; none by default), so `rrdtool … --daemon` and
    /// ganglia-web's `rrdcached_socket` read files with every cached sample.
    pub daemon_listen: Vec<String>,
    /// Permissions of a unix `daemon_listen` socket (octal).
    pub daemon_socket_mode: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            // rrdcached's default write delay: 20 samples per file write at
            // gmetad's 15 s step. Readers flush what they read first.
            flush_interval_secs: 300,
            max_file_writes_per_sec: 0,
            queue_max_batches: 64,
            journal: true,
            journal_commit_interval_ms: 1000,
            // An hour of outage survives without a gap (240 samples a file at
            // gmetad's 15 s step).
            retry_window_secs: 3600,
            daemon_listen: Vec::new(),
            // Readers may read the tree anyway; the socket adds only "write
            // this file's cached samples now".
            daemon_socket_mode: "0666".into(),
        }
    }
}

impl StorageConfig {
    /// `daemon_socket_mode` as permission bits; `None` when it is not octal
    /// or has more than permission bits.
    pub fn daemon_socket_mode_bits(&self) -> Option<u32> {
        u32::from_str_radix(&self.daemon_socket_mode, 8)
            .ok()
            .filter(|m| *m <= 0o777)
    }
}

/// `[rrdcached]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RrdcachedConfig {
    /// `unix:/path` or `host:port`.
    pub address: String,
}

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

/// Which file a sample belongs to. Names are shared (`Arc`) with the
/// snapshot they come from, so a sample copies no strings; the writer maps
/// each key to its file once ([`layout::path`]).
#[derive(Debug, Clone, Eq)]
pub enum SeriesKey {
    /// One host's metric.
    Host {
        /// Cluster.
        cluster: Arc<str>,
        /// Host.
        host: Arc<str>,
        /// Metric.
        metric: Arc<str>,
    },
    /// A cluster's or child grid's summary.
    Summary {
        /// Cluster or grid.
        source: Arc<str>,
        /// Metric.
        metric: Arc<str>,
    },
    /// This grid's own summary.
    Root {
        /// Metric.
        metric: Arc<str>,
    },
}

/// Equal names, looked at by address first: metric names are interned by
/// the state, so the writer's index finds a known series without reading the
/// (cold) text it stored the first time.
impl PartialEq for SeriesKey {
    fn eq(&self, other: &Self) -> bool {
        fn same(a: &Arc<str>, b: &Arc<str>) -> bool {
            Arc::ptr_eq(a, b) || **a == **b
        }
        match (self, other) {
            (
                SeriesKey::Host {
                    cluster: c1,
                    host: h1,
                    metric: m1,
                },
                SeriesKey::Host {
                    cluster: c2,
                    host: h2,
                    metric: m2,
                },
            ) => same(m1, m2) && same(h1, h2) && same(c1, c2),
            (
                SeriesKey::Summary {
                    source: s1,
                    metric: m1,
                },
                SeriesKey::Summary {
                    source: s2,
                    metric: m2,
                },
            ) => same(m1, m2) && same(s1, s2),
            (SeriesKey::Root { metric: m1 }, SeriesKey::Root { metric: m2 }) => same(m1, m2),
            _ => false,
        }
    }
}

/// By the names' texts, as equality compares them.
impl std::hash::Hash for SeriesKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match self {
            SeriesKey::Host {
                cluster,
                host,
                metric,
            } => (0u8, &**cluster, &**host, &**metric).hash(h),
            SeriesKey::Summary { source, metric } => (1u8, &**source, &**metric).hash(h),
            SeriesKey::Root { metric } => (2u8, &**metric).hash(h),
        }
    }
}

impl SeriesKey {
    /// The layout's view of the same series.
    pub fn to_series(&self) -> Series {
        match self {
            SeriesKey::Host {
                cluster,
                host,
                metric,
            } => Series::Host {
                cluster: cluster.to_string(),
                host: host.to_string(),
                metric: metric.to_string(),
            },
            SeriesKey::Summary { source, metric } => Series::Summary {
                source: source.to_string(),
                metric: metric.to_string(),
            },
            SeriesKey::Root { metric } => Series::Root {
                metric: metric.to_string(),
            },
        }
    }

    fn metric(&self) -> &str {
        match self {
            SeriesKey::Host { metric, .. }
            | SeriesKey::Summary { metric, .. }
            | SeriesKey::Root { metric } => metric,
        }
    }
}

/// One value (or sum/num pair) for one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Which file.
    pub series: SeriesKey,
    /// RRD DS type (GAUGE, COUNTER, DERIVE).
    pub ds_type: &'static str,
    /// Step of the file.
    pub step: u32,
    /// Timestamp (epoch).
    pub time: u64,
    /// The update's values as librrd takes them: `sum`, or `sum:num` for
    /// summaries.
    pub values: CompactString,
    /// How many values (1 for hosts, 2 for summaries): the file's DS count.
    pub dss: u8,
}

/// Which summaries get RRD files: gmetad's `unsummarized_metrics` (name
/// prefixes), `unsummarized_sflow_vm_metrics` and, for the grid's root
/// summary only, `summarized_metrics` (`gmetad/process_xml.c`
/// `finish_processing_source`, `gmetad/gmetad.c` `write_root_summary`).
#[derive(Debug, Clone, Default)]
pub struct SummaryRrds {
    /// Name prefixes without summary files.
    pub unsummarized: Vec<String>,
    /// Skip names whose last `.` is followed by `v`.
    pub sflow_vm: bool,
    /// When not empty, the only root summaries (exact names).
    pub root_only: Vec<String>,
}

impl SummaryRrds {
    /// Whether a cluster's or child grid's summary of `name` gets a file.
    pub fn source(&self, name: &str) -> bool {
        let sflow_vm = self.sflow_vm
            && name
                .rfind('.')
                .is_some_and(|i| name[i + 1..].starts_with('v'));
        !sflow_vm
            && !self
                .unsummarized
                .iter()
                .any(|p| name.starts_with(p.as_str()))
    }

    /// Whether the grid's root summary of `name` gets a file.
    pub fn root(&self, name: &str) -> bool {
        (self.root_only.is_empty() || self.root_only.iter().any(|m| m == name)) && self.source(name)
    }
}

/// gmetad's samples for one snapshot (consumed: its strings move into the
/// samples).
pub fn samples(snap: Snapshot, step: u32, rrds: &SummaryRrds) -> Vec<Sample> {
    let grid = snap.grid_summary();
    // One sample per metric and summary line at most: sized once instead of
    // regrown (and moved) a dozen times per step.
    let most = snap
        .clusters
        .iter()
        .map(|c| c.summary.metrics.len() + c.hosts.iter().map(|h| h.metrics.len()).sum::<usize>())
        .sum::<usize>()
        + snap
            .grids
            .iter()
            .map(|g| g.summary.metrics.len())
            .sum::<usize>()
        + grid.metrics.len();
    let mut out = Vec::with_capacity(most);
    for c in snap.clusters.into_iter().filter(|c| !c.stale) {
        let cluster: Arc<str> = c.name.into();
        let time = c.localtime;
        for h in c.hosts.into_iter().filter(|h| h.alive) {
            let host: Arc<str> = h.name.into();
            // A numeric type with a value that is not a number (a confused
            // sender) would make librrd reject the whole batch from there on.
            for m in h
                .metrics
                .into_iter()
                .filter(|m| m.metric_type.is_numeric() && m.number.is_some())
            {
                let ds_type = m.slope.rrd_ds_type();
                let mut values = m.val;
                if values.trim().len() != values.len() {
                    values = values.trim().into();
                }
                out.push(Sample {
                    series: SeriesKey::Host {
                        cluster: cluster.clone(),
                        host: host.clone(),
                        metric: m.name,
                    },
                    ds_type,
                    step,
                    time,
                    values,
                    dss: 1,
                });
            }
        }
        for m in c.summary.metrics.iter().filter(|m| rrds.source(&m.name)) {
            out.push(Sample {
                series: SeriesKey::Summary {
                    source: cluster.clone(),
                    metric: m.name.as_str().into(),
                },
                ds_type: m.slope.rrd_ds_type(),
                step,
                time,
                values: format_compact!("{}:{}", m.sum_text(), m.num),
                dss: 2,
            });
        }
    }
    for g in snap.grids.iter().filter(|g| !g.stale) {
        let source: Arc<str> = g.name.as_str().into();
        for m in g.summary.metrics.iter().filter(|m| rrds.source(&m.name)) {
            out.push(Sample {
                series: SeriesKey::Summary {
                    source: source.clone(),
                    metric: m.name.as_str().into(),
                },
                ds_type: m.slope.rrd_ds_type(),
                step,
                time: g.localtime,
                values: format_compact!("{}:{}", m.sum_text(), m.num),
                dss: 2,
            });
        }
    }
    for m in grid.metrics.into_iter().filter(|m| rrds.root(&m.name)) {
        out.push(Sample {
            series: SeriesKey::Root {
                metric: m.name.as_str().into(),
            },
            ds_type: "GAUGE",
            step: 15,
            time: snap.localtime,
            values: format_compact!("{:.5}:{}", m.sum, m.num),
            dss: 2,
        });
    }
    out
}

/// Storage counters (also on `/metrics`).
#[derive(Debug, Default)]
pub struct StorageCounters {
    /// Samples accepted.
    pub samples: AtomicU64,
    /// Batches dropped because the queue was full.
    pub dropped_batches: AtomicU64,
    /// Files created.
    pub files_created: AtomicU64,
    /// File writes (one per file per flush).
    pub file_writes: AtomicU64,
    /// Samples written.
    pub samples_written: AtomicU64,
    /// Failed file writes (create or update), by cause.
    pub write_errors: WriteErrors,
    /// Samples given up: their file is unusable, the write failed for a
    /// reason retrying will not fix, or they outlived `retry_window_secs`.
    pub samples_discarded: AtomicU64,
    /// Times a series' samples changed DS type (their slope changed) after
    /// its file was set up; the file keeps its type.
    pub type_changes: AtomicU64,
    /// Journal writes that failed (those samples are not crash-safe until
    /// they reach their files).
    pub journal_errors: AtomicU64,
    /// Samples replayed from the journal at start.
    pub replayed: AtomicU64,
    /// Samples not newer than their file's previous one (a source whose
    /// clock stood still): skipped, as librrd would refuse them.
    pub samples_not_newer: AtomicU64,
    /// Files a flush pass found evicted from the page cache and read ahead
    /// before updating them.
    pub files_read_ahead: AtomicU64,
    /// Requests on the rrdcached-protocol socket ([`crate::daemon`]).
    pub daemon_requests: AtomicU64,
    /// Of those, answered with an error (a file outside the tree, a write
    /// command, an unknown command, a librrd error).
    pub daemon_errors: AtomicU64,
}

/// Failed file writes by [`Cause`].
#[derive(Debug, Default)]
pub struct WriteErrors {
    no_space: AtomicU64,
    read_only: AtomicU64,
    bad_file: AtomicU64,
    other: AtomicU64,
}

impl WriteErrors {
    fn counter(&self, cause: Cause) -> &AtomicU64 {
        match cause {
            Cause::NoSpace => &self.no_space,
            Cause::ReadOnly => &self.read_only,
            Cause::BadFile => &self.bad_file,
            Cause::Other => &self.other,
        }
    }

    /// Failures of one cause so far.
    pub fn get(&self, cause: Cause) -> u64 {
        self.counter(cause).load(Ordering::Relaxed)
    }
}

/// Largest pending-update buffer a file keeps after its write (about 200
/// updates; a flush interval's worth at the default settings is 20).
const REUSED_PENDING_BYTES: usize = 4096;

const CAUSES: [Cause; 4] = [
    Cause::NoSpace,
    Cause::ReadOnly,
    Cause::BadFile,
    Cause::Other,
];

/// The `reason` label of a cause on `/metrics` and in the log.
fn reason(cause: Cause) -> &'static str {
    match cause {
        Cause::NoSpace => "no_space",
        Cause::ReadOnly => "read_only",
        Cause::BadFile => "bad_file",
        Cause::Other => "other",
    }
}

impl StorageCounters {
    /// `(name, help, value)` for `/metrics`.
    pub fn list(&self) -> Vec<(&'static str, &'static str, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            (
                "ganglion_rrd_samples_total",
                "Samples accepted for RRD storage",
                g(&self.samples),
            ),
            (
                "ganglion_rrd_dropped_batches_total",
                "Sample batches dropped (writer queue full)",
                g(&self.dropped_batches),
            ),
            (
                "ganglion_rrd_files_created_total",
                "RRD files created",
                g(&self.files_created),
            ),
            (
                "ganglion_rrd_file_writes_total",
                "RRD file writes (many samples each)",
                g(&self.file_writes),
            ),
            (
                "ganglion_rrd_samples_written_total",
                "Samples written to RRD files",
                g(&self.samples_written),
            ),
            (
                "ganglion_rrd_samples_discarded_total",
                "Samples given up (unusable file, failed write, older than the retry window)",
                g(&self.samples_discarded),
            ),
            (
                "ganglion_rrd_type_changes_total",
                "Series whose DS type changed after their file was set up (the file keeps its type)",
                g(&self.type_changes),
            ),
            (
                "ganglion_rrd_journal_errors_total",
                "Failed journal writes",
                g(&self.journal_errors),
            ),
            (
                "ganglion_rrd_samples_not_newer_total",
                "Samples skipped because they were not newer than their file's previous sample",
                g(&self.samples_not_newer),
            ),
            (
                "ganglion_rrd_files_read_ahead_total",
                "RRD files found evicted from the page cache and read ahead before their update",
                g(&self.files_read_ahead),
            ),
            (
                "ganglion_rrd_daemon_requests_total",
                "Requests on the rrdcached-protocol socket (storage.daemon_listen)",
                g(&self.daemon_requests),
            ),
            (
                "ganglion_rrd_daemon_errors_total",
                "Requests on the rrdcached-protocol socket answered with an error",
                g(&self.daemon_errors),
            ),
            (
                "ganglion_rrd_journal_replayed_total",
                "Samples replayed from the journal at start",
                g(&self.replayed),
            ),
        ]
    }

    /// Counters with a label, for `/metrics`.
    pub fn labelled(&self) -> Vec<LabelledCounter> {
        vec![(
            "ganglion_rrd_write_errors_total",
            "RRD create/update failures by reason (no_space, read_only, bad_file, other)",
            "reason",
            CAUSES
                .iter()
                .map(|&c| (reason(c), self.write_errors.get(c)))
                .collect(),
        )]
    }
}

/// Why one file could not be written.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    /// Its directory could not be created.
    #[error("cannot create directory {}: {source}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// librrd failed.
    #[error(transparent)]
    Rrd(#[from] ganglion_rrd::RrdError),
    /// rrdcached could not be asked.
    #[error(transparent)]
    Cached(#[from] ganglion_rrd::rrdcached::CachedError),
    /// rrdcached refused the updates.
    #[error("rrdcached refused updates of {}: {message}", path.display())]
    CachedRefused {
        /// The file.
        path: PathBuf,
        /// The daemon's messages.
        message: String,
    },
}

impl WriteError {
    fn cause(&self) -> Cause {
        match self {
            WriteError::Dir { source, .. } => match source.kind() {
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                    Cause::NoSpace
                }
                std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => {
                    Cause::ReadOnly
                }
                _ => Cause::Other,
            },
            WriteError::Rrd(e) => e.cause(),
            WriteError::Cached(e) => e.cause(),
            WriteError::CachedRefused { message, .. } => Cause::of_message(message),
        }
    }
}

/// librrd cannot say why a create failed when the failure is in its
/// temporary file ("Cannot create temporary file", or a silent success on a
/// full disk); the file system can.
fn diagnose_dir(dir: &Path, needed_bytes: u64) -> Option<Cause> {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let st = statvfs(dir).ok()?;
    if st.flags().contains(FsFlags::ST_RDONLY) {
        return Some(Cause::ReadOnly);
    }
    // fsblkcnt_t and c_ulong are 32-bit on some targets: keep the widening.
    #[allow(clippy::useless_conversion)]
    let avail = u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size()));
    (avail < needed_bytes || st.files_available() == 0).then_some(Cause::NoSpace)
}

/// About the size librrd gives a new file: 8 bytes per row per DS plus the
/// header (a few hundred bytes per DS and RRA; 4 KiB is generous).
fn file_size_estimate(rras: &[String], dss: usize) -> u64 {
    let rows: u64 = rras
        .iter()
        .filter_map(|r| r.rsplit(':').next()?.parse::<u64>().ok())
        .sum();
    rows * dss as u64 * 8 + 4096
}

/// What a log line is about, for the once-per-10-minutes limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LogKey {
    /// The disk (or the rrdcached connection): one line for all files
    /// failing the same way.
    Disk(Cause),
    /// One file.
    File(Cause, PathBuf),
    /// A metric whose DS type changed.
    TypeChange(String),
    /// The journal.
    Journal,
}

enum Command {
    Samples(Vec<Sample>),
    Flush(Vec<PathBuf>, mpsc::Sender<()>),
}

/// A cheap handle to the writer.
#[derive(Clone)]
pub struct StorageHandle {
    tx: SyncSender<Command>,
    /// Counters.
    pub counters: Arc<StorageCounters>,
    params: Arc<StorageParams>,
}

impl StorageHandle {
    /// Queues samples; never blocks (a full queue drops the batch and counts it).
    pub fn submit(&self, batch: Vec<Sample>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        match self.tx.try_send(Command::Samples(batch)) {
            Ok(()) => {
                self.counters.samples.fetch_add(n, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters
                    .dropped_batches
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes everything cached for `paths` (all files when empty) and returns
    /// once it is on disk — readers call this first so they never see stale NaN.
    pub fn flush(&self, paths: Vec<PathBuf>, timeout: Duration) -> bool {
        let (ack, done) = mpsc::channel();
        if self.tx.send(Command::Flush(paths, ack)).is_err() {
            return false;
        }
        done.recv_timeout(timeout).is_ok()
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

/// One RRD file the writer knows. Slots are never removed: a series that
/// stops keeps its few bytes here, as gmetad keeps its files.
struct Slot {
    path: Arc<Path>,
    /// DS type the file is (or will be) created with: the first one seen.
    ds_type: &'static str,
    /// DS type of the latest sample (a change is counted once, not per sample).
    seen_type: &'static str,
    step: u32,
    dss: u8,
    /// Newest sample accepted; later ones must be newer.
    last_time: u64,
    /// Updates not yet written, each `T:v[:v]` and a NUL, as librrd takes
    /// them ([`ganglion_rrd::update_packed`]): no string per sample.
    pending: Vec<u8>,
    /// The file's last update as of our last write to it, so steady-state
    /// writes need not ask librrd (`rrd_last` opens the file as an update
    /// does). `None` until known, and again after any failure.
    on_disk: Option<u64>,
    /// Why the last write of this file failed, until one works again.
    failing: Option<Cause>,
    /// The journal generation whose definition line names this slot.
    journal_gen: u64,
}

/// The packed updates in `buf` (see [`Slot::pending`]).
fn entries(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    buf.split(|&b| b == 0).filter(|e| !e.is_empty())
}

/// Time of one packed `T:v[:v]` update.
fn entry_time(e: &[u8]) -> u64 {
    let t = e.split(|&b| b == b':').next().unwrap_or(b"");
    std::str::from_utf8(t)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// Journal lines name files by path; these characters would break a line.
fn escape_path(p: &str) -> std::borrow::Cow<'_, str> {
    if !p.contains(['\\', '\t', '\n', '\r']) {
        return p.into();
    }
    let mut out = String::with_capacity(p.len() + 8);
    for c in p.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.into()
}

fn unescape_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(c) => out.push(c),
            None => out.push('\\'),
        }
    }
    out
}

fn parse_ds_type(t: &str) -> &'static str {
    match t {
        "COUNTER" => "COUNTER",
        "DERIVE" => "DERIVE",
        _ => "GAUGE",
    }
}

struct Writer {
    params: Arc<StorageParams>,
    counters: Arc<StorageCounters>,
    slots: Vec<Slot>,
    /// Series → slot, filled as series first arrive.
    index: HashMap<SeriesKey, u32>,
    /// The last batch's series and slots, in its order. The sampler sends
    /// the same series in the same order every step, so the n-th sample is
    /// checked against the n-th of last time before the index is asked: a
    /// walk through memory in order instead of a random probe per sample.
    order: Vec<(SeriesKey, u32)>,
    /// File → slot: readers flush by path, the journal names paths.
    by_path: HashMap<Arc<Path>, u32>,
    journal: Option<BufWriter<std::fs::File>>,
    journal_dirty: bool,
    /// Scratch space for one journal line.
    line: Vec<u8>,
    /// Bumped whenever the journal starts over; a slot's definition line is
    /// written once per generation, its samples then name it by number.
    journal_gen: u64,
    cached: Option<ganglion_rrd::rrdcached::Client>,
    log: LogLimiter<LogKey>,
    /// Disk-wide causes logged as failing and not yet seen to recover.
    outages: HashSet<Cause>,
    /// The command queue, once `run` owns the writer: a flush pass drains it
    /// between files (see [`Writer::absorb`]).
    inbox: Option<Receiver<Command>>,
    /// Flush requests that arrived during a pass, answered after it.
    deferred: VecDeque<(Vec<PathBuf>, mpsc::Sender<()>)>,
    commit_every: Duration,
    next_commit: Instant,
    /// Journals set aside at the start of a pass, removed at its end.
    rotated: Vec<PathBuf>,
    rotate_seq: u64,
    /// A write failed during the current pass and its samples were kept.
    kept_in_pass: bool,
    /// Reads ahead the pages of a pass's next files when they were evicted.
    read_ahead: ganglion_rrd::prefetch::ReadAhead,
    /// Slots first seen in this run whose files may not exist yet
    /// ([`Writer::create_new_files`]).
    unborn: VecDeque<u32>,
}

/// Files of new series created per turn of the writer's loop: a cluster that
/// appears at once (or a first start) is created over a few seconds instead
/// of stalling the queue.
const NEW_FILES_PER_TURN: usize = 256;

/// Files a pass prepares at a time (see [`ganglion_rrd::prefetch`]): enough
/// reads in flight to keep the disk queue full, few enough that their pages
/// are still cached when librrd reaches them.
const READ_AHEAD_FILES: usize = 64;

fn journal_path(root: &Path) -> PathBuf {
    root.join(".ganglion-journal")
}

/// A journal set aside during a flush pass (see [`Writer::rotate_journal`]).
fn rotated_journal_path(root: &Path, seq: u64) -> PathBuf {
    root.join(format!(".ganglion-journal.{seq}"))
}

/// Set-aside journals left by a run that stopped mid-pass, oldest first.
fn rotated_journals(root: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let seq = name
                .to_str()?
                .strip_prefix(".ganglion-journal.")?
                .parse()
                .ok()?;
            Some((seq, e.path()))
        })
        .collect();
    found.sort();
    found
}

fn journal_writer(file: std::fs::File) -> BufWriter<std::fs::File> {
    BufWriter::with_capacity(1 << 20, file)
}

fn open_journal(root: &Path) -> std::io::Result<BufWriter<std::fs::File>> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(journal_path(root))?;
    Ok(journal_writer(f))
}

/// A slot's definition line: `S`, number, DS type, step, DS count, path.
fn write_definition(w: &mut impl Write, id: u32, slot: &Slot) -> std::io::Result<()> {
    let path = slot.path.to_str().unwrap_or_default();
    writeln!(
        w,
        "S\t{id}\t{}\t{}\t{}\t{}",
        slot.ds_type,
        slot.step,
        slot.dss,
        escape_path(path)
    )
}

impl Writer {
    fn new(
        params: Arc<StorageParams>,
        counters: Arc<StorageCounters>,
        journal: Option<BufWriter<std::fs::File>>,
        cached: Option<ganglion_rrd::rrdcached::Client>,
    ) -> Writer {
        let commit_every =
            Duration::from_millis(u64::from(params.config.journal_commit_interval_ms.max(10)));
        Writer {
            params,
            counters,
            slots: Vec::new(),
            index: HashMap::new(),
            order: Vec::new(),
            by_path: HashMap::new(),
            journal,
            journal_dirty: false,
            line: Vec::with_capacity(64),
            journal_gen: 1,
            cached,
            log: LogLimiter::new(Duration::from_secs(600)),
            outages: HashSet::new(),
            inbox: None,
            deferred: VecDeque::new(),
            commit_every,
            next_commit: Instant::now() + commit_every,
            rotated: Vec::new(),
            rotate_seq: 0,
            kept_in_pass: false,
            read_ahead: Default::default(),
            unborn: VecDeque::new(),
        }
    }

    /// The slot of a file, made on first sight.
    fn slot_for_path(&mut self, path: PathBuf, ds_type: &'static str, step: u32, dss: u8) -> u32 {
        if let Some(&id) = self.by_path.get(path.as_path()) {
            return id;
        }
        let path: Arc<Path> = path.into();
        let id = self.slots.len() as u32;
        self.slots.push(Slot {
            path: path.clone(),
            ds_type,
            seen_type: ds_type,
            step,
            dss,
            last_time: 0,
            pending: Vec::new(),
            on_disk: None,
            failing: None,
            journal_gen: 0,
        });
        self.by_path.insert(path, id);
        self.unborn.push_back(id);
        id
    }

    /// Creates the files of series first seen since the last call, with
    /// their first samples, instead of at the next flush: gmetad creates a
    /// file at the first poll that has the metric, and readers that list the
    /// tree (ganglia-web) or resolve a name before asking for it (librrd's
    /// client on a unix socket) expect it there. A file that already exists
    /// (a restart) waits for the flush, as do the later samples of all.
    fn create_new_files(&mut self) {
        for _ in 0..NEW_FILES_PER_TURN {
            let Some(id) = self.unborn.pop_front() else {
                return;
            };
            let slot = &self.slots[id as usize];
            if !slot.pending.is_empty() && slot.on_disk.is_none() && !slot.path.exists() {
                self.write_file(id);
            }
        }
    }

    /// The slot of a series (its path is worked out once per run).
    fn slot_for(&mut self, s: &Sample, hint: Option<u32>) -> u32 {
        if let Some(id) = hint {
            return id;
        }
        if let Some(&id) = self.index.get(&s.series) {
            return id;
        }
        let path = layout::path(
            &self.params.rrd_root,
            &s.series.to_series(),
            self.params.case_sensitive_hostnames,
        );
        let id = self.slot_for_path(path, s.ds_type, s.step, s.dss);
        self.index.insert(s.series.clone(), id);
        id
    }

    /// Counts a failed write and logs it, once per 10 minutes per file — or
    /// per cause when the disk (or the rrdcached connection) is at fault, so a
    /// full disk is one line however many files it stops.
    fn failed(&mut self, path: &Path, dss: u8, error: &WriteError) -> Cause {
        let mut cause = error.cause();
        if cause == Cause::Other
            && matches!(
                error,
                WriteError::Rrd(ganglion_rrd::RrdError::Librrd { op: "create", .. })
            )
            && let Some(dir) = path.parent()
        {
            cause = diagnose_dir(dir, file_size_estimate(&self.params.rras, dss.into()))
                .unwrap_or(cause);
        }
        self.counters
            .write_errors
            .counter(cause)
            .fetch_add(1, Ordering::Relaxed);
        let shared = matches!(cause, Cause::NoSpace | Cause::ReadOnly)
            || matches!(error, WriteError::Cached(_));
        let key = if shared {
            LogKey::Disk(cause)
        } else {
            LogKey::File(cause, path.to_path_buf())
        };
        let what = match cause {
            Cause::NoSpace => {
                "cannot write RRD files: no space left on the device; their samples stay cached \
                 and are retried at every flush (within retry_window_secs)"
            }
            Cause::ReadOnly => {
                "cannot write RRD files: read-only file system or no permission; their samples \
                 stay cached and are retried at every flush (within retry_window_secs)"
            }
            Cause::BadFile => {
                "not an RRD file this aggregator can update (foreign, truncated or corrupt, or \
                 other data sources); it is left untouched and its samples are discarded until \
                 it is repaired or removed"
            }
            Cause::Other => "RRD write failed; the samples of this write are discarded",
        };
        if matches!(cause, Cause::NoSpace | Cause::ReadOnly) {
            self.outages.insert(cause);
        }
        if self.log.allow(key) {
            tracing::warn!(
                reason = reason(cause),
                file = %path.display(),
                %error,
                "{what} (logged once per 10 min; other files continue; counted in ganglion_rrd_write_errors_total)"
            );
        }
        cause
    }

    fn journal_failed(&mut self, error: &std::io::Error) {
        self.counters.journal_errors.fetch_add(1, Ordering::Relaxed);
        if self.log.allow(LogKey::Journal) {
            tracing::warn!(
                file = %journal_path(&self.params.rrd_root).display(),
                %error,
                "cannot write the RRD journal; samples still go to their files at the next flush \
                 but a crash before then loses them (logged once per 10 min)"
            );
        }
    }

    /// Caches one update of a slot, unless it is not newer than the last.
    fn push_update(slot: &mut Slot, time: u64, values: &str) -> bool {
        // RRD updates must move forward in time (gmetad logs "minimum one
        // second step" floods here; we skip quietly).
        if time <= slot.last_time {
            return false;
        }
        slot.last_time = time;
        let mut t = itoa::Buffer::new();
        slot.pending.extend_from_slice(t.format(time).as_bytes());
        slot.pending.push(b':');
        slot.pending.extend_from_slice(values.as_bytes());
        slot.pending.push(0);
        true
    }

    /// Takes in one step's samples (see [`Writer::order`]).
    fn accept_batch(&mut self, batch: Vec<Sample>) {
        let mut order = std::mem::take(&mut self.order);
        let n = batch.len();
        for (i, s) in batch.into_iter().enumerate() {
            let hint = order
                .get(i)
                .filter(|(key, _)| *key == s.series)
                .map(|&(_, id)| id);
            if let Some(id) = self.accept_one(&s, true, hint) {
                match order.get_mut(i) {
                    Some(seen) => *seen = (s.series, id),
                    None => order.push((s.series, id)),
                }
            }
        }
        order.truncate(n);
        self.order = order;
    }

    #[cfg(test)]
    fn accept(&mut self, s: Sample, journal: bool) {
        self.accept_one(&s, journal, None);
    }

    /// Caches (and journals) one sample; returns its slot, or `None` when it
    /// was discarded. `hint` is its slot when already known.
    fn accept_one(&mut self, s: &Sample, journal: bool, hint: Option<u32>) -> Option<u32> {
        // Values go into librrd's argument list and the journal verbatim: a
        // control character or a stray `:` would corrupt both.
        let colons = s.values.bytes().filter(|&b| b == b':').count();
        if colons + 1 != usize::from(s.dss) || s.values.bytes().any(|b| b < b' ') {
            self.counters
                .samples_discarded
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let id = self.slot_for(s, hint);
        if journal && let Some(j) = &mut self.journal {
            let slot = &mut self.slots[id as usize];
            let mut r = Ok(());
            if slot.journal_gen != self.journal_gen {
                r = write_definition(j, id, slot);
                if r.is_ok() {
                    slot.journal_gen = self.journal_gen;
                }
            }
            // A full buffer is written out here; if that fails the line is
            // lost from the journal (only), and the failure is counted.
            // One line built in a kept buffer and written whole (a failed
            // write leaves no partial line behind).
            let line = &mut self.line;
            line.clear();
            line.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
            line.push(b'\t');
            line.extend_from_slice(itoa::Buffer::new().format(s.time).as_bytes());
            line.push(b'\t');
            line.extend_from_slice(s.values.as_bytes());
            line.push(b'\n');
            match r.and_then(|()| j.write_all(line)) {
                Ok(()) => self.journal_dirty = true,
                Err(e) => self.journal_failed(&e),
            }
        }
        let slot = &mut self.slots[id as usize];
        if s.ds_type != slot.seen_type {
            // gmetad keeps the file it has; so do we (a COUNTER file fed a
            // gauge's values, or the reverse, is the sender's choice to undo).
            slot.seen_type = s.ds_type;
            let file_type = slot.ds_type;
            self.counters.type_changes.fetch_add(1, Ordering::Relaxed);
            let metric = s.series.metric();
            if s.ds_type != file_type && self.log.allow(LogKey::TypeChange(metric.to_string())) {
                tracing::warn!(
                    %metric,
                    file_type,
                    new_type = s.ds_type,
                    "metric changed its RRD data-source type (slope); its samples keep going into \
                     the existing files, which keep their type, as in gmetad; remove a file to \
                     start it over (logged once per 10 min per metric)"
                );
            }
        }
        let slot = &mut self.slots[id as usize];
        if s.dss == slot.dss && !Self::push_update(slot, s.time, &s.values) {
            self.counters
                .samples_not_newer
                .fetch_add(1, Ordering::Relaxed);
        }
        Some(id)
    }

    fn create(&mut self, id: u32, first: u64) -> Result<(), WriteError> {
        let slot = &self.slots[id as usize];
        if let Some(dir) = slot.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| WriteError::Dir {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        let hb = 8 * slot.step;
        let mut defs = vec![format!("DS:sum:{}:{hb}:U:U", slot.ds_type)];
        if slot.dss > 1 {
            defs.push(format!("DS:num:{}:{hb}:U:U", slot.ds_type));
        }
        defs.extend(self.params.rras.iter().cloned());
        ganglion_rrd::create(&slot.path, u64::from(slot.step), first as i64 - 1, &defs)?;
        self.counters.files_created.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes `packed` to a slot's file, creating it first if needed. With
    /// `trust`, what this run knows of the file is believed (no existence
    /// check, no `rrd_last`); otherwise it is asked again.
    fn write_packed(&mut self, id: u32, packed: &[u8], trust: bool) -> Result<(), WriteError> {
        let slot = &self.slots[id as usize];
        let path = slot.path.clone();
        let known = if trust { slot.on_disk } else { None };
        let newest = entries(packed).last().map_or(0, entry_time);
        let on_disk = match known {
            Some(t) => t,
            None if path.exists() => match self.cached {
                // rrdcached may hold newer updates than the file: it
                // answers for itself ("illegal attempt to update…" per value).
                Some(_) => 0,
                None => ganglion_rrd::last(&path).unwrap_or(0).max(0) as u64,
            },
            None => {
                let first = entries(packed).next().map_or(0, entry_time);
                self.create(id, first)?;
                first.saturating_sub(1)
            }
        };
        // Skip what the file already has (journal replay after a crash, or a
        // retry after part of a batch went in). Updates are packed in
        // strictly increasing time (`push_update` refuses the rest), so when
        // the first is new, all are.
        debug_assert!(entries(packed).map(entry_time).is_sorted_by(|a, b| a < b));
        let fresh: std::borrow::Cow<'_, [u8]> = if entries(packed)
            .next()
            .is_none_or(|e| entry_time(e) > on_disk)
        {
            packed.into()
        } else {
            let mut v = Vec::with_capacity(packed.len());
            for e in entries(packed).filter(|e| entry_time(e) > on_disk) {
                v.extend_from_slice(e);
                v.push(0);
            }
            v.into()
        };
        match &mut self.cached {
            Some(c) => {
                let updates: Vec<String> = entries(&fresh)
                    .map(|e| String::from_utf8_lossy(e).into_owned())
                    .collect();
                let errs = c.batch(&[(path.display().to_string(), updates)])?;
                if !errs.is_empty() {
                    return Err(WriteError::CachedRefused {
                        path: path.to_path_buf(),
                        message: errs.join("; "),
                    });
                }
            }
            None => ganglion_rrd::update_packed(&path, &fresh)?,
        }
        self.slots[id as usize].on_disk = Some(newest.max(on_disk));
        Ok(())
    }

    fn write_file(&mut self, id: u32) {
        let slot = &mut self.slots[id as usize];
        if slot.pending.is_empty() {
            return;
        }
        let packed = std::mem::take(&mut slot.pending);
        let was_failing = slot.failing.take();
        let trusted = slot.on_disk.is_some();
        let mut result = self.write_packed(id, &packed, true);
        if result.is_err() && trusted {
            // What we knew may be stale (the file was removed or written by
            // someone else): ask the file system and librrd, once.
            self.slots[id as usize].on_disk = None;
            result = self.write_packed(id, &packed, false);
        }
        let path = self.slots[id as usize].path.clone();
        match result {
            Ok(()) => {
                self.counters.file_writes.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .samples_written
                    .fetch_add(entries(&packed).count() as u64, Ordering::Relaxed);
                if let Some(cause) = was_failing {
                    self.recovered(&path, cause);
                }
                // The next interval's samples fill the same buffer instead of
                // growing a new one step by step (an ordinary one: a backlog's
                // large buffer is let go).
                let slot = &mut self.slots[id as usize];
                if slot.pending.is_empty() && packed.capacity() <= REUSED_PENDING_BYTES {
                    let mut packed = packed;
                    packed.clear();
                    slot.pending = packed;
                }
            }
            Err(e) => {
                let dss = self.slots[id as usize].dss;
                let cause = self.failed(&path, dss, &e);
                let slot = &mut self.slots[id as usize];
                slot.failing = Some(cause);
                slot.on_disk = None;
                self.keep_for_retry(id, cause, packed);
            }
        }
    }

    /// After a failed write: samples that a freed or remounted disk can take
    /// go back into the cache (the newest `retry_window_secs` of them); the
    /// rest are counted and dropped.
    fn keep_for_retry(&mut self, id: u32, cause: Cause, mut packed: Vec<u8>) {
        let window = u64::from(self.params.config.retry_window_secs);
        let slot = &mut self.slots[id as usize];
        let retry = matches!(cause, Cause::NoSpace | Cause::ReadOnly) && window > 0;
        let oldest = slot.last_time.saturating_sub(window);
        let (mut keep_from, mut dropped) = (0, 0u64);
        for e in entries(&packed) {
            if retry && entry_time(e) >= oldest {
                break;
            }
            keep_from += e.len() + 1;
            dropped += 1;
        }
        self.counters
            .samples_discarded
            .fetch_add(dropped, Ordering::Relaxed);
        packed.drain(..keep_from);
        if !packed.is_empty() {
            self.kept_in_pass = true;
        }
        // Nothing new can have arrived meanwhile (one thread), but keep the
        // order right if it ever does.
        packed.append(&mut slot.pending);
        slot.pending = packed;
    }

    /// A file that failed was written: say so once per outage (once per
    /// file for a file's own fault), and let the next failure be logged at once.
    fn recovered(&mut self, path: &Path, cause: Cause) {
        match cause {
            Cause::NoSpace | Cause::ReadOnly => {
                if self.outages.remove(&cause) {
                    self.log.reset(&LogKey::Disk(cause));
                    tracing::info!(
                        reason = reason(cause),
                        file = %path.display(),
                        "RRD files can be written again; samples kept for retry are being written"
                    );
                }
            }
            Cause::BadFile | Cause::Other => {
                self.log.reset(&LogKey::File(cause, path.to_path_buf()));
                tracing::info!(reason = reason(cause), file = %path.display(), "RRD file written again");
            }
        }
    }

    fn flush_all(&mut self) {
        let ids: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&id| !self.slots[id as usize].pending.is_empty())
            .collect();
        let rotated = self.rotate_journal();
        self.kept_in_pass = false;
        let budget = self.params.config.max_file_writes_per_sec;
        let started = Instant::now();
        for (i, &id) in ids.iter().enumerate() {
            if i % READ_AHEAD_FILES == 0 {
                self.read_ahead(&ids[i..(i + READ_AHEAD_FILES).min(ids.len())]);
            }
            if budget > 0 && i > 0 && (i as u32).is_multiple_of(budget) {
                // Rate limit: spread writes so the disk stays responsive.
                let due = Duration::from_secs(u64::from(i as u32 / budget));
                if let Some(w) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(w);
                }
            }
            self.write_file(id);
            if i % 64 == 63 && Instant::now() >= self.next_commit {
                self.absorb();
            }
        }
        self.finish_pass(rotated);
    }

    /// Asks for the evicted pages of the next files of a pass at once (with
    /// rrdcached, the daemon writes the files).
    fn read_ahead(&mut self, ids: &[u32]) {
        if self.cached.is_some() {
            return;
        }
        let files: Vec<ganglion_rrd::prefetch::Upcoming<'_>> = ids
            .iter()
            .map(|&id| &self.slots[id as usize])
            .filter(|slot| !slot.pending.is_empty())
            .map(|slot| ganglion_rrd::prefetch::Upcoming {
                path: &slot.path,
                newest: slot.last_time as i64,
            })
            .collect();
        let cold = self.read_ahead.before(&files);
        self.counters
            .files_read_ahead
            .fetch_add(cold as u64, Ordering::Relaxed);
    }

    /// During a flush pass (a minute or more at a million files), samples
    /// keep arriving: take them in and commit the journal on the usual
    /// cadence, so a crash mid-pass loses no more than one commit interval.
    /// Flush requests wait until the pass is over.
    fn absorb(&mut self) {
        if let Some(rx) = self.inbox.take() {
            while let Ok(cmd) = rx.try_recv() {
                match cmd {
                    Command::Samples(batch) => self.accept_batch(batch),
                    Command::Flush(paths, ack) => self.deferred.push_back((paths, ack)),
                }
            }
            self.inbox = Some(rx);
        }
        self.commit_journal();
        self.next_commit = Instant::now() + self.commit_every;
    }

    /// Writes what `paths` (every file when empty) have cached, then acks.
    fn handle_flush(&mut self, paths: Vec<PathBuf>, ack: mpsc::Sender<()>) {
        self.flush_paths(paths);
        let _ = ack.send(());
    }

    /// Writes what `paths` (every file when empty) have cached.
    fn flush_paths(&mut self, paths: Vec<PathBuf>) {
        self.commit_journal();
        let targets: Vec<Arc<Path>> = if paths.is_empty() {
            self.flush_all();
            self.written_paths()
        } else {
            let mut targets = Vec::with_capacity(paths.len());
            for p in &paths {
                if let Some(&id) = self.by_path.get(p.as_path()) {
                    self.write_file(id);
                    targets.push(self.slots[id as usize].path.clone());
                }
            }
            targets
        };
        // With rrdcached, the daemon holds the values too: FLUSH them so
        // readers of the files see everything.
        if let Some(c) = &mut self.cached {
            for p in targets.iter().filter(|p| p.exists()) {
                if let Err(e) = c.flush(p) {
                    tracing::warn!(error = %e, "rrdcached FLUSH failed");
                    break;
                }
            }
        }
    }

    /// Answers the flush requests that came in during a pass, all at once:
    /// one full pass if any asked for everything, else the union of their
    /// files (ten readers queued behind a pass cost one write each, not ten
    /// passes).
    fn run_deferred(&mut self) {
        while !self.deferred.is_empty() {
            let requests: Vec<_> = self.deferred.drain(..).collect();
            let paths = if requests.iter().any(|(p, _)| p.is_empty()) {
                Vec::new()
            } else {
                let mut all: Vec<PathBuf> = requests
                    .iter()
                    .flat_map(|(p, _)| p.iter().cloned())
                    .collect();
                all.sort();
                all.dedup();
                all
            };
            self.flush_paths(paths);
            for (_, ack) in requests {
                let _ = ack.send(());
            }
        }
    }

    /// After a flush pass the journal only needs what is still cached: when
    /// that is nothing it starts over empty; when writes failed it is replaced
    /// by the samples kept for retry, so an outage does not grow it without
    /// bound (a new file renamed over the old, so a crash meanwhile loses
    /// nothing).
    /// Returns whether the journal now holds exactly what is cached.
    fn restart_journal(&mut self) -> bool {
        let Some(j) = self.journal.take() else {
            return false;
        };
        let kept = self.slots.iter().any(|s| !s.pending.is_empty());
        if !kept {
            // Everything it holds, written or still buffered, is in the files
            // or was given up.
            let (file, _) = j.into_parts();
            let r = file.set_len(0).and_then(|()| file.sync_data());
            let ok = r.is_ok();
            if let Err(e) = r {
                self.journal_failed(&e);
            }
            self.journal_gen += 1;
            self.journal = Some(journal_writer(file));
            self.journal_dirty = false;
            return ok;
        }
        self.journal_gen += 1;
        match self.rewrite_journal() {
            Ok(file) => {
                // The old handle's buffer is superseded: drop it unwritten.
                let _ = j.into_parts();
                self.journal = Some(journal_writer(file));
                self.journal_dirty = false;
                true
            }
            Err(e) => {
                // The old journal still holds every kept sample. The slots
                // marked for the failed generation must define themselves
                // again in it: a new generation makes them.
                self.journal_failed(&e);
                self.journal_gen += 1;
                self.journal = Some(j);
                false
            }
        }
    }

    /// At the start of a flush pass the journal is set aside under a
    /// numbered name and a fresh one takes what arrives during the pass; the
    /// set-aside files are removed when the pass has put their samples on
    /// disk. So a pass never rewrites the journal (at a million files that
    /// would be hundreds of megabytes) unless writes failed. Returns whether
    /// it rotated.
    fn rotate_journal(&mut self) -> bool {
        let Some(j) = &mut self.journal else {
            return false;
        };
        let root = self.params.rrd_root.clone();
        let jp = journal_path(&root);
        let next = rotated_journal_path(&root, self.rotate_seq + 1);
        let r = j
            .flush()
            .and_then(|()| j.get_ref().sync_data())
            .and_then(|()| std::fs::rename(&jp, &next))
            .and_then(|()| open_journal(&root))
            .and_then(|fresh| {
                // The new name and the new file must survive a crash too.
                std::fs::File::open(&root)?.sync_all()?;
                Ok(fresh)
            });
        match r {
            Ok(fresh) => {
                self.rotate_seq += 1;
                self.rotated.push(next);
                self.journal = Some(fresh);
                self.journal_gen += 1;
                self.journal_dirty = false;
                true
            }
            Err(e) => {
                self.journal_failed(&e);
                if !jp.exists() {
                    // Renamed but no fresh file: put the name back (the open
                    // handle writes to that same file either way).
                    let _ = std::fs::rename(&next, &jp);
                }
                false
            }
        }
    }

    /// The end of a flush pass: the journal must hold what is still cached
    /// and nothing else needs keeping.
    fn finish_pass(&mut self, rotated: bool) {
        if self.journal.is_none() {
            return;
        }
        let clean = if rotated && !self.kept_in_pass {
            // The fresh journal holds exactly what came in during the pass
            // (still cached, or written by it): make it durable.
            self.journal_dirty = true;
            self.commit_journal();
            !self.journal_dirty
        } else {
            // Writes failed (their samples, kept for retry, may be only in
            // the set-aside files) or the journal could not be set aside:
            // write what is cached into a new journal.
            self.restart_journal()
        };
        if clean {
            for p in self.rotated.drain(..) {
                if let Err(e) = std::fs::remove_file(&p)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(file = %p.display(), error = %e, "cannot remove a set-aside RRD journal");
                }
            }
        }
    }

    fn rewrite_journal(&mut self) -> std::io::Result<std::fs::File> {
        let jp = journal_path(&self.params.rrd_root);
        let tmp = jp.with_extension("new");
        let generation = self.journal_gen;
        let result = (|| {
            let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
            for (id, slot) in self.slots.iter_mut().enumerate() {
                if slot.pending.is_empty() {
                    continue;
                }
                write_definition(&mut w, id as u32, slot)?;
                slot.journal_gen = generation;
                for e in entries(&slot.pending) {
                    let e = String::from_utf8_lossy(e);
                    let (time, values) = e.split_once(':').unwrap_or((&e, ""));
                    writeln!(w, "{id}\t{time}\t{values}")?;
                }
            }
            w.into_inner().map_err(|e| e.into_error())?.sync_data()?;
            std::fs::rename(&tmp, &jp)?;
            std::fs::OpenOptions::new().append(true).open(&jp)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn commit_journal(&mut self) {
        if self.journal_dirty
            && let Some(j) = &mut self.journal
        {
            // One write and one fsync per commit interval (group commit).
            let r = j.flush().and_then(|()| j.get_ref().sync_data());
            match r {
                Ok(()) => self.journal_dirty = false,
                // Stays dirty: what is still buffered goes out next time.
                Err(e) => self.journal_failed(&e),
            }
        }
    }

    /// A journal path is only believed inside our root.
    fn journal_path_ok(&self, path: &Path) -> bool {
        path.starts_with(&self.params.rrd_root)
            && !path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
    }

    /// Replays the journal: definition lines (`S`, number, DS type, step, DS
    /// count, path) and samples naming them (number, time, values); lines of
    /// the older one-line-per-sample form (path, DS type, step, time, values)
    /// are read too, so an upgrade loses nothing.
    fn replay(&mut self) {
        let root = self.params.rrd_root.clone();
        // Journals set aside by a pass that did not finish come first: their
        // samples are older than the current journal's.
        let mut files = Vec::new();
        for (seq, path) in rotated_journals(&root) {
            self.rotate_seq = self.rotate_seq.max(seq);
            files.push(path.clone());
            // Removed once the replay's own pass has written them.
            self.rotated.push(path);
        }
        files.push(journal_path(&root));
        let mut n = 0u64;
        for jp in files {
            if let Ok(f) = std::fs::File::open(&jp) {
                n += self.replay_file(f);
            }
        }
        self.counters.replayed.store(n, Ordering::Relaxed);
        if n > 0 || !self.rotated.is_empty() {
            tracing::info!(samples = n, "replaying the RRD journal");
            self.flush_all();
        }
    }

    /// Replays one journal file (its numbers are its own); returns the
    /// samples taken.
    fn replay_file(&mut self, f: std::fs::File) -> u64 {
        let mut ids: HashMap<u32, u32> = HashMap::new();
        let mut n = 0u64;
        for line in BufReader::new(f).lines().map_while(Result::ok) {
            let parts: Vec<&str> = line.split('\t').collect();
            match parts.as_slice() {
                ["S", jid, ds_type, step, dss, path] => {
                    let (Ok(jid), Ok(step), Ok(dss)) =
                        (jid.parse::<u32>(), step.parse::<u32>(), dss.parse::<u8>())
                    else {
                        continue;
                    };
                    let path = PathBuf::from(unescape_path(path));
                    if !self.journal_path_ok(&path) || !(1..=2).contains(&dss) {
                        continue;
                    }
                    let id = self.slot_for_path(path, parse_ds_type(ds_type), step, dss);
                    ids.insert(jid, id);
                }
                [jid, time, values] => {
                    let (Ok(jid), Ok(time)) = (jid.parse::<u32>(), time.parse::<u64>()) else {
                        continue;
                    };
                    let Some(&id) = ids.get(&jid) else {
                        continue;
                    };
                    let slot = &mut self.slots[id as usize];
                    if values.split(':').count() == usize::from(slot.dss)
                        && Self::push_update(slot, time, values)
                    {
                        n += 1;
                    }
                }
                [path, ds_type, step, time, values] => {
                    let (Ok(step), Ok(time)) = (step.parse::<u32>(), time.parse::<u64>()) else {
                        continue;
                    };
                    let path = PathBuf::from(path);
                    let dss = values.split(':').count();
                    if !self.journal_path_ok(&path) || !(1..=2).contains(&dss) {
                        continue;
                    }
                    let id = self.slot_for_path(path, parse_ds_type(ds_type), step, dss as u8);
                    let slot = &mut self.slots[id as usize];
                    if dss == usize::from(slot.dss) && Self::push_update(slot, time, values) {
                        n += 1;
                    }
                }
                _ => {}
            }
        }
        n
    }

    /// Files this run has written, for rrdcached FLUSH.
    fn written_paths(&self) -> Vec<Arc<Path>> {
        self.slots
            .iter()
            .filter(|s| s.on_disk.is_some())
            .map(|s| s.path.clone())
            .collect()
    }

    fn run(mut self, rx: Receiver<Command>) {
        self.replay();
        self.inbox = Some(rx);
        let flush_every =
            Duration::from_secs(u64::from(self.params.config.flush_interval_secs.max(1)));
        let mut next_flush = Instant::now() + flush_every;
        self.next_commit = Instant::now() + self.commit_every;
        loop {
            let wait = self
                .next_commit
                .min(next_flush)
                .saturating_duration_since(Instant::now());
            let Some(rx) = &self.inbox else { break };
            match rx.recv_timeout(wait) {
                Ok(Command::Samples(batch)) => self.accept_batch(batch),
                Ok(Command::Flush(paths, ack)) => self.handle_flush(paths, ack),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            self.create_new_files();
            self.run_deferred();
            let now = Instant::now();
            if now >= self.next_commit {
                self.commit_journal();
                self.next_commit = now + self.commit_every;
            }
            if now >= next_flush {
                self.flush_all();
                self.run_deferred();
                // Start to start: a pass over a million files takes a
                // minute, and counting the interval from its end would
                // let the cache (and the journal) grow by that much.
                next_flush = (next_flush + flush_every).max(Instant::now());
            }
        }
        // Shutdown: everything cached goes to disk.
        self.commit_journal();
        self.flush_all();
        self.run_deferred();
        if self.cached.is_some() {
            let paths = self.written_paths();
            if let (Some(c), Some(cfg)) = (&mut self.cached, &self.params.rrdcached) {
                for path in paths {
                    if let Err(e) = c.flush(&path) {
                        tracing::warn!(daemon = %cfg.address, error = %e, "rrdcached FLUSH failed at shutdown");
                        break;
                    }
                }
            }
        }
        tracing::info!("RRD writer drained");
    }
}

/// Starts the writer thread. Returns the handle and the thread (joined at
/// shutdown after all handles are dropped).
pub fn start(
    params: StorageParams,
    _counters: &Arc<Counters>,
) -> std::io::Result<(StorageHandle, std::thread::JoinHandle<()>)> {
    std::fs::create_dir_all(&params.rrd_root)?;
    let params = Arc::new(params);
    let journal = if params.config.journal {
        Some(open_journal(&params.rrd_root)?)
    } else {
        None
    };
    let cached = match &params.rrdcached {
        Some(c) => match ganglion_rrd::rrdcached::Client::connect(&c.address) {
            Ok(cl) => Some(cl),
            Err(e) => {
                tracing::error!(error = %e, "cannot reach rrdcached; writing files directly");
                None
            }
        },
        None => None,
    };
    let counters = Arc::new(StorageCounters::default());
    let (tx, rx) = mpsc::sync_channel(params.config.queue_max_batches.max(1));
    let w = Writer::new(params.clone(), counters.clone(), journal, cached);
    let t = std::thread::Builder::new()
        .name("rrd-writer".into())
        .spawn(move || w.run(rx))?;
    Ok((
        StorageHandle {
            tx,
            counters,
            params,
        },
        t,
    ))
}

/// The sampler: every step, turn a snapshot into samples (gmetad's poll cycle).
pub async fn run_sampler(
    state: Arc<crate::state::State>,
    handle: StorageHandle,
    step: u32,
    rrds: Arc<SummaryRrds>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(u64::from(step.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                // One last sample so a clean stop loses nothing of the final step.
                handle.submit(samples(Arc::unwrap_or_clone(state.snapshot(now_secs())), step, &rrds));
                return;
            }
            _ = tick.tick() => {}
        }
        let snap = state.snapshot(now_secs());
        let r = rrds.clone();
        let batch =
            tokio::task::spawn_blocking(move || samples(Arc::unwrap_or_clone(snap), step, &r))
                .await
                .unwrap_or_default();
        handle.submit(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(root: &Path, retry_window_secs: u32) -> Writer {
        let params = Arc::new(StorageParams {
            rrd_root: root.to_path_buf(),
            step_secs: 15,
            rras: vec!["RRA:AVERAGE:0.5:1:100".into()],
            case_sensitive_hostnames: false,
            config: StorageConfig {
                retry_window_secs,
                ..StorageConfig::default()
            },
            rrdcached: None,
        });
        Writer::new(
            params,
            Arc::new(StorageCounters::default()),
            Some(open_journal(root).unwrap()),
            None,
        )
    }

    fn key(metric: &str) -> SeriesKey {
        SeriesKey::Host {
            cluster: "c".into(),
            host: "h".into(),
            metric: metric.into(),
        }
    }

    fn sample(metric: &str, ds_type: &'static str, time: u64, value: &str) -> Sample {
        Sample {
            series: key(metric),
            ds_type,
            step: 15,
            time,
            values: value.into(),
            dss: 1,
        }
    }

    fn path_of(root: &Path, metric: &str) -> PathBuf {
        layout::path(root, &key(metric).to_series(), false)
    }

    fn pending(w: &Writer, path: &Path) -> Vec<String> {
        let slot = &w.slots[w.by_path[path] as usize];
        entries(&slot.pending)
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect()
    }

    #[test]
    fn a_crash_mid_pass_replays_the_set_aside_journal_then_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 60);
        w.accept(sample("a", "GAUGE", 1000, "1"), true);
        w.accept(sample("b", "GAUGE", 1000, "1"), true);
        // A pass starts (the journal is set aside), one more sample arrives,
        // and the process dies before any file is written.
        assert!(w.rotate_journal());
        w.accept(sample("a", "GAUGE", 1015, "2"), true);
        w.commit_journal();
        drop(w);
        assert_eq!(rotated_journals(dir.path()).len(), 1);

        let mut again = writer(dir.path(), 60);
        again.replay();
        assert_eq!(again.counters.replayed.load(Ordering::Relaxed), 3);
        let a = path_of(dir.path(), "a");
        let b = path_of(dir.path(), "b");
        assert_eq!(ganglion_rrd::last(&a).unwrap(), 1015);
        assert_eq!(ganglion_rrd::last(&b).unwrap(), 1000);
        assert!(rotated_journals(dir.path()).is_empty());
        // And the next start has nothing left to replay.
        let mut third = writer(dir.path(), 60);
        third.replay();
        assert_eq!(third.counters.replayed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn batches_in_a_new_order_or_with_gaps_land_in_the_right_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 60);
        let batch = |names: &[&str], t: u64| -> Vec<Sample> {
            names
                .iter()
                .map(|n| sample(n, "GAUGE", t, &t.to_string()))
                .collect()
        };
        w.accept_batch(batch(&["a", "b", "c"], 1000));
        w.accept_batch(batch(&["a", "b", "c"], 1015));
        w.accept_batch(batch(&["c", "a", "b"], 1030)); // new order
        let mut gap = batch(&["a", "b", "c"], 1045);
        gap[1].values = "1:2".into(); // discarded: wrong DS count
        w.accept_batch(gap);
        w.accept_batch(batch(&["a", "c"], 1060)); // shorter
        w.accept_batch(batch(&["a", "b", "c", "d"], 1075)); // longer
        let p = |n: &str| pending(&w, &path_of(dir.path(), n));
        assert_eq!(
            p("a"),
            [
                "1000:1000",
                "1015:1015",
                "1030:1030",
                "1045:1045",
                "1060:1060",
                "1075:1075"
            ]
        );
        assert_eq!(p("b"), ["1000:1000", "1015:1015", "1030:1030", "1075:1075"]);
        assert_eq!(
            p("c"),
            [
                "1000:1000",
                "1015:1015",
                "1030:1030",
                "1045:1045",
                "1060:1060",
                "1075:1075"
            ]
        );
        assert_eq!(p("d"), ["1075:1075"]);
        assert_eq!(w.counters.samples_discarded.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn series_keys_compare_by_text_whoever_allocated_the_names() {
        use std::hash::BuildHasher;
        let a = key("load_one");
        let b = SeriesKey::Host {
            cluster: String::from("c").into(),
            host: String::from("h").into(),
            metric: String::from("load_one").into(),
        };
        let h = foldhash::fast::FixedState::with_seed(7);
        assert_eq!(a, b);
        assert_eq!(h.hash_one(&a), h.hash_one(&b));
        assert_ne!(a, key("load_five"));
        let summary = SeriesKey::Summary {
            source: "c".into(),
            metric: "load_one".into(),
        };
        assert_ne!(a, summary);
        assert_ne!(h.hash_one(&a), h.hash_one(&summary));
    }

    #[test]
    fn samples_arriving_during_a_flush_pass_are_journaled_before_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 60);
        let names: Vec<String> = (0..100).map(|i| format!("m{i:03}")).collect();
        for n in &names {
            w.accept(sample(n, "GAUGE", 1000, "1"), true);
        }
        // What queues while the pass runs: the next step, and a reader's flush.
        let (tx, rx) = mpsc::sync_channel(4);
        let next: Vec<Sample> = names
            .iter()
            .map(|n| sample(n, "GAUGE", 1015, "2"))
            .collect();
        tx.send(Command::Samples(next)).unwrap();
        let (ack, acked) = mpsc::channel();
        tx.send(Command::Flush(Vec::new(), ack)).unwrap();
        w.inbox = Some(rx);
        w.next_commit = Instant::now(); // a commit is due at once
        w.flush_all();

        // Taken in mid-pass: the first 64 files were written before, so their
        // new sample waits in the cache and in the (rewritten) journal; the
        // rest went to disk in the same pass.
        let first = path_of(dir.path(), &names[0]);
        let last = path_of(dir.path(), &names[99]);
        assert_eq!(pending(&w, &first), ["1015:2"]);
        assert!(pending(&w, &last).is_empty());
        assert_eq!(ganglion_rrd::last(&first).unwrap(), 1000);
        assert_eq!(ganglion_rrd::last(&last).unwrap(), 1015);
        // The journal set aside at the start of the pass is gone; the fresh
        // one holds exactly what came in during it.
        assert!(rotated_journals(dir.path()).is_empty());
        let text = std::fs::read_to_string(journal_path(dir.path())).unwrap();
        assert_eq!(
            text.lines().filter(|l| l.ends_with("\t1015\t2")).count(),
            100,
            "{text}"
        );

        // The flush request was held until the pass ended, then answered
        // after writing what it found.
        assert!(acked.try_recv().is_err());
        w.run_deferred();
        assert!(acked.try_recv().is_ok());
        assert!(pending(&w, &first).is_empty());
        assert_eq!(ganglion_rrd::last(&first).unwrap(), 1015);
    }

    #[test]
    fn kept_samples_are_bounded_by_the_window_and_survive_in_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 60);
        for i in 0..10u64 {
            w.accept(sample("m", "GAUGE", 1000 + 15 * i, &i.to_string()), true);
        }
        let path = path_of(dir.path(), "m");
        // A failed write the disk may take later: the newest 60 s stay.
        let id = w.by_path[path.as_path()];
        let packed = std::mem::take(&mut w.slots[id as usize].pending);
        w.keep_for_retry(id, Cause::NoSpace, packed);
        assert_eq!(
            pending(&w, &path),
            ["1075:5", "1090:6", "1105:7", "1120:8", "1135:9"]
        );
        assert_eq!(w.counters.samples_discarded.load(Ordering::Relaxed), 5);

        // The journal is rewritten to hold exactly what is kept, and a
        // restart replays it.
        w.restart_journal();
        let text = std::fs::read_to_string(journal_path(dir.path())).unwrap();
        let def = format!("S\t{id}\tGAUGE\t15\t1\t{}\n", path.display());
        assert!(text.starts_with(&def), "{text}");
        assert_eq!(text.lines().count(), 6, "{text}");
        assert!(text.ends_with(&format!("{id}\t1135\t9\n")), "{text}");
        let mut again = writer(dir.path(), 60);
        again.replay();
        assert_eq!(again.counters.replayed.load(Ordering::Relaxed), 5);
        assert!(path.exists(), "replay wrote the kept samples");
        assert_eq!(ganglion_rrd::last(&path).unwrap(), 1135);
    }

    #[test]
    fn the_journal_names_each_file_once_per_generation_and_replays_old_journals() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rrds");
        std::fs::create_dir(&root).unwrap();
        let mut w = writer(&root, 3600);
        // A hostile host name: the path has a tab and a newline in it.
        let odd = SeriesKey::Host {
            cluster: "c".into(),
            host: "a\tb\nc\\d".into(),
            metric: "m".into(),
        };
        for i in 0..3u64 {
            w.accept(sample("m", "GAUGE", 1000 + 15 * i, "1.5"), true);
            let mut s = sample("m", "COUNTER", 1000 + 15 * i, "7");
            s.series = odd.clone();
            w.accept(s, true);
        }
        w.commit_journal();
        let text = std::fs::read_to_string(journal_path(&root)).unwrap();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("S\t")).count(),
            2,
            "{text}"
        );
        assert_eq!(text.lines().count(), 8, "{text}");
        // Crash: a new writer replays into both files.
        let mut again = writer(&root, 3600);
        again.replay();
        assert_eq!(again.counters.replayed.load(Ordering::Relaxed), 6);
        let odd_path = layout::path(&root, &odd.to_series(), false);
        assert_eq!(ganglion_rrd::last(&odd_path).unwrap(), 1030);
        assert_eq!(ganglion_rrd::last(&path_of(&root, "m")).unwrap(), 1030);

        // A journal in the older one-line-per-sample form (and a line that
        // tries to leave the root) from before an upgrade.
        let other = path_of(&root, "old");
        std::fs::write(
            journal_path(&root),
            format!(
                "{p}\tGAUGE\t15\t2000\t3\n{p}\tGAUGE\t15\t2015\t4\n\
                 {root}/../x.rrd\tGAUGE\t15\t2000\t1\n",
                p = other.display(),
                root = root.display()
            ),
        )
        .unwrap();
        let mut third = writer(&root, 3600);
        third.replay();
        assert_eq!(third.counters.replayed.load(Ordering::Relaxed), 2);
        assert_eq!(ganglion_rrd::last(&other).unwrap(), 2015);
        assert!(!dir.path().join("x.rrd").exists());
    }

    #[test]
    fn a_file_removed_behind_the_writers_back_is_created_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 3600);
        w.accept(sample("m", "GAUGE", 1000, "1"), true);
        w.flush_all();
        let path = path_of(dir.path(), "m");
        std::fs::remove_file(&path).unwrap();
        w.accept(sample("m", "GAUGE", 1015, "2"), true);
        w.flush_all();
        assert_eq!(ganglion_rrd::last(&path).unwrap(), 1015);
        assert_eq!(w.counters.files_created.load(Ordering::Relaxed), 2);
        assert_eq!(w.counters.write_errors.get(Cause::Other), 0);
        // Updated by someone else meanwhile: the writer skips what the file
        // already has instead of failing the batch.
        ganglion_rrd::update(&path, &["1030:9".into(), "1045:9".into()]).unwrap();
        for t in [1030u64, 1045, 1060] {
            w.accept(sample("m", "GAUGE", t, "3"), true);
        }
        w.flush_all();
        assert_eq!(ganglion_rrd::last(&path).unwrap(), 1060);
        assert_eq!(w.counters.samples_discarded.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn summary_files_follow_gmetads_summary_options() {
        let all = SummaryRrds::default();
        assert!(all.source("cpu_user") && all.root("cpu_user"));
        let r = SummaryRrds {
            unsummarized: vec!["diskstat".into(), "CPU".into()],
            sflow_vm: true,
            root_only: vec!["load_one".into(), "diskstat_sda".into()],
        };
        // Prefixes, case-sensitive, as gmetad's strncmp.
        assert!(!r.source("diskstat_sda_reads") && !r.source("CPU_x"));
        assert!(r.source("cpu_user") && r.source("load_one"));
        // sFlow VM metrics: the last dot is followed by `v`.
        assert!(!r.source("cpu_user.vm1") && !r.source("a.b.v2"));
        assert!(r.source("a.vb.x") && r.source("net.eth0"));
        // The root keeps only the listed names that are summarized at all.
        assert!(r.root("load_one") && !r.root("cpu_user") && !r.root("diskstat_sda"));
    }

    #[test]
    fn a_new_series_gets_its_file_at_once_and_old_files_wait_for_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let old = path_of(dir.path(), "old");
        std::fs::create_dir_all(old.parent().unwrap()).unwrap();
        ganglion_rrd::create(
            &old,
            15,
            899,
            &[
                "DS:sum:GAUGE:120:U:U".into(),
                "RRA:AVERAGE:0.5:1:100".into(),
            ],
        )
        .unwrap();
        ganglion_rrd::update(&old, &["900:5".into()]).unwrap();
        let mut w = writer(dir.path(), 3600);
        for t in [1000u64, 1015] {
            w.accept(sample("new", "GAUGE", t, "1"), true);
            w.accept(sample("old", "GAUGE", t, "2"), true);
            w.create_new_files();
        }
        // The new file holds its first sample; the rest is cached as usual.
        let new = path_of(dir.path(), "new");
        assert_eq!(ganglion_rrd::last(&new).unwrap(), 1000);
        assert_eq!(pending(&w, &new), ["1015:1"]);
        // A file from before (a restart) is not written ahead of the flush.
        assert_eq!(ganglion_rrd::last(&old).unwrap(), 900);
        assert_eq!(pending(&w, &old).len(), 2);
        assert!(w.unborn.is_empty());
        w.flush_all();
        assert_eq!(ganglion_rrd::last(&new).unwrap(), 1015);
        assert_eq!(ganglion_rrd::last(&old).unwrap(), 1015);
    }

    #[test]
    fn values_that_would_corrupt_an_update_are_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 3600);
        w.accept(sample("m", "GAUGE", 1000, "1:2"), true);
        w.accept(sample("m", "GAUGE", 1015, "1\n2"), true);
        w.accept(sample("m", "GAUGE", 1030, "4"), true);
        assert_eq!(w.counters.samples_discarded.load(Ordering::Relaxed), 2);
        assert_eq!(pending(&w, &path_of(dir.path(), "m")), ["1030:4"]);
    }

    #[test]
    fn a_bad_file_loses_its_samples_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 3600);
        let bad = path_of(dir.path(), "bad");
        std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
        std::fs::write(&bad, b"not an RRD").unwrap();
        for i in 0..3u64 {
            w.accept(sample("bad", "GAUGE", 1000 + 15 * i, "1"), true);
            w.accept(sample("good", "GAUGE", 1000 + 15 * i, "2"), true);
        }
        w.flush_all();
        let good = path_of(dir.path(), "good");
        assert_eq!(ganglion_rrd::last(&good).unwrap(), 1030);
        assert_eq!(std::fs::read(&bad).unwrap(), b"not an RRD");
        assert_eq!(w.counters.write_errors.get(Cause::BadFile), 1);
        assert_eq!(w.counters.samples_discarded.load(Ordering::Relaxed), 3);
        assert!(pending(&w, &bad).is_empty());
        // Nothing is kept, so the journal starts over.
        assert_eq!(
            std::fs::metadata(journal_path(dir.path())).unwrap().len(),
            0
        );
    }

    #[test]
    fn a_type_change_is_counted_once_and_keeps_the_file_type() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 3600);
        w.accept(sample("m", "GAUGE", 1000, "1"), true);
        w.flush_all();
        for i in 1..4u64 {
            w.accept(sample("m", "COUNTER", 1000 + 15 * i, "5"), true);
        }
        assert_eq!(w.counters.type_changes.load(Ordering::Relaxed), 1);
        w.flush_all();
        let path = path_of(dir.path(), "m");
        assert_eq!(ganglion_rrd::last(&path).unwrap(), 1045);
        let info = ganglion_rrd::info(&path).unwrap();
        assert!(info.contains(&(
            "ds[sum].type".into(),
            ganglion_rrd::InfoValue::Str("GAUGE".into())
        )));
    }
}

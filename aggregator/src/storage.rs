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
pub use ganglion_rrd::Cause;
use ganglion_rrd::layout::{self, Series};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
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
        }
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

/// One value (or sum/num pair) for one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Which file.
    pub series: Series,
    /// RRD DS type (GAUGE, COUNTER, DERIVE).
    pub ds_type: &'static str,
    /// Step of the file.
    pub step: u32,
    /// Timestamp (epoch).
    pub time: u64,
    /// `sum` value text, and `num` for summaries.
    pub values: Vec<String>,
}

/// gmetad's samples for one snapshot.
pub fn samples(snap: &Snapshot, step: u32) -> Vec<Sample> {
    let mut out = Vec::new();
    for c in snap.clusters.iter().filter(|c| !c.stale) {
        for h in c.hosts.iter().filter(|h| h.alive) {
            // A numeric type with a value that is not a number (a confused
            // sender) would make librrd reject the whole batch from there on.
            for m in h
                .metrics
                .iter()
                .filter(|m| m.metric_type.is_numeric() && m.number.is_some())
            {
                out.push(Sample {
                    series: Series::Host {
                        cluster: c.name.clone(),
                        host: h.name.clone(),
                        metric: m.name.to_string(),
                    },
                    ds_type: m.slope.rrd_ds_type(),
                    step,
                    time: c.localtime,
                    values: vec![m.val.trim().to_string()],
                });
            }
        }
        for m in &c.summary.metrics {
            out.push(Sample {
                series: Series::Summary {
                    source: c.name.clone(),
                    metric: m.name.clone(),
                },
                ds_type: m.slope.rrd_ds_type(),
                step,
                time: c.localtime,
                values: vec![m.sum_text(), m.num.to_string()],
            });
        }
    }
    for g in snap.grids.iter().filter(|g| !g.stale) {
        for m in &g.summary.metrics {
            out.push(Sample {
                series: Series::Summary {
                    source: g.name.clone(),
                    metric: m.name.clone(),
                },
                ds_type: m.slope.rrd_ds_type(),
                step,
                time: g.localtime,
                values: vec![m.sum_text(), m.num.to_string()],
            });
        }
    }
    for m in snap.grid_summary().metrics {
        out.push(Sample {
            series: Series::Root {
                metric: m.name.clone(),
            },
            ds_type: "GAUGE",
            step: 15,
            time: snap.localtime,
            values: vec![format!("{:.5}", m.sum), m.num.to_string()],
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

/// Time of a `T:v[:v]` update.
fn update_time(u: &str) -> u64 {
    u.split(':')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
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

struct Pending {
    /// DS type the file is (or will be) created with: the first one seen.
    ds_type: &'static str,
    /// DS type of the latest sample (a change is counted once, not per sample).
    seen_type: &'static str,
    step: u32,
    dss: usize,
    last_time: u64,
    updates: Vec<String>,
    /// Why the last write of this file failed, until one works again.
    failing: Option<Cause>,
}

struct Writer {
    params: Arc<StorageParams>,
    counters: Arc<StorageCounters>,
    pending: HashMap<PathBuf, Pending>,
    last_written: HashMap<PathBuf, u64>,
    journal: Option<BufWriter<std::fs::File>>,
    journal_dirty: bool,
    cached: Option<ganglion_rrd::rrdcached::Client>,
    log: LogLimiter<LogKey>,
    /// Disk-wide causes logged as failing and not yet seen to recover.
    outages: HashSet<Cause>,
}

fn journal_path(root: &Path) -> PathBuf {
    root.join(".ganglion-journal")
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

impl Writer {
    /// Counts a failed write and logs it, once per 10 minutes per file — or
    /// per cause when the disk (or the rrdcached connection) is at fault, so a
    /// full disk is one line however many files it stops.
    fn failed(&mut self, path: &Path, error: &WriteError) -> Cause {
        let mut cause = error.cause();
        if cause == Cause::Other
            && matches!(
                error,
                WriteError::Rrd(ganglion_rrd::RrdError::Librrd { op: "create", .. })
            )
            && let Some(dir) = path.parent()
        {
            let dss = self.pending.get(path).map_or(1, |p| p.dss);
            cause = diagnose_dir(dir, file_size_estimate(&self.params.rras, dss)).unwrap_or(cause);
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

    fn accept(&mut self, s: Sample, journal: bool) {
        let path = layout::path(
            &self.params.rrd_root,
            &s.series,
            self.params.case_sensitive_hostnames,
        );
        if journal && let Some(j) = &mut self.journal {
            let line = format!(
                "{}\t{}\t{}\t{}\t{}\n",
                path.display(),
                s.ds_type,
                s.step,
                s.time,
                s.values.join(":")
            );
            // A full buffer is written out here; if that fails the line is
            // lost from the journal (only), and the failure is counted.
            match j.write_all(line.as_bytes()) {
                Ok(()) => self.journal_dirty = true,
                Err(e) => self.journal_failed(&e),
            }
        }
        let known_last = self.last_written.get(&path).copied().unwrap_or(0);
        let p = self.pending.entry(path).or_insert(Pending {
            ds_type: s.ds_type,
            seen_type: s.ds_type,
            step: s.step,
            dss: s.values.len(),
            last_time: known_last,
            updates: Vec::new(),
            failing: None,
        });
        if s.ds_type != p.seen_type {
            // gmetad keeps the file it has; so do we (a COUNTER file fed a
            // gauge's values, or the reverse, is the sender's choice to undo).
            p.seen_type = s.ds_type;
            let file_type = p.ds_type;
            self.counters.type_changes.fetch_add(1, Ordering::Relaxed);
            let metric = match &s.series {
                Series::Host { metric, .. }
                | Series::Summary { metric, .. }
                | Series::Root { metric } => metric.clone(),
            };
            if s.ds_type != file_type && self.log.allow(LogKey::TypeChange(metric.clone())) {
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
        // RRD updates must move forward in time (gmetad logs "minimum one
        // second step" floods here; we skip quietly).
        if s.time <= p.last_time || s.values.len() != p.dss {
            return;
        }
        p.last_time = s.time;
        p.updates.push(format!("{}:{}", s.time, s.values.join(":")));
    }

    fn create(&mut self, path: &Path, p: &Pending, first: u64) -> Result<(), WriteError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| WriteError::Dir {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        let hb = 8 * p.step;
        let mut defs = vec![format!("DS:sum:{}:{hb}:U:U", p.ds_type)];
        if p.dss > 1 {
            defs.push(format!("DS:num:{}:{hb}:U:U", p.ds_type));
        }
        defs.extend(self.params.rras.iter().cloned());
        ganglion_rrd::create(path, u64::from(p.step), first as i64 - 1, &defs)?;
        self.counters.files_created.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends `updates` to an existing file (librrd or rrdcached).
    fn update(&mut self, path: &Path, updates: &[String]) -> Result<(), WriteError> {
        match &mut self.cached {
            Some(c) => {
                let errs = c.batch(&[(path.display().to_string(), updates.to_vec())])?;
                if errs.is_empty() {
                    Ok(())
                } else {
                    Err(WriteError::CachedRefused {
                        path: path.to_path_buf(),
                        message: errs.join("; "),
                    })
                }
            }
            None => {
                // Skip what the file already has (journal replay after a
                // crash, or a retry after part of a batch went in).
                let last = ganglion_rrd::last(path).unwrap_or(0) as u64;
                let fresh: Vec<String> = updates
                    .iter()
                    .filter(|u| update_time(u) > last)
                    .cloned()
                    .collect();
                Ok(ganglion_rrd::update(path, &fresh)?)
            }
        }
    }

    fn write_file(&mut self, path: PathBuf) {
        let Some(mut p) = self.pending.remove(&path) else {
            return;
        };
        if p.updates.is_empty() {
            self.pending.insert(path, p);
            return;
        }
        let updates = std::mem::take(&mut p.updates);
        let result = if path.exists() {
            self.update(&path, &updates)
        } else {
            let first = update_time(&updates[0]);
            self.create(&path, &p, first)
                .and_then(|()| self.update(&path, &updates))
        };
        let (last, was_failing) = (p.last_time, p.failing.take());
        // Put the entry back first: `failed` reads it.
        self.pending.insert(path.clone(), p);
        match result {
            Ok(()) => {
                self.counters.file_writes.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .samples_written
                    .fetch_add(updates.len() as u64, Ordering::Relaxed);
                if let Some(cause) = was_failing {
                    self.recovered(&path, cause);
                }
                self.last_written.insert(path, last);
            }
            Err(e) => {
                let cause = self.failed(&path, &e);
                if let Some(p) = self.pending.get_mut(&path) {
                    p.failing = Some(cause);
                }
                self.keep_for_retry(&path, cause, updates);
            }
        }
    }

    /// After a failed write: samples that a freed or remounted disk can take
    /// go back into the cache (the newest `retry_window_secs` of them); the
    /// rest are counted and dropped.
    fn keep_for_retry(&mut self, path: &Path, cause: Cause, mut updates: Vec<String>) {
        let window = u64::from(self.params.config.retry_window_secs);
        let Some(p) = self.pending.get_mut(path) else {
            return;
        };
        let retry = matches!(cause, Cause::NoSpace | Cause::ReadOnly) && window > 0;
        let keep_from = if retry {
            let oldest = p.last_time.saturating_sub(window);
            updates.partition_point(|u| update_time(u) < oldest)
        } else {
            updates.len()
        };
        self.counters
            .samples_discarded
            .fetch_add(keep_from as u64, Ordering::Relaxed);
        updates.drain(..keep_from);
        // Nothing new can have arrived meanwhile (one thread), but keep the
        // order right if it ever does.
        updates.append(&mut p.updates);
        p.updates = updates;
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
        let paths: Vec<PathBuf> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.updates.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        let budget = self.params.config.max_file_writes_per_sec;
        let started = Instant::now();
        for (i, path) in paths.into_iter().enumerate() {
            if budget > 0 && i > 0 && (i as u32).is_multiple_of(budget) {
                // Rate limit: spread writes so the disk stays responsive.
                let due = Duration::from_secs(u64::from(i as u32 / budget));
                if let Some(w) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(w);
                }
            }
            self.write_file(path);
        }
        self.restart_journal();
    }

    /// After a flush pass the journal only needs what is still cached: when
    /// that is nothing it starts over empty; when writes failed it is replaced
    /// by the samples kept for retry, so an outage does not grow it without
    /// bound (a new file renamed over the old, so a crash meanwhile loses
    /// nothing).
    fn restart_journal(&mut self) {
        let Some(j) = self.journal.take() else {
            return;
        };
        let kept = self.pending.values().any(|p| !p.updates.is_empty());
        if !kept {
            // Everything it holds, written or still buffered, is in the files
            // or was given up.
            let (file, _) = j.into_parts();
            if let Err(e) = file.set_len(0).and_then(|()| file.sync_data()) {
                self.journal_failed(&e);
            }
            self.journal = Some(journal_writer(file));
            self.journal_dirty = false;
            return;
        }
        match self.rewrite_journal() {
            Ok(file) => {
                // The old handle's buffer is superseded: drop it unwritten.
                let _ = j.into_parts();
                self.journal = Some(journal_writer(file));
                self.journal_dirty = false;
            }
            Err(e) => {
                // The old journal still holds every kept sample.
                self.journal_failed(&e);
                self.journal = Some(j);
            }
        }
    }

    fn rewrite_journal(&self) -> std::io::Result<std::fs::File> {
        let jp = journal_path(&self.params.rrd_root);
        let tmp = jp.with_extension("new");
        let result = (|| {
            let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
            for (path, p) in &self.pending {
                for u in &p.updates {
                    let (time, values) = u.split_once(':').unwrap_or((u, ""));
                    writeln!(
                        w,
                        "{}\t{}\t{}\t{time}\t{values}",
                        path.display(),
                        p.ds_type,
                        p.step
                    )?;
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

    fn replay(&mut self) {
        let jp = journal_path(&self.params.rrd_root);
        let Ok(f) = std::fs::File::open(&jp) else {
            return;
        };
        let mut n = 0u64;
        for line in BufReader::new(f).lines().map_while(Result::ok) {
            let parts: Vec<&str> = line.split('\t').collect();
            let [path, ds_type, step, time, values] = parts.as_slice() else {
                continue;
            };
            let ds_type: &'static str = match *ds_type {
                "COUNTER" => "COUNTER",
                "DERIVE" => "DERIVE",
                _ => "GAUGE",
            };
            let (Ok(step), Ok(time)) = (step.parse::<u32>(), time.parse::<u64>()) else {
                continue;
            };
            let path = PathBuf::from(path);
            // Only files inside our root, whatever the journal says.
            if !path.starts_with(&self.params.rrd_root) {
                continue;
            }
            let values: Vec<String> = values.split(':').map(str::to_string).collect();
            let p = self.pending.entry(path).or_insert(Pending {
                ds_type,
                seen_type: ds_type,
                step,
                dss: values.len(),
                last_time: 0,
                updates: Vec::new(),
                failing: None,
            });
            if time > p.last_time && values.len() == p.dss {
                p.last_time = time;
                p.updates.push(format!("{time}:{}", values.join(":")));
                n += 1;
            }
        }
        self.counters.replayed.store(n, Ordering::Relaxed);
        if n > 0 {
            tracing::info!(samples = n, "replaying the RRD journal");
            self.flush_all();
        }
    }

    fn run(mut self, rx: Receiver<Command>) {
        self.replay();
        let flush_every =
            Duration::from_secs(u64::from(self.params.config.flush_interval_secs.max(1)));
        let commit_every = Duration::from_millis(u64::from(
            self.params.config.journal_commit_interval_ms.max(10),
        ));
        let mut next_flush = Instant::now() + flush_every;
        let mut next_commit = Instant::now() + commit_every;
        loop {
            let wait = next_commit
                .min(next_flush)
                .saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Command::Samples(batch)) => {
                    for s in batch {
                        self.accept(s, true);
                    }
                }
                Ok(Command::Flush(paths, ack)) => {
                    self.commit_journal();
                    let targets: Vec<PathBuf> = if paths.is_empty() {
                        self.flush_all();
                        self.last_written.keys().cloned().collect()
                    } else {
                        for p in &paths {
                            self.write_file(p.clone());
                        }
                        paths
                    };
                    // With rrdcached, the daemon holds the values too: FLUSH
                    // them so readers of the files see everything.
                    if let Some(c) = &mut self.cached {
                        for p in targets.iter().filter(|p| p.exists()) {
                            if let Err(e) = c.flush(p) {
                                tracing::warn!(error = %e, "rrdcached FLUSH failed");
                                break;
                            }
                        }
                    }
                    let _ = ack.send(());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            if now >= next_commit {
                self.commit_journal();
                next_commit = now + commit_every;
            }
            if now >= next_flush {
                self.flush_all();
                next_flush = Instant::now() + flush_every;
            }
        }
        // Shutdown: everything cached goes to disk.
        self.commit_journal();
        self.flush_all();
        if let (Some(c), Some(cfg)) = (&mut self.cached, &self.params.rrdcached) {
            for path in self.last_written.keys() {
                if let Err(e) = c.flush(path) {
                    tracing::warn!(daemon = %cfg.address, error = %e, "rrdcached FLUSH failed at shutdown");
                    break;
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
    let w = Writer {
        params: params.clone(),
        counters: counters.clone(),
        pending: HashMap::new(),
        last_written: HashMap::new(),
        journal,
        journal_dirty: false,
        cached,
        log: LogLimiter::new(Duration::from_secs(600)),
        outages: HashSet::new(),
    };
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
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(u64::from(step.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                // One last sample so a clean stop loses nothing of the final step.
                handle.submit(samples(&state.snapshot(now_secs()), step));
                return;
            }
            _ = tick.tick() => {}
        }
        let snap = state.snapshot(now_secs());
        let batch = tokio::task::spawn_blocking(move || samples(&snap, step))
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
        Writer {
            journal: Some(open_journal(root).unwrap()),
            params,
            counters: Arc::new(StorageCounters::default()),
            pending: HashMap::new(),
            last_written: HashMap::new(),
            journal_dirty: false,
            cached: None,
            log: LogLimiter::new(Duration::from_secs(600)),
            outages: HashSet::new(),
        }
    }

    fn sample(metric: &str, ds_type: &'static str, time: u64, value: &str) -> Sample {
        Sample {
            series: Series::Host {
                cluster: "c".into(),
                host: "h".into(),
                metric: metric.into(),
            },
            ds_type,
            step: 15,
            time,
            values: vec![value.into()],
        }
    }

    #[test]
    fn kept_samples_are_bounded_by_the_window_and_survive_in_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 60);
        for i in 0..10u64 {
            w.accept(sample("m", "GAUGE", 1000 + 15 * i, &i.to_string()), true);
        }
        let path = layout::path(dir.path(), &sample("m", "GAUGE", 0, "").series, false);
        // A failed write the disk may take later: the newest 60 s stay.
        let updates = std::mem::take(&mut w.pending.get_mut(&path).unwrap().updates);
        w.keep_for_retry(&path, Cause::NoSpace, updates);
        let kept = w.pending[&path].updates.clone();
        assert_eq!(kept, ["1075:5", "1090:6", "1105:7", "1120:8", "1135:9"]);
        assert_eq!(w.counters.samples_discarded.load(Ordering::Relaxed), 5);

        // The journal is rewritten to hold exactly what is kept, and a
        // restart replays it.
        w.restart_journal();
        let text = std::fs::read_to_string(journal_path(dir.path())).unwrap();
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.contains("\tGAUGE\t15\t1135\t9\n"), "{text}");
        let prefix = format!("{}\t", path.display());
        assert!(text.lines().all(|l| l.starts_with(&prefix)), "{text}");
        let mut again = writer(dir.path(), 60);
        again.replay();
        assert_eq!(again.counters.replayed.load(Ordering::Relaxed), 5);
        assert!(path.exists(), "replay wrote the kept samples");
        assert_eq!(ganglion_rrd::last(&path).unwrap(), 1135);
    }

    #[test]
    fn a_bad_file_loses_its_samples_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 3600);
        let bad = layout::path(dir.path(), &sample("bad", "GAUGE", 0, "").series, false);
        std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
        std::fs::write(&bad, b"not an RRD").unwrap();
        for i in 0..3u64 {
            w.accept(sample("bad", "GAUGE", 1000 + 15 * i, "1"), true);
            w.accept(sample("good", "GAUGE", 1000 + 15 * i, "2"), true);
        }
        w.flush_all();
        let good = layout::path(dir.path(), &sample("good", "GAUGE", 0, "").series, false);
        assert_eq!(ganglion_rrd::last(&good).unwrap(), 1030);
        assert_eq!(std::fs::read(&bad).unwrap(), b"not an RRD");
        assert_eq!(w.counters.write_errors.get(Cause::BadFile), 1);
        assert_eq!(w.counters.samples_discarded.load(Ordering::Relaxed), 3);
        assert!(w.pending[&bad].updates.is_empty());
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
        let path = layout::path(dir.path(), &sample("m", "GAUGE", 0, "").series, false);
        assert_eq!(ganglion_rrd::last(&path).unwrap(), 1045);
        let info = ganglion_rrd::info(&path).unwrap();
        assert!(info.contains(&(
            "ds[sum].type".into(),
            ganglion_rrd::InfoValue::Str("GAUGE".into())
        )));
    }
}

//! The storage counters and their names on `/metrics`.

use crate::telemetry::LabelledCounter;
use ganglion_rrd::Cause;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Passes over every file (timed or forced).
    pub flush_passes: AtomicU64,
    /// Of those, forced by flush-all callers.
    pub forced_flush_passes: AtomicU64,
    /// Flush-all requests (`POST /api/flush`, FLUSHALL); they share passes.
    pub flush_all_requests: AtomicU64,
    /// Per-file flush requests refused because too many were waiting.
    pub flush_requests_refused: AtomicU64,
    /// Journal records skipped at replay: torn (a crash mid-append) or
    /// damaged (checksum or shape).
    pub journal_bad_records: AtomicU64,
    /// Writer slots of idle series dropped (see `retry_window_secs`).
    pub slots_evicted: AtomicU64,
    /// Connections to rrdcached made again after one was lost.
    pub rrdcached_reconnects: AtomicU64,
}

/// Failed file writes by [`Cause`].
#[derive(Debug, Default)]
pub struct WriteErrors {
    no_space: AtomicU64,
    read_only: AtomicU64,
    bad_file: AtomicU64,
    transient: AtomicU64,
    other: AtomicU64,
}

impl WriteErrors {
    pub(super) fn counter(&self, cause: Cause) -> &AtomicU64 {
        match cause {
            Cause::NoSpace => &self.no_space,
            Cause::ReadOnly => &self.read_only,
            Cause::BadFile => &self.bad_file,
            Cause::Transient => &self.transient,
            Cause::Other => &self.other,
        }
    }

    /// Failures of one cause so far.
    pub fn get(&self, cause: Cause) -> u64 {
        self.counter(cause).load(Ordering::Relaxed)
    }
}

const CAUSES: [Cause; 5] = [
    Cause::NoSpace,
    Cause::ReadOnly,
    Cause::BadFile,
    Cause::Transient,
    Cause::Other,
];

/// The `reason` label of a cause on `/metrics` and in the log.
pub(super) fn reason(cause: Cause) -> &'static str {
    match cause {
        Cause::NoSpace => "no_space",
        Cause::ReadOnly => "read_only",
        Cause::BadFile => "bad_file",
        Cause::Transient => "transient",
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
            (
                "ganglion_rrd_journal_bad_records_total",
                "Journal records skipped at replay (torn by a crash mid-append, or damaged)",
                g(&self.journal_bad_records),
            ),
            (
                "ganglion_rrd_flush_passes_total",
                "Passes over every RRD file (timed or forced)",
                g(&self.flush_passes),
            ),
            (
                "ganglion_rrd_forced_flush_passes_total",
                "Passes over every RRD file forced by flush-all requests (shared, rate-limited)",
                g(&self.forced_flush_passes),
            ),
            (
                "ganglion_rrd_flush_all_requests_total",
                "Flush-all requests (POST /api/flush, FLUSHALL)",
                g(&self.flush_all_requests),
            ),
            (
                "ganglion_rrd_flush_requests_refused_total",
                "Per-file flush requests refused because storage.control_queue_max were waiting",
                g(&self.flush_requests_refused),
            ),
            (
                "ganglion_rrd_rrdcached_reconnects_total",
                "Connections to rrdcached made again after one was lost (a restart, an error, a timeout)",
                g(&self.rrdcached_reconnects),
            ),
            (
                "ganglion_rrd_slots_evicted_total",
                "Writer slots of series idle longer than the retry window, dropped",
                g(&self.slots_evicted),
            ),
        ]
    }

    /// Counters with a label, for `/metrics`.
    pub fn labelled(&self) -> Vec<LabelledCounter> {
        vec![(
            "ganglion_rrd_write_errors_total",
            "RRD create/update failures by reason (no_space, read_only, bad_file, transient, other)",
            "reason",
            CAUSES
                .iter()
                .map(|&c| (reason(c), self.write_errors.get(c)))
                .collect(),
        )]
    }
}

//! The writer thread: takes batches in, journals and caches them, creates
//! new files, writes every file once per flush interval (or when a reader
//! asks), retries what a full or read-only disk, a lack of descriptors or a
//! missing rrdcached refused, and answers flush requests.

use super::StorageParams;
use super::incidents::{self, JournalFailed, LogKey, TypeChanged, WriteFailed};
use super::journal::{self, Journal};
use super::mailbox::{FileFlush, Mailbox};
use super::metrics::{StorageCounters, reason};
use super::sampler::{Sample, SeriesKey};
use super::slot::{Slot, entries, entry_time};
use crate::diag::Diag;
use ganglion_rrd::Cause;
use ganglion_rrd::layout;
// Keys are sender-chosen names, so the hasher is seeded per process;
// foldhash is that and several times cheaper than SipHash on these short keys.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Largest pending-update buffer a file keeps after its write (about 200
/// updates; a flush interval's worth at the default settings is 20).
const REUSED_PENDING_BYTES: usize = 4096;

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
            // EMFILE/ENFILE/ENOMEM are Transient: kept and retried.
            WriteError::Dir { source, .. } => Cause::of_io(source),
            WriteError::Rrd(e) => e.cause(),
            WriteError::Cached(e) => e.cause(),
            WriteError::CachedRefused { message, path } => Cause::of_error(message, path.to_str()),
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

pub(super) struct Writer {
    pub(super) params: Arc<StorageParams>,
    pub(super) counters: Arc<StorageCounters>,
    pub(super) slots: Vec<Slot>,
    /// Series → slot, filled as series first arrive.
    pub(super) index: HashMap<SeriesKey, u32>,
    /// The last batch's series and slots, in its order. The sampler sends
    /// the same series in the same order every step, so the n-th sample is
    /// checked against the n-th of last time before the index is asked: a
    /// walk through memory in order instead of a random probe per sample.
    pub(super) order: Vec<(SeriesKey, u32)>,
    /// File → slot: readers flush by path, the journal names paths.
    pub(super) by_path: HashMap<Arc<Path>, u32>,
    /// Slots freed by eviction, reused before new ones are made.
    pub(super) free: Vec<u32>,
    pub(super) journal: Journal,
    /// Scratch space for one journal record.
    pub(super) line: Vec<u8>,
    pub(super) cached: Option<ganglion_rrd::rrdcached::Client>,
    /// Counts and logs what goes wrong ([`incidents`]).
    pub(super) diag: Diag<LogKey>,
    /// Disk-wide causes logged as failing and not yet seen to recover.
    pub(super) outages: HashSet<Cause>,
    /// The queues, once `run` owns the writer: a flush pass takes batches
    /// in between files (see [`Writer::absorb`]).
    pub(super) mailbox: Option<Arc<Mailbox>>,
    /// Per-file flush requests taken but not yet answered.
    pub(super) deferred: Vec<FileFlush>,
    pub(super) commit_every: Duration,
    pub(super) next_commit: Instant,
    /// When the last forced (asked-for) pass over every file started.
    pub(super) last_forced: Option<Instant>,
    /// Wall-clock second of the batch being taken in (slot idleness).
    pub(super) now: u64,
    /// A write failed during the current pass and its samples were kept.
    pub(super) kept_in_pass: bool,
    /// Reads ahead the pages of a pass's next files when they were evicted.
    pub(super) read_ahead: ganglion_rrd::prefetch::ReadAhead,
    /// Slots first seen in this run whose files may not exist yet
    /// ([`Writer::create_new_files`]).
    pub(super) unborn: VecDeque<u32>,
}

/// Files of new series created per turn of the writer's loop: a cluster that
/// appears at once (or a first start) is created over a few seconds instead
/// of stalling the queue.
pub(super) const NEW_FILES_PER_TURN: usize = 256;

/// Files a pass prepares at a time (see [`ganglion_rrd::prefetch`]): enough
/// reads in flight to keep the disk queue full, few enough that their pages
/// are still cached when librrd reaches them.
pub(super) const READ_AHEAD_FILES: usize = 64;

impl Writer {
    pub(super) fn new(
        params: Arc<StorageParams>,
        counters: Arc<StorageCounters>,
        journal: Option<std::io::BufWriter<std::fs::File>>,
        cached: Option<ganglion_rrd::rrdcached::Client>,
    ) -> Writer {
        let commit_every =
            Duration::from_millis(u64::from(params.config.journal_commit_interval_ms.max(10)));
        let journal = Journal::new(&params.rrd_root, journal);
        Writer {
            params,
            counters,
            slots: Vec::new(),
            index: HashMap::new(),
            order: Vec::new(),
            by_path: HashMap::new(),
            free: Vec::new(),
            journal,
            line: Vec::with_capacity(64),
            cached,
            diag: Diag::new(incidents::LOG_EVERY),
            outages: HashSet::new(),
            mailbox: None,
            deferred: Vec::new(),
            commit_every,
            next_commit: Instant::now() + commit_every,
            last_forced: None,
            now: crate::state::now_secs(),
            kept_in_pass: false,
            read_ahead: Default::default(),
            unborn: VecDeque::new(),
        }
    }

    /// The slot of a file, made on first sight.
    pub(super) fn slot_for_path(
        &mut self,
        path: PathBuf,
        ds_type: &'static str,
        step: u32,
        dss: u8,
    ) -> u32 {
        if let Some(&id) = self.by_path.get(path.as_path()) {
            return id;
        }
        let path: Arc<Path> = path.into();
        let slot = Slot::new(path.clone(), ds_type, step, dss, self.now);
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
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
    pub(super) fn create_new_files(&mut self) {
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
    pub(super) fn slot_for(&mut self, s: &Sample, hint: Option<u32>) -> u32 {
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
        if matches!(cause, Cause::Other | Cause::Transient)
            && matches!(
                error,
                WriteError::Rrd(ganglion_rrd::RrdError::Librrd { op: "create", .. })
            )
            && let Some(dir) = path.parent()
        {
            cause = diagnose_dir(dir, file_size_estimate(&self.params.rras, dss.into()))
                .unwrap_or(cause);
        }
        let shared = cause.retryable() || matches!(error, WriteError::Cached(_));
        if cause.retryable() {
            self.outages.insert(cause);
        }
        self.diag.emit(
            WriteFailed {
                cause,
                path,
                error,
                shared,
            },
            &self.counters,
        );
        cause
    }

    pub(super) fn journal_failed(&mut self, error: &std::io::Error) {
        let file = self.journal.path();
        self.diag
            .emit(JournalFailed { file: &file, error }, &self.counters);
    }

    /// Takes in one step's samples (see [`Writer::order`]).
    pub(super) fn accept_batch(&mut self, batch: Vec<Sample>) {
        self.now = crate::state::now_secs();
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
    pub(super) fn accept(&mut self, s: Sample, journal: bool) {
        self.accept_one(&s, journal, None);
    }

    /// Caches (and journals) one sample; returns its slot, or `None` when it
    /// was discarded. `hint` is its slot when already known.
    pub(super) fn accept_one(
        &mut self,
        s: &Sample,
        journal: bool,
        hint: Option<u32>,
    ) -> Option<u32> {
        // Values go into librrd's argument list and the journal verbatim: a
        // control character, an empty field or a stray `:` would corrupt both.
        if !journal::values_ok(&s.values, Some(s.dss)) {
            self.counters
                .samples_discarded
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let id = self.slot_for(s, hint);
        if journal && self.journal.is_on() {
            let slot = &mut self.slots[id as usize];
            // One record (two for a file's first in this generation) built
            // in a kept buffer and appended whole: a failed write leaves no
            // partial record behind; if it fails the sample is lost from the
            // journal (only), and the failure is counted.
            let line = &mut self.line;
            line.clear();
            let define = slot.journal_gen != self.journal.generation;
            if define {
                journal::encode_define(
                    line,
                    id,
                    slot.ds_type,
                    slot.step,
                    slot.dss,
                    slot.path.to_str().unwrap_or_default(),
                );
            }
            journal::encode_sample(line, id, s.time, s.values.as_bytes());
            match self.journal.append(line) {
                Ok(()) => {
                    if define {
                        slot.journal_gen = self.journal.generation;
                    }
                }
                Err(e) => self.journal_failed(&e),
            }
        }
        let slot = &mut self.slots[id as usize];
        if s.ds_type != slot.seen_type {
            // gmetad keeps the file it has; so do we (a COUNTER file fed a
            // gauge's values, or the reverse, is the sender's choice to undo).
            slot.seen_type = s.ds_type;
            let file_type = slot.ds_type;
            self.diag.emit(
                TypeChanged {
                    metric: s.series.metric(),
                    file_type,
                    new_type: s.ds_type,
                },
                &self.counters,
            );
        }
        let slot = &mut self.slots[id as usize];
        slot.last_seen = self.now;
        if s.dss == slot.dss && !slot.push_update(s.time, &s.values) {
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
                let name = path.display().to_string();
                let send = |c: &mut ganglion_rrd::rrdcached::Client, after: u64| {
                    let updates: Vec<String> = entries(&fresh)
                        .filter(|e| entry_time(e) > after)
                        .map(|e| String::from_utf8_lossy(e).into_owned())
                        .collect();
                    if updates.is_empty() {
                        return Ok(Vec::new());
                    }
                    c.batch(&[(name.clone(), updates)])
                };
                let mut errs = send(c, 0)?;
                // A retry after a lost connection may resend what the daemon
                // took before it went: it refuses the whole update then,
                // naming its last update. Send again what is newer, once.
                if let [one] = errs.as_slice()
                    && let Some(have) = ganglion_rrd::rrdcached::refused_last_update(one)
                {
                    errs = send(c, u64::try_from(have).unwrap_or(0))?;
                }
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

    pub(super) fn write_file(&mut self, id: u32) {
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
    pub(super) fn keep_for_retry(&mut self, id: u32, cause: Cause, mut packed: Vec<u8>) {
        let window = u64::from(self.params.config.retry_window_secs);
        let slot = &mut self.slots[id as usize];
        let retry = cause.retryable() && window > 0;
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
    pub(super) fn recovered(&mut self, path: &Path, cause: Cause) {
        match cause {
            Cause::NoSpace | Cause::ReadOnly | Cause::Transient => {
                if self.outages.remove(&cause) {
                    self.diag.reset(&LogKey::Disk(cause));
                    tracing::info!(
                        reason = reason(cause),
                        file = %path.display(),
                        "RRD files can be written again; samples kept for retry are being written"
                    );
                }
            }
            Cause::BadFile | Cause::Other => {
                self.diag.reset(&LogKey::File(cause, path.to_path_buf()));
                tracing::info!(reason = reason(cause), file = %path.display(), "RRD file written again");
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::StorageConfig;
    use super::super::journal::{journal_path, open_journal, rotated_journals};
    use super::*;

    pub(in crate::storage) fn writer(root: &Path, retry_window_secs: u32) -> Writer {
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

    pub(in crate::storage) fn key(metric: &str) -> SeriesKey {
        SeriesKey::Host {
            cluster: "c".into(),
            host: "h".into(),
            metric: metric.into(),
        }
    }

    pub(in crate::storage) fn sample(
        metric: &str,
        ds_type: &'static str,
        time: u64,
        value: &str,
    ) -> Sample {
        Sample {
            series: key(metric),
            ds_type,
            step: 15,
            time,
            values: value.into(),
            dss: 1,
        }
    }

    pub(in crate::storage) fn path_of(root: &Path, metric: &str) -> PathBuf {
        layout::path(root, &key(metric).to_series(), false)
    }

    pub(in crate::storage) fn pending(w: &Writer, path: &Path) -> Vec<String> {
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
        let mailbox = Arc::new(Mailbox::new(4, 4));
        let next: Vec<Sample> = names
            .iter()
            .map(|n| sample(n, "GAUGE", 1015, "2"))
            .collect();
        assert!(mailbox.submit(next).is_ok());
        let reader = {
            let m = mailbox.clone();
            let first = path_of(dir.path(), &names[0]);
            std::thread::spawn(move || m.flush_files(vec![first], Duration::from_secs(60)))
        };
        while mailbox.files_waiting() == 0 {
            std::thread::yield_now();
        }
        w.mailbox = Some(mailbox.clone());
        w.next_commit = Instant::now(); // a commit is due at once
        w.flush_all();

        // Taken in mid-pass: the first 64 files were written before, so their
        // new sample waits in the cache and in the (rewritten) journal; the
        // rest went to disk in the same pass. The reader's file was written
        // for it mid-pass, and the reader answered then.
        let first = path_of(dir.path(), &names[0]);
        let second = path_of(dir.path(), &names[1]);
        let last = path_of(dir.path(), &names[99]);
        assert_eq!(mailbox.files_waiting(), 0);
        assert_eq!(reader.join().unwrap(), Ok(()));
        assert!(pending(&w, &first).is_empty());
        assert_eq!(pending(&w, &second), ["1015:2"]);
        assert!(pending(&w, &last).is_empty());
        assert_eq!(ganglion_rrd::last(&second).unwrap(), 1000);
        assert_eq!(ganglion_rrd::last(&last).unwrap(), 1015);
        // The journal set aside at the start of the pass is gone; the fresh
        // one holds exactly what came in during it.
        assert!(rotated_journals(dir.path()).is_empty());
        let text = std::fs::read_to_string(journal_path(dir.path())).unwrap();
        assert_eq!(
            text.lines().filter(|l| l.contains("\t1015\t2\t")).count(),
            100,
            "{text}"
        );
        // The next pass writes what waits.
        w.flush_all();
        assert!(pending(&w, &second).is_empty());
        assert_eq!(ganglion_rrd::last(&second).unwrap(), 1015);
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
        let def = format!("S\t{id}\tGAUGE\t15\t1\t{}\t", path.display());
        assert!(text.starts_with("#ganglion-journal v2\n"), "{text}");
        assert!(text.lines().nth(1).unwrap().starts_with(&def), "{text}");
        assert_eq!(text.lines().count(), 7, "{text}");
        assert!(
            text.lines()
                .last()
                .unwrap()
                .starts_with(&format!("{id}\t1135\t9\t")),
            "{text}"
        );
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
        assert_eq!(
            text.lines().count(),
            9,
            "marker, 2 files, 6 samples: {text}"
        );
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
        // Nothing is kept, so the journal starts over (just its marker).
        assert_eq!(
            std::fs::read(journal_path(dir.path())).unwrap(),
            super::super::journal::MARKER
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

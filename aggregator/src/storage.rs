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

use crate::state::{Snapshot, now_secs};
use crate::telemetry::Counters;
use ganglion_rrd::layout::{self, Series};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
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
            for m in h.metrics.iter().filter(|m| m.metric_type.is_numeric()) {
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
    /// Write or create errors.
    pub write_errors: AtomicU64,
    /// Samples replayed from the journal at start.
    pub replayed: AtomicU64,
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
    ds_type: &'static str,
    step: u32,
    dss: usize,
    last_time: u64,
    updates: Vec<String>,
}

struct Writer {
    params: Arc<StorageParams>,
    counters: Arc<StorageCounters>,
    pending: HashMap<PathBuf, Pending>,
    last_written: HashMap<PathBuf, u64>,
    journal: Option<std::io::BufWriter<std::fs::File>>,
    journal_dirty: bool,
    cached: Option<ganglion_rrd::rrdcached::Client>,
    warned: HashMap<PathBuf, Instant>,
}

fn journal_path(root: &Path) -> PathBuf {
    root.join(".ganglion-journal")
}

impl Writer {
    fn warn(&mut self, path: &Path, msg: &str) {
        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let last = self.warned.get(path).copied();
        if last.is_none_or(|t| now.duration_since(t) > Duration::from_secs(600)) {
            tracing::warn!(file = %path.display(), error = msg, "RRD write failed (logged once per 10 min per file); other files continue");
            self.warned.insert(path.to_path_buf(), now);
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
            if j.write_all(line.as_bytes()).is_ok() {
                self.journal_dirty = true;
            }
        }
        let known_last = self.last_written.get(&path).copied().unwrap_or(0);
        let p = self.pending.entry(path).or_insert(Pending {
            ds_type: s.ds_type,
            step: s.step,
            dss: s.values.len(),
            last_time: known_last,
            updates: Vec::new(),
        });
        // RRD updates must move forward in time (gmetad logs "minimum one
        // second step" floods here; we skip quietly).
        if s.time <= p.last_time || s.values.len() != p.dss {
            return;
        }
        p.last_time = s.time;
        p.updates.push(format!("{}:{}", s.time, s.values.join(":")));
    }

    fn create(&mut self, path: &Path, p: &Pending, first: u64) -> Result<(), String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        let hb = 8 * p.step;
        let mut defs = vec![format!("DS:sum:{}:{hb}:U:U", p.ds_type)];
        if p.dss > 1 {
            defs.push(format!("DS:num:{}:{hb}:U:U", p.ds_type));
        }
        defs.extend(self.params.rras.iter().cloned());
        ganglion_rrd::create(path, u64::from(p.step), first as i64 - 1, &defs)
            .map_err(|e| e.to_string())?;
        self.counters.files_created.fetch_add(1, Ordering::Relaxed);
        Ok(())
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
        let first: u64 = updates[0]
            .split(':')
            .next()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let exists = path.exists();
        if !exists && let Err(e) = self.create(&path, &p, first) {
            self.warn(&path, &e);
            self.pending.insert(path, p);
            return;
        }
        let result = match &mut self.cached {
            Some(c) => c
                .batch(&[(path.display().to_string(), updates.clone())])
                .map_err(|e| e.to_string())
                .and_then(|errs| {
                    if errs.is_empty() {
                        Ok(())
                    } else {
                        Err(errs.join("; "))
                    }
                }),
            None => {
                // Skip what the file already has (journal replay after a crash).
                let last = if exists {
                    ganglion_rrd::last(&path).unwrap_or(0) as u64
                } else {
                    0
                };
                let fresh: Vec<String> = updates
                    .iter()
                    .filter(|u| {
                        u.split(':')
                            .next()
                            .and_then(|t| t.parse::<u64>().ok())
                            .is_some_and(|t| t > last)
                    })
                    .cloned()
                    .collect();
                ganglion_rrd::update(&path, &fresh).map_err(|e| e.to_string())
            }
        };
        match result {
            Ok(()) => {
                self.counters.file_writes.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .samples_written
                    .fetch_add(updates.len() as u64, Ordering::Relaxed);
                self.last_written.insert(path.clone(), p.last_time);
            }
            Err(e) => self.warn(&path, &e),
        }
        self.pending.insert(path, p);
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
        // Everything written: the journal can start over.
        if self.pending.values().all(|p| p.updates.is_empty())
            && let Some(j) = &mut self.journal
        {
            let _ = j.flush();
            let _ = j.get_ref().set_len(0);
            let _ = j.get_ref().sync_data();
            self.journal_dirty = false;
        }
    }

    fn commit_journal(&mut self) {
        if self.journal_dirty
            && let Some(j) = &mut self.journal
        {
            // One write and one fsync per commit interval (group commit).
            let _ = j.flush();
            let _ = j.get_ref().sync_data();
            self.journal_dirty = false;
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
                step,
                dss: values.len(),
                last_time: 0,
                updates: Vec::new(),
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
        Some(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(journal_path(&params.rrd_root))?,
        ))
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
        warned: HashMap::new(),
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

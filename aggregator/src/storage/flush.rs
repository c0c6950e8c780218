//! The writer's passes and its loop: a pass over every file (timed, or
//! forced by flush-all callers, single-flight and rate-limited, see
//! [`super::mailbox`]), per-file flushes for readers, what the journal must
//! hold after a pass, replay at start, and slot eviction.

use super::incidents::{CachedFlushFailed, JournalRecordsSkipped};
use super::journal::{self, Record};
use super::mailbox::{Mailbox, Work};
use super::writer::{READ_AHEAD_FILES, Writer};
use foldhash::{HashMap, HashMapExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Writer {
    /// Writes every file with cached samples: one pass.
    pub(super) fn flush_all(&mut self) {
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

    /// A pass over every file that answers the flush-all callers waiting
    /// for it (see [`Mailbox`]). `forced`: asked for, not timed.
    pub(super) fn pass(&mut self, forced: bool) {
        let mailbox = self.mailbox.clone();
        let n = mailbox.as_ref().map(|m| m.pass_started());
        if forced {
            self.last_forced = Some(Instant::now());
            self.counters
                .forced_flush_passes
                .fetch_add(1, Ordering::Relaxed);
        }
        self.counters.flush_passes.fetch_add(1, Ordering::Relaxed);
        self.commit_journal();
        self.flush_all();
        // A timed pass that callers wait for serves them as a forced one.
        let asked = forced
            || mailbox
                .as_ref()
                .zip(n)
                .is_some_and(|(m, n)| m.pass_wanted_by_caller(n));
        if asked {
            // With rrdcached, the daemon holds the values too: FLUSH them so
            // readers of the files see everything.
            let written = self.written_paths();
            self.flush_cached(&written);
        }
        self.evict_idle();
        if let Some(c) = &self.cached {
            self.counters
                .rrdcached_reconnects
                .store(c.reconnects(), Ordering::Relaxed);
        }
        if let (Some(m), Some(n)) = (mailbox, n) {
            m.pass_finished(n);
        }
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
    /// Readers' per-file requests are answered here too (a few file writes),
    /// so a dashboard does not wait for the whole pass.
    pub(super) fn absorb(&mut self) {
        if let Some(m) = self.mailbox.clone() {
            for batch in m.take_samples() {
                self.accept_batch(batch);
            }
            let files = m.take_files();
            if !files.is_empty() {
                self.deferred.extend(files);
                self.run_deferred();
            }
        }
        self.commit_journal();
        self.next_commit = Instant::now() + self.commit_every;
    }

    /// Writes what `paths` have cached (and has rrdcached write them).
    fn flush_paths(&mut self, paths: &[PathBuf]) {
        self.commit_journal();
        let mut targets = Vec::with_capacity(paths.len());
        for p in paths {
            if let Some(&id) = self.by_path.get(p.as_path()) {
                self.write_file(id);
                targets.push(self.slots[id as usize].path.clone());
            }
        }
        self.flush_cached(&targets);
    }

    /// rrdcached `FLUSH` of files this run wrote through it.
    fn flush_cached(&mut self, targets: &[Arc<Path>]) {
        let Some(c) = &mut self.cached else {
            return;
        };
        for p in targets.iter().filter(|p| p.exists()) {
            if let Err(e) = c.flush(p) {
                self.diag.emit(
                    CachedFlushFailed {
                        daemon: c.addr(),
                        error: &e,
                    },
                    &self.counters,
                );
                break;
            }
        }
    }

    /// Answers the per-file flush requests taken, all at once: the union of
    /// their files (ten readers queued behind a pass cost one write each).
    pub(super) fn run_deferred(&mut self) {
        while !self.deferred.is_empty() {
            let requests = std::mem::take(&mut self.deferred);
            let mut all: Vec<PathBuf> = requests
                .iter()
                .flat_map(|r| r.paths.iter().cloned())
                .collect();
            all.sort();
            all.dedup();
            self.flush_paths(&all);
            for r in requests {
                let _ = r.ack.send(());
            }
        }
    }

    /// After a flush pass the journal only needs what is still cached: when
    /// that is nothing it starts over empty; when writes failed it is replaced
    /// by the samples kept for retry, so an outage does not grow it without
    /// bound (a new file renamed over the old, so a crash meanwhile loses
    /// nothing).
    /// Returns whether the journal now holds exactly what is cached.
    pub(super) fn restart_journal(&mut self) -> bool {
        if !self.journal.is_on() {
            return false;
        }
        let kept = self.slots.iter().any(|s| !s.pending.is_empty());
        if !kept {
            // Everything it holds, written or still buffered, is in the files
            // or was given up.
            return match self.journal.truncate() {
                Ok(()) => true,
                Err(e) => {
                    self.journal_failed(&e);
                    false
                }
            };
        }
        let slots = &mut self.slots;
        let r = self.journal.replace(|w, generation| {
            let mut buf = Vec::with_capacity(1 << 16);
            for (id, slot) in slots.iter_mut().enumerate() {
                if slot.pending.is_empty() {
                    continue;
                }
                let id = id as u32;
                journal::encode_define(
                    &mut buf,
                    id,
                    slot.ds_type,
                    slot.step,
                    slot.dss,
                    slot.path.to_str().unwrap_or_default(),
                );
                slot.journal_gen = generation;
                for e in super::slot::entries(&slot.pending) {
                    let t = super::slot::entry_time(e);
                    let values = e.splitn(2, |&b| b == b':').nth(1).unwrap_or(b"");
                    journal::encode_sample(&mut buf, id, t, values);
                }
                if buf.len() >= 1 << 16 {
                    w.write_all(&buf)?;
                    buf.clear();
                }
            }
            w.write_all(&buf)
        });
        match r {
            Ok(()) => true,
            Err(e) => {
                // The old journal still holds every kept sample; slots
                // marked for the failed generation define themselves again
                // in it (the generation moved on).
                self.journal_failed(&e);
                false
            }
        }
    }

    /// Sets the journal aside at the start of a pass (see
    /// [`super::journal::Journal::rotate`]); whether it did.
    pub(super) fn rotate_journal(&mut self) -> bool {
        match self.journal.rotate() {
            Ok(rotated) => rotated,
            Err(e) => {
                self.journal_failed(&e);
                false
            }
        }
    }

    /// The end of a flush pass: the journal must hold what is still cached
    /// and nothing else needs keeping.
    pub(super) fn finish_pass(&mut self, rotated: bool) {
        if !self.journal.is_on() {
            return;
        }
        let clean = if rotated && !self.kept_in_pass {
            // The fresh journal holds exactly what came in during the pass
            // (still cached, or written by it): make it durable.
            self.journal.dirty = true;
            self.commit_journal();
            !self.journal.dirty
        } else {
            // Writes failed (their samples, kept for retry, may be only in
            // the set-aside files) or the journal could not be set aside:
            // write what is cached into a new journal.
            self.restart_journal()
        };
        if clean {
            self.journal.remove_rotated();
        }
    }

    pub(super) fn commit_journal(&mut self) {
        if let Err(e) = self.journal.commit() {
            self.journal_failed(&e);
        }
    }

    /// A journal path is only believed inside our root.
    fn journal_path_ok(&self, path: &Path) -> bool {
        path.starts_with(&self.params.rrd_root)
            && !path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
    }

    /// Reads the journals into the cache (see [`super::journal`] for what is
    /// taken); returns the samples taken.
    pub(super) fn load_journals(&mut self) -> u64 {
        // Journals set aside by a pass that did not finish come first: their
        // samples are older than the current journal's.
        let mut files = self.journal.adopt_rotated();
        files.push(self.journal.path());
        let mut n = 0u64;
        for jp in files {
            let Ok(f) = std::fs::File::open(&jp) else {
                continue;
            };
            let mut ids: HashMap<u32, u32> = HashMap::new();
            let read = journal::read(f, |rec| n += self.replay_record(&mut ids, rec));
            let stats = match read {
                Ok(stats) => stats,
                Err(e) => {
                    self.journal_failed(&e);
                    continue;
                }
            };
            if stats.bad > 0 || stats.torn_bytes > 0 {
                self.diag.emit(
                    JournalRecordsSkipped {
                        file: &jp,
                        bad_records: stats.bad,
                        torn_tail_bytes: stats.torn_bytes,
                    },
                    &self.counters,
                );
            }
        }
        self.counters.replayed.store(n, Ordering::Relaxed);
        n
    }

    /// Replays the journals and writes what they held.
    pub(super) fn replay(&mut self) {
        let n = self.load_journals();
        if n > 0 || !self.journal.rotated.is_empty() {
            tracing::info!(samples = n, "replaying the RRD journal");
            self.flush_all();
        }
    }

    /// Takes one record of a journal whose file numbers are `ids`; returns
    /// the samples taken (0 or 1).
    fn replay_record(&mut self, ids: &mut HashMap<u32, u32>, rec: Record<'_>) -> u64 {
        match rec {
            Record::Define {
                id: jid,
                ds_type,
                step,
                dss,
                path,
            } => {
                let path = PathBuf::from(path);
                if !self.journal_path_ok(&path) {
                    ids.remove(&jid);
                    return 0;
                }
                let id = self.slot_for_path(path, ds_type, step, dss);
                ids.insert(jid, id);
                0
            }
            Record::Sample {
                id: jid,
                time,
                values,
            } => {
                let Some(&id) = ids.get(&jid) else {
                    return 0;
                };
                let slot = &mut self.slots[id as usize];
                u64::from(
                    journal::values_ok(values, Some(slot.dss)) && slot.push_update(time, values),
                )
            }
            Record::Whole {
                path,
                ds_type,
                step,
                time,
                values,
            } => {
                let path = PathBuf::from(path);
                let dss = values.split(':').count();
                if !self.journal_path_ok(&path) || !(1..=2).contains(&dss) {
                    return 0;
                }
                let id = self.slot_for_path(path, ds_type, step, dss as u8);
                let slot = &mut self.slots[id as usize];
                u64::from(dss == usize::from(slot.dss) && slot.push_update(time, values))
            }
        }
    }

    /// Files this run has written, for rrdcached FLUSH.
    pub(super) fn written_paths(&self) -> Vec<Arc<Path>> {
        self.slots
            .iter()
            .filter(|s| s.on_disk.is_some())
            .map(|s| s.path.clone())
            .collect()
    }

    /// How long a slot may sit idle with nothing pending before it is
    /// dropped: the retry window, and at least two flush intervals.
    pub(super) fn idle_window(&self) -> u64 {
        let c = &self.params.config;
        u64::from(
            c.retry_window_secs
                .max(c.flush_interval_secs.saturating_mul(2)),
        )
    }

    /// Drops the slots of series idle for longer than [`Writer::idle_window`]
    /// with nothing pending or failing (metrics that expired, or a sender
    /// that churns through names): the writer's tables hold the live series,
    /// not every series ever seen. A series that comes back gets a new slot
    /// (its file's last update is asked again once).
    pub(super) fn evict_idle(&mut self) {
        let window = self.idle_window();
        let now = crate::state::now_secs();
        let mut gone = vec![false; self.slots.len()];
        let mut evicted = 0u64;
        for (id, slot) in self.slots.iter_mut().enumerate() {
            let live = self.by_path.get(&slot.path) == Some(&(id as u32));
            if live
                && slot.pending.is_empty()
                && slot.failing.is_none()
                && now.saturating_sub(slot.last_seen) > window
            {
                self.by_path.remove(&slot.path);
                slot.path = Arc::from(Path::new(""));
                slot.pending = Vec::new();
                gone[id] = true;
                self.free.push(id as u32);
                evicted += 1;
            }
        }
        if evicted == 0 {
            return;
        }
        self.index.retain(|_, id| !gone[*id as usize]);
        self.unborn.retain(|id| !gone[*id as usize]);
        // The order hints name slots by number; they are rebuilt by the
        // next batch.
        self.order.clear();
        self.counters
            .slots_evicted
            .fetch_add(evicted, Ordering::Relaxed);
    }

    /// The thread body: replay, then take work until every handle is gone,
    /// then write everything cached.
    pub(super) fn run(mut self, mailbox: Arc<Mailbox>) {
        self.mailbox = Some(mailbox.clone());
        self.replay();
        let flush_every =
            Duration::from_secs(u64::from(self.params.config.flush_interval_secs.max(1)));
        let min_forced = self.params.config.min_forced_flush_interval();
        let mut next_flush = Instant::now() + flush_every;
        self.next_commit = Instant::now() + self.commit_every;
        loop {
            let now = Instant::now();
            let forced_at = self.last_forced.map_or(now, |t| t + min_forced);
            let allowed = now >= forced_at;
            let mut wake = self.next_commit.min(next_flush);
            if !allowed && mailbox.pass_wanted() {
                wake = wake.min(forced_at);
            }
            match mailbox.next(wake.saturating_duration_since(now), allowed) {
                None => break,
                Some(Some(Work::Samples(batch))) => self.accept_batch(batch),
                Some(Some(Work::Files(files))) => {
                    self.deferred.extend(files);
                    self.run_deferred();
                }
                Some(None) => {}
            }
            self.create_new_files();
            let now = Instant::now();
            if now >= self.next_commit {
                self.commit_journal();
                self.next_commit = now + self.commit_every;
            }
            if now >= next_flush {
                self.pass(false);
                // Start to start: a pass over a million files takes a
                // minute, and counting the interval from its end would
                // let the cache (and the journal) grow by that much.
                next_flush = (next_flush + flush_every).max(Instant::now());
            } else if mailbox.pass_wanted()
                && self.last_forced.is_none_or(|t| now >= t + min_forced)
            {
                self.pass(true);
            }
        }
        // Shutdown: everything cached goes to disk (and whoever waits for a
        // pass is answered by it).
        self.commit_journal();
        self.pass(true);
        self.deferred.extend(mailbox.take_files());
        self.run_deferred();
        tracing::info!("RRD writer drained");
    }
}

#[cfg(test)]
mod tests {
    use super::super::journal::{MARKER, journal_path};
    use super::super::writer::tests::{key, path_of, pending, sample, writer};
    use super::super::{StorageConfig, StorageParams};
    use super::*;
    use std::collections::BTreeMap;

    /// Every update the writer holds for a file, as (path, time, values).
    fn held(w: &Writer) -> Vec<(PathBuf, u64, String)> {
        let mut out = Vec::new();
        for (id, slot) in w.slots.iter().enumerate() {
            if w.by_path.get(&slot.path) != Some(&(id as u32)) {
                continue;
            }
            for e in super::super::slot::entries(&slot.pending) {
                let e = String::from_utf8_lossy(e);
                let (t, v) = e.split_once(':').unwrap();
                out.push((slot.path.to_path_buf(), t.parse().unwrap(), v.to_string()));
            }
        }
        out
    }

    /// The review's torn tail, and every other way the journal's bytes can
    /// end early or change: replay hands librrd a sample's exact value or
    /// nothing, and the files hold only values that were sampled.
    #[test]
    fn a_torn_or_damaged_journal_never_replays_a_wrong_value() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut truth: BTreeMap<(PathBuf, u64), String> = BTreeMap::new();
        let mut w = writer(root, 3600);
        for (i, t) in [1000u64, 1015, 1030].into_iter().enumerate() {
            for m in ["a", "b"] {
                let v = format!("{}.{}", 21 + i, 5 + i);
                w.accept(sample(m, "GAUGE", t, &v), true);
                truth.insert((path_of(root, m), t), v);
            }
        }
        w.commit_journal();
        drop(w);
        let bytes = std::fs::read(journal_path(root)).unwrap();
        assert!(bytes.starts_with(MARKER));
        let check = |journal: &[u8], what: &str| -> u64 {
            for e in std::fs::read_dir(root).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    std::fs::remove_dir_all(&p).unwrap();
                } else {
                    std::fs::remove_file(&p).unwrap();
                }
            }
            std::fs::write(journal_path(root), journal).unwrap();
            let mut w = writer(root, 3600);
            let n = w.load_journals();
            for (path, t, v) in held(&w) {
                assert_eq!(
                    truth.get(&(path.clone(), t)),
                    Some(&v),
                    "{what}: replay would write {v} at {t} into {}",
                    path.display()
                );
            }
            w.flush_all();
            for m in ["a", "b"] {
                let p = path_of(root, m);
                let Ok(last) = ganglion_rrd::last(&p) else {
                    continue;
                };
                let info = ganglion_rrd::info(&p).unwrap();
                let last_ds = info.iter().find_map(|(k, v)| match v {
                    ganglion_rrd::InfoValue::Str(s) if k == "ds[sum].last_ds" => Some(s.clone()),
                    _ => None,
                });
                assert_eq!(
                    last_ds.as_ref(),
                    truth.get(&(p.clone(), last as u64)),
                    "{what}: {} last update at {last}",
                    p.display()
                );
            }
            n
        };
        assert_eq!(check(&bytes, "intact"), 6);
        for cut in 0..bytes.len() {
            check(&bytes[..cut], &format!("cut at {cut}"));
        }
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                check(&b, &format!("byte {i} ^ {flip:#x}"));
            }
        }
    }

    /// A torn last record is counted (and logged) once, the rest replays.
    #[test]
    fn a_torn_tail_is_counted_and_the_complete_records_replay() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 3600);
        for t in [1000u64, 1015, 1030] {
            w.accept(sample("m", "GAUGE", t, "21.5"), true);
        }
        w.commit_journal();
        drop(w);
        let jp = journal_path(dir.path());
        let bytes = std::fs::read(&jp).unwrap();
        std::fs::write(&jp, &bytes[..bytes.len() - 5]).unwrap();
        let mut again = writer(dir.path(), 3600);
        again.replay();
        assert_eq!(again.counters.replayed.load(Ordering::Relaxed), 2);
        assert_eq!(
            again.counters.journal_bad_records.load(Ordering::Relaxed),
            1
        );
        assert_eq!(ganglion_rrd::last(&path_of(dir.path(), "m")).unwrap(), 1015);
    }

    #[test]
    fn idle_slots_are_evicted_and_come_back_as_new() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 60);
        let batch = |names: &[&str], t: u64| -> Vec<super::super::Sample> {
            names
                .iter()
                .map(|n| sample(n, "GAUGE", t, &t.to_string()))
                .collect()
        };
        w.accept_batch(batch(&["a", "b", "c"], 1000));
        w.flush_all();
        // `a` and `c` stopped long ago; `c` still has a sample waiting.
        w.accept_batch(batch(&["b", "c"], 1015));
        let (a, b, c) = (
            path_of(dir.path(), "a"),
            path_of(dir.path(), "b"),
            path_of(dir.path(), "c"),
        );
        let long_ago = crate::state::now_secs() - w.idle_window() - 1;
        for p in [&a, &c] {
            let id = w.by_path[p.as_path()];
            w.slots[id as usize].last_seen = long_ago;
        }
        w.evict_idle();
        assert_eq!(w.counters.slots_evicted.load(Ordering::Relaxed), 1);
        assert!(!w.by_path.contains_key(a.as_path()));
        assert!(!w.index.contains_key(&key("a")));
        assert_eq!(pending(&w, &c), ["1015:1015"], "pending: kept");
        assert_eq!(w.free.len(), 1);
        // It comes back: a new slot (the freed one), the file gets the
        // sample, and the order hints still put each sample in its file.
        w.accept_batch(batch(&["a", "b", "c"], 1030));
        assert!(w.free.is_empty());
        assert_eq!(pending(&w, &a), ["1030:1030"]);
        assert_eq!(pending(&w, &b), ["1015:1015", "1030:1030"]);
        w.flush_all();
        for p in [&a, &b, &c] {
            assert_eq!(ganglion_rrd::last(p).unwrap(), 1030, "{}", p.display());
        }
        // Evicting again finds nothing idle.
        w.evict_idle();
        assert_eq!(w.counters.slots_evicted.load(Ordering::Relaxed), 1);
    }

    /// A hundred callers asking for full flushes at once, again and again,
    /// while the sampler's batches keep coming: no batch is dropped (flushes
    /// are not in the sample queue), every caller is answered, and forced
    /// passes stay within the rate limit.
    #[test]
    fn concurrent_flush_all_callers_never_displace_batches() {
        let dir = tempfile::tempdir().unwrap();
        let min_forced = 1u32;
        let params = StorageParams {
            rrd_root: dir.path().to_path_buf(),
            step_secs: 15,
            rras: vec!["RRA:AVERAGE:0.5:1:100".into()],
            case_sensitive_hostnames: false,
            config: StorageConfig {
                flush_interval_secs: 3600,
                queue_max_batches: 64,
                min_forced_flush_interval_secs: Some(min_forced),
                ..StorageConfig::default()
            },
            rrdcached: None,
        };
        let counters = Arc::new(crate::telemetry::Counters::default());
        let (h, t) = super::super::start(params, &counters).unwrap();
        let started = Instant::now();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (h, stop) = (h.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut time = 1_000_000u64;
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    time += 15;
                    let batch = (0..20)
                        .map(|i| sample(&format!("m{i}"), "GAUGE", time, "1"))
                        .collect();
                    h.submit(batch);
                    sent += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                sent
            })
        };
        let callers: Vec<_> = (0..100)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || {
                    (0..3)
                        .map(|_| h.try_flush(Vec::new(), Duration::from_secs(120)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for c in callers {
            for r in c.join().unwrap() {
                assert_eq!(r, Ok(()));
            }
        }
        stop.store(true, Ordering::Relaxed);
        let sent = sampler.join().unwrap();
        let elapsed = started.elapsed();
        let c = h.counters.clone();
        assert_eq!(c.dropped_batches.load(Ordering::Relaxed), 0);
        assert_eq!(c.samples.load(Ordering::Relaxed), sent * 20);
        assert_eq!(c.flush_all_requests.load(Ordering::Relaxed), 300);
        let forced = c.forced_flush_passes.load(Ordering::Relaxed);
        // The first pass may start at once; each later one waits out the
        // limit. Three hundred requests, a few passes.
        let bound = 1 + elapsed.as_secs() / u64::from(min_forced) + 1;
        assert!(
            (1..=bound).contains(&forced),
            "{forced} forced passes in {elapsed:?}"
        );
        drop(h);
        t.join().unwrap();
        assert_eq!(
            c.samples_written.load(Ordering::Relaxed) + c.samples_not_newer.load(Ordering::Relaxed),
            sent * 20,
            "every accepted sample reached its file"
        );
    }

    /// Out of file descriptors (EMFILE) for real: librrd cannot create the
    /// file, the samples are kept (counted as `transient`, none discarded),
    /// and written once descriptors are free again. The limit is per
    /// process, so this runs in a child process of the test binary.
    #[test]
    fn out_of_descriptors_keeps_samples_and_retries() {
        const NAME: &str = "storage::flush::tests::out_of_descriptors_keeps_samples_and_retries";
        if std::env::var_os("GANGLION_EMFILE_CHILD").is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
                .env("GANGLION_EMFILE_CHILD", "1")
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success() && text.contains("1 passed"), "{text}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 3600);
        let open_now = std::fs::read_dir("/proc/self/fd").unwrap().count();
        let st = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={}:", open_now + 16))
            .status()
            .expect("prlimit (util-linux)");
        assert!(st.success());
        // Take every descriptor left.
        let mut held = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            held.push(f);
            assert!(held.len() < 100, "the limit did not apply");
        }
        for t in [1000u64, 1015] {
            w.accept(sample("m", "GAUGE", t, "7"), true);
        }
        w.create_new_files();
        w.flush_all();
        let path = path_of(dir.path(), "m");
        assert!(!path.exists());
        assert!(w.counters.write_errors.get(ganglion_rrd::Cause::Transient) >= 1);
        assert_eq!(w.counters.samples_discarded.load(Ordering::Relaxed), 0);
        assert_eq!(pending(&w, &path), ["1000:7", "1015:7"]);
        drop(held);
        w.flush_all();
        assert_eq!(ganglion_rrd::last(&path).unwrap(), 1015);
        assert!(pending(&w, &path).is_empty());
        assert_eq!(w.counters.samples_discarded.load(Ordering::Relaxed), 0);
    }

    /// After a lost connection the writer may resend what rrdcached took
    /// before it went; the daemon then refuses the whole update, naming its
    /// last update. The writer sends again only what is newer, and nothing
    /// is discarded.
    #[test]
    fn an_update_rrdcached_partly_has_is_sent_again_without_what_it_has() {
        use std::io::{BufRead, BufReader, Write as _};
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("fake.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let fake = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut batches: Vec<Vec<String>> = Vec::new();
            for reply in [
                "1 errors\n1 illegal attempt to update using time 1000.000000 when last update \
                 time is 1015.000000 (minimum one second step)\n",
                "0 errors\n",
            ] {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                assert_eq!(line, "BATCH\n");
                w.write_all(b"0 Go ahead.  End with dot '.' on its own line.\n")
                    .unwrap();
                let mut lines = Vec::new();
                loop {
                    let mut l = String::new();
                    r.read_line(&mut l).unwrap();
                    if l == ".\n" {
                        break;
                    }
                    lines.push(l.trim_end().to_string());
                }
                batches.push(lines);
                w.write_all(reply.as_bytes()).unwrap();
            }
            batches
        });
        let root = dir.path().join("rrds");
        std::fs::create_dir(&root).unwrap();
        let mut w = writer(&root, 3600);
        w.cached = Some(ganglion_rrd::rrdcached::Client::new(
            &format!("unix:{}", sock.display()),
            ganglion_rrd::rrdcached::Options::default(),
        ));
        for t in [1000u64, 1015, 1030] {
            w.accept(sample("m", "GAUGE", t, &t.to_string()), true);
        }
        w.flush_all();
        let path = path_of(&root, "m");
        let batches = fake.join().unwrap();
        let file = ganglion_rrd::rrdcached::escape_field(&path.display().to_string());
        assert_eq!(
            batches,
            [
                vec![format!("UPDATE {file} 1000:1000 1015:1015 1030:1030")],
                vec![format!("UPDATE {file} 1030:1030")],
            ]
        );
        assert!(pending(&w, &path).is_empty());
        assert_eq!(w.counters.samples_discarded.load(Ordering::Relaxed), 0);
        assert_eq!(w.counters.file_writes.load(Ordering::Relaxed), 1);
    }
}

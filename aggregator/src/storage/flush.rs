//! The writer's passes and its loop: a pass over every file (timed, or
//! forced by flush-all callers, single-flight and rate-limited, see
//! [`super::mailbox`]), per-file flushes for readers, what the journal must
//! hold after a pass, replay at start, and slot eviction.

use super::journal::{self, Record};
use super::mailbox::{Mailbox, Work};
use super::writer::{LogKey, READ_AHEAD_FILES, Writer};
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
        // A timed pass that callers wait for serves them as a forced one.
        let asked = forced || mailbox.as_ref().is_some_and(|m| m.pass_wanted());
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
        if asked {
            // With rrdcached, the daemon holds the values too: FLUSH them so
            // readers of the files see everything.
            let written = self.written_paths();
            self.flush_cached(&written);
        }
        self.evict_idle();
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
    /// Flush requests wait (in their own queue) until the pass is over.
    pub(super) fn absorb(&mut self) {
        if let Some(m) = self.mailbox.clone() {
            for batch in m.take_samples() {
                self.accept_batch(batch);
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
                if self.log.allow(LogKey::CachedFlush) {
                    tracing::warn!(
                        daemon = c.addr(),
                        error = %e,
                        "rrdcached FLUSH failed; readers may not see its cached values yet \
                         (logged once per 10 min)"
                    );
                }
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
            let bad = stats.bad + u64::from(stats.torn_bytes > 0);
            if bad > 0 {
                self.counters
                    .journal_bad_records
                    .fetch_add(bad, Ordering::Relaxed);
                if self.log.allow(LogKey::JournalReplay) {
                    tracing::warn!(
                        file = %jp.display(),
                        bad_records = stats.bad,
                        torn_tail_bytes = stats.torn_bytes,
                        "RRD journal records skipped at replay (a torn last record from a crash \
                         mid-append, or damaged ones); only complete records with a valid \
                         checksum are replayed; counted in ganglion_rrd_journal_bad_records_total"
                    );
                }
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
        u64::from(c.retry_window_secs.max(c.flush_interval_secs.saturating_mul(2)))
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

//! What reaches the writer thread: data (sample batches) and control (flush
//! requests) in separate, separately bounded queues, so no number of flush
//! requests can take a batch's place.
//!
//! - **Samples**: at most `queue_max_batches` batches wait; [`Mailbox::submit`]
//!   never blocks, and a batch beyond the bound is refused (the caller counts
//!   it). Flushes never occupy this queue.
//! - **Per-file flushes** (readers asking for the files they read): at most
//!   `control_queue_max` requests wait; beyond that [`Mailbox::flush_files`]
//!   answers [`FlushError::Busy`] at once, which the reader can turn into a
//!   503. Nothing is dropped: the files are written at the next pass anyway.
//! - **Flush-all** is single-flight with generation numbers, not a queue:
//!   passes are numbered; a caller waits for the first pass that *starts*
//!   after it arrived (one running when it arrives may have passed its files
//!   already), and every caller waiting for that pass shares it. However many
//!   callers arrive together, they cost at most two passes; and forced passes
//!   start at most once per `min_forced_flush_interval` (callers beyond that
//!   join the next allowed one). Timed passes count as passes too.

use super::sampler::Sample;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Why a flush request was not answered with "written".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    /// Too many flush requests are waiting (`storage.control_queue_max`);
    /// try again shortly. Nothing was lost: the samples stay cached.
    #[error("the RRD writer has too many flush requests waiting; try again shortly")]
    Busy,
    /// The writer did not finish in time; the flush still happens.
    #[error("the RRD writer did not finish the flush in time")]
    Timeout,
    /// The writer has stopped.
    #[error("the RRD writer has stopped")]
    Stopped,
}

/// One reader's request: write what these files have cached, then say so.
pub(super) struct FileFlush {
    pub(super) paths: Vec<PathBuf>,
    pub(super) ack: mpsc::Sender<()>,
}

/// What the writer finds when it looks.
pub(super) enum Work {
    /// A batch of samples.
    Samples(Vec<Sample>),
    /// Per-file flush requests.
    Files(Vec<FileFlush>),
}

#[derive(Default)]
struct Inbox {
    samples: VecDeque<Vec<Sample>>,
    files: VecDeque<FileFlush>,
    /// Highest pass number a flush-all caller waits for.
    wanted: u64,
    /// Number of the pass running or last started.
    started: u64,
    /// Number of the last pass finished.
    finished: u64,
    /// Flush-all requests so far.
    asked: u64,
    /// Every handle is gone: the writer drains and stops.
    closed: bool,
    /// The writer is gone: nothing will be answered.
    stopped: bool,
}

/// The queues between the handles and the writer thread.
pub(super) struct Mailbox {
    inbox: Mutex<Inbox>,
    /// The writer waits here for work.
    work: Condvar,
    /// Flush-all callers wait here for their pass.
    passes: Condvar,
    sample_cap: usize,
    file_cap: usize,
}

impl Mailbox {
    pub(super) fn new(sample_cap: usize, file_cap: usize) -> Mailbox {
        Mailbox {
            inbox: Mutex::new(Inbox::default()),
            work: Condvar::new(),
            passes: Condvar::new(),
            sample_cap: sample_cap.max(1),
            file_cap: file_cap.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inbox> {
        // Nothing panics while holding it; a poisoned lock still holds
        // consistent queues.
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a batch; `Err` gives it back when the queue is full or the
    /// writer is gone. Never blocks on the writer.
    pub(super) fn submit(&self, batch: Vec<Sample>) -> Result<(), Vec<Sample>> {
        let mut inbox = self.lock();
        if inbox.stopped || inbox.samples.len() >= self.sample_cap {
            return Err(batch);
        }
        inbox.samples.push_back(batch);
        drop(inbox);
        self.work.notify_one();
        Ok(())
    }

    /// Asks for `paths` to be written and waits up to `timeout` for it.
    pub(super) fn flush_files(
        &self,
        paths: Vec<PathBuf>,
        timeout: Duration,
    ) -> Result<(), FlushError> {
        let (ack, done) = mpsc::channel();
        {
            let mut inbox = self.lock();
            if inbox.stopped {
                return Err(FlushError::Stopped);
            }
            if inbox.files.len() >= self.file_cap {
                return Err(FlushError::Busy);
            }
            inbox.files.push_back(FileFlush { paths, ack });
        }
        self.work.notify_one();
        match done.recv_timeout(timeout) {
            Ok(()) => Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(FlushError::Timeout),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(FlushError::Stopped),
        }
    }

    /// Asks for a pass over every file and waits up to `timeout` for the
    /// first pass that starts after this call to finish (see the module
    /// docs). With a zero timeout it only asks.
    pub(super) fn flush_all(&self, timeout: Duration) -> Result<(), FlushError> {
        let deadline = Instant::now() + timeout;
        let mut inbox = self.lock();
        if inbox.stopped {
            return Err(FlushError::Stopped);
        }
        inbox.asked += 1;
        let target = inbox.started + 1;
        if inbox.wanted < target {
            inbox.wanted = target;
            self.work.notify_one();
        }
        loop {
            if inbox.finished >= target {
                return Ok(());
            }
            if inbox.stopped {
                return Err(FlushError::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(FlushError::Timeout);
            }
            inbox = self
                .passes
                .wait_timeout(inbox, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The writer: takes what is queued, samples first (oldest first), or
    /// waits up to `wait` for something; `Some(None)` when the wait ends, or
    /// (when `pass_allowed`) a flush-all caller waits for a pass not started
    /// yet. `None` once every handle is gone and the queues are empty.
    pub(super) fn next(&self, wait: Duration, pass_allowed: bool) -> Option<Option<Work>> {
        let deadline = Instant::now() + wait;
        let mut inbox = self.lock();
        loop {
            if let Some(b) = inbox.samples.pop_front() {
                return Some(Some(Work::Samples(b)));
            }
            if !inbox.files.is_empty() {
                return Some(Some(Work::Files(inbox.files.drain(..).collect())));
            }
            if pass_allowed && inbox.wanted > inbox.started {
                return Some(None);
            }
            if inbox.closed {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return Some(None);
            }
            inbox = self
                .work
                .wait_timeout(inbox, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The writer, during a pass: every batch queued now.
    pub(super) fn take_samples(&self) -> Vec<Vec<Sample>> {
        self.lock().samples.drain(..).collect()
    }

    /// The writer: per-file requests queued now.
    pub(super) fn take_files(&self) -> Vec<FileFlush> {
        self.lock().files.drain(..).collect()
    }

    /// Per-file requests waiting.
    #[cfg(test)]
    pub(super) fn files_waiting(&self) -> usize {
        self.lock().files.len()
    }

    /// Whether a flush-all caller waits for a pass not started yet.
    pub(super) fn pass_wanted(&self) -> bool {
        let inbox = self.lock();
        inbox.wanted > inbox.started
    }

    /// Whether a flush-all caller waits for pass `n` (or a later one).
    pub(super) fn pass_wanted_by_caller(&self, n: u64) -> bool {
        self.lock().wanted >= n
    }

    /// The writer starts a pass over every file (forced or timed); returns
    /// its number.
    pub(super) fn pass_started(&self) -> u64 {
        let mut inbox = self.lock();
        inbox.started += 1;
        inbox.started
    }

    /// The writer finished pass `n`: its callers are answered.
    pub(super) fn pass_finished(&self, n: u64) {
        let mut inbox = self.lock();
        inbox.finished = inbox.finished.max(n);
        drop(inbox);
        self.passes.notify_all();
    }

    /// Every handle is gone.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.work.notify_all();
    }

    /// The writer is gone (normally or not): waiting callers are released
    /// and new requests refused.
    pub(super) fn writer_stopped(&self) {
        let mut inbox = self.lock();
        inbox.stopped = true;
        inbox.samples.clear();
        inbox.files.clear();
        drop(inbox);
        self.passes.notify_all();
    }
}

/// Marks the mailbox closed when the last handle goes (held in an `Arc` by
/// every clone of the handle).
pub(super) struct Closer(pub(super) std::sync::Arc<Mailbox>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Marks the writer stopped when its thread ends, even by a panic.
pub(super) struct StopGuard(pub(super) std::sync::Arc<Mailbox>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.writer_stopped();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn batch() -> Vec<Sample> {
        Vec::new()
    }

    /// However many flush requests wait, a batch still finds its place: the
    /// two kinds are queued and bounded apart.
    #[test]
    fn flush_requests_never_take_a_batchs_place() {
        let m = Arc::new(Mailbox::new(2, 3));
        // Nobody serves the mailbox: per-file requests fill their own queue
        // and are then refused at once.
        let mut busy = 0;
        for _ in 0..10 {
            match m.flush_files(vec![PathBuf::from("/r/a.rrd")], Duration::ZERO) {
                Err(FlushError::Busy) => busy += 1,
                Err(FlushError::Timeout) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(busy, 7);
        for _ in 0..100 {
            assert_eq!(m.flush_all(Duration::ZERO), Err(FlushError::Timeout));
        }
        assert!(m.submit(batch()).is_ok());
        assert!(m.submit(batch()).is_ok());
        assert!(m.submit(batch()).is_err(), "the sample queue's own bound");
        // The writer sees the batches first, then the requests together.
        assert!(matches!(
            m.next(Duration::ZERO, true),
            Some(Some(Work::Samples(_)))
        ));
        assert!(matches!(
            m.next(Duration::ZERO, true),
            Some(Some(Work::Samples(_)))
        ));
        match m.next(Duration::ZERO, true) {
            Some(Some(Work::Files(f))) => assert_eq!(f.len(), 3),
            _ => panic!("the per-file requests"),
        }
        assert!(m.pass_wanted());
    }

    /// Callers that arrive before a pass starts share it; callers that
    /// arrive while it runs share the next one.
    #[test]
    fn flush_all_callers_share_passes() {
        let m = Arc::new(Mailbox::new(4, 4));
        let waiting = |n: usize| -> Vec<std::thread::JoinHandle<Result<(), FlushError>>> {
            (0..n)
                .map(|_| {
                    let m = m.clone();
                    std::thread::spawn(move || m.flush_all(Duration::from_secs(60)))
                })
                .collect()
        };
        let asked = |n: u64| {
            while m.lock().asked < n {
                std::thread::yield_now();
            }
        };
        let early = waiting(20);
        asked(20);
        assert_eq!(m.lock().wanted, 1);
        let first = m.pass_started();
        assert_eq!(first, 1);
        assert!(!m.pass_wanted());
        // These arrive during pass 1: they need pass 2.
        let late = waiting(20);
        asked(40);
        assert_eq!(m.lock().wanted, 2);
        m.pass_finished(first);
        for h in early {
            assert_eq!(h.join().unwrap(), Ok(()));
        }
        assert!(m.pass_wanted());
        let second = m.pass_started();
        m.pass_finished(second);
        for h in late {
            assert_eq!(h.join().unwrap(), Ok(()));
        }
        assert!(!m.pass_wanted(), "forty callers, two passes");
        // A stopped writer releases whoever still waits.
        let last = waiting(1);
        m.writer_stopped();
        for h in last {
            assert_eq!(h.join().unwrap(), Err(FlushError::Stopped));
        }
        assert!(m.submit(batch()).is_err());
    }
}

//! A forward's queue of encoded batches, bounded in bytes. The producer (the
//! scheduler) never waits: when a batch does not fit, the oldest batches go
//! first (fresh data is worth more than old), each counted as dropped with
//! `reason="queue_full"`.

use super::stats::{Reason, Stats};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;

/// One request's or write's worth of samples, already encoded.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The snapshot time the samples carry (seconds since the epoch).
    pub ts: u64,
    /// Samples (remote write) or lines (Graphite) in it.
    pub samples: u64,
    /// The body: snappy-compressed protobuf, or Graphite lines.
    pub payload: Bytes,
    /// When it was made (for `max_sample_age_secs`).
    pub made: Instant,
}

/// The byte-bounded queue between a forward's scheduler and its sender.
pub struct Queue {
    inner: Mutex<VecDeque<Batch>>,
    max_bytes: u64,
    ready: Notify,
    stats: Arc<Stats>,
}

impl Queue {
    /// An empty queue holding at most `max_bytes` of payload.
    pub fn new(max_bytes: u64, stats: Arc<Stats>) -> Queue {
        stats
            .queue_max_bytes
            .store(max_bytes, std::sync::atomic::Ordering::Relaxed);
        Queue {
            inner: Mutex::new(VecDeque::new()),
            max_bytes,
            ready: Notify::new(),
            stats,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Batch>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a batch, dropping the oldest ones while it does not fit.
    /// Never waits.
    pub fn push(&self, batch: Batch) {
        let len = batch.payload.len() as u64;
        if len > self.max_bytes {
            // One batch larger than the whole queue: it can never be held.
            self.stats.drop_samples(Reason::QueueFull, batch.samples);
            return;
        }
        {
            let mut q = self.lock();
            while self.stats.queue_bytes() + len > self.max_bytes {
                let Some(old) = q.pop_front() else { break };
                self.stats.sub_queue_bytes(old.payload.len() as u64);
                self.stats.drop_samples(Reason::QueueFull, old.samples);
            }
            self.stats.add_queue_bytes(len);
            q.push_back(batch);
        }
        self.ready.notify_one();
    }

    /// The oldest batch, waiting for one. Its bytes stay counted in
    /// `queue_bytes` until the sender calls [`Queue::done`].
    pub async fn pop(&self) -> Batch {
        loop {
            if let Some(b) = self.lock().pop_front() {
                return b;
            }
            self.ready.notified().await;
        }
    }

    /// The sender is finished with a popped batch (sent or dropped).
    pub fn done(&self, batch: &Batch) {
        self.stats.sub_queue_bytes(batch.payload.len() as u64);
    }

    /// Empties the queue at shutdown, counting what was never sent.
    pub fn drain(&self, reason: Reason) {
        let mut q = self.lock();
        for b in q.drain(..) {
            self.stats.sub_queue_bytes(b.payload.len() as u64);
            self.stats.drop_samples(reason, b.samples);
        }
    }

    /// `queue_max_bytes`.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// No batch waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(bytes: usize, samples: u64) -> Batch {
        Batch {
            ts: 0,
            samples,
            payload: Bytes::from(vec![b'x'; bytes]),
            made: Instant::now(),
        }
    }

    #[test]
    fn full_queue_drops_the_oldest_and_counts_them() {
        let stats = Arc::new(Stats::new("t", "graphite", "x"));
        let q = Queue::new(100, stats.clone());
        q.push(batch(40, 1));
        q.push(batch(40, 2));
        q.push(batch(40, 3));
        assert_eq!(q.len(), 2);
        assert_eq!(stats.dropped(Reason::QueueFull), 1);
        assert_eq!(stats.queue_bytes(), 80);
        q.push(batch(101, 7));
        assert_eq!(stats.dropped(Reason::QueueFull), 8);
        q.drain(Reason::Shutdown);
        assert_eq!(stats.dropped(Reason::Shutdown), 5);
        assert_eq!(stats.queue_bytes(), 0);
    }

    #[tokio::test]
    async fn pop_returns_in_order_and_done_releases_bytes() {
        let stats = Arc::new(Stats::new("t", "graphite", "x"));
        let q = Queue::new(1000, stats.clone());
        q.push(batch(10, 1));
        q.push(batch(20, 2));
        let a = q.pop().await;
        assert_eq!(a.samples, 1);
        assert_eq!(stats.queue_bytes(), 30);
        q.done(&a);
        assert_eq!(stats.queue_bytes(), 20);
        assert_eq!(q.pop().await.samples, 2);
    }
}

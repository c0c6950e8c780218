//! What each forward counts, for `/metrics`, `/api/forwards` and the
//! dashboard's status line.

use serde_json::{Value, json};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Why samples were not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The queue was full; the oldest batch went.
    QueueFull,
    /// The engine answered a 4xx other than 429: never retried.
    Rejected,
    /// Still failing after `max_sample_age_secs`.
    TooOld,
    /// A whole pass not newer than the last one sent (the wall clock
    /// stepped back): counted as 1 per pass skipped, as it is never encoded.
    OutOfOrder,
    /// Still queued when the aggregator stopped.
    Shutdown,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 5] = [
        Reason::QueueFull,
        Reason::Rejected,
        Reason::TooOld,
        Reason::OutOfOrder,
        Reason::Shutdown,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::QueueFull => "queue_full",
            Reason::Rejected => "rejected",
            Reason::TooOld => "too_old",
            Reason::OutOfOrder => "out_of_order",
            Reason::Shutdown => "shutdown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds (seconds) of the send-latency histogram.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// One forward's counters.
#[derive(Debug)]
pub struct Stats {
    /// `name` (the `forward` label).
    pub name: String,
    /// `graphite` or `remote_write`.
    pub kind: &'static str,
    /// Where it sends (address or URL without credentials).
    pub target: String,
    /// Samples put in the queue.
    pub samples: AtomicU64,
    /// Samples the engine accepted (2xx) or that were written to its socket.
    pub sent: AtomicU64,
    /// Requests or writes tried again after a failure.
    pub retried: AtomicU64,
    /// Requests or writes that failed (each retry counts).
    pub failed: AtomicU64,
    dropped: [AtomicU64; Reason::ALL.len()],
    queue_bytes: AtomicU64,
    /// `queue_max_bytes`.
    pub queue_max_bytes: AtomicU64,
    /// Unix seconds of the last success (0: none yet).
    pub last_success: AtomicU64,
    /// Snapshot time of the last batch queued.
    pub last_ts: AtomicU64,
    /// The last send succeeded.
    pub up: AtomicBool,
    /// The last failure, for the dashboard.
    pub last_error: Mutex<String>,
    latency: Mutex<Latency>,
}

#[derive(Debug, Default)]
struct Latency {
    sum: f64,
    count: u64,
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
}

impl Stats {
    /// Zeroed counters.
    pub fn new(name: &str, kind: &'static str, target: &str) -> Stats {
        Stats {
            name: name.to_string(),
            kind,
            target: target.to_string(),
            samples: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: Default::default(),
            queue_bytes: AtomicU64::new(0),
            queue_max_bytes: AtomicU64::new(0),
            last_success: AtomicU64::new(0),
            last_ts: AtomicU64::new(0),
            up: AtomicBool::new(false),
            last_error: Mutex::new(String::new()),
            latency: Mutex::new(Latency::default()),
        }
    }

    /// Counts `n` samples dropped for `reason`.
    pub fn drop_samples(&self, reason: Reason, n: u64) {
        self.dropped[reason.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Samples dropped for `reason` so far.
    pub fn dropped(&self, reason: Reason) -> u64 {
        self.dropped[reason.index()].load(Ordering::Relaxed)
    }

    /// Bytes queued plus the batch being sent.
    pub fn queue_bytes(&self) -> u64 {
        self.queue_bytes.load(Ordering::Relaxed)
    }

    pub(super) fn add_queue_bytes(&self, n: u64) {
        self.queue_bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn sub_queue_bytes(&self, n: u64) {
        let _ = self
            .queue_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }

    /// Records one send's duration.
    pub fn observe(&self, secs: f64) {
        let mut l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        l.sum += secs;
        l.count += 1;
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        l.buckets[i] += 1;
    }

    /// `(sum, count, [(upper bound, count in that bucket)])`, buckets not
    /// cumulative, the last one `+Inf`.
    pub fn latency(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
        (
            l.sum,
            l.count,
            bounds.zip(l.buckets.iter().copied()).collect(),
        )
    }

    /// Notes a failure for the dashboard.
    pub fn set_error(&self, e: &str) {
        self.up.store(false, Ordering::Relaxed);
        let mut m = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        m.clear();
        m.push_str(&e.chars().take(300).collect::<String>());
    }

    /// The `/api/forwards` entry.
    pub fn status(&self) -> Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let dropped: serde_json::Map<String, Value> = Reason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), json!(self.dropped(*r))))
            .collect();
        let (sum, count, _) = self.latency();
        json!({
            "name": self.name,
            "kind": self.kind,
            "target": self.target,
            "up": self.up.load(Ordering::Relaxed),
            "samples": g(&self.samples),
            "sent": g(&self.sent),
            "retried": g(&self.retried),
            "failed": g(&self.failed),
            "dropped": dropped,
            "queue_bytes": self.queue_bytes(),
            "queue_max_bytes": g(&self.queue_max_bytes),
            "last_success": g(&self.last_success),
            "last_timestamp": g(&self.last_ts),
            "mean_send_seconds": if count > 0 { sum / count as f64 } else { 0.0 },
            "last_error": self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        })
    }
}

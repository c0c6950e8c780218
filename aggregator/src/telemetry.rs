//! Self-telemetry: counters for every notable event, a rate limiter for logs,
//! and the `/metrics` exposition (OpenMetrics or Prometheus text, through
//! `prometheus-client`).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Every counter the aggregator keeps.
#[derive(Debug, Default)]
pub struct Counters {
    /// UDP datagrams received.
    pub datagrams: AtomicU64,
    /// Datagrams that failed to decode.
    pub decode_errors: AtomicU64,
    /// UDP receive calls that failed (other than timeouts).
    pub receive_errors: AtomicU64,
    /// Datagrams with a message id Ganglia ≥ 3.1 does not define.
    pub unknown_messages: AtomicU64,
    /// Value messages applied.
    pub values_received: AtomicU64,
    /// Metadata messages applied.
    pub metadata_received: AtomicU64,
    /// Metadata requests (136) received.
    pub metadata_requests_received: AtomicU64,
    /// Metadata requests we sent back to senders.
    pub metadata_requests_sent: AtomicU64,
    /// Spoofed messages without a usable `IP:name`.
    pub bad_spoof: AtomicU64,
    /// New hosts refused by `limits.max_hosts_per_cluster`.
    pub refused_hosts: AtomicU64,
    /// New metrics refused by `limits.max_metrics_per_host`.
    pub refused_metrics: AtomicU64,
    /// Metadata whose type is not a Ganglia type (shown as `string`).
    pub unknown_types: AtomicU64,
    /// Metadata that turned a numeric metric into a string or back.
    pub metric_type_changes: AtomicU64,
    /// XML requests served (all ports).
    pub xml_requests: AtomicU64,
    /// XML connections refused by `trusted_hosts`.
    pub xml_untrusted: AtomicU64,
    /// XML clients dropped for being too slow.
    pub xml_timeouts: AtomicU64,
    /// Successful polls of data sources.
    pub polls_ok: AtomicU64,
    /// Failed polls (connect, read, or parse).
    pub polls_failed: AtomicU64,
    /// Elements skipped while parsing polled XML.
    pub poll_skipped_elements: AtomicU64,
    /// Polled documents refused for their size (as received or gunzipped).
    pub poll_too_large: AtomicU64,
    /// Polls cut because the document did not end within the poll deadline.
    pub poll_too_slow: AtomicU64,
    /// Polled clusters or grids refused because their name belongs to a
    /// local cluster or to another data source (or is reserved).
    pub poll_cluster_collisions: AtomicU64,
}

impl Counters {
    /// `(name, help, value)` for every counter, for `/metrics` and `/status`.
    pub fn list(&self) -> Vec<(&'static str, &'static str, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            (
                "ganglion_udp_datagrams_total",
                "UDP datagrams received",
                g(&self.datagrams),
            ),
            (
                "ganglion_decode_errors_total",
                "Datagrams that failed to decode",
                g(&self.decode_errors),
            ),
            (
                "ganglion_udp_receive_errors_total",
                "UDP receive calls that failed (other than timeouts)",
                g(&self.receive_errors),
            ),
            (
                "ganglion_unknown_messages_total",
                "Datagrams with an unknown message id",
                g(&self.unknown_messages),
            ),
            (
                "ganglion_values_received_total",
                "Value messages applied",
                g(&self.values_received),
            ),
            (
                "ganglion_metadata_received_total",
                "Metadata messages applied",
                g(&self.metadata_received),
            ),
            (
                "ganglion_metadata_requests_received_total",
                "Metadata requests received",
                g(&self.metadata_requests_received),
            ),
            (
                "ganglion_metadata_requests_sent_total",
                "Metadata requests sent to senders",
                g(&self.metadata_requests_sent),
            ),
            (
                "ganglion_bad_spoof_total",
                "Spoofed messages without IP:name",
                g(&self.bad_spoof),
            ),
            (
                "ganglion_refused_hosts_total",
                "Hosts refused by the per-cluster cap",
                g(&self.refused_hosts),
            ),
            (
                "ganglion_refused_metrics_total",
                "Metrics refused by the per-host cap",
                g(&self.refused_metrics),
            ),
            (
                "ganglion_unknown_types_total",
                "Metadata with a non-Ganglia type",
                g(&self.unknown_types),
            ),
            (
                "ganglion_metric_type_changes_total",
                "Metadata that turned a numeric metric into a string or back",
                g(&self.metric_type_changes),
            ),
            (
                "ganglion_xml_requests_total",
                "XML requests served",
                g(&self.xml_requests),
            ),
            (
                "ganglion_xml_untrusted_total",
                "XML connections refused by trusted_hosts",
                g(&self.xml_untrusted),
            ),
            (
                "ganglion_xml_timeouts_total",
                "XML clients dropped for being too slow",
                g(&self.xml_timeouts),
            ),
            (
                "ganglion_polls_ok_total",
                "Successful data-source polls",
                g(&self.polls_ok),
            ),
            (
                "ganglion_polls_failed_total",
                "Failed data-source polls",
                g(&self.polls_failed),
            ),
            (
                "ganglion_poll_skipped_elements_total",
                "Elements skipped in polled XML",
                g(&self.poll_skipped_elements),
            ),
            (
                "ganglion_poll_too_large_total",
                "Polled documents refused for their size, as received or gunzipped",
                g(&self.poll_too_large),
            ),
            (
                "ganglion_poll_too_slow_total",
                "Polls cut because the document did not end within the poll deadline",
                g(&self.poll_too_slow),
            ),
            (
                "ganglion_poll_cluster_collisions_total",
                "Polled clusters or grids refused: name of a local cluster, of another source's, or reserved",
                g(&self.poll_cluster_collisions),
            ),
        ]
    }
}

/// A per-cluster gauge: `(name, help, [(cluster, value)])`.
pub type ClusterGauge = (&'static str, &'static str, Vec<(String, i64)>);

/// A counter with one label: `(name, help, label, [(label value, count)])`,
/// e.g. failed RRD writes by `reason`.
pub type LabelledCounter = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, u64)>,
);

/// What `/metrics` shows: counters (`name` ends in `_total`), counters with
/// a label, and per-cluster gauges, rendered with `prometheus-client`.
pub struct Exposition {
    /// `(name, help, value)`.
    pub counters: Vec<(&'static str, &'static str, u64)>,
    /// Counters split by one label.
    pub labelled: Vec<LabelledCounter>,
    /// Gauges labelled by cluster.
    pub gauges: Vec<ClusterGauge>,
    /// `[[forward]]` counters (registered by `forward::register_metrics`).
    pub forwards: crate::forward::Forwards,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ClusterLabel {
    cluster: String,
}

impl Exposition {
    /// OpenMetrics text (ends with `# EOF`), or the Prometheus 0.0.4 text
    /// format when `openmetrics` is false (same samples, no `# EOF`, counter
    /// `TYPE` lines naming the sample) for scrapers that do not negotiate.
    pub fn render(&self, openmetrics: bool) -> String {
        use prometheus_client::metrics::counter::Counter;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::gauge::Gauge;
        let mut reg = prometheus_client::registry::Registry::default();
        for (name, help, v) in &self.counters {
            let c: Counter = Counter::default();
            c.inc_by(*v);
            // The encoder appends `_total` itself.
            reg.register(name.trim_end_matches("_total"), *help, c);
        }
        for (name, help, label, values) in &self.labelled {
            let f = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
            for (v, n) in values {
                f.get_or_create(&vec![(*label, *v)]).inc_by(*n);
            }
            reg.register(name.trim_end_matches("_total"), *help, f);
        }
        for (name, help, values) in &self.gauges {
            let f = Family::<ClusterLabel, Gauge>::default();
            for (cluster, v) in values {
                f.get_or_create(&ClusterLabel {
                    cluster: cluster.clone(),
                })
                .set(*v);
            }
            reg.register(*name, *help, f);
        }
        let forward_counters = crate::forward::register_metrics(&self.forwards, &mut reg);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
            return String::new();
        }
        if openmetrics {
            return out;
        }
        // 0.0.4: a counter's HELP/TYPE name the sample itself; no EOF marker.
        let bases: std::collections::HashSet<&str> = self
            .counters
            .iter()
            .map(|(n, ..)| *n)
            .chain(self.labelled.iter().map(|(n, ..)| *n))
            .map(|n| n.trim_end_matches("_total"))
            .chain(forward_counters)
            .collect();
        let mut legacy = String::with_capacity(out.len());
        for line in out.lines().filter(|l| *l != "# EOF") {
            let mut parts = line.splitn(4, ' ');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some("#"), Some(kind @ ("HELP" | "TYPE")), Some(name), rest)
                    if bases.contains(name) =>
                {
                    legacy.push_str(&format!("# {kind} {name}_total {}", rest.unwrap_or("")));
                }
                _ => legacy.push_str(line),
            }
            legacy.push('\n');
        }
        legacy
    }
}

/// Adds the authenticated transport's counters (refusals by reason,
/// per-cluster received and lost) to an exposition.
pub fn auth_metrics(
    auth: &crate::auth::Registry,
    counters: &mut Vec<(&'static str, &'static str, u64)>,
    labelled: &mut Vec<LabelledCounter>,
) {
    counters.extend(auth.counters());
    labelled.extend(auth.labelled());
}

/// Keys a [`LogLimiter`] remembers unless told otherwise.
pub const LOG_LIMITER_CAPACITY: usize = 10_000;

/// Lets a warning through at most once per interval per key (a sender, a
/// file, a kind of failure), so a flood of bad packets from one sender or a
/// full disk is one log line, not a million.
///
/// Memory is fixed: at most `capacity` keys are remembered. Past that, new
/// keys are refused (their messages suppressed) and one line per interval
/// says how many were. Expired keys are swept once per interval, so a call
/// costs O(1) amortised, flood or not.
pub struct LogLimiter<K = IpAddr> {
    inner: Mutex<LimiterInner<K>>,
    every: Duration,
    capacity: usize,
}

struct LimiterInner<K> {
    last: HashMap<K, Instant>,
    /// Start of the current sweep period.
    swept: Instant,
    /// Messages refused for lack of room since the last report.
    suppressed: u64,
}

impl<K: Hash + Eq> LogLimiter<K> {
    /// Allows one message per key per `every`, for up to
    /// [`LOG_LIMITER_CAPACITY`] keys.
    pub fn new(every: Duration) -> Self {
        Self::with_capacity(every, LOG_LIMITER_CAPACITY)
    }

    /// As [`LogLimiter::new`], remembering at most `capacity` keys.
    pub fn with_capacity(every: Duration, capacity: usize) -> Self {
        LogLimiter {
            inner: Mutex::new(LimiterInner {
                last: HashMap::new(),
                swept: Instant::now(),
                suppressed: 0,
            }),
            every,
            capacity,
        }
    }

    /// True when a message about `key` may be logged now.
    pub fn allow(&self, key: K) -> bool {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(m.swept) >= self.every {
            m.swept = now;
            let every = self.every;
            m.last.retain(|_, t| now.duration_since(*t) < every);
            if m.suppressed > 0 {
                tracing::warn!(
                    suppressed = m.suppressed,
                    capacity = self.capacity,
                    "log rate limiter full: messages from {} more sources suppressed",
                    m.suppressed
                );
                m.suppressed = 0;
            }
        }
        let full = m.last.len() >= self.capacity;
        match m.last.get_mut(&key) {
            Some(t) if now.duration_since(*t) < self.every => false,
            Some(t) => {
                *t = now;
                true
            }
            None if full => {
                m.suppressed += 1;
                false
            }
            None => {
                m.last.insert(key, now);
                true
            }
        }
    }

    /// Messages refused for lack of room since the last report.
    pub fn suppressed(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .suppressed
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last
            .len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets `key`, so the next message about it is logged at once (the
    /// condition ended; a new one deserves its own line).
    pub fn reset(&self, key: &K) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.last.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_counters_in_both_formats() {
        let e = Exposition {
            counters: vec![("ganglion_a_total", "A", 2)],
            labelled: vec![(
                "ganglion_b_total",
                "B by reason",
                "reason",
                vec![("x", 3), ("y", 0)],
            )],
            gauges: Vec::new(),
            forwards: Default::default(),
        };
        let text = e.render(false);
        assert!(text.contains("# TYPE ganglion_b_total counter\n"), "{text}");
        assert!(
            text.contains("\nganglion_b_total{reason=\"x\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("\nganglion_b_total{reason=\"y\"} 0\n"),
            "{text}"
        );
        let om = e.render(true);
        assert!(om.contains("# TYPE ganglion_b counter\n"), "{om}");
        assert!(om.contains("\nganglion_b_total{reason=\"x\"} 3\n"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
    }

    /// Cluster names from the network as label values: every sample line
    /// reads back as its cluster, in both formats.
    #[test]
    fn hostile_cluster_names_are_escaped_in_both_formats() {
        let names = crate::hostile::names();
        let e = Exposition {
            counters: Vec::new(),
            labelled: Vec::new(),
            gauges: vec![(
                "ganglion_hosts",
                "Hosts",
                names.iter().map(|n| (n.clone(), 1)).collect(),
            )],
            forwards: Default::default(),
        };
        for om in [true, false] {
            let text = e.render(om);
            let mut seen = std::collections::HashSet::new();
            for l in text.lines().filter(|l| !l.starts_with('#')) {
                let rest = l.strip_prefix("ganglion_hosts{cluster=\"").expect(l);
                let (v, rest) = crate::hostile::label_value(rest).expect(l);
                assert_eq!(rest, "} 1", "{l:?}");
                seen.insert(v);
            }
            assert_eq!(seen.len(), names.len(), "{text}");
        }
    }

    #[test]
    fn log_limiter_per_key_and_reset() {
        let l: LogLimiter<&str> = LogLimiter::new(Duration::from_secs(600));
        assert!(l.allow("disk"));
        assert!(!l.allow("disk"));
        assert!(l.allow("file"));
        l.reset(&"disk");
        assert!(l.allow("disk"));
    }

    #[test]
    fn log_limiter_has_a_fixed_capacity() {
        let l: LogLimiter<u32> = LogLimiter::with_capacity(Duration::from_secs(600), 100);
        // A spoofed flood: a new key every call.
        let allowed = (0..10_000u32).filter(|k| l.allow(*k)).count();
        assert_eq!(allowed, 100, "only the first 100 keys get a line");
        assert_eq!(l.len(), 100, "memory stays at the capacity");
        assert_eq!(l.suppressed(), 9_900, "the rest are counted for one report");
        // Keys already known keep their own rate limit.
        assert!(!l.allow(5));
        // Making room (a condition ended) lets a new key in.
        l.reset(&5);
        assert!(l.allow(10_001));
        assert!(!l.allow(10_002));
    }

    #[test]
    fn log_limiter_sweeps_expired_keys_once_per_period() {
        // A zero interval: every call starts a new period, every key has expired.
        let l: LogLimiter<u32> = LogLimiter::with_capacity(Duration::ZERO, 2);
        assert!(l.allow(1));
        assert!(l.allow(2));
        assert!(l.allow(3), "expired keys are swept, making room");
        assert!(l.allow(1), "an expired key is allowed again");
        assert!(l.len() <= 2);
    }
}

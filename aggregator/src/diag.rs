//! Internal events: one type per thing worth counting and telling the
//! operator about, in the style of vector's `InternalEvent`. An [`Event`]
//! knows the counter it increments, its level, its log line and what the
//! line is rate-limited by (a sender's address, a file, a kind of failure);
//! emitting it is one call, [`Diag::emit`], which always counts and logs
//! only when the key's interval allows.
//!
//! ```text
//! struct Undecodable<'a> { src: SocketAddr, error: &'a DecodeError }
//! impl Event for Undecodable<'_> {
//!     type Counters = Counters;
//!     type Key = IpAddr;
//!     const LEVEL: Level = Level::WARN;
//!     fn count(&self, c: &Counters) { c.decode_errors.fetch_add(1, Ordering::Relaxed); }
//!     fn log_as(&self) -> LogAs<IpAddr> { LogAs::PerKey(self.src.ip()) }
//!     fn log(&self, _: &Counters) {
//!         diag::line!(Self::LEVEL, src = %self.src, error = %self.error,
//!             "dropping undecodable datagram (logged once a minute per sender)");
//!     }
//! }
//! // at the site:
//! self.diag.emit(Undecodable { src, error: &e }, &counters);
//! ```
//!
//! The rate limiter is the fixed-capacity [`LogLimiter`]: a flood of new
//! keys (spoofed senders) is counted exactly, logs at most `capacity` lines
//! plus one "suppressed" line per interval, and holds at most `capacity`
//! keys. The counters stay where `/metrics` reads them; the events only say
//! which one each occurrence goes to.

pub use crate::telemetry::LogLimiter;
use std::hash::Hash;
use std::time::Duration;
pub use tracing::Level;

/// Whether and how an occurrence is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogAs<K> {
    /// Counted, not logged (e.g. a type change back to the file's own type).
    Skip,
    /// Logged every time: rare by nature (a reload on SIGHUP, a start-up fault).
    Always,
    /// Logged at most once per interval per key.
    PerKey(K),
}

/// An internal event: its counter, level, log line and rate-limit key.
pub trait Event {
    /// Where its counter lives (`telemetry::Counters`, `StorageCounters`…).
    type Counters: ?Sized;
    /// What its log line is rate-limited by.
    type Key: Hash + Eq;
    /// The level of its log line (`diag::line!` writes at it).
    const LEVEL: Level;
    /// Counts one occurrence (every time, logged or not).
    fn count(&self, counters: &Self::Counters);
    /// Whether this occurrence may be logged, and under which key.
    fn log_as(&self) -> LogAs<Self::Key>;
    /// Writes the line (with `diag::line!` at [`Event::LEVEL`]); `counters` are
    /// there for totals worth quoting.
    fn log(&self, counters: &Self::Counters);
}

/// Emits the events of one part of the aggregator: a rate limiter shared by
/// its events (one interval, fixed capacity).
pub struct Diag<K> {
    limiter: LogLimiter<K>,
}

impl<K: Hash + Eq> Diag<K> {
    /// One line per key per `every`, for up to
    /// [`LOG_LIMITER_CAPACITY`](crate::telemetry::LOG_LIMITER_CAPACITY) keys.
    pub fn new(every: Duration) -> Diag<K> {
        Diag {
            limiter: LogLimiter::new(every),
        }
    }

    /// As [`Diag::new`], remembering at most `capacity` keys.
    pub fn with_capacity(every: Duration, capacity: usize) -> Diag<K> {
        Diag {
            limiter: LogLimiter::with_capacity(every, capacity),
        }
    }

    /// Counts `event` in `counters` and logs it if its key is due (and its
    /// level is enabled at all, so disabled lines take no limiter room).
    /// True when it was logged.
    pub fn emit<E: Event<Key = K>>(&self, event: E, counters: &E::Counters) -> bool {
        event.count(counters);
        let due = match event.log_as() {
            LogAs::Skip => false,
            LogAs::Always => enabled(E::LEVEL),
            LogAs::PerKey(k) => enabled(E::LEVEL) && self.limiter.allow(k),
        };
        if due {
            event.log(counters);
        }
        due
    }

    /// Forgets `key`: the condition ended, so its next occurrence is
    /// logged at once.
    pub fn reset(&self, key: &K) {
        self.limiter.reset(key);
    }

    /// The limiter (tests read its size).
    pub fn limiter(&self) -> &LogLimiter<K> {
        &self.limiter
    }
}

/// Counts and logs an event that is rare by nature (a reload on SIGHUP, a
/// fault at start), without a limiter: logged whenever its [`Event::log_as`]
/// is not [`LogAs::Skip`]. True when it was logged.
pub fn emit_rare<E: Event>(event: E, counters: &E::Counters) -> bool {
    event.count(counters);
    let due = !matches!(event.log_as(), LogAs::Skip) && enabled(E::LEVEL);
    if due {
        event.log(counters);
    }
    due
}

/// Whether a line at `level` would be written by anyone.
fn enabled(level: Level) -> bool {
    level <= tracing::level_filters::LevelFilter::current()
}

/// Writes one tracing line at a level given as a value (an event's
/// [`Event::LEVEL`]): `diag::line!(Self::LEVEL, field = %x, "message")`.
macro_rules! line {
    ($level:expr, $($arg:tt)+) => {{
        let level: ::tracing::Level = $level;
        if level == ::tracing::Level::ERROR {
            ::tracing::error!($($arg)+)
        } else if level == ::tracing::Level::WARN {
            ::tracing::warn!($($arg)+)
        } else if level == ::tracing::Level::INFO {
            ::tracing::info!($($arg)+)
        } else if level == ::tracing::Level::DEBUG {
            ::tracing::debug!($($arg)+)
        } else {
            ::tracing::trace!($($arg)+)
        }
    }};
}
pub(crate) use line;

/// The log's field formatter: every value (and the message) on one line.
/// Host, cluster and metric names come from the network and end up in log
/// lines; a newline in one would forge a second line for whoever reads the
/// log (journald, a log shipper), and the formatter's own sanitising only
/// covers terminal escapes. Control characters (tab aside) and the Unicode
/// line and paragraph separators are written escaped (`\n`, `\u{0}`).
pub fn one_line_fields()
-> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        if field.name() != "message" {
            write!(w, "{}=", field.name())?;
        }
        write_one_line(w, &format!("{value:?}"))
    })
    .delimited(" ")
}

/// Writes `text` with line breaks and other control characters escaped.
fn write_one_line(w: &mut impl std::fmt::Write, text: &str) -> std::fmt::Result {
    for c in text.chars() {
        if (c.is_control() && c != '\t') || matches!(c, '\u{2028}' | '\u{2029}') {
            write!(w, "{}", c.escape_default())?;
        } else {
            w.write_char(c)?;
        }
    }
    Ok(())
}

/// Adds one to a counter (what most [`Event::count`]s do).
pub fn inc(c: &std::sync::atomic::AtomicU64) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Test support: what events log.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{Arc, Mutex};
    use tracing::Level;

    /// Captures what is logged, at `warn` and above.
    #[derive(Clone, Default)]
    pub(crate) struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        /// Lines logged that contain `needle`.
        pub(crate) fn lines(&self, needle: &str) -> usize {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .filter(|l| l.contains(needle))
                .count()
        }
    }

    impl Sink {
        /// Everything logged.
        pub(crate) fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    /// Runs `f` with `warn` and above written to the returned sink.
    pub(crate) fn logging<R>(f: impl FnOnce() -> R) -> (R, Sink) {
        let sink = Sink::default();
        let s2 = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::WARN)
            .fmt_fields(super::one_line_fields())
            .with_ansi(false)
            .with_writer(move || s2.clone())
            .finish();
        let r = tracing::subscriber::with_default(subscriber, f);
        (r, sink)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::logging;
    use super::*;
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    struct Counters {
        bad: AtomicU64,
    }

    struct Bad {
        src: IpAddr,
    }

    impl Event for Bad {
        type Counters = Counters;
        type Key = IpAddr;
        const LEVEL: Level = Level::WARN;
        fn count(&self, c: &Counters) {
            inc(&c.bad);
        }
        fn log_as(&self) -> LogAs<IpAddr> {
            LogAs::PerKey(self.src)
        }
        fn log(&self, c: &Counters) {
            line!(Self::LEVEL, src = %self.src, total = c.bad.load(Ordering::Relaxed), "bad thing");
        }
    }

    /// A quiet event: debug level, below what the test subscriber writes.
    struct Quiet;

    impl Event for Quiet {
        type Counters = Counters;
        type Key = IpAddr;
        const LEVEL: Level = Level::DEBUG;
        fn count(&self, c: &Counters) {
            inc(&c.bad);
        }
        fn log_as(&self) -> LogAs<IpAddr> {
            LogAs::PerKey(IpAddr::from([9, 9, 9, 9]))
        }
        fn log(&self, _: &Counters) {
            line!(Self::LEVEL, "quiet");
        }
    }

    #[test]
    fn counts_every_time_and_logs_once_per_source_per_interval() {
        let c = Counters::default();
        let d: Diag<IpAddr> = Diag::new(Duration::from_secs(600));
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let (logged, sink) = logging(|| {
            (0..100)
                .flat_map(|_| [a, b])
                .filter(|src| d.emit(Bad { src: *src }, &c))
                .count()
        });
        assert_eq!(
            c.bad.load(Ordering::Relaxed),
            200,
            "every occurrence counted"
        );
        assert_eq!(logged, 2, "one line per source");
        assert_eq!(sink.lines("bad thing"), 2);
        // The condition ended for one source: its next occurrence is logged.
        d.reset(&a);
        let (logged, sink) = logging(|| d.emit(Bad { src: a }, &c) && !d.emit(Bad { src: b }, &c));
        assert!(logged);
        assert_eq!(sink.lines("bad thing"), 1);
        assert_eq!(c.bad.load(Ordering::Relaxed), 202);
    }

    #[test]
    fn a_new_interval_logs_again() {
        let c = Counters::default();
        // A zero interval: every occurrence is in a new one.
        let d: Diag<IpAddr> = Diag::new(Duration::ZERO);
        let src = IpAddr::from([10, 0, 0, 1]);
        let (_, sink) = logging(|| {
            for _ in 0..3 {
                d.emit(Bad { src }, &c);
            }
        });
        assert_eq!(sink.lines("bad thing"), 3);
    }

    #[test]
    fn the_limiter_capacity_is_fixed_under_a_flood_of_sources() {
        let c = Counters::default();
        let d: Diag<IpAddr> = Diag::with_capacity(Duration::from_secs(600), 50);
        let (logged, sink) = logging(|| {
            (0..5_000u32)
                .filter(|i| {
                    d.emit(
                        Bad {
                            src: IpAddr::from(i.to_be_bytes()),
                        },
                        &c,
                    )
                })
                .count()
        });
        assert_eq!(c.bad.load(Ordering::Relaxed), 5_000, "all counted");
        assert_eq!(
            logged, 50,
            "only as many sources as the limiter holds are logged"
        );
        assert_eq!(sink.lines("bad thing"), 50);
        assert_eq!(d.limiter().len(), 50, "memory stays at the capacity");
        assert_eq!(d.limiter().suppressed(), 4_950);
    }

    #[test]
    fn a_disabled_level_is_counted_and_takes_no_room() {
        let c = Counters::default();
        let d: Diag<IpAddr> = Diag::new(Duration::from_secs(600));
        let (logged, sink) = logging(|| d.emit(Quiet, &c));
        assert!(!logged);
        assert_eq!(sink.lines("quiet"), 0);
        assert_eq!(c.bad.load(Ordering::Relaxed), 1);
        assert!(d.limiter().is_empty());
    }

    /// A hostile name in a field or in the message never starts a line.
    #[test]
    fn hostile_names_leave_one_line_per_event() {
        let names = crate::hostile::names();
        let ((), sink) = logging(|| {
            for n in &names {
                tracing::warn!(host = %n, metric = ?n, name = n.as_str(), "seen {n}");
            }
        });
        let text = sink.text();
        assert_eq!(text.lines().count(), names.len(), "{text}");
        assert!(text.lines().all(|l| l.contains(" WARN ")), "{text}");
        assert!(!text.contains(['\r', '\0', '\u{1b}', '\u{2028}']), "{text}");
        assert!(text.contains("host=a\\nb"), "{text}");
    }
}

//! What the writer counts and tells the operator, as [`crate::diag`]
//! events: each knows its counter in [`StorageCounters`], its level, its
//! line and its [`LogKey`]. The writer's lines are limited to one per 10
//! minutes per key.

use super::metrics::{StorageCounters, reason};
use crate::diag::{self, Event, Level, LogAs, inc};
use ganglion_rrd::Cause;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How often one [`LogKey`] may be logged.
pub(super) const LOG_EVERY: Duration = Duration::from_secs(600);

/// What a log line is about, for the once-per-10-minutes limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum LogKey {
    /// The disk, the process's resources or the rrdcached connection: one
    /// line for all files failing the same way.
    Disk(Cause),
    /// One file.
    File(Cause, PathBuf),
    /// A metric whose DS type changed.
    TypeChange(String),
    /// The journal.
    Journal,
    /// Records of a journal that could not be replayed.
    JournalReplay,
    /// rrdcached FLUSH requests.
    CachedFlush,
}

/// A file write failed (`ganglion_rrd_write_errors_total{reason}`).
pub(super) struct WriteFailed<'a> {
    pub cause: Cause,
    pub path: &'a Path,
    pub error: &'a dyn std::fmt::Display,
    /// The disk (or rrdcached) is at fault, not the file: one line for
    /// every file failing the same way.
    pub shared: bool,
}

impl Event for WriteFailed<'_> {
    type Counters = StorageCounters;
    type Key = LogKey;
    const LEVEL: Level = Level::WARN;

    fn count(&self, c: &StorageCounters) {
        inc(c.write_errors.counter(self.cause));
    }

    fn log_as(&self) -> LogAs<LogKey> {
        LogAs::PerKey(if self.shared {
            LogKey::Disk(self.cause)
        } else {
            LogKey::File(self.cause, self.path.to_path_buf())
        })
    }

    fn log(&self, _: &StorageCounters) {
        let what = match self.cause {
            Cause::NoSpace => {
                "cannot write RRD files: no space left on the device; their samples stay cached \
                 and are retried at every flush (within retry_window_secs)"
            }
            Cause::ReadOnly => {
                "cannot write RRD files: read-only file system or no permission; their samples \
                 stay cached and are retried at every flush (within retry_window_secs)"
            }
            Cause::BadFile => {
                "not an RRD file this aggregator can update (foreign, truncated or corrupt, or \
                 other data sources); it is left untouched and its samples are discarded until \
                 it is repaired or removed"
            }
            Cause::Transient => {
                "cannot write RRD files for now (out of file descriptors or memory, or rrdcached \
                 not answering); their samples stay cached and journaled and are retried at \
                 every flush (within retry_window_secs)"
            }
            Cause::Other => "RRD write failed; the samples of this write are discarded",
        };
        diag::line!(
            Self::LEVEL,
            reason = reason(self.cause),
            file = %self.path.display(),
            error = %self.error,
            "{what} (logged once per 10 min; other files continue; counted in ganglion_rrd_write_errors_total)"
        );
    }
}

/// The journal could not be written (`ganglion_rrd_journal_errors_total`).
pub(super) struct JournalFailed<'a> {
    pub file: &'a Path,
    pub error: &'a std::io::Error,
}

impl Event for JournalFailed<'_> {
    type Counters = StorageCounters;
    type Key = LogKey;
    const LEVEL: Level = Level::WARN;

    fn count(&self, c: &StorageCounters) {
        inc(&c.journal_errors);
    }

    fn log_as(&self) -> LogAs<LogKey> {
        LogAs::PerKey(LogKey::Journal)
    }

    fn log(&self, _: &StorageCounters) {
        diag::line!(
            Self::LEVEL,
            file = %self.file.display(),
            error = %self.error,
            "cannot write the RRD journal; samples still go to their files at the next flush \
             but a crash before then loses them (logged once per 10 min)"
        );
    }
}

/// A series' DS type (slope) changed (`ganglion_rrd_type_changes_total`);
/// logged when it no longer matches its file's.
pub(super) struct TypeChanged<'a> {
    pub metric: &'a str,
    pub file_type: &'a str,
    pub new_type: &'a str,
}

impl Event for TypeChanged<'_> {
    type Counters = StorageCounters;
    type Key = LogKey;
    const LEVEL: Level = Level::WARN;

    fn count(&self, c: &StorageCounters) {
        inc(&c.type_changes);
    }

    fn log_as(&self) -> LogAs<LogKey> {
        if self.new_type == self.file_type {
            // Back to the file's own type: nothing to tell.
            LogAs::Skip
        } else {
            LogAs::PerKey(LogKey::TypeChange(self.metric.to_string()))
        }
    }

    fn log(&self, _: &StorageCounters) {
        diag::line!(
            Self::LEVEL,
            metric = %self.metric,
            file_type = %self.file_type,
            new_type = %self.new_type,
            "metric changed its RRD data-source type (slope); its samples keep going into \
             the existing files, which keep their type, as in gmetad; remove a file to \
             start it over (logged once per 10 min per metric)"
        );
    }
}

/// Journal records that could not be replayed: torn or damaged
/// (`ganglion_rrd_journal_bad_records_total`, one per record, and one for a
/// torn tail).
pub(super) struct JournalRecordsSkipped<'a> {
    pub file: &'a Path,
    pub bad_records: u64,
    pub torn_tail_bytes: u64,
}

impl Event for JournalRecordsSkipped<'_> {
    type Counters = StorageCounters;
    type Key = LogKey;
    const LEVEL: Level = Level::WARN;

    fn count(&self, c: &StorageCounters) {
        c.journal_bad_records.fetch_add(
            self.bad_records + u64::from(self.torn_tail_bytes > 0),
            Ordering::Relaxed,
        );
    }

    fn log_as(&self) -> LogAs<LogKey> {
        LogAs::PerKey(LogKey::JournalReplay)
    }

    fn log(&self, _: &StorageCounters) {
        diag::line!(
            Self::LEVEL,
            file = %self.file.display(),
            bad_records = self.bad_records,
            torn_tail_bytes = self.torn_tail_bytes,
            "RRD journal records skipped at replay (a torn last record from a crash \
             mid-append, or damaged ones); only complete records with a valid \
             checksum are replayed; counted in ganglion_rrd_journal_bad_records_total"
        );
    }
}

/// rrdcached refused or failed a `FLUSH` asked for a reader. Not counted on
/// its own: a connection at fault shows in the write errors it causes.
pub(super) struct CachedFlushFailed<'a> {
    pub daemon: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl Event for CachedFlushFailed<'_> {
    type Counters = StorageCounters;
    type Key = LogKey;
    const LEVEL: Level = Level::WARN;

    fn count(&self, _: &StorageCounters) {}

    fn log_as(&self) -> LogAs<LogKey> {
        LogAs::PerKey(LogKey::CachedFlush)
    }

    fn log(&self, _: &StorageCounters) {
        diag::line!(
            Self::LEVEL,
            daemon = self.daemon,
            error = %self.error,
            "rrdcached FLUSH failed; readers may not see its cached values yet \
             (logged once per 10 min)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Diag;
    use crate::diag::testing::logging;

    #[test]
    fn a_full_disk_is_one_key_however_many_files() {
        let c = StorageCounters::default();
        let d: Diag<LogKey> = Diag::new(LOG_EVERY);
        let e = std::io::Error::from_raw_os_error(28);
        let ((), sink) = logging(|| {
            for i in 0..100 {
                let path = PathBuf::from(format!("/r/c/h/m{i}.rrd"));
                d.emit(
                    WriteFailed {
                        cause: Cause::NoSpace,
                        path: &path,
                        error: &e,
                        shared: true,
                    },
                    &c,
                );
            }
            // A type change back to the file's type is counted, never logged.
            d.emit(
                TypeChanged {
                    metric: "m",
                    file_type: "GAUGE",
                    new_type: "GAUGE",
                },
                &c,
            );
        });
        assert_eq!(c.write_errors.get(Cause::NoSpace), 100);
        assert_eq!(
            sink.lines("no space left on the device"),
            1,
            "one key: the disk"
        );
        assert_eq!(c.type_changes.load(Ordering::Relaxed), 1);
        assert_eq!(sink.lines("data-source type"), 0);
    }
}

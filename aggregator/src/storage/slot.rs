//! One RRD file the writer knows, and its pending updates packed as librrd
//! takes them (`T:v[:v]\0…`, strictly increasing times).

use ganglion_rrd::Cause;
use std::path::Path;
use std::sync::Arc;

/// One RRD file the writer knows. A series that stops keeps its slot until
/// it has been idle, with nothing pending, for longer than the retry window
/// (see `Writer::evict_idle`), so a churning sender cannot grow the writer's
/// tables without bound.
pub(super) struct Slot {
    pub(super) path: Arc<Path>,
    /// DS type the file is (or will be) created with: the first one seen.
    pub(super) ds_type: &'static str,
    /// DS type of the latest sample (a change is counted once, not per sample).
    pub(super) seen_type: &'static str,
    pub(super) step: u32,
    pub(super) dss: u8,
    /// Newest sample accepted; later ones must be newer.
    pub(super) last_time: u64,
    /// Updates not yet written, each `T:v[:v]` and a NUL, as librrd takes
    /// them ([`ganglion_rrd::update_packed`]): no string per sample.
    pub(super) pending: Vec<u8>,
    /// The file's last update as of our last write to it, so steady-state
    /// writes need not ask librrd (`rrd_last` opens the file as an update
    /// does). `None` until known, and again after any failure.
    pub(super) on_disk: Option<u64>,
    /// Why the last write of this file failed, until one works again.
    pub(super) failing: Option<Cause>,
    /// The journal generation whose definition line names this slot.
    pub(super) journal_gen: u64,
    /// Wall-clock second a sample for it last arrived (or it was made).
    pub(super) last_seen: u64,
}

impl Slot {
    /// A slot for a file not written yet by this run.
    pub(super) fn new(
        path: Arc<Path>,
        ds_type: &'static str,
        step: u32,
        dss: u8,
        now: u64,
    ) -> Slot {
        Slot {
            path,
            ds_type,
            seen_type: ds_type,
            step,
            dss,
            last_time: 0,
            pending: Vec::new(),
            on_disk: None,
            failing: None,
            journal_gen: 0,
            last_seen: now,
        }
    }

    /// Caches one update, unless it is not newer than the last.
    pub(super) fn push_update(&mut self, time: u64, values: &str) -> bool {
        // RRD updates must move forward in time (gmetad logs "minimum one
        // second step" floods here; we skip quietly).
        if time <= self.last_time {
            return false;
        }
        self.last_time = time;
        let mut t = itoa::Buffer::new();
        self.pending.extend_from_slice(t.format(time).as_bytes());
        self.pending.push(b':');
        self.pending.extend_from_slice(values.as_bytes());
        self.pending.push(0);
        true
    }
}

/// The packed updates in `buf` (see [`Slot::pending`]).
pub(super) fn entries(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    buf.split(|&b| b == 0).filter(|e| !e.is_empty())
}

/// Time of one packed `T:v[:v]` update.
pub(super) fn entry_time(e: &[u8]) -> u64 {
    let t = e.split(|&b| b == b':').next().unwrap_or(b"");
    std::str::from_utf8(t)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_packed_in_strictly_increasing_time() {
        let mut s = Slot::new(Arc::from(Path::new("/r/a.rrd")), "GAUGE", 15, 1, 0);
        assert!(s.push_update(1000, "1.5"));
        assert!(!s.push_update(1000, "2"), "not newer");
        assert!(!s.push_update(990, "2"), "older");
        assert!(s.push_update(1015, "U"));
        assert_eq!(s.pending, b"1000:1.5\x001015:U\x00");
        let got: Vec<u64> = entries(&s.pending).map(entry_time).collect();
        assert_eq!(got, [1000, 1015]);
    }
}

//! One file's rows, read in bounded windows.
//!
//! librrd's `rrd_fetch_r` returns a whole range in one allocation, so a year
//! of 15 s rows from a thousand files would be held at once. A [`Reader`]
//! instead plans the fetch from `rrdtool info` ([`ganglion_rrd::plan`]: the
//! same RRA librrd would choose for the whole range), and then fetches windows
//! of that RRA as the export walks forward in time. Every window is asked for
//! with the chosen RRA's own step and a start inside the RRA, for which librrd
//! can only choose that RRA again; the answer's step and bounds are checked
//! anyway. Rows older than the RRA are NaN, as in a whole fetch.
//!
//! Short ranges, files whose header cannot be planned, and files with two
//! eligible RRAs of the same step (where librrd's choice for a window could
//! differ from its choice for the range) are fetched whole, exactly as before.

use crate::Cf;
use ganglion_rrd::plan::{FetchPlan, Header};
use ganglion_rrd::{Fetched, RrdError};
use std::path::{Path, PathBuf};

/// Rows of one file over the adjusted range `(start, end]` at `step`.
pub(crate) struct Reader {
    path: PathBuf,
    cf: Cf,
    /// Adjusted start (rows are the steps ending after it).
    pub(crate) start: i64,
    /// Adjusted end.
    pub(crate) end: i64,
    /// Step of the chosen RRA.
    pub(crate) step: u64,
    /// Data-source names.
    pub(crate) ds_names: Vec<String>,
    /// `None` when `win` holds the whole range.
    chunked: Option<Chunked>,
    /// Index of the first row held in `win`.
    win_first: usize,
    /// Row-major values of the rows held.
    win: Vec<f64>,
}

struct Chunked {
    rra: usize,
    /// Rows ending at or before this time lie outside the RRA (NaN).
    covered_from: i64,
    window_rows: usize,
}

impl Reader {
    /// Opens `path` for `(cf, start, end, resolution)`, holding at most about
    /// `window_rows` rows at a time.
    pub(crate) fn open(
        path: &Path,
        cf: Cf,
        start: i64,
        end: i64,
        resolution: Option<u64>,
        window_rows: usize,
    ) -> Result<Reader, RrdError> {
        let window_rows = window_rows.max(1);
        let res = resolution.unwrap_or(1).max(1);
        // A range of at most `window_rows` seconds has at most that many rows
        // plus one at any step: no need to read the header first.
        if end.saturating_sub(start) > window_rows as i64
            && let Some(r) = Self::plan(path, cf, start, end, res, window_rows)
        {
            return Ok(r);
        }
        Ok(Self::from_fetched(
            path,
            cf,
            ganglion_rrd::fetch(path, cf.as_str(), start, end, res)?,
        ))
    }

    fn plan(
        path: &Path,
        cf: Cf,
        start: i64,
        end: i64,
        res: u64,
        window_rows: usize,
    ) -> Option<Reader> {
        // Any failure here (not an RRD, unreadable…) falls back to the whole
        // fetch, which reports librrd's own error for the file.
        let h = Header::from_info(&ganglion_rrd::info(path).ok()?)?;
        let p = FetchPlan::new(&h, cf.as_str(), start, end, res)?;
        if p.ambiguous || h.ds_names.is_empty() || p.rows() <= window_rows as u64 {
            return None;
        }
        Some(Reader {
            path: path.to_path_buf(),
            cf,
            start: p.start,
            end: p.end,
            step: p.step,
            ds_names: h.ds_names,
            chunked: Some(Chunked {
                rra: p.rra,
                covered_from: p.covered_from,
                window_rows,
            }),
            win_first: 0,
            win: Vec::new(),
        })
    }

    /// A reader over an already fetched range.
    pub(crate) fn from_fetched(path: &Path, cf: Cf, f: Fetched) -> Reader {
        Reader {
            path: path.to_path_buf(),
            cf,
            start: f.start,
            end: f.end,
            step: f.step,
            ds_names: f.ds_names,
            chunked: None,
            win_first: 0,
            win: f.data,
        }
    }

    /// Rows ending at or before this time are NaN without reading (they lie
    /// before the RRA's oldest row). A whole fetch is not known to be: its
    /// start.
    pub(crate) fn data_from(&self) -> i64 {
        match &self.chunked {
            Some(c) => c.covered_from.max(self.start),
            None => self.start,
        }
    }

    /// Rows in the whole range.
    pub(crate) fn rows(&self) -> usize {
        ((self.end - self.start) / self.step as i64).max(0) as usize
    }

    /// Makes rows `lo..hi` available to [`Reader::value`]. Rows are read
    /// forward: a window starts at `lo`.
    pub(crate) fn ensure(&mut self, lo: usize, hi: usize) -> Result<(), RrdError> {
        let Some(c) = &self.chunked else {
            return Ok(());
        };
        let n = self.ds_names.len();
        let held = self.win.len() / n;
        if lo >= self.win_first && hi <= self.win_first + held {
            return Ok(());
        }
        let last = (lo + c.window_rows.max(hi - lo)).min(self.rows());
        self.load(lo, last)
    }

    fn load(&mut self, lo: usize, hi: usize) -> Result<(), RrdError> {
        let Some(c) = &mut self.chunked else {
            return Ok(());
        };
        let n = self.ds_names.len();
        let s = self.step as i64;
        let (a, b) = (self.start + lo as i64 * s, self.start + hi as i64 * s);
        self.win.clear();
        self.win_first = lo;
        let mut from = a.max(c.covered_from);
        // The file may be updated while we read it; when the RRA has moved on
        // so far that its oldest rows (which we planned to read) are gone,
        // librrd picks another RRA for the window. The step check sees it;
        // the header is read again and the lost rows become NaN, as a fresh
        // whole fetch would show them.
        for _ in 0..4 {
            if from >= b {
                break;
            }
            // end = b - 1 so that librrd widens it to exactly b.
            let f = ganglion_rrd::fetch(&self.path, self.cf.as_str(), from, b - 1, self.step)?;
            if f.step == self.step && f.start == from && f.end == b && f.ds_names.len() == n {
                self.win.resize(((from - a) / s) as usize * n, f64::NAN);
                self.win.extend_from_slice(&f.data);
                return Ok(());
            }
            let h = Header::from_info(&ganglion_rrd::info(&self.path)?)
                .filter(|h| c.rra < h.rras.len() && h.rra_step(c.rra) == self.step)
                .ok_or_else(|| changed(&self.path))?;
            c.covered_from = h.rra_cal_start(c.rra);
            let next = from.max(c.covered_from);
            if next == from {
                return Err(changed(&self.path));
            }
            from = next;
        }
        self.win.clear();
        self.win.resize((hi - lo) * n, f64::NAN);
        Ok(())
    }

    /// Value of row `i`, data source `d` (after [`Reader::ensure`]).
    pub(crate) fn value(&self, i: usize, d: usize) -> f64 {
        let n = self.ds_names.len();
        i.checked_sub(self.win_first)
            .and_then(|k| self.win.get(k * n + d))
            .copied()
            .unwrap_or(f64::NAN)
    }
}

fn changed(path: &Path) -> RrdError {
    RrdError::Librrd {
        op: "fetch",
        path: path.display().to_string(),
        message: "the file's layout changed while it was being exported".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, rras: &[&str]) -> PathBuf {
        let p = dir.join("f.rrd");
        let mut defs = vec!["DS:sum:GAUGE:80:U:U".to_string()];
        defs.extend(rras.iter().map(|r| r.to_string()));
        ganglion_rrd::create(&p, 10, 1_000_000, &defs).unwrap();
        let ups: Vec<String> = (1..=500)
            .map(|k| format!("{}:{k}", 1_000_000 + k * 10))
            .collect();
        ganglion_rrd::update(&p, &ups).unwrap();
        p
    }

    #[test]
    fn long_ranges_are_windowed_unless_ambiguous() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(
            dir.path(),
            &["RRA:AVERAGE:0.5:1:100", "RRA:AVERAGE:0.5:5:60"],
        );
        let (s, e) = (1_000_000, 1_005_000);
        let mut r = Reader::open(&p, Cf::Average, s, e, None, 8).unwrap();
        assert!(r.chunked.is_some());
        assert_eq!(r.step, 50);
        let whole = ganglion_rrd::fetch(&p, "AVERAGE", s, e, 1).unwrap();
        assert_eq!(
            (r.start, r.end, r.rows()),
            (whole.start, whole.end, whole.rows())
        );
        for i in 0..r.rows() {
            r.ensure(i, i + 1).unwrap();
            assert!(r.win.len() <= 8, "window holds at most 8 rows");
            let (a, b) = (r.value(i, 0), whole.data[i]);
            assert!(a == b || (a.is_nan() && b.is_nan()), "row {i}: {a} vs {b}");
        }
        // Short range, or a window as large as the range: one whole fetch.
        assert!(
            Reader::open(&p, Cf::Average, s, e, None, 1000)
                .unwrap()
                .chunked
                .is_none()
        );
        // Two eligible RRAs with the same step: fetched whole.
        let p = file(dir.path(), &["RRA:AVERAGE:0.5:1:100", "RRA:MAX:0.5:1:100"]);
        assert!(
            Reader::open(&p, Cf::Max, s, e, None, 8)
                .unwrap()
                .chunked
                .is_none()
        );
    }
}

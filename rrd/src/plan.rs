//! Which RRA `rrd_fetch` reads, computed from `rrdtool info` without fetching.
//!
//! `rrd_fetch_r` returns a whole range in one allocation. To read a long range
//! in bounded memory, a caller splits it into windows; each window is a
//! separate `rrd_fetch_r` call, and librrd chooses the RRA again for every
//! call. [`FetchPlan::new`] reproduces librrd 1.7's choice (`rrd_fetch_fn` in
//! rrdtool's `src/rrd_fetch.c`) for the whole range, so windows can be asked
//! for with exactly that RRA's resolution and checked against it:
//!
//! - eligible RRAs: the requested CF, or any of AVERAGE/MIN/MAX/LAST when both
//!   the request and the RRA are one of those and the RRA has one PDP per row;
//! - an RRA "fully matches" when its oldest row starts at or before the
//!   requested start (the end is not checked); among those, the smallest
//!   |requested resolution − RRA step| wins, the first on ties;
//! - otherwise the RRA covering most of the range wins, ties broken by the
//!   step difference, then by order;
//! - the range is then widened to the chosen step: start down to a multiple,
//!   end up to the next multiple (an aligned end gains one step).

use crate::InfoValue;

/// One RRA's shape as `rrdtool info` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RraShape {
    /// Consolidation function name (`AVERAGE`, `MAX`…).
    pub cf: String,
    /// Rows.
    pub rows: u64,
    /// PDPs per row.
    pub pdp_per_row: u64,
}

/// The header facts the RRA choice depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Base step (seconds per PDP).
    pub step: u64,
    /// Time of the last update.
    pub last_update: i64,
    /// Data-source names in file order.
    pub ds_names: Vec<String>,
    /// RRAs in file order.
    pub rras: Vec<RraShape>,
}

impl Header {
    /// Extracts the header from `rrdtool info` pairs; `None` when a key is
    /// missing or has an unexpected type (the caller then fetches whole).
    pub fn from_info(info: &[(String, InfoValue)]) -> Option<Header> {
        let num = |v: &InfoValue| match v {
            InfoValue::Count(c) => Some(*c as i64),
            InfoValue::Int(i) => Some(*i),
            _ => None,
        };
        let mut step = None;
        let mut last = None;
        let mut ds: Vec<(i64, String)> = Vec::new();
        let mut rras: Vec<(Option<String>, Option<u64>, Option<u64>)> = Vec::new();
        for (k, v) in info {
            if k == "step" {
                step = num(v);
            } else if k == "last_update" {
                last = num(v);
            } else if let Some(rest) = k.strip_prefix("ds[") {
                if let Some(name) = rest.strip_suffix("].index") {
                    ds.push((num(v)?, name.to_string()));
                }
            } else if let Some(rest) = k.strip_prefix("rra[") {
                let (idx, field) = rest.split_once("].")?;
                let idx: usize = idx.parse().ok()?;
                if rras.len() <= idx {
                    rras.resize(idx + 1, (None, None, None));
                }
                match (field, v) {
                    ("cf", InfoValue::Str(s)) => rras[idx].0 = Some(s.clone()),
                    ("rows", v) => rras[idx].1 = Some(num(v)? as u64),
                    ("pdp_per_row", v) => rras[idx].2 = Some(num(v)? as u64),
                    _ => {}
                }
            }
        }
        ds.sort();
        let rras = rras
            .into_iter()
            .map(|(cf, rows, pdp)| {
                Some(RraShape {
                    cf: cf?,
                    rows: rows?,
                    pdp_per_row: pdp?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let step = u64::try_from(step?).ok().filter(|s| *s > 0)?;
        if rras.is_empty() || rras.iter().any(|r| r.rows == 0 || r.pdp_per_row == 0) {
            return None;
        }
        Some(Header {
            step,
            last_update: last?,
            ds_names: ds.into_iter().map(|(_, n)| n).collect(),
            rras,
        })
    }

    /// Step of RRA `i` in seconds (saturating: the numbers come from a file).
    pub fn rra_step(&self, i: usize) -> u64 {
        self.step.saturating_mul(self.rras[i].pdp_per_row)
    }

    /// [`Header::rra_step`] as a time difference, at least 1.
    fn rra_step_secs(&self, i: usize) -> i64 {
        i64::try_from(self.rra_step(i)).unwrap_or(i64::MAX).max(1)
    }

    /// Start of the time covered by RRA `i` ("cal_start"): its rows hold the
    /// steps ending after this time, up to the last update. Saturates.
    pub fn rra_cal_start(&self, i: usize) -> i64 {
        let s = self.rra_step_secs(i);
        // Truncating `%`, as librrd: never leaves the range of a time.
        let cal_end = self.last_update - self.last_update % s;
        let rows = i64::try_from(self.rras[i].rows).unwrap_or(i64::MAX);
        cal_end.saturating_sub(s.saturating_mul(rows))
    }

    /// Whether RRA `i` can answer a request for `cf`.
    pub fn eligible(&self, i: usize, cf: &str) -> bool {
        const SIMPLE: [&str; 4] = ["AVERAGE", "MIN", "MAX", "LAST"];
        let r = &self.rras[i];
        r.cf == cf
            || (r.pdp_per_row == 1 && SIMPLE.contains(&cf) && SIMPLE.contains(&r.cf.as_str()))
    }

    /// The RRA librrd's fetch would read for `(cf, start, end, resolution)`,
    /// or `None` when no RRA is eligible (librrd then fails).
    pub fn choose(&self, cf: &str, start: i64, end: i64, resolution: u64) -> Option<usize> {
        let mut best_full: Option<(usize, i64)> = None;
        let mut best_part: Option<(usize, i64, i64)> = None;
        for i in 0..self.rras.len() {
            if !self.eligible(i, cf) {
                continue;
            }
            let cal_start = self.rra_cal_start(i);
            let res = i64::try_from(resolution).unwrap_or(i64::MAX);
            let diff = res.saturating_sub(self.rra_step_secs(i)).saturating_abs();
            if cal_start <= start {
                if best_full.is_none_or(|(_, d)| diff < d) {
                    best_full = Some((i, diff));
                }
            } else {
                let covered = end
                    .saturating_sub(start)
                    .saturating_sub(cal_start.saturating_sub(start));
                if best_part.is_none_or(|(_, m, d)| m < covered || (m == covered && diff < d)) {
                    best_part = Some((i, covered, diff));
                }
            }
        }
        best_full.map(|(i, _)| i).or(best_part.map(|(i, _, _)| i))
    }
}

/// How a fetch of `(cf, start, end, resolution)` resolves: the RRA, its step,
/// and the range widened as librrd widens it. Rows are the steps ending in
/// `(start, end]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPlan {
    /// Index of the chosen RRA.
    pub rra: usize,
    /// Its step.
    pub step: u64,
    /// Widened start.
    pub start: i64,
    /// Widened end.
    pub end: i64,
    /// Rows before this time are outside the RRA and read as NaN ("cal_start").
    pub covered_from: i64,
    /// Whether another eligible RRA has the same step. librrd could then pick
    /// a different (same-step) RRA for a window than for the whole range, so
    /// such files must be fetched whole.
    pub ambiguous: bool,
}

impl FetchPlan {
    /// Plans a fetch; `None` when librrd would fail (no eligible RRA), or
    /// when the widened range does not fit a time (a client's `end` near
    /// the largest time), or `end` is before `start`.
    pub fn new(h: &Header, cf: &str, start: i64, end: i64, resolution: u64) -> Option<FetchPlan> {
        if end < start {
            return None;
        }
        let rra = h.choose(cf, start, end, resolution.max(1))?;
        let step = h.rra_step(rra);
        let s = h.rra_step_secs(rra);
        let ambiguous =
            (0..h.rras.len()).any(|j| j != rra && h.rra_step(j) == step && h.eligible(j, cf));
        // librrd's `start - start % s` and `end + (s - end % s)` (C's `%`
        // truncates toward zero, as Rust's does), checked.
        let start = start.checked_sub(start % s)?;
        let end = end.checked_add(s.checked_sub(end % s)?)?;
        Some(FetchPlan {
            rra,
            step,
            start,
            end,
            covered_from: h.rra_cal_start(rra),
            ambiguous,
        })
    }

    /// Number of rows the whole fetch returns (0 for an empty or inverted
    /// range; saturating).
    pub fn rows(&self) -> u64 {
        let span = self.end.saturating_sub(self.start).max(0) as u64;
        span / self.step.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gmetad_like(last_update: i64) -> Header {
        Header {
            step: 15,
            last_update,
            ds_names: vec!["sum".into()],
            rras: vec![
                RraShape {
                    cf: "AVERAGE".into(),
                    rows: 5856,
                    pdp_per_row: 1,
                },
                RraShape {
                    cf: "AVERAGE".into(),
                    rows: 20160,
                    pdp_per_row: 4,
                },
                RraShape {
                    cf: "AVERAGE".into(),
                    rows: 52704,
                    pdp_per_row: 40,
                },
            ],
        }
    }

    #[test]
    fn full_match_prefers_the_closest_step_and_partial_the_widest_cover() {
        let h = gmetad_like(1_700_000_000);
        let now = 1_700_000_000;
        // A day: the 15 s RRA covers it (5856 × 15 s ≈ 24.4 h).
        assert_eq!(h.choose("AVERAGE", now - 86_400, now, 1), Some(0));
        // A week: only the 60 s and 600 s RRAs; the closest step to 1 s wins.
        assert_eq!(h.choose("AVERAGE", now - 7 * 86_400, now, 1), Some(1));
        // Asking for 600 s picks the coarse one even for a day.
        assert_eq!(h.choose("AVERAGE", now - 86_400, now, 600), Some(2));
        // Ten years: nothing covers it; the 600 s RRA covers most.
        assert_eq!(h.choose("AVERAGE", now - 3650 * 86_400, now, 1), Some(2));
        // No MAX RRA and no MAX request is simple-eligible for pdp>1, but the
        // pdp=1 AVERAGE RRA serves MAX requests as librrd does.
        assert_eq!(h.choose("MAX", now - 7 * 86_400, now, 1), Some(0));
        assert_eq!(h.choose("HWPREDICT", now - 60, now, 1), None);
    }

    #[test]
    fn plan_widens_like_librrd() {
        let h = gmetad_like(1_000_000);
        let p = FetchPlan::new(&h, "AVERAGE", 999_007, 999_990, 1).unwrap();
        assert_eq!((p.rra, p.step), (0, 15));
        // The start goes down to a multiple of 15; the end, already one,
        // gains a step.
        assert_eq!((p.start, p.end), (999_000, 1_000_005));
        assert_eq!(p.rows(), 67);
        assert!(!p.ambiguous);
    }

    #[test]
    fn header_from_info_pairs() {
        let info = vec![
            ("filename".to_string(), InfoValue::Str("x.rrd".into())),
            ("step".into(), InfoValue::Count(15)),
            ("last_update".into(), InfoValue::Count(1000)),
            ("ds[num].index".into(), InfoValue::Count(1)),
            ("ds[sum].index".into(), InfoValue::Count(0)),
            ("rra[0].cf".into(), InfoValue::Str("AVERAGE".into())),
            ("rra[0].rows".into(), InfoValue::Count(10)),
            ("rra[0].cur_row".into(), InfoValue::Count(3)),
            ("rra[0].pdp_per_row".into(), InfoValue::Count(1)),
        ];
        let h = Header::from_info(&info).unwrap();
        assert_eq!(h.ds_names, vec!["sum", "num"]);
        assert_eq!(h.rras.len(), 1);
        assert_eq!((h.step, h.last_update), (15, 1000));
        assert!(Header::from_info(&info[..3]).is_none());
    }

    /// Times and counts at the edges of their types plan without a panic
    /// or a wrapped (negative) range: either a plan or `None`.
    #[test]
    fn extreme_times_and_counts_never_overflow() {
        let mut headers = vec![
            gmetad_like(1_700_000_000),
            gmetad_like(i64::MAX),
            gmetad_like(i64::MIN),
        ];
        let mut huge = gmetad_like(1_700_000_000);
        huge.step = u64::MAX;
        huge.rras[0].rows = u64::MAX;
        huge.rras[1].pdp_per_row = u64::MAX;
        headers.push(huge);
        let times = [
            i64::MIN,
            i64::MIN + 1,
            -1,
            0,
            1,
            1_700_000_000,
            i64::MAX - 1,
            i64::MAX,
        ];
        for h in &headers {
            for i in 0..h.rras.len() {
                let _ = (h.rra_step(i), h.rra_cal_start(i));
            }
            for &start in &times {
                for &end in &times {
                    for res in [0, 1, 15, u64::MAX] {
                        if let Some(p) = FetchPlan::new(h, "AVERAGE", start, end, res) {
                            // (C's `%` truncates, so a negative start
                            // rounds up, as in librrd.)
                            assert!(p.end > end && (start < 0 || p.start <= start), "{p:?}");
                            let _ = p.rows();
                        }
                    }
                }
            }
        }
        // The daemon's case: a client's end near the largest time.
        let h = gmetad_like(1_700_000_000);
        assert_eq!(FetchPlan::new(&h, "AVERAGE", 0, i64::MAX, 1), None);
    }
}

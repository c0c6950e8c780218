//! Threshold ranges in the monitoring-plugins syntax, and the four plugin
//! states they decide.
//!
//! The syntax (monitoring-plugins' developer guidelines, "Threshold and
//! ranges") is what every Nagios and Icinga user already writes in `-w`/`-c`:
//!
//! | text      | raises the threshold when the value is … |
//! |-----------|-------------------------------------------|
//! | `10`      | `< 0` or `> 10` (the range is `0..=10`)   |
//! | `10:`     | `< 10`                                    |
//! | `~:10`    | `> 10` (`~` is minus infinity)            |
//! | `10:20`   | `< 10` or `> 20`                          |
//! | `@10:20`  | `>= 10` and `<= 20` (inside, endpoints included) |
//!
//! Endpoints are inclusive; a start above the end, an empty text, or a
//! number that is not finite is an error naming what was wrong. Both the
//! aggregator's alert rules and `check_ganglion` parse with this one module,
//! so a threshold means the same thing in the config and on the command line.

use std::fmt;
use std::str::FromStr;

/// A parsed threshold range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// Lower endpoint, `f64::NEG_INFINITY` for `~`.
    start: f64,
    /// Upper endpoint, `f64::INFINITY` when omitted (`10:`).
    end: f64,
    /// `@`: the threshold is raised *inside* the range instead of outside.
    inside: bool,
}

/// Why a range text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Nothing to parse.
    #[error("empty range")]
    Empty,
    /// An endpoint that is not a finite number.
    #[error("{0:?} is not a finite number")]
    BadNumber(String),
    /// `start:end` with `start > end`.
    #[error("range start {start} is above its end {end}")]
    StartAboveEnd {
        /// The start as written.
        start: String,
        /// The end as written.
        end: String,
    },
}

fn number(text: &str) -> Result<f64, RangeError> {
    let t = text.trim();
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(RangeError::BadNumber(t.to_string())),
    }
}

impl Range {
    /// Parses `10`, `10:`, `~:10`, `10:20` or `@10:20` (see the module docs).
    pub fn parse(text: &str) -> Result<Range, RangeError> {
        let t = text.trim();
        let (inside, body) = match t.strip_prefix('@') {
            Some(rest) => (true, rest.trim()),
            None => (false, t),
        };
        if body.is_empty() {
            return Err(RangeError::Empty);
        }
        let (start, end) = match body.split_once(':') {
            None => (0.0, number(body)?),
            Some((s, e)) => {
                let start = match s.trim() {
                    "~" => f64::NEG_INFINITY,
                    "" => 0.0,
                    other => number(other)?,
                };
                let end = if e.trim().is_empty() {
                    f64::INFINITY
                } else {
                    number(e)?
                };
                if start > end {
                    return Err(RangeError::StartAboveEnd {
                        start: s.trim().to_string(),
                        end: e.trim().to_string(),
                    });
                }
                (start, end)
            }
        };
        Ok(Range { start, end, inside })
    }

    /// True when `value` raises this threshold. A value that is not a number
    /// never does: callers report it as UNKNOWN (see [`classify`]).
    pub fn alerts(&self, value: f64) -> bool {
        if value.is_nan() {
            return false;
        }
        let within = value >= self.start && value <= self.end;
        if self.inside { within } else { !within }
    }

    /// Lower endpoint (`-inf` for `~`).
    pub fn start(&self) -> f64 {
        self.start
    }

    /// Upper endpoint (`+inf` when open).
    pub fn end(&self) -> f64 {
        self.end
    }

    /// Whether the range alerts inside (`@`).
    pub fn inside(&self) -> bool {
        self.inside
    }
}

impl FromStr for Range {
    type Err = RangeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Range::parse(s)
    }
}

/// The canonical text: `0:N` is written `N`; it parses back to an equal range.
impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.inside {
            f.write_str("@")?;
        }
        if self.start == 0.0 && self.end.is_finite() {
            return write!(f, "{}", self.end);
        }
        if self.start == f64::NEG_INFINITY {
            f.write_str("~:")?;
        } else {
            write!(f, "{}:", self.start)?;
        }
        if self.end.is_finite() {
            write!(f, "{}", self.end)?;
        }
        Ok(())
    }
}

/// A plugin state, with Nagios' exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// 0.
    Ok = 0,
    /// 1.
    Warning = 1,
    /// 2.
    Critical = 2,
    /// 3: the check could not decide (metric missing, stale, not a number).
    Unknown = 3,
}

impl Status {
    /// Nagios' code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (also a plugin's exit status).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The state from its code; `None` above 3.
    pub fn from_code(code: u8) -> Option<Status> {
        match code {
            0 => Some(Status::Ok),
            1 => Some(Status::Warning),
            2 => Some(Status::Critical),
            3 => Some(Status::Unknown),
            _ => None,
        }
    }

    /// `OK`, `WARNING`, `CRITICAL` or `UNKNOWN`, as Nagios prints them.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }

    /// Parses the upper-case name back (`"WARNING"` → `Warning`).
    pub fn from_name(name: &str) -> Option<Status> {
        match name {
            "OK" => Some(Status::Ok),
            "WARNING" => Some(Status::Warning),
            "CRITICAL" => Some(Status::Critical),
            "UNKNOWN" => Some(Status::Unknown),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of `value` against optional thresholds, critical checked first
/// (as `check_*` plugins do). A value that is not finite is UNKNOWN.
pub fn classify(value: f64, warning: Option<&Range>, critical: Option<&Range>) -> Status {
    if !value.is_finite() {
        return Status::Unknown;
    }
    if critical.is_some_and(|r| r.alerts(value)) {
        Status::Critical
    } else if warning.is_some_and(|r| r.alerts(value)) {
        Status::Warning
    } else {
        Status::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(s: &str) -> Range {
        Range::parse(s).unwrap()
    }

    /// The guidelines' table, value by value.
    #[test]
    fn guideline_table() {
        let cases: &[(&str, &[(f64, bool)])] = &[
            (
                "10",
                &[(-0.5, true), (0.0, false), (10.0, false), (10.1, true)],
            ),
            ("10:", &[(9.9, true), (10.0, false), (1e300, false)]),
            ("~:10", &[(-1e300, false), (10.0, false), (10.01, true)]),
            (
                "10:20",
                &[(9.0, true), (10.0, false), (20.0, false), (21.0, true)],
            ),
            (
                "@10:20",
                &[(9.0, false), (10.0, true), (20.0, true), (21.0, false)],
            ),
            (":5", &[(-1.0, true), (5.0, false), (6.0, true)]),
            ("@~:0", &[(-3.0, true), (0.0, true), (0.5, false)]),
            ("-5:-1", &[(-6.0, true), (-3.0, false), (0.0, true)]),
            ("1.5e1", &[(15.0, false), (15.5, true)]),
        ];
        for (text, values) in cases {
            let range = r(text);
            for (v, want) in *values {
                assert_eq!(range.alerts(*v), *want, "{text} with {v}");
            }
            assert!(!range.alerts(f64::NAN), "{text}: NaN never alerts");
        }
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(Range::parse(""), Err(RangeError::Empty));
        assert_eq!(Range::parse("@"), Err(RangeError::Empty));
        assert!(matches!(Range::parse("abc"), Err(RangeError::BadNumber(t)) if t == "abc"));
        assert!(matches!(Range::parse("1:x"), Err(RangeError::BadNumber(_))));
        assert!(matches!(Range::parse("inf"), Err(RangeError::BadNumber(_))));
        assert!(matches!(
            Range::parse("NaN:"),
            Err(RangeError::BadNumber(_))
        ));
        assert!(matches!(Range::parse("~"), Err(RangeError::BadNumber(_))));
        assert!(matches!(
            Range::parse("20:10"),
            Err(RangeError::StartAboveEnd { .. })
        ));
        assert_eq!(
            Range::parse("20:10").unwrap_err().to_string(),
            "range start 20 is above its end 10"
        );
    }

    #[test]
    fn display_is_canonical() {
        for (text, shown) in [
            ("10", "10"),
            ("0:10", "10"),
            ("10:", "10:"),
            ("~:10", "~:10"),
            ("@10:20", "@10:20"),
            (" 2.5 : 3 ", "2.5:3"),
            ("~:", "~:"),
        ] {
            assert_eq!(r(text).to_string(), shown, "{text}");
        }
    }

    #[test]
    fn classify_checks_critical_first() {
        let w = r("4");
        let c = r("8");
        assert_eq!(classify(3.0, Some(&w), Some(&c)), Status::Ok);
        assert_eq!(classify(5.0, Some(&w), Some(&c)), Status::Warning);
        assert_eq!(classify(9.0, Some(&w), Some(&c)), Status::Critical);
        // A critical range that contains the warning one still wins.
        assert_eq!(
            classify(9.0, Some(&r("5")), Some(&r("@9:10"))),
            Status::Critical
        );
        assert_eq!(classify(f64::NAN, Some(&w), Some(&c)), Status::Unknown);
        assert_eq!(classify(f64::INFINITY, None, None), Status::Unknown);
        assert_eq!(classify(1e9, None, None), Status::Ok);
        for s in [
            Status::Ok,
            Status::Warning,
            Status::Critical,
            Status::Unknown,
        ] {
            assert_eq!(Status::from_code(s.code()), Some(s));
            assert_eq!(Status::from_name(s.as_str()), Some(s));
        }
        assert_eq!(Status::from_code(4), None);
    }

    proptest! {
        /// Display then parse gives the same range, whatever was parsed.
        #[test]
        fn display_round_trips(a in -1e6f64..1e6, b in -1e6f64..1e6, kind in 0u8..5, inside: bool) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let body = match kind {
                0 => format!("{}", hi.abs()),
                1 => format!("{lo}:"),
                2 => format!("~:{hi}"),
                3 => format!("{lo}:{hi}"),
                _ => "~:".to_string(),
            };
            let text = if inside { format!("@{body}") } else { body };
            let parsed = r(&text);
            prop_assert_eq!(Range::parse(&parsed.to_string()), Ok(parsed));
        }

        /// Parsing arbitrary text never panics.
        #[test]
        fn parse_never_panics(s in ".{0,24}") {
            let _ = Range::parse(&s);
        }
    }
}

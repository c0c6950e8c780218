//! Performance data as the guidelines define it:
//! `'label'=value[UOM];[warn];[crit];[min];[max]`, space separated.

use ganglion_proto::range::Range;
use std::fmt::Write;

/// One performance-data item.
#[derive(Debug, Clone, PartialEq)]
pub struct Perf {
    /// Label (quoted on output).
    pub label: String,
    /// Value; `None` (or not finite) prints `U`.
    pub value: Option<f64>,
    /// Unit of measure, one the guidelines allow (see [`uom`]).
    pub uom: &'static str,
    /// Warning range.
    pub warning: Option<Range>,
    /// Critical range.
    pub critical: Option<Range>,
    /// Minimum.
    pub min: Option<f64>,
    /// Maximum.
    pub max: Option<f64>,
}

/// The guidelines' unit for a Ganglia unit string, or "" (perfdata then
/// carries a plain number; the unit still shows in the text).
pub fn uom(units: &str) -> &'static str {
    match units.trim() {
        "%" => "%",
        "s" | "sec" | "secs" | "seconds" => "s",
        "ms" => "ms",
        "us" => "us",
        "B" | "bytes" | "Bytes" => "B",
        "KB" | "kB" => "KB",
        "MB" => "MB",
        "GB" => "GB",
        "TB" => "TB",
        _ => "",
    }
}

/// A number as perfdata wants it: digits, `-` and `.` only (no exponent),
/// `U` when undeterminable.
pub fn number(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => {
            // Display of f64 never uses an exponent; round away float noise.
            let r = (x * 1e6).round() / 1e6;
            if r.abs() < 1e15 {
                format!("{r}")
            } else {
                format!("{x:.0}")
            }
        }
        _ => "U".into(),
    }
}

/// A label: quoted, `'` doubled; `=` (never allowed) and control
/// characters become `_`; an empty name is `_` (parsers skip `''`).
pub fn label(s: &str) -> String {
    let s = if s.is_empty() { "_" } else { s };
    let clean: String = s
        .chars()
        .map(|c| if c == '=' || c.is_control() { '_' } else { c })
        .collect();
    format!("'{}'", clean.replace('\'', "''"))
}

impl Perf {
    /// The item's text.
    pub fn render(&self) -> String {
        let mut s = format!("{}={}{}", label(&self.label), number(self.value), self.uom);
        let r = |x: &Option<Range>| x.as_ref().map(ToString::to_string).unwrap_or_default();
        let n = |x: Option<f64>| x.map(|v| number(Some(v))).unwrap_or_default();
        let _ = write!(
            s,
            ";{};{};{};{}",
            r(&self.warning),
            r(&self.critical),
            n(self.min),
            n(self.max)
        );
        // Trailing empty fields may be dropped.
        while s.ends_with(';') {
            s.pop();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_render_in_the_guidelines_format() {
        let p = Perf {
            label: "load_one".into(),
            value: Some(0.52),
            uom: "",
            warning: Some(Range::parse("4").unwrap()),
            critical: Some(Range::parse("8").unwrap()),
            min: Some(0.0),
            max: None,
        };
        assert_eq!(p.render(), "'load_one'=0.52;4;8;0");
        let p = Perf {
            label: "it's a=b".into(),
            value: None,
            uom: "%",
            warning: None,
            critical: None,
            min: None,
            max: None,
        };
        assert_eq!(p.render(), "'it''s a_b'=U%");
    }

    #[test]
    fn numbers_never_use_exponents() {
        assert_eq!(number(Some(1e20)), "100000000000000000000");
        assert_eq!(number(Some(1e-9)), "0");
        assert_eq!(number(Some(-3.25)), "-3.25");
        assert_eq!(number(Some(0.1 + 0.2)), "0.3");
        assert_eq!(number(Some(f64::NAN)), "U");
        assert_eq!(number(None), "U");
    }

    #[test]
    fn ganglia_units_map_to_plugin_units() {
        assert_eq!(uom(" % "), "%");
        assert_eq!(uom("KB"), "KB");
        assert_eq!(uom("bytes/sec"), "");
        assert_eq!(uom("CPUs"), "");
    }

    /// Hostile metric names: one quoted label, quotes paired inside, no
    /// `=`, no line break, whatever the name.
    #[test]
    fn hostile_labels_stay_one_quoted_token() {
        let mut names: Vec<String> = [
            "", "'", "''", "a'b", "a=b", "a b", "a\nb", "a\rb", "a\0b", "|", "a;b", "\u{2028}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        names.extend((0u8..0x20).map(|b| format!("c{}c", b as char)));
        for n in &names {
            let l = label(n);
            let inner = l
                .strip_prefix('\'')
                .and_then(|r| r.strip_suffix('\''))
                .expect(&l);
            assert!(
                !inner.is_empty() && !inner.replace("''", "").contains('\''),
                "{l}"
            );
            assert!(!l.contains('=') && !l.chars().any(char::is_control), "{l}");
            let p = Perf {
                label: n.clone(),
                value: Some(1.0),
                uom: "",
                warning: None,
                critical: None,
                min: None,
                max: None,
            };
            assert_eq!(p.render(), format!("{l}=1"));
        }
    }
}

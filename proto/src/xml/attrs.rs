//! The attribute scanner: one pass over a tag's attribute text, borrowing
//! values from the input where no entity has to be expanded, and the METRIC
//! fast path built on it. Checked against quick-xml's own attribute iterator
//! by property tests.

use super::model::{Limits, Metric};
use crate::model::{MetricType, Slope};
use compact_str::CompactString;
use quick_xml::events::BytesStart;
use smallvec::SmallVec;
use std::borrow::Cow;

/// One element's attributes, borrowed from the input where no entity had to
/// be expanded (the common case: no allocation per attribute). A METRIC has
/// ten, so they live on the stack.
pub(super) struct Attrs<'a>(pub(super) SmallVec<[(&'a [u8], Cow<'a, str>); 12]>);

impl Attrs<'_> {
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == key.as_bytes())
            .map(|(_, v)| v.as_ref())
    }
    pub(super) fn text(&self, key: &str) -> String {
        self.get(key).unwrap_or("").to_string()
    }
    pub(super) fn text_or(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_string()
    }
    pub(super) fn short(&self, key: &str) -> CompactString {
        CompactString::from(self.get(key).unwrap_or(""))
    }
    pub(super) fn short_or(&self, key: &str, default: &str) -> CompactString {
        CompactString::from(self.get(key).unwrap_or(default))
    }
    pub(super) fn req_short(&self, key: &str) -> Result<CompactString, String> {
        self.req_str(key).map(CompactString::from)
    }
    pub(super) fn req(&self, key: &str) -> Result<String, String> {
        self.req_str(key).map(str::to_string)
    }
    pub(super) fn req_str(&self, key: &str) -> Result<&str, String> {
        self.get(key)
            .ok_or_else(|| format!("missing required attribute {key}"))
    }
    pub(super) fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        attr_num(self.get(key), key, default)
    }
    pub(super) fn req_num<T: std::str::FromStr>(&self, key: &str) -> Result<T, String> {
        let v = self.req_str(key)?;
        v.trim()
            .parse()
            .map_err(|_| format!("attribute {key}={v:?} is not a number"))
    }
    pub(super) fn metric_type(&self) -> Result<MetricType, String> {
        let t = self.req_str("TYPE")?;
        MetricType::parse(t).ok_or_else(|| format!("unknown TYPE {t:?}"))
    }
}

/// A numeric attribute (surrounding spaces allowed), `default` when absent.
fn attr_num<T: std::str::FromStr>(v: Option<&str>, key: &str, default: T) -> Result<T, String> {
    match v {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("attribute {key}={v:?} is not a number")),
    }
}

/// The attributes of `e`, borrowed from it where possible.
///
/// quick-xml finds the tags; the attribute list of each is split here in one
/// pass over the tag's text (quick-xml's attribute iterator was a fifth of
/// the time of reading a polled document: ten attributes per METRIC, each
/// going through its generic state machine). `attribute_scanner_agrees_with_quick_xml`
/// checks this against quick-xml's iterator.
pub(super) fn read_attrs<'a>(e: &'a BytesStart<'_>, limits: &Limits) -> Result<Attrs<'a>, String> {
    split_attrs(e.attributes_raw(), limits)
}

fn split_attrs<'a>(raw: &'a str, limits: &Limits) -> Result<Attrs<'a>, String> {
    let mut out = SmallVec::new();
    scan_attrs(raw, limits, |k, v| out.push((k, v)))?;
    Ok(Attrs(out))
}

/// Calls `each` with every attribute of a tag's attribute text, in order.
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "every `b[i]` is read after `i < b.len()` is checked, `i + len` is inside `raw` (where `find` found the quote), and no index exceeds a slice length"
)]
fn scan_attrs<'a>(
    raw: &'a str,
    limits: &Limits,
    mut each: impl FnMut(&'a [u8], Cow<'a, str>),
) -> Result<(), String> {
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r');
    let b = raw.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if i == b.len() {
            return Ok(());
        }
        let start = i;
        while i < b.len() && !is_space(b[i]) && b[i] != b'=' {
            i += 1;
        }
        // Only ASCII bytes are stepped over by byte, so every index here
        // falls on a character boundary.
        let key = &raw[start..i];
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if b.get(i) != Some(&b'=') {
            return Err(format!("bad attribute: {key:?} has no value"));
        }
        i += 1;
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        let quote = match b.get(i) {
            Some(&q @ (b'"' | b'\'')) => q as char,
            _ => return Err(format!("bad attribute: the value of {key:?} is not quoted")),
        };
        i += 1;
        let Some(len) = raw[i..].find(quote) else {
            return Err(format!("bad attribute: the value of {key:?} is not closed"));
        };
        if len > limits.max_attr_len {
            return Err(format!(
                "attribute value longer than {} bytes",
                limits.max_attr_len
            ));
        }
        let value = quick_xml::escape::unescape(&raw[i..i + len])
            .map_err(|e| format!("bad entity in attribute: {e}"))?;
        each(key.as_bytes(), value);
        i += len + 1;
    }
}

/// A METRIC straight from its attribute text, without collecting the
/// attributes first: it is the element a polled document is made of. The
/// rules are those of the general path ([`open`](super::builder::open)): the first of a repeated
/// attribute counts, and the same checks fail with the same messages.
#[allow(
    clippy::indexing_slicing,
    reason = "constant indices below 9 into an array of 9"
)]
pub(super) fn read_metric(raw: &str, limits: &Limits) -> Result<Metric, String> {
    let mut v: [Option<Cow<'_, str>>; 9] = Default::default();
    scan_attrs(raw, limits, |key, value| {
        let i = match key {
            b"NAME" => 0,
            b"VAL" => 1,
            b"TYPE" => 2,
            b"UNITS" => 3,
            b"TN" => 4,
            b"TMAX" => 5,
            b"DMAX" => 6,
            b"SLOPE" => 7,
            b"SOURCE" => 8,
            _ => return,
        };
        v[i].get_or_insert(value);
    })?;
    let required = |i: usize, key: &str| {
        v[i].as_deref()
            .ok_or_else(|| format!("missing required attribute {key}"))
    };
    let name = required(0, "NAME")?.into();
    let val = required(1, "VAL")?.into();
    let t = required(2, "TYPE")?;
    let metric_type = MetricType::parse(t).ok_or_else(|| format!("unknown TYPE {t:?}"))?;
    Ok(Metric {
        name,
        val,
        metric_type,
        units: v[3].as_deref().unwrap_or("").into(),
        tn: attr_num(v[4].as_deref(), "TN", 0)?,
        tmax: attr_num(v[5].as_deref(), "TMAX", 0)?,
        dmax: attr_num(v[6].as_deref(), "DMAX", 0)?,
        slope: Slope::parse(v[7].as_deref().unwrap_or("unspecified")),
        source: v[8].as_deref().unwrap_or("gmond").into(),
        extras: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What quick-xml's own attribute iterator makes of the same text.
    fn reference(raw: &str) -> Result<Vec<(String, String)>, ()> {
        let tag = BytesStart::from_content(format!("T{raw}"), 1);
        let mut out = Vec::new();
        for a in tag.attributes().with_checks(false) {
            let a = a.map_err(|_| ())?;
            let v = quick_xml::escape::unescape(&a.value).map_err(|_| ())?;
            out.push((a.key.0.to_string(), v.into_owned()));
        }
        Ok(out)
    }

    fn ours(raw: &str) -> Result<Vec<(String, String)>, ()> {
        let a = split_attrs(raw, &Limits::default()).map_err(|_| ())?;
        Ok(a.0
            .iter()
            .map(|(k, v)| (String::from_utf8(k.to_vec()).unwrap(), v.to_string()))
            .collect())
    }

    #[test]
    fn attribute_scanner_handles_odd_spacing_quotes_and_errors() {
        let raw = " NAME='a \"b\"'\n\tVAL = \"1&amp;2\" E=\"\"";
        assert_eq!(ours(raw), reference(raw));
        assert_eq!(
            ours(raw).unwrap(),
            [("NAME", "a \"b\""), ("VAL", "1&2"), ("E", "")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        for bad in [" A", " A=", " A=1", " A=\"1", " A='1\"", " A=\"&bogus;\""] {
            assert!(ours(bad).is_err(), "{bad:?} accepted");
            assert!(reference(bad).is_err(), "quick-xml accepts {bad:?}");
        }
        let long = format!(" A=\"{}\"", "x".repeat(100));
        let tight = Limits {
            max_attr_len: 99,
            ..Limits::default()
        };
        assert!(split_attrs(&long, &tight).is_err());
        assert!(split_attrs(&long, &Limits::default()).is_ok());
    }

    /// METRIC read through the general attribute list, as every other
    /// element is: what `read_metric` must agree with.
    fn metric_the_long_way(raw: &str) -> Result<Metric, String> {
        let a = split_attrs(raw, &Limits::default())?;
        Ok(Metric {
            name: a.req_short("NAME")?,
            val: a.req_short("VAL")?,
            metric_type: a.metric_type()?,
            units: a.short("UNITS"),
            tn: a.num("TN", 0)?,
            tmax: a.num("TMAX", 0)?,
            dmax: a.num("DMAX", 0)?,
            slope: Slope::parse(a.get("SLOPE").unwrap_or("unspecified")),
            source: a.short_or("SOURCE", "gmond"),
            extras: Vec::new(),
        })
    }

    proptest! {
        #[test]
        fn metric_reader_agrees_with_the_general_path(
            attrs in prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "NAME", "VAL", "TYPE", "UNITS", "TN", "TMAX", "DMAX", "SLOPE", "SOURCE", "OTHER",
                    ]),
                    prop::sample::select(vec![
                        "", "cpu_user", "1.5", " 20 ", "-1", "4294967296", "18446744073709551616", "x",
                        "float", "uint32", "string", "both", "positive", "gmetric", "&amp;&lt;",
                    ]),
                ),
                0..12,
            ),
        ) {
            let raw: String = attrs.iter().map(|(k, v)| format!(" {k}=\"{v}\"")).collect();
            prop_assert_eq!(read_metric(&raw, &Limits::default()), metric_the_long_way(&raw));
        }

        #[test]
        fn attribute_scanner_agrees_with_quick_xml(
            attrs in prop::collection::vec(
                ("[A-Z_][A-Z_0-9]{0,9}", any::<String>(), any::<bool>(), "[ \t\r\n]{1,3}", "[ \t]{0,2}"),
                0..8,
            ),
            tail in "[ \t\r\n]{0,2}",
        ) {
            let mut raw = String::new();
            for (k, v, single, before, around) in &attrs {
                let q = if *single { '\'' } else { '"' };
                let v: String = quick_xml::escape::escape(v.as_str()).into_owned();
                raw.push_str(&format!("{before}{k}{around}={around}{q}{v}{q}"));
            }
            raw.push_str(&tail);
            let got = ours(&raw);
            prop_assert!(got.is_ok());
            prop_assert_eq!(got, reference(&raw));
        }
    }
}

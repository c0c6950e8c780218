//! Rendering a value with its sender-supplied `fmt` the way gmond's
//! `apr_snprintf` would, without ever handing an untrusted format to a real printf.
//!
//! The format is parsed here: literal text, `%%`, and exactly one conversion
//! from `d i u o x X f F e E g G s c` with flags `-+ #0`, a width, a precision and
//! C length modifiers (`hh h l ll q j z t L`). A format that does not fit that
//! shape (no conversion, two conversions, `*` widths, `%n`, …) falls back to
//! [`render_default`]. Where the conversion and the value disagree (a float
//! under `%d`), the value is converted the way a careful caller would, rather
//! than reinterpreting bits as C would.

use crate::xdr::Value;
use std::fmt::Write;

/// Widths and precisions above this are clamped: a hostile `%.999999f` must not
/// make the receiver build a megabyte string per packet.
const MAX_WIDTH: usize = 64;

#[derive(Debug, Default, Clone, Copy)]
struct Spec {
    left: bool,
    plus: bool,
    space: bool,
    alt: bool,
    zero: bool,
    width: usize,
    precision: Option<usize>,
    /// -2 = hh, -1 = h, 0 = none, 1 = l/ll/q/j/z/t/L
    length: i8,
    conv: u8,
}

struct Parsed<'a> {
    prefix: &'a str,
    spec: Spec,
    suffix: &'a str,
}

/// Renders `value` with `fmt`; strings are returned as they are (gmond ignores
/// the format for strings).
pub fn render(fmt: &str, value: &Value) -> String {
    if let Value::Str(s) = value {
        return s.clone();
    }
    let Some(p) = parse(fmt) else {
        return render_default(value);
    };
    let mut out = String::with_capacity(fmt.len().saturating_add(16));
    out.push_str(&unescape_percent(p.prefix));
    let body = convert(&p.spec, value);
    out.push_str(&body);
    out.push_str(&unescape_percent(p.suffix));
    out
}

/// A sane rendering without a format: integers in decimal, floats in the
/// shortest form that reads back to the same value.
pub fn render_default(value: &Value) -> String {
    match value {
        Value::UShort(v) => v.to_string(),
        Value::Short(v) => v.to_string(),
        Value::Int(v) => v.to_string(),
        Value::UInt(v) => v.to_string(),
        Value::Str(s) => s.clone(),
        Value::Float(v) => float_default(f64::from(*v)),
        Value::Double(v) => float_default(*v),
    }
}

fn float_default(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        v.to_string()
    }
}

fn unescape_percent(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains("%%") {
        s.replace("%%", "%").into()
    } else {
        s.into()
    }
}

/// Finds the single conversion; `None` when the format has zero or several,
/// or anything this renderer does not interpret.
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "`b[i]` is read only while `i < b.len()`, and `i` never exceeds a slice length (at most isize::MAX), so `i + 2` cannot overflow"
)]
fn parse(fmt: &str) -> Option<Parsed<'_>> {
    let b = fmt.as_bytes();
    let mut i = 0;
    let mut found: Option<(usize, usize, Spec)> = None;
    while i < b.len() {
        if b[i] != b'%' {
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'%') {
            i += 2;
            continue;
        }
        if found.is_some() {
            return None;
        }
        let start = i;
        i += 1;
        let mut spec = Spec::default();
        while let Some(&c) = b.get(i) {
            match c {
                b'-' => spec.left = true,
                b'+' => spec.plus = true,
                b' ' => spec.space = true,
                b'#' => spec.alt = true,
                b'0' => spec.zero = true,
                _ => break,
            }
            i += 1;
        }
        let (w, ni) = digits(b, i);
        spec.width = w?.min(MAX_WIDTH);
        i = ni;
        if b.get(i) == Some(&b'.') {
            let (p, ni) = digits(b, i + 1);
            spec.precision = Some(p?.min(MAX_WIDTH));
            i = ni;
        }
        match (b.get(i), b.get(i + 1)) {
            (Some(b'h'), Some(b'h')) => {
                spec.length = -2;
                i += 2;
            }
            (Some(b'l'), Some(b'l')) => {
                spec.length = 1;
                i += 2;
            }
            (Some(b'h'), _) => {
                spec.length = -1;
                i += 1;
            }
            (Some(b'l' | b'q' | b'j' | b'z' | b't' | b'L'), _) => {
                spec.length = 1;
                i += 1;
            }
            _ => {}
        }
        let conv = *b.get(i)?;
        if !b"diuoxXfFeEgGsc".contains(&conv) {
            return None;
        }
        spec.conv = conv;
        i += 1;
        found = Some((start, i, spec));
    }
    let (start, end, spec) = found?;
    Some(Parsed {
        prefix: &fmt[..start],
        spec,
        suffix: &fmt[end..],
    })
}

/// Reads decimal digits; `Some(0)` when there are none, `None` on overflow.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "`c` is an ASCII digit, and `i` stays within `b`"
)]
fn digits(b: &[u8], mut i: usize) -> (Option<usize>, usize) {
    let mut v: usize = 0;
    while let Some(&c) = b.get(i) {
        if !c.is_ascii_digit() {
            break;
        }
        v = match v
            .checked_mul(10)
            .and_then(|v| v.checked_add(usize::from(c - b'0')))
        {
            Some(v) => v,
            None => return (None, i),
        };
        i += 1;
    }
    (Some(v), i)
}

enum Num {
    I(i64),
    U(u64),
    F(f64),
}

fn num_of(value: &Value) -> Num {
    match value {
        Value::UShort(v) => Num::U(u64::from(*v)),
        Value::Short(v) => Num::I(i64::from(*v)),
        Value::Int(v) => Num::I(i64::from(*v)),
        Value::UInt(v) => Num::U(u64::from(*v)),
        Value::Float(v) => Num::F(f64::from(*v)),
        Value::Double(v) => Num::F(*v),
        Value::Str(_) => Num::F(f64::NAN),
    }
}

fn as_i64(n: &Num) -> i64 {
    match *n {
        Num::I(v) => v,
        Num::U(v) => v as i64,
        // Saturating truncation toward zero: what a cast would do in C for
        // in-range values, and something sane for the rest.
        Num::F(v) => v as i64,
    }
}

fn as_f64(n: &Num) -> f64 {
    match *n {
        Num::I(v) => v as f64,
        Num::U(v) => v as f64,
        Num::F(v) => v,
    }
}

fn convert(spec: &Spec, value: &Value) -> String {
    let n = num_of(value);
    let (sign, body) = match spec.conv {
        b'd' | b'i' => {
            let v = as_i64(&n);
            let v = match spec.length {
                -2 => i64::from(v as i8),
                -1 => i64::from(v as i16),
                0 => i64::from(v as i32),
                _ => v,
            };
            let digits = int_precision(v.unsigned_abs().to_string(), spec);
            (sign_of(v < 0, spec), digits)
        }
        b'u' | b'o' | b'x' | b'X' => {
            let v = as_i64(&n) as u64;
            let v = match spec.length {
                -2 => u64::from(v as u8),
                -1 => u64::from(v as u16),
                0 => u64::from(v as u32),
                _ => v,
            };
            let s = match spec.conv {
                b'u' => v.to_string(),
                b'o' => {
                    let s = format!("{v:o}");
                    if spec.alt && !s.starts_with('0') {
                        format!("0{s}")
                    } else {
                        s
                    }
                }
                b'x' => format!("{v:x}"),
                _ => format!("{v:X}"),
            };
            let mut s = int_precision(s, spec);
            if spec.alt && v != 0 && matches!(spec.conv, b'x' | b'X') {
                s.insert_str(0, if spec.conv == b'x' { "0x" } else { "0X" });
            }
            (String::new(), s)
        }
        b'c' => {
            let c = char::from(as_i64(&n) as u8);
            (String::new(), c.to_string())
        }
        b's' => (String::new(), render_default(value)),
        _ => {
            let v = as_f64(&n);
            let upper = spec.conv.is_ascii_uppercase();
            let body = if v.is_nan() {
                "nan".to_string()
            } else if v.is_infinite() {
                "inf".to_string()
            } else {
                let p = spec.precision.unwrap_or(6);
                match spec.conv.to_ascii_lowercase() {
                    // Integral values (counts, kilobytes, most gauges) print
                    // exactly without the general digit generator.
                    b'f' if v.fract() == 0.0 && v.abs() < 1e15 => {
                        let mut s = (v.abs() as u64).to_string();
                        if p > 0 || spec.alt {
                            s.push('.');
                        }
                        s.extend(std::iter::repeat_n('0', p));
                        s
                    }
                    // '#' keeps the point even with no decimals.
                    b'f' if p == 0 && spec.alt => format!("{:.0}.", v.abs()),
                    b'f' => format!("{:.*}", p, v.abs()),
                    b'e' => fmt_e(v.abs(), p),
                    _ => fmt_g(v.abs(), p, spec.alt),
                }
            };
            let body = if upper { body.to_uppercase() } else { body };
            (sign_of(v.is_sign_negative(), spec), body)
        }
    };
    pad(spec, &sign, &body)
}

fn sign_of(negative: bool, spec: &Spec) -> String {
    if negative {
        "-".into()
    } else if spec.plus {
        "+".into()
    } else if spec.space {
        " ".into()
    } else {
        String::new()
    }
}

/// Integer precision = minimum digits; `%.0d` of 0 prints nothing, as in C.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "subtracts only when `digits.len() < p`"
)]
fn int_precision(digits: String, spec: &Spec) -> String {
    match spec.precision {
        Some(0) if digits == "0" => String::new(),
        Some(p) if digits.len() < p => format!("{}{}", "0".repeat(p - digits.len()), digits),
        _ => digits,
    }
}

#[allow(
    clippy::arithmetic_side_effects,
    reason = "two in-memory string lengths cannot sum past usize::MAX; subtracts only when `len < width`"
)]
fn pad(spec: &Spec, sign: &str, body: &str) -> String {
    let len = sign.len() + body.len();
    if len >= spec.width {
        return format!("{sign}{body}");
    }
    let fill = spec.width - len;
    let numeric = !matches!(spec.conv, b's' | b'c');
    // C ignores `0` with `-`, and for integers when a precision is given.
    let zero_ok = spec.zero
        && !spec.left
        && numeric
        && !(spec.precision.is_some() && b"diuoxX".contains(&spec.conv))
        && body
            .bytes()
            .all(|c| c.is_ascii_hexdigit() || b".xX+-eE".contains(&c));
    let mut s = String::with_capacity(spec.width);
    if spec.left {
        s.push_str(sign);
        s.push_str(body);
        s.push_str(&" ".repeat(fill));
    } else if zero_ok {
        s.push_str(sign);
        s.push_str(&"0".repeat(fill));
        s.push_str(body);
    } else {
        s.push_str(&" ".repeat(fill));
        s.push_str(sign);
        s.push_str(body);
    }
    s
}

/// C `%.pe` of a non-negative finite value: `d.ddde±XX`.
fn fmt_e(v: f64, p: usize) -> String {
    let s = format!("{:.*e}", p, v);
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut out = String::with_capacity(mant.len().saturating_add(5));
    out.push_str(mant);
    let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    out
}

/// C `%.pg` of a non-negative finite value.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "`p` is at least 1 and at most MAX_WIDTH, and `x` is a float exponent (|x| < 400)"
)]
fn fmt_g(v: f64, p: usize, alt: bool) -> String {
    let p = if p == 0 { 1 } else { p };
    // The exponent after rounding to p significant digits decides the style.
    let e_form = format!("{:.*e}", p - 1, v);
    let x: i64 = e_form
        .split_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    let mut s = if x < -4 || x >= p as i64 {
        fmt_e(v, p - 1)
    } else {
        format!("{:.*}", (p as i64 - 1 - x) as usize, v)
    };
    if !alt {
        s = strip_trailing_zeros(&s);
    }
    s
}

fn strip_trailing_zeros(s: &str) -> String {
    let (mant, exp) = match s.find('e') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    if !mant.contains('.') {
        return s.to_string();
    }
    let m = mant.trim_end_matches('0').trim_end_matches('.');
    format!("{m}{exp}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(fmt: &str, v: Value) -> String {
        render(fmt, &v)
    }

    #[test]
    fn gmond_formats() {
        assert_eq!(r("%.1f", Value::Float(68.7577)), "68.8");
        assert_eq!(r("%hu", Value::UShort(2)), "2");
        assert_eq!(r("%u", Value::UInt(1795505982)), "1795505982");
        assert_eq!(r("%.3f", Value::Double(84.527)), "84.527");
        assert_eq!(r("%.0f", Value::Float(2048.0)), "2048");
        assert_eq!(r("%.2f", Value::Float(0.0)), "0.00");
        assert_eq!(r("%d", Value::Int(-5)), "-5");
        assert_eq!(r("%hd", Value::Short(-7)), "-7");
        assert_eq!(r("%s", Value::Str("a<b".into())), "a<b");
        assert_eq!(r("%f", Value::Double(1.5)), "1.500000");
    }

    #[test]
    fn g_matches_c() {
        assert_eq!(r("%g", Value::Double(100000.0)), "100000");
        assert_eq!(r("%g", Value::Double(1000000.0)), "1e+06");
        assert_eq!(r("%g", Value::Double(0.0001)), "0.0001");
        assert_eq!(r("%g", Value::Double(0.00001)), "1e-05");
        assert_eq!(r("%g", Value::Double(1.23456789)), "1.23457");
        assert_eq!(r("%.3g", Value::Double(2.5)), "2.5");
        assert_eq!(r("%#g", Value::Double(2.5)), "2.50000");
        assert_eq!(r("%G", Value::Double(1e-10)), "1E-10");
        assert_eq!(r("%g", Value::Double(0.0)), "0");
        assert_eq!(r("%e", Value::Double(12345.678)), "1.234568e+04");
        assert_eq!(r("%g", Value::Double(999999.5)), "1e+06");
    }

    /// `%f` as glibc prints it (expected strings produced by C-style `%`
    /// formatting, which rounds the exact binary value like glibc), for
    /// integral values (the fast path) and others, with gmond's flags.
    #[test]
    fn f_matches_c_printf() {
        let vals = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            37.0,
            100.0,
            65535.0,
            4294967296.0,
            -123456789.0,
            9.9e14,
            2e15,
            1e300,
            0.5,
            1.5,
            2.5,
            -2.5,
            0.125,
            1.005,
            123.456,
            -0.001,
        ];
        let table: [(&str, [&str; 20]); 10] = [
            (
                "%.0f",
                [
                    "0",
                    "-0",
                    "1",
                    "-1",
                    "37",
                    "100",
                    "65535",
                    "4294967296",
                    "-123456789",
                    "990000000000000",
                    "2000000000000000",
                    "1000000000000000052504760255204420248704468581108159154915854115511802457988908195786371375080447864043704443832883878176942523235360430575644792184786706982848387200926575803737830233794788090059368953234970799945081119038967640880074652742780142494579258788820056842838115669472196386865459400540160",
                    "0",
                    "2",
                    "2",
                    "-2",
                    "0",
                    "1",
                    "123",
                    "-0",
                ],
            ),
            (
                "%.1f",
                [
                    "0.0",
                    "-0.0",
                    "1.0",
                    "-1.0",
                    "37.0",
                    "100.0",
                    "65535.0",
                    "4294967296.0",
                    "-123456789.0",
                    "990000000000000.0",
                    "2000000000000000.0",
                    "1000000000000000052504760255204420248704468581108159154915854115511802457988908195786371375080447864043704443832883878176942523235360430575644792184786706982848387200926575803737830233794788090059368953234970799945081119038967640880074652742780142494579258788820056842838115669472196386865459400540160.0",
                    "0.5",
                    "1.5",
                    "2.5",
                    "-2.5",
                    "0.1",
                    "1.0",
                    "123.5",
                    "-0.0",
                ],
            ),
            (
                "%.2f",
                [
                    "0.00",
                    "-0.00",
                    "1.00",
                    "-1.00",
                    "37.00",
                    "100.00",
                    "65535.00",
                    "4294967296.00",
                    "-123456789.00",
                    "990000000000000.00",
                    "2000000000000000.00",
                    "1000000000000000052504760255204420248704468581108159154915854115511802457988908195786371375080447864043704443832883878176942523235360430575644792184786706982848387200926575803737830233794788090059368953234970799945081119038967640880074652742780142494579258788820056842838115669472196386865459400540160.00",
                    "0.50",
                    "1.50",
                    "2.50",
                    "-2.50",
                    "0.12",
                    "1.00",
                    "123.46",
                    "-0.00",
                ],
            ),
            (
                "%f",
                [
                    "0.000000",
                    "-0.000000",
                    "1.000000",
                    "-1.000000",
                    "37.000000",
                    "100.000000",
                    "65535.000000",
                    "4294967296.000000",
                    "-123456789.000000",
                    "990000000000000.000000",
                    "2000000000000000.000000",
                    "1000000000000000052504760255204420248704468581108159154915854115511802457988908195786371375080447864043704443832883878176942523235360430575644792184786706982848387200926575803737830233794788090059368953234970799945081119038967640880074652742780142494579258788820056842838115669472196386865459400540160.000000",
                    "0.500000",
                    "1.500000",
                    "2.500000",
                    "-2.500000",
                    "0.125000",
                    "1.005000",
                    "123.456000",
                    "-0.001000",
                ],
            ),
            (
                "%8.1f",
                [
                    "     0.0",
                    "    -0.0",
                    "     1.0",
                    "    -1.0",
                    "    37.0",
                    "   100.0",
                    " 65535.0",
                    "4294967296.0",
                    "-123456789.0",
                    "990000000000000.0",
                    "2000000000000000.0",
                    "1000000000000000052504760255204420248704468581108159154915854115511802457988908195786371375080447864043704443832883878176942523235360430575644792184786706982848387200926575803737830233794788090059368953234970799945081119038967640880074652742780142494579258788820056842838115669472196386865459400540160.0",
                    "     0.5",
                    "     1.5",
                    "     2.5",
                    "    -2.5",
                    "     0.1",
                    "     1.0",
                    "   123.5",
                    "    -0.0",
                ],
            ),
            (
                "%-8.3f|",
                [
                    "0.000   |",
                    "-0.000  |",
                    "1.000   |",
                    "-1.000  |",
                    "37.000  |",
                    "100.000 |",
                    "65535.000|",
                    "4294967296.000|",
                    "-123456789.000|",
                    "990000000000000.000|",
                    "2000000000000000.000|",
                    "1000000000000000052504760255204420248704468581108159154915854115511802457988908195786371375080447864043704443832883878176942523235360430575644792184786706982848387200926575803737830233794788090059368953234970799945081119038967640880074652742780142494579258788820056842838115669472196386865459400540160.000|",
                    "0.500   |",
                    "1.500   |",
                    "2.500   |",
                    "-2.500  |",
                    "0.125   |",
                    "1.005   |",
                    "123.456 |",
                    "-0.001  |",
                ],
            ),
            (
                "%+.1f",
                [
                    "+0.0",
                    "-0.0",
                    "+1.0",
                    "-1.0",
                    "+37.0",
                    "+100.0",
                    "+65535.0",
                    "+4294967296.0",
                    "-123456789.0",
                    "+990000000000000.0",
                    "+2000000000000000.0",
                    "+1000000000000000052504760255204420248704468581108159154915854115511802457988908195786371375080447864043704443832883878176942523235360430575644792184786706982848387200926575803737830233794788090059368953234970799945081119038967640880074652742780142494579258788820056842838115669472196386865459400540160.0",
                    "+0.5",
                    "+1.5",
                    "+2.5",
                    "-2.5",
                    "+0.1",
                    "+1.0",
                    "+123.5",
                    "-0.0",
                ],
            ),
            (
                "% .2f",
                [
                    " 0.00",
                    "-0.00",
                    " 1.00",
                    "-1.00",
                    " 37.00",
                    " 100.00",
                    " 65535.00",
                    " 4294967296.00",
                    "-123456789.00",
                    " 990000000000000.00",
                    " 2000000000000000.00",
                    " 1000000000000000052504760255204420248704468581108159154915854115511802457988908195786371375080447864043704443832883878176942523235360430575644792184786706982848387200926575803737830233794788090059368953234970799945081119038967640880074652742780142494579258788820056842838115669472196386865459400540160.00",
                    " 0.50",
                    " 1.50",
                    " 2.50",
                    "-2.50",
                    " 0.12",
                    " 1.00",
                    " 123.46",
                    "-0.00",
                ],
            ),
            (
                "%#.0f",
                [
                    "0.",
                    "-0.",
                    "1.",
                    "-1.",
                    "37.",
                    "100.",
                    "65535.",
                    "4294967296.",
                    "-123456789.",
                    "990000000000000.",
                    "2000000000000000.",
                    "1000000000000000052504760255204420248704468581108159154915854115511802457988908195786371375080447864043704443832883878176942523235360430575644792184786706982848387200926575803737830233794788090059368953234970799945081119038967640880074652742780142494579258788820056842838115669472196386865459400540160.",
                    "0.",
                    "2.",
                    "2.",
                    "-2.",
                    "0.",
                    "1.",
                    "123.",
                    "-0.",
                ],
            ),
            (
                "%010.2f",
                [
                    "0000000.00",
                    "-000000.00",
                    "0000001.00",
                    "-000001.00",
                    "0000037.00",
                    "0000100.00",
                    "0065535.00",
                    "4294967296.00",
                    "-123456789.00",
                    "990000000000000.00",
                    "2000000000000000.00",
                    "1000000000000000052504760255204420248704468581108159154915854115511802457988908195786371375080447864043704443832883878176942523235360430575644792184786706982848387200926575803737830233794788090059368953234970799945081119038967640880074652742780142494579258788820056842838115669472196386865459400540160.00",
                    "0000000.50",
                    "0000001.50",
                    "0000002.50",
                    "-000002.50",
                    "0000000.12",
                    "0000001.00",
                    "0000123.46",
                    "-000000.00",
                ],
            ),
        ];
        for (fmt, want) in table {
            for (v, w) in vals.iter().zip(want) {
                assert_eq!(r(fmt, Value::Double(*v)), w, "{fmt} {v}");
            }
        }
    }

    #[test]
    fn ties_round_like_glibc() {
        // glibc rounds the exact binary value; exact ties go to even.
        assert_eq!(r("%.0f", Value::Double(0.5)), "0");
        assert_eq!(r("%.0f", Value::Double(1.5)), "2");
        assert_eq!(r("%.0f", Value::Double(2.5)), "2");
        assert_eq!(r("%.1f", Value::Double(0.25)), "0.2");
        assert_eq!(r("%.2f", Value::Double(1.005)), "1.00"); // 1.00499999…
    }

    #[test]
    fn flags_width_and_lengths() {
        assert_eq!(r("%5d", Value::Int(42)), "   42");
        assert_eq!(r("%-5d|", Value::Int(42)), "42   |");
        assert_eq!(r("%05d", Value::Int(-42)), "-0042");
        assert_eq!(r("%+d", Value::Int(42)), "+42");
        assert_eq!(r("%x", Value::UInt(255)), "ff");
        assert_eq!(r("%#X", Value::UInt(255)), "0XFF");
        assert_eq!(r("%u", Value::Int(-1)), "4294967295");
        assert_eq!(r("%hu", Value::UInt(65537)), "1");
        assert_eq!(r("%lu", Value::UInt(7)), "7");
        assert_eq!(r("%08.2f", Value::Double(-1.23456)), "-0001.23");
        assert_eq!(r("%.3d", Value::Int(7)), "007");
        assert_eq!(r("load %.2f%%", Value::Float(1.0)), "load 1.00%");
    }

    #[test]
    fn mismatches_convert_values() {
        assert_eq!(r("%d", Value::Float(3.9)), "3");
        assert_eq!(r("%.1f", Value::UInt(3)), "3.0");
        assert_eq!(r("%s", Value::Double(2.5)), "2.5");
        assert_eq!(r("%f", Value::Double(f64::NAN)), "nan");
        assert_eq!(r("%F", Value::Double(f64::NEG_INFINITY)), "-INF");
    }

    #[test]
    fn hostile_or_unknown_formats_fall_back() {
        assert_eq!(r("%n", Value::Int(1)), "1");
        assert_eq!(r("%d %d", Value::Int(1)), "1");
        assert_eq!(r("%*d", Value::Int(1)), "1");
        assert_eq!(r("", Value::UInt(9)), "9");
        assert_eq!(r("no conversion", Value::Float(1.5)), "1.5");
        assert_eq!(r("%", Value::Int(1)), "1");
        assert_eq!(r("%99999999999999999999999d", Value::Int(1)), "1");
        // Huge widths are clamped rather than honoured.
        assert_eq!(r("%.100000f", Value::Double(1.0)).len(), 2 + MAX_WIDTH);
    }
}

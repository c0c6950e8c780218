//! Streaming reader for gmond/gmetad XML (quick-xml).
//!
//! What it tolerates, and why:
//! - The DTD default `SOURCE="gmond"` on METRIC/METRICS is applied, as gmetad's
//!   expat does.
//! - A HOST, METRIC or METRICS with a missing required attribute, a bad number or
//!   an unknown TYPE is skipped (recorded in [`ParseOutcome::skipped`]); its
//!   siblings survive. gmetad drops the whole poll instead.
//! - Input that is not well-formed (an unescaped `&` from a real gmond, say) or
//!   truncated stops the parse, but everything completed before the error is
//!   kept: complete hosts, and the enclosing clusters/grids marked incomplete.
//! - Text that is not UTF-8 is read as ISO-8859-1, the declared encoding.
//! - Limits (depth, elements, extras per metric, attribute length) bound what a
//!   hostile source can make us hold.

use crate::model::{MetricType, Slope};
use crate::xdr::text_from_wire;
use compact_str::CompactString;
use flate2::read::GzDecoder;
use quick_xml::events::{BytesStart, Event};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::io::Read;
use thiserror::Error;

/// A document: `<GANGLIA_XML>` and what it holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    /// `VERSION`
    pub version: String,
    /// `SOURCE` (`gmond` or `gmetad`)
    pub source: String,
    /// Top-level children in document order.
    pub items: Vec<Item>,
}

/// A top-level child of `<GANGLIA_XML>`.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `<GRID>` (gmetad)
    Grid(Grid),
    /// `<CLUSTER>` (gmond, or gmetad without a grid)
    Cluster(Cluster),
    /// a bare `<HOST>`
    Host(Host),
}

/// `<GRID>`
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grid {
    /// `NAME`
    pub name: String,
    /// `AUTHORITY`
    pub authority: String,
    /// `LOCALTIME`
    pub localtime: Option<u64>,
    /// Nested clusters.
    pub clusters: Vec<Cluster>,
    /// Nested grids.
    pub grids: Vec<Grid>,
    /// `<HOSTS>` summary.
    pub hosts: Option<HostsSummary>,
    /// `<METRICS>` summaries.
    pub metrics: Vec<SummaryMetric>,
    /// False when the document ended (or broke) inside this element.
    pub complete: bool,
}

/// `<CLUSTER>`
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cluster {
    /// `NAME`
    pub name: String,
    /// `LOCALTIME`
    pub localtime: u64,
    /// `OWNER`
    pub owner: String,
    /// `LATLONG`
    pub latlong: String,
    /// `URL`
    pub url: String,
    /// Hosts.
    pub hosts: Vec<Host>,
    /// `<HOSTS>` summary (gmetad summary form).
    pub hosts_summary: Option<HostsSummary>,
    /// `<METRICS>` summaries.
    pub metrics: Vec<SummaryMetric>,
    /// False when the document ended (or broke) inside this element.
    pub complete: bool,
}

/// `<HOST>`
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Host {
    /// `NAME`
    pub name: String,
    /// `IP`
    pub ip: String,
    /// `TAGS`
    pub tags: String,
    /// `REPORTED`
    pub reported: u64,
    /// `TN`
    pub tn: u64,
    /// `TMAX`
    pub tmax: u32,
    /// `DMAX`
    pub dmax: u32,
    /// `LOCATION`
    pub location: String,
    /// `GMOND_STARTED`
    pub gmond_started: u64,
    /// Metrics.
    pub metrics: Vec<Metric>,
}

/// `<METRIC>`. Its texts are [`CompactString`]s: names, values and units
/// are mostly short enough to be held inline, so reading one of the many
/// metrics of a polled document allocates nothing for them.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// `NAME`
    pub name: CompactString,
    /// `VAL`
    pub val: CompactString,
    /// `TYPE`
    pub metric_type: MetricType,
    /// `UNITS`
    pub units: CompactString,
    /// `TN`
    pub tn: u64,
    /// `TMAX`
    pub tmax: u32,
    /// `DMAX`
    pub dmax: u32,
    /// `SLOPE` (missing → unspecified)
    pub slope: Slope,
    /// `SOURCE` (DTD default `gmond`)
    pub source: CompactString,
    /// `EXTRA_ELEMENT` pairs in document order.
    pub extras: Vec<(CompactString, CompactString)>,
}

/// `<HOSTS>`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostsSummary {
    /// `UP`
    pub up: u32,
    /// `DOWN`
    pub down: u32,
}

/// `<METRICS>`
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryMetric {
    /// `NAME`
    pub name: CompactString,
    /// `SUM` as printed
    pub sum: CompactString,
    /// `NUM`
    pub num: u32,
    /// `TYPE`
    pub metric_type: MetricType,
    /// `UNITS`
    pub units: CompactString,
    /// `SLOPE`
    pub slope: Slope,
    /// `SOURCE`
    pub source: CompactString,
    /// `EXTRA_ELEMENT` pairs.
    pub extras: Vec<(CompactString, CompactString)>,
}

/// An element skipped as its own problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Element name.
    pub element: String,
    /// Byte offset in the (decompressed) input.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
}

/// Why a document could not be read to the end.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum XmlError {
    /// Not well-formed XML.
    #[error("malformed XML at byte {offset}: {message}")]
    Malformed {
        /// Byte offset.
        offset: u64,
        /// Parser message.
        message: String,
    },
    /// The input ended inside an element.
    #[error("document truncated at byte {offset} inside <{element}>")]
    Truncated {
        /// Byte offset.
        offset: u64,
        /// Innermost open element.
        element: String,
    },
    /// No `<GANGLIA_XML>` root.
    #[error("not a Ganglia XML document (root element {found:?})")]
    NotGanglia {
        /// What was found instead.
        found: String,
    },
    /// A hostile-input limit was hit.
    #[error("limit exceeded at byte {offset}: {limit}")]
    Limit {
        /// Byte offset.
        offset: u64,
        /// Which limit.
        limit: String,
    },
    /// Reading the input failed (including a corrupt gzip stream).
    #[error("read error: {0}")]
    Io(String),
    /// The document, as given or once gunzipped, is larger than
    /// [`Limits::max_input_bytes`]; nothing of it is kept.
    #[error("document larger than {limit} bytes (limit max_input_bytes), as given or gunzipped")]
    LimitExceeded {
        /// The limit, in bytes.
        limit: usize,
    },
}

/// Bounds on what one document may make the reader hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum element nesting depth.
    pub max_depth: usize,
    /// Maximum number of elements.
    pub max_elements: usize,
    /// Extras kept per metric (gmetad's struct holds 32); more are dropped.
    pub max_extras: usize,
    /// Maximum attribute value length in bytes.
    pub max_attr_len: usize,
    /// Maximum document size in bytes, as given and once gunzipped (a gzip
    /// bomb inflates about 1000:1). Inflating stops one byte past it.
    pub max_input_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 32,
            max_elements: 20_000_000,
            max_extras: 32,
            max_attr_len: 64 * 1024,
            max_input_bytes: 512 * 1024 * 1024,
        }
    }
}

/// The result of a parse: what was read, and the error that stopped it, if any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParseOutcome {
    /// Everything that parsed.
    pub document: Document,
    /// Elements skipped as their own problem.
    pub skipped: Vec<Skipped>,
    /// What stopped the parse early, if anything.
    pub error: Option<XmlError>,
}

/// Parses bytes that are either plain XML or gzip (`1f 8b` magic), in UTF-8 or
/// ISO-8859-1 (the encoding Ganglia declares; transcoded before parsing).
/// A document over [`Limits::max_input_bytes`] (as given or gunzipped) is
/// refused whole with [`XmlError::LimitExceeded`].
pub fn parse_bytes(input: &[u8], limits: &Limits) -> ParseOutcome {
    let too_large = || ParseOutcome {
        error: Some(XmlError::LimitExceeded {
            limit: limits.max_input_bytes,
        }),
        ..ParseOutcome::default()
    };
    if input.len() > limits.max_input_bytes {
        return too_large();
    }
    if input.starts_with(&[0x1f, 0x8b]) {
        let (plain, result) = inflate(input, limits.max_input_bytes.saturating_add(1));
        if plain.len() > limits.max_input_bytes {
            return too_large();
        }
        if let Err(e) = result {
            // Keep what decompressed: a cut gzip stream still yields its prefix.
            let mut out = parse_text(&plain, limits);
            if out.error.is_none() || plain.is_empty() {
                out.error = Some(XmlError::Io(format!("gzip: {e}")));
            }
            return out;
        }
        parse_text(&plain, limits)
    } else {
        parse_text(input, limits)
    }
}

/// Gunzips `input`, stopping at `cap` bytes of output. The buffer grows by
/// doubling but never past `cap`, so a bomb costs at most `cap` bytes.
fn inflate(input: &[u8], cap: usize) -> (Vec<u8>, std::io::Result<()>) {
    let mut d = GzDecoder::new(input).take(u64::try_from(cap).unwrap_or(u64::MAX));
    let mut out: Vec<u8> = Vec::with_capacity(input.len().saturating_mul(4).min(cap));
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match d.read(&mut chunk) {
            Ok(0) => return (out, Ok(())),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return (out, Err(e)),
        };
        let Some(got) = chunk.get(..n) else {
            return (out, Ok(()));
        };
        let spare = out.capacity().saturating_sub(out.len());
        if spare < got.len() {
            let want = out
                .capacity()
                .saturating_mul(2)
                .max(out.len().saturating_add(got.len()))
                .min(cap);
            out.reserve_exact(want.saturating_sub(out.len()));
        }
        out.extend_from_slice(got);
    }
}

fn parse_text(input: &[u8], limits: &Limits) -> ParseOutcome {
    match std::str::from_utf8(input) {
        Ok(_) => parse(input, limits),
        Err(_) => parse(text_from_wire(input).as_bytes(), limits),
    }
}

/// An open element. Containers are boxed so that the stack's entries stay
/// small: a frame is pushed and popped for every element, EXTRA_DATA included.
/// METRIC and METRICS are not held here: they are added to their parent when
/// they open and filled in place (see [`Builder::open_child`]), which saves
/// moving each one twice.
enum Frame {
    Root,
    Grid(Box<Grid>),
    Cluster(Box<Cluster>),
    Host(Box<Host>),
    /// A METRIC, held as its host's last metric.
    Metric,
    /// A METRICS, held as its cluster's or grid's last summary metric.
    Summary,
    ExtraData,
    /// An element being skipped, with the depth at which it opened.
    Skip,
    Other,
}

/// One element's attributes, borrowed from the input where no entity had to
/// be expanded (the common case: no allocation per attribute). A METRIC has
/// ten, so they live on the stack.
struct Attrs<'a>(SmallVec<[(&'a [u8], Cow<'a, str>); 12]>);

impl Attrs<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == key.as_bytes())
            .map(|(_, v)| v.as_ref())
    }
    fn text(&self, key: &str) -> String {
        self.get(key).unwrap_or("").to_string()
    }
    fn text_or(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_string()
    }
    fn short(&self, key: &str) -> CompactString {
        CompactString::from(self.get(key).unwrap_or(""))
    }
    fn short_or(&self, key: &str, default: &str) -> CompactString {
        CompactString::from(self.get(key).unwrap_or(default))
    }
    fn req_short(&self, key: &str) -> Result<CompactString, String> {
        self.req_str(key).map(CompactString::from)
    }
    fn req(&self, key: &str) -> Result<String, String> {
        self.req_str(key).map(str::to_string)
    }
    fn req_str(&self, key: &str) -> Result<&str, String> {
        self.get(key)
            .ok_or_else(|| format!("missing required attribute {key}"))
    }
    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        attr_num(self.get(key), key, default)
    }
    fn req_num<T: std::str::FromStr>(&self, key: &str) -> Result<T, String> {
        let v = self.req_str(key)?;
        v.trim()
            .parse()
            .map_err(|_| format!("attribute {key}={v:?} is not a number"))
    }
    fn metric_type(&self) -> Result<MetricType, String> {
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
fn read_attrs<'a>(e: &'a BytesStart<'_>, limits: &Limits) -> Result<Attrs<'a>, String> {
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
/// rules are those of the general path ([`open`]): the first of a repeated
/// attribute counts, and the same checks fail with the same messages.
#[allow(
    clippy::indexing_slicing,
    reason = "constant indices below 9 into an array of 9"
)]
fn read_metric(raw: &str, limits: &Limits) -> Result<Metric, String> {
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

/// Opens a frame. `sizes` are the previous host's metric count and cluster's
/// host count: hosts of one source are alike, so their vectors start at the
/// right size instead of growing (and moving) step by step. Capped, so a
/// hostile document cannot make the next element reserve gigabytes.
fn open(
    name: &[u8],
    a: &Attrs<'_>,
    limits: &Limits,
    sizes: (usize, usize),
) -> Result<Opened, String> {
    Ok(match name {
        b"GRID" => Opened::Frame(Frame::Grid(Box::new(Grid {
            name: a.req("NAME")?,
            authority: a.text("AUTHORITY"),
            localtime: match a.get("LOCALTIME") {
                Some(_) => Some(a.req_num("LOCALTIME")?),
                None => None,
            },
            ..Grid::default()
        }))),
        b"CLUSTER" => Opened::Frame(Frame::Cluster(Box::new(Cluster {
            name: a.req("NAME")?,
            localtime: a.num("LOCALTIME", 0)?,
            owner: a.text_or("OWNER", "unspecified"),
            latlong: a.text_or("LATLONG", "unspecified"),
            url: a.text_or("URL", "unspecified"),
            hosts: Vec::with_capacity(sizes.1.min(4096)),
            ..Cluster::default()
        }))),
        b"HOST" => Opened::Frame(Frame::Host(Box::new(Host {
            name: a.req("NAME")?,
            ip: a.req("IP")?,
            tags: a.text("TAGS"),
            reported: a.req_num("REPORTED")?,
            tn: a.num("TN", 0)?,
            tmax: a.num("TMAX", 0)?,
            dmax: a.num("DMAX", 0)?,
            location: a.text_or("LOCATION", "unspecified"),
            // gmond prints the 32-bit heartbeat signed: "-462061456" is
            // 3832905840, not an error.
            gmond_started: u64::from(a.num::<i64>("GMOND_STARTED", 0)? as u32),
            metrics: Vec::with_capacity(sizes.0.min(4096)),
        }))),
        // METRIC is read by `read_metric`.
        b"METRICS" => Opened::Summary(SummaryMetric {
            name: a.req_short("NAME")?,
            sum: a.req_short("SUM")?,
            num: a.req_num("NUM")?,
            metric_type: a.metric_type()?,
            units: a.short("UNITS"),
            slope: Slope::parse(a.get("SLOPE").unwrap_or("unspecified")),
            source: a.short_or("SOURCE", "gmond"),
            extras: Vec::with_capacity(limits.max_extras.min(4)),
        }),
        b"EXTRA_DATA" => Opened::Frame(Frame::ExtraData),
        _ => Opened::Frame(Frame::Other),
    })
}

/// What an opening tag made.
enum Opened {
    Frame(Frame),
    Metric(Metric),
    Summary(SummaryMetric),
}

fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Root => "GANGLIA_XML",
        Frame::Grid(_) => "GRID",
        Frame::Cluster(_) => "CLUSTER",
        Frame::Host(_) => "HOST",
        Frame::Metric => "METRIC",
        Frame::Summary => "METRICS",
        Frame::ExtraData => "EXTRA_DATA",
        Frame::Skip => "(skipped)",
        Frame::Other => "(other)",
    }
}

struct Builder {
    doc: Document,
    stack: Vec<Frame>,
    /// Metrics of the last host closed, hosts of the last cluster closed.
    sizes: (usize, usize),
}

impl Builder {
    /// Attaches a completed frame to its parent.
    fn close(&mut self, frame: Frame) {
        let parent = self.stack.last_mut();
        match (frame, parent) {
            (Frame::Grid(g), Some(Frame::Grid(p))) => p.grids.push(*g),
            (Frame::Grid(g), Some(Frame::Root)) => self.doc.items.push(Item::Grid(*g)),
            (Frame::Cluster(c), Some(Frame::Grid(p))) => {
                self.sizes.1 = c.hosts.len();
                p.clusters.push(*c);
            }
            (Frame::Cluster(c), Some(Frame::Root)) => self.doc.items.push(Item::Cluster(*c)),
            (Frame::Host(h), Some(Frame::Cluster(p))) => {
                self.sizes.0 = h.metrics.len();
                p.hosts.push(*h);
            }
            (Frame::Host(h), Some(Frame::Root)) => self.doc.items.push(Item::Host(*h)),
            // Anything else in an unexpected place is ignored.
            _ => {}
        }
    }

    /// Adds an opened METRIC or METRICS to its parent and returns the frame
    /// that stands for it while it is open; in an unexpected place it is
    /// ignored (an `Other` frame), as it would have been on closing.
    fn open_child(&mut self, opened: Opened) -> Frame {
        match (opened, self.stack.last_mut()) {
            (Opened::Frame(f), _) => f,
            (Opened::Metric(m), Some(Frame::Host(p))) => {
                p.metrics.push(m);
                Frame::Metric
            }
            (Opened::Summary(s), Some(Frame::Grid(p))) => {
                p.metrics.push(s);
                Frame::Summary
            }
            (Opened::Summary(s), Some(Frame::Cluster(p))) => {
                p.metrics.push(s);
                Frame::Summary
            }
            _ => Frame::Other,
        }
    }

    /// The extras of the METRIC or METRICS whose EXTRA_DATA is open.
    #[allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        reason = "`n >= 3` is checked first, so every index is below `n`"
    )]
    fn open_extras(&mut self) -> Option<&mut Vec<(CompactString, CompactString)>> {
        let n = self.stack.len();
        if n < 3 || !matches!(self.stack[n - 1], Frame::ExtraData) {
            return None;
        }
        let (owner, child) = self.stack[..n - 1].split_at_mut(n - 2);
        match (&child[0], &mut owner[n - 3]) {
            (Frame::Metric, Frame::Host(h)) => h.metrics.last_mut().map(|m| &mut m.extras),
            (Frame::Summary, Frame::Cluster(c)) => c.metrics.last_mut().map(|m| &mut m.extras),
            (Frame::Summary, Frame::Grid(g)) => g.metrics.last_mut().map(|m| &mut m.extras),
            _ => None,
        }
    }

    /// After an error: keep complete children, mark open containers incomplete,
    /// drop the open host/metric (their content is unknown).
    fn unwind(&mut self) {
        while let Some(f) = self.stack.pop() {
            match f {
                // An open METRICS is already in its parent: take it back out.
                Frame::Summary => match self.stack.last_mut() {
                    Some(Frame::Cluster(c)) => {
                        c.metrics.pop();
                    }
                    Some(Frame::Grid(g)) => {
                        g.metrics.pop();
                    }
                    _ => {}
                },
                Frame::Grid(mut g) => {
                    g.complete = false;
                    self.close(Frame::Grid(g));
                }
                Frame::Cluster(mut c) => {
                    c.complete = false;
                    self.close(Frame::Cluster(c));
                }
                _ => {}
            }
        }
    }
}

/// Parses a plain, UTF-8 XML document held in memory (use [`parse_bytes`]
/// for gzip or ISO-8859-1). Events and attributes borrow from `input`, so
/// only what the [`Document`] keeps is copied.
pub fn parse(input: &[u8], limits: &Limits) -> ParseOutcome {
    let mut reader = quick_xml::Reader::from_reader(input);
    let cfg = reader.config_mut();
    cfg.trim_text(true);
    cfg.check_end_names = true;
    cfg.expand_empty_elements = false;

    let mut b = Builder {
        doc: Document::default(),
        stack: Vec::new(),
        sizes: (0, 0),
    };
    let mut skipped = Vec::new();
    let mut elements = 0usize;
    let mut skip_depth: Option<usize> = None;
    let mut seen_root = false;

    let error = loop {
        let offset = reader.buffer_position();
        let ev = match reader.read_event() {
            Ok(ev) => ev,
            Err(quick_xml::Error::Io(e)) => break Some(XmlError::Io(e.to_string())),
            Err(e) => {
                break Some(XmlError::Malformed {
                    offset: reader.error_position(),
                    message: e.to_string(),
                });
            }
        };
        let (start, empty) = match &ev {
            Event::Start(s) => (Some(s), false),
            Event::Empty(s) => (Some(s), true),
            Event::End(_) => {
                if let Some(f) = b.stack.pop() {
                    if matches!(f, Frame::Skip) {
                        if skip_depth == Some(b.stack.len()) {
                            skip_depth = None;
                        }
                    } else if matches!(f, Frame::Root) {
                        break None;
                    } else {
                        let f = match f {
                            Frame::Grid(mut g) => {
                                g.complete = true;
                                Frame::Grid(g)
                            }
                            Frame::Cluster(mut c) => {
                                c.complete = true;
                                Frame::Cluster(c)
                            }
                            f => f,
                        };
                        b.close(f);
                    }
                }
                continue;
            }
            Event::Eof => {
                if !seen_root {
                    break Some(XmlError::NotGanglia {
                        found: "(empty document)".into(),
                    });
                }
                break b.stack.last().map(|f| XmlError::Truncated {
                    offset,
                    element: frame_name(f).to_string(),
                });
            }
            _ => continue,
        };
        let Some(start) = start else { continue };
        elements = elements.saturating_add(1);
        if elements > limits.max_elements {
            break Some(XmlError::Limit {
                offset,
                limit: format!("more than {} elements", limits.max_elements),
            });
        }
        if b.stack.len() >= limits.max_depth {
            break Some(XmlError::Limit {
                offset,
                limit: format!("nesting deeper than {}", limits.max_depth),
            });
        }
        let qname = start.name();
        let name: &[u8] = qname.as_ref().as_bytes();
        if !seen_root {
            if name != b"GANGLIA_XML" {
                break Some(XmlError::NotGanglia {
                    found: String::from_utf8_lossy(name).into_owned(),
                });
            }
            seen_root = true;
            let a = match read_attrs(start, limits) {
                Ok(a) => a,
                Err(message) => break Some(XmlError::Malformed { offset, message }),
            };
            b.doc.version = a.text("VERSION");
            b.doc.source = a.text("SOURCE");
            if empty {
                break None;
            }
            b.stack.push(Frame::Root);
            continue;
        }
        if skip_depth.is_some() {
            if !empty {
                b.stack.push(Frame::Skip);
            }
            continue;
        }
        // EXTRA_ELEMENT is the only content of EXTRA_DATA; attach it directly.
        if name == b"EXTRA_ELEMENT" {
            if let Some(extras) = b.open_extras() {
                match read_attrs(start, limits)
                    .and_then(|a| Ok((a.req_short("NAME")?, a.req_short("VAL")?)))
                {
                    Ok(pair) if extras.len() < limits.max_extras => extras.push(pair),
                    Ok(_) => skipped.push(Skipped {
                        element: "EXTRA_ELEMENT".into(),
                        offset,
                        reason: format!("more than {} extras", limits.max_extras),
                    }),
                    Err(reason) => skipped.push(Skipped {
                        element: "EXTRA_ELEMENT".into(),
                        offset,
                        reason,
                    }),
                }
            }
            if !empty {
                b.stack.push(Frame::Other);
            }
            continue;
        }
        if name == b"HOSTS" {
            let summary = read_attrs(start, limits).and_then(|a| {
                Ok(HostsSummary {
                    up: a.req_num("UP")?,
                    down: a.req_num("DOWN")?,
                })
            });
            match (summary, b.stack.last_mut()) {
                (Ok(s), Some(Frame::Grid(g))) => g.hosts = Some(s),
                (Ok(s), Some(Frame::Cluster(c))) => c.hosts_summary = Some(s),
                (Ok(_), _) => {}
                (Err(reason), _) => skipped.push(Skipped {
                    element: "HOSTS".into(),
                    offset,
                    reason,
                }),
            }
            if !empty {
                b.stack.push(Frame::Other);
            }
            continue;
        }
        let frame = if name == b"METRIC" {
            read_metric(start.attributes_raw(), limits).map(Opened::Metric)
        } else {
            read_attrs(start, limits).and_then(|a| open(name, &a, limits, b.sizes))
        };
        match frame {
            Ok(opened) => {
                let f = b.open_child(opened);
                if empty {
                    let f = match f {
                        Frame::Grid(mut g) => {
                            g.complete = true;
                            Frame::Grid(g)
                        }
                        Frame::Cluster(mut c) => {
                            c.complete = true;
                            Frame::Cluster(c)
                        }
                        f => f,
                    };
                    b.close(f);
                } else {
                    b.stack.push(f);
                }
            }
            Err(reason) => {
                skipped.push(Skipped {
                    element: String::from_utf8_lossy(name).into_owned(),
                    offset,
                    reason,
                });
                if !empty {
                    skip_depth = Some(b.stack.len());
                    b.stack.push(Frame::Skip);
                }
            }
        }
    };
    if error.is_some() {
        b.unwind();
    }
    ParseOutcome {
        document: b.doc,
        skipped,
        error,
    }
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

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn oversized_documents_are_refused_whole_plain_or_gunzipped() {
        let doc = br#"<GANGLIA_XML VERSION="3.7.2" SOURCE="gmond"><CLUSTER NAME="c" LOCALTIME="1"/></GANGLIA_XML>"#;
        let fits = Limits {
            max_input_bytes: doc.len(),
            ..Limits::default()
        };
        let tight = Limits {
            max_input_bytes: doc.len() - 1,
            ..Limits::default()
        };
        let refused = Some(XmlError::LimitExceeded {
            limit: doc.len() - 1,
        });
        assert_eq!(parse_bytes(doc, &fits).error, None);
        let gz = gzip(doc);
        let fits_gz = Limits {
            max_input_bytes: doc.len().max(gz.len()),
            ..Limits::default()
        };
        assert_eq!(parse_bytes(&gz, &fits_gz).error, None);
        let out = parse_bytes(doc, &tight);
        assert_eq!((out.error, out.document.items.len()), (refused.clone(), 0));
        let out = parse_bytes(&gzip(doc), &tight);
        assert_eq!((out.error, out.document.items.len()), (refused, 0));
        // A bomb: 64 MiB of zeros in about 64 KB, against a 1 MiB limit.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        let small = Limits {
            max_input_bytes: 1 << 20,
            ..Limits::default()
        };
        let out = parse_bytes(&bomb, &small);
        assert_eq!(out.error, Some(XmlError::LimitExceeded { limit: 1 << 20 }));
        assert!(
            out.error.unwrap().to_string().contains("max_input_bytes"),
            "the message names the limit"
        );
    }

    #[test]
    fn inflating_stops_one_byte_past_the_cap() {
        let bomb = gzip(&vec![0u8; 8 << 20]);
        let (plain, result) = inflate(&bomb, 1000);
        assert!(result.is_ok());
        assert_eq!(plain.len(), 1000);
        assert!(plain.capacity() <= 1000, "{}", plain.capacity());
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

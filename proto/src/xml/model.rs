//! The document a reader returns ([`Document`] and what it holds), its
//! errors and the limits it is read under.

use crate::model::{MetricType, Slope};
use compact_str::CompactString;
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

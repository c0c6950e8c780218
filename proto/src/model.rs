//! The metric and host model shared by agent, aggregator and XML: type names,
//! slopes, and the well-known extra-data keys.

use std::fmt;

/// A metric's value type as Ganglia names it (`TYPE` in XML, `type` in metadata).
///
/// `timestamp` exists only in the DTD; no sender Ganglia ships produces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricType {
    /// `string`
    String,
    /// `int8`
    Int8,
    /// `uint8`
    Uint8,
    /// `int16`
    Int16,
    /// `uint16`
    Uint16,
    /// `int32`
    Int32,
    /// `uint32`
    Uint32,
    /// `float`
    Float,
    /// `double`
    Double,
    /// `timestamp`
    Timestamp,
}

impl MetricType {
    /// Every type, in DTD order.
    pub const ALL: [MetricType; 10] = [
        MetricType::String,
        MetricType::Int8,
        MetricType::Uint8,
        MetricType::Int16,
        MetricType::Uint16,
        MetricType::Int32,
        MetricType::Uint32,
        MetricType::Float,
        MetricType::Double,
        MetricType::Timestamp,
    ];

    /// The exact name Ganglia uses on the wire and in XML.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::String => "string",
            MetricType::Int8 => "int8",
            MetricType::Uint8 => "uint8",
            MetricType::Int16 => "int16",
            MetricType::Uint16 => "uint16",
            MetricType::Int32 => "int32",
            MetricType::Uint32 => "uint32",
            MetricType::Float => "float",
            MetricType::Double => "double",
            MetricType::Timestamp => "timestamp",
        }
    }

    /// Parses a type name exactly (case-sensitive, like gmetad's DTD enumeration).
    pub fn parse(s: &str) -> Option<MetricType> {
        MetricType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Integer types: summaries print their SUM with `%.f`.
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            MetricType::Int8
                | MetricType::Uint8
                | MetricType::Int16
                | MetricType::Uint16
                | MetricType::Int32
                | MetricType::Uint32
        )
    }

    /// Numeric types are summarised and get RRD files; `string` and `timestamp` never do.
    pub fn is_numeric(self) -> bool {
        self.is_integer() || matches!(self, MetricType::Float | MetricType::Double)
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a metric's value evolves; decides the RRD data-source type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slope {
    /// 0: constant (`zero`).
    Zero,
    /// 1: a counter (`positive`) → RRD `COUNTER`.
    Positive,
    /// 2: `negative`.
    Negative,
    /// 3: a gauge (`both`).
    Both,
    /// 4: `unspecified` — also what any unknown word or number becomes.
    Unspecified,
    /// 5: `derivative` → RRD `DERIVE` (not in Ganglia's DTD).
    Derivative,
}

impl Slope {
    /// The number carried in metadata messages.
    pub fn to_wire(self) -> u32 {
        match self {
            Slope::Zero => 0,
            Slope::Positive => 1,
            Slope::Negative => 2,
            Slope::Both => 3,
            Slope::Unspecified => 4,
            Slope::Derivative => 5,
        }
    }

    /// From the wire number; unknown numbers are `unspecified`, as in gmond.
    pub fn from_wire(v: u32) -> Slope {
        match v {
            0 => Slope::Zero,
            1 => Slope::Positive,
            2 => Slope::Negative,
            3 => Slope::Both,
            5 => Slope::Derivative,
            _ => Slope::Unspecified,
        }
    }

    /// The word printed in XML `SLOPE` and accepted by gmetric `-s`.
    pub fn as_str(self) -> &'static str {
        match self {
            Slope::Zero => "zero",
            Slope::Positive => "positive",
            Slope::Negative => "negative",
            Slope::Both => "both",
            Slope::Unspecified => "unspecified",
            Slope::Derivative => "derivative",
        }
    }

    /// gmond's `cstr_to_slope`: exact, case-sensitive; anything else is `unspecified`.
    pub fn parse(s: &str) -> Slope {
        match s {
            "zero" => Slope::Zero,
            "positive" => Slope::Positive,
            "negative" => Slope::Negative,
            "both" => Slope::Both,
            "derivative" => Slope::Derivative,
            _ => Slope::Unspecified,
        }
    }

    /// The RRD data-source type gmetad creates for this slope.
    pub fn rrd_ds_type(self) -> &'static str {
        match self {
            Slope::Positive => "COUNTER",
            Slope::Derivative => "DERIVE",
            _ => "GAUGE",
        }
    }
}

impl fmt::Display for Slope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Well-known `extra_data` keys.
pub mod extra {
    /// Metric group shown in the web UI; may repeat.
    pub const GROUP: &str = "GROUP";
    /// Display title.
    pub const TITLE: &str = "TITLE";
    /// Description.
    pub const DESC: &str = "DESC";
    /// Informational cluster name (gmetric `-C`).
    pub const CLUSTER: &str = "CLUSTER";
    /// `"IP:hostname"` of a spoofed metric.
    pub const SPOOF_HOST: &str = "SPOOF_HOST";
    /// `"yes"` on a spoofed heartbeat.
    pub const SPOOF_HEARTBEAT: &str = "SPOOF_HEARTBEAT";
    /// Module spoof name.
    pub const SPOOF_NAME: &str = "SPOOF_NAME";
}

/// Metric names gmond treats specially: shown as HOST attributes, not METRICs.
pub mod special {
    /// Value = the sender's start time → `GMOND_STARTED`.
    pub const HEARTBEAT: &str = "heartbeat";
    /// Value = the host's location → `LOCATION`.
    pub const LOCATION: &str = "location";
    /// Kept as a normal metric (gstat reads it).
    pub const GEXEC: &str = "gexec";
}

/// Describes a metric: everything a metadata (128) message carries besides the id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricMeta {
    /// The type name as sent (kept verbatim; see [`MetricMeta::metric_type`]).
    pub type_name: String,
    /// Metric name.
    pub name: String,
    /// Units, verbatim (load metrics use a single space).
    pub units: String,
    /// Slope number as sent (see [`Slope::from_wire`]).
    pub slope: u32,
    /// Seconds between sends the sender promises.
    pub tmax: u32,
    /// Seconds after which the metric may be forgotten (0 = never).
    pub dmax: u32,
    /// Extra data pairs in wire order.
    pub extra: Vec<(String, String)>,
}

impl MetricMeta {
    /// The parsed type, if it is one of Ganglia's names.
    pub fn metric_type(&self) -> Option<MetricType> {
        MetricType::parse(&self.type_name)
    }

    /// The parsed slope.
    pub fn slope(&self) -> Slope {
        Slope::from_wire(self.slope)
    }

    /// The first value of an extra-data key.
    pub fn extra(&self, key: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every `GROUP` value, in order.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.extra
            .iter()
            .filter(|(k, _)| k == extra::GROUP)
            .map(|(_, v)| v.as_str())
    }
}

//! gmond and gmetad XML.
//!
//! - [`writer`]: a streaming writer with gmond's or gmetad's exact element and
//!   attribute order, starting with Ganglia's DTD header byte for byte.
//! - [`reader`]: a streaming reader (quick-xml) for whatever gmond/gmetad send,
//!   plain or gzip, that keeps what parsed before an error and skips a broken
//!   host or metric instead of the whole document.
//!
//! Escaping policy: Ganglia escapes almost nothing, so one `&` in a unit breaks
//! every downstream parser. Every attribute value we write goes through
//! [`escape`]: entities for `& < > " '`, numeric references for tab/LF/CR and
//! every non-ASCII character, `?` for characters XML 1.0 forbids outright. The
//! output is pure ASCII and well-formed whatever bytes senders used. SLOPE
//! `derivative`, which the DTD does not list, is written as `unspecified`
//! ([`writer::dtd_slope`]) so documents validate against Ganglia's own DTD.

mod attrs;
mod builder;
pub mod escape;
mod input;
mod model;
pub mod reader;
pub mod writer;

pub use reader::{
    Cluster, Document, Grid, Host, HostsSummary, Item, Limits, Metric, ParseOutcome, Skipped,
    SummaryMetric, XmlError, parse, parse_bytes,
};
pub use writer::{
    ClusterAttrs, GridAttrs, HEADER, HostAttrs, MetricAttrs, Style, SummaryAttrs, VERSION,
    XmlWriter,
};

use crate::model::MetricType;

/// Formats a summary SUM the way gmetad does: integer types with `%.f`; float
/// and double with as many decimals as the first contributing host's VAL string
/// has after its last `.` (`precision_from`).
pub fn format_sum(sum: f64, metric_type: MetricType, precision_from: &str) -> String {
    if metric_type.is_integer() {
        return format!("{sum:.0}");
    }
    let prec = precision_from
        .rsplit_once('.')
        .map(|(_, decimals)| decimals.bytes().take_while(u8::is_ascii_digit).count())
        .unwrap_or(0);
    format!("{:.*}", prec.min(20), sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_formatting_follows_gmetad() {
        assert_eq!(format_sum(42.5, MetricType::Float, "42.5"), "42.5");
        assert_eq!(format_sum(0.0, MetricType::Float, "0.00"), "0.00");
        assert_eq!(format_sum(7.0, MetricType::Uint32, "7"), "7");
        assert_eq!(format_sum(1.25, MetricType::Double, "1"), "1");
        assert_eq!(format_sum(1.23456, MetricType::Double, "1.000"), "1.235");
    }
}

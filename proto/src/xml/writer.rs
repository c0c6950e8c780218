//! Streaming gmond/gmetad XML writer.
//!
//! Element and attribute order follow gmond (`Style::Gmond`: HOST `TAGS` third)
//! or gmetad (`Style::Gmetad`: HOST `TAGS` last, METRIC `SOURCE` last) exactly,
//! one tag per line with `\n` endings, because gstat reads attributes by position.
//! Attribute structs are typed so a caller cannot reorder them.

use super::escape::write_escaped;
use crate::model::{MetricType, Slope};
use std::io::{self, Write};

/// The document header both gmond and gmetad send first, byte for byte.
pub const HEADER: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" standalone="yes"?>
<!DOCTYPE GANGLIA_XML [
   <!ELEMENT GANGLIA_XML (GRID|CLUSTER|HOST)*>
      <!ATTLIST GANGLIA_XML VERSION CDATA #REQUIRED>
      <!ATTLIST GANGLIA_XML SOURCE CDATA #REQUIRED>
   <!ELEMENT GRID (CLUSTER | GRID | HOSTS | METRICS)*>
      <!ATTLIST GRID NAME CDATA #REQUIRED>
      <!ATTLIST GRID AUTHORITY CDATA #REQUIRED>
      <!ATTLIST GRID LOCALTIME CDATA #IMPLIED>
   <!ELEMENT CLUSTER (HOST | HOSTS | METRICS)*>
      <!ATTLIST CLUSTER NAME CDATA #REQUIRED>
      <!ATTLIST CLUSTER OWNER CDATA #IMPLIED>
      <!ATTLIST CLUSTER LATLONG CDATA #IMPLIED>
      <!ATTLIST CLUSTER URL CDATA #IMPLIED>
      <!ATTLIST CLUSTER LOCALTIME CDATA #REQUIRED>
   <!ELEMENT HOST (METRIC)*>
      <!ATTLIST HOST NAME CDATA #REQUIRED>
      <!ATTLIST HOST IP CDATA #REQUIRED>
      <!ATTLIST HOST LOCATION CDATA #IMPLIED>
      <!ATTLIST HOST TAGS CDATA #IMPLIED>
      <!ATTLIST HOST REPORTED CDATA #REQUIRED>
      <!ATTLIST HOST TN CDATA #IMPLIED>
      <!ATTLIST HOST TMAX CDATA #IMPLIED>
      <!ATTLIST HOST DMAX CDATA #IMPLIED>
      <!ATTLIST HOST GMOND_STARTED CDATA #IMPLIED>
   <!ELEMENT METRIC (EXTRA_DATA*)>
      <!ATTLIST METRIC NAME CDATA #REQUIRED>
      <!ATTLIST METRIC VAL CDATA #REQUIRED>
      <!ATTLIST METRIC TYPE (string | int8 | uint8 | int16 | uint16 | int32 | uint32 | float | double | timestamp) #REQUIRED>
      <!ATTLIST METRIC UNITS CDATA #IMPLIED>
      <!ATTLIST METRIC TN CDATA #IMPLIED>
      <!ATTLIST METRIC TMAX CDATA #IMPLIED>
      <!ATTLIST METRIC DMAX CDATA #IMPLIED>
      <!ATTLIST METRIC SLOPE (zero | positive | negative | both | unspecified) #IMPLIED>
      <!ATTLIST METRIC SOURCE (gmond) 'gmond'>
   <!ELEMENT EXTRA_DATA (EXTRA_ELEMENT*)>
   <!ELEMENT EXTRA_ELEMENT EMPTY>
      <!ATTLIST EXTRA_ELEMENT NAME CDATA #REQUIRED>
      <!ATTLIST EXTRA_ELEMENT VAL CDATA #REQUIRED>
   <!ELEMENT HOSTS EMPTY>
      <!ATTLIST HOSTS UP CDATA #REQUIRED>
      <!ATTLIST HOSTS DOWN CDATA #REQUIRED>
      <!ATTLIST HOSTS SOURCE (gmond | gmetad) #REQUIRED>
   <!ELEMENT METRICS (EXTRA_DATA*)>
      <!ATTLIST METRICS NAME CDATA #REQUIRED>
      <!ATTLIST METRICS SUM CDATA #REQUIRED>
      <!ATTLIST METRICS NUM CDATA #REQUIRED>
      <!ATTLIST METRICS TYPE (string | int8 | uint8 | int16 | uint16 | int32 | uint32 | float | double | timestamp) #REQUIRED>
      <!ATTLIST METRICS UNITS CDATA #IMPLIED>
      <!ATTLIST METRICS SLOPE (zero | positive | negative | both | unspecified) #IMPLIED>
      <!ATTLIST METRICS SOURCE (gmond) 'gmond'>
]>
"#;

/// The Ganglia version we announce (tools compare it loosely).
pub const VERSION: &str = "3.7.2";

/// Whose layout to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// gmond (port 8649): `SOURCE="gmond"`, HOST `TAGS` third, no METRIC `SOURCE`.
    Gmond,
    /// gmetad (ports 8651/8652): `SOURCE="gmetad"`, HOST `TAGS` last, METRIC `SOURCE` last.
    Gmetad,
}

/// `<GRID>` attributes.
#[derive(Debug, Clone, Copy)]
pub struct GridAttrs<'a> {
    /// `NAME`
    pub name: &'a str,
    /// `AUTHORITY` (URL)
    pub authority: &'a str,
    /// `LOCALTIME` (epoch seconds)
    pub localtime: u64,
}

/// `<CLUSTER>` attributes.
#[derive(Debug, Clone, Copy)]
pub struct ClusterAttrs<'a> {
    /// `NAME`
    pub name: &'a str,
    /// `LOCALTIME` (epoch seconds)
    pub localtime: u64,
    /// `OWNER`
    pub owner: &'a str,
    /// `LATLONG`
    pub latlong: &'a str,
    /// `URL`
    pub url: &'a str,
}

/// `<HOST>` attributes.
#[derive(Debug, Clone, Copy)]
pub struct HostAttrs<'a> {
    /// `NAME`
    pub name: &'a str,
    /// `IP`
    pub ip: &'a str,
    /// `TAGS`
    pub tags: &'a str,
    /// `REPORTED` (epoch seconds of the last packet)
    pub reported: u64,
    /// `TN` (seconds since then)
    pub tn: u64,
    /// `TMAX`
    pub tmax: u32,
    /// `DMAX`
    pub dmax: u32,
    /// `LOCATION`
    pub location: &'a str,
    /// `GMOND_STARTED`
    pub gmond_started: u64,
}

/// `<METRIC>` attributes.
#[derive(Debug, Clone, Copy)]
pub struct MetricAttrs<'a> {
    /// `NAME`
    pub name: &'a str,
    /// `VAL`, already rendered
    pub val: &'a str,
    /// `TYPE`
    pub metric_type: MetricType,
    /// `UNITS`
    pub units: &'a str,
    /// `TN`
    pub tn: u64,
    /// `TMAX`
    pub tmax: u32,
    /// `DMAX`
    pub dmax: u32,
    /// `SLOPE`
    pub slope: Slope,
}

/// `<METRICS>` (summary) attributes.
#[derive(Debug, Clone, Copy)]
pub struct SummaryAttrs<'a> {
    /// `NAME`
    pub name: &'a str,
    /// `SUM`, already formatted (see [`crate::xml::format_sum`])
    pub sum: &'a str,
    /// `NUM`
    pub num: u32,
    /// `UNITS`
    pub units: &'a str,
    /// `SLOPE`
    pub slope: Slope,
}

/// The DTD only knows five slopes; `derivative` (which gmond prints anyway,
/// making its document invalid) is written as `unspecified` so every document
/// we emit validates. Consumers of our RRDs still get `DERIVE`: that decision is
/// made from our state, not from XML.
pub fn dtd_slope(slope: Slope) -> &'static str {
    match slope {
        Slope::Derivative => "unspecified",
        s => s.as_str(),
    }
}

/// Streaming writer; every method writes complete lines.
pub struct XmlWriter<W: Write> {
    w: W,
    style: Style,
    itoa: itoa_lite::Buffer,
}

mod itoa_lite {
    /// Formats integers without allocating.
    pub struct Buffer([u8; 20]);
    impl Buffer {
        pub fn new() -> Self {
            Buffer([0; 20])
        }
        #[allow(
            clippy::indexing_slicing,
            clippy::arithmetic_side_effects,
            reason = "u64::MAX has 20 digits, the buffer's size: `i` stays in 0..20"
        )]
        pub fn format(&mut self, mut v: u64) -> &[u8] {
            let mut i = self.0.len();
            loop {
                i -= 1;
                self.0[i] = b'0' + (v % 10) as u8;
                v /= 10;
                if v == 0 {
                    break;
                }
            }
            &self.0[i..]
        }
    }
}

impl<W: Write> XmlWriter<W> {
    /// A writer in the given style.
    pub fn new(w: W, style: Style) -> Self {
        XmlWriter {
            w,
            style,
            itoa: itoa_lite::Buffer::new(),
        }
    }

    /// Gives the sink back.
    pub fn into_inner(self) -> W {
        self.w
    }

    /// The style.
    pub fn style(&self) -> Style {
        self.style
    }

    fn attr(&mut self, name: &str, value: &str) -> io::Result<()> {
        self.w.write_all(b" ")?;
        self.w.write_all(name.as_bytes())?;
        self.w.write_all(b"=\"")?;
        write_escaped(&mut self.w, value)?;
        self.w.write_all(b"\"")
    }

    fn attr_num(&mut self, name: &str, value: u64) -> io::Result<()> {
        self.w.write_all(b" ")?;
        self.w.write_all(name.as_bytes())?;
        self.w.write_all(b"=\"")?;
        let digits = self.itoa.format(value);
        self.w.write_all(digits)?;
        self.w.write_all(b"\"")
    }

    /// Header, DTD and the opening `<GANGLIA_XML>`.
    pub fn begin_document(&mut self) -> io::Result<()> {
        self.w.write_all(HEADER.as_bytes())?;
        let source = match self.style {
            Style::Gmond => "gmond",
            Style::Gmetad => "gmetad",
        };
        writeln!(
            self.w,
            "<GANGLIA_XML VERSION=\"{VERSION}\" SOURCE=\"{source}\">"
        )
    }

    /// `</GANGLIA_XML>`, then flush.
    pub fn end_document(&mut self) -> io::Result<()> {
        self.w.write_all(b"</GANGLIA_XML>\n")?;
        self.w.flush()
    }

    /// `<GRID …>`
    pub fn begin_grid(&mut self, a: &GridAttrs<'_>) -> io::Result<()> {
        self.w.write_all(b"<GRID")?;
        self.attr("NAME", a.name)?;
        self.attr("AUTHORITY", a.authority)?;
        self.attr_num("LOCALTIME", a.localtime)?;
        self.w.write_all(b">\n")
    }

    /// `</GRID>`
    pub fn end_grid(&mut self) -> io::Result<()> {
        self.w.write_all(b"</GRID>\n")
    }

    /// `<CLUSTER …>`
    pub fn begin_cluster(&mut self, a: &ClusterAttrs<'_>) -> io::Result<()> {
        self.w.write_all(b"<CLUSTER")?;
        self.attr("NAME", a.name)?;
        self.attr_num("LOCALTIME", a.localtime)?;
        self.attr("OWNER", a.owner)?;
        self.attr("LATLONG", a.latlong)?;
        self.attr("URL", a.url)?;
        self.w.write_all(b">\n")
    }

    /// `</CLUSTER>`
    pub fn end_cluster(&mut self) -> io::Result<()> {
        self.w.write_all(b"</CLUSTER>\n")
    }

    /// `<HOST …>` in the writer's style.
    pub fn begin_host(&mut self, a: &HostAttrs<'_>) -> io::Result<()> {
        self.w.write_all(b"<HOST")?;
        self.attr("NAME", a.name)?;
        self.attr("IP", a.ip)?;
        if self.style == Style::Gmond {
            self.attr("TAGS", a.tags)?;
        }
        self.attr_num("REPORTED", a.reported)?;
        self.attr_num("TN", a.tn)?;
        self.attr_num("TMAX", u64::from(a.tmax))?;
        self.attr_num("DMAX", u64::from(a.dmax))?;
        self.attr("LOCATION", a.location)?;
        // Both daemons keep the heartbeat in 32 bits; gmond prints it signed
        // (a garbage `gmetric -H` value shows as negative), gmetad unsigned.
        let started = a.gmond_started as u32;
        if self.style == Style::Gmond && started > i32::MAX as u32 {
            let signed = (started as i32).to_string();
            self.attr("GMOND_STARTED", &signed)?;
        } else {
            self.attr_num("GMOND_STARTED", u64::from(started))?;
        }
        if self.style == Style::Gmetad {
            self.attr("TAGS", a.tags)?;
        }
        self.w.write_all(b">\n")
    }

    /// `</HOST>`
    pub fn end_host(&mut self) -> io::Result<()> {
        self.w.write_all(b"</HOST>\n")
    }

    /// A whole `<METRIC>` with its `<EXTRA_DATA>` (printed even when empty, as
    /// gmond does). `extras` are written in the order given.
    pub fn metric<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        a: &MetricAttrs<'_>,
        extras: impl IntoIterator<Item = (K, V)>,
    ) -> io::Result<()> {
        self.w.write_all(b"<METRIC")?;
        self.attr("NAME", a.name)?;
        self.attr("VAL", a.val)?;
        self.attr("TYPE", a.metric_type.as_str())?;
        self.attr("UNITS", a.units)?;
        self.attr_num("TN", a.tn)?;
        self.attr_num("TMAX", u64::from(a.tmax))?;
        self.attr_num("DMAX", u64::from(a.dmax))?;
        self.attr("SLOPE", dtd_slope(a.slope))?;
        if self.style == Style::Gmetad {
            // The DTD admits only `gmond` here, and it is all gmetad ever prints.
            self.attr("SOURCE", "gmond")?;
        }
        self.w.write_all(b">\n")?;
        self.extra_data(extras)?;
        self.w.write_all(b"</METRIC>\n")
    }

    fn extra_data<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        extras: impl IntoIterator<Item = (K, V)>,
    ) -> io::Result<()> {
        self.w.write_all(b"<EXTRA_DATA>\n")?;
        for (k, v) in extras {
            self.w.write_all(b"<EXTRA_ELEMENT")?;
            self.attr("NAME", k.as_ref())?;
            self.attr("VAL", v.as_ref())?;
            self.w.write_all(b"/>\n")?;
        }
        self.w.write_all(b"</EXTRA_DATA>\n")
    }

    /// `<HOSTS UP DOWN SOURCE/>` (summary).
    pub fn hosts(&mut self, up: u32, down: u32, source: &str) -> io::Result<()> {
        self.w.write_all(b"<HOSTS")?;
        self.attr_num("UP", u64::from(up))?;
        self.attr_num("DOWN", u64::from(down))?;
        // The DTD allows only gmond|gmetad here.
        self.attr("SOURCE", if source == "gmond" { "gmond" } else { "gmetad" })?;
        self.w.write_all(b"/>\n")
    }

    /// A whole `<METRICS>` summary element; TYPE is always `double`, as gmetad prints it.
    pub fn metrics<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        a: &SummaryAttrs<'_>,
        extras: impl IntoIterator<Item = (K, V)>,
    ) -> io::Result<()> {
        self.w.write_all(b"<METRICS")?;
        self.attr("NAME", a.name)?;
        self.attr("SUM", a.sum)?;
        self.attr_num("NUM", u64::from(a.num))?;
        self.attr("TYPE", "double")?;
        self.attr("UNITS", a.units)?;
        self.attr("SLOPE", dtd_slope(a.slope))?;
        self.attr("SOURCE", "gmond")?;
        self.w.write_all(b">\n")?;
        self.extra_data(extras)?;
        self.w.write_all(b"</METRICS>\n")
    }
}

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

use super::attrs::{read_attrs, read_metric};
use super::builder::{Builder, Frame, Opened, frame_name, open};
pub use super::input::parse_bytes;
pub use super::model::{
    Cluster, Document, Grid, Host, HostsSummary, Item, Limits, Metric, ParseOutcome, Skipped,
    SummaryMetric, XmlError,
};
use quick_xml::events::Event;

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

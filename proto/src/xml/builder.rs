//! The document under construction: a stack of open elements, each closed
//! into its parent, and what survives an error.

use super::attrs::Attrs;
use super::model::{Cluster, Document, Grid, Host, Item, Limits, Metric, SummaryMetric};
use crate::model::Slope;
use compact_str::CompactString;

/// An open element. Containers are boxed so that the stack's entries stay
/// small: a frame is pushed and popped for every element, EXTRA_DATA included.
/// METRIC and METRICS are not held here: they are added to their parent when
/// they open and filled in place (see [`Builder::open_child`]), which saves
/// moving each one twice.
pub(super) enum Frame {
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

/// Opens a frame. `sizes` are the previous host's metric count and cluster's
/// host count: hosts of one source are alike, so their vectors start at the
/// right size instead of growing (and moving) step by step. Capped, so a
/// hostile document cannot make the next element reserve gigabytes.
pub(super) fn open(
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
pub(super) enum Opened {
    Frame(Frame),
    Metric(Metric),
    Summary(SummaryMetric),
}

pub(super) fn frame_name(f: &Frame) -> &'static str {
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

pub(super) struct Builder {
    pub(super) doc: Document,
    pub(super) stack: Vec<Frame>,
    /// Metrics of the last host closed, hosts of the last cluster closed.
    pub(super) sizes: (usize, usize),
}

impl Builder {
    /// Attaches a completed frame to its parent.
    pub(super) fn close(&mut self, frame: Frame) {
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
    pub(super) fn open_child(&mut self, opened: Opened) -> Frame {
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
    pub(super) fn open_extras(&mut self) -> Option<&mut Vec<(CompactString, CompactString)>> {
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
    pub(super) fn unwind(&mut self) {
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

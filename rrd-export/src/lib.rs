//! rrd-export: dump RRD ranges from any gmetad-layout tree (ours or a real
//! gmetad's) to CSV, JSON or NDJSON — exactly the values `rrdtool fetch` gives,
//! with timestamps, and NaN/±Inf kept distinct.
//!
//! The library does the work ([`select`], [`resolve_time`], [`export`]); the
//! binary is glue. The aggregator's dashboard downloads use this library too.
//!
//! Conventions:
//! - Rows are timestamped like `rrdtool fetch`: the end of each step interval.
//! - Values are printed in the shortest form that reads back to the same f64.
//! - Non-finite values: CSV writes `NaN`, `Inf`, `-Inf` (or empty cells with
//!   `Missing::Empty`); JSON/NDJSON write the strings `"NaN"`, `"Inf"`, `"-Inf"`
//!   so that NaN and infinities stay distinct (a JSON number cannot hold them).
//! - Several files with different steps: the coarsest step wins; finer series
//!   are consolidated into it with the requested CF (AVERAGE/MIN/MAX/LAST over
//!   the non-NaN values), and a warning says so.

mod reader;

use ganglion_rrd::RrdError;
use ganglion_rrd::layout::{self, SUMMARY_DIR, Series};
use globset::{Glob, GlobMatcher};
use reader::Reader;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why an export failed.
#[derive(Debug, Error)]
pub enum ExportError {
    /// librrd refused (missing file, not an RRD, truncated, unknown CF…).
    #[error("{0}")]
    Rrd(#[from] RrdError),
    /// A bad glob.
    #[error("bad glob {glob:?}: {message}")]
    Glob {
        /// The pattern.
        glob: String,
        /// Why.
        message: String,
    },
    /// Reading the tree failed.
    #[error("cannot read {path}: {source}")]
    Walk {
        /// Directory.
        path: String,
        /// Cause.
        source: io::Error,
    },
    /// Writing the output failed.
    #[error("write failed: {0}")]
    Write(#[from] io::Error),
    /// A bad option value.
    #[error("{0}")]
    Usage(String),
}

/// Consolidation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    /// AVERAGE
    Average,
    /// MIN
    Min,
    /// MAX
    Max,
    /// LAST
    Last,
}

impl Cf {
    /// Parses AVERAGE|MIN|MAX|LAST (case-insensitive).
    pub fn parse(s: &str) -> Option<Cf> {
        match s.to_ascii_uppercase().as_str() {
            "AVERAGE" => Some(Cf::Average),
            "MIN" => Some(Cf::Min),
            "MAX" => Some(Cf::Max),
            "LAST" => Some(Cf::Last),
            _ => None,
        }
    }

    /// The name librrd expects.
    pub fn as_str(self) -> &'static str {
        match self {
            Cf::Average => "AVERAGE",
            Cf::Min => "MIN",
            Cf::Max => "MAX",
            Cf::Last => "LAST",
        }
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// CSV with a header.
    Csv,
    /// One JSON document with `meta` and `rows`.
    Json,
    /// One JSON object per row per line.
    Ndjson,
}

/// JSON row shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowShape {
    /// `{"timestamp": t, "<column>": v, …}`
    Objects,
    /// `[t, v, …]` in column order.
    Arrays,
}

/// How timestamps are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFormat {
    /// Epoch seconds.
    Epoch,
    /// RFC 3339 in UTC.
    Rfc3339,
}

/// How CSV writes non-finite values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// `NaN`, `Inf`, `-Inf`.
    Spelled,
    /// Empty cells.
    Empty,
}

/// Output options.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Format.
    pub format: Format,
    /// JSON rows as objects or arrays.
    pub rows: RowShape,
    /// Timestamp style.
    pub time_format: TimeFormat,
    /// CSV non-finite style.
    pub missing: Missing,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            format: Format::Csv,
            rows: RowShape::Objects,
            time_format: TimeFormat::Epoch,
            missing: Missing::Spelled,
        }
    }
}

/// One file to export, with what the layout says it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The file.
    pub path: PathBuf,
    /// Its place in the gmetad layout, when known.
    pub series: Option<Series>,
}

/// Selection by globs over a gmetad tree.
#[derive(Debug, Clone, Default)]
pub struct TreeSelection {
    /// Cluster (or child grid) name glob.
    pub cluster: Option<String>,
    /// Host name glob.
    pub host: Option<String>,
    /// Metric name glob.
    pub metric: Option<String>,
    /// Include `__SummaryInfo__` files (cluster and grid summaries).
    pub summary: bool,
}

fn matcher(g: &Option<String>) -> Result<Option<GlobMatcher>, ExportError> {
    g.as_ref()
        .map(|p| {
            Glob::new(p)
                .map(|g| g.compile_matcher())
                .map_err(|e| ExportError::Glob {
                    glob: p.clone(),
                    message: e.to_string(),
                })
        })
        .transpose()
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, ExportError> {
    let rd = std::fs::read_dir(dir).map_err(|source| ExportError::Walk {
        path: dir.display().to_string(),
        source,
    })?;
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

/// Files under `root` matching `sel`, in a stable order.
pub fn select(root: &Path, sel: &TreeSelection) -> Result<Vec<Source>, ExportError> {
    let (mc, mh, mm) = (
        matcher(&sel.cluster)?,
        matcher(&sel.host)?,
        matcher(&sel.metric)?,
    );
    let ok = |m: &Option<GlobMatcher>, s: &str| m.as_ref().is_none_or(|m| m.is_match(s));
    let mut out = Vec::new();
    for cdir in read_dir_sorted(root)? {
        if !cdir.is_dir() {
            continue;
        }
        for hdir in read_dir_sorted(&cdir)? {
            if !hdir.is_dir() {
                continue;
            }
            for f in read_dir_sorted(&hdir)? {
                let Some(series) = layout::parse(root, &f) else {
                    continue;
                };
                let keep = match &series {
                    Series::Host {
                        cluster,
                        host,
                        metric,
                    } => !sel.summary && ok(&mc, cluster) && ok(&mh, host) && ok(&mm, metric),
                    Series::Summary { source, metric } => {
                        sel.summary && ok(&mc, source) && ok(&mm, metric)
                    }
                    Series::Root { .. } => false,
                };
                if keep {
                    out.push(Source {
                        path: f,
                        series: Some(series),
                    });
                }
            }
        }
    }
    // The grid's own summary lives one level up.
    if sel.summary && sel.cluster.is_none() {
        let dir = root.join(SUMMARY_DIR);
        if dir.is_dir() {
            for f in read_dir_sorted(&dir)? {
                if let Some(s @ Series::Root { .. }) = layout::parse(root, &f)
                    && let Series::Root { metric } = &s
                    && ok(&mm, metric)
                {
                    out.push(Source {
                        path: f,
                        series: Some(s),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Resolves `--start`/`--end`: RFC 3339 / ISO 8601 dates, or anything
/// `rrdtool fetch` accepts (`now-1d`, `-2h`, `end-1w`, epoch seconds), parsed
/// by librrd itself so the semantics are identical.
pub fn resolve_time(start: &str, end: &str) -> Result<(i64, i64), ExportError> {
    let as_epoch = |s: &str| -> String {
        s.parse::<jiff::Timestamp>()
            .map(|t| t.as_second().to_string())
            .or_else(|_| {
                s.parse::<jiff::civil::DateTime>().map(|d| {
                    d.to_zoned(jiff::tz::TimeZone::UTC)
                        .map(|z| z.timestamp().as_second().to_string())
                        .unwrap_or_default()
                })
            })
            .unwrap_or_else(|_| s.to_string())
    };
    Ok(ganglion_rrd::parse_time_range(
        &as_epoch(start),
        &as_epoch(end),
    )?)
}

/// A column of the output.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// `cluster/host/metric[:ds]`, or the file path for files outside a tree.
    pub name: String,
    /// Source file.
    pub file: PathBuf,
    /// Data source name.
    pub ds: String,
    /// Layout position, when known.
    pub series: Option<Series>,
}

/// What an export produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// First row's timestamp minus one step (rrdtool's adjusted start).
    pub start: i64,
    /// Adjusted end.
    pub end: i64,
    /// Step of the rows.
    pub step: u64,
    /// Columns.
    pub columns: Vec<Column>,
    /// Rows written.
    pub rows: usize,
    /// Notes for the user (e.g. mixed steps).
    pub warnings: Vec<String>,
}

fn label(src: &Source, ds: &str, n_ds: usize) -> String {
    let base = match &src.series {
        Some(Series::Host {
            cluster,
            host,
            metric,
        }) => format!("{cluster}/{host}/{metric}"),
        Some(Series::Summary { source, metric }) => format!("{source}/{SUMMARY_DIR}/{metric}"),
        Some(Series::Root { metric }) => format!("{SUMMARY_DIR}/{metric}"),
        None => src.path.display().to_string(),
    };
    if n_ds > 1 {
        format!("{base}:{ds}")
    } else {
        base
    }
}

/// Consolidates values with `cf` the way rrdtool consolidates PDPs: NaN
/// inputs are skipped, and the result is NaN only when every input is.
pub fn consolidate(vals: impl Iterator<Item = f64>, cf: Cf) -> f64 {
    let mut c = Consolidator::default();
    for v in vals {
        c.push(v, cf);
    }
    c.take(cf)
}

/// [`consolidate`] one value at a time, so a run of rows can be merged
/// while they are read, without holding them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Consolidator {
    acc: Option<f64>,
    n: u32,
}

impl Consolidator {
    /// Adds one value (NaN is skipped).
    pub fn push(&mut self, v: f64, cf: Cf) {
        if v.is_nan() {
            return;
        }
        self.n += 1;
        self.acc = Some(match (self.acc, cf) {
            (None, _) => v,
            (Some(a), Cf::Average) => a + v,
            (Some(a), Cf::Min) => a.min(v),
            (Some(a), Cf::Max) => a.max(v),
            (Some(_), Cf::Last) => v,
        });
    }

    /// The consolidated value, and a fresh start for the next run.
    pub fn take(&mut self, cf: Cf) -> f64 {
        let r = match (self.acc, cf) {
            (None, _) => f64::NAN,
            (Some(a), Cf::Average) => a / f64::from(self.n),
            (Some(a), _) => a,
        };
        *self = Consolidator::default();
        r
    }
}

/// A time range and consolidation to export.
#[derive(Debug, Clone)]
pub struct Request {
    /// Files.
    pub sources: Vec<Source>,
    /// Start (epoch).
    pub start: i64,
    /// End (epoch).
    pub end: i64,
    /// CF.
    pub cf: Cf,
    /// Desired resolution in seconds (RRA choice as `rrdtool fetch -r`).
    pub resolution: Option<u64>,
    /// Rows of each file held in memory at once; `None` sizes the windows
    /// so that all files together hold about [`WINDOW_VALUES`] values.
    pub window_rows: Option<usize>,
}

/// Default memory bound of an export, in values held (8 bytes each) across
/// all files: long ranges are read in windows of
/// `WINDOW_VALUES / files` rows (at least 1024) per file.
pub const WINDOW_VALUES: usize = 8 << 20;

fn write_value(out: &mut Vec<u8>, v: f64, json: bool, missing: Missing) {
    if v.is_finite() {
        let mut b = ryu::Buffer::new();
        let s = b.format_finite(v);
        // "1.0" → "1": shorter and still exact.
        out.extend_from_slice(s.strip_suffix(".0").unwrap_or(s).as_bytes());
        return;
    }
    let word: &[u8] = if v.is_nan() {
        b"NaN"
    } else if v > 0.0 {
        b"Inf"
    } else {
        b"-Inf"
    };
    match (json, missing) {
        (true, _) => {
            out.push(b'"');
            out.extend_from_slice(word);
            out.push(b'"');
        }
        (false, Missing::Spelled) => out.extend_from_slice(word),
        (false, Missing::Empty) => {}
    }
}

fn write_time(out: &mut Vec<u8>, t: i64, tf: TimeFormat, json: bool) {
    match tf {
        TimeFormat::Epoch => out.extend_from_slice(itoa::Buffer::new().format(t).as_bytes()),
        TimeFormat::Rfc3339 => {
            let s = jiff::Timestamp::from_second(t)
                .map(|t| t.to_string())
                .unwrap_or_default();
            if json {
                out.push(b'"');
            }
            out.extend_from_slice(s.as_bytes());
            if json {
                out.push(b'"');
            }
        }
    }
}

fn csv_field(out: &mut Vec<u8>, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Every source fetched and aligned on one time grid.
pub struct Joined {
    readers: Vec<Reader>,
    cf: Cf,
    /// Step of the rows.
    pub step: u64,
    /// First row's timestamp.
    pub first: i64,
    /// Last row's timestamp bound (inclusive).
    pub end: i64,
    /// Columns, in order.
    pub columns: Vec<Column>,
    /// Notes for the user.
    pub warnings: Vec<String>,
}

impl Joined {
    /// Row timestamps: multiples of the step in (start, end], like rrdtool fetch.
    pub fn times(&self) -> impl Iterator<Item = i64> + use<> {
        let (first, step, end) = (self.first, self.step as i64, self.end);
        (0..)
            .map(move |k| first + k * step)
            .take_while(move |t| *t <= end)
    }

    /// Values of every column at row time `t`, appended to `out`. Rows must
    /// be asked for in increasing time: files are read forward in windows.
    pub fn row(&mut self, t: i64, out: &mut Vec<f64>) -> Result<(), ExportError> {
        let s = self.step as i64;
        for f in &mut self.readers {
            let n = f.ds_names.len();
            if f.step == self.step {
                let idx = (t - f.start) / s - 1;
                if idx >= 0 && (idx as usize) < f.rows() {
                    let i = idx as usize;
                    f.ensure(i, i + 1)?;
                    out.extend((0..n).map(|d| f.value(i, d)));
                } else {
                    out.extend(std::iter::repeat_n(f64::NAN, n));
                }
            } else {
                // Consolidate the finer rows inside (t - step, t].
                let fs = f.step as i64;
                let lo = ((t - s - f.start) / fs).max(0) as usize;
                let hi = ((t - f.start) / fs).clamp(0, f.rows() as i64) as usize;
                if lo < hi {
                    f.ensure(lo, hi)?;
                }
                for d in 0..n {
                    out.push(consolidate((lo..hi).map(|i| f.value(i, d)), self.cf));
                }
            }
        }
        Ok(())
    }
}

/// A decimated table: `(row times, step, columns)`.
pub type Decimated = (Vec<i64>, u64, Vec<Vec<f64>>);

impl Joined {
    /// Number of rows [`Joined::times`] yields.
    pub fn rows(&self) -> usize {
        if self.end < self.first {
            return 0;
        }
        ((self.end - self.first) / self.step.max(1) as i64) as usize + 1
    }

    /// The table column by column, with at most `max_rows` rows: when the
    /// chosen RRA has more rows than that, runs of `k` consecutive rows are
    /// consolidated with the request's CF (so a graph `max_rows` pixels wide
    /// gets one point per pixel). Each merged row carries the timestamp of its
    /// last member, as an RRA row does. Returns `(times, step, columns)`.
    ///
    /// Runs are merged while the rows are read, so memory is
    /// O(`max_rows` × columns) whatever the range (plus the readers' windows).
    pub fn decimated(&mut self, max_rows: usize) -> Result<Decimated, ExportError> {
        let n_rows = self.rows();
        let max_rows = max_rows.max(1);
        let mut k = n_rows.div_ceil(max_rows).max(1);
        // Aligned buckets can cut a partial one at each end: grow k until
        // the count of buckets is within max_rows, as promised.
        let step = self.step.max(1) as i64;
        let last = self
            .first
            .saturating_add(step.saturating_mul(n_rows as i64 - 1));
        let buckets = |k: usize| {
            let big = step.saturating_mul(k as i64).max(1);
            let b = |t: i64| (t + big - 1).div_euclid(big);
            (b(last) - b(self.first) + 1).max(0) as usize
        };
        while n_rows > 0 && buckets(k) > max_rows && k < n_rows {
            k += 1;
        }
        let out_rows = n_rows / k + 2;
        let ncols = self.columns.len();
        let mut out_times = Vec::with_capacity(out_rows);
        let mut cols: Vec<Vec<f64>> = vec![Vec::with_capacity(out_rows); ncols];
        let mut acc = vec![Consolidator::default(); ncols];
        // Buckets end on multiples of k·step so that refreshes and different
        // ranges merge the same rows (stable graphs while live).
        let big = (self.step as i64).saturating_mul(k as i64).max(1);
        let cf = self.cf;
        // Rows that end before every file's oldest row are NaN in every
        // column: a ten-year range over an RRA of weeks walks its millions of
        // empty rows without reading (each still yields its bucket).
        let data_from = self
            .readers
            .iter()
            .map(Reader::data_from)
            .min()
            .unwrap_or(i64::MIN);
        let mut bucket: Option<i64> = None;
        let mut last_t = 0;
        let mut row = Vec::with_capacity(ncols);
        for t in self.times() {
            let end = (t + big - 1).div_euclid(big) * big;
            if bucket.is_some_and(|b| b != end) {
                out_times.push(last_t);
                for (c, a) in cols.iter_mut().zip(acc.iter_mut()) {
                    c.push(a.take(cf));
                }
            }
            bucket = Some(end);
            last_t = t;
            if t <= data_from {
                continue;
            }
            row.clear();
            self.row(t, &mut row)?;
            for (a, v) in acc.iter_mut().zip(&row) {
                a.push(*v, cf);
            }
        }
        if bucket.is_some() {
            out_times.push(last_t);
            for (c, a) in cols.iter_mut().zip(acc.iter_mut()) {
                c.push(a.take(cf));
            }
        }
        Ok((out_times, self.step * k as u64, cols))
    }
}

/// Opens every source (`progress` is called after each) and aligns them.
/// Short ranges are fetched at once; long ones are read in windows while the
/// rows are walked (see [`Request::window_rows`]).
pub fn join(req: &Request, mut progress: impl FnMut(usize, usize)) -> Result<Joined, ExportError> {
    let window = req
        .window_rows
        .unwrap_or_else(|| (WINDOW_VALUES / req.sources.len().max(1)).max(1024));
    let mut fetched: Vec<Reader> = Vec::with_capacity(req.sources.len());
    for (i, src) in req.sources.iter().enumerate() {
        fetched.push(Reader::open(
            &src.path,
            req.cf,
            req.start,
            req.end,
            req.resolution,
            window,
        )?);
        progress(i + 1, req.sources.len());
    }
    let mut warnings = Vec::new();
    let step = fetched.iter().map(|f| f.step).max().unwrap_or(1).max(1);
    if fetched.iter().any(|f| f.step != step) {
        warnings.push(format!(
            "files have different steps; using the coarsest ({step} s) and consolidating finer ones with {}",
            req.cf.as_str()
        ));
    }
    let start = fetched.iter().map(|f| f.start).min().unwrap_or(req.start);
    let end = fetched.iter().map(|f| f.end).max().unwrap_or(req.end);
    let s = step as i64;
    let first = (start.div_euclid(s) + 1) * s;
    let mut columns = Vec::new();
    for (src, f) in req.sources.iter().zip(&fetched) {
        for ds in &f.ds_names {
            columns.push(Column {
                name: label(src, ds, f.ds_names.len()),
                file: src.path.clone(),
                ds: ds.clone(),
                series: src.series.clone(),
            });
        }
    }
    Ok(Joined {
        readers: fetched,
        cf: req.cf,
        step,
        first,
        end,
        columns,
        warnings,
    })
}

/// Fetches every source and writes the joined table to `w`. `progress` is
/// called after each file is fetched.
pub fn export<W: Write>(
    req: &Request,
    opts: &Options,
    w: &mut W,
    progress: impl FnMut(usize, usize),
) -> Result<Summary, ExportError> {
    export_joined(join(req, progress)?, opts, w)
}

/// Writes an already [`join`]ed table to `w` in bounded chunks (callers
/// check [`Joined::rows`] first when they cap the output).
pub fn export_joined<W: Write>(
    mut joined: Joined,
    opts: &Options,
    w: &mut W,
) -> Result<Summary, ExportError> {
    let (step, first, end) = (joined.step, joined.first, joined.end);
    let s = step as i64;
    let columns = &joined.columns.clone();
    let names_json: Vec<String> = columns.iter().map(|c| json_str(&c.name)).collect();
    let mut out = Vec::with_capacity(64 * 1024);
    // Header.
    match opts.format {
        Format::Csv => {
            out.extend_from_slice(b"timestamp");
            for c in columns {
                out.push(b',');
                csv_field(&mut out, &c.name);
            }
            out.push(b'\n');
        }
        Format::Json => {
            out.extend_from_slice(
                format!(
                    "{{\"meta\":{{\"start\":{},\"end\":{end},\"step\":{step},\"cf\":\"{}\",\"non_finite\":[\"NaN\",\"Inf\",\"-Inf\"],\"columns\":[",
                    first - s,
                    joined.cf.as_str()
                )
                .as_bytes(),
            );
            for (k, c) in columns.iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                let (cluster, host, metric) = match &c.series {
                    Some(Series::Host {
                        cluster,
                        host,
                        metric,
                    }) => (
                        Some(cluster.as_str()),
                        Some(host.as_str()),
                        Some(metric.as_str()),
                    ),
                    Some(Series::Summary { source, metric }) => {
                        (Some(source.as_str()), None, Some(metric.as_str()))
                    }
                    Some(Series::Root { metric }) => (None, None, Some(metric.as_str())),
                    None => (None, None, None),
                };
                let o = |v: Option<&str>| v.map_or("null".to_string(), json_str);
                out.extend_from_slice(
                    format!(
                        "{{\"name\":{},\"file\":{},\"ds\":{},\"cluster\":{},\"host\":{},\"metric\":{},\"summary\":{}}}",
                        names_json[k],
                        json_str(&c.file.display().to_string()),
                        json_str(&c.ds),
                        o(cluster),
                        o(host),
                        o(metric),
                        matches!(c.series, Some(Series::Summary { .. } | Series::Root { .. }))
                    )
                    .as_bytes(),
                );
            }
            out.extend_from_slice(b"]},\"rows\":[");
        }
        Format::Ndjson => {}
    }
    let mut rows = 0usize;
    let mut vals = Vec::with_capacity(columns.len());
    for t in joined.times() {
        match opts.format {
            Format::Csv => write_time(&mut out, t, opts.time_format, false),
            Format::Json | Format::Ndjson => {
                if opts.format == Format::Json && rows > 0 {
                    out.push(b',');
                }
                match opts.rows {
                    RowShape::Arrays if opts.format == Format::Json => out.push(b'['),
                    _ => out.extend_from_slice(b"{\"timestamp\":"),
                }
                write_time(&mut out, t, opts.time_format, true);
            }
        }
        vals.clear();
        joined.row(t, &mut vals)?;
        for (col, v) in vals.iter().enumerate() {
            out.push(b',');
            match opts.format {
                Format::Csv => write_value(&mut out, *v, false, opts.missing),
                _ if opts.rows == RowShape::Arrays && opts.format == Format::Json => {
                    write_value(&mut out, *v, true, opts.missing)
                }
                _ => {
                    out.extend_from_slice(names_json[col].as_bytes());
                    out.push(b':');
                    write_value(&mut out, *v, true, opts.missing);
                }
            }
        }
        match opts.format {
            Format::Csv => out.push(b'\n'),
            Format::Json => out.push(if opts.rows == RowShape::Arrays {
                b']'
            } else {
                b'}'
            }),
            Format::Ndjson => out.extend_from_slice(b"}\n"),
        }
        rows += 1;
        // Stream: hand output over in bounded chunks.
        if out.len() >= 60 * 1024 {
            w.write_all(&out)?;
            out.clear();
        }
    }
    if opts.format == Format::Json {
        out.extend_from_slice(b"]}\n");
    }
    w.write_all(&out)?;
    w.flush()?;
    Ok(Summary {
        start: first - s,
        end,
        step,
        columns: joined.columns.clone(),
        rows,
        warnings: joined.warnings.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_shortest_and_non_finite_distinct() {
        let mut v = Vec::new();
        for x in [
            1.0,
            0.1,
            1e300,
            -2.5e-7,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            write_value(&mut v, x, false, Missing::Spelled);
            v.push(b' ');
        }
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "1 0.1 1e300 -2.5e-7 NaN Inf -Inf "
        );
        let mut v = Vec::new();
        write_value(&mut v, f64::NAN, true, Missing::Spelled);
        assert_eq!(v, b"\"NaN\"");
        let mut v = Vec::new();
        write_value(&mut v, f64::NAN, false, Missing::Empty);
        assert!(v.is_empty());
    }

    #[test]
    fn consolidation_rules() {
        let xs = [1.0, f64::NAN, 3.0];
        assert_eq!(consolidate(xs.into_iter(), Cf::Average), 2.0);
        assert_eq!(consolidate(xs.into_iter(), Cf::Min), 1.0);
        assert_eq!(consolidate(xs.into_iter(), Cf::Max), 3.0);
        assert_eq!(consolidate(xs.into_iter(), Cf::Last), 3.0);
        assert!(consolidate([f64::NAN].into_iter(), Cf::Average).is_nan());
    }

    #[test]
    fn decimation_merges_aligned_runs_with_the_cf() {
        // Ten rows at 10 s: t = 110..=200, values 1..=10, one gap.
        let mut data: Vec<f64> = (1..=10).map(f64::from).collect();
        data[3] = f64::NAN;
        let mut j = Joined {
            readers: vec![Reader::from_fetched(
                Path::new("x.rrd"),
                Cf::Average,
                ganglion_rrd::Fetched {
                    start: 100,
                    end: 200,
                    step: 10,
                    ds_names: vec!["sum".into()],
                    data,
                },
            )],
            cf: Cf::Average,
            step: 10,
            first: 110,
            end: 200,
            columns: vec![Column {
                name: "x".into(),
                file: "x.rrd".into(),
                ds: "sum".into(),
                series: None,
            }],
            warnings: vec![],
        };
        assert_eq!(j.rows(), j.times().count());
        let (t, step, c) = j.decimated(100).unwrap();
        assert_eq!((t.len(), step), (10, 10));
        assert_eq!(t, j.times().collect::<Vec<_>>());
        assert!(c[0][3].is_nan());
        // At most 4 rows: k = 3, buckets end on multiples of 30 s.
        let (t, step, c) = j.decimated(4).unwrap();
        assert_eq!(step, 30);
        assert_eq!(t, vec![120, 150, 180, 200]);
        // (1+2)/2, (3+5)/2 (NaN skipped), (6+7+8)/3, (9+10)/2
        assert_eq!(c[0], vec![1.5, 4.0, 7.0, 9.5]);
        // Never more rows than asked for: aligned buckets can cut a partial
        // one at each end, so k grows until they fit.
        for max in 1..=10 {
            let (t, _, c) = j.decimated(max).unwrap();
            assert!(t.len() <= max && !t.is_empty(), "{max}: {t:?}");
            assert_eq!(c[0].len(), t.len());
        }
    }

    #[test]
    fn rfc3339_and_at_style() {
        assert_eq!(
            resolve_time("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z").unwrap(),
            (1767225600, 1767229200)
        );
        let (s, e) = resolve_time("end-2h", "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(e - s, 7200);
        assert!(resolve_time("now", "now-1d").is_err());
    }
}

//! `rrd-export` binary: CLI glue only. Exit status: 0 success, 1 nothing
//! matched, 2 error. A closed output pipe (`| head`) counts as success.

use clap::{Parser, ValueEnum};
use rrd_export::{
    Cf, Format, Missing, Options, Request, RowShape, Source, TimeFormat, TreeSelection,
};
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Csv,
    Json,
    Ndjson,
}

#[derive(Clone, Copy, ValueEnum)]
enum RowsArg {
    Objects,
    Arrays,
}

#[derive(Clone, Copy, ValueEnum)]
enum TimeArg {
    Epoch,
    Rfc3339,
}

#[derive(Clone, Copy, ValueEnum)]
enum MissingArg {
    Nan,
    Empty,
}

/// Export RRD ranges (any gmetad-layout tree) to CSV, JSON or NDJSON, exactly.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// RRD files to export (joined on timestamp, one column per file and DS).
    files: Vec<PathBuf>,
    /// Root of a gmetad-layout tree to select from with the globs below.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Cluster (or child grid) name glob.
    #[arg(long)]
    cluster: Option<String>,
    /// Host name glob.
    #[arg(long)]
    host: Option<String>,
    /// Metric name glob.
    #[arg(long)]
    metric: Option<String>,
    /// Select `__SummaryInfo__` files (cluster and grid summaries) instead of hosts.
    #[arg(long)]
    summary: bool,
    /// Start: rrdtool AT-style (`now-1d`, `-2h`, `end-1w`, epoch) or RFC 3339.
    #[arg(short, long, default_value = "end-1d", allow_hyphen_values = true)]
    start: String,
    /// End: as --start.
    #[arg(short, long, default_value = "now", allow_hyphen_values = true)]
    end: String,
    /// Consolidation function: AVERAGE, MIN, MAX or LAST.
    #[arg(long, default_value = "AVERAGE")]
    cf: String,
    /// Resolution in seconds; the RRA is chosen as `rrdtool fetch -r` does.
    #[arg(short, long)]
    resolution: Option<u64>,
    /// Rows of each file held in memory at once (default: about 8 M values
    /// across all files). For tests of the windowed reading.
    #[arg(long, hide = true)]
    window_rows: Option<usize>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "csv")]
    format: FormatArg,
    /// JSON rows as objects or arrays.
    #[arg(long, value_enum, default_value = "objects")]
    rows: RowsArg,
    /// Timestamps as epoch seconds or RFC 3339.
    #[arg(long, value_enum, default_value = "epoch")]
    time_format: TimeArg,
    /// CSV cells for NaN/±Inf: spelled out, or empty.
    #[arg(long, value_enum, default_value = "nan")]
    missing: MissingArg,
    /// Write here instead of stdout (atomically: nothing is left on error).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// rrdcached address (`unix:/path` or `host:port`): FLUSH each file first.
    #[arg(long)]
    daemon: Option<String>,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("rrd-export: {msg}");
    ExitCode::from(2)
}

fn is_broken_pipe(e: &rrd_export::ExportError) -> bool {
    matches!(e, rrd_export::ExportError::Write(io) if io.kind() == io::ErrorKind::BrokenPipe)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(cf) = Cf::parse(&cli.cf) else {
        return fail(format!(
            "unknown consolidation function {:?} (use AVERAGE, MIN, MAX or LAST)",
            cli.cf
        ));
    };
    if cli.resolution == Some(0) {
        return fail("--resolution must be at least 1 second");
    }
    let mut sources: Vec<Source> = cli
        .files
        .iter()
        .map(|p| Source {
            path: p.clone(),
            series: None,
        })
        .collect();
    if let Some(root) = &cli.root {
        let sel = TreeSelection {
            cluster: cli.cluster.clone(),
            host: cli.host.clone(),
            metric: cli.metric.clone(),
            summary: cli.summary,
        };
        match rrd_export::select(root, &sel) {
            Ok(found) => sources.extend(found),
            Err(e) => return fail(e),
        }
        for s in sources.iter_mut() {
            if s.series.is_none() {
                s.series = ganglion_rrd::layout::parse(root, &s.path);
            }
        }
    } else if cli.cluster.is_some() || cli.host.is_some() || cli.metric.is_some() || cli.summary {
        return fail("--cluster/--host/--metric/--summary need --root DIR");
    }
    if sources.is_empty() {
        eprintln!("rrd-export: no RRD files matched");
        return ExitCode::from(1);
    }
    for s in &sources {
        if !s.path.is_file() {
            return fail(format!("{}: no such file", s.path.display()));
        }
    }
    let (start, end) = match rrd_export::resolve_time(&cli.start, &cli.end) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    if let Some(addr) = &cli.daemon {
        let mut c = match ganglion_rrd::rrdcached::Client::connect(addr) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        for s in &sources {
            let abs = std::fs::canonicalize(&s.path).unwrap_or_else(|_| s.path.clone());
            if let Err(e) = c.flush(&abs) {
                return fail(e);
            }
        }
    }
    let opts = Options {
        format: match cli.format {
            FormatArg::Csv => Format::Csv,
            FormatArg::Json => Format::Json,
            FormatArg::Ndjson => Format::Ndjson,
        },
        rows: match cli.rows {
            RowsArg::Objects => RowShape::Objects,
            RowsArg::Arrays => RowShape::Arrays,
        },
        time_format: match cli.time_format {
            TimeArg::Epoch => TimeFormat::Epoch,
            TimeArg::Rfc3339 => TimeFormat::Rfc3339,
        },
        missing: match cli.missing {
            MissingArg::Nan => Missing::Spelled,
            MissingArg::Empty => Missing::Empty,
        },
    };
    let req = Request {
        sources,
        start,
        end,
        cf,
        resolution: cli.resolution,
        window_rows: cli.window_rows,
    };
    match &cli.output {
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mut tmp = match tempfile::NamedTempFile::new_in(dir) {
                Ok(t) => t,
                Err(e) => return fail(format!("cannot write {}: {e}", path.display())),
            };
            let bar = (io::stderr().is_terminal() && req.sources.len() > 1).then(|| {
                let b = indicatif::ProgressBar::new(req.sources.len() as u64);
                b.set_style(
                    indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files {eta}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b
            });
            let mut w = io::BufWriter::new(tmp.as_file_mut());
            let r = rrd_export::export(&req, &opts, &mut w, |done, _| {
                if let Some(b) = &bar {
                    b.set_position(done as u64);
                }
            });
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            drop(w);
            match r {
                Ok(summary) => {
                    for warn in &summary.warnings {
                        eprintln!("rrd-export: warning: {warn}");
                    }
                    if let Err(e) = tmp.persist(path) {
                        return fail(format!("cannot write {}: {}", path.display(), e.error));
                    }
                    ExitCode::SUCCESS
                }
                // The temp file is removed when dropped: no partial output.
                Err(e) => fail(e),
            }
        }
        None => {
            let stdout = io::stdout();
            let mut w = io::BufWriter::new(stdout.lock());
            match rrd_export::export(&req, &opts, &mut w, |_, _| {}) {
                Ok(summary) => {
                    for warn in &summary.warnings {
                        eprintln!("rrd-export: warning: {warn}");
                    }
                    match w.flush() {
                        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => fail(e),
                        _ => ExitCode::SUCCESS,
                    }
                }
                Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
    }
}

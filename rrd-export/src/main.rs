//! `rrd-export` binary: CLI glue only.
use clap::Parser;

/// Export RRD ranges to CSV, JSON or NDJSON.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}

//! `ganglion-aggregator` binary: CLI glue only.
use clap::Parser;

/// Ganglion aggregator — a drop-in for a collector gmond plus gmetad.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}

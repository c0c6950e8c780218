//! `ganglion-agent` binary: CLI glue only.
use clap::Parser;

/// Ganglion agent — a drop-in gmond sender.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}

//! `check_ganglion`, a Nagios/Icinga plugin that asks a Ganglion aggregator's
//! JSON API (`/api/host/{cluster}/{host}`, `/api/cluster/{cluster}`,
//! `/api/search`) about one host, one metric or one cluster, and answers as
//! the monitoring-plugins guidelines say: one line `GANGLION <STATE> - text |
//! perfdata`, optional long lines under `-v`, exit 0/1/2/3, and 3 (UNKNOWN)
//! for every failure of the plugin itself — bad arguments, an aggregator that
//! cannot be reached or does not answer in time, a reply that is not the
//! expected JSON, a host or metric that is not there.
//!
//! Layout: [`cli`] (arguments → [`cli::Options`]), [`client`] (a small
//! blocking HTTP/1.1 GET with a deadline and basic auth), [`check`] (pure:
//! JSON → [`Outcome`]), [`perfdata`] (labels, units, numbers in the plugin
//! format). Thresholds use `ganglion_proto::range`, the monitoring-plugins
//! range syntax shared with the aggregator's alert rules.

pub mod check;
pub mod cli;
pub mod client;
pub mod perfdata;

pub use check::Outcome;
pub use ganglion_proto::range::{Range, Status};

/// Runs the check `opts` describes against the aggregator (blocking, bounded
/// by `opts.timeout`).
pub fn run(opts: &cli::Options) -> Outcome {
    check::run(opts)
}

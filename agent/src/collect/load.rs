//! Load averages and process counts from /proc/loadavg. gmond reports
//! proc_run as the running count minus one (itself).

use super::{CollectError, src_err};
use procfs::Current;

fn read() -> Result<procfs::LoadAverage, CollectError> {
    procfs::LoadAverage::current().map_err(|e| src_err("/proc/loadavg", e))
}

/// load_one / load_five / load_fifteen.
pub fn load(name: &str) -> Result<f32, CollectError> {
    let l = read()?;
    Ok(match name {
        "load_one" => l.one,
        "load_five" => l.five,
        _ => l.fifteen,
    })
}

/// proc_run / proc_total.
pub fn procs(name: &str) -> Result<u32, CollectError> {
    let l = read()?;
    Ok(match name {
        "proc_run" => l.cur.saturating_sub(1),
        _ => l.max,
    })
}

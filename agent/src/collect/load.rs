//! Load averages and process counts from /proc/loadavg. gmond reports
//! proc_run as the running count minus one (itself).

use super::{CollectError, src_err};
use procfs::Current;
use std::sync::Mutex;
use std::time::{Duration, Instant};

// gmond re-reads /proc/loadavg at most every 5 s.
static CACHE: Mutex<Option<(Instant, Load)>> = Mutex::new(None);

#[derive(Clone, Copy)]
struct Load {
    one: f32,
    five: f32,
    fifteen: f32,
    cur: u32,
    max: u32,
}

fn read() -> Result<Load, CollectError> {
    let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((t, v)) = &*c
        && t.elapsed() < Duration::from_secs(5)
    {
        return Ok(*v);
    }
    let l = procfs::LoadAverage::current().map_err(|e| src_err("/proc/loadavg", e))?;
    let v = Load {
        one: l.one,
        five: l.five,
        fifteen: l.fifteen,
        cur: l.cur,
        max: l.max,
    };
    *c = Some((Instant::now(), v));
    Ok(v)
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

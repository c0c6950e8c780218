//! Memory metrics from /proc/meminfo in KB. `mem_shared` reads the long-gone
//! MemShared field in gmond, so it is always 0; we keep that for compatibility.

use super::{CollectError, src_err};
use procfs::Current;
use std::sync::Mutex;
use std::time::{Duration, Instant};

// gmond re-reads /proc/meminfo at most every 5 s; a group of memory metrics
// is collected together, so one read serves them all.
static CACHE: Mutex<Option<(Instant, procfs::Meminfo)>> = Mutex::new(None);

fn meminfo() -> Result<procfs::Meminfo, CollectError> {
    let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((t, m)) = &*c
        && t.elapsed() < Duration::from_secs(5)
    {
        return Ok(m.clone());
    }
    let m = procfs::Meminfo::current().map_err(|e| src_err("/proc/meminfo", e))?;
    *c = Some((Instant::now(), m.clone()));
    Ok(m)
}

/// One memory metric, in KB.
pub fn collect(name: &str) -> Result<f32, CollectError> {
    let m = meminfo()?;
    let kb = |bytes: u64| (bytes / 1024) as f32;
    Ok(match name {
        "mem_total" => kb(m.mem_total),
        "mem_free" => kb(m.mem_free),
        "mem_shared" => 0.0,
        "mem_buffers" => kb(m.buffers),
        "mem_cached" => kb(m.cached),
        "swap_total" => kb(m.swap_total),
        "swap_free" => kb(m.swap_free),
        "mem_sreclaimable" => kb(m.s_reclaimable.unwrap_or(0)),
        "mem_available" => kb(m.mem_available.unwrap_or(m.mem_free)),
        other => return Err(CollectError::Unknown(other.into())),
    })
}

//! Memory metrics from /proc/meminfo in KB. `mem_shared` reads the long-gone
//! MemShared field in gmond, so it is always 0; we keep that for compatibility.
//!
//! Parsed by hand: the procfs crate builds a map with a string key for each of
//! the ~55 lines and then a struct of every field on each read; the agent
//! needs eight lines, picked out of a kept-open file and its buffer.

use super::procfile::{ProcFile, fields, lines, parse};
use super::{CollectError, src_err};
use std::time::{Duration, Instant};

const PATH: &str = "/proc/meminfo";

/// The /proc/meminfo fields the metrics need, in kB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MemKb {
    pub(crate) total: u64,
    pub(crate) free: u64,
    pub(crate) buffers: u64,
    pub(crate) cached: u64,
    pub(crate) swap_total: u64,
    pub(crate) swap_free: u64,
    /// Absent before Linux 2.6.19.
    pub(crate) s_reclaimable: Option<u64>,
    /// Absent before Linux 3.14.
    pub(crate) available: Option<u64>,
}

/// `Key:   value kB` lines. MemTotal, MemFree, Buffers, Cached, SwapTotal and
/// SwapFree are required (the procfs crate required them too); the kernel
/// prints every one of these in kB, another unit is an error, not a guess.
pub(crate) fn parse_meminfo(text: &[u8]) -> Result<MemKb, &'static str> {
    let (mut total, mut free, mut buffers, mut cached, mut swap_total, mut swap_free) =
        (None, None, None, None, None, None);
    let mut m = MemKb::default();
    for line in lines(text) {
        let mut f = fields(line);
        let Some(key) = f.next() else { continue };
        let slot = match key {
            b"MemTotal:" => &mut total,
            b"MemFree:" => &mut free,
            b"Buffers:" => &mut buffers,
            b"Cached:" => &mut cached,
            b"SwapTotal:" => &mut swap_total,
            b"SwapFree:" => &mut swap_free,
            b"SReclaimable:" => &mut m.s_reclaimable,
            b"MemAvailable:" => &mut m.available,
            _ => continue,
        };
        let value = f.next().and_then(parse::<u64>).ok_or("unparsable value")?;
        if f.next() != Some(b"kB") {
            return Err("value not in kB");
        }
        *slot = Some(value);
    }
    m.total = total.ok_or("no MemTotal")?;
    m.free = free.ok_or("no MemFree")?;
    m.buffers = buffers.ok_or("no Buffers")?;
    m.cached = cached.ok_or("no Cached")?;
    m.swap_total = swap_total.ok_or("no SwapTotal")?;
    m.swap_free = swap_free.ok_or("no SwapFree")?;
    Ok(m)
}

/// Memory collector state.
#[derive(Debug)]
pub struct Mem {
    file: ProcFile,
    cached: Option<(Instant, MemKb)>,
}

impl Default for Mem {
    fn default() -> Self {
        Mem {
            file: ProcFile::new(PATH),
            cached: None,
        }
    }
}

impl Mem {
    fn read(&mut self) -> Result<MemKb, CollectError> {
        // gmond re-reads /proc/meminfo at most every 5 s; a group of memory
        // metrics is collected together, so one read serves them all.
        if let Some((t, m)) = self.cached
            && t.elapsed() < Duration::from_secs(5)
        {
            return Ok(m);
        }
        let m = parse_meminfo(self.file.read()?).map_err(|e| src_err(PATH, e))?;
        self.cached = Some((Instant::now(), m));
        Ok(m)
    }

    /// One memory metric, in KB.
    pub fn collect(&mut self, name: &str) -> Result<f32, CollectError> {
        let m = self.read()?;
        let kb = |v: u64| v as f32;
        Ok(match name {
            "mem_total" => kb(m.total),
            "mem_free" => kb(m.free),
            "mem_shared" => 0.0,
            "mem_buffers" => kb(m.buffers),
            "mem_cached" => kb(m.cached),
            "swap_total" => kb(m.swap_total),
            "swap_free" => kb(m.swap_free),
            "mem_sreclaimable" => kb(m.s_reclaimable.unwrap_or(0)),
            "mem_available" => kb(m.available.unwrap_or(m.free)),
            other => return Err(CollectError::Unknown(other.into())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a VM (kernel 6.18), cut after the fields that matter.
    const MEMINFO: &[u8] = b"MemTotal:       24684092 kB
MemFree:        18355976 kB
MemAvailable:   22851244 kB
Buffers:          290432 kB
Cached:          4097960 kB
SwapCached:            0 kB
Active:          1712332 kB
Inactive:        3794652 kB
SwapTotal:       2097148 kB
SwapFree:        2097148 kB
Slab:             512332 kB
SReclaimable:     421640 kB
SUnreclaim:        90692 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
";

    #[test]
    fn parses_the_needed_fields() {
        assert_eq!(
            parse_meminfo(MEMINFO),
            Ok(MemKb {
                total: 24684092,
                free: 18355976,
                buffers: 290432,
                cached: 4097960,
                swap_total: 2097148,
                swap_free: 2097148,
                s_reclaimable: Some(421640),
                available: Some(22851244),
            })
        );
    }

    #[test]
    fn optional_and_bad_fields() {
        let old = b"MemTotal: 1 kB\nMemFree: 2 kB\nBuffers: 3 kB\nCached: 4 kB\nSwapTotal: 5 kB\nSwapFree: 6 kB\n";
        let m = parse_meminfo(old).unwrap();
        assert_eq!((m.s_reclaimable, m.available, m.swap_free), (None, None, 6));
        assert_eq!(parse_meminfo(b"MemTotal: 1 kB\n"), Err("no MemFree"));
        assert_eq!(parse_meminfo(b"MemTotal: x kB\n"), Err("unparsable value"));
        assert_eq!(parse_meminfo(b"MemTotal: 1 MB\n"), Err("value not in kB"));
    }

    #[test]
    fn reads_this_host() {
        let mut m = Mem::default();
        assert!(m.collect("mem_total").unwrap() > 0.0);
        assert_eq!(m.collect("mem_shared").unwrap(), 0.0);
        assert!(matches!(
            m.collect("mem_bogus"),
            Err(CollectError::Unknown(_))
        ));
    }
}

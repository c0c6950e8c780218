//! Load averages and process counts from /proc/loadavg. gmond reports
//! proc_run as the running count minus one (itself).
//!
//! Parsed by hand from a kept-open file: five fields do not need the procfs
//! crate's reader (a new file, string and parse per read), and this was the
//! last use of that crate, which the agent no longer links.

use super::procfile::{ProcFile, fields, parse};
use super::{CollectError, src_err};
use std::time::{Duration, Instant};

const PATH: &str = "/proc/loadavg";

/// One read of /proc/loadavg.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LoadAvg {
    pub(crate) one: f32,
    pub(crate) five: f32,
    pub(crate) fifteen: f32,
    /// Runnable entities now.
    pub(crate) cur: u32,
    /// Entities that exist.
    pub(crate) max: u32,
}

/// `0.67 0.56 0.39 2/86 30994`: three averages, running/total, last pid
/// (required too, as the procfs crate did).
pub(crate) fn parse_loadavg(text: &[u8]) -> Option<LoadAvg> {
    let mut f = fields(text);
    let (one, five, fifteen) = (parse(f.next()?)?, parse(f.next()?)?, parse(f.next()?)?);
    let curmax = f.next()?;
    let slash = curmax.iter().position(|&b| b == b'/')?;
    let _last_pid: u32 = parse(f.next()?)?;
    Some(LoadAvg {
        one,
        five,
        fifteen,
        cur: parse(&curmax[..slash])?,
        max: parse(&curmax[slash + 1..])?,
    })
}

/// Load collector state.
#[derive(Debug)]
pub struct Load {
    file: ProcFile,
    cached: Option<(Instant, LoadAvg)>,
}

impl Default for Load {
    fn default() -> Self {
        Load {
            file: ProcFile::new(PATH),
            cached: None,
        }
    }
}

impl Load {
    fn read(&mut self) -> Result<LoadAvg, CollectError> {
        // gmond re-reads /proc/loadavg at most every 5 s.
        if let Some((t, v)) = self.cached
            && t.elapsed() < Duration::from_secs(5)
        {
            return Ok(v);
        }
        let v =
            parse_loadavg(self.file.read()?).ok_or_else(|| src_err(PATH, "unexpected format"))?;
        self.cached = Some((Instant::now(), v));
        Ok(v)
    }

    /// load_one / load_five / load_fifteen.
    pub fn load(&mut self, name: &str) -> Result<f32, CollectError> {
        let l = self.read()?;
        Ok(match name {
            "load_one" => l.one,
            "load_five" => l.five,
            _ => l.fifteen,
        })
    }

    /// proc_run / proc_total.
    pub fn procs(&mut self, name: &str) -> Result<u32, CollectError> {
        let l = self.read()?;
        Ok(match name {
            "proc_run" => l.cur.saturating_sub(1),
            _ => l.max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loadavg() {
        // Captured from a VM (kernel 6.18).
        assert_eq!(
            parse_loadavg(b"0.67 0.56 0.39 2/86 30994\n"),
            Some(LoadAvg {
                one: 0.67,
                five: 0.56,
                fifteen: 0.39,
                cur: 2,
                max: 86,
            })
        );
        assert_eq!(parse_loadavg(b"0.67 0.56 0.39 2-86 30994\n"), None);
        assert_eq!(parse_loadavg(b"0.67 0.56 0.39 2/86\n"), None);
        assert_eq!(parse_loadavg(b"0.67 x 0.39 2/86 1\n"), None);
        assert_eq!(parse_loadavg(b""), None);
    }

    #[test]
    fn reads_this_host() {
        let mut l = Load::default();
        assert!(l.load("load_one").unwrap() >= 0.0);
        assert!(l.procs("proc_total").unwrap() >= 1);
    }
}

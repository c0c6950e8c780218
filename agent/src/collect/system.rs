//! Host facts: cpu_num (online CPUs, like get_nprocs), cpu_speed (cpu0's
//! scaling_max_freq/1000, else the first "cpu MHz", cached forever),
//! machine_type (the build's architecture), os_release (read once), mtu
//! (smallest MTU of the interfaces that are up). boottime is in [`super::cpu`]
//! (it is a line of /proc/stat).

use super::procfile::ProcFile;
use super::{CollectError, src_err};

const ONLINE: &str = "/sys/devices/system/cpu/online";

/// Cached facts.
#[derive(Debug)]
pub struct System {
    online: ProcFile,
    speed: Option<u32>,
    release: Option<String>,
}

impl Default for System {
    fn default() -> Self {
        System {
            online: ProcFile::new(ONLINE),
            speed: None,
            release: None,
        }
    }
}

fn parse_cpu_list(t: &str) -> u16 {
    t.trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|r| match r.split_once('-') {
            Some((a, b)) => match (a.parse::<u16>(), b.parse::<u16>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => u16::from(r.parse::<u16>().is_ok()),
        })
        .sum()
}

impl System {
    /// Online CPUs from /sys/devices/system/cpu/online ("0-3,5"), re-read each
    /// time as get_nprocs does (CPUs go on- and offline).
    pub fn cpu_num(&mut self) -> Result<u16, CollectError> {
        let t = std::str::from_utf8(self.online.read()?).map_err(|e| src_err(ONLINE, e))?;
        Ok(parse_cpu_list(t).max(1))
    }

    /// MHz.
    pub fn cpu_speed(&mut self) -> Result<u32, CollectError> {
        if let Some(s) = self.speed {
            return Ok(s);
        }
        let s = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq")
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .map(|khz| (khz / 1000) as u32)
            .or_else(|| {
                let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
                let line = info.lines().find(|l| l.starts_with("cpu MHz"))?;
                let v = line.split(':').nth(1)?.trim();
                v.split('.').next()?.parse().ok()
            })
            .unwrap_or(0);
        self.speed = Some(s);
        Ok(s)
    }

    /// Kernel release (read once, as gmond does).
    pub fn os_release(&mut self) -> Result<String, CollectError> {
        if let Some(r) = &self.release {
            return Ok(r.clone());
        }
        let r = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_err(|e| src_err("/proc/sys/kernel/osrelease", e))?
            .trim()
            .to_string();
        self.release = Some(r.clone());
        Ok(r)
    }
}

/// The architecture this agent was built for ("x86_64", "aarch64", …).
pub fn machine_type() -> &'static str {
    std::env::consts::ARCH
}

/// Smallest MTU over interfaces that are up.
pub fn mtu() -> Result<u32, CollectError> {
    let dir = std::fs::read_dir("/sys/class/net").map_err(|e| src_err("/sys/class/net", e))?;
    let mut best: Option<u32> = None;
    for e in dir.flatten() {
        let p = e.path();
        let up = std::fs::read_to_string(p.join("operstate")).is_ok_and(|s| s.trim() != "down");
        let mtu = std::fs::read_to_string(p.join("mtu"))
            .ok()
            .and_then(|m| m.trim().parse::<u32>().ok());
        if let (true, Some(m)) = (up, mtu) {
            best = Some(best.map_or(m, |b| b.min(m)));
        }
    }
    best.ok_or(CollectError::NotReady)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3\n"), 4);
        assert_eq!(parse_cpu_list("0,2-3,7"), 4);
        assert_eq!(parse_cpu_list("0"), 1);
    }

    #[test]
    fn facts_read() {
        let mut s = System::default();
        assert!(s.cpu_num().unwrap() >= 1);
        assert!(s.cpu_num().unwrap() >= 1, "re-read from the open file");
        assert!(!s.os_release().unwrap().is_empty());
    }
}

//! CPU percentages from the first `cpu` line of /proc/stat, as gmond computes
//! them: total = sum of the first 4, 7 or 8 fields (guest time is already in
//! user/nice); each metric keeps its own previous snapshot and reports
//! Δfield/Δtotal × 100 clamped to [0, 100] (steal unclamped); cpu_system =
//! system + irq + softirq; cpu_aidle = idle/total since boot.

use super::{CollectError, src_err};
use procfs::CurrentSI;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, Default)]
struct Jiffies {
    user: u64,
    nice: u64,
    system: u64,
    idle: u64,
    iowait: u64,
    irq: u64,
    softirq: u64,
    steal: u64,
    total: u64,
}

/// CPU collector state.
#[derive(Default)]
pub struct Cpu {
    cached: Option<(Instant, Jiffies)>,
    prev: HashMap<String, (u64, u64)>,
}

impl Cpu {
    fn read(&mut self) -> Result<Jiffies, CollectError> {
        // gmond re-reads /proc/stat at most once a second.
        if let Some((t, j)) = self.cached
            && t.elapsed() < Duration::from_secs(1)
        {
            return Ok(j);
        }
        let ks = procfs::KernelStats::current().map_err(|e| src_err("/proc/stat", e))?;
        let c = ks.total;
        let mut j = Jiffies {
            user: c.user,
            nice: c.nice,
            system: c.system,
            idle: c.idle,
            iowait: c.iowait.unwrap_or(0),
            irq: c.irq.unwrap_or(0),
            softirq: c.softirq.unwrap_or(0),
            steal: c.steal.unwrap_or(0),
            total: 0,
        };
        j.total = j.user + j.nice + j.system + j.idle + j.iowait + j.irq + j.softirq + j.steal;
        self.cached = Some((Instant::now(), j));
        Ok(j)
    }

    /// One CPU metric, in percent.
    pub fn collect(&mut self, name: &str) -> Result<f32, CollectError> {
        let j = self.read()?;
        if name == "cpu_aidle" {
            return Ok(pct(j.idle, j.total, true));
        }
        let field = match name {
            "cpu_user" => j.user,
            "cpu_nice" => j.nice,
            "cpu_system" => j.system + j.irq + j.softirq,
            "cpu_idle" => j.idle,
            "cpu_wio" => j.iowait,
            "cpu_intr" => j.irq,
            "cpu_sintr" => j.softirq,
            "cpu_steal" => j.steal,
            other => return Err(CollectError::Unknown(other.into())),
        };
        // First call: the previous snapshot is zero, so this is since boot.
        let (pf, pt) = self
            .prev
            .insert(name.to_string(), (field, j.total))
            .unwrap_or((0, 0));
        Ok(pct(
            field.saturating_sub(pf),
            j.total.saturating_sub(pt),
            name != "cpu_steal",
        ))
    }
}

fn pct(part: u64, total: u64, clamp: bool) -> f32 {
    if total == 0 {
        return 0.0;
    }
    let v = part as f64 / total as f64 * 100.0;
    (if clamp { v.clamp(0.0, 100.0) } else { v }) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_are_sane() {
        let mut c = Cpu::default();
        let sum: f32 = [
            "cpu_user",
            "cpu_nice",
            "cpu_system",
            "cpu_idle",
            "cpu_wio",
            "cpu_steal",
        ]
        .iter()
        .map(|m| c.collect(m).unwrap())
        .sum();
        assert!((99.0..=101.0).contains(&sum), "{sum}");
        assert!((0.0..=100.0).contains(&c.collect("cpu_aidle").unwrap()));
        assert_eq!(pct(5, 0, true), 0.0);
        assert_eq!(pct(150, 100, true), 100.0);
    }
}

//! CPU percentages from the first `cpu` line of /proc/stat, as gmond computes
//! them: total = sum of the first 4, 7 or 8 fields (guest time is already in
//! user/nice); each metric keeps its own previous snapshot and reports
//! Δfield/Δtotal × 100 clamped to [0, 100] (steal unclamped); cpu_system =
//! system + irq + softirq; cpu_aidle = idle/total since boot.

use super::{CollectError, src_err};
use std::io::Read;
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

/// The metrics this collector answers, in the order of `Cpu::prev`.
const NAMES: [&str; 8] = [
    "cpu_user",
    "cpu_nice",
    "cpu_system",
    "cpu_idle",
    "cpu_wio",
    "cpu_intr",
    "cpu_sintr",
    "cpu_steal",
];

/// CPU collector state.
#[derive(Default)]
pub struct Cpu {
    cached: Option<(Instant, Jiffies)>,
    /// Previous (field, total) per metric of `NAMES`: no allocation per call.
    prev: [(u64, u64); 8],
}

/// Parses the aggregate `cpu` line, the first of /proc/stat. Only this line
/// is read, as gmond does: the rest of the file (per-CPU lines and the
/// interrupt counters, thousands of numbers) is not needed, and parsing it
/// with a general /proc/stat parser was most of the agent's CPU time.
fn parse_cpu_line(text: &[u8]) -> Option<Jiffies> {
    let line = text.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut f = line.split_ascii_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let mut v = [0u64; 8];
    let mut n = 0;
    for (slot, x) in v.iter_mut().zip(f) {
        *slot = x.parse().ok()?;
        n += 1;
    }
    if n < 4 {
        return None;
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = v;
    Some(Jiffies {
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
        total: v.iter().sum(),
    })
}

impl Cpu {
    fn read(&mut self) -> Result<Jiffies, CollectError> {
        // gmond re-reads /proc/stat at most once a second.
        if let Some((t, j)) = self.cached
            && t.elapsed() < Duration::from_secs(1)
        {
            return Ok(j);
        }
        // The first line fits in 1 KiB on any machine (10 counters).
        let mut buf = [0u8; 1024];
        let n = std::fs::File::open("/proc/stat")
            .and_then(|mut f| f.read(&mut buf))
            .map_err(|e| src_err("/proc/stat", e))?;
        let j = parse_cpu_line(&buf[..n])
            .ok_or_else(|| src_err("/proc/stat", "no aggregate cpu line"))?;
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
        let i = NAMES.iter().position(|n| *n == name).unwrap_or(0);
        let (pf, pt) = std::mem::replace(&mut self.prev[i], (field, j.total));
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
    fn cpu_line_fields_and_totals() {
        let text = b"cpu  10 2 30 400 5 6 7 8 9 0\ncpu0 1 1 1 1 1 1 1 1 0 0\nintr 1 2 3\n";
        let j = parse_cpu_line(text).unwrap();
        assert_eq!((j.user, j.nice, j.system, j.idle), (10, 2, 30, 400));
        assert_eq!((j.iowait, j.irq, j.softirq, j.steal), (5, 6, 7, 8));
        // guest time is already inside user/nice: not added again.
        assert_eq!(j.total, 10 + 2 + 30 + 400 + 5 + 6 + 7 + 8);
        // Old kernels: 4 fields only.
        let j = parse_cpu_line(b"cpu 1 2 3 4\n").unwrap();
        assert_eq!((j.iowait, j.total), (0, 10));
        assert!(parse_cpu_line(b"cpu0 1 2 3 4\n").is_none());
        assert!(parse_cpu_line(b"cpu 1 2\n").is_none());
        assert!(parse_cpu_line(b"cpu 1 x 3 4\n").is_none());
    }

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

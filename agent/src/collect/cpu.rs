//! CPU percentages from the first `cpu` line of /proc/stat, as gmond computes
//! them: total = sum of the first 4, 7 or 8 fields (guest time is already in
//! user/nice); each metric keeps its own previous snapshot and reports
//! Δfield/Δtotal × 100 clamped to [0, 100] (steal unclamped); cpu_system =
//! system + irq + softirq; cpu_aidle = idle/total since boot. `boottime` is
//! the `btime` line of the same file.

use super::procfile::{ProcFile, fields, lines, parse};
use super::{CollectError, src_err};
use std::time::{Duration, Instant};

const PATH: &str = "/proc/stat";

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

/// The `btime` line (boot time, epoch seconds). The procfs crate parsed every
/// line of /proc/stat into allocated structures for this one number.
fn parse_btime(stat: &[u8]) -> Option<u64> {
    let line = lines(stat).find(|l| l.starts_with(b"btime "))?;
    fields(line).nth(1).and_then(parse)
}

/// CPU collector state.
#[derive(Debug)]
pub struct Cpu {
    // Kept open: the cpu metrics re-read its head every 20 s, boottime all of
    // it once a minute.
    stat: ProcFile,
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

impl Default for Cpu {
    fn default() -> Self {
        Cpu {
            stat: ProcFile::new(PATH),
            cached: None,
            prev: [(0, 0); 8],
        }
    }
}

impl Cpu {
    fn read(&mut self) -> Result<Jiffies, CollectError> {
        // gmond re-reads /proc/stat at most once a second.
        if let Some((t, j)) = self.cached
            && t.elapsed() < Duration::from_secs(1)
        {
            return Ok(j);
        }
        // The first line fits in the head on any machine (10 counters).
        let j = parse_cpu_line(self.stat.read_head()?)
            .ok_or_else(|| src_err(PATH, "no aggregate cpu line"))?;
        self.cached = Some((Instant::now(), j));
        Ok(j)
    }

    /// Boot time, epoch seconds (`btime` comes after the per-CPU and
    /// interrupt lines, so this reads the whole file).
    pub fn boottime(&mut self) -> Result<u32, CollectError> {
        let t = parse_btime(self.stat.read()?).ok_or_else(|| src_err(PATH, "no btime line"))?;
        Ok(t as u32)
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
    fn btime_after_the_interrupt_lines() {
        // Captured from a 2-CPU VM (kernel 6.18); intr shortened.
        let stat = b"cpu  349400 471 69240 2321250 4365 0 1618 211 0 0
cpu0 169377 197 33722 1168662 1048 0 212 106 0 0
cpu1 180023 273 35518 1152588 3317 0 1405 105 0 0
intr 3429788 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 1 14 0 0 0 0 2755
ctxt 6012345
btime 1764040000
processes 32164
procs_running 2
procs_blocked 0
softirq 1890226 0 419027 23 61 56893 0 45 656391 0 757786
";
        assert_eq!(parse_btime(stat), Some(1764040000));
        let j = parse_cpu_line(stat).unwrap();
        assert_eq!((j.user, j.idle, j.steal), (349400, 2321250, 211));
        assert_eq!(parse_btime(b"cpu  1 2 3 4\n"), None);
        assert_eq!(parse_btime(b"btime x\n"), None);
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
        assert!(c.boottime().unwrap() > 1_000_000_000);
        assert_eq!(pct(5, 0, true), 0.0);
        assert_eq!(pct(150, 100, true), 100.0);
    }
}

//! Network rates from /proc/net/dev, as gmond computes them: summed over every
//! interface except `lo*`, `bond*` and VLAN interfaces; per-interface counters
//! differenced against the previous read (a counter that goes backwards wraps at
//! 2^64 as in 3.7.2); rate = ΣΔ/Δt; samples less than 1 s apart are skipped;
//! bytes/s > 1e13 or packets/s > 1e8 are discarded. All four share one sample.
//!
//! Parsed by hand from a kept-open file, keeping the per-interface history in
//! place: the procfs crate returns a new map of every counter of every
//! interface, with an allocated name each, on each read.

use super::procfile::{ProcFile, fields, lines, parse};
use super::{CollectError, src_err};
use std::time::Instant;

const PATH: &str = "/proc/net/dev";

/// The counters the metrics use, for one interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) rx_bytes: u64,
    pub(crate) rx_pkts: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) tx_pkts: u64,
}

/// One interface line, `  eth0: rx_bytes rx_packets … (8 receive fields)
/// tx_bytes tx_packets …` (the first two lines of the file are headers). The
/// name ends at the colon: old kernels print no space after it.
pub(crate) fn parse_dev_line(line: &[u8]) -> Option<(&str, Counters)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = std::str::from_utf8(&line[..colon]).ok()?.trim();
    let mut f = fields(&line[colon + 1..]);
    let mut next = || f.next().and_then(parse::<u64>);
    let rx_bytes = next()?;
    let rx_pkts = next()?;
    for _ in 0..6 {
        next()?;
    }
    let tx_bytes = next()?;
    let tx_pkts = next()?;
    Some((
        name,
        Counters {
            rx_bytes,
            rx_pkts,
            tx_bytes,
            tx_pkts,
        },
    ))
}

/// Interface history: name, counters at the last read, seen in this read.
type History = Vec<(Box<str>, Counters, bool)>;

/// Network collector state.
#[derive(Debug)]
pub struct Net {
    file: ProcFile,
    prev_at: Option<Instant>,
    prev: History,
    rates: Option<[f64; 4]>,
}

impl Default for Net {
    fn default() -> Self {
        Net {
            file: ProcFile::new(PATH),
            prev_at: None,
            prev: Vec::new(),
            rates: None,
        }
    }
}

fn vlan_names() -> Vec<String> {
    // The kernel lists VLAN devices here (what SIOCGIFVLAN tells gmond); the
    // file exists only with the 8021q module loaded.
    std::fs::read_to_string("/proc/net/vlan/config")
        .map(|t| {
            t.lines()
                .filter(|l| l.contains('|'))
                .filter_map(|l| l.split('|').next().map(|n| n.trim().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn delta(now: u64, before: u64) -> u64 {
    if now >= before {
        now - before
    } else {
        // 3.7.2's wrap rule: assume a 64-bit counter wrapped.
        u64::MAX - before + now
    }
}

/// Folds one read of /proc/net/dev into `history`: returns the summed deltas
/// (rx bytes, tx bytes, rx packets, tx packets) over interfaces present in both
/// reads; interfaces that vanished are forgotten, new ones start from here.
/// Unparsable lines are skipped here (see [`Net::sample`]).
fn fold(text: &[u8], vlans: &[String], history: &mut History) -> [f64; 4] {
    for h in history.iter_mut() {
        h.2 = false;
    }
    let mut sums = [0f64; 4];
    for (name, c) in lines(text).skip(2).filter_map(parse_dev_line) {
        if name.starts_with("lo") || name.starts_with("bond") || vlans.iter().any(|v| v == name) {
            continue;
        }
        match history.iter_mut().find(|h| &*h.0 == name) {
            Some(h) => {
                let p = h.1;
                sums[0] += delta(c.rx_bytes, p.rx_bytes) as f64;
                sums[1] += delta(c.tx_bytes, p.tx_bytes) as f64;
                sums[2] += delta(c.rx_pkts, p.rx_pkts) as f64;
                sums[3] += delta(c.tx_pkts, p.tx_pkts) as f64;
                (h.1, h.2) = (c, true);
            }
            None => history.push((name.into(), c, true)),
        }
    }
    history.retain(|h| h.2);
    sums
}

impl Net {
    fn sample(&mut self) -> Result<(), CollectError> {
        let now = Instant::now();
        if let Some(t) = self.prev_at
            && now.duration_since(t).as_secs_f64() < 1.0
        {
            return Ok(());
        }
        let vlans = vlan_names();
        let text = self.file.read()?;
        // A bad line fails the whole read and leaves the history as it was
        // (as the procfs crate's parse did), so the next good read differences
        // against the last good one.
        if lines(text)
            .skip(2)
            .any(|l| !l.is_empty() && parse_dev_line(l).is_none())
        {
            return Err(src_err(PATH, "unparsable interface line"));
        }
        let sums = fold(text, &vlans, &mut self.prev);
        if let Some(t) = self.prev_at {
            let dt = now.duration_since(t).as_secs_f64();
            let r = sums.map(|s| s / dt);
            if r[0] <= 1e13 && r[1] <= 1e13 && r[2] <= 1e8 && r[3] <= 1e8 {
                self.rates = Some(r);
            } else {
                tracing::warn!("discarding an implausible network sample (counter reset?)");
            }
        }
        self.prev_at = Some(now);
        Ok(())
    }

    /// bytes_in / bytes_out / pkts_in / pkts_out per second.
    pub fn collect(&mut self, name: &str) -> Result<f32, CollectError> {
        self.sample()?;
        // Before two reads exist there is no rate; gmond reports 0 then too.
        let r = self.rates.unwrap_or([0.0; 4]);
        Ok(match name {
            "bytes_in" => r[0],
            "bytes_out" => r[1],
            "pkts_in" => r[2],
            _ => r[3],
        } as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a VM (kernel 6.18), plus a bond and an old-style line.
    const DEV: &[u8] = b"Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1427027487 8727890    0    0    0     0          0         0 1427027487 8727890    0    0    0     0       0          0
  ifb0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  eth0: 309390116   11300    0    0    0     0          0         0   778288    7723    0    0    0     0       0          0
 bond0:     500      5    0    0    0     0          0         0      600       6    0    0    0     0       0          0
eth1:12345678901 99 0 0 0 0 0 0 42 7 0 0 0 0 0 0
";

    #[test]
    fn parses_interface_lines() {
        let v: Vec<_> = lines(DEV)
            .skip(2)
            .filter(|l| !l.is_empty())
            .map(|l| parse_dev_line(l).unwrap())
            .collect();
        assert_eq!(v.len(), 5);
        assert_eq!(
            v[2],
            (
                "eth0",
                Counters {
                    rx_bytes: 309390116,
                    rx_pkts: 11300,
                    tx_bytes: 778288,
                    tx_pkts: 7723,
                }
            )
        );
        assert_eq!(v[4].0, "eth1");
        assert_eq!((v[4].1.rx_bytes, v[4].1.tx_pkts), (12345678901, 7));
        assert_eq!(parse_dev_line(b"  eth0: 1 2 3"), None);
        assert_eq!(parse_dev_line(b"no colon here"), None);
    }

    #[test]
    fn sums_deltas_skipping_lo_bond_and_vlans() {
        let mut h = History::new();
        let vlans = vec!["eth1".to_string()];
        assert_eq!(fold(DEV, &vlans, &mut h), [0.0; 4]);
        let names: Vec<&str> = h.iter().map(|e| &*e.0).collect();
        assert_eq!(names, ["ifb0", "eth0"]);
        let later = String::from_utf8_lossy(DEV)
            .replace("309390116   11300", "309391116   11310")
            .replace("  ifb0:       0", "  ifb9:       0");
        // eth0 moved by 1000 bytes and 10 packets in; ifb0 vanished, ifb9 is new.
        assert_eq!(
            fold(later.as_bytes(), &vlans, &mut h),
            [1000.0, 0.0, 10.0, 0.0]
        );
        let names: Vec<&str> = h.iter().map(|e| &*e.0).collect();
        assert_eq!(names, ["eth0", "ifb9"]);
    }

    #[test]
    fn wraps_like_gmond_372() {
        assert_eq!(delta(10, 4), 6);
        assert_eq!(delta(5, u64::MAX - 4), u64::MAX - (u64::MAX - 4) + 5);
    }
}

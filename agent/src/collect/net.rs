//! Network rates from /proc/net/dev, as gmond computes them: summed over every
//! interface except `lo*`, `bond*` and VLAN interfaces; per-interface counters
//! differenced against the previous read (a counter that goes backwards wraps at
//! 2^64 as in 3.7.2); rate = ΣΔ/Δt; samples less than 1 s apart are skipped;
//! bytes/s > 1e13 or packets/s > 1e8 are discarded. All four share one sample.

use super::{CollectError, src_err};

use std::collections::{HashMap, HashSet};
use std::time::Instant;

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    rx_bytes: u64,
    rx_pkts: u64,
    tx_bytes: u64,
    tx_pkts: u64,
}

/// Network collector state.
#[derive(Default)]
pub struct Net {
    prev: Option<(Instant, HashMap<String, Counters>)>,
    rates: Option<[f64; 4]>,
}

fn vlan_names() -> HashSet<String> {
    // The kernel lists VLAN devices here (what SIOCGIFVLAN tells gmond).
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

impl Net {
    fn sample(&mut self) -> Result<(), CollectError> {
        let now = Instant::now();
        if let Some((t, _)) = &self.prev
            && now.duration_since(*t).as_secs_f64() < 1.0
        {
            return Ok(());
        }
        let vlans = vlan_names();
        let dev = procfs::net::dev_status().map_err(|e| src_err("/proc/net/dev", e))?;
        let cur: HashMap<String, Counters> = dev
            .into_iter()
            .filter(|(name, _)| {
                !name.starts_with("lo") && !name.starts_with("bond") && !vlans.contains(name)
            })
            .map(|(name, d)| {
                (
                    name,
                    Counters {
                        rx_bytes: d.recv_bytes,
                        rx_pkts: d.recv_packets,
                        tx_bytes: d.sent_bytes,
                        tx_pkts: d.sent_packets,
                    },
                )
            })
            .collect();
        if let Some((t, prev)) = &self.prev {
            let dt = now.duration_since(*t).as_secs_f64();
            let mut sums = [0f64; 4];
            for (name, c) in &cur {
                // An interface that appeared since the last read starts from here.
                let Some(p) = prev.get(name) else { continue };
                sums[0] += delta(c.rx_bytes, p.rx_bytes) as f64;
                sums[1] += delta(c.tx_bytes, p.tx_bytes) as f64;
                sums[2] += delta(c.rx_pkts, p.rx_pkts) as f64;
                sums[3] += delta(c.tx_pkts, p.tx_pkts) as f64;
            }
            let r = sums.map(|s| s / dt);
            if r[0] <= 1e13 && r[1] <= 1e13 && r[2] <= 1e8 && r[3] <= 1e8 {
                self.rates = Some(r);
            } else {
                tracing::warn!("discarding an implausible network sample (counter reset?)");
            }
        }
        self.prev = Some((now, cur));
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
    use super::delta;

    #[test]
    fn wraps_like_gmond_372() {
        assert_eq!(delta(10, 4), 6);
        assert_eq!(delta(5, u64::MAX - 4), u64::MAX - (u64::MAX - 4) + 5);
    }
}

//! Benchmark helper: writes a gmetad-layout tree with history, so read paths
//! (series API, exports) can be measured on a day of data without waiting a
//! day. Files get gmetad 3.7's default RRAs and DS `sum` (GAUGE, heartbeat
//! 8 × step), exactly as the aggregator creates them.
//!
//! Usage: `rrd-prefill ROOT CLUSTER HOSTS METRICS HISTORY_SECS [STEP]`
//! with METRICS comma-separated; hosts are named `host0000`, `host0001`, …
//! Values are a smooth per-host curve. Prints `files=N secs=S`.

use ganglion_rrd::layout::{self, Series};
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const RRAS: [&str; 3] = [
    "RRA:AVERAGE:0.5:1:5856",
    "RRA:AVERAGE:0.5:4:20160",
    "RRA:AVERAGE:0.5:40:52704",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: rrd-prefill ROOT CLUSTER HOSTS METRICS HISTORY_SECS [STEP]");
        std::process::exit(2);
    }
    let root = PathBuf::from(&args[1]);
    let cluster = &args[2];
    let hosts: usize = args[3].parse().expect("HOSTS");
    let metrics: Vec<&str> = args[4].split(',').collect();
    let history: i64 = args[5].parse().expect("HISTORY_SECS");
    let step: i64 = args.get(6).map_or(15, |s| s.parse().expect("STEP"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    // History ends one step before now, so a live writer can continue it.
    let last = (now / step - 1) * step;
    let first = last - history;
    let mut defs = vec![format!("DS:sum:GAUGE:{}:U:U", 8 * step)];
    defs.extend(RRAS.iter().map(|s| s.to_string()));
    let started = Instant::now();
    let mut files = 0;
    for h in 0..hosts {
        let host = format!("host{h:04}");
        for m in &metrics {
            let path = layout::path(
                &root,
                &Series::Host {
                    cluster: cluster.clone(),
                    host: host.clone(),
                    metric: m.to_string(),
                },
                false,
            );
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            ganglion_rrd::create(&path, step as u64, first - step, &defs).expect("create");
            let updates: Vec<String> = (0..=history / step)
                .map(|k| {
                    let t = first + k * step;
                    let v = 1.0 + (h % 7) as f64 + ((t as f64) / 3600.0 + h as f64).sin();
                    format!("{t}:{v:.3}")
                })
                .collect();
            ganglion_rrd::update(&path, &updates).expect("update");
            files += 1;
        }
    }
    println!("files={files} secs={:.3}", started.elapsed().as_secs_f64());
}

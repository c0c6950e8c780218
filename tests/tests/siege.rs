//! The siege (issue: siege-proof aggregator), sized for CI: `scripts/bench/siege.py`
//! runs a steady load plus a probe metric through the aggregator while idle
//! connections on every TCP port, slowloris headers, looping XML dumps and
//! year-long `/api/series` requests, a flush storm, a gzip-bomb source, a
//! never-ending source, hostile datagrams and (in one run) an rrdcached
//! restart all happen at once. It then checks that every probe sample is in
//! its RRD file, every XML document parsed, a fresh dashboard client was
//! answered (200 or a fast 503) within 1 s in every second, and RSS and
//! descriptors stayed bounded; a second probe host appears mid-siege, so a
//! new RRD file must be created while every port is held. The harness is the one BENCHMARKS.md's figures
//! come from; this test only picks smaller sizes.

use ganglion_tests::{require_binary, workspace_bin};
use std::process::Command;
use std::sync::Mutex;

/// Two sieges at once on two cores would measure each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn siege(name: &str, args: &[&str]) {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_binary("rrdtool");
    require_binary("prlimit");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench/siege.py");
    let out = ganglion_tests::artifacts_dir().join(format!("siege-{name}.json"));
    let status = Command::new("python3")
        .arg(&script)
        .arg("--binary")
        .arg(workspace_bin("ganglion-aggregator"))
        .args([
            "--duration",
            "40",
            "--hosts",
            "200",
            "--metrics",
            "10",
            "--idle",
            "5000",
            "--slowloris",
            "100",
            "--dumpers",
            "10",
            "--series",
            "4",
            "--flushers",
            "100",
            "--bomb-mib",
            "512",
        ])
        .args(args)
        .arg("--json")
        .arg(&out)
        .status()
        .expect("run scripts/bench/siege.py");
    let report = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        status.success(),
        "the siege failed ({status}); report in {}:\n{report}",
        out.display()
    );
    let v: serde_json::Value = serde_json::from_str(&report).expect("siege JSON");
    let checks = v["checks"].as_object().expect("checks");
    assert!(checks.len() >= 9, "every check ran: {checks:?}");
    assert!(checks.values().all(|c| c == true), "{checks:?}");
    assert!(
        v["probe"]["steps_checked"].as_u64().unwrap_or(0) >= 25,
        "{report}"
    );
}

#[test]
fn siege_with_the_soft_and_hard_descriptor_limit_at_1024() {
    siege("nofile-1024", &["--nofile", "1024"]);
}

#[test]
fn siege_with_the_limit_raised_and_rrdcached_restarted_mid_run() {
    require_binary("rrdcached");
    siege("rrdcached", &["--nofile", "raised", "--rrdcached"]);
}

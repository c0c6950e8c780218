//! The dashboard in a real browser: Debian's chromium driven by playwright-core
//! (`tests/browser/dashboard.mjs`) against an aggregator fed by a real
//! `ganglion-agent` and `ganglion-agent send`. Screenshots of each view are
//! saved under `tests/artifacts/`.

use ganglion_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Chromium, node and the directory of the node scripts (with playwright-core
/// installed by the test command).
fn browser() -> (PathBuf, PathBuf, PathBuf) {
    let chromium = require_binary("chromium");
    let node = require_binary("node");
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run scripts/test.sh (it runs `npm ci` in tests/browser)"
    );
    (chromium, node, browser_dir)
}

#[test]
fn dashboard_click_through_zoom_and_live_update() {
    let (chromium, node, browser_dir) = browser();
    let agg = Aggregator::start(
        "webclust",
        "step_secs = 1\n[storage]\nflush_interval_secs = 1\n",
    );
    let _agent = start_agent(
        agg.dir.path(),
        "agent.toml",
        &format!(
            "[[send]]\nhost = \"127.0.0.1\"\nport = {}\n",
            agg.udp.port()
        ),
        &[],
    );
    let send = |name: &str, v: &str| {
        let st = Command::new(workspace_bin("ganglion-agent"))
            .args([
                "send",
                "-n",
                name,
                "-v",
                v,
                "-t",
                "float",
                "-g",
                "test",
                "--send-to",
                &agg.udp.to_string(),
            ])
            .status()
            .unwrap();
        assert!(st.success());
    };
    send("temp_c", "21.5");
    // Let a few steps of samples reach the RRD files.
    wait_until("load_one.rrd written", Duration::from_secs(20), || {
        agg.dir
            .path()
            .join("rrds/webclust/127.0.0.1/load_one.rrd")
            .exists()
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(4));
    let artifacts = artifacts_dir();
    let out = Command::new(node)
        .arg(browser_dir.join("dashboard.mjs"))
        .arg(format!("http://{}", agg.http))
        .arg(&artifacts)
        .args(["webclust", "127.0.0.1"])
        .arg(workspace_bin("ganglion-agent"))
        .args([
            "send",
            "-n",
            "late_metric",
            "-v",
            "7",
            "-t",
            "float",
            "--send-to",
            &agg.udp.to_string(),
        ])
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "browser test failed:\n{log}");
    for shot in ["grid", "cluster", "host", "zoomed", "metric", "late-metric"] {
        assert!(
            artifacts.join(format!("{shot}.png")).exists(),
            "{shot}.png saved"
        );
    }
}

/// The cluster view of a 1000-host cluster: time from navigation until the
/// heatmap and every graph on the page are drawn, measured in chromium and
/// written to `tests/artifacts/cluster-1000.json` (the number in
/// BENCHMARKS.md comes from there; no timing is asserted). Also checks that
/// small multiples sort by the chosen metric's value.
#[test]
fn cluster_view_of_1000_hosts() {
    const HOSTS: usize = 1000;
    let (chromium, node, browser_dir) = browser();
    // Small RRAs: 2000+ files stay a few MB.
    let agg = Aggregator::start(
        "big",
        "step_secs = 5\nrras = [\"RRA:AVERAGE:0.5:1:800\"]\n[storage]\nflush_interval_secs = 1\n",
    );
    let load = |h: usize, k: usize| {
        if k == 0 { (h % 37) as f32 * 0.1 } else { 4.0 }
    };
    // Repeated until every host is in: UDP may drop part of a burst on a busy machine.
    let mut round = 0;
    wait_until("1000 hosts up", Duration::from_secs(60), || {
        if round % 30 == 0 {
            send_synthetic_hosts(agg.udp, HOSTS, &["load_one", "cpu_num"], load);
        }
        round += 1;
        let body = http_get(agg.http, "/api/cluster/big");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["hosts_up"].as_u64()? == HOSTS as u64).then_some(())
    });
    // A second round of values, so graphs have more than one sample.
    std::thread::sleep(Duration::from_secs(6));
    send_synthetic_hosts(agg.udp, HOSTS, &["load_one", "cpu_num"], load);
    let artifacts = artifacts_dir();
    let out = Command::new(node)
        .arg(browser_dir.join("cluster1000.mjs"))
        .arg(format!("http://{}", agg.http))
        .arg(&artifacts)
        .args(["big", &HOSTS.to_string()])
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line).expect("timings JSON");
    assert_eq!(v["runs"].as_array().map(Vec::len), Some(3), "{line}");
    std::fs::write(artifacts.join("cluster-1000.json"), line).unwrap();
    println!("cluster view of {HOSTS} hosts: {line}");
}

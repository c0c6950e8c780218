//! The dashboard in a real browser: Debian's chromium driven by playwright-core
//! (`tests/browser/dashboard.mjs`) against an aggregator fed by a real
//! `ganglion-agent` and `ganglion-agent send`. Screenshots of each view are
//! saved under `tests/artifacts/`.

use ganglion_tests::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn dashboard_click_through_zoom_and_live_update() {
    let chromium = require_binary("chromium");
    let node = require_binary("node");
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run scripts/test.sh (it runs `npm ci` in tests/browser)"
    );
    let agg = Aggregator::start(
        "webclust",
        "step_secs = 1\n[storage]\nflush_interval_secs = 1\n",
    );
    let conf = agg.dir.path().join("agent.toml");
    std::fs::write(
        &conf,
        format!(
            "[[send]]\nhost = \"127.0.0.1\"\nport = {}\n",
            agg.udp.port()
        ),
    )
    .unwrap();
    let _agent = ChildGuard::spawn(
        "ganglion-agent",
        Command::new(workspace_bin("ganglion-agent"))
            .arg("--config")
            .arg(&conf)
            .stderr(Stdio::null()),
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

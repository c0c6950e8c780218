//! The Debian packages: `scripts/build-debs.sh` builds ganglion-agent and
//! ganglion-aggregator from this workspace's test build; lintian reports no
//! tag beyond the explained overrides; both install on this machine, create
//! the `ganglion` user and its state directory; the binaries, started as
//! their units start them (that user, the unit's ExecStart with the shipped
//! config moved to free loopback ports), answer on the dashboard with the
//! agent's host in it; and a purge leaves nothing behind.
//!
//! Needs root (dpkg). The test command runs as root; elsewhere it fails with
//! that reason rather than passing without having run.

use ganglion_tests::{free_tcp_port, free_udp_port, http_get, require_binary, wait_until};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PACKAGES: [&str; 3] = [
    "ganglion-agent",
    "ganglion-aggregator",
    "ganglion-nagios-plugins",
];
const POLICY: &str = "/usr/sbin/policy-rc.d";

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("installed"))
        .unwrap_or(false)
}

/// Purges the packages (and a policy file the test wrote) however the test ends.
struct Cleanup {
    wrote_policy: bool,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("dpkg").arg("--purge").args(PACKAGES).output();
        if self.wrote_policy {
            let _ = std::fs::remove_file(POLICY);
        }
    }
}

/// The unit's ExecStart, with the config file swapped for `config`, run as
/// the unit's User= — what systemd would start.
fn start_as_unit(unit: &str, config: &Path) -> Child {
    let text = std::fs::read_to_string(format!("/lib/systemd/system/{unit}")).unwrap();
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let user = text
        .lines()
        .find_map(|l| l.strip_prefix("User="))
        .expect("the unit runs as a named user");
    let mut argv: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    for a in &mut argv {
        if a.starts_with("/etc/ganglion/") {
            *a = config.display().to_string();
        }
    }
    Command::new("setpriv")
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--init-groups",
            "--",
        ])
        .args(&argv)
        .current_dir("/")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the unit's command")
}

#[test]
fn packages_build_lint_install_run_and_purge() {
    assert!(
        nix_is_root(),
        "installing packages needs root: run the README's test command as root"
    );
    for p in PACKAGES {
        assert!(
            !installed(p),
            "{p} is already installed on this machine; the test would purge it, so it refuses to run"
        );
    }
    require_binary("dpkg-deb");
    require_binary("lintian");
    require_binary("setpriv");
    let out = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-debs.sh");
    let built = sh(Command::new(&script).args([
        "--profile",
        "debug",
        "--no-build",
        "--out",
        out.path().to_str().unwrap(),
    ]));
    let debs: Vec<&str> = built.lines().filter(|l| l.ends_with(".deb")).collect();
    assert_eq!(debs.len(), PACKAGES.len(), "{built}");

    // lintian: nothing beyond the overrides shipped with their reasons.
    let lint = Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .args(&debs)
        .output()
        .unwrap();
    let tags: Vec<String> = String::from_utf8_lossy(&lint.stdout)
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .map(str::to_string)
        .collect();
    assert!(tags.is_empty(), "lintian: {tags:#?}");

    let mut cleanup = Cleanup {
        wrote_policy: false,
        children: Vec::new(),
    };
    // The maintainer scripts may not start the units on this machine's default ports.
    if !Path::new(POLICY).exists() {
        std::fs::write(POLICY, "#!/bin/sh\nexit 101\n").unwrap();
        sh(Command::new("chmod").args(["755", POLICY]));
        cleanup.wrote_policy = true;
    }
    sh(Command::new("dpkg").arg("-i").args(&debs));
    for p in PACKAGES {
        assert!(installed(p), "{p} installed");
    }
    let passwd = sh(Command::new("getent").args(["passwd", "ganglion"]));
    assert!(passwd.contains("/var/lib/ganglion"), "{passwd}");
    let owner = sh(Command::new("stat").args(["-c", "%U", "/var/lib/ganglion/rrds"]));
    assert_eq!(owner.trim(), "ganglion");
    for unit in ["ganglion-agent.service", "ganglion-aggregator.service"] {
        let text = std::fs::read_to_string(format!("/lib/systemd/system/{unit}")).unwrap();
        for must in [
            "User=ganglion",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "LimitNOFILE=",
        ] {
            assert!(text.contains(must), "{unit} lacks {must}:\n{text}");
        }
    }

    // The shipped configs, moved to free loopback ports.
    let (udp, xml, dump, query, http) = (
        free_udp_port(),
        free_tcp_port(),
        free_tcp_port(),
        free_tcp_port(),
        free_tcp_port(),
    );
    let agg = std::fs::read_to_string("/etc/ganglion/aggregator.toml").unwrap();
    let agg = agg
        .replace(
            "udp_listen = \"0.0.0.0:8649\"",
            &format!("udp_listen = \"127.0.0.1:{udp}\""),
        )
        .replace(
            "xml_listen = \"0.0.0.0:8649\"",
            &format!("xml_listen = \"127.0.0.1:{xml}\""),
        )
        .replace("0.0.0.0:8651", &format!("127.0.0.1:{dump}"))
        .replace("0.0.0.0:8652", &format!("127.0.0.1:{query}"))
        .replace("0.0.0.0:8080", &format!("127.0.0.1:{http}"));
    assert!(agg.contains(&format!("127.0.0.1:{http}")), "{agg}");
    let cfg_dir = tempfile::tempdir().unwrap();
    sh(Command::new("chmod").args(["755", cfg_dir.path().to_str().unwrap()]));
    let agg_cfg = cfg_dir.path().join("aggregator.toml");
    std::fs::write(&agg_cfg, agg).unwrap();
    let agent = std::fs::read_to_string("/etc/ganglion/agent.toml")
        .unwrap()
        .replace("port = 8649", &format!("port = {udp}"));
    let agent_cfg = cfg_dir.path().join("agent.toml");
    std::fs::write(&agent_cfg, agent).unwrap();

    cleanup
        .children
        .push(start_as_unit("ganglion-aggregator.service", &agg_cfg));
    let http_addr: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    ganglion_tests::wait_for_tcp(http_addr, Duration::from_secs(20));
    cleanup
        .children
        .push(start_as_unit("ganglion-agent.service", &agent_cfg));
    // The shipped aggregator config names hosts by reverse DNS, as gmond
    // does: the agent on loopback shows up as localhost (or this host's name).
    let host = sh(&mut Command::new("hostname")).trim().to_lowercase();
    let mut last = String::new();
    let found = (0..80).any(|_| {
        std::thread::sleep(Duration::from_millis(500));
        last = http_get(http_addr, "/api/cluster/unspecified").to_lowercase();
        ["\"localhost\"", &format!("\"{host}\"")]
            .iter()
            .any(|h| last.contains(h))
            && last.contains("load_one")
    });
    assert!(found, "the agent's host never appeared: {last}");
    // The packaged plugin, from where Nagios looks for plugins, sees that host alive.
    let name = if last.contains(&format!("\"{host}\"")) {
        host.clone()
    } else {
        "localhost".to_string()
    };
    let check = Command::new("/usr/lib/nagios/plugins/check_ganglion")
        .args(["-u", &format!("http://{http_addr}"), "-C", "unspecified"])
        .args(["-H", &name, "--heartbeat"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "check_ganglion: {said}");
    assert!(said.starts_with("GANGLION OK"), "{said}");
    // The aggregator, running as ganglion, wrote RRD files under its state dir.
    wait_until("RRD files as ganglion", Duration::from_secs(30), || {
        let o = Command::new("find")
            .args([
                "/var/lib/ganglion/rrds",
                "-name",
                "*.rrd",
                "-user",
                "ganglion",
            ])
            .output()
            .ok()?;
        (!o.stdout.is_empty()).then_some(())
    });

    for c in &mut cleanup.children {
        let _ = c.kill();
        let _ = c.wait();
    }
    cleanup.children.clear();
    sh(Command::new("dpkg").arg("--purge").args(PACKAGES));
    for gone in [
        "/usr/bin/ganglion-agent",
        "/usr/bin/ganglion-aggregator",
        "/usr/bin/rrd-export",
        "/usr/lib/nagios/plugins/check_ganglion",
        "/etc/ganglion",
        "/var/lib/ganglion",
        "/lib/systemd/system/ganglion-aggregator.service",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
    assert!(
        !Command::new("getent")
            .args(["passwd", "ganglion"])
            .status()
            .unwrap()
            .success(),
        "the ganglion user is removed by the last purge"
    );
}

fn nix_is_root() -> bool {
    sh(Command::new("id").arg("-u")).trim() == "0"
}

//! The classic unicast-VM scenario end to end. A cluster of "VMs" — network
//! namespaces on a bridge, each with its own address and a `ganglion-agent`
//! inside — reports to the aggregator. One VM dies; its host goes DOWN HARD;
//! the `[[handler]]` runs exactly once and starts a replacement VM (a new
//! namespace with an agent); the replacement appears in the cluster; the
//! handler's output is in `/api/events` and in the dashboard (Chromium).
//!
//! And storm control: 20 of 30 hosts die at once → one cluster incident
//! (and one run of its handler), not 20 host alerts.
//!
//! The VM test needs root (network namespaces) and fails with that reason
//! otherwise; the storm test runs anywhere.

use ganglion_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Network namespaces and the bridge, removed on drop (after the agents in
/// them, which are dropped first).
struct Net {
    namespaces: Vec<String>,
    bridge: String,
}

impl Drop for Net {
    fn drop(&mut self) {
        // The dead VM's namespace is already gone: quietly.
        for n in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

/// The replacement agent the handler started (its PID in a file), stopped
/// by PID on drop.
struct PidFile(PathBuf);

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(http: std::net::SocketAddr, path: &str) -> Value {
    serde_json::from_str(&http_get(http, path)).unwrap_or(Value::Null)
}

fn events(http: std::net::SocketAddr, q: &str) -> Vec<Value> {
    json(http, &format!("/api/events?{q}"))["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn host_alive(http: std::net::SocketAddr, cluster: &str, host: &str) -> bool {
    json(http, &format!("/api/cluster/{cluster}"))["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|h| h["name"] == host && h["alive"] == true)
}

/// An agent config sending `load_one` and `cpu_num` every second as `name`.
fn agent_toml(name: &str, to: &str) -> String {
    format!(
        "override_hostname = \"{name}\"\nsend_metadata_interval_secs = 5\n[[send]]\nhost = \"{to}\"\nport = 8649\n\
         [[collection_group]]\ncollect_every_secs = 1\ntime_threshold_secs = 1\n\
         [[collection_group.metric]]\nname = \"load_one\"\n[[collection_group.metric]]\nname = \"cpu_num\"\n"
    )
}

/// Starts an aggregator in the root namespace: UDP on `udp` (the bridge's
/// address), HTTP on loopback, `extra` TOML appended.
fn aggregator(
    dir: &Path,
    cluster: &str,
    udp: &str,
    extra: &str,
) -> (ChildGuard, std::net::SocketAddr) {
    let http = free_tcp_port();
    let cfg = dir.join("aggregator.toml");
    std::fs::write(
        &cfg,
        format!(
            "grid_name = \"vms\"\nrrd_root = \"{root}\"\n\
             [[cluster]]\nname = \"{cluster}\"\nudp_listen = \"{udp}\"\nxml_listen = \"\"\nreverse_dns = false\n\
             trust_packet_hostname = true\nhost_tmax_secs = 1\n\
             [xml]\ndump_listen = \"\"\nquery_listen = \"\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n{extra}",
            root = dir.join("rrds").display()
        ),
    )
    .unwrap();
    let g = ChildGuard::spawn(
        "ganglion-aggregator",
        Command::new(workspace_bin("ganglion-aggregator"))
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("aggregator.log")).unwrap()),
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], http));
    wait_for_tcp(addr, Duration::from_secs(10));
    (g, addr)
}

#[test]
fn a_dead_vm_is_replaced_by_the_handler_exactly_once() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "network namespaces need root: run the README's test command as root"
    );
    require_binary("ip");
    let id = std::process::id() % 100_000;
    let subnet = format!("10.215.{}", id % 250);
    let bridge = format!("gbr{id}");
    let vms: Vec<String> = (1..=3).map(|n| format!("gvm{id}-{n}")).collect();
    let replacement_ns = format!("gvm{id}-r");
    let mut all_ns = vms.clone();
    all_ns.push(replacement_ns.clone());
    let _net = Net {
        namespaces: all_ns,
        bridge: bridge.clone(),
    };
    ip(&["link", "add", &bridge, "type", "bridge"]);
    // A fixed address: by default a bridge takes the lowest address of its
    // ports, so removing a dead VM's port would change it under the other
    // VMs' ARP caches and they would go silent too.
    ip(&[
        "link",
        "set",
        &bridge,
        "address",
        &format!("02:00:00:00:{:02x}:{:02x}", (id >> 8) & 255, id & 255),
    ]);
    ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &bridge]);
    ip(&["link", "set", &bridge, "up"]);
    let add_vm = |ns: &str, n: u32| {
        let (vh, vn) = (format!("gvh{id}{n}"), format!("gvn{id}{n}"));
        ip(&["netns", "add", ns]);
        ip(&["link", "add", &vh, "type", "veth", "peer", "name", &vn]);
        ip(&["link", "set", &vn, "netns", ns]);
        ip(&["link", "set", &vh, "master", &bridge, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{subnet}.{}/24", 10 + n),
            "dev",
            &vn,
        ]);
        ip(&["-n", ns, "link", "set", &vn, "up"]);
    };
    for (i, ns) in vms.iter().enumerate() {
        add_vm(ns, i as u32 + 1);
    }

    let dir = tempfile::tempdir().unwrap();
    let agent = workspace_bin("ganglion-agent");
    // The handler: what a site's replace-vm script does, with a namespace
    // standing in for the hypervisor's VM.
    let script = dir.path().join("replace-vm");
    let replacement_conf = dir.path().join("replacement.toml");
    let pid_file = dir.path().join("replacement.pid");
    let _replacement = PidFile(pid_file.clone());
    std::fs::write(
        &replacement_conf,
        agent_toml("vm2-r", &format!("{subnet}.1")),
    )
    .unwrap();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\n\
             echo \"replacing $1 of cluster $2: $3 $4 attempt $5 (GANGLION_STATE=$GANGLION_STATE)\"\n\
             ip netns add {ns}\n\
             ip link add gvh{id}9 type veth peer name gvn{id}9\n\
             ip link set gvn{id}9 netns {ns}\n\
             ip link set gvh{id}9 master {bridge} up\n\
             ip -n {ns} link set lo up\n\
             ip -n {ns} addr add {subnet}.50/24 dev gvn{id}9\n\
             ip -n {ns} link set gvn{id}9 up\n\
             setsid ip netns exec {ns} {agent} --config {conf} </dev/null >/dev/null 2>&1 &\n\
             echo $! > {pid}\n\
             echo \"started replacement <b>vm2-r</b> at {subnet}.50\"\n\
             echo 'hypervisor: one warning' >&2\n",
            ns = replacement_ns,
            agent = agent.display(),
            conf = replacement_conf.display(),
            pid = pid_file.display(),
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .unwrap();
    let (_agg, http) = aggregator(
        dir.path(),
        "vms",
        &format!("{subnet}.1:8649"),
        &format!(
            "[alerts]\ninterval_secs = 1\nwarmup_secs = 0\nmax_check_attempts = 1\nhost_down_after_secs = 4\n\
             [[handler]]\nname = \"replace-vm\"\non = [\"host_down\"]\nstate_types = [\"HARD\"]\n\
             argv = [\"{}\", \"{{host}}\", \"{{cluster}}\", \"{{state}}\", \"{{state_type}}\", \"{{attempt}}\"]\n\
             timeout_secs = 30\n",
            script.display()
        ),
    );
    let mut agents = Vec::new();
    for (i, ns) in vms.iter().enumerate() {
        let conf = dir.path().join(format!("vm{}.toml", i + 1));
        std::fs::write(
            &conf,
            agent_toml(&format!("vm{}", i + 1), &format!("{subnet}.1")),
        )
        .unwrap();
        agents.push(ChildGuard::spawn(
            "ganglion-agent",
            Command::new("ip")
                .args(["netns", "exec", ns])
                .arg(&agent)
                .arg("--config")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        ));
    }
    wait_until("vm1..vm3 up", Duration::from_secs(20), || {
        ["vm1", "vm2", "vm3"]
            .iter()
            .all(|h| host_alive(http, "vms", h))
            .then_some(())
    });

    // vm2 dies (a kernel panic: the agent stops, the VM's network goes).
    agents[1].terminate(Duration::from_secs(5));
    ip(&["netns", "del", &vms[1]]);

    let down = wait_until("vm2 DOWN HARD event", Duration::from_secs(30), || {
        events(http, "kind=host_down&host=vm2")
            .into_iter()
            .find(|e| e["state_type"] == "HARD")
    });
    assert_eq!(down["state"], "DOWN", "{down}");
    wait_until(
        "the replacement vm2-r up in the cluster",
        Duration::from_secs(30),
        || host_alive(http, "vms", "vm2-r").then_some(()),
    );
    let run = wait_until("the handler run recorded", Duration::from_secs(30), || {
        events(http, "kind=handler_run&host=vm2").into_iter().next()
    });
    let h = &run["handler"];
    assert_eq!(
        events(http, "kind=handler_run").len(),
        1,
        "{:#?}",
        events(http, "limit=50")
    );
    assert_eq!(h["name"], "replace-vm", "{run}");
    assert_eq!(h["exit_code"], 0, "{run}");
    assert_eq!(h["trigger_event"], down["id"], "{run}");
    assert_eq!(h["argv"][1], "vm2");
    assert_eq!(h["argv"][4], "HARD");
    let stdout = h["stdout"].as_str().unwrap();
    assert!(
        stdout.contains("replacing vm2 of cluster vms: DOWN HARD attempt 1 (GANGLION_STATE=DOWN)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("started replacement <b>vm2-r</b>"),
        "{stdout}"
    );
    assert_eq!(h["stderr"], "hypervisor: one warning\n", "{run}");
    // Exactly once: vm2 stays DOWN through many more evaluations, and the
    // others never went down.
    wait_until("a few more evaluations", Duration::from_secs(10), || {
        let a = json(http, "/api/alerts");
        (a["time"].as_i64()? >= down["time"].as_i64()? + 3).then_some(())
    });
    assert_eq!(
        events(http, "kind=handler_run").len(),
        1,
        "{:?}",
        events(http, "kind=handler_run")
    );
    for h in ["vm1", "vm3", "vm2-r"] {
        assert!(
            events(http, &format!("kind=host_down&host={h}")).is_empty(),
            "{h} went down"
        );
    }

    // The dashboard shows it (Chromium).
    let chromium = require_binary("chromium");
    let node = require_binary("node");
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run scripts/test.sh (it runs `npm ci` in tests/browser)"
    );
    let out = Command::new(node)
        .arg(browser_dir.join("alerts.mjs"))
        .arg(format!("http://{http}"))
        .arg(artifacts_dir())
        .args(["vms", "vm2", "started replacement <b>vm2-r</b>"])
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "browser test failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(agents);
}

#[test]
fn a_storm_is_one_cluster_incident_not_twenty_host_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("handler.log");
    let udp_port = free_udp_port();
    let (_agg, http) = aggregator(
        dir.path(),
        "farm",
        &format!("127.0.0.1:{udp_port}"),
        &format!(
            "[alerts]\ninterval_secs = 1\nwarmup_secs = 0\nmax_check_attempts = 1\nhost_down_after_secs = 4\n\
             storm_fraction = 0.5\nstorm_window_secs = 30\nstorm_min_hosts = 5\n\
             [[handler]]\nname = \"page-team\"\non = [\"cluster_incident\"]\n\
             argv = [\"/bin/sh\", \"-c\", \"echo \\\"$GANGLION_KIND $GANGLION_CLUSTER: $GANGLION_OUTPUT\\\" >> {log}\"]\n\
             [[handler]]\nname = \"per-host\"\non = [\"host_down\"]\nargv = [\"/bin/true\"]\n",
            log = log.display()
        ),
    );
    let udp = std::net::SocketAddr::from(([127, 0, 0, 1], udp_port));
    // 30 hosts report every half second; 20 of them stop at once.
    let alive = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(30));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (alive, stop) = (alive.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = alive.load(std::sync::atomic::Ordering::Relaxed);
                send_synthetic_hosts(udp, n, &["load_one"], |_, _| 0.5);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    wait_until("30 hosts up", Duration::from_secs(20), || {
        (json(http, "/api/cluster/farm")["hosts_up"] == 30).then_some(())
    });
    // host0000..host0009 keep reporting; host0010..host0029 die together.
    alive.store(10, std::sync::atomic::Ordering::Relaxed);
    let incident = wait_until("one cluster incident", Duration::from_secs(30), || {
        events(http, "kind=cluster_incident").into_iter().next()
    });
    assert_eq!(incident["cluster"], "farm", "{incident}");
    wait_until(
        "20 hosts DOWN in /api/alerts",
        Duration::from_secs(30),
        || (json(http, "/api/alerts")["hosts_down"].as_array()?.len() == 20).then_some(()),
    );
    wait_until(
        "the incident handler's run recorded",
        Duration::from_secs(20),
        || {
            events(http, "kind=handler_run")
                .into_iter()
                .find(|e| e["handler"]["name"] == "page-team")
        },
    );
    assert_eq!(events(http, "kind=cluster_incident").len(), 1);
    // Not 20 host alerts, and so no per-host handler runs.
    let host_downs = events(http, "kind=host_down");
    assert!(
        host_downs.len() < 20,
        "{} host_down events: {host_downs:?}",
        host_downs.len()
    );
    // Each host_down that was made ran the per-host handler; no more.
    wait_until(
        "per-host runs match host_down events",
        Duration::from_secs(20),
        || {
            let per_host = events(http, "kind=handler_run")
                .into_iter()
                .filter(|e| e["handler"]["name"] == "per-host")
                .count();
            (per_host == host_downs.len()).then_some(())
        },
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("cluster_incident farm: "), "{text}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
}

//! Multicast, as gmond's default configuration uses it, across a real link:
//! two network namespaces joined by a veth pair. In one, the aggregator joins
//! 239.2.11.71 and ff15::7 on its veth (`mcast_join`, `mcast_if`); in the
//! other, the real gmond sends to and listens on 239.2.11.71 (`mcast_join`,
//! `mcast_if`, `ttl`, `bind`), and two agents send to the IPv4 and the IPv6
//! group. All three hosts must show up in the aggregator's gmond XML, gmond's
//! with its metrics although its only metadata went out before the
//! aggregator started: the aggregator asks the group for it, as gmond does.
//!
//! Needs root (network namespaces); fails with that reason otherwise.

use ganglion_tests::{ChildGuard, gmond_conf, require_binary, workspace_bin};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Netns {
    names: Vec<String>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
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

fn in_ns(ns: &str, prog: &std::path::Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(prog);
    c
}

#[test]
fn gmond_and_agents_reach_the_aggregator_over_ipv4_and_ipv6_multicast() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "network namespaces need root: run the README's test command as root"
    );
    require_binary("ip");
    let id = std::process::id() % 100_000;
    let (a, b) = (format!("gna{id}"), format!("gnb{id}"));
    let (va, vb) = (format!("gva{id}"), format!("gvb{id}"));
    let _ns = Netns {
        names: vec![a.clone(), b.clone()],
    };
    ip(&["netns", "add", &a]);
    ip(&["netns", "add", &b]);
    ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
    ip(&["link", "set", &va, "netns", &a]);
    ip(&["link", "set", &vb, "netns", &b]);
    for (ns, dev, v4, v6) in [
        (&a, &va, "10.213.0.1/24", "fd13::1/64"),
        (&b, &vb, "10.213.0.2/24", "fd13::2/64"),
    ] {
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "addr", "add", v4, "dev", dev]);
        ip(&["-n", ns, "-6", "addr", "add", v6, "dev", dev, "nodad"]);
        ip(&["-n", ns, "link", "set", dev, "up"]);
        // No default route in a fresh namespace: multicast needs its own.
        ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev]);
    }

    let dir = tempfile::tempdir().unwrap();
    // The real gmond, started first, as Debian's gmond.conf runs it: sending
    // to the group and listening on it, metadata sent once at start. That
    // metadata goes out before the aggregator exists, so the metrics only
    // appear once the aggregator's metadata requests, sent to the group,
    // make gmond send it again.
    let conf = gmond_conf(
        dir.path(),
        "mc",
        18649,
        Some("239.2.11.71:8649".parse().unwrap()),
    );
    let text = std::fs::read_to_string(&conf).unwrap().replace(
        "host = 239.2.11.71",
        &format!("mcast_join = 239.2.11.71\n  mcast_if = {vb}\n  ttl = 1"),
    );
    assert!(text.contains("send_metadata_interval = 0"), "{text}");
    let text = strip_section(&text, "udp_recv_channel")
        + &format!(
            "\nudp_recv_channel {{\n  mcast_join = 239.2.11.71\n  port = 8649\n  bind = 239.2.11.71\n  mcast_if = {vb}\n}}\n"
        );
    std::fs::write(&conf, text).unwrap();
    let _gmond = ChildGuard::spawn(
        "gmond",
        in_ns(&b, &require_binary("gmond"))
            .arg("-f")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    // Its start-up metadata is sent into a group nobody else has joined yet.
    std::thread::sleep(Duration::from_secs(2));

    let agg_cfg = dir.path().join("aggregator.toml");
    std::fs::write(
        &agg_cfg,
        format!(
            r#"
grid_name = "mc"
write_rrds = false
[[cluster]]
name = "mc"
udp_listen = ["0.0.0.0:8649", "[::]:8649"]
mcast_join = ["239.2.11.71", "ff15::7"]
mcast_if = "{va}"
xml_listen = "127.0.0.1:8649"
reverse_dns = false
[xml]
dump_listen = ""
query_listen = ""
[http]
listen = ""
"#
        ),
    )
    .unwrap();
    let agg_log = dir.path().join("aggregator.log");
    let _agg = ChildGuard::spawn(
        "ganglion-aggregator",
        in_ns(&a, &workspace_bin("ganglion-aggregator"))
            .arg("--config")
            .arg(&agg_cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&agg_log).unwrap()),
    );

    let joined = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&agg_log)
        .unwrap_or_default()
        .contains("joined multicast group")
    {
        assert!(
            Instant::now() < joined,
            "the aggregator never joined its groups"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut agents = Vec::new();
    for (name, group) in [("agent-v4", "239.2.11.71"), ("agent-v6", "ff15::7")] {
        let cfg = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "override_hostname = \"{name}\"\n[[send]]\nhost = \"{group}\"\nport = 8649\nttl = 1\nmcast_if = \"{vb}\"\n"
            ),
        )
        .unwrap();
        agents.push(ChildGuard::spawn(
            name,
            in_ns(&b, &workspace_bin("ganglion-agent"))
                .arg("--config")
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        ));
    }

    let want = [
        "HOST NAME=\"10.213.0.2\"",
        "HOST NAME=\"agent-v4\"",
        "HOST NAME=\"agent-v6\"",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let read = "import socket,sys\ns=socket.create_connection(('127.0.0.1',8649),5)\nb=b''\nwhile True:\n  d=s.recv(65536)\n  if not d: break\n  b+=d\nsys.stdout.write(b.decode('latin-1'))";
    loop {
        let out = Command::new("ip")
            .args(["netns", "exec", &a, "python3", "-c", read])
            .output()
            .unwrap();
        let xml = String::from_utf8_lossy(&out.stdout).into_owned();
        let missing: Vec<&&str> = want.iter().filter(|w| !xml.contains(**w)).collect();
        // gmond's own metrics come over multicast too, not just its heartbeat.
        let gmond_metrics = xml.find(want[0]).is_some_and(|at| {
            let host = &xml[at..];
            host[..host.find("</HOST>").unwrap_or(host.len())].contains("<METRIC NAME=")
        });
        if missing.is_empty() && gmond_metrics {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing {missing:?} after 60 s.\nXML:\n{xml}\naggregator log:\n{}",
            std::fs::read_to_string(&agg_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = std::fs::read_to_string(&agg_log).unwrap_or_default();
    assert!(log.contains("joined multicast group"), "{log}");
}

/// gmond.conf text without any `name { … }` section (top level, one level of braces).
fn strip_section(text: &str, name: &str) -> String {
    let mut out = text.to_string();
    while let Some(start) = out.find(&format!("{name} {{")) {
        let end = start + out[start..].find('}').expect("section end") + 1;
        out.replace_range(start..end, "");
    }
    out
}

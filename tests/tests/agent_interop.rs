//! ganglion-agent against the real Ganglia 3.7.2: `send` is byte-identical to
//! gmetric, the agent's host looks exactly like a gmond host in real gmond's
//! XML, and a metadata request makes the agent re-send metadata at once.

use ganglion_proto::xdr::{self, Message, MetricId};
use ganglion_proto::xml::{self, Item, Limits};
use ganglion_tests::*;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

fn recv_n(sock: &UdpSocket, n: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while out.len() < n {
        let (len, from) = sock.recv_from(&mut buf).expect("datagram");
        out.push((buf[..len].to_vec(), from));
    }
    out
}

#[test]
fn send_is_byte_identical_to_real_gmetric() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let addr = sock.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = gmetric_conf(dir.path(), addr);
    let cases: &[&[&str]] = &[
        &[
            "-n",
            "temp_c",
            "-v",
            "42.5",
            "-t",
            "float",
            "-u",
            "Celsius",
            "-s",
            "both",
            "-x",
            "60",
            "-d",
            "0",
            "-g",
            "env",
            "-D",
            "Room temp",
            "-T",
            "Temperature",
        ],
        &[
            "-n",
            "jobs",
            "-v",
            "7",
            "-t",
            "uint32",
            "-S",
            "10.0.0.5:node5",
            "-d",
            "300",
            "-C",
            "mycluster",
        ],
        &["-S", "10.0.0.5:node5", "-H"],
        &[
            "-n",
            "reqs",
            "-v",
            "12",
            "-t",
            "uint32",
            "-g",
            "web,app db",
            "-s",
            "positive",
            "-u",
            "req/s",
        ],
        &[
            "-n",
            "neg",
            "-v",
            "-5",
            "-t",
            "int8",
            "-s",
            "derivative",
            "-x",
            "30",
        ],
        &[
            "-n",
            "msg",
            "-v",
            "hello <world> & 'you'",
            "-t",
            "string",
            "-s",
            "weird",
        ],
        &[
            "-n",
            "d",
            "-v",
            "1e300",
            "-t",
            "double",
            "-T",
            "Τίτλος",
            "-D",
            "ünïcode",
        ],
    ];
    for args in cases {
        gmetric(&conf, args);
        let theirs = recv_n(&sock, 2);
        let st = Command::new(workspace_bin("ganglion-agent"))
            .arg("send")
            .args(*args)
            .args(["--send-to", &addr.to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "ganglion-agent send {args:?}: {st}");
        let ours = recv_n(&sock, 2);
        for i in 0..2 {
            assert_eq!(
                ours[i].0, theirs[i].0,
                "{args:?}: datagram {i} differs from gmetric's"
            );
        }
    }
    // Failures exit 1 with gmetric's message, like gmetric.
    for (args, msg) in [
        (
            &["-n", "a\"b", "-v", "1", "-t", "int32"][..],
            "invalid character",
        ),
        (
            &["-n", "a", "-v", "x", "-t", "float"][..],
            "does not represent a number",
        ),
        (
            &["-n", "a", "-v", "1", "-t", "int64"][..],
            "is not a valid type",
        ),
        (
            &["-n", "a", "-v", "1", "-t", "int32", "-S", "nocolon"][..],
            "spoof",
        ),
    ] {
        let out = Command::new(workspace_bin("ganglion-agent"))
            .arg("send")
            .args(args)
            .args(["--send-to", &addr.to_string()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(msg),
            "{args:?}"
        );
    }
}

fn metric_table(
    doc: &xml::Document,
    pick: impl Fn(&xml::Host) -> bool,
) -> HashMap<String, xml::Metric> {
    for item in &doc.items {
        if let Item::Cluster(c) = item
            && let Some(h) = c.hosts.iter().find(|h| pick(h))
        {
            return h
                .metrics
                .iter()
                .map(|m| (m.name.to_string(), m.clone()))
                .collect();
        }
    }
    HashMap::new()
}

#[test]
fn agent_host_looks_like_a_gmond_host_in_real_gmond() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let gaddr = SocketAddr::from(([127, 0, 0, 1], port));
    let gconf = gmond_conf(dir.path(), "interop", port, Some(gaddr));
    let _gmond = start_gmond(&gconf, port);

    let _agent = start_agent(
        dir.path(),
        "agent.toml",
        &format!(
            "override_hostname = \"agenthost\"\noverride_ip = \"10.99.0.1\"\n[[send]]\nhost = \"127.0.0.1\"\nport = {port}\n"
        ),
        &[],
    );

    // gmond's default metric set (its own host) vs. the agent's host.
    let defaults = [
        "cpu_num",
        "cpu_speed",
        "mem_total",
        "swap_total",
        "boottime",
        "machine_type",
        "os_name",
        "os_release",
        "gexec",
        "cpu_user",
        "cpu_system",
        "cpu_idle",
        "cpu_nice",
        "cpu_aidle",
        "cpu_wio",
        "cpu_steal",
        "load_one",
        "load_five",
        "load_fifteen",
        "proc_run",
        "proc_total",
        "mem_free",
        "mem_shared",
        "mem_buffers",
        "mem_cached",
        "swap_free",
        "bytes_in",
        "bytes_out",
        "pkts_in",
        "pkts_out",
        "disk_total",
        "disk_free",
        "part_max_used",
    ];
    let deadline = Instant::now() + Duration::from_secs(90);
    let (gm, ag, doc) = loop {
        let raw = read_tcp(gaddr, None);
        let out = xml::parse_bytes(&raw, &Limits::default());
        let d = out.document;
        let gm = metric_table(&d, |h| h.ip == "127.0.0.1");
        let ag = metric_table(&d, |h| h.name == "agenthost");
        if defaults
            .iter()
            .all(|m| gm.contains_key(*m) && ag.contains_key(*m))
        {
            break (gm, ag, d);
        }
        assert!(
            Instant::now() < deadline,
            "metrics missing after 90 s: gmond {:?}, agent {:?}",
            defaults
                .iter()
                .filter(|m| !gm.contains_key(**m))
                .collect::<Vec<_>>(),
            defaults
                .iter()
                .filter(|m| !ag.contains_key(**m))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    for name in defaults {
        let (g, a) = (&gm[name], &ag[name]);
        assert_eq!(a.metric_type, g.metric_type, "{name} TYPE");
        assert_eq!(a.units, g.units, "{name} UNITS");
        assert_eq!(a.slope, g.slope, "{name} SLOPE");
        assert_eq!(a.tmax, g.tmax, "{name} TMAX");
        assert_eq!(a.dmax, g.dmax, "{name} DMAX");
        let group = |m: &xml::Metric| {
            m.extras
                .iter()
                .find(|(k, _)| k == "GROUP")
                .map(|(_, v)| v.clone())
        };
        assert_eq!(group(a), group(g), "{name} GROUP");
        let title = |m: &xml::Metric| {
            m.extras
                .iter()
                .find(|(k, _)| k == "TITLE")
                .map(|(_, v)| v.clone())
        };
        assert_eq!(title(a), title(g), "{name} TITLE");
    }
    // Facts of the same machine read the same.
    for name in [
        "cpu_num",
        "cpu_speed",
        "mem_total",
        "swap_total",
        "boottime",
        "machine_type",
        "os_name",
        "os_release",
        "disk_total",
    ] {
        assert_eq!(ag[name].val, gm[name].val, "{name} value");
    }
    // Load and memory are close to what gmond reads at nearly the same moment.
    let num = |t: &HashMap<String, xml::Metric>, n: &str| t[n].val.trim().parse::<f64>().unwrap();
    assert!(
        (num(&ag, "load_one") - num(&gm, "load_one")).abs() <= 1.0,
        "load_one"
    );
    for m in ["mem_total", "mem_free", "mem_cached"] {
        let (a, g) = (num(&ag, m), num(&gm, m));
        assert!(
            (a - g).abs() <= (0.10 * g).max(102_400.0),
            "{m}: agent {a} vs gmond {g}"
        );
    }
    let cpu: f64 = [
        "cpu_user",
        "cpu_nice",
        "cpu_system",
        "cpu_idle",
        "cpu_wio",
        "cpu_steal",
    ]
    .iter()
    .map(|m| num(&ag, m))
    .sum();
    assert!(
        (97.0..=103.0).contains(&cpu),
        "cpu percentages sum to {cpu}"
    );
    // gstat, reading that gmond, lists the agent's host.
    let out = Command::new(require_binary("gstat"))
        .args(["-a", "-i", "127.0.0.1", "-p", &port.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("agenthost"), "gstat output:\n{text}");
    assert!(text.contains("Dead Hosts: 0"), "gstat output:\n{text}");
    // The host itself: spoofed name and IP, gmond's GMOND_STARTED from our heartbeat.
    let Item::Cluster(c) = &doc.items[0] else {
        panic!()
    };
    let h = c.hosts.iter().find(|h| h.name == "agenthost").unwrap();
    assert_eq!(h.ip, "10.99.0.1");
    assert!(
        h.gmond_started > 1_000_000_000,
        "heartbeat carried the start time"
    );
}

#[test]
fn metadata_request_makes_the_agent_resend_at_once() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let addr = sock.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _agent = start_agent(
        dir.path(),
        "agent.toml",
        "send_metadata_interval_secs = 0\n",
        &["--send-to", &addr.to_string()],
    );
    // The start-up burst: metadata then value for everything collected.
    let first = recv_n(&sock, 20);
    let agent_addr = first[0].1;
    let mut buf = [0u8; 2048];
    while sock.recv_from(&mut buf).is_ok_and(|(n, _)| n > 0) {
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
    }
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Ask for load_one's metadata, as a restarted collector would.
    let req = Message::MetadataRequest(MetricId {
        host: "127.0.0.1".into(),
        name: "load_one".into(),
        spoof: false,
    });
    sock.send_to(&xdr::encode(&req).unwrap(), agent_addr)
        .unwrap();
    let t = Instant::now();
    loop {
        let (n, _) = sock.recv_from(&mut buf).expect("metadata re-sent");
        if let Ok(Message::Metadata(m)) = xdr::decode(&buf[..n])
            && m.meta.name == "load_one"
        {
            assert_eq!((m.meta.units.as_str(), m.meta.tmax), (" ", 70));
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no metadata within 5 s"
        );
    }
}

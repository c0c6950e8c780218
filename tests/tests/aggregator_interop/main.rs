//! The aggregator against the real Ganglia 3.7.2 tools: gmetric sends to it,
//! gstat and gmetad read from it, and it polls a real gmond. Every XML document
//! it serves is checked with `xmllint --valid`.

use ganglion_proto::model::{MetricType, Slope};
use ganglion_proto::xdr::{self, Message, MetricId, Value, ValueMsg};
use ganglion_proto::xml::{self, Item, Limits};
use ganglion_tests::*;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::time::Duration;

mod ipv6;
mod parity;
mod polling;

fn parse(doc: &[u8]) -> xml::Document {
    let out = xml::parse_bytes(doc, &Limits::default());
    assert_eq!(out.error, None, "{}", String::from_utf8_lossy(doc));
    out.document
}

fn clusters(doc: &xml::Document) -> Vec<xml::Cluster> {
    let mut v = Vec::new();
    for i in &doc.items {
        match i {
            Item::Cluster(c) => v.push(c.clone()),
            Item::Grid(g) => v.extend(g.clusters.iter().cloned()),
            Item::Host(_) => {}
        }
    }
    v
}

fn wait_for_metric(addr: SocketAddr, metric: &str) -> Vec<u8> {
    wait_until(
        &format!("{metric} in the XML of {addr}"),
        Duration::from_secs(15),
        || {
            let doc = read_tcp(addr, None);
            String::from_utf8_lossy(&doc)
                .contains(&format!("NAME=\"{metric}\""))
                .then_some(doc)
        },
    )
}

#[test]
fn gmetric_to_aggregator_then_gmond_xml_queries_and_gstat() {
    let agg = Aggregator::start("testclust", "");
    let conf = gmetric_conf(agg.dir.path(), agg.udp);
    gmetric(
        &conf,
        &[
            "-n",
            "temp_c",
            "-v",
            "42.5",
            "-t",
            "float",
            "-u",
            "Celsius",
            "-g",
            "env",
            "-D",
            "Room temp",
            "-T",
            "Temperature",
        ],
    );
    gmetric(
        &conf,
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
    );
    gmetric(&conf, &["-S", "10.0.0.5:node5", "-H"]);
    // Names and units that break real gmond/gmetad XML.
    gmetric(
        &conf,
        &[
            "-n",
            "weird name:x<y",
            "-v",
            "1",
            "-t",
            "int32",
            "-u",
            "u&x",
        ],
    );
    gmetric(&conf, &["-n", "motd", "-v", "a&b<c>'d'", "-t", "string"]);
    gmetric(
        &conf,
        &["-n", "ctr", "-v", "5", "-t", "double", "-s", "derivative"],
    );

    let doc = wait_for_metric(agg.gmond, "motd");
    xmllint_valid(&doc).unwrap_or_else(|e| panic!("gmond XML invalid: {e}"));
    let text = String::from_utf8_lossy(&doc);
    assert!(text.contains("<GANGLIA_XML VERSION=\"3.7.2\" SOURCE=\"gmond\">"));
    let d = parse(&doc);
    let cs = clusters(&d);
    assert_eq!(cs.len(), 1);
    let c = &cs[0];
    assert_eq!(c.name, "testclust");
    let local = c
        .hosts
        .iter()
        .find(|h| h.ip == "127.0.0.1")
        .expect("the gmetric host");
    let temp = local.metrics.iter().find(|m| m.name == "temp_c").unwrap();
    assert_eq!(
        (temp.val.as_str(), temp.metric_type, temp.units.as_str()),
        ("42.5", MetricType::Float, "Celsius")
    );
    assert_eq!((temp.tmax, temp.dmax, temp.slope), (60, 0, Slope::Both));
    // gmond prints extras in reverse arrival order: gmetric sends GROUP, DESC, TITLE.
    let keys: Vec<&str> = temp.extras.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["TITLE", "DESC", "GROUP"]);
    let weird = local
        .metrics
        .iter()
        .find(|m| m.name == "weird name_x<y")
        .expect("':' → '_' like gmond");
    assert_eq!(weird.units, "u&x");
    assert_eq!(
        local.metrics.iter().find(|m| m.name == "motd").unwrap().val,
        "a&b<c>'d'"
    );
    let node5 = c
        .hosts
        .iter()
        .find(|h| h.name == "node5")
        .expect("spoofed host");
    assert_eq!(node5.ip, "10.0.0.5");
    assert_eq!(node5.metrics.len(), 1, "heartbeat is not a METRIC");
    assert_eq!(node5.metrics[0].dmax, 300);
    assert_eq!(node5.tmax, 20);

    // gmetad dump port.
    let dump = read_tcp(agg.dump, None);
    xmllint_valid(&dump).unwrap_or_else(|e| panic!("dump invalid: {e}"));
    let dd = parse(&dump);
    let Item::Grid(g) = &dd.items[0] else {
        panic!("GRID first")
    };
    assert_eq!(
        (g.name.as_str(), g.authority.as_str()),
        ("TestGrid", "http://test/")
    );
    assert_eq!(g.clusters[0].hosts.len(), 2);
    assert!(String::from_utf8_lossy(&dump).contains("SOURCE=\"gmond\">"));

    // Interactive port: summary, host path (HTTP with gmetad's exact header), metric path.
    let s = read_tcp(agg.query, Some(b"/?filter=summary\n"));
    xmllint_valid(&s).unwrap();
    let sd = parse(&s);
    let Item::Grid(g) = &sd.items[0] else {
        panic!()
    };
    assert_eq!(g.hosts.map(|h| (h.up, h.down)), Some((2, 0)));
    let cs = &g.clusters[0];
    assert!(cs.hosts.is_empty());
    let t = cs.metrics.iter().find(|m| m.name == "temp_c").unwrap();
    assert_eq!((t.sum.as_str(), t.num), ("42.5", 1));
    assert!(
        cs.metrics.iter().all(|m| m.name != "motd"),
        "strings are not summarised"
    );

    let h = read_tcp(agg.query, Some(b"GET /testclust/node5 HTTP/1.0\r\n\r\n"));
    let h = String::from_utf8_lossy(&h).into_owned();
    assert!(h.starts_with("HTTP/1.0 200 OK\r\nServer: gmetad/3.7.2-1\r\nAccess-Control-Allow-Origin: *\nContent-Type: application/xml\r\nConnection: close\r\n\r\n<?xml"), "{h}");
    let body = &h[h.find("<?xml").unwrap()..];
    xmllint_valid(body.as_bytes()).unwrap();
    let hd = parse(body.as_bytes());
    let Item::Grid(g) = &hd.items[0] else {
        panic!()
    };
    assert_eq!(g.clusters[0].hosts.len(), 1);
    assert_eq!(g.clusters[0].hosts[0].name, "node5");

    let m = read_tcp(agg.query, Some(b"/testclust/127.0.0.1/temp_c\n"));
    let md = parse(&m);
    let Item::Grid(g) = &md.items[0] else {
        panic!()
    };
    assert_eq!(g.clusters[0].hosts[0].metrics.len(), 1);

    // A hostile request line is closed silently.
    assert!(read_tcp(agg.query, Some(b"/a;rm -rf\n")).is_empty());

    // /status JSON with real counters.
    let st = read_tcp(agg.query, Some(b"GET /status HTTP/1.0\r\n\r\n"));
    let st = String::from_utf8_lossy(&st).into_owned();
    let json: serde_json::Value =
        serde_json::from_str(&st[st.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(json["gridname"], "TestGrid");
    assert!(json["metrics"]["received"].as_u64().unwrap() >= 12);

    // The real gstat reads our gmond port.
    let out = Command::new(require_binary("gstat"))
        .args(["-a", "-i", "127.0.0.1", "-p", &agg.gmond.port().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "gstat failed: {text}");
    assert!(text.contains("Name: testclust"), "{text}");
    assert!(text.contains("Hosts: 2"), "{text}");
    assert!(text.contains("Dead Hosts: 0"), "{text}");
}

#[test]
fn values_without_metadata_get_a_request_back_and_garbage_is_counted() {
    let agg = Aggregator::start("reqclust", "");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let v = Message::Value(ValueMsg {
        id: MetricId {
            host: "ignored".into(),
            name: "orphan".into(),
            spoof: false,
        },
        fmt: "%d".into(),
        value: Value::Int(3),
    });
    sock.send_to(&xdr::encode(&v).unwrap(), agg.udp).unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = sock
        .recv_from(&mut buf)
        .expect("a metadata request comes back");
    assert_eq!(from, agg.udp);
    let Message::MetadataRequest(id) = xdr::decode(&buf[..n]).unwrap() else {
        panic!("136 expected")
    };
    assert_eq!(id.name, "orphan");
    assert_eq!(id.host, "127.0.0.1", "named as the receiver knows the host");

    // Empty, a hostile length, an unknown id, and an oversized datagram.
    let mut big = vec![0u8; 2000];
    big[..8].copy_from_slice(b"\x00\x00\x00\x85\x00\x00\x07\xd0");
    for junk in [
        &b""[..],
        b"\x00\x00\x00\x85\xff\xff\xff\xff",
        b"\x00\x00\x00\x07abcd",
        &big[..],
    ] {
        sock.send_to(junk, agg.udp).unwrap();
    }
    let metrics = wait_until("decode errors counted", Duration::from_secs(5), || {
        let body = read_tcp(agg.http, Some(b"GET /metrics HTTP/1.0\r\n\r\n"));
        let t = String::from_utf8_lossy(&body).into_owned();
        t.contains("ganglion_decode_errors_total 3").then_some(t)
    });
    assert!(
        metrics.contains("ganglion_unknown_messages_total 1"),
        "{metrics}"
    );
    // Still serving.
    xmllint_valid(&read_tcp(agg.gmond, None)).unwrap();
}

/// Slow readers cost nothing but their own connection. The document is far
/// larger than what the kernel buffers for a client that never reads (a
/// loopback send buffer grows to 4 MiB at most, a receive buffer starts at
/// 128 KiB and grows only as the reader reads), so the server's writes to
/// those clients really block; they are dropped after `client_timeout_secs`
/// (counted, which proves the backpressure happened) while ingest goes on
/// and a concurrent dump is served whole.
#[test]
fn slow_xml_clients_do_not_block_others() {
    // No RRD files: 40,000 of them would make the shutdown below slow, and
    // what is checked here is the XML ports.
    let agg = Aggregator::start("slow", "write_rrds = false\n");
    let metrics = ["m0", "m1", "m2", "m3", "m4"];
    let big = 8 << 20;
    // UDP is lossy: a busy machine drops part of an 80,000-datagram burst, so
    // the burst is repeated until the state is whole. What this test checks
    // is slow readers, not ingest loss (the ingest benchmarks measure that).
    let mut round = 0;
    wait_until("a dump larger than 8 MiB", Duration::from_secs(90), || {
        if round % 50 == 0 {
            send_synthetic_hosts(agg.udp, 8000, &metrics, |h, k| (h + k) as f32);
        }
        round += 1;
        (read_tcp(agg.dump, None).len() > big).then_some(())
    });
    let timeouts_before = metrics_value(agg.http, "ganglion_xml_timeouts_total");
    // Ten clients that connect to the dump port and never read, and one
    // that never sends its query line.
    let idle: Vec<_> = (0..10)
        .map(|_| std::net::TcpStream::connect(agg.dump).unwrap())
        .collect();
    let mute = std::net::TcpStream::connect(agg.query).unwrap();
    // Meanwhile a new metric is ingested and a whole dump is served.
    send_metric(
        agg.udp,
        "10.200.0.1:probe",
        "probe_y",
        "float",
        3,
        Value::Float(2.0),
    );
    let doc = wait_for_metric(agg.dump, "probe_y");
    assert!(doc.len() > big, "the whole document, {} bytes", doc.len());
    let d = parse(&doc);
    let hosts: usize = clusters(&d).iter().map(|c| c.hosts.len()).sum();
    assert!(hosts > 4000, "{hosts} hosts in the concurrent dump");
    // The idle clients were really held up: the server gave up on them.
    wait_until(
        "the idle clients dropped as too slow",
        Duration::from_secs(30),
        || {
            (metrics_value(agg.http, "ganglion_xml_timeouts_total") >= timeouts_before + 11)
                .then_some(())
        },
    );
    // SIGTERM stops it cleanly even with those clients still connected.
    let mut agg = agg;
    assert_eq!(
        agg.guard.terminate(Duration::from_secs(15)),
        Some(0),
        "clean exit on SIGTERM"
    );
    drop((idle, mute));
}

#[test]
fn agent_metrics_come_back_right_after_an_aggregator_restart() {
    let first = Aggregator::start("restart", "");
    let udp = first.udp;
    // Metadata only at start and on request: recovery must come from the request.
    let _agent = start_agent(
        first.dir.path(),
        "agent.toml",
        &format!(
            "send_metadata_interval_secs = 0\n[[send]]\nhost = \"127.0.0.1\"\nport = {}\n\
             [[collection_group]]\ncollect_every_secs = 1\ntime_threshold_secs = 2\n\
             [[collection_group.metric]]\nname = \"load_one\"\n",
            udp.port()
        ),
        &[],
    );
    wait_for_metric(first.gmond, "load_one");
    // Restart on the same ports: the new aggregator has no metadata.
    let (gmond, http, dir_keep) = (first.gmond, first.http, first.dir.path().to_path_buf());
    let cfg = dir_keep.join("aggregator.toml");
    let mut first = first;
    assert_eq!(first.guard.terminate(Duration::from_secs(15)), Some(0));
    let _second = ChildGuard::spawn(
        "ganglion-aggregator",
        Command::new(workspace_bin("ganglion-aggregator"))
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "warn"),
    );
    wait_for_tcp(gmond, Duration::from_secs(10));
    wait_for_metric(gmond, "load_one");
    // It came back through a metadata request (the agent sends metadata at
    // start and on request only), not through a timing accident.
    assert!(
        metrics_value(http, "ganglion_metadata_requests_sent_total") >= 1,
        "recovered without a metadata request?"
    );
}

/// Regression: with stderr a pipe whose reader is gone (`| tee` stopped by
/// the same Ctrl-C), the first log line used to panic the logging thread;
/// when that was the signal handler, the daemon never shut down.
#[test]
fn a_closed_stderr_does_not_stop_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let (dump, query, http) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let cfg = format!(
        "rrd_root = \"{root}\"\n[[cluster]]\nname = \"c\"\nudp_listen = \"127.0.0.1:{port}\"\n\
         xml_listen = \"127.0.0.1:{port}\"\n[xml]\ndump_listen = \"127.0.0.1:{dump}\"\n\
         query_listen = \"127.0.0.1:{query}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n",
        root = dir.path().join("rrds").display()
    );
    let conf = dir.path().join("aggregator.toml");
    std::fs::write(&conf, cfg).unwrap();
    let mut child = Command::new(workspace_bin("ganglion-aggregator"))
        .arg("--config")
        .arg(&conf)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ganglion-aggregator");
    wait_for_tcp(
        SocketAddr::from(([127, 0, 0, 1], http)),
        Duration::from_secs(10),
    );
    drop(child.stderr.take());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = status.expect("the aggregator did not stop within 15 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}

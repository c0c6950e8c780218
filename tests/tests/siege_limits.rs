//! Connection and request limits of the aggregator, each against the real
//! binary: idle connections at the cap (HTTP, 8651, 8652) with the soft
//! descriptor limit lowered to 1024, slowloris headers, a ten-year
//! many-host `/api/series`, and `POST /api/flush`'s ACL and rate limit.

use ganglion_tests::{
    Aggregator, Tuning, connect_from, http_get, metrics_value, read_tcp, send_synthetic_hosts,
    wait_until,
};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn lo(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// Reads what the server sends until it closes (or `timeout`).
fn read_all(s: &mut TcpStream, timeout: Duration) -> String {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut v = Vec::new();
    let _ = s.read_to_end(&mut v);
    String::from_utf8_lossy(&v).into_owned()
}

/// The status code of a raw HTTP answer (0 when there is none).
fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Whether the server closes `s` within `within` (EOF or reset), reading
/// and discarding what it sends.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let t = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while t.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// A GET from loopback address `from`, HTTP/1.0 (the server closes after).
fn get_from(from: Ipv4Addr, to: SocketAddr, path: &str, timeout: Duration) -> String {
    let mut s = connect_from(from, to).unwrap_or_else(|e| panic!("connect {to}: {e}"));
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    read_all(&mut s, timeout)
}

#[test]
fn http_idle_connections_at_the_caps_do_not_lock_out_a_fresh_client() {
    let agg = Aggregator::start_tuned(
        "siege",
        &Tuning {
            http: "max_connections = 40\nmax_connections_per_ip = 10\nheader_read_timeout_secs = 6\nkeepalive_timeout_secs = 6\n".into(),
            nofile: Some(1024),
            ..Tuning::default()
        },
    );
    // One address opens 30: 10 are served (and sit idle), 20 are answered
    // 503 with Retry-After at once and closed.
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(connect_from(lo(1), agg.http).unwrap());
    }
    let mut refused = 0;
    for s in &mut held[10..] {
        let answer = read_all(s, Duration::from_secs(5));
        assert_eq!(status(&answer), 503, "{answer:?}");
        assert!(answer.contains("Retry-After: 5"), "{answer:?}");
        assert!(answer.contains("http.max_connections_per_ip"), "{answer}");
        refused += 1;
    }
    assert_eq!(refused, 20);
    // Four more addresses fill the listener past max_connections: 30 more
    // served idle, 10 refused at once (503 naming http.max_connections).
    for a in 2..=5 {
        for _ in 0..10 {
            held.push(connect_from(lo(a), agg.http).unwrap());
        }
    }
    // A fresh client is answered at once: 503 + Retry-After naming the cap
    // while the idle connections hold it, 200 once the header timeout has
    // freed them (6 s: long enough that a loaded test machine makes its
    // connects before the first ones time out). Never a wait in the backlog.
    wait_until(
        "a fresh client served after the idle ones time out",
        Duration::from_secs(40),
        || {
            let t = Instant::now();
            let answer = get_from(lo(9), agg.http, "/api/grid", Duration::from_secs(5));
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "a fresh client waited {:?}",
                t.elapsed()
            );
            match status(&answer) {
                200 => Some(()),
                503 => {
                    assert!(answer.contains("http.max_connections"), "{answer}");
                    assert!(answer.contains("Retry-After:"), "{answer}");
                    std::thread::sleep(Duration::from_millis(300));
                    None
                }
                other => panic!("status {other}: {answer}"),
            }
        },
    );
    wait_until(
        "the listener's cap counted",
        Duration::from_secs(30),
        || {
            (metrics_value(
                agg.http,
                "ganglion_listener_at_cap_total{listener=\"http\"}",
            ) > 0)
                .then_some(())
        },
    );
    // (/metrics itself may be refused at the cap meanwhile: poll it.)
    wait_until(
        "the per-address refusals counted",
        Duration::from_secs(30),
        || {
            (metrics_value(
                agg.http,
                "ganglion_connections_refused_per_ip_total{listener=\"http\"}",
            ) >= 20)
                .then_some(())
        },
    );
    // The aggregator ran within 1024 descriptors and says nothing of EMFILE.
    assert_eq!(
        metrics_value(agg.http, "ganglion_accept_errors_total{listener=\"http\"}"),
        0,
        "{}",
        agg.log()
    );
    drop(held);
}

#[test]
fn xml_ports_at_their_caps_still_serve_a_fresh_client() {
    let agg = Aggregator::start_tuned(
        "siege",
        &Tuning {
            xml: "max_connections = 10\nmax_connections_per_ip = 5\n".into(),
            nofile: Some(1024),
            ..Tuning::default()
        },
    );
    // 8652 waits for a request line (up to client_timeout_secs = 5): idle
    // clients hold it. 8651 writes and closes: holders that never read.
    let mut held = Vec::new();
    for a in 1..=4 {
        for _ in 0..8 {
            held.push(connect_from(lo(a), agg.query).unwrap());
            held.push(connect_from(lo(a), agg.dump).unwrap());
        }
    }
    wait_until("the query port at its cap", Duration::from_secs(10), || {
        (metrics_value(
            agg.http,
            "ganglion_listener_at_cap_total{listener=\"query\"}",
        ) > 0)
            .then_some(())
    });
    let dump = read_from(lo(9), agg.dump, None);
    assert!(
        dump.contains("<GANGLIA_XML") && dump.contains("</GANGLIA_XML>"),
        "{dump}"
    );
    let answer = read_from(lo(9), agg.query, Some(b"/\n"));
    assert!(answer.contains("<GANGLIA_XML"), "{answer}");
    assert!(
        metrics_value(
            agg.http,
            "ganglion_connections_refused_per_ip_total{listener=\"query\"}"
        ) >= 1
    );
    drop(held);
    // After the holders go, the plain helpers work again from 127.0.0.1.
    assert!(String::from_utf8_lossy(&read_tcp(agg.dump, None)).contains("<GANGLIA_XML"));
}

fn read_from(from: Ipv4Addr, to: SocketAddr, request: Option<&[u8]>) -> String {
    let mut s = connect_from(from, to).unwrap();
    if let Some(r) = request {
        s.write_all(r).unwrap();
    }
    read_all(&mut s, Duration::from_secs(30))
}

#[test]
fn slowloris_headers_are_closed_by_the_header_timeout() {
    let agg = Aggregator::start_tuned(
        "siege",
        &Tuning {
            http: "header_read_timeout_secs = 2\n".into(),
            ..Tuning::default()
        },
    );
    // Headers trickled one byte every 300 ms, never finished.
    let mut s = TcpStream::connect(agg.http).unwrap();
    s.write_all(b"GET /api/grid HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = loop {
        if s.write_all(b"X").is_err() {
            break true;
        }
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => {} // hyper's 408, then the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break true,
        }
        if t.elapsed() > Duration::from_secs(20) {
            break false;
        }
    };
    assert!(closed, "a slowloris client was still connected after 20 s");
    // A client that sends nothing at all is closed too.
    let mut quiet = TcpStream::connect(agg.http).unwrap();
    assert!(
        closed_within(&mut quiet, Duration::from_secs(20)),
        "a silent client was still connected after 20 s"
    );
    assert!(
        metrics_value(
            agg.http,
            "ganglion_http_refused_total{reason=\"header_timeout\"}"
        ) >= 2
    );
}

#[test]
fn ten_year_series_over_many_hosts_is_capped_or_bounded() {
    let agg = Aggregator::start_tuned(
        "siege",
        &Tuning {
            top: "step_secs = 1\n".into(),
            http: "max_series_columns = 50\n".into(),
            ..Tuning::default()
        },
    );
    send_synthetic_hosts(agg.udp, 60, &["load_one"], |h, _| h as f32);
    let q = |hosts: &str, points: u32| {
        format!(
            "/api/series?cluster=siege&hosts={hosts}&metric=load_one&start=end-10years&points={points}"
        )
    };
    // Every host: over the column cap, a 400 that names the key.
    let all = wait_until("60 hosts in the snapshot", Duration::from_secs(20), || {
        let v: serde_json::Value =
            serde_json::from_str(&http_get(agg.http, &q("host", 500))).ok()?;
        v["error"].as_str()?.contains("60 hosts").then_some(v)
    });
    assert!(
        all["error"]
            .as_str()
            .unwrap()
            .contains("http.max_series_columns"),
        "{all}"
    );
    // 40 hosts over ten years at 500 points: at most 500 rows per column,
    // whatever the range.
    let v = wait_until("40 series with data", Duration::from_secs(30), || {
        let v: serde_json::Value =
            serde_json::from_str(&http_get(agg.http, &q("^host00[0-3]", 500))).ok()?;
        (v["columns"].as_array()?.len() == 40).then_some(v)
    });
    let times = v["times"].as_array().unwrap().len();
    assert!(times > 0 && times <= 500, "{times} rows");
    for col in v["values"].as_array().unwrap() {
        assert_eq!(col.as_array().unwrap().len(), times);
    }
    // Over the rows cap: a 400 naming its key.
    let e = http_get(agg.http, &q("^host00[0-3]", 20000));
    assert!(e.contains("http.max_series_rows"), "{e}");
}

/// A non-loopback address of this machine (the one a route to a TEST-NET
/// address would use), or a panic saying why the test cannot run.
fn non_loopback_ipv4() -> Ipv4Addr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("192.0.2.1:9")
        .expect("no IPv4 route: this test needs a non-loopback address to be untrusted from");
    match s.local_addr().unwrap().ip() {
        std::net::IpAddr::V4(a) if !a.is_loopback() && !a.is_unspecified() => a,
        other => panic!("no non-loopback IPv4 address (got {other}); this test needs one"),
    }
}

fn post_flush(from: Option<Ipv4Addr>, to: SocketAddr) -> String {
    let mut s = match from {
        Some(a) => connect_from_any(a, to),
        None => TcpStream::connect(to).unwrap(),
    };
    s.write_all(b"POST /api/flush HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    read_all(&mut s, Duration::from_secs(60))
}

fn connect_from_any(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    if from.is_loopback() {
        return connect_from(from, to).unwrap();
    }
    TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap()
}

#[test]
fn flush_from_an_untrusted_address_is_403() {
    let ip = non_loopback_ipv4();
    let agg = Aggregator::start_tuned(
        "siege",
        &Tuning {
            top: "trusted_hosts = []\nall_trusted = false\n".into(),
            http_host: "0.0.0.0".into(),
            ..Tuning::default()
        },
    );
    let port = agg.http.port();
    // Connecting to our own non-loopback address makes it the peer address.
    let answer = post_flush(Some(ip), SocketAddr::from((ip, port)));
    assert_eq!(status(&answer), 403, "{answer}");
    assert!(answer.contains("trusted_hosts"), "{answer}");
    // Loopback is always trusted.
    let ok = post_flush(None, agg.http);
    assert_eq!(status(&ok), 200, "{ok}");
    assert_eq!(
        metrics_value(
            agg.http,
            "ganglion_http_refused_total{reason=\"flush_forbidden\"}"
        ),
        1
    );
}

#[test]
fn flush_sooner_than_the_interval_is_429_with_retry_after() {
    let agg = Aggregator::start_tuned(
        "siege",
        &Tuning {
            http: "flush_min_interval_secs = 60\n".into(),
            ..Tuning::default()
        },
    );
    let first = post_flush(None, agg.http);
    assert_eq!(status(&first), 200, "{first}");
    let again = post_flush(None, agg.http);
    assert_eq!(status(&again), 429, "{again}");
    assert!(
        again.to_ascii_lowercase().contains("retry-after:"),
        "{again}"
    );
    assert!(again.contains("http.flush_min_interval_secs"), "{again}");
    assert!(
        metrics_value(
            agg.http,
            "ganglion_http_refused_total{reason=\"flush_rate_limited\"}"
        ) >= 1
    );
}

#[test]
fn caps_that_do_not_fit_the_descriptor_limit_stop_the_start_naming_the_keys() {
    use ganglion_tests::{require_binary, workspace_bin};
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("aggregator.toml");
    // Default caps: 256 HTTP + 3 × 64 XML + fd_reserve 256 and the sockets
    // need about 710 descriptors; 300 cannot hold them.
    std::fs::write(
        &conf,
        format!(
            "rrd_root = \"{}\"\n[[cluster]]\nname = \"c\"\nudp_listen = \"127.0.0.1:0\"\n\
             xml_listen = \"127.0.0.1:0\"\nreverse_dns = false\n[xml]\n\
             dump_listen = \"127.0.0.1:0\"\nquery_listen = \"127.0.0.1:0\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("rrds").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(require_binary("prlimit"))
        .arg("--nofile=300:300")
        .arg(workspace_bin("ganglion-aggregator"))
        .arg("--config")
        .arg(&conf)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started within 300 descriptors: {err}"
    );
    for key in [
        "http.max_connections",
        "xml.max_connections",
        "limits.fd_reserve",
        "RLIMIT_NOFILE allows 300",
        "LimitNOFILE",
    ] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }
}

#[test]
fn keep_alive_outlives_the_header_timeout_and_idle_connections_close() {
    let agg = Aggregator::start_tuned(
        "siege",
        &Tuning {
            http: "header_read_timeout_secs = 2\nkeepalive_timeout_secs = 5\n".into(),
            ..Tuning::default()
        },
    );
    let mut s = TcpStream::connect(agg.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let get = |s: &mut TcpStream| {
        s.write_all(b"GET /api/grid HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 65536];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(status(&get(&mut s)), 200);
    // Idle for longer than the header timeout, less than keep-alive: the
    // connection is still there for the next request.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(status(&get(&mut s)), 200);
    // A next head that never ends is cut by the header timeout.
    s.write_all(b"GET /api/grid HTTP/1.1\r\n").unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(15)));
    // An idle keep-alive connection is closed after keepalive_timeout_secs.
    let mut idle = TcpStream::connect(agg.http).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(status(&get(&mut idle)), 200);
    assert!(closed_within(&mut idle, Duration::from_secs(20)));
    assert!(
        metrics_value(
            agg.http,
            "ganglion_http_refused_total{reason=\"idle_keepalive\"}"
        ) >= 1
    );
    assert!(
        metrics_value(
            agg.http,
            "ganglion_http_refused_total{reason=\"header_timeout\"}"
        ) >= 1
    );
}

#[test]
fn graphs_beyond_their_slots_get_503_with_retry_after() {
    // A stand-in `rrdtool` that takes 6 s, first on the aggregator's PATH:
    // one graph holds the only slot while a second one asks.
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("rrdtool");
    std::fs::write(&fake, "#!/bin/sh\nsleep 6\nexit 1\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let agg = Aggregator::start_tuned(
        "siege",
        &Tuning {
            top: "step_secs = 1\n".into(),
            http: "max_graph_processes = 1\n".into(),
            env: vec![("PATH".into(), path)],
            ..Tuning::default()
        },
    );
    send_synthetic_hosts(agg.udp, 1, &["load_one"], |_, _| 1.0);
    let url = "/api/graph.png?cluster=siege&host=host0000&metric=load_one";
    wait_until("the host's RRD file", Duration::from_secs(30), || {
        let v: serde_json::Value = serde_json::from_str(&http_get(
            agg.http,
            "/api/series?cluster=siege&host=host0000&metric=load_one",
        ))
        .ok()?;
        (!v["columns"].as_array()?.is_empty()).then_some(())
    });
    let http = agg.http;
    let first = std::thread::spawn(move || get_from(lo(1), http, url, Duration::from_secs(30)));
    wait_until("the first graph running", Duration::from_secs(10), || {
        let ps = std::process::Command::new("pgrep")
            .args(["-f", "sleep 6"])
            .output()
            .ok()?;
        (!ps.stdout.is_empty()).then_some(())
    });
    let second = get_from(lo(2), agg.http, url, Duration::from_secs(30));
    assert_eq!(status(&second), 503, "{second}");
    assert!(
        second.contains("Retry-After:") || second.contains("retry-after:"),
        "{second}"
    );
    assert!(second.contains("http.max_graph_processes"), "{second}");
    // The first one ran its (failing) subprocess: an error, not a 503.
    let first = first.join().unwrap();
    assert_eq!(status(&first), 500, "{first}");
    assert_eq!(
        metrics_value(
            agg.http,
            "ganglion_http_refused_total{reason=\"graph_busy\"}"
        ),
        1
    );
}

#[test]
fn daemon_socket_takes_the_same_governor() {
    let port = ganglion_tests::free_tcp_port();
    let agg = Aggregator::start_tuned(
        "siege",
        &Tuning {
            tables: format!(
                "[storage]\ndaemon_listen = [\"127.0.0.1:{port}\"]\n\
                 [limits]\ndaemon_max_connections = 4\ndaemon_max_connections_per_ip = 2\n"
            ),
            ..Tuning::default()
        },
    );
    let daemon = SocketAddr::from(([127, 0, 0, 1], port));
    ganglion_tests::wait_for_tcp(daemon, Duration::from_secs(10));
    let ping = |s: &mut TcpStream| {
        s.write_all(b"PING\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // Two from one address are served; its third is closed at once.
    let mut a = connect_from(lo(3), daemon).unwrap();
    let mut b = connect_from(lo(3), daemon).unwrap();
    assert_eq!(ping(&mut a), "0 PONG\n");
    assert_eq!(ping(&mut b), "0 PONG\n");
    let mut c = connect_from(lo(3), daemon).unwrap();
    assert!(closed_within(&mut c, Duration::from_secs(10)));
    // Another address still gets in (2 of 4 slots are taken; 127.0.0.1's
    // probe from wait_for_tcp may hold a third until it is noticed gone).
    let mut d = connect_from(lo(4), daemon).unwrap();
    assert_eq!(ping(&mut d), "0 PONG\n");
    assert!(
        metrics_value(
            agg.http,
            "ganglion_connections_refused_per_ip_total{listener=\"daemon\"}"
        ) >= 1
    );
    // FLUSHALL twice: the second joins or is told to wait, never a queue.
    let flush = |s: &mut TcpStream| {
        s.write_all(b"FLUSHALL\n").unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(flush(&mut a), "0 Started flush.\n");
    let second = flush(&mut a);
    assert!(
        second == "0 Started flush.\n" || second.starts_with("-1 Flush rate limited"),
        "{second}"
    );
}

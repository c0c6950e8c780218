//! `[[forward]]` against the real engines (Debian's victoria-metrics,
//! prometheus, graphite-carbon), gmetad 3.7.2's own carbon export for
//! parity, and engines that are down, never read, or fail then recover.
//! Every forward here runs with `interval_secs = 1` so a pass is a second.

use ganglion_proto::xdr::Value;
use ganglion_tests::engines::*;
use ganglion_tests::*;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HOST: &str = "10.0.0.1:Node1.example.com";

/// load_one 0.42 (float), cpu_num 4 (uint16), proc_run -3 (int32), os_name
/// (string, never forwarded).
fn send_fixture(udp: SocketAddr) {
    send_metric(udp, HOST, "load_one", "float", 3, Value::Float(0.42));
    send_metric(udp, HOST, "cpu_num", "uint16", 0, Value::UShort(4));
    send_metric(udp, HOST, "proc_run", "int32", 3, Value::Int(-3));
    send_metric(
        udp,
        HOST,
        "os_name",
        "string",
        0,
        Value::Str("Linux".into()),
    );
}

fn labels(series: &serde_json::Value) -> Vec<(String, String)> {
    series["metric"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect()
}

fn values(series: &serde_json::Value) -> Vec<f64> {
    series["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_f64())
        .collect()
}

fn timestamps(series: &serde_json::Value) -> Vec<i64> {
    series["timestamps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_i64())
        .collect()
}

fn forward_metric(agg: &Aggregator, name: &str, forward: &str, extra: &str) -> u64 {
    metrics_value(agg.http, &format!("{name}{{forward=\"{forward}\"{extra}}}"))
}

#[test]
fn victoria_metrics_gets_exactly_the_values_and_labels_sent() {
    let vm = VictoriaMetrics::start();
    let agg = Aggregator::start(
        "my cluster",
        &format!(
            "[[forward]]\nname = \"graphite\"\nkind = \"graphite\"\naddress = \"{g}\"\nprefix = \"ganglia\"\ninterval_secs = 1\n\
             [[forward]]\nname = \"graphite_udp\"\nkind = \"graphite\"\nprotocol = \"udp\"\naddress = \"{g}\"\nprefix = \"viaudp\"\ninterval_secs = 1\n\
             [[forward]]\nname = \"rw\"\nkind = \"remote_write\"\nurl = \"http://{h}/api/v1/write\"\ninterval_secs = 1\n\
             external_labels = {{ job = \"ganglion\" }}\nexclude = [\"*/*/proc_run\"]\n",
            g = vm.graphite,
            h = vm.http
        ),
    );
    send_fixture(agg.udp);
    let expected = [("ganglia_cpu_num", 4.0), ("ganglia_load_one", 0.42)];
    // Remote write: two series (proc_run excluded, os_name a string), each
    // with at least two passes.
    let series = wait_until(
        "two remote-written series with two samples each",
        Duration::from_secs(20),
        || {
            let s = vm.export(r#"{__name__=~"ganglia_.*"}"#);
            (s.len() == 2 && s.iter().all(|x| values(x).len() >= 2)).then_some(s)
        },
    );
    for s in &series {
        let l = labels(s);
        let name = l.iter().find(|(k, _)| k == "__name__").unwrap().1.clone();
        let want = expected.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(
            l,
            [
                ("__name__".to_string(), name.clone()),
                ("cluster".into(), "my cluster".into()),
                ("grid".into(), "TestGrid".into()),
                ("host".into(), "Node1.example.com".into()),
                ("job".into(), "ganglion".into()),
            ]
        );
        assert!(values(s).iter().all(|v| *v == want), "{name}: {s}");
        let ts = timestamps(s);
        assert!(ts.iter().all(|t| t % 1000 == 0), "{ts:?}");
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    }
    // Graphite, TCP and UDP: gmetad's paths, same values.
    for prefix in ["ganglia", "viaudp"] {
        let g = wait_until(
            &format!("graphite series under {prefix}"),
            Duration::from_secs(20),
            || {
                let s = vm.export(&format!(r#"{{__name__=~"{prefix}[.].*"}}"#));
                (s.len() == 3).then_some(s)
            },
        );
        let mut got: Vec<(String, f64)> = g
            .iter()
            .map(|s| {
                (
                    s["metric"]["__name__"].as_str().unwrap().to_string(),
                    values(s)[0],
                )
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let p = |m: &str| format!("{prefix}.my_cluster.node1_example_com.{m}");
        assert_eq!(
            got,
            [
                (p("cpu_num"), 4.0),
                (p("load_one"), 0.42),
                (p("proc_run"), -3.0)
            ]
        );
    }
    // No NUL or other junk after the lines.
    assert_eq!(
        vm.self_metric("vm_rows_invalid_total{type=\"graphite\"}"),
        0
    );
    // Counters and the status endpoint.
    assert!(forward_metric(&agg, "ganglion_forward_sent_total", "rw", "") >= 4);
    assert_eq!(
        forward_metric(
            &agg,
            "ganglion_forward_dropped_total",
            "rw",
            ",reason=\"rejected\""
        ),
        0
    );
    let status: serde_json::Value =
        serde_json::from_str(&http_get(agg.http, "/api/forwards")).unwrap();
    let names: Vec<&str> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["graphite", "graphite_udp", "rw"]);
    assert!(
        status.as_array().unwrap().iter().all(|f| f["up"] == true),
        "{status}"
    );
    // /metrics/hosts: every numeric metric, and promtool agrees with it
    // and with /metrics now that forward counters are in it.
    // gmond's mem_total is no counter: untyped, so promtool takes it.
    send_metric(agg.udp, HOST, "mem_total", "uint32", 0, Value::UInt(1024));
    let hosts = wait_until(
        "mem_total in /metrics/hosts",
        Duration::from_secs(10),
        || {
            let t = http_get(agg.http, "/metrics/hosts");
            t.contains("ganglia_mem_total{").then_some(t)
        },
    );
    assert!(
        hosts.contains("# TYPE ganglia_mem_total untyped\n"),
        "{hosts}"
    );
    for line in [
        "ganglia_load_one{cluster=\"my cluster\",host=\"Node1.example.com\"} 0.42",
        "ganglia_cpu_num{cluster=\"my cluster\",host=\"Node1.example.com\"} 4",
        "ganglia_proc_run{cluster=\"my cluster\",host=\"Node1.example.com\"} -3",
    ] {
        assert!(hosts.contains(line), "{line} missing from\n{hosts}");
    }
    assert!(!hosts.contains("os_name"), "{hosts}");
    promtool_check_metrics(&hosts).unwrap_or_else(|e| panic!("{e}\n{hosts}"));
    let metrics = http_get(agg.http, "/metrics");
    let forward_lines: String = metrics
        .lines()
        .filter(|l| l.contains("ganglion_forward_"))
        .map(|l| format!("{l}\n"))
        .collect();
    promtool_check_metrics(&forward_lines).unwrap_or_else(|e| panic!("{e}\n{forward_lines}"));
}

fn remote_write_to(url: &str) -> String {
    format!(
        "[[forward]]\nname = \"prom\"\nkind = \"remote_write\"\nurl = \"{url}\"\ninterval_secs = 1\n"
    )
}

#[test]
fn prometheus_takes_remote_write_across_a_restart_and_scrapes_every_host() {
    let port = free_tcp_port();
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let first = Aggregator::start("my cluster", &remote_write_to(&url));
    // Prometheus on the port the forwards already point at, scraping the
    // first aggregator's /metrics/hosts.
    let prom = {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: ganglion\n    metrics_path: /metrics/hosts\n    static_configs:\n      - targets: ['{}']\n",
                first.http
            ),
        )
        .unwrap();
        let guard = ChildGuard::spawn(
            "prometheus",
            Command::new(require_binary("prometheus"))
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("p.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .args([
                    "--web.enable-remote-write-receiver",
                    "--storage.tsdb.retention.time=1d",
                    "--storage.remote.flush-deadline=1s",
                    "--log.level=error",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
        );
        (guard, dir)
    };
    let http = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until("prometheus ready", Duration::from_secs(20), || {
        std::net::TcpStream::connect(http)
            .ok()
            .and_then(|_| http_get(http, "/-/ready").contains("Ready").then_some(()))
    });
    let query = |q: &str| -> Vec<serde_json::Value> {
        let body = http_get(http, &format!("/api/v1/query?query={}", urlencode(q)));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    };
    let count = |q: &str| -> u64 {
        query(q)
            .first()
            .and_then(|r| r["value"][1].as_str().and_then(|v| v.parse().ok()))
            .unwrap_or(0)
    };
    send_fixture(first.udp);
    // Remote-written (grid label, no job) and scraped (job, instance).
    let pushed =
        r#"count_over_time(ganglia_load_one{grid="TestGrid",host="Node1.example.com"}[1h])"#;
    wait_until("3 remote-written samples", Duration::from_secs(20), || {
        (count(pushed) >= 3).then_some(())
    });
    let scraped = wait_until("a scraped sample", Duration::from_secs(30), || {
        let r = query(r#"ganglia_load_one{job="ganglion"}"#);
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(scraped[0]["metric"]["cluster"], "my cluster");
    assert_eq!(scraped[0]["value"][1], "0.42");
    assert_eq!(count(r#"count(up{job="ganglion"} == 1)"#), 1);
    let rejected = |a: &Aggregator| {
        forward_metric(
            a,
            "ganglion_forward_dropped_total",
            "prom",
            ",reason=\"rejected\"",
        ) + forward_metric(a, "ganglion_forward_failed_requests_total", "prom", "")
    };
    assert_eq!(
        rejected(&first),
        0,
        "{}",
        http_get(first.http, "/api/forwards")
    );
    // Restart: the new process stamps only boundaries after its start, so
    // Prometheus sees no sample older than or equal to one it already has.
    let mut first = first;
    first.guard.terminate(Duration::from_secs(15));
    let before = count(pushed);
    let second = Aggregator::start("my cluster", &remote_write_to(&url));
    send_fixture(second.udp);
    wait_until(
        "3 more samples after the restart",
        Duration::from_secs(20),
        || (count(pushed) >= before + 3).then_some(()),
    );
    assert_eq!(
        rejected(&second),
        0,
        "{}",
        http_get(second.http, "/api/forwards")
    );
    assert!(forward_metric(&second, "ganglion_forward_sent_total", "prom", "") >= 9);
    drop(prom);
}

#[test]
fn carbon_cache_writes_whisper_files_where_gmetads_export_would() {
    let carbon = Carbon::start();
    let agg = Aggregator::start(
        "my cluster",
        &format!(
            "[[forward]]\nname = \"tcp\"\nkind = \"graphite\"\naddress = \"{a}\"\nprefix = \"ganglia\"\ninterval_secs = 1\n\
             [[forward]]\nname = \"udp\"\nkind = \"graphite\"\nprotocol = \"udp\"\naddress = \"{a}\"\nprefix = \"ganglia.udp\"\ninterval_secs = 1\n",
            a = carbon.line
        ),
    );
    send_fixture(agg.udp);
    for dir in [
        "ganglia/my_cluster/node1_example_com",
        "ganglia/udp/my_cluster/node1_example_com",
    ] {
        let d = carbon.whisper.join(dir);
        wait_until(
            &format!("whisper files in {}", d.display()),
            Duration::from_secs(30),
            || {
                let mut names: Vec<String> = std::fs::read_dir(&d)
                    .ok()?
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                (names == ["cpu_num.wsp", "load_one.wsp", "proc_run.wsp"]).then_some(())
            },
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let fetched = wait_until("a stored point", Duration::from_secs(20), || {
            let out = Command::new(require_binary("whisper-fetch"))
                .arg("--json")
                .arg(format!("--from={}", now - 60))
                .arg(d.join("load_one.wsp"))
                .output()
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let vals: Vec<f64> = v["values"]
                .as_array()?
                .iter()
                .filter_map(|x| x.as_f64())
                .collect();
            (!vals.is_empty()).then_some(vals)
        });
        assert!(fetched.iter().all(|v| *v == 0.42), "{fetched:?}");
    }
    assert!(
        !carbon.listener_log().contains("invalid"),
        "{}",
        carbon.listener_log()
    );
}

/// A polled source serving one fixed gmond document (LOCALTIME now).
fn serve_fixture_xml() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let metric = |name: &str, val: &str, ty: &str| {
                format!(
                    "<METRIC NAME=\"{name}\" VAL=\"{val}\" TYPE=\"{ty}\" UNITS=\" \" TN=\"3\" TMAX=\"60\" DMAX=\"0\" SLOPE=\"both\" SOURCE=\"gmond\">\n<EXTRA_DATA>\n<EXTRA_ELEMENT NAME=\"GROUP\" VAL=\"g\"/>\n</EXTRA_DATA>\n</METRIC>\n"
                )
            };
            let host = |name: &str, tn: u64| {
                format!(
                    "<HOST NAME=\"{name}\" IP=\"10.0.0.1\" TAGS=\"\" REPORTED=\"{r}\" TN=\"{tn}\" TMAX=\"20\" DMAX=\"0\" LOCATION=\"unspecified\" GMOND_STARTED=\"{r}\">\n{}{}{}{}{}{}</HOST>\n",
                    metric("load_one", "0.42", "float"),
                    metric("cpu_num", "4", "uint16"),
                    metric("proc_run", "-3", "int32"),
                    metric("bytes_in", "1234.56", "float"),
                    metric("disk.free", "17.250", "double"),
                    metric("os_name", "Linux", "string"),
                    r = now - tn,
                )
            };
            let doc = format!(
                "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" standalone=\"yes\"?>\n<GANGLIA_XML VERSION=\"3.7.2\" SOURCE=\"gmond\">\n<CLUSTER NAME=\"my cluster\" LOCALTIME=\"{now}\" OWNER=\"o\" LATLONG=\"l\" URL=\"u\">\n{}{}{}</CLUSTER>\n</GANGLIA_XML>\n",
                host("Node1.example.com", 2),
                host("node2", 3),
                host("dead.example.com", 1000),
            );
            let _ = s.write_all(doc.as_bytes());
        }
    });
    addr
}

/// `path value` of every line, NULs and timestamps stripped.
fn line_set(bytes: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(bytes)
        .split(['\n', '\0'])
        .filter_map(|l| {
            let mut f = l.split(' ');
            match (f.next(), f.next(), f.next(), f.next()) {
                (Some(p), Some(v), Some(_), None) if !p.is_empty() => Some(format!("{p} {v}")),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn parity_with_gmetads_carbon_export() {
    let source = serve_fixture_xml();
    let theirs = LineCapture::start();
    let ours = LineCapture::start();
    let dir = tempfile::tempdir().unwrap();
    let _gmetad = start_gmetad(
        dir.path(),
        "parity",
        &format!(
            "data_source \"src\" 1 {source}\ngridname \"TestGrid\"\ncase_sensitive_hostnames 0\n\
             carbon_server \"127.0.0.1\"\ncarbon_port {}\ngraphite_prefix \"ganglia\"\n",
            theirs.addr.port()
        ),
    );
    let _agg = Aggregator::start(
        "local",
        &format!(
            "[[data_source]]\nname = \"src\"\npoll_secs = 1\naddresses = [\"{source}\"]\n\
             [[forward]]\nkind = \"graphite\"\naddress = \"{}\"\nprefix = \"ganglia\"\ncompat = \"gmetad\"\ninterval_secs = 1\n",
            ours.addr
        ),
    );
    let p = |h: &str, m: &str| format!("ganglia.my_cluster.{h}.{m}");
    let mut want = BTreeSet::new();
    for h in ["node1_example_com", "node2"] {
        for (m, v) in [
            ("load_one", "0.42"),
            ("cpu_num", "4"),
            ("proc_run", "-3"),
            ("bytes_in", "1234.56"),
            ("disk.free", "17.250"),
        ] {
            want.insert(format!("{} {v}", p(h, m)));
        }
    }
    // gmetad sends once per poll; wait for a full pass from both.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (a, b) = (line_set(&theirs.bytes()), line_set(&ours.bytes()));
        if (a == want && b == want) || Instant::now() > deadline {
            assert_eq!(a, want, "gmetad's lines");
            assert_eq!(b, a, "ours against gmetad's");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // gmetad ends every line with a NUL; we never do.
    assert!(theirs.bytes().contains(&0));
    assert!(!ours.bytes().contains(&0));
}

/// A remote-write receiver answering 500 until `fail_until`, then 204;
/// counts the requests it accepted.
fn flaky_receiver(fail_for: Duration) -> (SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let ok = Arc::new(AtomicU64::new(0));
    let ok2 = ok.clone();
    let start = Instant::now();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let ok = ok2.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    // One request: headers, then Content-Length bytes.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + len);
                    let answer: &[u8] = if start.elapsed() < fail_for {
                        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nfail"
                    } else {
                        ok.fetch_add(1, Ordering::Relaxed);
                        b"HTTP/1.1 204 No Content\r\n\r\n"
                    };
                    if s.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, ok)
}

/// Accepts connections and never reads from them (a small receive buffer,
/// so a writer's bytes back up within seconds).
fn deaf_listener() -> SocketAddr {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(16).unwrap();
    let l: TcpListener = s.into();
    let addr = l.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            held.lock().unwrap().push(s);
        }
    });
    addr
}

#[test]
fn engines_down_deaf_or_failing_never_stall_ingest_or_storage() {
    let closed = free_tcp_port();
    let deaf = deaf_listener();
    let (flaky, flaky_ok) = flaky_receiver(Duration::from_secs(5));
    let agg = Aggregator::start(
        "my cluster",
        &format!(
            "step_secs = 1\n\
             [[forward]]\nname = \"down\"\nkind = \"graphite\"\naddress = \"127.0.0.1:{closed}\"\ninterval_secs = 1\n\
             queue_max_bytes = 65536\nmax_samples_per_send = 200\ntimeout_secs = 1\n\
             [[forward]]\nname = \"deaf\"\nkind = \"remote_write\"\nurl = \"http://{deaf}/api/v1/write\"\ninterval_secs = 1\n\
             queue_max_bytes = 65536\nmax_samples_per_send = 200\ntimeout_secs = 1\n\
             [[forward]]\nname = \"deaf_graphite\"\nkind = \"graphite\"\naddress = \"{deaf}\"\ninterval_secs = 1\n\
             queue_max_bytes = 65536\nmax_samples_per_send = 200\ntimeout_secs = 1\n\
             [[forward]]\nname = \"flaky\"\nkind = \"remote_write\"\nurl = \"http://{flaky}/api/v1/write\"\ninterval_secs = 1\n\
             backoff_max_ms = 500\n"
        ),
    );
    send_synthetic_hosts(
        agg.udp,
        500,
        &["load_one", "load_five", "cpu_user", "bytes_in"],
        |h, m| (h * 4 + m) as f32,
    );
    // Ingest and storage keep going while the three forwards fail: a probe
    // value sent now is in the XML at once, and RRD samples keep rising.
    let rrd_before = metrics_value(agg.http, "ganglion_rrd_samples_total");
    for k in 1..=4 {
        send_metric(
            agg.udp,
            "10.9.9.9:probe",
            "probe",
            "uint32",
            3,
            Value::UInt(k),
        );
        let t0 = Instant::now();
        wait_until(
            &format!("probe {k} in the XML"),
            Duration::from_secs(5),
            || {
                let doc = String::from_utf8_lossy(&read_tcp(agg.gmond, None)).into_owned();
                doc.contains(&format!("NAME=\"probe\" VAL=\"{k}\""))
                    .then_some(())
            },
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1000));
    }
    wait_until("RRD samples rising", Duration::from_secs(10), || {
        (metrics_value(agg.http, "ganglion_rrd_samples_total") > rrd_before).then_some(())
    });
    // The down and the deaf engine: queues at their bound, oldest dropped
    // and counted.
    // (deaf_graphite's lines go into socket buffers of megabytes first:
    // it only has to stall nothing here.)
    for f in ["down", "deaf"] {
        wait_until(
            &format!("{f}: queue_full drops"),
            Duration::from_secs(20),
            || {
                (forward_metric(
                    &agg,
                    "ganglion_forward_dropped_total",
                    f,
                    ",reason=\"queue_full\"",
                ) > 0)
                    .then_some(())
            },
        );
        let q = forward_metric(&agg, "ganglion_forward_queue_bytes", f, "");
        // The bound, plus the one batch being sent.
        assert!(q <= 65536 + 32 * 1024, "{f}: {q} bytes queued");
        wait_until(&format!("{f}: retries"), Duration::from_secs(20), || {
            (forward_metric(&agg, "ganglion_forward_retried_total", f, "") > 0).then_some(())
        });
    }
    // The failing one recovers by itself: accepted requests, up again.
    wait_until("flaky engine recovered", Duration::from_secs(20), || {
        (flaky_ok.load(Ordering::Relaxed) >= 2
            && forward_metric(&agg, "ganglion_forward_up", "flaky", "") == 1)
            .then_some(())
    });
    assert!(forward_metric(&agg, "ganglion_forward_retried_total", "flaky", "") > 0);
    assert!(forward_metric(&agg, "ganglion_forward_sent_total", "flaky", "") > 0);
    let status = http_get(agg.http, "/api/forwards");
    assert!(status.contains("\"name\":\"down\""), "{status}");
}

use super::*;
use crate::alerts::{HostHealth, ServiceHealth, StateType};
use ganglion_proto::range::Status;

#[test]
fn output_is_escaped_and_cut_at_a_character_boundary() {
    assert_eq!(escape_output("a\nb\\c\td", 100), "a\\nb\\\\c d");
    assert_eq!(escape_output("ääää", 5), "ää");
    assert_eq!(escape_output("ab\n", 3), "ab");
}

#[test]
fn lines_have_the_external_command_format() {
    assert_eq!(
        host_line(1700000000, "node1", false, "no report for 95 s").unwrap(),
        "[1700000000] PROCESS_HOST_CHECK_RESULT;node1;1;no report for 95 s\n"
    );
    assert_eq!(
        service_line(
            5,
            "node1",
            "load",
            2,
            "load_one = 9.2 | x",
            "'load_one'=9.2;4;8"
        )
        .unwrap(),
        "[5] PROCESS_SERVICE_CHECK_RESULT;node1;load;2;load_one = 9.2 / x|'load_one'=9.2;4;8\n"
    );
    // A name with the separator or a line break cannot be a field.
    assert!(host_line(5, "a;b", true, "").is_none());
    assert!(service_line(5, "a", "x\ny", 0, "", "").is_none());
    assert!(host_line(5, "", true, "").is_none());
    // Long output stays within one atomic pipe write.
    let l = service_line(5, "h", "s", 0, &"x".repeat(10_000), "").unwrap();
    assert_eq!(l.len(), MAX_LINE_BYTES);
    assert!(l.ends_with("x\n"));
}

fn health() -> HealthSnapshot {
    HealthSnapshot {
        time: 100,
        warming_up: false,
        hosts: vec![HostHealth {
            cluster: "c".into(),
            host: "n1".into(),
            up: true,
            state_type: StateType::Hard,
            attempt: 1,
            max_attempts: 1,
            since: 0,
            tn: 3,
            tmax: 20,
            flapping: false,
            output: "UP".into(),
        }],
        services: vec![ServiceHealth {
            rule: "load".into(),
            cluster: "c".into(),
            host: "n1".into(),
            metric: "load_one".into(),
            state: Status::Warning,
            state_type: StateType::Soft,
            attempt: 1,
            max_attempts: 3,
            since: 0,
            value: Some(5.0),
            units: String::new(),
            warning: Some("4".into()),
            critical: Some("8".into()),
            output: "load_one = 5 (warning 4)".into(),
            perfdata: "'load_one'=5;4;8".into(),
            flapping: false,
        }],
        incidents: vec![],
    }
}

#[test]
fn health_and_events_become_lines() {
    let lines = health_lines(&health());
    assert_eq!(
        lines,
        [
            "[100] PROCESS_HOST_CHECK_RESULT;n1;0;UP\n",
            "[100] PROCESS_SERVICE_CHECK_RESULT;n1;load;1;load_one = 5 (warning 4)|'load_one'=5;4;8\n"
        ]
    );
    let mut e = crate::handlers::sample_event(EventKind::HostDown, "n1");
    assert_eq!(
        event_line(&e).unwrap(),
        "[1700000000] PROCESS_HOST_CHECK_RESULT;n1;1;no report for 95 s\n"
    );
    e.kind = EventKind::Alert;
    e.rule = Some("load".into());
    e.state = "CRITICAL".into();
    assert!(
        event_line(&e)
            .unwrap()
            .contains("PROCESS_SERVICE_CHECK_RESULT;n1;load;2;")
    );
    // A cluster rule's change: on the host named after the cluster.
    let mut c = e.clone();
    c.host = None;
    c.cluster = "prod".into();
    assert!(
        event_line(&c)
            .unwrap()
            .contains("PROCESS_SERVICE_CHECK_RESULT;prod;load;2;")
    );
    e.kind = EventKind::HandlerRun;
    assert!(event_line(&e).is_none());
    e.kind = EventKind::ClusterIncident;
    e.host = None;
    assert!(event_line(&e).is_none());
}

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

#[test]
fn a_fifo_without_reader_is_nagios_not_running_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("nagios.cmd");
    mkfifo(&fifo);
    let before = COUNTERS.not_running.load(Ordering::Relaxed);
    let mut w = Writer {
        path: fifo.clone(),
        file: None,
        diag: Diag::new(Duration::from_secs(60)),
    };
    w.write_all(vec![
        "[1] PROCESS_HOST_CHECK_RESULT;a;0;x\n".into(),
        "[1] PROCESS_HOST_CHECK_RESULT;b;0;x\n".into(),
    ]);
    assert!(COUNTERS.not_running.load(Ordering::Relaxed) >= before + 2);
    // With a reader, lines arrive whole.
    use std::os::unix::fs::OpenOptionsExt;
    let mut r = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    w.write_all(vec!["[2] PROCESS_HOST_CHECK_RESULT;a;1;down\n".into()]);
    let mut got = String::new();
    let _ = std::io::Read::read_to_string(&mut r, &mut got);
    assert_eq!(got, "[2] PROCESS_HOST_CHECK_RESULT;a;1;down\n");
    // The reader goes away: the next line finds no reader, reopening fails
    // with ENXIO — not running, not a hang.
    drop(r);
    let before = COUNTERS.not_running.load(Ordering::Relaxed);
    w.write_all(vec!["[3] x\n".into(), "[3] y\n".into()]);
    assert!(COUNTERS.not_running.load(Ordering::Relaxed) > before);
}

#[tokio::test]
async fn events_reach_the_command_file() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file stands in for the pipe (Icinga's or a test's).
    let file = dir.path().join("cmd.log");
    std::fs::write(&file, "").unwrap();
    let alerts = Alerts::detached();
    let sd = CancellationToken::new();
    let cfg = NagiosConfig {
        command_file: Some(file.clone()),
        ..NagiosConfig::default()
    };
    let state = Arc::new(State::new(
        "g".into(),
        "a".into(),
        vec![],
        crate::state::Limits {
            max_hosts: 10,
            max_metrics: 10,
            max_string_bytes: 100,
        },
        Default::default(),
    ));
    let task = start(&cfg, vec![], state.clone(), alerts.clone(), sd.clone())
        .unwrap()
        .unwrap();
    alerts.record(crate::handlers::sample_event(EventKind::HostDown, "n1"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&file).unwrap();
        if text.contains("PROCESS_HOST_CHECK_RESULT;n1;1;") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing written: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sd.cancel();
    task.await.unwrap();
}

/// A state with one polled cluster `c`: hosts `(name, alive, load_one)`.
fn snapshot_of(hosts: &[(&str, bool, &str)]) -> Arc<Snapshot> {
    use ganglion_proto::model::{MetricType, Slope};
    use ganglion_proto::xml::{Cluster, Host, Metric};
    let now = 1_700_000_000u64;
    let st = State::new(
        "g".into(),
        "http://x/".into(),
        Vec::new(),
        crate::state::Limits {
            max_hosts: 100,
            max_metrics: 100,
            max_string_bytes: 1024,
        },
        Arc::default(),
    )
    .snapshot_interval(Duration::ZERO);
    let c = Cluster {
        name: "c".into(),
        localtime: now,
        hosts: hosts
            .iter()
            .map(|(name, alive, v)| {
                let tn = if *alive { 1 } else { 1000 };
                Host {
                    name: (*name).into(),
                    ip: "10.0.0.1".into(),
                    reported: now - tn,
                    tn,
                    tmax: 20,
                    metrics: vec![Metric {
                        name: "load_one".into(),
                        val: (*v).into(),
                        metric_type: MetricType::Float,
                        units: " ".into(),
                        tn: 1,
                        tmax: 60,
                        dmax: 0,
                        slope: Slope::Both,
                        source: "gmond".into(),
                        extras: Vec::new(),
                    }],
                    ..Host::default()
                }
            })
            .collect(),
        complete: true,
        ..Cluster::default()
    };
    st.replace_polled_cluster("src", c, now).unwrap();
    st.snapshot(now)
}

#[test]
fn targets_the_health_snapshot_leaves_out_are_sent_as_ok() {
    let snap = snapshot_of(&[
        ("n1", true, "5.00"),
        ("n2", true, "0.50"),
        ("db1", true, "0.1"),
        ("n3", false, "0.2"),
    ]);
    let rule = |name: &str, hosts: &str, aggregate| crate::config::alerts::AlertRule {
        name: name.into(),
        metric: "load_one".into(),
        hosts: hosts.into(),
        warning: "4".into(),
        critical: "8".into(),
        aggregate,
        ..Default::default()
    };
    let rules: Vec<RuleGlobs> = [
        rule("load", "n*", Aggregate::None),
        rule("sum", "*", Aggregate::Sum),
    ]
    .iter()
    .map(RuleGlobs::new)
    .collect();
    // n1 is WARNING: listed in health, so not sent as OK.
    let lines = ok_lines(&snap, &rules, &health());
    assert_eq!(
        lines,
        [
            "[100] PROCESS_SERVICE_CHECK_RESULT;c;sum;0;sum of cluster c is OK\n",
            "[100] PROCESS_SERVICE_CHECK_RESULT;n2;load;0;load_one = 0.50|'load_one'=0.5;4;8\n",
        ]
    );
}

#[test]
fn icinga2_bodies_name_the_object_and_carry_the_ttl() {
    let host = Passive {
        time: 5,
        host: "n1".into(),
        service: None,
        code: 1,
        output: "no report for 95 s".into(),
        perfdata: String::new(),
    };
    let b = icinga2::body(&host, 180);
    assert_eq!(b["type"], "Host");
    assert_eq!(b["host"], "n1");
    assert_eq!(b["exit_status"], 1);
    assert_eq!(b["ttl"], 180);
    assert!(b.get("performance_data").is_none());
    let svc = Passive {
        service: Some("load".into()),
        code: 2,
        perfdata: "'load_one'=9;4;8".into(),
        ..host
    };
    let b = icinga2::body(&svc, 180);
    assert_eq!(b["type"], "Service");
    assert_eq!(b["service"], "n1!load");
    assert_eq!(b["performance_data"], "'load_one'=9;4;8");
}

#[tokio::test]
async fn events_reach_icinga2s_api_with_basic_auth() {
    use std::io::{Read, Write};
    // A stand-in for Icinga's API: answers 200 and hands over each request.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut req = Vec::new();
            let mut b = [0u8; 4096];
            // Head, then as many body bytes as Content-Length says.
            loop {
                let n = s.read(&mut b).unwrap_or(0);
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&b[..n]);
                let text = String::from_utf8_lossy(&req).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
            let _ = tx.send(String::from_utf8_lossy(&req).into_owned());
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let cfg = NagiosConfig {
        icinga2_url: Some(format!("http://{addr}")),
        icinga2_user: "ganglion".into(),
        icinga2_password_file: Some(pw),
        resend_secs: 3600,
        ..NagiosConfig::default()
    };
    let alerts = Alerts::detached();
    let sd = CancellationToken::new();
    let state = Arc::new(State::new(
        "g".into(),
        "a".into(),
        vec![],
        crate::state::Limits {
            max_hosts: 10,
            max_metrics: 10,
            max_string_bytes: 100,
        },
        Default::default(),
    ));
    let task = start(&cfg, vec![], state, alerts.clone(), sd.clone())
        .unwrap()
        .unwrap();
    alerts.record(crate::handlers::sample_event(EventKind::HostDown, "n1"));
    let req = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("a request within 20 s");
    assert!(
        req.starts_with("POST /v1/actions/process-check-result HTTP/1.1\r\n"),
        "{req}"
    );
    // base64("ganglion:s3cret")
    assert!(
        req.contains("Authorization: Basic Z2FuZ2xpb246czNjcmV0\r\n"),
        "{req}"
    );
    let body: serde_json::Value =
        serde_json::from_str(req.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["type"], "Host");
    assert_eq!(body["host"], "n1");
    assert_eq!(body["exit_status"], 1);
    sd.cancel();
    task.await.unwrap();
}

#[test]
fn a_missing_command_file_counts_every_dropped_line_and_logs_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer {
        path: dir.path().join("nagios.cmd"),
        file: None,
        diag: Diag::with_capacity(Duration::from_secs(600), 16),
    };
    let before = COUNTERS.not_running.load(Ordering::Relaxed);
    let lines = || vec!["a\n".to_string(), "b\n".into(), "c\n".into()];
    let ((), sink) = crate::diag::testing::logging(|| {
        w.write_all(lines());
        w.write_all(lines());
    });
    // Other tests share the process-wide counter: at least ours are there.
    assert!(COUNTERS.not_running.load(Ordering::Relaxed) - before >= 6);
    assert_eq!(sink.lines("Nagios is not running"), 1, "once per interval");
    assert_eq!(sink.lines("6 passive results"), 0);
    assert_eq!(sink.lines("3 passive results dropped"), 1);
}

/// Every hostile host, service and output gives either no line (counted)
/// or exactly one command with its fields where they belong; Icinga 2
/// results that could name another object are not addressable.
#[test]
fn hostile_names_give_one_command_or_none() {
    let names = crate::hostile::names();
    for host in &names {
        for other in &names {
            for l in [
                host_line(1, host, true, other),
                service_line(1, host, other, 2, other, other),
                service_line(1, "h", host, 2, "out", ""),
            ]
            .into_iter()
            .flatten()
            {
                assert!(l.ends_with('\n') && l.matches('\n').count() == 1, "{l:?}");
                assert!(!l.contains(['\r', '\0']), "{l:?}");
                assert!(l.len() <= super::MAX_LINE_BYTES, "{l:?}");
                let fields: Vec<&str> = l.trim_end().splitn(5, ';').collect();
                if l.contains("HOST_CHECK") {
                    assert_eq!(fields[1], host);
                } else {
                    assert!(fields.len() == 5 && !fields[3].is_empty(), "{l:?}");
                    assert!(fields[3].parse::<u8>().is_ok(), "{l:?}");
                }
            }
        }
        let p = Passive {
            time: 1,
            host: host.clone(),
            service: Some("svc".into()),
            code: 0,
            output: host.clone(),
            perfdata: String::new(),
        };
        if icinga2::addressable(&p) {
            let b = icinga2::body(&p, 60);
            let back: serde_json::Value = serde_json::from_str(&b.to_string()).unwrap();
            assert_eq!(back["plugin_output"], host.as_str());
            assert_eq!(back["service"], format!("{host}!svc"));
        } else {
            assert!(host.is_empty() || host.contains('!'), "{host:?}");
        }
    }
}

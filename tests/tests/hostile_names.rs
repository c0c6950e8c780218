//! Hostile host and metric names from the network, end to end: spoofed
//! `IP:name` hosts and free-text metric names sent with the real `gmetric`
//! (names an argv can carry) and as raw gmond packets (NUL, CR, other
//! control bytes, very long names) into an aggregator with a Graphite
//! forward, a Nagios command file, an alert rule and a handler, and the
//! grid's `nagios-config` objects go through `nagios4 -v`. Every
//! output must keep its format (one well-formed Graphite line per series,
//! `/metrics/hosts` accepted by `promtool`, one external command per
//! command-file line), the handler must run or its refusal be recorded, and
//! a well-behaved host must keep flowing through all of it.

use ganglion_proto::xdr::Value;
use ganglion_tests::engines::*;
use ganglion_tests::*;
use serde_json::Value as Json;
use std::time::Duration;

/// Host names an argv can carry (sent with the real gmetric when it takes them).
const ARGV_HOSTS: &[&str] = &[
    "a b",
    "semi;colon",
    "line\nbreak",
    "tab\there",
    "pipe|bar",
    "<script>&amp;\"'",
    "../../etc/passwd",
    "hash#bang!",
    "back\\slash\\",
    " padded ",
    "x\n[1] PROCESS_HOST_CHECK_RESULT;good1;2;pwned",
    "é\u{2028}\u{85}",
];

/// Metric names sent by gmetric on a hostile host (lowercase: promtool
/// lints camelCase names, a style rule, not a format one).
const ARGV_METRICS: &[&str] = &["m 1 2\nevil.path 666 1", "m;x=y|'q'", "m/../..", "m\"\\\n"];

/// Names gmetric cannot send (NUL, CR, other control bytes, a long one).
fn raw_hosts() -> Vec<String> {
    let mut v: Vec<String> = ["nul\0byte", "cr\rlf\r\n", "bell\u{7}esc\u{1b}[2J", "\u{7f}"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // As long as one datagram allows (name twice plus SPOOF_HOST).
    v.push("l".repeat(250));
    v
}

fn events(agg: &Aggregator, q: &str) -> Vec<Json> {
    let body = http_get(agg.http, &format!("/api/events?{q}"));
    serde_json::from_str::<Json>(&body).unwrap_or(Json::Null)["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Runs the real gmetric; false when it refuses the arguments.
fn gmetric_ok(conf: &std::path::Path, args: &[&str]) -> bool {
    std::process::Command::new(require_binary("gmetric"))
        .arg("-c")
        .arg(conf)
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run gmetric")
        .success()
}

/// `promtool check metrics` must parse the text: exit 0, or 3 when its
/// only findings are lints about a family's name (sender-chosen names such
/// as `m` or `CamelCase` get style lints the aggregator does not rename
/// away); a parse error (exit 1) fails.
fn promtool_parses(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(require_binary("promtool"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => {}
        Some(3) => {
            for l in said.lines().filter(|l| !l.trim().is_empty()) {
                let family = l.split(' ').next().unwrap_or_default();
                assert!(
                    family.starts_with("ganglia_") && text.contains(&format!("# TYPE {family} ")),
                    "promtool: {l}\n{text}"
                );
            }
        }
        _ => panic!("promtool cannot parse /metrics/hosts: {said}\n{text}"),
    }
}

fn promtool_present() -> bool {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .any(|p| std::path::Path::new(p).is_file())
}

#[test]
fn hostile_names_keep_every_output_well_formed() {
    let capture = LineCapture::start();
    let dir = tempfile::tempdir().unwrap();
    let cmd_file = dir.path().join("nagios.cmd");
    std::fs::write(&cmd_file, "").unwrap();
    let agg = Aggregator::start(
        "hostile",
        &format!(
            "[alerts]\ninterval_secs = 1\nwarmup_secs = 0\nmax_check_attempts = 1\n\
             [[alert]]\nname = \"hot\"\nmetric = \"hot\"\ncritical = \"5\"\n\
             [nagios]\ncommand_file = \"{}\"\nresend_secs = 1\n\
             [[handler]]\nname = \"echo\"\non = [\"alert\"]\nargv = [\"/bin/echo\", \"{{host}}\"]\n\
             [[forward]]\nname = \"graphite\"\nkind = \"graphite\"\naddress = \"{}\"\ninterval_secs = 1\n",
            cmd_file.display(),
            capture.addr
        ),
    );
    let conf = gmetric_conf(dir.path(), agg.udp);
    let send_all = |round: u32| {
        for (i, h) in ARGV_HOSTS.iter().enumerate() {
            let spoof = format!("10.7.1.{i}:{h}");
            let m = ARGV_METRICS[i % ARGV_METRICS.len()];
            // gmetric refuses some characters (`"`, `<`, `>`, `'`, `&`);
            // a hostile sender is not gmetric: those go as raw packets.
            if !gmetric_ok(
                &conf,
                &["-S", &spoof, "-n", "hot", "-v", "9", "-t", "float"],
            ) {
                send_metric(agg.udp, &spoof, "hot", "float", 3, Value::Float(9.0));
            }
            if !gmetric_ok(&conf, &["-S", &spoof, "-n", m, "-v", "1", "-t", "uint32"]) {
                send_metric(agg.udp, &spoof, m, "uint32", 3, Value::UInt(1));
            }
        }
        for (i, h) in raw_hosts().iter().enumerate() {
            let spoof = format!("10.7.2.{i}:{h}");
            send_metric(agg.udp, &spoof, "hot", "float", 3, Value::Float(9.0));
            send_metric(agg.udp, &spoof, h, "uint32", 3, Value::UInt(1));
        }
        // good1 last: when its round shows, every hostile packet before it
        // has been applied (one socket, read in order).
        send_metric(
            agg.udp,
            "10.7.0.1:good1",
            "hot",
            "float",
            3,
            Value::Float(9.0),
        );
        send_metric(
            agg.udp,
            "10.7.0.1:good1",
            "round",
            "uint32",
            3,
            Value::UInt(round),
        );
    };
    send_all(1);

    // Graphite: the good host flows, and every byte received is whole
    // `path value timestamp` lines.
    let graphite = |round: u32| {
        let want = format!("hostile.good1.round {round} ");
        wait_until("good1's round in Graphite", Duration::from_secs(20), || {
            let text = String::from_utf8_lossy(&capture.bytes()).into_owned();
            (text.contains(&want) && text.ends_with('\n')).then_some(text)
        })
    };
    let text = graphite(1);
    let check_lines = |text: &str| {
        assert!(text.ends_with('\n'), "a partial line: {text:?}");
        for l in text.lines() {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 3, "not `path value ts`: {l:?}");
            assert!(
                !f[0].is_empty()
                    && !f[0].chars().any(|c| c.is_control() || c == '/')
                    && f[0].split('.').all(|p| !p.is_empty()),
                "bad path: {l:?}"
            );
            assert!(f[1].parse::<f64>().is_ok(), "bad value: {l:?}");
            assert!(f[2].parse::<u64>().is_ok(), "bad timestamp: {l:?}");
        }
    };
    check_lines(&text);
    assert!(
        !text.lines().any(|l| l.starts_with("evil.path")),
        "a metric name injected a line: {text}"
    );
    assert!(
        text.contains("hostile.semi;colon.hot "),
        "hostile hosts are forwarded, mapped: {text}"
    );

    // The alert fires on every host; the handler runs for each or its
    // refusal (a NUL in the name) is recorded.
    let runs = wait_until(
        "handler runs for the hostile hosts",
        Duration::from_secs(30),
        || {
            let e = events(&agg, "kind=handler_run&limit=1000");
            (e.len() > ARGV_HOSTS.len()).then_some(e)
        },
    );
    let mut ran = 0;
    for e in &runs {
        let h = &e["handler"];
        let host = e["host"].as_str().unwrap_or_default();
        match h["error"].as_str() {
            Some(err) => assert!(
                host.contains('\0') && err.contains("NUL"),
                "{host:?}: {err}"
            ),
            None if h["exit_code"] == 0 => {
                assert_eq!(h["stdout"].as_str(), Some(format!("{host}\n").as_str()));
                ran += 1;
            }
            // Refused by a limit: recorded with its reason in the output.
            None => assert!(!e["output"].as_str().unwrap_or_default().is_empty(), "{e}"),
        }
    }
    assert!(ran > 0, "no handler ran: {runs:?}");
    assert!(
        runs.iter().any(|e| e["host"] == "good1"),
        "good1's handler: {runs:?}"
    );

    // /metrics/hosts: promtool reads it, hostile labels and all.
    let prom = http_get(agg.http, "/metrics/hosts");
    assert!(prom.contains("host=\"line\\nbreak\""), "{prom}");
    if promtool_present() {
        promtool_parses(&prom);
    } else if std::env::var("GANGLION_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        panic!("promtool is not installed, and GANGLION_REQUIRE_PRIVILEGED=1 requires it");
    } else {
        eprintln!("SKIPPED (not run): promtool check of /metrics/hosts: promtool not installed");
    }

    // The command file: each line is one external command with its fields.
    let cmds = wait_until(
        "good1's results in the command file",
        Duration::from_secs(20),
        || {
            let t = std::fs::read_to_string(&cmd_file).unwrap_or_default();
            t.contains("PROCESS_SERVICE_CHECK_RESULT;good1;hot;2;")
                .then_some(t)
        },
    );
    for l in cmds.lines() {
        let (ts, rest) = l
            .strip_prefix('[')
            .and_then(|r| r.split_once("] "))
            .unwrap_or_else(|| panic!("not a command: {l:?}"));
        assert!(ts.parse::<i64>().is_ok(), "{l:?}");
        let f: Vec<&str> = rest.splitn(5, ';').collect();
        match f[0] {
            "PROCESS_HOST_CHECK_RESULT" => {
                assert!(f.len() >= 4 && matches!(f[2], "0" | "1" | "2"), "{l:?}")
            }
            "PROCESS_SERVICE_CHECK_RESULT" => {
                assert!(f.len() == 5 && f[3].parse::<u8>().is_ok(), "{l:?}")
            }
            other => panic!("unexpected command {other:?} in {l:?}"),
        }
        assert!(!l.contains(['\r', '\0']), "{l:?}");
        assert!(!f[1].is_empty(), "{l:?}");
    }
    assert!(
        !cmds.contains("good1;2;pwned"),
        "a host name injected a command: {cmds}"
    );
    assert!(
        metrics_value(
            agg.http,
            "ganglion_nagios_results_total{result=\"unrepresentable\"}"
        ) > 0,
        "hosts with `;` or control characters are counted, not written"
    );

    // The gmond-compatible XML stays well-formed (and valid) too.
    let xml = read_tcp(agg.gmond, None);
    xmllint_valid(&xml).unwrap_or_else(|e| panic!("gmond XML: {e}"));
    assert!(String::from_utf8_lossy(&xml).contains("semi;colon"));

    // `nagios-config` over the hostile grid: nagios4 accepts the objects
    // (`Nagios::start` verifies with `nagios4 -v`), the names it can take
    // are defined, the others only listed in the closing comment.
    let ndir = ganglion_tests::nagios::Nagios::prepare();
    let objects = ganglion_tests::nagios::nagios_config(&agg, ndir.path());
    assert!(
        objects.contains("host_name                a b\n"),
        "{objects}"
    );
    assert!(objects.contains("\"semi;colon\""), "{objects}");
    let nagios = ganglion_tests::nagios::Nagios::start(ndir, &objects, "", &[]);
    assert!(nagios.host("a b").is_some() && nagios.host("good1").is_some());
    drop(nagios);

    // Still up, and the good host keeps flowing after all of it.
    send_all(2);
    check_lines(&graphite(2));
    assert!(http_get(agg.http, "/metrics").contains("ganglion_"));
    // The log quotes hostile names (the NUL host's refused run) but every
    // line is a whole event: none starts with a forged name.
    let log = agg.log();
    assert!(log.contains("NUL byte"), "{log}");
    for l in log.lines().filter(|l| !l.is_empty()) {
        assert!(
            l.starts_with("20") && !l.contains('\0'),
            "a forged log line: {l:?}"
        );
    }
}

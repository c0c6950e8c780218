//! `check_ganglion` as Nagios runs it: the binary, its stdout and exit code,
//! against a real aggregator fed over UDP (states, perfdata, liveness, the
//! cluster search), and against small stand-in servers for what a real
//! aggregator does not do on demand (hang, answer garbage, ask for a
//! password). Every failure of the plugin itself must be UNKNOWN (3).

use ganglion_proto::xdr::Value;
use ganglion_tests::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

/// Runs the plugin; returns (exit code, stdout).
fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(workspace_bin("check_ganglion"))
        .args(args)
        .env_remove("GANGLION_USER")
        .env_remove("GANGLION_PASSWORD")
        .output()
        .expect("run check_ganglion");
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn url(a: SocketAddr) -> String {
    format!("http://{a}")
}

#[test]
fn states_perfdata_and_liveness_against_a_real_aggregator() {
    // TMAX 1 s: a host silent for more than 4 s is DOWN.
    let agg = Aggregator::start_with(
        "prod",
        "reverse_dns = false\nhost_tmax_secs = 1\n",
        "write_rrds = false\n",
    );
    let u = url(agg.http);
    // gmond keys a spoofed host by its IP: one address each.
    let send = |host: &str, v: f32| {
        let ip = if host == "node1" {
            "10.0.0.1"
        } else {
            "10.0.0.2"
        };
        send_metric(
            agg.udp,
            &format!("{ip}:{host}"),
            "load_one",
            "float",
            3,
            Value::Float(v),
        );
    };
    // The sender formats with %f, and the text shows its formatting.
    send("node1", 9.25);
    send("node2", 0.5);
    wait_until("both hosts visible", Duration::from_secs(10), || {
        let b = http_get(agg.http, "/api/cluster/prod");
        (b.contains("\"node1\"") && b.contains("\"node2\"")).then_some(())
    });

    let (code, out) = check(&[
        "-u", &u, "-C", "prod", "-H", "node1", "-m", "load_one", "-w", "4", "-c", "8",
    ]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(
        out,
        "GANGLION CRITICAL - load_one = 9.250000 on node1 (critical 8) | 'load_one'=9.25;4;8\n"
    );
    let (code, out) = check(&[
        "-u", &u, "-C", "prod", "-H", "node1", "-m", "load_one", "-w", "4", "-c", "10",
    ]);
    assert_eq!(
        (code, out.starts_with("GANGLION WARNING - ")),
        (1, true),
        "{out}"
    );
    // Without -C the cluster is searched for; an exact name only.
    let (code, out) = check(&[
        "-u", &u, "-H", "node2", "-m", "load_one", "-w", "4", "-c", "8",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("GANGLION OK - load_one = 0.500000 on node2 | 'load_one'=0.5;4;8"),
        "{out}"
    );
    let (code, out) = check(&["-u", &u, "-H", "node", "-m", "load_one"]);
    assert_eq!(code, 3, "{out}");
    // -v adds long lines after the first.
    let (code, out) = check(&["-u", &u, "-C", "prod", "-H", "node2", "--heartbeat", "-v"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines().count() >= 2 && out.contains("cluster prod, host node2"),
        "{out}"
    );

    // Missing things are UNKNOWN with the aggregator's reason.
    for (args, says) in [
        (
            vec!["-C", "prod", "-H", "ghost", "-m", "load_one"],
            "unknown host",
        ),
        (
            vec!["-C", "nope", "-H", "node1", "-m", "load_one"],
            "unknown cluster",
        ),
        (
            vec!["-C", "prod", "-H", "node1", "-m", "no_such_metric"],
            "not found",
        ),
        (vec!["-C", "prod", "-m", "no_such_metric"], "no summary"),
    ] {
        let mut a = vec!["-u", u.as_str()];
        a.extend(args);
        let (code, out) = check(&a);
        assert_eq!(code, 3, "{a:?}: {out}");
        assert!(
            out.starts_with("GANGLION UNKNOWN - ") && out.contains(says),
            "{a:?}: {out}"
        );
    }

    // node1 goes silent; node2 keeps reporting. Once node1 is past 4 × TMAX
    // it is DOWN: CRITICAL for --heartbeat, its metric stale (UNKNOWN).
    let (code, out) = wait_until("node1 DOWN", Duration::from_secs(20), || {
        send("node2", 0.5);
        let r = check(&["-u", &u, "-C", "prod", "-H", "node1", "--heartbeat"]);
        (r.0 == 2).then_some(r)
    });
    assert!(
        out.starts_with("GANGLION CRITICAL - node1 is DOWN: no report for "),
        "{code} {out}"
    );
    assert!(out.contains("| 'age'="), "{out}");
    let (code, out) = check(&[
        "-u", &u, "-C", "prod", "-H", "node1", "-m", "load_one", "-c", "8",
    ]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("stale") && out.contains("'load_one'=U;;8"),
        "{out}"
    );
    // The cluster view counts it.
    let (code, out) = check(&["-u", &u, "-C", "prod", "--heartbeat"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("1 of 2 hosts DOWN"), "{out}");
    let (code, out) = check(&[
        "-u",
        &u,
        "-C",
        "prod",
        "-H",
        "node2",
        "-m",
        "load_one",
        "--max-age",
        "3600",
    ]);
    assert_eq!(code, 0, "{out}");
}

/// A server that answers every connection with `reply` (after reading the
/// request head), or never answers when `reply` is `None`. Returns its
/// address and a receiver of the request heads it saw.
fn stand_in(reply: Option<&'static str>) -> (SocketAddr, std::sync::mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&b[..n]),
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            match reply {
                Some(r) => {
                    let _ = s.write_all(r.as_bytes());
                }
                None => held.push(s),
            }
        }
    });
    (a, rx)
}

#[test]
fn every_plugin_failure_is_unknown() {
    // Nothing listening.
    let closed = free_tcp_port();
    let (code, out) = check(&[
        "-u",
        &format!("http://127.0.0.1:{closed}"),
        "-H",
        "n",
        "-C",
        "c",
        "--heartbeat",
    ]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.starts_with("GANGLION UNKNOWN - cannot connect to 127.0.0.1:"),
        "{out}"
    );
    // A server that accepts and never answers: the plugin's own timeout.
    let (hang, _) = stand_in(None);
    let t0 = std::time::Instant::now();
    let (code, out) = check(&[
        "-u",
        &url(hang),
        "-H",
        "n",
        "-C",
        "c",
        "--heartbeat",
        "-t",
        "2",
    ]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("within 2 s"), "{out}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    // Not JSON, not HTTP, a server error.
    for (reply, says) in [
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            "not JSON",
        ),
        ("SSH-2.0-OpenSSH_9.2\r\n\r\n", "bad HTTP reply"),
        (
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 16\r\n\r\n{\"error\":\"boom\"}",
            "HTTP 500: boom",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
            "no alive/tn",
        ),
    ] {
        let (a, _) = stand_in(Some(reply));
        let (code, out) = check(&["-u", &url(a), "-H", "n", "-C", "c", "--heartbeat"]);
        assert_eq!(code, 3, "{reply}: {out}");
        assert!(out.contains(says), "{reply}: {out}");
    }
    // Bad arguments, help and version.
    for args in [
        &["-H", "n"][..],
        &["-H", "n", "-m", "x", "-w", "5:1"],
        &["-h"],
        &["-V"],
        &["-H", "n", "-m", "x", "-u", "ftp://h"],
    ] {
        let (code, out) = check(args);
        assert_eq!(code, 3, "{args:?}: {out}");
        assert!(!out.is_empty(), "{args:?}");
    }
}

#[test]
fn basic_auth_credentials_come_from_a_file_and_a_401_is_explained() {
    let (a, heads) = stand_in(Some(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
         2d\r\n{\"name\":\"n\",\"alive\":true,\"tn\":2,\"metrics\":[]}\r\n0\r\n\r\n",
    ));
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "open sesame\n").unwrap();
    let (code, out) = check(&[
        "-u",
        &url(a),
        "-C",
        "c 1",
        "-H",
        "n/1",
        "--heartbeat",
        "--user",
        "nagios",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let head = heads.recv_timeout(Duration::from_secs(5)).unwrap();
    // base64("nagios:open sesame"); names percent-encoded in the path.
    assert!(
        head.contains("Authorization: Basic bmFnaW9zOm9wZW4gc2VzYW1l\r\n"),
        "{head}"
    );
    assert!(
        head.starts_with("GET /api/host/c%201/n%2F1 HTTP/1.1\r\n"),
        "{head}"
    );

    let (a, _) = stand_in(Some(
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"ganglion\"\r\nContent-Length: 0\r\n\r\n",
    ));
    let (code, out) = check(&["-u", &url(a), "-C", "c", "-H", "n", "--heartbeat"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("authentication required"), "{out}");
}

#[test]
fn https_is_checked_against_the_given_ca() {
    // openssl's own TLS web server (-WWW serves files under its directory)
    // stands in for an aggregator behind TLS.
    let openssl = require_binary("openssl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A CA and a server certificate it signed (webpki refuses a CA
    // certificate as the server's own).
    let run = |args: &[&str]| {
        let st = Command::new(&openssl)
            .args(args)
            .current_dir(d)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "req.csr",
    ]);
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    std::fs::create_dir_all(d.join("api/host/c")).unwrap();
    std::fs::write(
        d.join("api/host/c/n"),
        r#"{"name":"n","alive":true,"tn":3,"metrics":[]}"#,
    )
    .unwrap();
    let port = free_tcp_port();
    let _server = ChildGuard::spawn(
        "openssl s_server",
        Command::new(&openssl)
            .args([
                "s_server",
                "-quiet",
                "-WWW",
                "-accept",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("-cert")
            .arg(d.join("cert.pem"))
            .arg("-key")
            .arg(d.join("key.pem"))
            .current_dir(d)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    wait_for_tcp(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    );
    let ca = d.join("ca.pem");
    for host in ["localhost", "127.0.0.1"] {
        let u = format!("https://{host}:{port}");
        let (code, out) = check(&[
            "-u",
            &u,
            "-C",
            "c",
            "-H",
            "n",
            "--heartbeat",
            "--ca",
            ca.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{u}: {out}");
        assert!(out.starts_with("GANGLION OK - n is UP"), "{out}");
    }
    // The system's CAs do not know this certificate: UNKNOWN, saying why.
    let (code, out) = check(&[
        "-u",
        &format!("https://localhost:{port}"),
        "-C",
        "c",
        "-H",
        "n",
        "--heartbeat",
    ]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("certificate"), "{out}");
}

#[test]
fn https_and_basic_auth_against_a_real_aggregator() {
    // The aggregator itself behind TLS and basic auth (`[http]` keys).
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (crt, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&crt, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let agg = Aggregator::start_tuned(
        "sec",
        &Tuning {
            http: format!(
                "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                crt.display(),
                key.display()
            ),
            // bcrypt cost 4: the check is what is tested, not the hash's strength.
            tables: format!(
                "[http.basic_auth_users]\nnagios = \"{}\"\n",
                bcrypt::hash("pw", 4).unwrap()
            ),
            ..Tuning::default()
        },
    );
    send_metric(
        agg.udp,
        "10.0.0.9:web1",
        "load_one",
        "float",
        3,
        Value::Float(5.5),
    );
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw\n").unwrap();
    let u = format!("https://127.0.0.1:{}", agg.http.port());
    let args = |extra: &[&str]| {
        let mut a = vec![
            "-u",
            &u,
            "-H",
            "web1",
            "-m",
            "load_one",
            "-w",
            "4",
            "-c",
            "8",
            "--ca",
            crt.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| check(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (code, out) = wait_until("web1 visible over https", Duration::from_secs(10), || {
        let r = run(args(&[
            "--user",
            "nagios",
            "--password-file",
            pw.to_str().unwrap(),
        ]));
        (r.0 != 3).then_some(r)
    });
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("GANGLION WARNING - load_one = 5.500000 on web1 (warning 4)"),
        "{out}"
    );
    // No credentials, or the wrong ones: 401, explained, UNKNOWN.
    let (code, out) = run(args(&[]));
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("authentication required"), "{out}");
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "nope\n").unwrap();
    let (code, out) = run(args(&[
        "--user",
        "nagios",
        "--password-file",
        bad.to_str().unwrap(),
    ]));
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("401"), "{out}");
}

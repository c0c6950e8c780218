//! Securing the HTTP port end to end: HTTPS with a certificate made here
//! (rcgen), reloaded on SIGHUP while an old connection keeps going; a TLS
//! client that stalls its handshake is cut and counts against the caps;
//! basic authentication (bcrypt) on every route, `/metrics` optionally open;
//! `POST /api/flush` with credentials or from a trusted address; curl and a
//! rustls client as clients; the dashboard in chromium behind auth and TLS.

use ganglion_tests::*;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// A self-signed certificate for `localhost` and 127.0.0.1.
struct Cert {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn self_signed() -> Cert {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    Cert {
        cert_pem: ck.cert.pem(),
        key_pem: ck.key_pair.serialize_pem(),
        der: ck.cert.der().to_vec(),
    }
}

/// Writes `c` where the aggregator reads its pair (each file replaced
/// whole, by rename, as a certificate manager does).
fn install(dir: &Path, c: &Cert) -> (PathBuf, PathBuf) {
    let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
    for (path, text) in [(&crt, &c.cert_pem), (&key, &c.key_pem)] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    (crt, key)
}

fn tls_keys(crt: &Path, key: &Path) -> String {
    format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        crt.display(),
        key.display()
    )
}

/// `[http.basic_auth_users]` lines (cost 4: the check is what is tested,
/// not bcrypt's strength).
fn users(list: &[(&str, &str)]) -> String {
    let mut s = String::from("[http.basic_auth_users]\n");
    for (u, p) in list {
        s.push_str(&format!("{u} = \"{}\"\n", bcrypt::hash(p, 4).unwrap()));
    }
    s
}

/// An HTTP/1.1 keep-alive connection over rustls that trusts `roots`.
struct TlsClient {
    s: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl TlsClient {
    fn connect(addr: SocketAddr, roots: &[&[u8]]) -> std::io::Result<TlsClient> {
        TlsClient::over(
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))?,
            roots,
        )
    }

    /// Over an established TCP connection (say, from another loopback
    /// address).
    fn over(tcp: TcpStream, roots: &[&[u8]]) -> std::io::Result<TlsClient> {
        let mut store = rustls::RootCertStore::empty();
        for r in roots {
            store.add(CertificateDer::from(r.to_vec())).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
        let conn = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        // Drive the handshake now, so its errors show here.
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(TlsClient { s })
    }

    /// The leaf certificate the server presented.
    fn leaf(&self) -> Vec<u8> {
        self.s.conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// `GET path` (optionally with basic credentials) on this connection:
    /// status, headers and body of a `Content-Length` response.
    fn get(&mut self, path: &str, auth: Option<(&str, &str)>) -> (u16, String, String) {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
        if let Some((u, p)) = auth {
            req.push_str(&format!(
                "Authorization: Basic {}\r\n",
                b64(&format!("{u}:{p}"))
            ));
        }
        req.push_str("\r\n");
        self.s.write_all(req.as_bytes()).unwrap();
        self.s.flush().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            self.s.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no Content-Length in {head}"));
        let mut body = vec![0u8; len];
        self.s.read_exact(&mut body).unwrap();
        (status, head, String::from_utf8_lossy(&body).to_string())
    }
}

fn b64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One `/metrics` sample read over `c`.
fn sample(c: &mut TlsClient, auth: Option<(&str, &str)>, name: &str) -> u64 {
    let (status, _, body) = c.get("/metrics", auth);
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// curl with `args`; returns (HTTP status, headers and body). Status 0 when
/// curl got no HTTP answer (its exit code is then in the text).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new(require_binary("curl"))
        .args(["-sS", "-i", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let code = code.trim().parse().unwrap_or(0);
    (
        code,
        format!(
            "{body}\n[curl exit {:?}: {}]",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn kill_hup(agg: &Aggregator) {
    let st = Command::new("kill")
        .args(["-HUP", &agg.guard.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn https_serves_and_reloads_the_certificate_on_sighup_without_dropping_connections() {
    let certs = tempfile::tempdir().unwrap();
    let (a, b) = (self_signed(), self_signed());
    let (crt, key) = install(certs.path(), &a);
    let agg = Aggregator::start_tuned(
        "tls",
        &Tuning {
            http: tls_keys(&crt, &key),
            ..Tuning::default()
        },
    );
    let url = format!("https://127.0.0.1:{}/api/grid", agg.http.port());
    let a_pem = certs.path().join("a.pem");
    let b_pem = certs.path().join("b.pem");
    std::fs::write(&a_pem, &a.cert_pem).unwrap();
    std::fs::write(&b_pem, &b.cert_pem).unwrap();
    let (code, text) = curl(&["--cacert", a_pem.to_str().unwrap(), &url]);
    assert_eq!(code, 200, "{text}");
    // Plain HTTP on the TLS port is a failed handshake, not a request.
    let (code, _) = curl(&[&format!("http://127.0.0.1:{}/", agg.http.port())]);
    assert_ne!(code, 200);

    // A connection opened before the reload...
    let mut old = TlsClient::connect(agg.http, &[&a.der]).unwrap();
    assert_eq!(old.leaf(), a.der);
    assert_eq!(old.get("/api/grid", None).0, 200);

    install(certs.path(), &b);
    kill_hup(&agg);
    // ...new clients get the new certificate once the reload is done...
    wait_until(
        "the new certificate served",
        Duration::from_secs(20),
        || {
            let c = TlsClient::connect(agg.http, &[&a.der, &b.der]).ok()?;
            (c.leaf() == b.der).then_some(())
        },
    );
    let (code, text) = curl(&["--cacert", b_pem.to_str().unwrap(), &url]);
    assert_eq!(code, 200, "{text}");
    let (code, _) = curl(&["--cacert", a_pem.to_str().unwrap(), &url]);
    assert_eq!(code, 0, "the old certificate is no longer served");
    // ...and the old connection goes on, on the session it has.
    let (status, _, body) = old.get("/api/grid", None);
    assert_eq!(status, 200, "{body}");

    // A bad pair (the key is not the certificate's) is refused and the
    // certificate in force stays.
    std::fs::write(&key, self_signed().key_pem).unwrap();
    kill_hup(&agg);
    let mut m = TlsClient::connect(agg.http, &[&b.der]).unwrap();
    wait_until("the bad reload counted", Duration::from_secs(20), || {
        (sample(
            &mut m,
            None,
            "ganglion_http_tls_reloads_total{result=\"failed\"}",
        ) == 1)
            .then_some(())
    });
    assert_eq!(
        sample(
            &mut m,
            None,
            "ganglion_http_tls_reloads_total{result=\"ok\"}"
        ),
        1
    );
    assert!(
        sample(
            &mut m,
            None,
            "ganglion_http_refused_total{reason=\"tls_handshake_failed\"}"
        ) >= 1
    );
    let c = TlsClient::connect(agg.http, &[&b.der]).unwrap();
    assert_eq!(c.leaf(), b.der);
    assert!(agg.log().contains("not reloaded"), "{}", agg.log());
}

#[test]
fn a_stalled_tls_handshake_holds_a_slot_only_until_its_timeout() {
    let certs = tempfile::tempdir().unwrap();
    let a = self_signed();
    let (crt, key) = install(certs.path(), &a);
    let agg = Aggregator::start_tuned(
        "tls",
        &Tuning {
            http: format!(
                "{}tls_handshake_timeout_secs = 3\nmax_connections_per_ip = 2\n",
                tls_keys(&crt, &key)
            ),
            ..Tuning::default()
        },
    );
    // Two clients that start a ClientHello and never finish it (slowloris
    // on TLS): each holds one of the address's two connections. (From an
    // address of their own: the start-up probe and the metrics reads come
    // from 127.0.0.1.)
    let from = Ipv4Addr::new(127, 0, 0, 2);
    let mut stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect_from(from, agg.http).unwrap();
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
            s
        })
        .collect();
    // So a real client from the same address is over its cap: answered 503
    // over TLS, with Retry-After.
    let mut c = TlsClient::over(connect_from(from, agg.http).unwrap(), &[&a.der]).unwrap();
    let (status, head, body) = c.get("/api/grid", None);
    assert_eq!(status, 503, "{head}{body}");
    assert!(
        head.contains("retry-after: 5") || head.contains("Retry-After: 5"),
        "{head}"
    );
    assert!(body.contains("http.max_connections_per_ip"), "{body}");
    // The stalled ones are cut at the handshake timeout...
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the server closed the stalled handshake");
    }
    // ...which frees their slots.
    let mut c = wait_until("a slot free again", Duration::from_secs(10), || {
        let mut c = TlsClient::over(connect_from(from, agg.http).ok()?, &[&a.der]).ok()?;
        (c.get("/api/grid", None).0 == 200).then_some(c)
    });
    assert_eq!(
        sample(
            &mut c,
            None,
            "ganglion_http_refused_total{reason=\"tls_handshake_timeout\"}"
        ),
        2
    );
    assert_eq!(
        sample(
            &mut c,
            None,
            "ganglion_connections_refused_per_ip_total{listener=\"http\"}"
        ),
        1
    );
}

#[test]
fn basic_auth_guards_every_route() {
    let agg = Aggregator::start_tuned(
        "auth",
        &Tuning {
            tables: users(&[("alice", "s3cret"), ("bob", "hunter2")]),
            ..Tuning::default()
        },
    );
    let base = format!("http://{}", agg.http);
    for path in ["/", "/api/grid", "/metrics", "/assets/app.js", "/no/such"] {
        let (code, text) = curl(&[&format!("{base}{path}")]);
        assert_eq!(code, 401, "{path}: {text}");
        assert!(
            text.contains("www-authenticate: Basic realm=\"ganglion\""),
            "{path}: {text}"
        );
    }
    for (creds, why) in [
        ("alice:wrong", "a wrong password"),
        ("mallory:s3cret", "an unknown user"),
        ("alice:hunter2", "another user's password"),
    ] {
        let (code, text) = curl(&["-u", creds, &format!("{base}/api/grid")]);
        assert_eq!(code, 401, "{why}: {text}");
    }
    for path in ["/", "/api/grid", "/assets/app.js", "/metrics"] {
        let (code, text) = curl(&["-u", "alice:s3cret", &format!("{base}{path}")]);
        assert_eq!(code, 200, "{path}: {text}");
    }
    let (code, _) = curl(&["-u", "bob:hunter2", &format!("{base}/api/grid")]);
    assert_eq!(code, 200);
    let (_, text) = curl(&["-u", "alice:s3cret", &format!("{base}/metrics")]);
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(value("ganglion_http_auth_total{result=\"denied\"}"), 3);
    assert_eq!(value("ganglion_http_auth_total{result=\"missing\"}"), 5);
    // alice and bob each cost one bcrypt; alice's later requests were
    // remembered.
    assert_eq!(value("ganglion_http_auth_total{result=\"verified\"}"), 2);
    assert!(
        value("ganglion_http_auth_total{result=\"cached\"}") >= 3,
        "{text}"
    );
    // Denials are logged, rate-limited per address.
    assert_eq!(
        agg.log().matches("HTTP authentication failed").count(),
        1,
        "{}",
        agg.log()
    );
}

#[test]
fn metrics_without_auth_leaves_only_metrics_open() {
    let mut agg = Aggregator::start_tuned(
        "auth",
        &Tuning {
            http: "metrics_without_auth = true\n".into(),
            tables: users(&[("alice", "s3cret")]),
            ..Tuning::default()
        },
    );
    let base = format!("http://{}", agg.http);
    let (code, text) = curl(&[&format!("{base}/metrics")]);
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("ganglion_http_auth_total"), "{text}");
    // Other paths under /metrics are open too (404 here, not 401).
    let (code, _) = curl(&[&format!("{base}/metrics/none")]);
    assert_ne!(code, 401);
    for path in ["/", "/api/grid", "/metricsx"] {
        let (code, text) = curl(&[&format!("{base}{path}")]);
        assert_eq!(code, 401, "{path}: {text}");
    }
    // Without TLS there is nothing to reload, but SIGHUP (systemctl reload)
    // must not end the process, its default action.
    kill_hup(&agg);
    let (code, text) = curl(&[&format!("{base}/metrics")]);
    assert_eq!(code, 200, "{text}");
    assert!(
        agg.guard.child.try_wait().unwrap().is_none(),
        "still running"
    );
}

/// This machine's own non-loopback IPv4 address: connecting to it makes it
/// the peer address, which `trusted_hosts = []` does not trust.
fn non_loopback_ipv4() -> Ipv4Addr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("192.0.2.1:9")
        .expect("no IPv4 route: this test needs a non-loopback address to be untrusted from");
    match s.local_addr().unwrap().ip() {
        std::net::IpAddr::V4(a) if !a.is_loopback() && !a.is_unspecified() => a,
        other => panic!("no non-loopback IPv4 address (got {other}); this test needs one"),
    }
}

#[test]
fn flush_needs_credentials_or_a_trusted_address() {
    let ip = non_loopback_ipv4();
    let tuning = |tables: String| Tuning {
        top: "trusted_hosts = []\nall_trusted = false\n".into(),
        http_host: "0.0.0.0".into(),
        http: "flush_min_interval_secs = 1\n".into(),
        tables,
        ..Tuning::default()
    };
    let post = |to: String, creds: Option<&str>| {
        let mut args = vec!["-X", "POST"];
        if let Some(c) = creds {
            args.extend(["-u", c]);
        }
        let url = format!("{to}/api/flush");
        args.push(&url);
        curl(&args)
    };
    // No users: the address decides.
    let open = Aggregator::start_tuned("flush", &tuning(String::new()));
    let (code, text) = post(format!("http://{ip}:{}", open.http.port()), None);
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("basic-auth credentials"), "{text}");
    let (code, text) = post(format!("http://{}", open.http), None);
    assert_eq!(code, 200, "loopback is trusted: {text}");
    drop(open);

    // Users set: every request authenticates, loopback included; with
    // credentials, an untrusted address may flush.
    let agg = Aggregator::start_tuned("flush", &tuning(users(&[("ops", "pw")])));
    let untrusted = format!("http://{ip}:{}", agg.http.port());
    let (code, text) = post(format!("http://{}", agg.http), None);
    assert_eq!(code, 401, "{text}");
    let (code, text) = post(untrusted.clone(), None);
    assert_eq!(code, 401, "{text}");
    let (code, text) = post(untrusted.clone(), Some("ops:nope"));
    assert_eq!(code, 401, "{text}");
    let (code, text) = post(untrusted, Some("ops:pw"));
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("\"flushed\":true"), "{text}");
}

#[test]
fn tls_and_auth_together_with_curl() {
    let certs = tempfile::tempdir().unwrap();
    let a = self_signed();
    let (crt, key) = install(certs.path(), &a);
    let ca = certs.path().join("ca.pem");
    std::fs::write(&ca, &a.cert_pem).unwrap();
    let agg = Aggregator::start_tuned(
        "both",
        &Tuning {
            http: tls_keys(&crt, &key),
            tables: users(&[("alice", "s3cret")]),
            ..Tuning::default()
        },
    );
    let base = format!("https://127.0.0.1:{}", agg.http.port());
    let ca = ca.to_str().unwrap();
    let (code, text) = curl(&["--cacert", ca, &format!("{base}/api/grid")]);
    assert_eq!(code, 401, "{text}");
    let (code, text) = curl(&[
        "--cacert",
        ca,
        "-u",
        "alice:s3cret",
        &format!("{base}/api/grid"),
    ]);
    assert_eq!(code, 200, "{text}");
    // HTTP/2 over ALPN, as browsers speak it.
    let (code, text) = curl(&[
        "--http2",
        "--cacert",
        ca,
        "-u",
        "alice:s3cret",
        &format!("{base}/metrics"),
    ]);
    assert_eq!(code, 200, "{text}");
    assert!(text.starts_with("HTTP/2 200"), "{text}");
    let (code, text) = curl(&[
        "--cacert",
        ca,
        "-u",
        "alice:s3cret",
        "-X",
        "POST",
        &format!("{base}/api/flush"),
    ]);
    assert_eq!(code, 200, "{text}");
    // The rustls client agrees.
    let mut c = TlsClient::connect(agg.http, &[&a.der]).unwrap();
    assert_eq!(c.get("/api/grid", None).0, 401);
    assert_eq!(c.get("/api/grid", Some(("alice", "s3cret"))).0, 200);
}

#[test]
fn dashboard_in_chromium_behind_basic_auth_and_tls() {
    let chromium = require_binary("chromium");
    let node = require_binary("node");
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run scripts/test.sh (it runs `npm ci` in tests/browser)"
    );
    let certs = tempfile::tempdir().unwrap();
    let (crt, key) = install(certs.path(), &self_signed());
    let agg = Aggregator::start_tuned(
        "webauth",
        &Tuning {
            top: "step_secs = 1\n".into(),
            http: tls_keys(&crt, &key),
            tables: format!(
                "{}[storage]\nflush_interval_secs = 1\n",
                users(&[("viewer", "d4shb0ard")])
            ),
            ..Tuning::default()
        },
    );
    let _agent = start_agent(
        agg.dir.path(),
        "agent.toml",
        &format!(
            "[[send]]\nhost = \"127.0.0.1\"\nport = {}\n",
            agg.udp.port()
        ),
        &[],
    );
    wait_until("load_one.rrd written", Duration::from_secs(30), || {
        agg.rrd_root
            .join("webauth/127.0.0.1/load_one.rrd")
            .exists()
            .then_some(())
    });
    let artifacts = artifacts_dir();
    let out = Command::new(node)
        .arg(browser_dir.join("auth.mjs"))
        .arg(format!("https://127.0.0.1:{}", agg.http.port()))
        .arg(&artifacts)
        .args(["webauth", "viewer", "d4shb0ard"])
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "browser test failed:\n{log}");
    assert!(artifacts.join("auth-cluster.png").exists());
}

//! Private instances of the time-series engines the aggregator forwards to
//! (Debian's victoria-metrics, prometheus, graphite-carbon), each on free
//! loopback ports in its own temp dir, stopped by PID when dropped; and a
//! line-capturing TCP listener standing in for carbon.

use crate::{ChildGuard, free_tcp_port, http_get, require_binary, wait_until};
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Percent-encodes a query-string value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A VictoriaMetrics single node taking remote write (HTTP) and Graphite.
pub struct VictoriaMetrics {
    /// The process.
    pub guard: ChildGuard,
    /// HTTP: `/api/v1/write`, `/api/v1/export`, `/metrics`.
    pub http: SocketAddr,
    /// Graphite plaintext (TCP and UDP).
    pub graphite: SocketAddr,
    _dir: tempfile::TempDir,
}

impl VictoriaMetrics {
    /// Starts one and waits for `/health`.
    pub fn start() -> VictoriaMetrics {
        let dir = tempfile::tempdir().unwrap();
        let (hp, gp) = (free_tcp_port(), crate::free_port_pair());
        let guard = ChildGuard::spawn(
            "victoria-metrics",
            Command::new(require_binary("victoria-metrics"))
                .arg(format!("-storageDataPath={}", dir.path().display()))
                .arg(format!("-httpListenAddr=127.0.0.1:{hp}"))
                .arg(format!("-graphiteListenAddr=127.0.0.1:{gp}"))
                .args(["-retentionPeriod=1d", "-loggerLevel=ERROR"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let vm = VictoriaMetrics {
            guard,
            http: loopback(hp),
            graphite: loopback(gp),
            _dir: dir,
        };
        wait_until("victoria-metrics /health", Duration::from_secs(15), || {
            std::net::TcpStream::connect(vm.http)
                .ok()
                .and_then(|_| http_get(vm.http, "/health").contains("OK").then_some(()))
        });
        vm
    }

    /// `/internal/force_flush` then `/api/v1/export?match[]=selector`: one
    /// JSON object per series (`metric`, `values`, `timestamps`).
    pub fn export(&self, selector: &str) -> Vec<serde_json::Value> {
        http_get(self.http, "/internal/force_flush");
        http_get(
            self.http,
            &format!("/api/v1/export?match[]={}", urlencode(selector)),
        )
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
    }

    /// A sample of VictoriaMetrics' own `/metrics` (0 when absent).
    pub fn self_metric(&self, sample: &str) -> u64 {
        crate::metrics_value(self.http, sample)
    }
}

/// A Prometheus 2.x with the remote-write receiver, optionally scraping
/// one target's path every second.
pub struct Prometheus {
    /// The process.
    pub guard: ChildGuard,
    /// Web: `/api/v1/write`, `/api/v1/query`.
    pub http: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts one scraping `target` (`(address, path)`) and waits for `/-/ready`.
    pub fn start(target: Option<(SocketAddr, &str)>) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = free_tcp_port();
        let mut yml = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n");
        if let Some((a, path)) = target {
            yml.push_str(&format!(
                "scrape_configs:\n  - job_name: ganglion\n    metrics_path: {path}\n    static_configs:\n      - targets: ['{a}']\n"
            ));
        }
        let conf = dir.path().join("p.yml");
        std::fs::write(&conf, yml).unwrap();
        let guard = ChildGuard::spawn(
            "prometheus",
            Command::new(require_binary("prometheus"))
                .arg(format!("--config.file={}", conf.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .args([
                    "--web.enable-remote-write-receiver",
                    "--storage.tsdb.retention.time=1d",
                    "--storage.remote.flush-deadline=1s",
                    "--log.level=warn",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let p = Prometheus {
            guard,
            http: loopback(port),
            _dir: dir,
        };
        wait_until("prometheus /-/ready", Duration::from_secs(20), || {
            std::net::TcpStream::connect(p.http)
                .ok()
                .and_then(|_| http_get(p.http, "/-/ready").contains("Ready").then_some(()))
        });
        p
    }

    /// `/api/v1/query?query=q`: the `data.result` array.
    pub fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let body = http_get(self.http, &format!("/api/v1/query?query={}", urlencode(q)));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

/// carbon-cache writing whisper files, TCP and UDP line receivers on one
/// port, every new metric created at once (`MAX_CREATES_PER_MINUTE = inf`).
pub struct Carbon {
    /// The process.
    pub guard: ChildGuard,
    /// Line receiver (TCP and UDP).
    pub line: SocketAddr,
    /// Root of the whisper tree.
    pub whisper: PathBuf,
    _dir: tempfile::TempDir,
}

impl Carbon {
    /// Starts one (schema `^ganglia\.` = 1 s for a day) and waits until it listens.
    pub fn start() -> Carbon {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["conf", "whisper", "log", "run"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let (lp, pp, cp) = (crate::free_port_pair(), free_tcp_port(), free_tcp_port());
        std::fs::write(
            d.join("conf/carbon.conf"),
            format!(
                "[cache]\nSTORAGE_DIR = {d}/\nLOCAL_DATA_DIR = {d}/whisper/\nCONF_DIR = {d}/conf/\n\
                 LOG_DIR = {d}/log/\nPID_DIR = {d}/run/\nUSER =\nMAX_CACHE_SIZE = inf\n\
                 MAX_UPDATES_PER_SECOND = 10000\nMAX_CREATES_PER_MINUTE = inf\n\
                 LINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {lp}\n\
                 ENABLE_UDP_LISTENER = True\nUDP_RECEIVER_INTERFACE = 127.0.0.1\nUDP_RECEIVER_PORT = {lp}\n\
                 PICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = {pp}\n\
                 CACHE_QUERY_INTERFACE = 127.0.0.1\nCACHE_QUERY_PORT = {cp}\n\
                 WHISPER_AUTOFLUSH = True\nLOG_LISTENER_CONN_SUCCESS = False\n",
                d = d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("conf/storage-schemas.conf"),
            "[ganglia]\npattern = ^ganglia\\.\nretentions = 1s:1d\n\n[default]\npattern = .*\nretentions = 60s:1d\n",
        )
        .unwrap();
        let guard = ChildGuard::spawn(
            "carbon-cache",
            Command::new(require_binary("carbon-cache"))
                .arg(format!("--config={}", d.join("conf/carbon.conf").display()))
                .arg("--nodaemon")
                .arg(format!("--pidfile={}", d.join("run/carbon.pid").display()))
                .arg(format!("--logdir={}", d.join("log").display()))
                .arg("start")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let line = loopback(lp);
        crate::wait_for_tcp(line, Duration::from_secs(20));
        Carbon {
            guard,
            line,
            whisper: d.join("whisper"),
            _dir: dir,
        }
    }

    /// What carbon logged about refused lines (`listener.log`).
    pub fn listener_log(&self) -> String {
        let log = self.whisper.parent().unwrap().join("log/listener.log");
        std::fs::read_to_string(log).unwrap_or_default()
    }
}

/// A TCP listener recording every byte any connection sends (a carbon
/// stand-in for comparing exactly what two senders wrote).
pub struct LineCapture {
    /// Where it listens.
    pub addr: SocketAddr,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl LineCapture {
    /// Starts listening on a free loopback port.
    pub fn start() -> LineCapture {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let b = bytes.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        b.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        LineCapture { addr, bytes }
    }

    /// Everything received so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }

    /// Forgets what was received.
    pub fn clear(&self) {
        self.bytes.lock().unwrap().clear();
    }
}

/// Runs `promtool check metrics` on `text`; `Err` holds its complaint.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new(require_binary("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

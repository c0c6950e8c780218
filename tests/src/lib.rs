//! Shared support for Ganglion's end-to-end and interop tests.
//!
//! Interop tests run the real Debian binaries (gmond, gmetad, gmetric, gstat,
//! rrdtool, rrdcached, xmllint, chromium). They **fail, never skip**, when a peer
//! is missing: the README's test command installs them, so a green run means
//! they ran. Every peer runs with its own config on free loopback ports and is
//! stopped by PID when its guard drops.

pub mod engines;
pub mod nagios;

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Path of a required external program; panics with a clear message if absent.
pub fn require_binary(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "required peer binary `{name}` is not installed; run the README's test command \
         (scripts/test.sh), which installs every peer the interop tests need"
    );
}

/// Runs `cmd` to completion and returns its stdout; panics naming `what`,
/// with what it printed, when it fails.
pub fn output_ok(what: &str, cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Path of one of this workspace's binaries (`ganglion-agent`, …), built by
/// `cargo test --workspace` next to the test executable.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary lives in target/<profile>/deps");
    let p = profile_dir.join(name);
    assert!(
        p.is_file(),
        "workspace binary {} not built; run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// Test ports come from below the kernel's ephemeral range (32768+ on
/// Linux): a port picked by binding port 0 and releasing it can be handed out
/// again as the source port of any outgoing connection (chromium, node, curl
/// in a parallel test), and the daemon that was meant to listen on it then
/// fails with "address in use". Ports below the range are only ever taken by
/// an explicit bind, so a per-process sequence that skips taken ports is
/// enough. The start is spread by process id so test binaries run one after
/// another rarely meet ports still in TIME_WAIT.
const TEST_PORTS: std::ops::Range<u16> = 20000..32000;

fn next_test_port(free: impl Fn(u16) -> bool) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let i = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        // `i < span` and span fits a u16, so the sum stays below TEST_PORTS.end.
        let p = TEST_PORTS.start + i as u16;
        if free(p) {
            return p;
        }
    }
    panic!("no free test port in {TEST_PORTS:?}");
}

/// A free TCP port on 127.0.0.1 (checked free now; drawn from this process's
/// share of the test port range).
pub fn free_tcp_port() -> u16 {
    next_test_port(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    next_test_port(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok())
}

/// A port free for both TCP and UDP (gmond uses 8649 for both).
pub fn free_port_pair() -> u16 {
    next_test_port(|p| {
        TcpListener::bind(("127.0.0.1", p)).is_ok() && UdpSocket::bind(("127.0.0.1", p)).is_ok()
    })
}

/// Waits until a TCP connect to `addr` succeeds.
pub fn wait_for_tcp(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listening on {addr} after {timeout:?}");
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed (by PID) and reaped when dropped.
pub struct ChildGuard {
    /// The process.
    pub child: Child,
    /// Name for messages.
    pub name: String,
}

impl ChildGuard {
    /// Spawns `cmd`, panicking with the program name on failure.
    pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {name}: {e}"));
        ChildGuard {
            child,
            name: name.to_string(),
        }
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `timeout` for exit; returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Directory for test artifacts (screenshots, captured XML), created on demand.
pub fn artifacts_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    std::fs::create_dir_all(&d).expect("create artifacts dir");
    d
}

/// Runs `xmllint --valid --noout` on `xml`; returns Err(stderr) when invalid.
pub fn xmllint_valid(xml: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let xmllint = require_binary("xmllint");
    let mut f = tempfile::NamedTempFile::new().expect("tempfile");
    f.write_all(xml).expect("write xml");
    let out = Command::new(xmllint)
        .args(["--valid", "--noout"])
        .arg(f.path())
        .output()
        .expect("run xmllint");
    if out.status.success() && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Reads everything a TCP server sends after connecting (optionally sending
/// `request` first), like gmetad and gstat do.
pub fn read_tcp(addr: SocketAddr, request: Option<&[u8]>) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    if let Some(r) = request {
        s.write_all(r).unwrap();
    }
    let mut v = Vec::new();
    s.read_to_end(&mut v)
        .unwrap_or_else(|e| panic!("read {addr}: {e}"));
    v
}

/// A `ganglion-aggregator` started from a config file on free loopback ports.
pub struct Aggregator {
    /// The process (stopped on drop).
    pub guard: ChildGuard,
    /// The cluster's UDP port.
    pub udp: SocketAddr,
    /// The cluster's gmond-compatible XML port.
    pub gmond: SocketAddr,
    /// gmetad dump port.
    pub dump: SocketAddr,
    /// gmetad interactive port.
    pub query: SocketAddr,
    /// HTTP.
    pub http: SocketAddr,
    /// The RRD tree (`dir/rrds` unless given to [`Aggregator::start_at`]).
    pub rrd_root: PathBuf,
    /// Temp dir holding config and data.
    pub dir: tempfile::TempDir,
    /// Where its stderr goes.
    log: PathBuf,
}

impl Aggregator {
    /// Starts an aggregator with one cluster `cluster` plus `extra` TOML: its
    /// leading top-level keys go first, its tables (e.g. `[[data_source]]`) last.
    pub fn start(cluster: &str, extra: &str) -> Aggregator {
        Aggregator::start_with(cluster, "reverse_dns = false\n", extra)
    }

    /// As [`Aggregator::start`], with `cluster_keys` (TOML lines) in the
    /// `[[cluster]]` table instead of the default `reverse_dns = false`.
    pub fn start_with(cluster: &str, cluster_keys: &str, extra: &str) -> Aggregator {
        Aggregator::launch(None, cluster, cluster_keys, extra)
    }

    /// As [`Aggregator::start_with`], with the RRD tree at `rrd_root` (which
    /// the caller owns and may, say, mount a file system on).
    pub fn start_at(rrd_root: &Path, cluster: &str, cluster_keys: &str, extra: &str) -> Aggregator {
        Aggregator::launch(Some(rrd_root), cluster, cluster_keys, extra)
    }

    /// What the aggregator has logged so far (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn launch(
        rrd_root: Option<&Path>,
        cluster: &str,
        cluster_keys: &str,
        extra: &str,
    ) -> Aggregator {
        let split = if extra.starts_with('[') {
            0
        } else {
            extra.find("\n[").map_or(extra.len(), |i| i + 1)
        };
        let (top, extra) = extra.split_at(split);
        let dir = tempfile::tempdir().unwrap();
        let root = rrd_root.map_or_else(|| dir.path().join("rrds"), Path::to_path_buf);
        let port = free_port_pair();
        let (dump, query, http) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
        let cfg = format!(
            "{top}\ngrid_name = \"TestGrid\"\nauthority = \"http://test/\"\nrrd_root = \"{root}\"\n\
             [[cluster]]\nname = \"{cluster}\"\nudp_listen = \"127.0.0.1:{port}\"\n\
             xml_listen = \"127.0.0.1:{port}\"\n{cluster_keys}\
             [xml]\ndump_listen = \"127.0.0.1:{dump}\"\nquery_listen = \"127.0.0.1:{query}\"\n\
             client_timeout_secs = 5\n[http]\nlisten = \"127.0.0.1:{http}\"\n{extra}",
            root = root.display()
        );
        let path = dir.path().join("aggregator.toml");
        std::fs::write(&path, cfg).unwrap();
        let mut cmd = Command::new(workspace_bin("ganglion-aggregator"));
        cmd.arg("--config").arg(&path).env("RUST_LOG", "warn");
        Aggregator::spawn_ready(cmd, dir, root, [port, dump, query, http])
    }

    /// Spawns `cmd` (an aggregator command line) with its stderr in the
    /// scratch directory's log — always captured: a daemon that exits at
    /// start (say, a port taken by another process) then says why in the
    /// test's panic message — and waits until its HTTP port answers.
    fn spawn_ready(
        mut cmd: Command,
        dir: tempfile::TempDir,
        root: PathBuf,
        [port, dump, query, http]: [u16; 4],
    ) -> Aggregator {
        let log = dir.path().join("aggregator.log");
        cmd.env("NO_COLOR", "1")
            .stderr(std::fs::File::create(&log).expect("create log file"));
        let guard = ChildGuard::spawn("ganglion-aggregator", &mut cmd);
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let mut agg = Aggregator {
            guard,
            udp: a(port),
            gmond: a(port),
            dump: a(dump),
            query: a(query),
            http: a(http),
            rrd_root: root,
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&agg.http, Duration::from_millis(200)).is_err() {
            if let Ok(Some(st)) = agg.guard.child.try_wait() {
                panic!(
                    "ganglion-aggregator exited ({st}) before listening:\n{}",
                    agg.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "ganglion-aggregator not listening on {} after 10 s:\n{}",
                agg.http,
                agg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agg
    }
}

impl Drop for Aggregator {
    /// A failing test shows what the aggregator logged (its stderr goes to a
    /// file, see [`Aggregator::log`]).
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            if !log.is_empty() {
                eprintln!("--- ganglion-aggregator log ---\n{log}--- end of log ---");
            }
        }
    }
}

/// A gmetric config file sending to `udp`.
pub fn gmetric_conf(dir: &Path, udp: SocketAddr) -> PathBuf {
    let p = dir.join("gmetric.conf");
    std::fs::write(
        &p,
        format!(
            "globals {{\n}}\nudp_send_channel {{\n  host = {}\n  port = {}\n}}\n",
            udp.ip(),
            udp.port()
        ),
    )
    .unwrap();
    p
}

/// Runs the real gmetric with `args`, sending to the config `conf`.
pub fn gmetric(conf: &Path, args: &[&str]) {
    let st = Command::new(require_binary("gmetric"))
        .arg("-c")
        .arg(conf)
        .args(args)
        .status()
        .expect("run gmetric");
    assert!(st.success(), "gmetric {args:?} failed: {st}");
}

/// A config for the real gmond from its own defaults (`gmond -t`), with our
/// channels: receive + XML on `port`, send to `send_to` (or nowhere: mute).
pub fn gmond_conf(dir: &Path, cluster: &str, port: u16, send_to: Option<SocketAddr>) -> PathBuf {
    let out = Command::new(require_binary("gmond"))
        .arg("-t")
        .output()
        .expect("gmond -t");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    for section in ["udp_send_channel", "udp_recv_channel", "tcp_accept_channel"] {
        while let Some(start) = text.find(&format!("\n{section} {{")) {
            let end = start + text[start..].find("\n}").expect("section end") + 2;
            text.replace_range(start..end, "");
        }
    }
    if let Some(start) = text.find("include (") {
        let end = start + text[start..].find('\n').unwrap_or(text.len() - start);
        text.replace_range(start..end, "");
    }
    let module_dir = [
        "/usr/lib/x86_64-linux-gnu/ganglia",
        "/usr/lib/aarch64-linux-gnu/ganglia",
        "/usr/lib64/ganglia",
        "/usr/lib/ganglia",
    ]
    .into_iter()
    .find(|d| Path::new(d).join("modcpu.so").exists())
    .expect("gmond's metric modules (modcpu.so) are installed");
    text = text
        .replace("daemonize = yes", "daemonize = no")
        .replace("setuid = yes", "setuid = no")
        .replacen(
            "globals {",
            &format!("globals {{\n  module_dir = \"{module_dir}\""),
            1,
        )
        .replacen(
            "name = \"unspecified\"",
            &format!("name = \"{cluster}\""),
            1,
        );
    text.push_str(&format!(
        "\nudp_recv_channel {{\n  port = {port}\n  bind = 127.0.0.1\n}}\ntcp_accept_channel {{\n  port = {port}\n  bind = 127.0.0.1\n}}\n"
    ));
    if let Some(s) = send_to {
        text.push_str(&format!(
            "udp_send_channel {{\n  host = {}\n  port = {}\n}}\n",
            s.ip(),
            s.port()
        ));
    }
    let p = dir.join(format!("gmond-{port}.conf"));
    std::fs::write(&p, text).unwrap();
    p
}

/// Starts the real gmond in the foreground with `conf`.
pub fn start_gmond(conf: &Path, port: u16) -> ChildGuard {
    let g = ChildGuard::spawn(
        "gmond",
        Command::new(require_binary("gmond"))
            .arg("-f")
            .arg("-c")
            .arg(conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    wait_for_tcp(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    );
    g
}

/// Sends gmetric-style traffic for `hosts` synthetic hosts (`host0000`, …,
/// spoofed as `10.x.y.z:hostNNNN`): metadata then a float value for each of
/// `metrics`, the value given by `value(host_index, metric_index)`. Paced in
/// small bursts so a default socket buffer never overflows.
pub fn send_synthetic_hosts(
    to: SocketAddr,
    hosts: usize,
    metrics: &[&str],
    value: impl Fn(usize, usize) -> f32,
) {
    use ganglion_proto::model::MetricMeta;
    use ganglion_proto::xdr::{self, Message, MetadataMsg, MetricId, Value, ValueMsg};
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for h in 0..hosts {
        let host = format!("10.{}.{}.{}:host{h:04}", h >> 16, (h >> 8) & 255, h & 255);
        for (k, m) in metrics.iter().enumerate() {
            let id = MetricId {
                host: host.clone(),
                name: m.to_string(),
                spoof: true,
            };
            let meta = Message::Metadata(MetadataMsg {
                id: id.clone(),
                meta: MetricMeta {
                    type_name: "float".into(),
                    name: m.to_string(),
                    units: " ".into(),
                    slope: 3,
                    tmax: 60,
                    dmax: 0,
                    extra: vec![
                        ("GROUP".into(), "synthetic".into()),
                        ("SPOOF_HOST".into(), host.clone()),
                    ],
                },
            });
            let val = Message::Value(ValueMsg {
                id,
                fmt: "%.2f".into(),
                value: Value::Float(value(h, k)),
            });
            for msg in [meta, val] {
                sock.send_to(&xdr::encode(&msg).unwrap(), to).unwrap();
            }
        }
        if h % 100 == 99 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Sends one metric as gmetric does (metadata, then the value), spoofed as
/// `host` (`IP:name`), with the given Ganglia type name and slope.
pub fn send_metric(
    to: SocketAddr,
    host: &str,
    name: &str,
    type_name: &str,
    slope: u32,
    value: ganglion_proto::xdr::Value,
) {
    use ganglion_proto::model::MetricMeta;
    use ganglion_proto::xdr::{self, Message, MetadataMsg, MetricId, ValueMsg};
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let id = MetricId {
        host: host.to_string(),
        name: name.to_string(),
        spoof: true,
    };
    let fmt = match &value {
        xdr::Value::Str(_) => "%s",
        xdr::Value::Float(_) | xdr::Value::Double(_) => "%f",
        xdr::Value::Int(_) | xdr::Value::Short(_) => "%d",
        xdr::Value::UInt(_) | xdr::Value::UShort(_) => "%u",
    };
    let meta = Message::Metadata(MetadataMsg {
        id: id.clone(),
        meta: MetricMeta {
            type_name: type_name.into(),
            name: name.to_string(),
            units: " ".into(),
            slope,
            tmax: 60,
            dmax: 0,
            extra: vec![("SPOOF_HOST".into(), host.to_string())],
        },
    });
    let val = Message::Value(ValueMsg {
        id,
        fmt: fmt.into(),
        value,
    });
    for msg in [meta, val] {
        sock.send_to(&xdr::encode(&msg).unwrap(), to).unwrap();
    }
}

/// One sample of the aggregator's `/metrics`, e.g. `ganglion_rrd_samples_total`
/// or `ganglion_rrd_write_errors_total{reason="no_space"}`; 0 when absent.
pub fn metrics_value(http: SocketAddr, sample: &str) -> u64 {
    http_get(http, "/metrics")
        .lines()
        .find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The body of `GET path` on an HTTP/1.0 server at `addr` (headers stripped).
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let raw = read_tcp(
        addr,
        Some(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()),
    );
    let text = String::from_utf8_lossy(&raw);
    text.split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string())
}

/// Starts the `ganglion-agent` daemon with `toml` written to `dir/name`,
/// plus `args` (e.g. `--send-to`). Its log goes nowhere; stopped on drop.
pub fn start_agent(dir: &Path, name: &str, toml: &str, args: &[&str]) -> ChildGuard {
    let conf = dir.join(name);
    std::fs::write(&conf, toml).unwrap();
    ChildGuard::spawn(
        "ganglion-agent",
        Command::new(workspace_bin("ganglion-agent"))
            .arg("--config")
            .arg(&conf)
            .args(args)
            .stderr(std::process::Stdio::null()),
    )
}

/// A real gmetad started by [`start_gmetad`].
pub struct Gmetad {
    /// The process (stopped on drop).
    pub guard: ChildGuard,
    /// Its xml_port (8651's role).
    pub xml: SocketAddr,
    /// Its interactive_port (8652's role).
    pub query: SocketAddr,
    /// Its rrd_rootdir.
    pub rrds: PathBuf,
}

/// Starts the real gmetad in the foreground with `body` (data_source,
/// gridname, …) plus free xml/interactive ports, `rrd_rootdir` at
/// `dir/<name>-rrds` and `setuid off`; returns once both ports answer.
pub fn start_gmetad(dir: &Path, name: &str, body: &str) -> Gmetad {
    let rrds = dir.join(format!("{name}-rrds"));
    std::fs::create_dir_all(&rrds).unwrap();
    let (xml_port, query_port) = (free_tcp_port(), free_tcp_port());
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "{body}\nxml_port {xml_port}\ninteractive_port {query_port}\nrrd_rootdir \"{}\"\nsetuid off\n",
            rrds.display()
        ),
    )
    .unwrap();
    let guard = ChildGuard::spawn(
        "gmetad",
        Command::new(require_binary("gmetad"))
            .args(["-d", "1", "-c"])
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let (xml, query) = (a(xml_port), a(query_port));
    wait_for_tcp(xml, Duration::from_secs(10));
    wait_for_tcp(query, Duration::from_secs(10));
    Gmetad {
        guard,
        xml,
        query,
        rrds,
    }
}

/// Keys and process limits for [`Aggregator::start_tuned`]: lines added to
/// the `[http]` and `[xml]` tables, top-level keys, trailing tables, the
/// HTTP listen host, and an optional `RLIMIT_NOFILE` (soft = hard) applied
/// with util-linux `prlimit` before the aggregator starts.
#[derive(Debug, Clone, Default)]
pub struct Tuning {
    /// TOML lines for `[http]`.
    pub http: String,
    /// TOML lines for `[xml]`.
    pub xml: String,
    /// Top-level TOML lines.
    pub top: String,
    /// Tables after `[xml]` and `[http]` (e.g. `[limits]`, `[storage]`).
    pub tables: String,
    /// Address the HTTP port binds (`127.0.0.1` when empty).
    pub http_host: String,
    /// `prlimit --nofile=N:N`.
    pub nofile: Option<u64>,
    /// Extra environment variables (e.g. a `PATH` with a stand-in program).
    pub env: Vec<(String, String)>,
}

impl Aggregator {
    /// Starts an aggregator with one cluster and the given [`Tuning`].
    pub fn start_tuned(cluster: &str, t: &Tuning) -> Aggregator {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rrds");
        let port = free_port_pair();
        let (dump, query, http) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
        let http_host = if t.http_host.is_empty() {
            "127.0.0.1"
        } else {
            t.http_host.as_str()
        };
        let cfg = format!(
            "{top}\ngrid_name = \"TestGrid\"\nauthority = \"http://test/\"\nrrd_root = \"{root}\"\n\
             [[cluster]]\nname = \"{cluster}\"\nudp_listen = \"127.0.0.1:{port}\"\n\
             xml_listen = \"127.0.0.1:{port}\"\nreverse_dns = false\n\
             [xml]\ndump_listen = \"127.0.0.1:{dump}\"\nquery_listen = \"127.0.0.1:{query}\"\n\
             client_timeout_secs = 5\n{xml}\n[http]\nlisten = \"{http_host}:{http}\"\n{http_keys}\n{tables}",
            top = t.top,
            root = root.display(),
            xml = t.xml,
            http_keys = t.http,
            tables = t.tables,
        );
        let path = dir.path().join("aggregator.toml");
        std::fs::write(&path, cfg).unwrap();
        let bin = workspace_bin("ganglion-aggregator");
        let mut cmd = match t.nofile {
            Some(n) => {
                let mut c = Command::new(require_binary("prlimit"));
                c.arg(format!("--nofile={n}:{n}")).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("--config").arg(&path).env("RUST_LOG", "warn");
        cmd.envs(t.env.iter().map(|(k, v)| (k, v)));
        Aggregator::spawn_ready(cmd, dir, root, [port, dump, query, http])
    }
}

/// A TCP connection to `to` from the loopback address `from` (any of
/// 127.0.0.0/8), so one test can act as many client addresses.
pub fn connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::from((from, 0)).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(s.into())
}

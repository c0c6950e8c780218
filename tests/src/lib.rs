//! Shared support for Ganglion's end-to-end and interop tests.
//!
//! Interop tests run the real Debian binaries (gmond, gmetad, gmetric, gstat,
//! rrdtool, rrdcached, xmllint, chromium). They **fail, never skip**, when a peer
//! is missing: the README's test command installs them, so a green run means
//! they ran. Every peer runs with its own config on free loopback ports and is
//! stopped by PID when its guard drops.

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

/// A free TCP port on 127.0.0.1 (bound then released; the race is acceptable in tests).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A port free for both TCP and UDP (gmond uses 8649 for both).
pub fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let p = free_tcp_port();
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no port free for both TCP and UDP");
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

//! Custom metrics beside gmond's built-in set: `[[script]]` entries (what
//! gmetric cron jobs did, as agent config) and `[[module]]` entries (gmond
//! Python metric modules, run through gmond's modpython protocol).
//!
//! Each entry runs on its own thread with its own sockets to the agent's
//! destinations, so a slow or hung script never delays the built-in
//! collection groups. Children run in their own process group and are
//! killed as a group (SIGTERM, then SIGKILL) at their timeout; whatever they
//! print on stderr is logged under the entry's name, capped; a module that
//! hangs or dies is restarted with exponential backoff. Values are sent as
//! gmetric sends them (metadata, then the value as a string), with the
//! agent's identity.

pub mod pymod;
pub mod script;

use crate::config::AgentConfig;
use crate::gmetric::{self, SendArgs};
use crate::send::{Channels, Identity, SendOpts};
use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A stop flag threads can sleep on.
#[derive(Default)]
pub struct Stopper {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl Stopper {
    /// Asks every waiting thread to stop.
    pub fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Sleeps up to `d`; true when stopping.
    pub fn wait(&self, d: Duration) -> bool {
        let g = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .cv
            .wait_timeout_while(g, d, |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }

    /// True when stopping.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One metric value produced by a script or module.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Metric name.
    pub name: String,
    /// Value, as text (gmetric sends every value as a string).
    pub value: String,
    /// gmetric type: string, int8 … uint32, float, double.
    pub type_name: String,
    /// Units.
    pub units: String,
    /// Slope name (both, zero, positive, …).
    pub slope: String,
    /// TMAX.
    pub tmax: u32,
    /// GROUP extra.
    pub group: String,
    /// DESC extra.
    pub desc: Option<String>,
    /// TITLE extra.
    pub title: Option<String>,
}

/// Turns readings into gmetric messages and sends them; metadata goes out the
/// first time a metric is seen, when it changes, and every `meta_interval`.
pub struct Emitter {
    ch: Channels,
    identity: Identity,
    meta_interval: Option<Duration>,
    sent_meta: HashMap<String, (Instant, Vec<u8>)>,
}

impl Emitter {
    fn new(
        dests: &[(SocketAddr, SendOpts)],
        identity: Identity,
        meta_interval: Option<Duration>,
    ) -> std::io::Result<Emitter> {
        Ok(Emitter {
            ch: Channels::open_with(dests.to_vec())?,
            identity,
            meta_interval,
            sent_meta: HashMap::new(),
        })
    }

    /// Sends one reading; an error says why it could not be sent (bad type,
    /// non-numeric value, too large).
    pub fn emit(&mut self, r: &Reading) -> Result<(), String> {
        let args = SendArgs {
            name: Some(r.name.clone()),
            value: Some(r.value.clone()),
            metric_type: Some(r.type_name.clone()),
            units: r.units.clone(),
            slope: r.slope.clone(),
            tmax: r.tmax,
            dmax: 0,
            group: Some(r.group.clone()),
            cluster: self.identity.cluster.clone(),
            desc: r.desc.clone(),
            title: r.title.clone(),
            spoof: self.identity.spoof.then(|| self.identity.host.clone()),
            heartbeat: false,
            send_to: Vec::new(),
        };
        let [meta, value] =
            gmetric::build(&args, &self.identity.host).map_err(|e| e.to_string())?;
        let meta_bytes =
            ganglion_proto::xdr::encode(&meta).map_err(|e| format!("too large: {e}"))?;
        let due = match self.sent_meta.get(&r.name) {
            None => true,
            Some((at, bytes)) => {
                *bytes != meta_bytes || self.meta_interval.is_some_and(|i| at.elapsed() >= i)
            }
        };
        if due {
            self.ch.send_encoded(&meta_bytes);
            self.sent_meta
                .insert(r.name.clone(), (Instant::now(), meta_bytes));
        }
        self.ch
            .send(&value)
            .map_err(|e| format!("too large: {e}"))?;
        Ok(())
    }
}

/// gmetric's type names; anything else is refused before sending.
pub const TYPES: &[&str] = &[
    "string", "int8", "uint8", "int16", "uint16", "int32", "uint32", "float", "double",
];

/// Starts a child in its own process group, stdin/stdout/stderr piped.
pub fn spawn_group(argv: &[String]) -> std::io::Result<Child> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty argv"))?;
    Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
}

/// SIGTERM to the child's group, then SIGKILL after `grace`; reaps the child.
pub fn kill_group(child: &mut Child, grace: Duration) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    let Ok(raw) = i32::try_from(child.id()) else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    let pg = Pid::from_raw(raw);
    let _ = killpg(pg, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            // The leader is gone; its group may not be.
            let _ = killpg(pg, Signal::SIGKILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(pg, Signal::SIGKILL);
    let _ = child.wait();
}

/// Reads a pipe to its end on a thread, keeping at most `cap` bytes (the
/// rest is read and dropped, so the child never blocks on a full pipe).
pub fn capped_reader<R: Read + Send + 'static>(
    mut r: R,
    cap: usize,
) -> std::thread::JoinHandle<(Vec<u8>, bool)> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut truncated = false;
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = cap.saturating_sub(kept.len());
                    if n > room {
                        truncated = true;
                    }
                    kept.extend_from_slice(buf.get(..n.min(room)).unwrap_or_default());
                }
            }
        }
        (kept, truncated)
    })
}

/// The running custom-metric threads; stopping them kills their children.
pub struct Custom {
    stopper: Arc<Stopper>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Custom {
    /// Stops every thread (children killed) and waits for them.
    fn drop(&mut self) {
        self.stopper.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Starts a thread per `[[script]]` and `[[module]]`.
pub fn start(
    config: &AgentConfig,
    dests: &[(SocketAddr, SendOpts)],
    identity: &Identity,
) -> std::io::Result<Custom> {
    let stopper = Arc::new(Stopper::default());
    let meta_interval = (config.send_metadata_interval_secs > 0)
        .then(|| Duration::from_secs(u64::from(config.send_metadata_interval_secs)));
    let mut threads = Vec::new();
    for (i, s) in config.script.iter().enumerate() {
        let em = Emitter::new(dests, identity.clone(), meta_interval)?;
        let (s, st) = (s.clone(), stopper.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("script-{i}"))
                .spawn(move || script::run(&s, em, &st))?,
        );
    }
    for (i, m) in config.module.iter().enumerate() {
        let em = Emitter::new(dests, identity.clone(), meta_interval)?;
        let (m, st) = (m.clone(), stopper.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("module-{i}"))
                .spawn(move || pymod::run(&m, em, &st))?,
        );
    }
    Ok(Custom { stopper, threads })
}

/// Logs a child's stderr, capped in lines and length.
pub fn log_stderr(what: &str, name: &str, stderr: &[u8]) {
    let text = String::from_utf8_lossy(stderr);
    for line in text.lines().filter(|l| !l.trim().is_empty()).take(20) {
        let line: String = line.chars().take(500).collect();
        tracing::warn!(kind = what, name, stderr = %line, "custom metric stderr");
    }
}

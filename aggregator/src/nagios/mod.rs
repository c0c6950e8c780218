//! Nagios both ways, the aggregator's side: passive results into Nagios'
//! (or Icinga's) external command file, and [`objects`], the Nagios object
//! definitions `ganglion-aggregator nagios-config` prints.
//!
//! The sink sends `PROCESS_HOST_CHECK_RESULT` for every host's liveness and
//! `PROCESS_SERVICE_CHECK_RESULT` for every rule target: each change at once
//! (from [`Alerts::subscribe`]) and everything again every
//! `nagios.resend_secs` (from [`Alerts::health`]), which keeps Nagios'
//! freshness checks quiet and repairs whatever a Nagios restart lost.
//! Nothing is sent while the engine warms up.
//!
//! Writing never blocks anything else: lines go through a bounded queue
//! (`nagios.queue_max_lines`; full = dropped and counted) to one writer
//! thread, which opens the file `O_WRONLY|O_NONBLOCK` and writes each line
//! with one `write` (≤ `PIPE_BUF` bytes, so lines of other writers never
//! interleave). A FIFO without a reader answers `ENXIO`: Nagios is not
//! running; that is counted, logged at most once a minute, and the lines are
//! dropped — the next full resend brings Nagios up to date. A full pipe
//! (`EAGAIN`) drops the line, counted.

pub mod icinga2;
pub mod objects;

use crate::alerts::{Alerts, Event, EventKind, HealthSnapshot};
use crate::config::alerts::{Aggregate, AlertRule};
use crate::config::nagios::NagiosConfig;
use crate::diag::{self, Diag, Event as DiagEvent, Level, LogAs};
use crate::handlers::Pattern;
use crate::state::{Snapshot, State};
use crate::telemetry::LabelledCounter;
use std::collections::HashSet;
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Longest line written: Linux's `PIPE_BUF`, the size a FIFO writes
/// atomically (Nagios itself takes up to 8192).
pub const MAX_LINE_BYTES: usize = 4096;

struct SinkCounters {
    written: AtomicU64,
    not_running: AtomicU64,
    pipe_full: AtomicU64,
    queue_full: AtomicU64,
    unrepresentable: AtomicU64,
    error: AtomicU64,
}

static COUNTERS: SinkCounters = SinkCounters {
    written: AtomicU64::new(0),
    not_running: AtomicU64::new(0),
    pipe_full: AtomicU64::new(0),
    queue_full: AtomicU64::new(0),
    unrepresentable: AtomicU64::new(0),
    error: AtomicU64::new(0),
};

/// `ganglion_nagios_results_total{result}` and
/// `ganglion_icinga2_results_total{result}` for `/metrics`.
pub fn metrics() -> Vec<LabelledCounter> {
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let c = &COUNTERS;
    vec![
        icinga2::metrics(),
        (
            "ganglion_nagios_results_total",
            "Passive results for nagios.command_file by outcome (all but written were dropped)",
            "result",
            vec![
                ("written", g(&c.written)),
                ("not_running", g(&c.not_running)),
                ("pipe_full", g(&c.pipe_full)),
                ("queue_full", g(&c.queue_full)),
                ("unrepresentable", g(&c.unrepresentable)),
                ("error", g(&c.error)),
            ],
        ),
    ]
}

/// Escapes plugin output for one command line: Nagios turns `\n` and `\\`
/// back into a newline and a backslash; other control characters become
/// spaces. The text is cut (at a character boundary) to `max` bytes.
pub fn escape_output(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let piece: &str = match c {
            '\n' => "\\n",
            '\\' => "\\\\",
            c if c.is_control() => " ",
            _ => {
                if out.len() + c.len_utf8() > max {
                    break;
                }
                out.push(c);
                continue;
            }
        };
        if out.len() + piece.len() > max {
            break;
        }
        out.push_str(piece);
    }
    out
}

/// A name usable as a command field: no `;` (the separator) and no control
/// characters.
fn field_ok(s: &str) -> bool {
    !s.is_empty() && !s.contains(';') && !s.chars().any(char::is_control)
}

fn finish(prefix: String, output: &str) -> Option<String> {
    let room = MAX_LINE_BYTES.checked_sub(prefix.len() + 1)?;
    let mut line = prefix;
    line.push_str(&escape_output(output, room));
    line.push('\n');
    Some(line)
}

/// `[time] PROCESS_HOST_CHECK_RESULT;host;0|1;output`; `None` when the
/// name cannot be written as a field.
pub fn host_line(time: i64, host: &str, up: bool, output: &str) -> Option<String> {
    if !field_ok(host) {
        return None;
    }
    finish(
        format!(
            "[{time}] PROCESS_HOST_CHECK_RESULT;{host};{};",
            u8::from(!up)
        ),
        output,
    )
}

/// `[time] PROCESS_SERVICE_CHECK_RESULT;host;service;code;output|perfdata`.
pub fn service_line(
    time: i64,
    host: &str,
    service: &str,
    code: u8,
    output: &str,
    perfdata: &str,
) -> Option<String> {
    if !field_ok(host) || !field_ok(service) {
        return None;
    }
    let text = if perfdata.is_empty() {
        output.replace('|', "/")
    } else {
        format!("{}|{perfdata}", output.replace('|', "/"))
    };
    finish(
        format!("[{time}] PROCESS_SERVICE_CHECK_RESULT;{host};{service};{code};"),
        &text,
    )
}

fn state_code(state: &str) -> u8 {
    ganglion_proto::range::Status::from_name(state).map_or(3, |s| s.code())
}

/// One passive result, for the command file or Icinga 2.
#[derive(Debug, Clone, PartialEq)]
pub struct Passive {
    /// Check time (unix seconds).
    pub time: i64,
    /// Host name.
    pub host: String,
    /// Service description; `None` for the host's own result.
    pub service: Option<String>,
    /// 0..3 for a service; 0 (UP) or 1 (DOWN) for a host.
    pub code: u8,
    /// Plugin output.
    pub output: String,
    /// Performance data (services).
    pub perfdata: String,
}

impl Passive {
    /// The external command line; `None` (counted) when a name cannot be a
    /// field.
    pub fn line(&self) -> Option<String> {
        let l = match &self.service {
            None => host_line(self.time, &self.host, self.code == 0, &self.output),
            Some(svc) => service_line(
                self.time,
                &self.host,
                svc,
                self.code,
                &self.output,
                &self.perfdata,
            ),
        };
        if l.is_none() {
            COUNTERS.unrepresentable.fetch_add(1, Ordering::Relaxed);
        }
        l
    }
}

/// Every host and every listed rule target in `h`.
pub fn health_results(h: &HealthSnapshot) -> Vec<Passive> {
    let mut out = Vec::with_capacity(h.hosts.len() + h.services.len());
    for x in &h.hosts {
        out.push(Passive {
            time: h.time,
            host: x.host.clone(),
            service: None,
            code: u8::from(!x.up),
            output: x.output.clone(),
            perfdata: String::new(),
        });
    }
    for s in &h.services {
        out.push(Passive {
            time: h.time,
            host: s.host.clone(),
            service: Some(s.rule.clone()),
            code: s.state.code(),
            output: s.output.clone(),
            perfdata: s.perfdata.clone(),
        });
    }
    out
}

/// The lines for every host and rule target in `h`.
pub fn health_lines(h: &HealthSnapshot) -> Vec<String> {
    health_results(h).iter().filter_map(Passive::line).collect()
}

/// An `[[alert]]` rule with its globs compiled.
pub struct RuleGlobs {
    /// The rule.
    pub rule: AlertRule,
    cluster: Pattern,
    hosts: Pattern,
}

impl RuleGlobs {
    /// Compiles `rule`'s globs.
    pub fn new(rule: &AlertRule) -> RuleGlobs {
        RuleGlobs {
            cluster: Pattern::new(rule.cluster_glob()),
            hosts: Pattern::new(rule.hosts_glob()),
            rule: rule.clone(),
        }
    }
}

/// OK results for the rule targets the health snapshot leaves out (it
/// lists only targets that are not OK/HARD): every host-scope rule on every
/// alive host it matches that has the metric, and every cluster rule on
/// every cluster it matches. Nagios' freshness checks need a result for
/// every service, OK ones included.
pub fn ok_results(snap: &Snapshot, rules: &[RuleGlobs], h: &HealthSnapshot) -> Vec<Passive> {
    let listed: HashSet<(&str, &str)> = h
        .services
        .iter()
        .map(|s| (s.host.as_str(), s.rule.as_str()))
        .collect();
    let mut out = Vec::new();
    for c in &snap.clusters {
        let rules: Vec<&RuleGlobs> = rules
            .iter()
            .filter(|r| r.cluster.is_match(&c.name))
            .collect();
        for r in rules.iter().map(|g| &g.rule) {
            if r.aggregate != Aggregate::None
                && !listed.contains(&(c.name.as_str(), r.name.as_str()))
            {
                out.push(Passive {
                    time: h.time,
                    host: c.name.clone(),
                    service: Some(r.name.clone()),
                    code: 0,
                    output: format!("{} of cluster {} is OK", r.aggregate.as_str(), c.name),
                    perfdata: String::new(),
                });
            }
        }
        for host in c.hosts.iter().filter(|x| x.alive) {
            for g in rules.iter().filter(|g| g.rule.aggregate == Aggregate::None) {
                let r = &g.rule;
                if listed.contains(&(host.name.as_str(), r.name.as_str()))
                    || !g.hosts.is_match(&host.name)
                {
                    continue;
                }
                let Some(m) = host.metrics.iter().find(|m| *m.name == *r.metric) else {
                    continue;
                };
                let units = m.units.trim();
                let text = if units.is_empty() {
                    format!("{} = {}", r.metric, m.val)
                } else {
                    format!("{} = {} {units}", r.metric, m.val)
                };
                let perf = m
                    .number
                    .filter(|v| v.is_finite())
                    .map(|v| {
                        let range = |x: Option<ganglion_proto::range::Range>| {
                            x.map(|x| x.to_string()).unwrap_or_default()
                        };
                        format!(
                            "{}={v};{};{}",
                            ganglion_nagios::perfdata::label(&r.metric),
                            range(r.warning_range()),
                            range(r.critical_range())
                        )
                    })
                    .unwrap_or_default();
                out.push(Passive {
                    time: h.time,
                    host: host.name.clone(),
                    service: Some(r.name.clone()),
                    code: 0,
                    output: text,
                    perfdata: perf,
                });
            }
        }
    }
    out
}

/// [`ok_results`] as command lines.
pub fn ok_lines(snap: &Snapshot, rules: &[RuleGlobs], h: &HealthSnapshot) -> Vec<String> {
    ok_results(snap, rules, h)
        .iter()
        .filter_map(Passive::line)
        .collect()
}

/// The result for one state-change event, when it is a host's or a rule
/// target's (a cluster rule's target is the host named after its cluster;
/// cluster incidents and handler runs have no Nagios object).
pub fn event_result(e: &Event) -> Option<Passive> {
    let (host, service, code) = match e.kind {
        EventKind::HostDown | EventKind::HostUp => {
            (e.host.clone()?, None, u8::from(e.state != "UP"))
        }
        EventKind::Alert | EventKind::Recovery | EventKind::FlapStart | EventKind::FlapStop => (
            e.host.clone().unwrap_or_else(|| e.cluster.clone()),
            Some(e.rule.clone()?),
            state_code(&e.state),
        ),
        _ => return None,
    };
    Some(Passive {
        time: e.time,
        host,
        service,
        code,
        output: e.output.clone(),
        perfdata: String::new(),
    })
}

/// [`event_result`] as a command line.
pub fn event_line(e: &Event) -> Option<String> {
    event_result(e)?.line()
}

/// A queue between the async side and a writer thread.
pub(crate) struct Queue<T> {
    items: Mutex<(VecDeque<T>, bool)>,
    ready: Condvar,
    max: usize,
    full: &'static AtomicU64,
}

impl<T> Queue<T> {
    pub(crate) fn new(max: usize, full: &'static AtomicU64) -> Arc<Queue<T>> {
        Arc::new(Queue {
            items: Mutex::new((VecDeque::new(), false)),
            ready: Condvar::new(),
            max,
            full,
        })
    }

    pub(crate) fn push(&self, items: impl IntoIterator<Item = T>) {
        let mut q = self.items.lock().unwrap_or_else(|p| p.into_inner());
        for l in items {
            if q.0.len() >= self.max {
                self.full.fetch_add(1, Ordering::Relaxed);
            } else {
                q.0.push_back(l);
            }
        }
        self.ready.notify_one();
    }

    pub(crate) fn close(&self) {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.ready.notify_one();
    }

    /// Waits for items; `None` once closed and empty.
    pub(crate) fn take(&self) -> Option<Vec<T>> {
        let mut q = self.items.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if !q.0.is_empty() {
                return Some(q.0.drain(..).collect());
            }
            if q.1 {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Writes lines to the command file; keeps it open between batches and
/// opens it again after any error.
struct Writer {
    path: PathBuf,
    file: Option<std::fs::File>,
    diag: Diag<&'static str>,
}

impl Writer {
    fn open(path: &Path) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
    }

    fn write_all(&mut self, lines: Vec<String>) {
        let total = lines.len() as u64;
        for (i, line) in lines.iter().enumerate() {
            if self.file.is_none() {
                match Self::open(&self.path) {
                    Ok(f) => self.file = Some(f),
                    Err(e) => {
                        let dropped = total - i as u64;
                        let (file, error) = (self.path.as_path(), &e);
                        if matches!(e.raw_os_error(), Some(libc::ENXIO) | Some(libc::ENOENT)) {
                            self.diag.emit(
                                NotRunning {
                                    file,
                                    error,
                                    dropped,
                                },
                                &COUNTERS,
                            );
                        } else {
                            self.diag.emit(
                                OpenFailed {
                                    file,
                                    error,
                                    dropped,
                                },
                                &COUNTERS,
                            );
                        }
                        return;
                    }
                }
            }
            let Some(f) = self.file.as_mut() else { return };
            match f.write(line.as_bytes()) {
                Ok(n) if n == line.len() => {
                    COUNTERS.written.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {
                    // Only a regular file can take part of a line; finish it
                    // so the next line starts on its own.
                    COUNTERS.error.fetch_add(1, Ordering::Relaxed);
                    let _ = f.write_all(b"\n");
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.diag.emit(PipeFull { file: &self.path }, &COUNTERS);
                }
                Err(e) => {
                    // EPIPE: Nagios went away; open again for the next line.
                    self.file = None;
                    self.diag.emit(
                        WriteFailed {
                            file: &self.path,
                            error: &e,
                        },
                        &COUNTERS,
                    );
                }
            }
        }
    }
}

// Internal events of the command-file sink (see `diag`), counted in
// `ganglion_nagios_results_total{result}` and logged once a minute each.

/// The command file has no reader (`ENXIO`) or does not exist: Nagios is
/// not running; the rest of the batch is dropped.
struct NotRunning<'a> {
    file: &'a Path,
    error: &'a std::io::Error,
    dropped: u64,
}

impl DiagEvent for NotRunning<'_> {
    type Counters = SinkCounters;
    type Key = &'static str;
    const LEVEL: Level = Level::WARN;
    fn count(&self, c: &SinkCounters) {
        c.not_running.fetch_add(self.dropped, Ordering::Relaxed);
    }
    fn log_as(&self) -> LogAs<&'static str> {
        LogAs::PerKey("not running")
    }
    fn log(&self, _: &SinkCounters) {
        diag::line!(Self::LEVEL, file = %self.file.display(),
            "Nagios is not running ({}): {} passive results dropped; they are sent again every nagios.resend_secs (logged once a minute)",
            self.error, self.dropped);
    }
}

/// The command file cannot be opened for another reason.
struct OpenFailed<'a> {
    file: &'a Path,
    error: &'a std::io::Error,
    dropped: u64,
}

impl DiagEvent for OpenFailed<'_> {
    type Counters = SinkCounters;
    type Key = &'static str;
    const LEVEL: Level = Level::ERROR;
    fn count(&self, c: &SinkCounters) {
        c.error.fetch_add(self.dropped, Ordering::Relaxed);
    }
    fn log_as(&self) -> LogAs<&'static str> {
        LogAs::PerKey("open")
    }
    fn log(&self, _: &SinkCounters) {
        diag::line!(Self::LEVEL, file = %self.file.display(),
            "cannot open nagios.command_file: {}; {} passive results dropped (logged once a minute)",
            self.error, self.dropped);
    }
}

/// Nagios' pipe is full (`EAGAIN`): the line is dropped.
struct PipeFull<'a> {
    file: &'a Path,
}

impl DiagEvent for PipeFull<'_> {
    type Counters = SinkCounters;
    type Key = &'static str;
    const LEVEL: Level = Level::WARN;
    fn count(&self, c: &SinkCounters) {
        diag::inc(&c.pipe_full);
    }
    fn log_as(&self) -> LogAs<&'static str> {
        LogAs::PerKey("full")
    }
    fn log(&self, _: &SinkCounters) {
        diag::line!(Self::LEVEL, file = %self.file.display(),
            "Nagios' command pipe is full: passive results dropped (counted in ganglion_nagios_results_total{{result=\"pipe_full\"}}, logged once a minute)");
    }
}

/// A write failed: `EPIPE` (Nagios went away, counted `not_running`) or
/// another error.
struct WriteFailed<'a> {
    file: &'a Path,
    error: &'a std::io::Error,
}

impl DiagEvent for WriteFailed<'_> {
    type Counters = SinkCounters;
    type Key = &'static str;
    const LEVEL: Level = Level::WARN;
    fn count(&self, c: &SinkCounters) {
        if self.error.kind() == std::io::ErrorKind::BrokenPipe {
            diag::inc(&c.not_running);
        } else {
            diag::inc(&c.error);
        }
    }
    fn log_as(&self) -> LogAs<&'static str> {
        LogAs::PerKey("write")
    }
    fn log(&self, _: &SinkCounters) {
        diag::line!(Self::LEVEL, file = %self.file.display(),
            "writing a passive result failed: {} (logged once a minute)", self.error);
    }
}

/// Starts the sinks configured (`nagios.command_file`, `nagios.icinga2_url`):
/// the async task that turns events and health into results, and one
/// writer thread per destination.
pub fn start(
    cfg: &NagiosConfig,
    rules: Vec<AlertRule>,
    state: Arc<State>,
    alerts: Alerts,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let mut queues: Vec<Arc<Queue<Passive>>> = Vec::new();
    if let Some(path) = cfg.command_file.clone() {
        let q = Queue::new(cfg.queue_max_lines, &COUNTERS.queue_full);
        let mut writer = Writer {
            path: path.clone(),
            file: None,
            diag: Diag::with_capacity(Duration::from_secs(60), 16),
        };
        let qt = q.clone();
        std::thread::Builder::new()
            .name("nagios-sink".into())
            .spawn(move || {
                while let Some(results) = qt.take() {
                    writer.write_all(results.iter().filter_map(Passive::line).collect());
                }
            })
            .map_err(|e| anyhow::anyhow!("cannot start the Nagios sink thread: {e}"))?;
        tracing::info!(file = %path.display(), "sending passive results to Nagios");
        queues.push(q);
    }
    if let Some(q) = icinga2::start(cfg)? {
        queues.push(q);
    }
    if queues.is_empty() {
        return Ok(None);
    }
    let rules: Vec<RuleGlobs> = rules.iter().map(RuleGlobs::new).collect();
    let resend = Duration::from_secs(u64::from(cfg.resend_secs));
    let mut rx = alerts.subscribe();
    let closers = queues.clone();
    let send = move |results: Vec<Passive>| {
        for q in &queues {
            q.push(results.iter().cloned());
        }
    };
    Ok(Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(resend);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    let h = alerts.health();
                    if !h.warming_up && h.time > 0 {
                        let mut results = health_results(&h);
                        results.extend(ok_results(&state.snapshot(crate::state::now_secs()), &rules, &h));
                        send(results);
                    }
                }
                r = rx.recv() => match r {
                    Ok(e) => {
                        if let Some(p) = event_result(&e) {
                            send(vec![p]);
                        }
                    }
                    // Missed changes: the full state goes out now instead.
                    Err(RecvError::Lagged(_)) => {
                        let h = alerts.health();
                        if !h.warming_up {
                            send(health_results(&h));
                        }
                    }
                    Err(RecvError::Closed) => break,
                },
            }
        }
        for q in &closers {
            q.close();
        }
    })))
}

#[cfg(test)]
mod tests;

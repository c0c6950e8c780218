//! `[[handler]]`: programs run when an alert event matches, Nagios' event
//! handlers without their blind spots.
//!
//! One task follows [`Alerts::subscribe`]; each matching (event, handler)
//! pair becomes its own task, so a handler that hangs holds only its own
//! target and one of `handlers.max_running` slots — never ingest, storage,
//! the event stream or other handlers. A run:
//!
//! - is refused, and the refusal recorded as an event with its reason, when a
//!   run for the same target (handler + cluster + host) is still going, when
//!   the target used up `rate_limit_runs` in the last `rate_limit_window_secs`,
//!   or when `handlers.max_waiting` runs already wait for a slot;
//! - runs `argv` directly (no shell unless argv names one), placeholders such
//!   as `{host}` expanded and each also exported as `GANGLION_HOST` etc., in
//!   its own process group, stdin from `/dev/null`;
//! - gets SIGTERM on its process group at `timeout_secs` and SIGKILL
//!   `kill_grace_secs` later;
//! - is recorded through [`Alerts::record`] as a `handler_run` event, success
//!   or failure: argv, exit code or signal, duration, stdout and stderr (each
//!   capped at `handlers.max_output_bytes`, truncation flagged), timeout,
//!   spawn error. Output that a background child keeps open after the
//!   handler exits is read for [`DRAIN_AFTER_EXIT`] more, then left;
//! - at shutdown, gets SIGTERM on its process group, SIGKILL after its
//!   `kill_grace_secs` (at most [`SHUTDOWN_GRACE`]), and is recorded with
//!   `error = "aggregator shutting down"` and its output so far: the alerts
//!   store stays open until every run is recorded ([`Alerts::run_guard`]).
//!   Runs still waiting for a slot are recorded as not run.

use crate::alerts::{Alerts, Event, EventKind, HandlerRun, StateType};
use crate::config::nagios::{HandlerConfig, HandlersConfig};
use crate::diag::{self, Diag, Event as DiagEvent, Level, LogAs};
use crate::telemetry::LabelledCounter;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// How long output is still read after the handler itself exited (a child
/// it started in the background may hold the pipes open for good).
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// At shutdown, the longest a run gets between SIGTERM and SIGKILL (its
/// `kill_grace_secs` when shorter): every run gets its signals at once, so
/// this bounds the whole wait.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The `error` of a run stopped because the aggregator shut down.
pub const SHUTTING_DOWN: &str = "aggregator shutting down";

/// Counters for `/metrics` (process-wide: one runner per aggregator).
#[derive(Debug, Default)]
pub struct HandlerCounters {
    ok: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    spawn_error: AtomicU64,
    refused_busy: AtomicU64,
    refused_rate: AtomicU64,
    refused_queue: AtomicU64,
    lagged: AtomicU64,
    shutdown: AtomicU64,
}

static COUNTERS: HandlerCounters = HandlerCounters {
    ok: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    timed_out: AtomicU64::new(0),
    spawn_error: AtomicU64::new(0),
    refused_busy: AtomicU64::new(0),
    refused_rate: AtomicU64::new(0),
    refused_queue: AtomicU64::new(0),
    lagged: AtomicU64::new(0),
    shutdown: AtomicU64::new(0),
};

/// `ganglion_handler_runs_total{result}` for `/metrics`.
pub fn metrics() -> Vec<LabelledCounter> {
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let c = &COUNTERS;
    vec![(
        "ganglion_handler_runs_total",
        "[[handler]] runs by result (refused_* were not started; lagged = events the dispatcher missed; shutdown = stopped or not started because the aggregator shut down)",
        "result",
        vec![
            ("ok", g(&c.ok)),
            ("failed", g(&c.failed)),
            ("timed_out", g(&c.timed_out)),
            ("spawn_error", g(&c.spawn_error)),
            ("refused_busy", g(&c.refused_busy)),
            ("refused_rate", g(&c.refused_rate)),
            ("refused_queue", g(&c.refused_queue)),
            ("lagged", g(&c.lagged)),
            ("shutdown", g(&c.shutdown)),
        ],
    )]
}

/// A glob as `[[alert]]` rules use them (globset: `*`, `?`, `[…]`,
/// `{a,b}`), compiled once. A pattern that does not compile matches nothing
/// (the config is validated, so that does not happen).
#[derive(Debug, Clone)]
pub struct Pattern(Option<globset::GlobMatcher>, bool);

impl Pattern {
    /// Compiles `pattern`; `*` matches everything without a matcher.
    pub fn new(pattern: &str) -> Pattern {
        if pattern == "*" {
            return Pattern(None, true);
        }
        Pattern(
            globset::Glob::new(pattern)
                .ok()
                .map(|g| g.compile_matcher()),
            false,
        )
    }

    /// Matches everything (`*`).
    pub fn is_any(&self) -> bool {
        self.1
    }

    /// Does `text` match?
    pub fn is_match(&self, text: &str) -> bool {
        self.1 || self.0.as_ref().is_some_and(|m| m.is_match(text))
    }
}

/// [`Pattern::new`]`(pattern).is_match(text)`, for one-off matches.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    Pattern::new(pattern).is_match(text)
}

/// A `[[handler]]` with its globs compiled.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The config.
    pub cfg: HandlerConfig,
    cluster: Pattern,
    hosts: Pattern,
    rules: Pattern,
}

impl Compiled {
    /// Compiles `cfg`'s globs.
    pub fn new(cfg: &HandlerConfig) -> Compiled {
        Compiled {
            cluster: Pattern::new(&cfg.cluster),
            hosts: Pattern::new(&cfg.hosts),
            rules: Pattern::new(&cfg.rules),
            cfg: cfg.clone(),
        }
    }

    /// Does this handler run for `ev`?
    pub fn matches(&self, ev: &Event) -> bool {
        let h = &self.cfg;
        let Some(kind) = on_name(ev.kind) else {
            return false;
        };
        let opt = |p: &Pattern, v: &Option<String>| match v {
            Some(v) => p.is_match(v),
            None => p.is_any(),
        };
        h.on.iter().any(|o| o == kind)
            && self.cluster.is_match(&ev.cluster)
            && opt(&self.hosts, &ev.host)
            && opt(&self.rules, &ev.rule)
            && (h.states.is_empty() || h.states.contains(&ev.state))
            && (h.state_types.is_empty()
                || h.state_types.iter().any(|s| s == ev.state_type.as_str()))
    }
}

/// The `[[handler]] on` name an event kind answers to.
fn on_name(k: EventKind) -> Option<&'static str> {
    match k {
        EventKind::FlapStart | EventKind::FlapStop => Some("flap"),
        EventKind::HandlerRun => None,
        k => Some(k.as_str()),
    }
}

/// Does `h` run for `ev`? (Compiles its globs; the runner keeps them
/// compiled in [`Compiled`].)
pub fn matches(h: &HandlerConfig, ev: &Event) -> bool {
    Compiled::new(h).matches(ev)
}

/// The value of placeholder `name` for `ev` run by handler `handler`.
fn placeholder(name: &str, handler: &str, ev: &Event) -> String {
    match name {
        "host" => ev.host.clone().unwrap_or_default(),
        "cluster" => ev.cluster.clone(),
        "state" => ev.state.clone(),
        "state_type" => ev.state_type.as_str().into(),
        "attempt" => ev.attempt.to_string(),
        "max_attempts" => ev.max_attempts.to_string(),
        "rule" => ev.rule.clone().unwrap_or_default(),
        "metric" => ev.metric.clone().unwrap_or_default(),
        "value" => ev.value.map(|v| v.to_string()).unwrap_or_default(),
        "output" => ev.output.clone(),
        "kind" => ev.kind.as_str().into(),
        "time" => ev.time.to_string(),
        "event_id" => ev.id.to_string(),
        "handler" => handler.into(),
        _ => String::new(),
    }
}

/// Expands `{name}` placeholders (`{{`, `}}` are literal braces). The
/// config is validated, so an unknown name cannot occur; it expands to "".
pub fn expand(template: &str, handler: &str, ev: &Event) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if let (true, Some(end)) = (tail.starts_with('{'), tail.find('}')) {
            out.push_str(&placeholder(&tail[1..end], handler, ev));
            rest = &tail[end + 1..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// `GANGLION_<NAME>` for every placeholder.
pub fn environment(handler: &str, ev: &Event) -> Vec<(String, String)> {
    crate::config::nagios::PLACEHOLDERS
        .iter()
        .map(|p| {
            (
                format!("GANGLION_{}", p.to_ascii_uppercase()),
                placeholder(p, handler, ev),
            )
        })
        .collect()
}

/// Why a run cannot start when an argument or `GANGLION_*` value holds a
/// NUL byte (a host or metric name from the network can): exec cannot pass
/// one, and cutting the value there would hand the handler another name.
/// The run is recorded with this as its error instead.
pub fn nul_in(argv: &[String], env: &[(String, String)]) -> Option<String> {
    if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
        return Some(format!(
            "not started: argument {i} holds a NUL byte (from a placeholder)"
        ));
    }
    env.iter()
        .find(|(_, v)| v.contains('\0'))
        .map(|(k, _)| format!("not started: {k} holds a NUL byte"))
}

type Target = (usize, String, String);

struct Runner {
    handlers: Vec<Compiled>,
    alerts: Alerts,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_output: usize,
    busy: Mutex<HashSet<Target>>,
    rates: Mutex<HashMap<Target, VecDeque<Instant>>>,
    /// Lines of its internal events, once a minute per handler.
    diag: Diag<String>,
    /// The aggregator's shutdown (not the dispatcher's stop: a reload
    /// replaces the dispatcher and lets its runs finish).
    shutdown: CancellationToken,
}

/// Releases a target when its run ends, however it ends.
struct BusyGuard<'a> {
    runner: &'a Runner,
    target: Target,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.runner
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.target);
    }
}

/// Starts the dispatcher (a no-op when no handler is configured). Returns
/// the task's handle.
pub fn start(
    handlers: &[HandlerConfig],
    limits: &HandlersConfig,
    alerts: Alerts,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    start_with_stop(handlers, limits, alerts, shutdown.clone(), shutdown)
}

/// As [`start`], the dispatcher ending at `stop` (a reload replacing it)
/// while its runs end only at `shutdown`.
pub fn start_with_stop(
    handlers: &[HandlerConfig],
    limits: &HandlersConfig,
    alerts: Alerts,
    stop: CancellationToken,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if handlers.is_empty() {
        return None;
    }
    let runner = Arc::new(Runner {
        handlers: handlers.iter().map(Compiled::new).collect(),
        alerts,
        slots: Arc::new(Semaphore::new(limits.max_running)),
        waiting: AtomicUsize::new(0),
        max_waiting: limits.max_waiting,
        max_output: limits.max_output_bytes,
        busy: Mutex::new(HashSet::new()),
        rates: Mutex::new(HashMap::new()),
        diag: Diag::with_capacity(Duration::from_secs(60), 1000),
        shutdown,
    });
    let mut rx = runner.alerts.subscribe();
    Some(tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                r = rx.recv() => r,
            };
            match ev {
                Ok(ev) => {
                    for i in 0..runner.handlers.len() {
                        if runner.handlers[i].matches(&ev) {
                            let (r, ev) = (runner.clone(), ev.clone());
                            // Taken before the task starts: until this run
                            // is recorded, the store stays open at shutdown.
                            let going = r.alerts.run_guard();
                            tokio::spawn(async move {
                                r.run(i, &ev).await;
                                drop(going);
                            });
                        }
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    runner.diag.emit(Lagged { missed: n }, &COUNTERS);
                }
                Err(RecvError::Closed) => return,
            }
        }
    }))
}

/// What [`Runner::execute`] found.
#[derive(Default)]
struct Outcome {
    exit_code: Option<i32>,
    signal: Option<i32>,
    stdout: Capture,
    stderr: Capture,
    timed_out: bool,
    /// Stopped because the aggregator shut down.
    shut_down: bool,
    error: Option<String>,
}

#[derive(Default, Clone)]
struct Capture {
    data: Vec<u8>,
    truncated: bool,
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

impl Runner {
    async fn run(&self, i: usize, ev: &Event) {
        let h = &self.handlers[i].cfg;
        let target: Target = (i, ev.cluster.clone(), ev.host.clone().unwrap_or_default());
        let who = format!(
            "{} for {}{}",
            h.name,
            ev.cluster,
            ev.host
                .as_ref()
                .map(|x| format!("/{x}"))
                .unwrap_or_default()
        );
        // One run per target at a time.
        if !self
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target.clone())
        {
            return self.refuse(
                i,
                ev,
                Refusal::Busy,
                format!("not run: the previous run of {who} is still going (one run per target at a time)"),
            );
        }
        let _busy = BusyGuard {
            runner: self,
            target: target.clone(),
        };
        // Rate limit per target.
        {
            let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
            let window = Duration::from_secs(u64::from(h.rate_limit_window_secs));
            let now = Instant::now();
            let q = rates.entry(target.clone()).or_default();
            while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
                q.pop_front();
            }
            if q.len() >= h.rate_limit_runs as usize {
                drop(rates);
                return self.refuse(
                    i,
                    ev,
                    Refusal::Rate,
                    format!(
                        "not run: rate limit of {who}: {} runs in the last {} s (handler[{i}].rate_limit_runs, rate_limit_window_secs)",
                        h.rate_limit_runs, h.rate_limit_window_secs
                    ),
                );
            }
            q.push_back(now);
            // Targets idle for a whole window (their handler's) are forgotten.
            if rates.len() > 1024 {
                let window_of = |t: &Target| {
                    Duration::from_secs(u64::from(self.handlers[t.0].cfg.rate_limit_window_secs))
                };
                rates.retain(|t, q| {
                    q.back()
                        .is_some_and(|at| now.duration_since(*at) < window_of(t))
                });
            }
        }
        // A slot among handlers.max_running, at once or after a wait among
        // at most handlers.max_waiting others.
        let _permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    // Not run, so not counted against the target's rate.
                    if let Some(q) = self
                        .rates
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_mut(&target)
                    {
                        q.pop_back();
                    }
                    return self.refuse(
                        i,
                        ev,
                        Refusal::Queue,
                        format!(
                            "not run: all handlers.max_running slots are busy and {} runs already wait (handlers.max_waiting)",
                            self.max_waiting
                        ),
                    );
                }
                let p = tokio::select! {
                    p = self.slots.clone().acquire_owned() => Some(p),
                    _ = self.shutdown.cancelled() => None,
                };
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                match p {
                    Some(Ok(p)) => p,
                    Some(Err(_)) => return,
                    None => {
                        return self.refuse(
                            i,
                            ev,
                            Refusal::Shutdown,
                            format!("not run: {SHUTTING_DOWN}"),
                        );
                    }
                }
            }
        };
        let argv: Vec<String> = h.argv.iter().map(|a| expand(a, &h.name, ev)).collect();
        let started = Instant::now();
        let out = self.execute(h, &argv, ev).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (result, summary) = if out.shut_down {
            (
                RunResult::Shutdown,
                format!(
                    "{}: stopped after {duration_ms} ms: {SHUTTING_DOWN}{}",
                    h.name,
                    out.signal
                        .map(|s| format!(" (signal {s})"))
                        .unwrap_or_default()
                ),
            )
        } else if let Some(e) = &out.error {
            (RunResult::SpawnError, format!("{}: {e}", h.name))
        } else if out.timed_out {
            (
                RunResult::TimedOut,
                format!(
                    "{}: timed out after {} s, killed{}",
                    h.name,
                    h.timeout_secs,
                    out.signal
                        .map(|s| format!(" (signal {s})"))
                        .unwrap_or_default()
                ),
            )
        } else if let Some(s) = out.signal {
            (
                RunResult::Failed,
                format!("{}: killed by signal {s} after {duration_ms} ms", h.name),
            )
        } else if out.exit_code == Some(0) {
            (
                RunResult::Ok,
                format!("{}: exit 0 after {duration_ms} ms", h.name),
            )
        } else {
            (
                RunResult::Failed,
                format!(
                    "{}: exit {} after {duration_ms} ms",
                    h.name,
                    out.exit_code.map_or("?".into(), |c| c.to_string())
                ),
            )
        };
        if result == RunResult::Ok {
            diag::emit_rare(
                RunOk {
                    who: &who,
                    summary: &summary,
                },
                &COUNTERS,
            );
        } else {
            self.diag.emit(
                RunFailed {
                    result,
                    handler: &h.name,
                    who: &who,
                    summary: &summary,
                    stderr: &out.stderr.text(),
                },
                &COUNTERS,
            );
        }
        let run = HandlerRun {
            name: h.name.clone(),
            argv,
            trigger_event: ev.id,
            exit_code: out.exit_code,
            signal: out.signal,
            duration_ms,
            stdout: out.stdout.text(),
            stderr: out.stderr.text(),
            stdout_truncated: out.stdout.truncated,
            stderr_truncated: out.stderr.truncated,
            timed_out: out.timed_out,
            error: out.error,
        };
        self.alerts.record(run_event(ev, summary, run));
    }

    /// Records a run that was not started, with the reason.
    fn refuse(&self, i: usize, ev: &Event, why: Refusal, reason: String) {
        let h = &self.handlers[i].cfg;
        self.diag.emit(
            Refused {
                why,
                handler: &h.name,
                reason: &reason,
            },
            &COUNTERS,
        );
        let run = HandlerRun {
            name: h.name.clone(),
            argv: h.argv.iter().map(|a| expand(a, &h.name, ev)).collect(),
            trigger_event: ev.id,
            exit_code: None,
            signal: None,
            duration_ms: 0,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            timed_out: false,
            error: Some(reason.clone()),
        };
        self.alerts
            .record(run_event(ev, format!("{}: {reason}", h.name), run));
    }

    async fn execute(&self, h: &HandlerConfig, argv: &[String], ev: &Event) -> Outcome {
        use std::os::unix::process::ExitStatusExt;
        use std::process::Stdio;
        let env = environment(&h.name, ev);
        if let Some(why) = nul_in(argv, &env) {
            return Outcome {
                error: Some(why),
                ..Outcome::default()
            };
        }
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: the timeout's signals reach everything it started.
            .process_group(0);
        if let Some(d) = &h.cwd {
            cmd.current_dir(d);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Outcome {
                    error: Some(format!("cannot start {:?}: {e}", argv[0])),
                    ..Outcome::default()
                };
            }
        };
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        let cap = self.max_output;
        let out = Arc::new(Mutex::new(Capture::default()));
        let err = Arc::new(Mutex::new(Capture::default()));
        let readers = [
            child
                .stdout
                .take()
                .map(|s| tokio::spawn(read_capped(s, cap, out.clone()))),
            child
                .stderr
                .take()
                .map(|s| tokio::spawn(read_capped(s, cap, err.clone()))),
        ];
        let timeout = Duration::from_secs(u64::from(h.timeout_secs));
        let grace = Duration::from_secs(u64::from(h.kill_grace_secs));
        let (mut timed_out, mut shut_down) = (false, false);
        let status = tokio::select! {
            r = tokio::time::timeout(timeout, child.wait()) => match r {
                Ok(s) => s,
                Err(_) => {
                    timed_out = true;
                    stop_group(pid, &mut child, grace).await
                }
            },
            _ = self.shutdown.cancelled() => {
                shut_down = true;
                stop_group(pid, &mut child, grace.min(SHUTDOWN_GRACE)).await
            }
        };
        for r in readers.into_iter().flatten() {
            let abort = r.abort_handle();
            if tokio::time::timeout(DRAIN_AFTER_EXIT, r).await.is_err() {
                abort.abort();
            }
        }
        let take = |c: &Arc<Mutex<Capture>>| c.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut o = Outcome {
            stdout: take(&out),
            stderr: take(&err),
            timed_out,
            shut_down,
            ..Outcome::default()
        };
        match status {
            Ok(s) => {
                o.exit_code = s.code();
                o.signal = s.signal();
            }
            Err(e) => o.error = Some(format!("waiting for it failed: {e}")),
        }
        if shut_down {
            o.error = Some(SHUTTING_DOWN.into());
        }
        o
    }
}

/// SIGTERM to the run's process group, SIGKILL after `grace` (or at once
/// when the leader exits first: anything else in its group that ignored
/// SIGTERM goes too); returns the leader's status.
async fn stop_group(
    pid: Option<i32>,
    child: &mut tokio::process::Child,
    grace: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    signal_group(pid, nix::sys::signal::Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(s) => {
            signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            s
        }
        Err(_) => {
            signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            child.wait().await
        }
    }
}

fn signal_group(pid: Option<i32>, sig: nix::sys::signal::Signal) {
    if let Some(p) = pid.filter(|p| *p > 0) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(p), sig);
    }
}

// Internal events of the handler runner (see `diag`), counted in
// `ganglion_handler_runs_total{result}`.

/// How a started run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunResult {
    Ok,
    Failed,
    TimedOut,
    SpawnError,
    Shutdown,
}

/// A run that exited 0: logged every time at `info` (one line per run,
/// like Nagios' own event-handler log line).
struct RunOk<'a> {
    who: &'a str,
    summary: &'a str,
}

impl DiagEvent for RunOk<'_> {
    type Counters = HandlerCounters;
    type Key = String;
    const LEVEL: Level = Level::INFO;
    fn count(&self, c: &HandlerCounters) {
        diag::inc(&c.ok);
    }
    fn log_as(&self) -> LogAs<String> {
        LogAs::Always
    }
    fn log(&self, _: &HandlerCounters) {
        diag::line!(Self::LEVEL, target_host = %self.who, "{}", self.summary);
    }
}

/// A run that failed, timed out, did not start or was stopped at shutdown:
/// logged once a minute per handler.
struct RunFailed<'a> {
    result: RunResult,
    handler: &'a str,
    who: &'a str,
    summary: &'a str,
    stderr: &'a str,
}

impl DiagEvent for RunFailed<'_> {
    type Counters = HandlerCounters;
    type Key = String;
    const LEVEL: Level = Level::WARN;
    fn count(&self, c: &HandlerCounters) {
        diag::inc(match self.result {
            RunResult::Ok | RunResult::Failed => &c.failed,
            RunResult::TimedOut => &c.timed_out,
            RunResult::SpawnError => &c.spawn_error,
            RunResult::Shutdown => &c.shutdown,
        });
    }
    fn log_as(&self) -> LogAs<String> {
        LogAs::PerKey(self.handler.to_string())
    }
    fn log(&self, _: &HandlerCounters) {
        diag::line!(Self::LEVEL, target_host = %self.who,
            "{}; stderr: {} (logged once a minute per handler)", self.summary, first_line(self.stderr));
    }
}

/// Why a run was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Busy,
    Rate,
    Queue,
    Shutdown,
}

/// A run not started (recorded as a `handler_run` with the reason).
struct Refused<'a> {
    why: Refusal,
    handler: &'a str,
    reason: &'a str,
}

impl DiagEvent for Refused<'_> {
    type Counters = HandlerCounters;
    type Key = String;
    const LEVEL: Level = Level::WARN;
    fn count(&self, c: &HandlerCounters) {
        diag::inc(match self.why {
            Refusal::Busy => &c.refused_busy,
            Refusal::Rate => &c.refused_rate,
            Refusal::Queue => &c.refused_queue,
            Refusal::Shutdown => &c.shutdown,
        });
    }
    fn log_as(&self) -> LogAs<String> {
        LogAs::PerKey(format!("refused {}", self.handler))
    }
    fn log(&self, _: &HandlerCounters) {
        diag::line!(
            Self::LEVEL,
            "{} (logged once a minute per handler)",
            self.reason
        );
    }
}

/// The dispatcher fell behind the event stream by `missed` events.
struct Lagged {
    missed: u64,
}

impl DiagEvent for Lagged {
    type Counters = HandlerCounters;
    type Key = String;
    const LEVEL: Level = Level::ERROR;
    fn count(&self, c: &HandlerCounters) {
        c.lagged.fetch_add(self.missed, Ordering::Relaxed);
    }
    fn log_as(&self) -> LogAs<String> {
        LogAs::PerKey("lagged".into())
    }
    fn log(&self, _: &HandlerCounters) {
        diag::line!(
            Self::LEVEL,
            missed = self.missed,
            "handler dispatcher fell behind the event stream; {} events ran no handler (logged once a minute)",
            self.missed
        );
    }
}

/// Reads `r` to its end, keeping the first `cap` bytes in `into` as they
/// arrive (so a reader cut off later still leaves what it read).
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(
    mut r: R,
    cap: usize,
    into: Arc<Mutex<Capture>>,
) {
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut c = into.lock().unwrap_or_else(|p| p.into_inner());
                let room = cap.saturating_sub(c.data.len());
                c.data.extend_from_slice(&buf[..n.min(room)]);
                if n > room {
                    c.truncated = true;
                }
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// The `handler_run` event for a run triggered by `ev`.
fn run_event(ev: &Event, output: String, run: HandlerRun) -> Event {
    Event {
        id: 0,
        time: crate::state::now_secs() as i64,
        kind: EventKind::HandlerRun,
        cluster: ev.cluster.clone(),
        host: ev.host.clone(),
        rule: ev.rule.clone(),
        metric: ev.metric.clone(),
        state: ev.state.clone(),
        state_type: ev.state_type,
        attempt: ev.attempt,
        max_attempts: ev.max_attempts,
        value: ev.value,
        output,
        handler: Some(run),
    }
}

/// A sample event (tests, docs).
#[doc(hidden)]
pub fn sample_event(kind: EventKind, host: &str) -> Event {
    Event {
        id: 7,
        time: 1_700_000_000,
        kind,
        cluster: "prod".into(),
        host: Some(host.into()),
        rule: None,
        metric: None,
        state: "DOWN".into(),
        state_type: StateType::Hard,
        attempt: 1,
        max_attempts: 1,
        value: None,
        output: "no report for 95 s".into(),
        handler: None,
    }
}

#[cfg(test)]
mod tests;

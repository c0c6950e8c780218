//! Health, alerts and durable events with Nagios' semantics.
//!
//! The engine evaluates host liveness and `[[alert]]` rules once per
//! `alerts.interval_secs` from the shared snapshot (never under the ingest
//! lock), runs each object through Nagios' SOFT/HARD state machine and flap
//! detection, and turns the changes into [`Event`]s. Events go to a SQLite
//! store on its own thread through a bounded queue (a full queue is counted,
//! never waited on), and, once stored, to every [`Alerts::subscribe`]r
//! (handlers, the Nagios sink). [`Alerts::health`] is the current state of
//! every host and rule target, rebuilt each evaluation.
//!
//! The types here are the interface the handler runner, the Nagios sink and
//! the dashboard code against; `GET /api/alerts` and `GET /api/events` serve
//! them as JSON with the same field names.

pub mod engine;
pub mod machine;
pub mod reload;
pub mod store;

use crate::config::alerts::{AlertRule, AlertsConfig};
use crate::state::State;
use crate::telemetry::LogLimiter;
use ganglion_proto::range::Status;
use serde::{Deserialize, Serialize, Serializer};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Nagios' state type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateType {
    /// Not yet confirmed by `max_check_attempts` results.
    Soft,
    /// Confirmed.
    Hard,
}

impl StateType {
    /// `"SOFT"` or `"HARD"`, as Nagios prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            StateType::Soft => "SOFT",
            StateType::Hard => "HARD",
        }
    }

    /// Parses [`StateType::as_str`]'s text.
    pub fn parse(s: &str) -> Option<StateType> {
        match s {
            "SOFT" => Some(StateType::Soft),
            "HARD" => Some(StateType::Hard),
            _ => None,
        }
    }
}

impl Serialize for StateType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What an [`Event`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A host stopped reporting (SOFT attempts and the HARD change).
    HostDown,
    /// A DOWN host reported again.
    HostUp,
    /// A rule's state changed to a problem (or to another problem).
    Alert,
    /// A rule's target went back to OK.
    Recovery,
    /// A host or a rule's target started flapping.
    FlapStart,
    /// A host or a rule's target stopped flapping.
    FlapStop,
    /// Storm control: a share of a cluster's hosts went DOWN together (one
    /// event instead of one per host). Cluster rules (`aggregate`) report
    /// `Alert`/`Recovery` with no host instead.
    ClusterIncident,
    /// The cluster incident is over.
    ClusterRecovered,
    /// A `[[handler]]` ran (see [`Event::handler`]).
    HandlerRun,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 9] = [
        EventKind::HostDown,
        EventKind::HostUp,
        EventKind::Alert,
        EventKind::Recovery,
        EventKind::FlapStart,
        EventKind::FlapStop,
        EventKind::ClusterIncident,
        EventKind::ClusterRecovered,
        EventKind::HandlerRun,
    ];

    /// The name in JSON, the database and `[[handler]] on`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::HostDown => "host_down",
            EventKind::HostUp => "host_up",
            EventKind::Alert => "alert",
            EventKind::Recovery => "recovery",
            EventKind::FlapStart => "flap_start",
            EventKind::FlapStop => "flap_stop",
            EventKind::ClusterIncident => "cluster_incident",
            EventKind::ClusterRecovered => "cluster_recovered",
            EventKind::HandlerRun => "handler_run",
        }
    }

    /// Parses [`EventKind::as_str`]'s text.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One state change or handler run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Database id; 0 until stored.
    pub id: i64,
    /// Unix seconds.
    pub time: i64,
    /// What happened.
    pub kind: EventKind,
    /// Cluster.
    pub cluster: String,
    /// Host (`None` for cluster incidents).
    pub host: Option<String>,
    /// `[[alert]]` name.
    pub rule: Option<String>,
    /// Metric the rule reads.
    pub metric: Option<String>,
    /// `"UP"`, `"DOWN"`, `"OK"`, `"WARNING"`, `"CRITICAL"` or `"UNKNOWN"`.
    pub state: String,
    /// SOFT or HARD.
    pub state_type: StateType,
    /// Nagios' current attempt.
    pub attempt: u32,
    /// `max_check_attempts` of the object.
    pub max_attempts: u32,
    /// The value evaluated, when there was one.
    pub value: Option<f64>,
    /// Plugin-style text, e.g. `load_one = 9.2 (critical 8)`.
    pub output: String,
    /// Set only for [`EventKind::HandlerRun`].
    pub handler: Option<HandlerRun>,
}

/// What a `[[handler]]` run did (recorded success or failure).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerRun {
    /// `[[handler]] name`.
    pub name: String,
    /// The argv actually executed (placeholders expanded).
    pub argv: Vec<String>,
    /// Id of the event that triggered the run.
    pub trigger_event: i64,
    /// Exit status, when the process exited.
    pub exit_code: Option<i32>,
    /// Signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Wall time from spawn to reap.
    pub duration_ms: u64,
    /// Captured stdout (capped).
    pub stdout: String,
    /// Captured stderr (capped).
    pub stderr: String,
    /// stdout was longer than the cap.
    pub stdout_truncated: bool,
    /// stderr was longer than the cap.
    pub stderr_truncated: bool,
    /// It was killed at its timeout.
    pub timed_out: bool,
    /// Spawn failure and the like.
    pub error: Option<String>,
}

fn status_str<S: Serializer>(v: &Status, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_str())
}

/// The current state of every host and rule target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HealthSnapshot {
    /// When it was evaluated (unix seconds).
    pub time: i64,
    /// Within `alerts.warmup_secs` of start: states are shown, no events made.
    pub warming_up: bool,
    /// Every host known, in snapshot order (clusters in configuration order,
    /// hosts by name), then hosts known from the store but not reporting.
    pub hosts: Vec<HostHealth>,
    /// Every rule target that is not OK/HARD (problems, SOFT states,
    /// flapping); a target not listed is OK. Cluster rules have the cluster's
    /// name as `host`.
    pub services: Vec<ServiceHealth>,
    /// Open cluster incidents.
    pub incidents: Vec<Incident>,
}

/// A host's liveness.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostHealth {
    /// Cluster.
    pub cluster: String,
    /// Host name.
    pub host: String,
    /// Reporting (UP).
    pub up: bool,
    /// SOFT or HARD.
    pub state_type: StateType,
    /// Current attempt.
    pub attempt: u32,
    /// `max_check_attempts`.
    pub max_attempts: u32,
    /// Since when the state is what it is (unix seconds).
    pub since: i64,
    /// Seconds since the host last reported.
    pub tn: u64,
    /// The host's TMAX.
    pub tmax: u64,
    /// Flap detection says it flaps (every check counts, as for Nagios hosts).
    pub flapping: bool,
    /// Plugin-style text while not UP (`not heard for 95 s`); empty while UP
    /// (no text is formatted for the thousands of healthy hosts each pass).
    pub output: String,
}

/// A rule's state for one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceHealth {
    /// `[[alert]] name` (Nagios' service description).
    pub rule: String,
    /// Cluster.
    pub cluster: String,
    /// Host (the cluster name for cluster rules).
    pub host: String,
    /// Metric.
    pub metric: String,
    /// OK, WARNING, CRITICAL or UNKNOWN.
    #[serde(serialize_with = "status_str")]
    pub state: Status,
    /// SOFT or HARD.
    pub state_type: StateType,
    /// Current attempt.
    pub attempt: u32,
    /// `max_check_attempts`.
    pub max_attempts: u32,
    /// Since when the state is what it is (unix seconds).
    pub since: i64,
    /// The value evaluated.
    pub value: Option<f64>,
    /// The metric's units.
    pub units: String,
    /// Warning range, canonical text.
    pub warning: Option<String>,
    /// Critical range, canonical text.
    pub critical: Option<String>,
    /// Plugin-style text.
    pub output: String,
    /// Nagios perfdata, `'metric'=value[UOM];warn;crit;;`.
    pub perfdata: String,
    /// Flap detection says it flaps.
    pub flapping: bool,
}

/// An open cluster incident (storm control or a cluster rule).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// Cluster.
    pub cluster: String,
    /// Opened at (unix seconds).
    pub since: i64,
    /// Hosts down.
    pub down: u32,
    /// Hosts in the cluster.
    pub total: u32,
    /// Text.
    pub output: String,
}

/// Filters of [`Alerts::events`] (all optional but `limit`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Exact cluster.
    pub cluster: Option<String>,
    /// Exact host.
    pub host: Option<String>,
    /// Exact rule name.
    pub rule: Option<String>,
    /// An [`EventKind::as_str`] name.
    pub kind: Option<String>,
    /// `time >= since`.
    pub since: Option<i64>,
    /// `time <= until`.
    pub until: Option<i64>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// Why the event store could not answer.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("alerts database: {0}")]
    Sqlite(String),
    /// The store is not running (detached handle, or shut down).
    #[error("alerts database is not open")]
    Closed,
}

/// Unix seconds now.
pub fn now() -> i64 {
    i64::try_from(crate::state::now_secs()).unwrap_or(i64::MAX)
}

/// The engine's and store's counters (`/metrics`).
pub struct Stats {
    /// Events committed to the database.
    pub stored: AtomicU64,
    /// Events lost because the store queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Events whose database write failed (still broadcast, id 0).
    pub dropped_db_error: AtomicU64,
    /// Events recorded after the store stopped.
    pub dropped_closed: AtomicU64,
    /// Host events replaced by a cluster incident.
    pub suppressed_by_storm: AtomicU64,
    /// Events removed by retention.
    pub pruned: AtomicU64,
    /// Evaluations run.
    pub evaluations: AtomicU64,
    /// Their total duration in microseconds.
    pub evaluation_micros: AtomicU64,
    /// The last one's duration in microseconds.
    pub last_evaluation_micros: AtomicU64,
    /// Messages waiting for the store thread.
    pub queued: AtomicU64,
    /// SIGHUP reloads applied.
    pub reloads_applied: AtomicU64,
    /// SIGHUP reloads refused (the file did not read or validate).
    pub reloads_invalid: AtomicU64,
    pub(crate) db_error_log: LogLimiter<()>,
    pub(crate) drop_log: LogLimiter<()>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            stored: AtomicU64::new(0),
            dropped_queue_full: AtomicU64::new(0),
            dropped_db_error: AtomicU64::new(0),
            dropped_closed: AtomicU64::new(0),
            suppressed_by_storm: AtomicU64::new(0),
            pruned: AtomicU64::new(0),
            evaluations: AtomicU64::new(0),
            evaluation_micros: AtomicU64::new(0),
            last_evaluation_micros: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            reloads_applied: AtomicU64::new(0),
            reloads_invalid: AtomicU64::new(0),
            db_error_log: LogLimiter::new(Duration::from_secs(60)),
            drop_log: LogLimiter::new(Duration::from_secs(60)),
        }
    }
}

/// Why the engine could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The database could not be opened, created or read.
    #[error("alerts.database {path}: {source}")]
    Database {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: StoreError,
    },
    /// A thread could not be started.
    #[error("cannot start the alerts threads: {0}")]
    Thread(#[from] std::io::Error),
}

/// The handle the rest of the aggregator holds (cheap to clone).
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

struct Inner {
    tx: broadcast::Sender<Arc<Event>>,
    store: Option<SyncSender<store::Msg>>,
    health: Mutex<Arc<HealthSnapshot>>,
    reader: Option<Mutex<rusqlite::Connection>>,
    stats: Arc<Stats>,
    /// The engine thread's control channel (reloads, stop).
    ctl: Mutex<Option<std::sync::mpsc::Sender<Ctl>>>,
    /// Handler runs still going: the store closes only after they are
    /// recorded (or [`RUNS_WAIT`] passed).
    runs: Arc<(Mutex<usize>, std::sync::Condvar)>,
}

/// What the engine thread is told between evaluations.
enum Ctl {
    /// Shut down.
    Stop,
    /// New `[alerts]` and `[[alert]]` (SIGHUP).
    Reload(Box<(AlertsConfig, Vec<AlertRule>)>),
}

/// How long the store waits at shutdown for handler runs still going to be
/// recorded: the handlers' overall kill bound
/// ([`crate::handlers::SHUTDOWN_GRACE`]) plus the output drain and a margin.
pub const RUNS_WAIT: Duration = Duration::from_secs(8);

/// Held while a handler run is going (see [`Alerts::run_guard`]).
pub struct RunGuard(Arc<(Mutex<usize>, std::sync::Condvar)>);

impl Drop for RunGuard {
    fn drop(&mut self) {
        let (n, cv) = &*self.0;
        let mut n = n.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        cv.notify_all();
    }
}

/// Events a slow subscriber may fall behind by before it gets `Lagged`.
pub const BROADCAST_CAPACITY: usize = 4096;

impl Alerts {
    /// A handle with no engine and no store: `record` only broadcasts,
    /// `events` answers [`StoreError::Closed`]. For tests of code built on it.
    pub fn detached() -> Alerts {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        Alerts {
            inner: Arc::new(Inner {
                tx,
                store: None,
                health: Mutex::new(Arc::new(HealthSnapshot::default())),
                reader: None,
                stats: Arc::default(),
                ctl: Mutex::new(None),
                runs: Arc::default(),
            }),
        }
    }

    /// Every event (state changes and handler runs), after it is stored
    /// (its `id` set). A slow receiver gets `Lagged`, never blocks anyone.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.tx.subscribe()
    }

    /// Queues an event for the store (handler runs use this); never blocks.
    /// A full queue drops it and counts it (`reason="queue_full"`).
    pub fn record(&self, e: Event) {
        match &self.inner.store {
            None => {
                let _ = self.inner.tx.send(Arc::new(e));
            }
            Some(tx) => {
                self.send(tx, store::Msg::Record(Box::new(e)), 1);
            }
        }
    }

    fn send(&self, tx: &SyncSender<store::Msg>, msg: store::Msg, events: u64) -> bool {
        let st = &self.inner.stats;
        st.queued.fetch_add(1, Ordering::Relaxed);
        let err = match tx.try_send(msg) {
            Ok(()) => return true,
            Err(TrySendError::Full(_)) => &st.dropped_queue_full,
            Err(TrySendError::Disconnected(_)) => &st.dropped_closed,
        };
        st.queued.fetch_sub(1, Ordering::Relaxed);
        err.fetch_add(events, Ordering::Relaxed);
        if events > 0 && st.drop_log.allow(()) {
            tracing::warn!(
                events,
                "alerts store queue full or closed: events dropped (counted in \
                 ganglion_alerts_events_dropped_total)"
            );
        }
        false
    }

    /// Counts a handler run as going until the guard drops: at shutdown the
    /// store stays open (up to [`RUNS_WAIT`]) until every such run recorded
    /// itself.
    pub fn run_guard(&self) -> RunGuard {
        let runs = self.inner.runs.clone();
        *runs.0.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        RunGuard(runs)
    }

    /// Waits until no handler run is going, or `max` passed. True when none is.
    pub fn wait_for_runs(&self, max: Duration) -> bool {
        let (n, cv) = &*self.inner.runs;
        let deadline = Instant::now() + max;
        let mut g = n.lock().unwrap_or_else(|p| p.into_inner());
        while *g > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = cv
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Hands new `[alerts]` and `[[alert]]` to the engine, applied before its
    /// next evaluation ([`engine::Engine::reload`]). False when the engine
    /// is not running.
    pub fn reload(&self, config: AlertsConfig, rules: Vec<AlertRule>) -> bool {
        let ctl = self.inner.ctl.lock().unwrap_or_else(|p| p.into_inner());
        ctl.as_ref()
            .is_some_and(|tx| tx.send(Ctl::Reload(Box::new((config, rules)))).is_ok())
    }

    /// The current states, as of the last evaluation.
    pub fn health(&self) -> Arc<HealthSnapshot> {
        self.inner
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_health(&self, h: HealthSnapshot) {
        *self.inner.health.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(h);
    }

    /// Stored events matching `q`, newest first. Blocking (SQLite): call it
    /// in `spawn_blocking`.
    pub fn events(&self, q: &EventQuery) -> Result<Vec<Event>, StoreError> {
        let r = self.inner.reader.as_ref().ok_or(StoreError::Closed)?;
        let c = r.lock().unwrap_or_else(|p| p.into_inner());
        store::query(&c, q)
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Adds the engine's counters and per-cluster state gauges to `/metrics`.
    pub fn telemetry(
        &self,
        counters: &mut Vec<(&'static str, &'static str, u64)>,
        labelled: &mut Vec<crate::telemetry::LabelledCounter>,
        gauges: &mut Vec<crate::telemetry::ClusterGauge>,
    ) {
        let s = &self.inner.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counters.extend([
            (
                "ganglion_alerts_events_stored_total",
                "Alert events committed to the database",
                g(&s.stored),
            ),
            (
                "ganglion_alerts_storm_suppressed_total",
                "Host events replaced by a cluster incident (storm control)",
                g(&s.suppressed_by_storm),
            ),
            (
                "ganglion_alerts_events_pruned_total",
                "Events removed by alerts.history_days / history_max_events",
                g(&s.pruned),
            ),
            (
                "ganglion_alerts_evaluations_total",
                "Health evaluations run",
                g(&s.evaluations),
            ),
            (
                "ganglion_alerts_evaluation_microseconds_total",
                "Time spent in health evaluations",
                g(&s.evaluation_micros),
            ),
        ]);
        labelled.push((
            "ganglion_alerts_events_dropped_total",
            "Alert events not stored, by reason",
            "reason",
            vec![
                ("queue_full", g(&s.dropped_queue_full)),
                ("database_error", g(&s.dropped_db_error)),
                ("closed", g(&s.dropped_closed)),
            ],
        ));
        labelled.push((
            "ganglion_alerts_reloads_total",
            "SIGHUP reloads of [[alert]], [alerts], [[handler]] and [nagios] (invalid = refused, the running configuration kept)",
            "result",
            vec![
                ("applied", g(&s.reloads_applied)),
                ("invalid", g(&s.reloads_invalid)),
            ],
        ));
        let h = self.health();
        let mut per: std::collections::BTreeMap<&str, [i64; 4]> = Default::default();
        for x in &h.hosts {
            per.entry(&x.cluster).or_default()[0] += i64::from(!x.up);
        }
        for x in &h.services {
            let e = per.entry(&x.cluster).or_default();
            match x.state {
                Status::Warning => e[1] += 1,
                Status::Critical => e[2] += 1,
                Status::Unknown => e[3] += 1,
                Status::Ok => {}
            }
        }
        let col = |i: usize| {
            per.iter()
                .map(|(c, v)| (c.to_string(), v[i]))
                .collect::<Vec<_>>()
        };
        gauges.extend([
            (
                "ganglion_alerts_hosts_down",
                "Hosts DOWN (soft or hard) per cluster",
                col(0),
            ),
            (
                "ganglion_alerts_warning",
                "Rule targets in WARNING per cluster",
                col(1),
            ),
            (
                "ganglion_alerts_critical",
                "Rule targets in CRITICAL per cluster",
                col(2),
            ),
            (
                "ganglion_alerts_unknown",
                "Rule targets in UNKNOWN per cluster",
                col(3),
            ),
        ]);
    }
}

/// What [`start`] needs.
pub struct Params {
    /// `[alerts]`.
    pub config: AlertsConfig,
    /// `[[alert]]`.
    pub rules: Vec<AlertRule>,
    /// The database file.
    pub database: PathBuf,
}

/// Opens the store, restores the persisted states and starts the store and
/// engine threads (returned for joining; both end after `shutdown`).
pub fn start(
    p: Params,
    state: Arc<State>,
    shutdown: CancellationToken,
) -> Result<(Alerts, Vec<std::thread::JoinHandle<()>>), StartError> {
    let db_err = |source| StartError::Database {
        path: p.database.clone(),
        source,
    };
    let conn = store::open(&p.database).map_err(db_err)?;
    let loaded = store::load(&conn).map_err(db_err)?;
    let reader = store::open_reader(&p.database).map_err(db_err)?;
    let stats = Arc::new(Stats::default());
    let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
    let cap = usize::try_from(p.config.queue_batches).unwrap_or(1024);
    let (store_tx, store_rx) = std::sync::mpsc::sync_channel(cap);
    // The engine thread sleeps on this channel between evaluations: a
    // reload or the stop wakes it at once.
    let (ctl_tx, ctl_rx) = std::sync::mpsc::channel::<Ctl>();
    let alerts = Alerts {
        inner: Arc::new(Inner {
            tx: tx.clone(),
            store: Some(store_tx.clone()),
            health: Mutex::new(Arc::new(HealthSnapshot {
                time: now(),
                warming_up: true,
                ..HealthSnapshot::default()
            })),
            reader: Some(Mutex::new(reader)),
            stats: stats.clone(),
            ctl: Mutex::new(Some(ctl_tx.clone())),
            runs: Arc::default(),
        }),
    };
    let mut engine = engine::Engine::new(p.config.clone(), &p.rules, now(), stats.clone());
    let stale = engine.restore(loaded);
    let sp = store::StoreParams {
        path: p.database.clone(),
        history_days: p.config.history_days,
        history_max_events: p.config.history_max_events,
    };
    let st = stats.clone();
    let store_thread = std::thread::Builder::new()
        .name("alerts-store".into())
        .spawn(move || store::run(conn, sp, store_rx, tx, st))?;
    tokio::spawn(async move {
        shutdown.cancelled().await;
        let _ = ctl_tx.send(Ctl::Stop);
    });
    let interval_of = |c: &AlertsConfig| Duration::from_secs(u64::from(c.interval_secs.max(1)));
    let mut interval = interval_of(&p.config);
    let handle = alerts.clone();
    let engine_thread = std::thread::Builder::new()
        .name("alerts-engine".into())
        .spawn(move || {
            let mut carry = stale;
            loop {
                let t0 = Instant::now();
                let snap = state.snapshot(crate::state::now_secs());
                let out = engine.evaluate(&snap, now());
                drop(snap);
                let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                stats.evaluations.fetch_add(1, Ordering::Relaxed);
                stats.evaluation_micros.fetch_add(us, Ordering::Relaxed);
                stats.last_evaluation_micros.store(us, Ordering::Relaxed);
                handle.set_health(out.health);
                carry = handle.flush(&store_tx, carry, out.batch);
                // A reload is applied at once; the next evaluation keeps
                // its time, so a reload never adds an attempt.
                let stop = loop {
                    let next = t0 + interval;
                    match ctl_rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                        Err(RecvTimeoutError::Timeout) => break false,
                        Ok(Ctl::Reload(r)) => {
                            let (config, rules) = *r;
                            interval = interval_of(&config);
                            let (rows, dropped) = engine.reload(config, &rules);
                            for (rule, n) in &dropped {
                                tracing::info!(
                                    rule = %rule,
                                    states = n,
                                    "reload: [[alert]] {rule} removed or no longer matching; \
                                     its {n} non-OK states are dropped (no recovery is reported)"
                                );
                            }
                            tracing::info!(
                                rules = rules.len(),
                                "reload: [alerts] and [[alert]] applied"
                            );
                            carry.services.extend(rows.services);
                        }
                        Ok(Ctl::Stop) | Err(RecvTimeoutError::Disconnected) => break true,
                    }
                };
                if stop {
                    break;
                }
            }
            if !carry.is_empty() {
                let _ = handle.flush(&store_tx, store::Batch::default(), carry);
            }
            // Handler runs still going are being stopped (SIGTERM, SIGKILL):
            // their records must reach the store before it closes.
            if !handle.wait_for_runs(RUNS_WAIT) {
                tracing::warn!(
                    "handler runs still not recorded {} s after shutdown; closing the alerts store",
                    RUNS_WAIT.as_secs()
                );
            }
            // A blocking send: at shutdown the store finishes what is queued.
            let _ = store_tx.send(store::Msg::Shutdown);
        })?;
    Ok((alerts, vec![engine_thread, store_thread]))
}

impl Alerts {
    /// Sends `carry` (rows a full queue refused last time) and `batch` as one
    /// message; on refusal the events are counted dropped and the rows are
    /// returned to be carried to the next evaluation.
    fn flush(
        &self,
        tx: &SyncSender<store::Msg>,
        mut carry: store::Batch,
        batch: store::Batch,
    ) -> store::Batch {
        carry.events.extend(batch.events);
        carry.hosts.extend(batch.hosts);
        carry.services.extend(batch.services);
        carry.incidents.extend(batch.incidents);
        if carry.is_empty() {
            return carry;
        }
        let n = carry.events.len() as u64;
        let rows = store::Batch {
            events: Vec::new(),
            hosts: carry.hosts.clone(),
            services: carry.services.clone(),
            incidents: carry.incidents.clone(),
        };
        if self.send(tx, store::Msg::Batch(carry), n) {
            store::Batch::default()
        } else {
            rows
        }
    }
}

#[cfg(test)]
mod tests;

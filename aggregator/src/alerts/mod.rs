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

use ganglion_proto::range::Status;
use serde::{Serialize, Serializer};
use std::sync::{Arc, Mutex};
use thiserror::Error;
use tokio::sync::broadcast;

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
    /// A rule's target started flapping.
    FlapStart,
    /// A rule's target stopped flapping.
    FlapStop,
    /// Storm control: a share of a cluster's hosts went down together, or a
    /// cluster rule changed to a problem.
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    /// Every host, by cluster then name.
    pub hosts: Vec<HostHealth>,
    /// Every (rule, host) pair, by rule, cluster, host.
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
    /// Plugin-style text.
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

/// The handle the rest of the aggregator holds (cheap to clone).
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

struct Inner {
    tx: broadcast::Sender<Arc<Event>>,
    health: Mutex<Arc<HealthSnapshot>>,
}

impl Alerts {
    /// A handle with no engine and no store: `record` only broadcasts,
    /// `events` answers [`StoreError::Closed`]. For tests of code built on it.
    pub fn detached() -> Alerts {
        let (tx, _) = broadcast::channel(1024);
        Alerts {
            inner: Arc::new(Inner {
                tx,
                health: Mutex::new(Arc::new(HealthSnapshot::default())),
            }),
        }
    }

    /// Every event (state changes and handler runs), after it is stored
    /// (its `id` set). A slow receiver gets `Lagged`, never blocks anyone.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.tx.subscribe()
    }

    /// Queues an event for the store (handler runs use this); never blocks.
    pub fn record(&self, e: Event) {
        let _ = self.inner.tx.send(Arc::new(e));
    }

    /// The current states, as of the last evaluation.
    pub fn health(&self) -> Arc<HealthSnapshot> {
        self.inner
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stored events matching `q`, newest first. Blocking (SQLite): call it
    /// in `spawn_blocking`.
    pub fn events(&self, q: &EventQuery) -> Result<Vec<Event>, StoreError> {
        let _ = q;
        Err(StoreError::Closed)
    }
}

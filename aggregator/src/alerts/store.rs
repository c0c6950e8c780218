//! The event store: SQLite (WAL) written by one thread fed through a bounded
//! queue, so neither evaluation nor a handler ever waits on the disk.
//!
//! Each evaluation sends one [`Batch`] (its events and the state rows that
//! changed); a handler run is one [`Msg::Record`]. A full queue drops the
//! message and counts it (`ganglion_alerts_events_dropped_total{reason}`);
//! the engine keeps unsent state rows and sends them with its next batch, so
//! the persisted state catches up. After a commit the events, ids set, go to
//! the broadcast every subscriber reads — also when the commit failed (id 0),
//! so handlers still run when the disk does not take writes.
//!
//! Retention: `alerts.history_days` and `alerts.history_max_events`, pruned
//! at start and every [`PRUNE_EVERY`] thereafter.

use super::machine::{HostState, SvcState};
use super::{Event, EventKind, EventQuery, HandlerRun, StateType, Stats, StoreError};
use ganglion_proto::range::Status;
use rusqlite::{Connection, OpenFlags, params};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// How often the history is pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// An open incident's `(since, down, total)`.
pub type IncidentRow = (i64, u32, u32);

/// What the engine and handlers send the store thread.
pub enum Msg {
    /// One evaluation's events and changed state rows.
    Batch(Batch),
    /// One event from elsewhere (a handler run).
    Record(Box<Event>),
    /// Commit what is queued and stop.
    Shutdown,
}

/// One evaluation's writes.
#[derive(Default)]
pub struct Batch {
    /// New events.
    pub events: Vec<Event>,
    /// Host rows: `None` deletes.
    pub hosts: Vec<(String, String, Option<HostState>)>,
    /// Service rows `(rule, cluster, host)`; `""` host for cluster rules; `None` deletes.
    pub services: Vec<(String, String, String, Option<SvcState>)>,
    /// Open incidents `(cluster, since, down, total)`; `None` deletes.
    pub incidents: Vec<(String, Option<IncidentRow>)>,
}

impl Batch {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.hosts.is_empty()
            && self.services.is_empty()
            && self.incidents.is_empty()
    }
}

/// What was persisted, loaded at start.
#[derive(Default, Debug)]
pub struct Loaded {
    /// `(cluster, host, state)`.
    pub hosts: Vec<(String, String, HostState)>,
    /// `(rule, cluster, host, state)`.
    pub services: Vec<(String, String, String, SvcState)>,
    /// `(cluster, since, down, total)`.
    pub incidents: Vec<(String, i64, u32, u32)>,
}

fn sql(e: rusqlite::Error) -> StoreError {
    StoreError::Sqlite(e.to_string())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  time INTEGER NOT NULL, kind TEXT NOT NULL, cluster TEXT NOT NULL,
  host TEXT, rule TEXT, metric TEXT, state TEXT NOT NULL, state_type TEXT NOT NULL,
  attempt INTEGER NOT NULL, max_attempts INTEGER NOT NULL, value REAL,
  output TEXT NOT NULL, handler TEXT);
CREATE INDEX IF NOT EXISTS events_time ON events(time);
CREATE INDEX IF NOT EXISTS events_cluster ON events(cluster, host, time);
CREATE INDEX IF NOT EXISTS events_host ON events(host, time);
CREATE INDEX IF NOT EXISTS events_rule ON events(rule, time);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind, time);
CREATE TABLE IF NOT EXISTS host_state(
  cluster TEXT NOT NULL, host TEXT NOT NULL, up INTEGER NOT NULL, hard INTEGER NOT NULL,
  attempt INTEGER NOT NULL, since INTEGER NOT NULL,
  flapping INTEGER NOT NULL DEFAULT 0, history INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(cluster, host)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS service_state(
  rule TEXT NOT NULL, cluster TEXT NOT NULL, host TEXT NOT NULL, state INTEGER NOT NULL,
  hard INTEGER NOT NULL, attempt INTEGER NOT NULL, flapping INTEGER NOT NULL,
  since INTEGER NOT NULL, history INTEGER NOT NULL,
  PRIMARY KEY(rule, cluster, host)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS incident_state(
  cluster TEXT PRIMARY KEY NOT NULL, since INTEGER NOT NULL, down INTEGER NOT NULL,
  total INTEGER NOT NULL) WITHOUT ROWID;
";

/// Opens (creating) the database for writing: WAL, the schema, a busy timeout.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Sqlite(format!("cannot create {}: {e}", dir.display())))?;
    }
    let c = Connection::open(path).map_err(sql)?;
    c.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
    c.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
    // WAL with NORMAL loses at most the last commits on power loss, never
    // consistency; FULL would fsync every evaluation.
    c.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql)?;
    c.execute_batch(SCHEMA).map_err(sql)?;
    migrate(&c)?;
    Ok(c)
}

/// Brings a database made by an earlier version up to [`SCHEMA`]: host flap
/// detection added `host_state.flapping` and `history` (a host's history
/// then starts empty, as a new host's does).
fn migrate(c: &Connection) -> Result<(), StoreError> {
    let has_flapping: bool = c
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('host_state') WHERE name = 'flapping'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(sql)?
        > 0;
    if !has_flapping {
        c.execute_batch(
            "ALTER TABLE host_state ADD COLUMN flapping INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE host_state ADD COLUMN history INTEGER NOT NULL DEFAULT 0;",
        )
        .map_err(sql)?;
    }
    Ok(())
}

/// A read-only connection for queries.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    c.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
    Ok(c)
}

fn status_of(code: i64) -> Status {
    u8::try_from(code)
        .ok()
        .and_then(Status::from_code)
        .unwrap_or(Status::Unknown)
}

fn byte(v: i64) -> u8 {
    u8::try_from(v.clamp(1, 255)).unwrap_or(1)
}

/// Reads the persisted states.
pub fn load(c: &Connection) -> Result<Loaded, StoreError> {
    let mut out = Loaded::default();
    let mut q = c
        .prepare(
            "SELECT cluster, host, up, hard, attempt, since, flapping, history FROM host_state",
        )
        .map_err(sql)?;
    let rows = q
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                HostState {
                    up: r.get::<_, i64>(2)? != 0,
                    hard: r.get::<_, i64>(3)? != 0,
                    attempt: byte(r.get(4)?),
                    since: r.get(5)?,
                    flapping: r.get::<_, i64>(6)? != 0,
                    history: r.get::<_, i64>(7)? as u64,
                },
            ))
        })
        .map_err(sql)?;
    for r in rows {
        out.hosts.push(r.map_err(sql)?);
    }
    let mut q = c
        .prepare(
            "SELECT rule, cluster, host, state, hard, attempt, flapping, since, history \
             FROM service_state",
        )
        .map_err(sql)?;
    let rows = q
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                SvcState {
                    state: status_of(r.get(3)?),
                    hard: r.get::<_, i64>(4)? != 0,
                    attempt: byte(r.get(5)?),
                    flapping: r.get::<_, i64>(6)? != 0,
                    since: r.get(7)?,
                    history: r.get::<_, i64>(8)? as u64,
                },
            ))
        })
        .map_err(sql)?;
    for r in rows {
        out.services.push(r.map_err(sql)?);
    }
    let mut q = c
        .prepare("SELECT cluster, since, down, total FROM incident_state")
        .map_err(sql)?;
    let rows = q
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, u32>(3)?,
            ))
        })
        .map_err(sql)?;
    for r in rows {
        out.incidents.push(r.map_err(sql)?);
    }
    Ok(out)
}

fn insert_event(c: &Connection, e: &mut Event) -> rusqlite::Result<()> {
    let handler = e
        .handler
        .as_ref()
        .and_then(|h| serde_json::to_string(h).ok());
    c.prepare_cached(
        "INSERT INTO events(time, kind, cluster, host, rule, metric, state, state_type, \
         attempt, max_attempts, value, output, handler) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        e.time,
        e.kind.as_str(),
        e.cluster,
        e.host,
        e.rule,
        e.metric,
        e.state,
        e.state_type.as_str(),
        e.attempt,
        e.max_attempts,
        e.value.filter(|v| v.is_finite()),
        e.output,
        handler,
    ])?;
    e.id = c.last_insert_rowid();
    Ok(())
}

/// Writes one batch in a transaction, setting the events' ids.
pub fn write_batch(c: &mut Connection, b: &mut Batch) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    for e in &mut b.events {
        insert_event(&tx, e)?;
    }
    for (cluster, host, s) in &b.hosts {
        match s {
            Some(s) => tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO host_state(cluster, host, up, hard, attempt, since, \
                     flapping, history) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    cluster,
                    host,
                    s.up,
                    s.hard,
                    s.attempt,
                    s.since,
                    s.flapping,
                    s.history as i64
                ])?,
            None => tx
                .prepare_cached("DELETE FROM host_state WHERE cluster = ?1 AND host = ?2")?
                .execute(params![cluster, host])?,
        };
    }
    for (rule, cluster, host, s) in &b.services {
        match s {
            Some(s) => tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO service_state(rule, cluster, host, state, hard, \
                     attempt, flapping, since, history) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    rule,
                    cluster,
                    host,
                    s.state.code(),
                    s.hard,
                    s.attempt,
                    s.flapping,
                    s.since,
                    s.history as i64
                ])?,
            None => tx
                .prepare_cached(
                    "DELETE FROM service_state WHERE rule = ?1 AND cluster = ?2 AND host = ?3",
                )?
                .execute(params![rule, cluster, host])?,
        };
    }
    for (cluster, i) in &b.incidents {
        match i {
            Some((since, down, total)) => tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO incident_state(cluster, since, down, total) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![cluster, since, down, total])?,
            None => tx
                .prepare_cached("DELETE FROM incident_state WHERE cluster = ?1")?
                .execute(params![cluster])?,
        };
    }
    tx.commit()
}

/// Deletes events older than `days` and beyond the newest `max_events`.
/// Returns how many went.
pub fn prune(c: &Connection, now: i64, days: u32, max_events: u64) -> Result<u64, StoreError> {
    let cutoff = now - i64::from(days) * 86400;
    let by_age = c
        .execute("DELETE FROM events WHERE time < ?1", params![cutoff])
        .map_err(sql)?;
    let keep = i64::try_from(max_events).unwrap_or(i64::MAX);
    let by_count = c
        .execute(
            "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?1",
            params![keep],
        )
        .map_err(sql)?;
    Ok((by_age + by_count) as u64)
}

/// The store thread's settings.
pub struct StoreParams {
    /// Database file.
    pub path: PathBuf,
    /// `alerts.history_days`.
    pub history_days: u32,
    /// `alerts.history_max_events`.
    pub history_max_events: u64,
}

/// The store thread: writes until [`Msg::Shutdown`] or every sender is gone.
pub fn run(
    mut c: Connection,
    p: StoreParams,
    rx: Receiver<Msg>,
    tx: broadcast::Sender<Arc<Event>>,
    stats: Arc<Stats>,
) {
    let mut last_prune = Instant::now();
    let prune_now =
        |c: &Connection| match prune(c, super::now(), p.history_days, p.history_max_events) {
            Ok(n) => {
                stats.pruned.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "cannot prune the alerts history"),
        };
    prune_now(&c);
    loop {
        let msg = match rx.recv_timeout(PRUNE_EVERY) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                prune_now(&c);
                last_prune = Instant::now();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = match msg {
            Msg::Batch(b) => b,
            Msg::Record(e) => Batch {
                events: vec![*e],
                ..Batch::default()
            },
            Msg::Shutdown => break,
        };
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        match write_batch(&mut c, &mut batch) {
            Ok(()) => {
                stats
                    .stored
                    .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                stats
                    .dropped_db_error
                    .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                for ev in &mut batch.events {
                    ev.id = 0;
                }
                if stats.db_error_log.allow(()) {
                    tracing::error!(error = %e, path = %p.path.display(),
                        "alerts database write failed; events are counted as dropped (reason database_error)");
                }
            }
        }
        for e in batch.events {
            // No subscriber is not an error.
            let _ = tx.send(Arc::new(e));
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            prune_now(&c);
            last_prune = Instant::now();
        }
    }
}

fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let kind: String = r.get(2)?;
    let st: String = r.get(8)?;
    let handler: Option<String> = r.get(13)?;
    Ok(Event {
        id: r.get(0)?,
        time: r.get(1)?,
        kind: EventKind::parse(&kind).unwrap_or(EventKind::Alert),
        cluster: r.get(3)?,
        host: r.get(4)?,
        rule: r.get(5)?,
        metric: r.get(6)?,
        state: r.get(7)?,
        state_type: StateType::parse(&st).unwrap_or(StateType::Hard),
        attempt: r.get(9)?,
        max_attempts: r.get(10)?,
        value: r.get(11)?,
        output: r.get(12)?,
        handler: handler.and_then(|h| serde_json::from_str::<HandlerRun>(&h).ok()),
    })
}

/// Events matching `q`, newest first.
pub fn query(c: &Connection, q: &EventQuery) -> Result<Vec<Event>, StoreError> {
    let mut sql_text = String::from(
        "SELECT id, time, kind, cluster, host, rule, metric, state, state_type, attempt, \
         max_attempts, value, output, handler FROM events WHERE 1 = 1",
    );
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut text = |col: &str, v: &Option<String>, args: &mut Vec<rusqlite::types::Value>| {
        if let Some(v) = v {
            args.push(v.clone().into());
            sql_text.push_str(&format!(" AND {col} = ?{}", args.len()));
        }
    };
    text("cluster", &q.cluster, &mut args);
    text("host", &q.host, &mut args);
    text("rule", &q.rule, &mut args);
    text("kind", &q.kind, &mut args);
    if let Some(s) = q.since {
        args.push(s.into());
        sql_text.push_str(&format!(" AND time >= ?{}", args.len()));
    }
    if let Some(u) = q.until {
        args.push(u.into());
        sql_text.push_str(&format!(" AND time <= ?{}", args.len()));
    }
    args.push((q.limit.min(1_000_000) as i64).into());
    sql_text.push_str(&format!(
        " ORDER BY time DESC, id DESC LIMIT ?{}",
        args.len()
    ));
    let mut st = c.prepare(&sql_text).map_err(sql)?;
    let rows = st
        .query_map(rusqlite::params_from_iter(args), event_from_row)
        .map_err(sql)?;
    rows.map(|r| r.map_err(sql)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(
        time: i64,
        kind: EventKind,
        cluster: &str,
        host: Option<&str>,
        rule: Option<&str>,
    ) -> Event {
        Event {
            id: 0,
            time,
            kind,
            cluster: cluster.into(),
            host: host.map(Into::into),
            rule: rule.map(Into::into),
            metric: rule.map(|_| "load_one".into()),
            state: "CRITICAL".into(),
            state_type: StateType::Hard,
            attempt: 3,
            max_attempts: 3,
            value: Some(9.5),
            output: "load_one = 9.5".into(),
            handler: None,
        }
    }

    #[test]
    fn events_round_trip_and_filter_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = open(&dir.path().join("a.sqlite")).unwrap();
        let mut run = ev(30, EventKind::HandlerRun, "web", Some("n1"), None);
        run.handler = Some(HandlerRun {
            name: "replace-vm".into(),
            argv: vec!["/bin/echo".into(), "n1".into()],
            trigger_event: 1,
            exit_code: Some(0),
            signal: None,
            duration_ms: 12,
            stdout: "n1\n".into(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            timed_out: false,
            error: None,
        });
        let mut b = Batch {
            events: vec![
                ev(10, EventKind::Alert, "web", Some("n1"), Some("load")),
                ev(20, EventKind::HostDown, "web", Some("n2"), None),
                ev(25, EventKind::Alert, "db", Some("d1"), Some("disk")),
                run.clone(),
            ],
            ..Batch::default()
        };
        write_batch(&mut c, &mut b).unwrap();
        assert!(b.events.iter().all(|e| e.id > 0));
        let r = open_reader(&dir.path().join("a.sqlite")).unwrap();
        let all = query(
            &r,
            &EventQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            all.iter().map(|e| e.time).collect::<Vec<_>>(),
            vec![30, 25, 20, 10]
        );
        assert_eq!(
            all[0].handler, run.handler,
            "handler runs keep their output"
        );
        let q = |f: EventQuery| {
            query(&r, &EventQuery { limit: 100, ..f })
                .unwrap()
                .iter()
                .map(|e| e.time)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            q(EventQuery {
                cluster: Some("web".into()),
                ..Default::default()
            }),
            vec![30, 20, 10]
        );
        assert_eq!(
            q(EventQuery {
                host: Some("n1".into()),
                ..Default::default()
            }),
            vec![30, 10]
        );
        assert_eq!(
            q(EventQuery {
                rule: Some("disk".into()),
                ..Default::default()
            }),
            vec![25]
        );
        assert_eq!(
            q(EventQuery {
                kind: Some("host_down".into()),
                ..Default::default()
            }),
            vec![20]
        );
        assert_eq!(
            q(EventQuery {
                since: Some(20),
                until: Some(25),
                ..Default::default()
            }),
            vec![25, 20]
        );
        assert_eq!(
            query(
                &r,
                &EventQuery {
                    limit: 1,
                    ..Default::default()
                }
            )
            .unwrap()
            .len(),
            1
        );
    }

    /// Hostile names are stored and read back byte for byte (NUL too) and
    /// a filter matches only its own name: `%`, `_`, `*`, quotes are data.
    #[test]
    fn hostile_names_round_trip_and_filter_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = open(&dir.path().join("a.sqlite")).unwrap();
        let mut names = crate::hostile::names();
        names.extend(
            [
                "%",
                "_",
                "*",
                "a%",
                "' OR 1=1 --",
                "\"); DROP TABLE events; --",
            ]
            .map(String::from),
        );
        let mut b = Batch {
            events: names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let mut e = ev(i as i64, EventKind::Alert, n, Some(n), Some(n));
                    e.output = n.clone();
                    e
                })
                .collect(),
            ..Batch::default()
        };
        write_batch(&mut c, &mut b).unwrap();
        let r = open_reader(&dir.path().join("a.sqlite")).unwrap();
        for (i, n) in names.iter().enumerate() {
            let got = query(
                &r,
                &EventQuery {
                    host: Some(n.clone()),
                    cluster: Some(n.clone()),
                    rule: Some(n.clone()),
                    limit: 100,
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(got.len(), 1, "{n:?}");
            assert_eq!(got[0].time, i as i64);
            assert_eq!(got[0].host.as_deref(), Some(n.as_str()));
            assert_eq!(&got[0].output, n);
        }
    }

    #[test]
    fn retention_keeps_the_newest_within_days_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = open(&dir.path().join("a.sqlite")).unwrap();
        let day = 86400;
        let now = 100 * day;
        let mut b = Batch {
            events: (0..10)
                .map(|i| {
                    ev(
                        now - (9 - i) * day,
                        EventKind::Alert,
                        "c",
                        Some("h"),
                        Some("r"),
                    )
                })
                .collect(),
            ..Batch::default()
        };
        write_batch(&mut c, &mut b).unwrap();
        // 3 days: keeps now-3d..now (4 events); then at most 2 by count.
        assert_eq!(prune(&c, now, 3, 1000).unwrap(), 6);
        assert_eq!(prune(&c, now, 3, 2).unwrap(), 2);
        let left = query(
            &c,
            &EventQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            left.iter().map(|e| e.time).collect::<Vec<_>>(),
            vec![now, now - day]
        );
    }

    #[test]
    fn states_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/a.sqlite");
        let mut c = open(&path).unwrap();
        let h = HostState {
            up: false,
            hard: true,
            attempt: 3,
            since: 7,
            flapping: true,
            history: (1u64 << 40) | 1,
        };
        let s = SvcState {
            state: Status::Critical,
            hard: false,
            attempt: 2,
            flapping: true,
            since: 9,
            history: (1u64 << 41) | 2,
        };
        let mut b = Batch {
            hosts: vec![
                ("c".into(), "h".into(), Some(h)),
                ("c".into(), "gone".into(), Some(h)),
            ],
            services: vec![("load".into(), "c".into(), "h".into(), Some(s))],
            incidents: vec![("c".into(), Some((5, 20, 30)))],
            ..Batch::default()
        };
        write_batch(&mut c, &mut b).unwrap();
        let mut b = Batch {
            hosts: vec![("c".into(), "gone".into(), None)],
            ..Batch::default()
        };
        write_batch(&mut c, &mut b).unwrap();
        drop(c);
        let l = load(&open(&path).unwrap()).unwrap();
        assert_eq!(l.hosts, vec![("c".into(), "h".into(), h)]);
        assert_eq!(l.services, vec![("load".into(), "c".into(), "h".into(), s)]);
        assert_eq!(l.incidents, vec![("c".into(), 5, 20, 30)]);
    }

    #[test]
    fn a_database_without_host_flap_columns_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE host_state(cluster TEXT NOT NULL, host TEXT NOT NULL, \
                 up INTEGER NOT NULL, hard INTEGER NOT NULL, attempt INTEGER NOT NULL, \
                 since INTEGER NOT NULL, PRIMARY KEY(cluster, host)) WITHOUT ROWID;
                 INSERT INTO host_state VALUES ('c', 'h', 0, 1, 2, 5);",
            )
            .unwrap();
        }
        let c = open(&path).unwrap();
        let l = load(&c).unwrap();
        assert_eq!(
            l.hosts,
            vec![(
                "c".into(),
                "h".into(),
                HostState {
                    up: false,
                    hard: true,
                    attempt: 2,
                    since: 5,
                    flapping: false,
                    history: 0,
                }
            )]
        );
        drop(c);
        // Opening again finds the columns and changes nothing.
        assert_eq!(load(&open(&path).unwrap()).unwrap().hosts, l.hosts);
    }
}

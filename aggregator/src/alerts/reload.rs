//! SIGHUP: `[[alert]]`, the `[alerts]` keys that can change live,
//! `[[handler]]`/`[handlers]` and `[nagios]` read again from the
//! configuration file, without losing state.
//!
//! The whole file is read and validated as at start; a file that does not
//! read or validate is logged with the key named and nothing changes. Then:
//!
//! - the engine gets the new rules and `[alerts]` before its next evaluation
//!   ([`super::engine::Engine::reload`]): rules are known by name, so a rule
//!   that stays keeps its states, attempts and flap histories; a removed
//!   rule's states are dropped (rows deleted, one log line per rule, no
//!   event: nothing recovered); a new rule starts OK/HARD/1. The keys that
//!   shape the store (`alerts.enabled`, `database`, `history_days`,
//!   `history_max_events`, `queue_batches`) keep their running values, each
//!   change logged as needing a restart;
//! - when `[[handler]]` or `[handlers]` changed, the dispatcher is replaced;
//!   runs already going finish under the old one and are recorded (rate
//!   windows and the one-run-per-target check start afresh);
//! - when `[nagios]` or the rules changed, the sinks are restarted with the
//!   new settings (their next full resend brings Nagios up to date).
//!
//! Other sections are not this module's: they keep their running values
//! (other modules reload what they own on the same signal).

use super::{Alerts, Stats};
use crate::config::Config;
use crate::config::alerts::{AlertRule, AlertsConfig};
use crate::config::nagios::{HandlerConfig, HandlersConfig, NagiosConfig};
use crate::diag::{self, Event, Level, LogAs};
use crate::state::State;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What follows the engine's events, as running.
struct Followers {
    alerts: Alerts,
    state: Arc<State>,
    shutdown: CancellationToken,
    engine: (AlertsConfig, Vec<AlertRule>),
    handlers: (Vec<HandlerConfig>, HandlersConfig),
    handlers_stop: CancellationToken,
    handlers_task: Option<JoinHandle<()>>,
    /// `[nagios]` and the rules the running sinks were started with.
    nagios: (NagiosConfig, Vec<AlertRule>),
    nagios_stop: CancellationToken,
    nagios_task: Option<JoinHandle<()>>,
}

/// The `[alerts]` keys a reload cannot change (they shape the store).
const RESTART_ONLY: [&str; 5] = [
    "alerts.enabled",
    "alerts.database",
    "alerts.history_days",
    "alerts.history_max_events",
    "alerts.queue_batches",
];

impl Followers {
    fn start_handlers(&mut self) {
        self.handlers_stop = self.shutdown.child_token();
        self.handlers_task = crate::handlers::start_with_stop(
            &self.handlers.0,
            &self.handlers.1,
            self.alerts.clone(),
            self.handlers_stop.clone(),
            self.shutdown.clone(),
        );
    }

    /// Starts sinks for `cfg` and `rules`: their stop token and task.
    fn start_nagios(
        &self,
        cfg: &NagiosConfig,
        rules: Vec<AlertRule>,
    ) -> anyhow::Result<(CancellationToken, Option<JoinHandle<()>>)> {
        let stop = self.shutdown.child_token();
        let task = crate::nagios::start(
            cfg,
            rules,
            self.state.clone(),
            self.alerts.clone(),
            stop.clone(),
        )?;
        Ok((stop, task))
    }

    /// Applies `new` (already validated).
    async fn apply(&mut self, new: Config) {
        let mut cfg = new.alerts_config();
        let running = &self.engine.0;
        // Keys that shape the store keep their running values.
        let restart: Vec<&str> = RESTART_ONLY
            .into_iter()
            .zip([
                // The engine runs: only switching it off can differ.
                !new.alerts_enabled(),
                cfg.database != running.database,
                cfg.history_days != running.history_days,
                cfg.history_max_events != running.history_max_events,
                cfg.queue_batches != running.queue_batches,
            ])
            .filter_map(|(k, changed)| changed.then_some(k))
            .collect();
        for key in &restart {
            tracing::warn!(
                key,
                "reload: {key} changed; it takes effect at the next restart"
            );
        }
        cfg.enabled = running.enabled;
        cfg.database = running.database.clone();
        cfg.history_days = running.history_days;
        cfg.history_max_events = running.history_max_events;
        cfg.queue_batches = running.queue_batches;
        let rules_changed = new.alert != self.engine.1;
        if cfg != self.engine.0 || rules_changed {
            self.alerts.reload(cfg.clone(), new.alert.clone());
            self.engine = (cfg, new.alert.clone());
        }
        if (&new.handler, &new.handlers) != (&self.handlers.0, &self.handlers.1) {
            self.handlers_stop.cancel();
            if let Some(t) = self.handlers_task.take() {
                let _ = t.await;
            }
            self.handlers = (new.handler.clone(), new.handlers.clone());
            self.start_handlers();
            tracing::info!(
                handlers = self.handlers.0.len(),
                "reload: [[handler]] and [handlers] applied"
            );
        }
        if (&new.nagios, &new.alert) != (&self.nagios.0, &self.nagios.1) {
            // The new sinks first: when they cannot start (say, an
            // unreadable password file) the running ones stay.
            match self.start_nagios(&new.nagios, new.alert.clone()) {
                Ok((stop, task)) => {
                    self.nagios_stop.cancel();
                    if let Some(t) = self.nagios_task.take() {
                        let _ = t.await;
                    }
                    (self.nagios_stop, self.nagios_task) = (stop, task);
                    self.nagios = (new.nagios.clone(), new.alert.clone());
                    tracing::info!("reload: [nagios] applied");
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "reload: the new [nagios] sinks cannot start; the running ones stay"
                ),
            }
        }
    }
}

/// Starts the handlers and the Nagios sink for `config`, and, when the
/// configuration came from a file, the task that reloads them and the
/// engine's rules on SIGHUP. Everything ends at `shutdown`.
pub fn start(
    config: &Config,
    alerts: &Alerts,
    state: Arc<State>,
    shutdown: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<()> {
    let mut f = Followers {
        alerts: alerts.clone(),
        state,
        shutdown: shutdown.clone(),
        engine: (config.alerts_config(), config.alert.clone()),
        handlers: (config.handler.clone(), config.handlers.clone()),
        handlers_stop: CancellationToken::new(),
        handlers_task: None,
        nagios: (config.nagios.clone(), config.alert.clone()),
        nagios_stop: CancellationToken::new(),
        nagios_task: None,
    };
    f.start_handlers();
    (f.nagios_stop, f.nagios_task) = f.start_nagios(&config.nagios, config.alert.clone())?;
    let path: Option<PathBuf> = config.source.clone();
    use tokio::signal::unix::{SignalKind, signal};
    // Installed now, so a SIGHUP right after start is not the default
    // action (which ends the process).
    let hup = match &path {
        Some(_) => Some(signal(SignalKind::hangup())?),
        None => None,
    };
    tasks.spawn(async move {
        if let (Some(path), Some(mut hup)) = (path, hup) {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    got = hup.recv() => {
                        if got.is_none() {
                            break;
                        }
                        let p = path.clone();
                        match tokio::task::spawn_blocking(move || Config::load(&p)).await {
                            Ok(Ok(new)) => {
                                f.apply(new).await;
                                diag::emit_rare(Reloaded { file: &path }, f.alerts.stats());
                            }
                            Ok(Err(e)) => {
                                diag::emit_rare(ReloadInvalid { file: &path, error: &e }, f.alerts.stats());
                            }
                            Err(e) => {
                                diag::emit_rare(ReloadInvalid { file: &path, error: &e }, f.alerts.stats());
                            }
                        }
                    }
                }
            }
        } else {
            shutdown.cancelled().await;
        }
        // The sinks close their queues and their writer threads end.
        for t in [f.handlers_task.take(), f.nagios_task.take()]
            .into_iter()
            .flatten()
        {
            let _ = t.await;
        }
    });
    Ok(())
}

// Internal events of the reload (rare by nature: one per SIGHUP), counted in
// `ganglion_alerts_reloads_total{result}`.

/// The file was read, validated and applied.
struct Reloaded<'a> {
    file: &'a std::path::Path,
}

impl Event for Reloaded<'_> {
    type Counters = Stats;
    type Key = ();
    const LEVEL: Level = Level::INFO;
    fn count(&self, c: &Stats) {
        diag::inc(&c.reloads_applied);
    }
    fn log_as(&self) -> LogAs<()> {
        LogAs::Always
    }
    fn log(&self, _: &Stats) {
        diag::line!(Self::LEVEL, file = %self.file.display(),
            "reload: [[alert]], [alerts], [[handler]] and [nagios] read again");
    }
}

/// The file did not read or validate: nothing changed.
struct ReloadInvalid<'a> {
    file: &'a std::path::Path,
    error: &'a dyn std::fmt::Display,
}

impl Event for ReloadInvalid<'_> {
    type Counters = Stats;
    type Key = ();
    const LEVEL: Level = Level::ERROR;
    fn count(&self, c: &Stats) {
        diag::inc(&c.reloads_invalid);
    }
    fn log_as(&self) -> LogAs<()> {
        LogAs::Always
    }
    fn log(&self, _: &Stats) {
        diag::line!(Self::LEVEL, file = %self.file.display(), error = %self.error,
            "reload: the configuration is not valid; [[alert]], [alerts], [[handler]] and [nagios] keep their running values");
    }
}

//! Icinga 2's REST API as a destination for passive results:
//! `POST /v1/actions/process-check-result` per result (HTTPS, basic auth,
//! the server's certificate checked against `nagios.icinga2_ca` or the
//! system's CAs), on its own thread behind its own bounded queue. `ttl` is
//! the freshness threshold, so Icinga itself notices an aggregator that
//! stopped sending. A result for an object Icinga does not know is counted
//! (`unknown_object`), not retried; after a failed connection the rest of
//! that batch is dropped (counted) rather than each waiting for its timeout
//! — the next resend repeats the state.

use super::{Passive, Queue};
use crate::config::nagios::NagiosConfig;
use crate::diag::{self, Diag, Event, Level, LogAs};
use crate::telemetry::LabelledCounter;
use ganglion_nagios::client::{self, BaseUrl, Request};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Counters {
    sent: AtomicU64,
    unknown_object: AtomicU64,
    failed: AtomicU64,
    queue_full: AtomicU64,
    unrepresentable: AtomicU64,
}

static COUNTERS: Counters = Counters {
    sent: AtomicU64::new(0),
    unknown_object: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    queue_full: AtomicU64::new(0),
    unrepresentable: AtomicU64::new(0),
};

/// `ganglion_icinga2_results_total{result}`.
pub fn metrics() -> LabelledCounter {
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let c = &COUNTERS;
    (
        "ganglion_icinga2_results_total",
        "Passive results for Icinga 2's API by outcome (all but sent were dropped)",
        "result",
        vec![
            ("sent", g(&c.sent)),
            ("unknown_object", g(&c.unknown_object)),
            ("failed", g(&c.failed)),
            ("queue_full", g(&c.queue_full)),
            ("unrepresentable", g(&c.unrepresentable)),
        ],
    )
}

/// Can `p` name its Icinga 2 object? The service is addressed as
/// `host!service`, so a `!` in the host would name another object (and an
/// empty name none); such results are dropped and counted, never sent.
/// The rest of the body is JSON (serde escapes every string).
pub fn addressable(p: &Passive) -> bool {
    !p.host.is_empty()
        && !p.host.contains('!')
        && p.service.as_deref().is_none_or(|s| !s.is_empty())
}

/// The request body for one result.
pub fn body(p: &Passive, ttl: u32) -> serde_json::Value {
    let mut b = json!({
        "exit_status": p.code,
        "plugin_output": p.output,
        "check_source": "ganglion",
        "execution_end": p.time,
        "ttl": ttl,
    });
    match &p.service {
        Some(svc) => {
            b["type"] = "Service".into();
            b["service"] = format!("{}!{svc}", p.host).into();
        }
        None => {
            b["type"] = "Host".into();
            b["host"] = p.host.clone().into();
        }
    }
    if !p.perfdata.is_empty() {
        b["performance_data"] = p.perfdata.clone().into();
    }
    b
}

struct Sender {
    base: BaseUrl,
    auth: (String, String),
    tls: Option<Arc<client::TlsConfig>>,
    timeout: Duration,
    ttl: u32,
    diag: Diag<&'static str>,
}

impl Sender {
    fn send_all(&self, results: Vec<Passive>) {
        let total = results.len();
        for (i, p) in results.iter().enumerate() {
            if !addressable(p) {
                COUNTERS.unrepresentable.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let body = body(p, self.ttl).to_string();
            let req = Request {
                method: "POST",
                path: "/v1/actions/process-check-result",
                body: Some(body.as_bytes()),
                auth: Some(&self.auth),
            };
            let secs = self.timeout.as_secs();
            match client::request(
                &self.base,
                &req,
                self.tls.clone(),
                Instant::now() + self.timeout,
                secs,
            ) {
                Ok(r) if r.status == 200 => {
                    COUNTERS.sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok(r) if r.status == 404 => {
                    self.diag.emit(UnknownObject { result: p }, &COUNTERS);
                }
                Ok(r) => {
                    self.diag.emit(
                        Refused {
                            status: r.status,
                            body: &r.body,
                        },
                        &COUNTERS,
                    );
                }
                Err(e) => {
                    let dropped = (total - i) as u64;
                    self.diag
                        .emit(Unreachable { error: &e, dropped }, &COUNTERS);
                    return;
                }
            }
        }
    }
}

// Internal events of the Icinga 2 sink (see `diag`), counted in
// `ganglion_icinga2_results_total{result}` and logged once a minute each.

/// Icinga answered 404: it has no such host or service.
struct UnknownObject<'a> {
    result: &'a Passive,
}

impl Event for UnknownObject<'_> {
    type Counters = Counters;
    type Key = &'static str;
    const LEVEL: Level = Level::WARN;
    fn count(&self, c: &Counters) {
        diag::inc(&c.unknown_object);
    }
    fn log_as(&self) -> LogAs<&'static str> {
        LogAs::PerKey("404")
    }
    fn log(&self, _: &Counters) {
        diag::line!(Self::LEVEL, host = %self.result.host,
            service = self.result.service.as_deref().unwrap_or(""),
            "Icinga 2 does not know this object (define it, e.g. from `ganglion-aggregator nagios-config`); its results are dropped (logged once a minute)");
    }
}

/// Icinga refused a result with another status.
struct Refused<'a> {
    status: u16,
    body: &'a [u8],
}

impl Event for Refused<'_> {
    type Counters = Counters;
    type Key = &'static str;
    const LEVEL: Level = Level::WARN;
    fn count(&self, c: &Counters) {
        diag::inc(&c.failed);
    }
    fn log_as(&self) -> LogAs<&'static str> {
        LogAs::PerKey("status")
    }
    fn log(&self, _: &Counters) {
        let text = String::from_utf8_lossy(self.body);
        diag::line!(
            Self::LEVEL,
            status = self.status,
            "Icinga 2 refused a check result: {} (logged once a minute)",
            text.chars().take(300).collect::<String>()
        );
    }
}

/// The API could not be reached: the rest of the batch is dropped.
struct Unreachable<'a> {
    error: &'a dyn std::fmt::Display,
    dropped: u64,
}

impl Event for Unreachable<'_> {
    type Counters = Counters;
    type Key = &'static str;
    const LEVEL: Level = Level::WARN;
    fn count(&self, c: &Counters) {
        c.failed.fetch_add(self.dropped, Ordering::Relaxed);
    }
    fn log_as(&self) -> LogAs<&'static str> {
        LogAs::PerKey("connect")
    }
    fn log(&self, _: &Counters) {
        diag::line!(
            Self::LEVEL,
            "Icinga 2 API: {}; {} results dropped, sent again every nagios.resend_secs (logged once a minute)",
            self.error,
            self.dropped
        );
    }
}

/// Starts the Icinga 2 writer when `nagios.icinga2_url` is set; returns its
/// queue. Fails (naming the key) when the password file or CA file cannot
/// be read.
pub(super) fn start(cfg: &NagiosConfig) -> anyhow::Result<Option<Arc<Queue<Passive>>>> {
    let Some(url) = &cfg.icinga2_url else {
        return Ok(None);
    };
    let base = BaseUrl::parse(url).map_err(|e| anyhow::anyhow!("nagios.icinga2_url: {e}"))?;
    let password = match &cfg.icinga2_password_file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("nagios.icinga2_password_file {}: {e}", p.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        None => String::new(),
    };
    let tls = if base.tls {
        Some(
            client::tls_config(cfg.icinga2_ca.as_deref())
                .map_err(|e| anyhow::anyhow!("nagios.icinga2_ca: {e}"))?,
        )
    } else {
        None
    };
    let sender = Sender {
        base,
        auth: (cfg.icinga2_user.clone(), password),
        tls,
        timeout: Duration::from_secs(u64::from(cfg.icinga2_timeout_secs)),
        ttl: cfg.freshness(),
        diag: Diag::with_capacity(Duration::from_secs(60), 16),
    };
    let q = Queue::new(cfg.queue_max_lines, &COUNTERS.queue_full);
    let qt = q.clone();
    std::thread::Builder::new()
        .name("icinga2-sink".into())
        .spawn(move || {
            while let Some(results) = qt.take() {
                sender.send_all(results);
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot start the Icinga 2 sink thread: {e}"))?;
    tracing::info!(url = %url, "sending passive results to Icinga 2's API");
    Ok(Some(q))
}

//! `/api/alerts` (current problems, from the engine's last evaluation) and
//! `/api/events` (the stored history, newest first). Shapes: `web/API.md`.

use super::{AppState, IntoJson, bad, error};
use crate::alerts::{Alerts, EventKind, EventQuery};
use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ganglion_proto::range::Status;
use serde_json::json;

/// `limit` when none is given.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 1000;
/// Longest filter text taken.
const MAX_TEXT: usize = 256;

fn engine(app: &AppState) -> Result<&Alerts, Response> {
    app.alerts.as_ref().ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "alerts are not enabled (add [alerts] or [[alert]] to the configuration)",
        )
    })
}

/// Filters of both endpoints, each checked and named when wrong.
#[derive(Default)]
struct Filters {
    q: EventQuery,
}

fn parse(pairs: &[(String, String)], allowed: &[&str]) -> Result<Filters, Response> {
    let mut f = Filters {
        q: EventQuery {
            limit: DEFAULT_LIMIT,
            ..EventQuery::default()
        },
    };
    for (k, v) in pairs {
        if !allowed.contains(&k.as_str()) {
            return Err(bad(format!(
                "unknown parameter `{k}` (known: {})",
                allowed.join(", ")
            )));
        }
        if v.len() > MAX_TEXT {
            return Err(bad(format!("`{k}` is longer than {MAX_TEXT} bytes")));
        }
        let time = |v: &str| {
            v.parse::<i64>()
                .map_err(|_| bad(format!("`{k}` must be unix seconds, got {v:?}")))
        };
        match k.as_str() {
            "cluster" => f.q.cluster = Some(v.clone()),
            "host" => f.q.host = Some(v.clone()),
            "rule" => f.q.rule = Some(v.clone()),
            "kind" => {
                if EventKind::parse(v).is_none() {
                    let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                    return Err(bad(format!(
                        "`kind` must be one of {}, got {v:?}",
                        known.join(", ")
                    )));
                }
                f.q.kind = Some(v.clone());
            }
            "since" => f.q.since = Some(time(v)?),
            "until" => f.q.until = Some(time(v)?),
            "limit" => {
                f.q.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad(format!("`limit` must be 1 to {MAX_LIMIT}, got {v:?}")))?;
            }
            _ => {}
        }
    }
    if let (Some(s), Some(u)) = (f.q.since, f.q.until)
        && s > u
    {
        return Err(bad("`since` is after `until`"));
    }
    Ok(f)
}

/// `GET /api/alerts[?cluster=&host=]`.
pub(super) async fn alerts(
    AxState(app): AxState<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let a = match engine(&app) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let f = match parse(&pairs, &["cluster", "host"]) {
        Ok(f) => f.q,
        Err(r) => return r,
    };
    let h = a.health();
    let keep = |cluster: &str, host: &str| {
        f.cluster.as_deref().is_none_or(|c| c == cluster)
            && f.host.as_deref().is_none_or(|x| x == host)
    };
    let hosts_down: Vec<_> = h
        .hosts
        .iter()
        .filter(|x| !x.up && keep(&x.cluster, &x.host))
        .collect();
    let problems: Vec<_> = h
        .services
        .iter()
        .filter(|s| s.state != Status::Ok && keep(&s.cluster, &s.host))
        .collect();
    let count = |st: Status| problems.iter().filter(|s| s.state == st).count();
    let incidents: Vec<_> = h
        .incidents
        .iter()
        .filter(|i| f.cluster.as_deref().is_none_or(|c| c == i.cluster))
        .collect();
    json!({
        "time": h.time,
        "warming_up": h.warming_up,
        "counts": {
            "down": hosts_down.len(),
            "warning": count(Status::Warning),
            "critical": count(Status::Critical),
            "unknown": count(Status::Unknown),
        },
        "hosts_down": hosts_down,
        "problems": problems,
        "incidents": incidents,
    })
    .into_response_json()
}

/// `GET /api/events?cluster=&host=&rule=&kind=&since=&until=&limit=`.
pub(super) async fn events(
    AxState(app): AxState<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let a = match engine(&app) {
        Ok(a) => a.clone(),
        Err(r) => return r,
    };
    let q = match parse(
        &pairs,
        &["cluster", "host", "rule", "kind", "since", "until", "limit"],
    ) {
        Ok(f) => f.q,
        Err(r) => return r,
    };
    // A database read: one of the heavy requests, off the async threads.
    let _permit = match app.limits.heavy().await {
        Ok(p) => p,
        Err(busy) => return busy,
    };
    match tokio::task::spawn_blocking(move || a.events(&q)).await {
        Ok(Ok(events)) => json!({ "events": events }).into_response_json(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "event query failed"),
    }
    .into_response()
}

//! `/api/alerts` (current problems, from the engine's last evaluation) and
//! `/api/events` (the stored history, newest first). Shapes: `web/API.md`.

use super::{ApiError, AppState, IntoJson, error};
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

fn engine(app: &AppState) -> Result<&Alerts, ApiError> {
    app.alerts.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "alerts are not enabled (add [alerts] or [[alert]] to the configuration)".into(),
        )
    })
}

struct Filters {
    q: EventQuery,
}

/// The filters of both endpoints, each checked and named when wrong.
fn parse(pairs: &[(String, String)], allowed: &[&str]) -> Result<Filters, ApiError> {
    let bad = |m: String| ApiError::bad(m);
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
        return Err(bad("`since` is after `until`".into()));
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
        Err(e) => return e.into_response(),
    };
    let f = match parse(&pairs, &["cluster", "host"]) {
        Ok(f) => f.q,
        Err(e) => return e.into_response(),
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
    // Flapping hosts, UP or DOWN (flap detection counts every check).
    let hosts_flapping: Vec<_> = h
        .hosts
        .iter()
        .filter(|x| x.flapping && keep(&x.cluster, &x.host))
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
            "flapping": hosts_flapping.len(),
        },
        "hosts_down": hosts_down,
        "hosts_flapping": hosts_flapping,
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
        Err(e) => return e.into_response(),
    };
    let q = match parse(
        &pairs,
        &["cluster", "host", "rule", "kind", "since", "until", "limit"],
    ) {
        Ok(f) => f.q,
        Err(e) => return e.into_response(),
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

#[cfg(test)]
mod tests {
    use super::super::tests::{app_state, get};
    use super::super::{AppState, router};
    use crate::alerts::{self, Event, EventKind, StateType};
    use crate::config::HttpConfig;
    use crate::state::{Limits, State};
    use axum::Router;
    use axum::http::StatusCode;
    use serde_json::Value;
    use std::sync::Arc;

    fn app(state: Arc<State>, a: Option<alerts::Alerts>, dir: &std::path::Path) -> Router {
        router(AppState {
            alerts: a,
            ..app_state(state, dir, &HttpConfig::default())
        })
    }

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
            metric: None,
            state: "CRITICAL".into(),
            state_type: StateType::Hard,
            attempt: 1,
            max_attempts: 1,
            value: None,
            output: String::new(),
            handler: None,
        }
    }

    #[tokio::test]
    async fn events_filter_and_bad_input_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(State::new(
            "g".into(),
            "http://x/".into(),
            Vec::new(),
            Limits {
                max_hosts: 10,
                max_metrics: 10,
                max_string_bytes: 64,
            },
            Arc::default(),
        ));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (a, threads) = alerts::start(
            alerts::Params {
                config: Default::default(),
                rules: Vec::new(),
                database: dir.path().join("a.sqlite"),
            },
            state.clone(),
            shutdown.clone(),
        )
        .unwrap();
        let mut rx = a.subscribe();
        a.record(ev(100, EventKind::HostDown, "web", Some("n1"), None));
        a.record(ev(200, EventKind::Alert, "web", Some("n2"), Some("load")));
        a.record(ev(300, EventKind::Alert, "db", Some("d1"), Some("disk")));
        let mut stored = 0;
        while stored < 3 {
            let e = rx.recv().await.unwrap();
            assert!(e.id > 0, "broadcast after it is stored");
            stored += 1;
        }
        let r = app(state.clone(), Some(a), dir.path());
        let times = |v: &Value| -> Vec<i64> {
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["time"].as_i64().unwrap())
                .collect()
        };
        let (s, v) = get(&r, "/api/events").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(times(&v), vec![300, 200, 100]);
        assert_eq!(v["events"][0]["kind"], "alert");
        assert_eq!(v["events"][0]["state_type"], "HARD");
        for (q, want) in [
            ("cluster=web", vec![200, 100]),
            ("host=d1", vec![300]),
            ("rule=load", vec![200]),
            ("kind=host_down", vec![100]),
            ("since=150&until=250", vec![200]),
            ("limit=1", vec![300]),
        ] {
            let (s, v) = get(&r, &format!("/api/events?{q}")).await;
            assert_eq!(s, StatusCode::OK, "{q}");
            assert_eq!(times(&v), want, "{q}");
        }
        for (q, key) in [
            ("limit=0", "`limit`"),
            ("limit=5000", "`limit`"),
            ("since=yesterday", "`since`"),
            ("kind=explosion", "`kind`"),
            ("colour=red", "`colour`"),
            ("since=5&until=1", "`since`"),
        ] {
            let (s, v) = get(&r, &format!("/api/events?{q}")).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
            assert!(v["error"].as_str().unwrap().contains(key), "{q}: {v}");
        }
        let (s, v) = get(&r, "/api/alerts").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["counts"]["down"], 0);
        assert_eq!(v["counts"]["flapping"], 0);
        assert!(v["hosts_flapping"].as_array().unwrap().is_empty());
        assert!(v["problems"].as_array().unwrap().is_empty());
        shutdown.cancel();
        for t in threads {
            tokio::task::spawn_blocking(move || t.join().unwrap())
                .await
                .unwrap();
        }
        // Without the engine both answer 404, saying how to enable it.
        let r = app(state, None, dir.path());
        let (s, v) = get(&r, "/api/alerts").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(v["error"].as_str().unwrap().contains("[alerts]"));
    }
}

//! `/metrics`: every counter, in OpenMetrics or Prometheus text.

use super::AppState;
use crate::state::{Census, now_secs};
use axum::extract::State as AxState;
use axum::http::header;
use axum::response::{IntoResponse, Response};

pub(super) async fn metrics(
    AxState(app): AxState<AppState>,
    headers: axum::http::HeaderMap,
) -> Response {
    let mut counters = app.state.counters().list();
    let mut labelled = Vec::new();
    if let Some(s) = &app.storage {
        counters.extend(s.counters.list());
        labelled.extend(s.counters.labelled());
    }
    labelled.extend(app.listen_counters.labelled());
    labelled.push(app.limits.counters.labelled());
    labelled.extend(app.limits.security.labelled());
    labelled.extend(crate::handlers::metrics());
    labelled.extend(crate::nagios::metrics());
    let mut alert_gauges = Vec::new();
    if let Some(a) = &app.alerts {
        a.telemetry(&mut counters, &mut labelled, &mut alert_gauges);
    }
    crate::telemetry::auth_metrics(&app.auth, &mut counters, &mut labelled);
    let census = app.state.census(now_secs());
    let per_cluster = |f: &dyn Fn(&Census) -> usize| {
        census
            .iter()
            .map(|c| (c.cluster.clone(), f(c) as i64))
            .collect::<Vec<_>>()
    };
    let mut gauges = vec![
        (
            "ganglion_hosts_up",
            "Hosts alive (TN < 4 x TMAX) per cluster",
            per_cluster(&|c| c.hosts_up as usize),
        ),
        (
            "ganglion_hosts_down",
            "Hosts not heard from for 4 x TMAX per cluster",
            per_cluster(&|c| c.hosts_down as usize),
        ),
        (
            "ganglion_metrics",
            "Metrics held per cluster",
            per_cluster(&|c| c.metrics),
        ),
    ];
    gauges.extend(alert_gauges);
    // OpenMetrics when the scraper asks for it (Prometheus does), else the
    // classic text format.
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let text = crate::telemetry::Exposition {
        counters,
        labelled,
        gauges,
        forwards: app.forwards.clone(),
    }
    .render(openmetrics);
    let ctype = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    ([(header::CONTENT_TYPE, ctype)], text).into_response()
}

//! Browsing the snapshot: `/api/grid`, `/api/cluster/{c}`, `/api/host/{c}/{h}`
//! and `/api/search` (the shapes `web/API.md` documents).

use super::{AppState, IntoJson, bad, error};
use crate::state::{ClusterSnap, HostSnap, now_secs};
use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn summary_json(s: &crate::state::Summary) -> Value {
    json!({
        "hosts_up": s.hosts_up,
        "hosts_down": s.hosts_down,
        "metrics": s.metrics.iter().map(|m| json!({
            "name": m.name, "sum": m.sum, "num": m.num, "units": m.units, "sum_text": m.sum_text(),
        })).collect::<Vec<_>>(),
    })
}

fn host_brief(h: &HostSnap) -> Value {
    let num = |n: &str| {
        h.metrics
            .iter()
            .find(|m| *m.name == *n)
            .and_then(|m| m.number)
    };
    json!({
        "name": h.name, "ip": h.ip, "alive": h.alive, "tn": h.tn, "reported": h.reported,
        "load_one": num("load_one"), "cpu_num": num("cpu_num"), "cpu_idle": num("cpu_idle"),
        "mem_free": num("mem_free"), "mem_total": num("mem_total"),
    })
}

fn cluster_brief(c: &ClusterSnap) -> Value {
    json!({
        "name": c.name, "localtime": c.localtime, "stale": c.stale, "owner": c.owner, "url": c.url,
        "hosts_up": c.summary.hosts_up, "hosts_down": c.summary.hosts_down,
    })
}

pub(super) async fn grid(AxState(app): AxState<AppState>) -> axum::Json<Value> {
    let snap = app.state.snapshot(now_secs());
    axum::Json(json!({
        "grid": snap.grid_name,
        "authority": snap.authority,
        "localtime": snap.localtime,
        "clusters": snap.clusters.iter().map(cluster_brief).collect::<Vec<_>>(),
        "grids": snap.grids.iter().map(|g| json!({
            "name": g.name, "authority": g.authority, "localtime": g.localtime, "stale": g.stale,
            "hosts_up": g.summary.hosts_up, "hosts_down": g.summary.hosts_down,
        })).collect::<Vec<_>>(),
        "summary": summary_json(&snap.grid_summary()),
    }))
}

#[derive(Deserialize)]
pub(super) struct ClusterQ {
    /// Adds each host's current value of this metric as `value` (the
    /// dashboard sorts small multiples by it).
    metric: Option<String>,
}

pub(super) async fn cluster(
    AxState(app): AxState<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ClusterQ>,
) -> Response {
    let snap = app.state.snapshot(now_secs());
    let Some(c) = snap.cluster(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("unknown cluster {name:?}"));
    };
    let mut metrics: Vec<&str> = c
        .hosts
        .iter()
        .flat_map(|h| h.metrics.iter())
        .filter(|m| m.metric_type.is_numeric())
        .map(|m| &*m.name)
        .collect();
    metrics.sort_unstable();
    metrics.dedup();
    let mut v = cluster_brief(c);
    v["hosts"] = c
        .hosts
        .iter()
        .map(|h| {
            let mut b = host_brief(h);
            if let Some(m) = &q.metric {
                b["value"] = h
                    .metrics
                    .iter()
                    .find(|x| *x.name == **m)
                    .and_then(|x| x.number)
                    .filter(|x| x.is_finite())
                    .into();
            }
            b
        })
        .collect::<Vec<_>>()
        .into();
    v["metrics"] = metrics.into();
    v["summary"] = summary_json(&c.summary);
    v.into_response_json()
}

pub(super) async fn host(
    AxState(app): AxState<AppState>,
    Path((cluster, host)): Path<(String, String)>,
) -> Response {
    let snap = app.state.snapshot(now_secs());
    let Some(c) = snap.cluster(&cluster) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("unknown cluster {cluster:?}"),
        );
    };
    let Some(h) = c.hosts.iter().find(|h| h.name == host) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("unknown host {host:?} in cluster {cluster:?}"),
        );
    };
    let mut v = host_brief(h);
    v["cluster"] = cluster.into();
    v["location"] = h.location.clone().into();
    v["tags"] = h.tags.clone().into();
    v["gmond_started"] = h.gmond_started.into();
    v["metrics"] = h
        .metrics
        .iter()
        .map(|m| {
            json!({
                "name": m.name, "val": m.val, "value": m.number, "type": m.metric_type.as_str(),
                "units": m.units, "slope": m.slope.as_str(), "tn": m.tn, "tmax": m.tmax, "dmax": m.dmax,
                "group": m.extra("GROUP").unwrap_or("other"), "title": m.extra("TITLE").unwrap_or(&*m.name),
                "desc": m.extra("DESC").unwrap_or(""), "numeric": m.metric_type.is_numeric(),
            })
        })
        .collect::<Vec<_>>()
        .into();
    v.into_response_json()
}

#[derive(Deserialize)]
pub(super) struct SearchQ {
    q: String,
}

pub(super) async fn search(AxState(app): AxState<AppState>, Query(q): Query<SearchQ>) -> Response {
    let needle = q.q.to_lowercase();
    if needle.is_empty() || needle.len() > 200 {
        return bad("q must be 1 to 200 characters");
    }
    // A scan of every host and metric: one of the heavy requests.
    let _permit = match app.limits.heavy().await {
        Ok(p) => p,
        Err(busy) => return busy,
    };
    let snap = app.state.snapshot(now_secs());
    let mut hosts = Vec::new();
    let mut metrics = Vec::new();
    for c in &snap.clusters {
        for h in &c.hosts {
            if h.name.to_lowercase().contains(&needle) || h.ip.contains(&needle) {
                hosts.push(json!({ "cluster": c.name, "host": h.name, "alive": h.alive }));
            }
            for m in &h.metrics {
                if m.name.to_lowercase().contains(&needle) && metrics.len() < 200 {
                    metrics.push(json!({ "cluster": c.name, "host": h.name, "metric": m.name }));
                }
            }
        }
    }
    hosts.truncate(200);
    json!({ "hosts": hosts, "metrics": metrics }).into_response_json()
}

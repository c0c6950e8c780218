//! `GET /api/senders`: every authenticated sender with its loss accounting,
//! and each cluster's `auth` mode.

use super::AppState;
use crate::state::now_secs;
use axum::extract::State as AxState;
use serde_json::{Value, json};

pub(super) async fn senders(AxState(app): AxState<AppState>) -> axum::Json<Value> {
    let rows = app.auth.rows();
    let clusters: Vec<Value> = app
        .auth
        .clusters
        .iter()
        .flatten()
        .map(|c| json!({"name": c.cluster, "auth": c.mode.as_str()}))
        .collect();
    axum::Json(json!({
        "localtime": now_secs(),
        "clusters": clusters,
        "senders": rows,
    }))
}

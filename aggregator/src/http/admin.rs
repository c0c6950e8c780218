//! `POST /api/flush`: write every cached sample to disk now (what readers
//! such as `rrd-export` call before reading the tree of a live aggregator).
//!
//! Allowed to a request that authenticated (`[http.basic_auth_users]`; with
//! users set, every request must) or that comes from `trusted_hosts`
//! (loopback always, or `all_trusted`), the same check as the XML ports:
//! `403` otherwise. Single-flight through the
//! [`FlushGate`](crate::flush_gate::FlushGate): a caller joins the pass that
//! will include its samples; one arriving less than
//! `http.flush_min_interval_secs` after a pass started from idle gets `429`
//! with `Retry-After`. Answers when the pass is done (up to
//! [`FULL_FLUSH_WAIT`]).

use super::auth::Authenticated;
use super::{AppState, IntoJson, error, retry_after};
use crate::flush_gate::Ticket;
use axum::Extension;
use axum::extract::{ConnectInfo, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long `POST /api/flush` waits for the writer's pass over every file.
pub const FULL_FLUSH_WAIT: Duration = Duration::from_secs(600);

pub(super) async fn flush(
    AxState(app): AxState<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    user: Option<Extension<Authenticated>>,
) -> Response {
    if user.is_none() && !crate::config::trusts(&app.trusted, app.all_trusted, peer.ip()) {
        app.limits
            .counters
            .flush_forbidden
            .fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::FORBIDDEN,
            &format!(
                "POST /api/flush is allowed only from trusted_hosts (or with all_trusted) or with basic-auth credentials (http.basic_auth_users); {} is not trusted",
                peer.ip()
            ),
        );
    }
    let Some(gate) = app.flush.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "RRD storage is off (write_rrds = false)",
        );
    };
    let ticket = gate.request();
    if let Ticket::RateLimited(d) = ticket {
        app.limits
            .counters
            .flush_rate_limited
            .fetch_add(1, Ordering::Relaxed);
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        return retry_after(
            StatusCode::TOO_MANY_REQUESTS,
            secs,
            &format!(
                "a full flush ran less than {} s ago (http.flush_min_interval_secs); retry in {secs} s",
                gate.min_interval().as_secs()
            ),
        );
    }
    if ticket.wait().await == Some(true) {
        json!({ "flushed": true }).into_response_json()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "the RRD writer did not finish within {} s; the pass goes on in the background",
                FULL_FLUSH_WAIT.as_secs()
            ),
        )
    }
}

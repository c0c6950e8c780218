//! The HTTP accept loop: hyper-util's server (HTTP/1.1, and HTTP/2 with prior
//! knowledge) under the shared connection governor, with timers.
//!
//! What a client sees at each limit:
//! - `http.max_connections` reached: its connection waits in the kernel's
//!   listen backlog until one ends (then is served), or times out / is
//!   refused by the kernel when the backlog is full too.
//! - `http.max_connections_per_ip` reached: the connection is accepted,
//!   answered `503 Service Unavailable` with `Retry-After: 5` and a JSON
//!   error, and closed.
//! - Headers not complete within `http.header_read_timeout_secs` of accept
//!   (or of the previous response): the connection is closed (hyper answers
//!   `408` when it has read part of a request).
//! - No request for `http.keepalive_timeout_secs` after the last response:
//!   the idle connection is closed.
//! - A request head over `http.max_header_bytes`: `431`.
//! - Shutdown: no new connections; idle ones are closed, running requests
//!   finish (bounded by the aggregator's stop timeout).

use super::HttpCounters;
use crate::listen::{Admission, ConnPermit, Governor};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The server's timers and sizes (`[http]`).
#[derive(Debug, Clone, Copy)]
pub struct ServerParams {
    /// `http.header_read_timeout_secs`.
    pub header_read_timeout: Duration,
    /// `http.keepalive_timeout_secs`.
    pub keepalive_timeout: Duration,
    /// `http.max_header_bytes`.
    pub max_header_bytes: usize,
}

/// `Retry-After` sent to a client over its per-address cap.
const PER_IP_RETRY_SECS: u64 = 5;

/// Serves `app` on `listener` until `shutdown`, every connection under a
/// permit of `governor`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    governor: Arc<Governor>,
    params: ServerParams,
    counters: Arc<super::HttpLimits>,
    shutdown: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(params.header_read_timeout)
        .max_buf_size(params.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(params.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(params.keepalive_timeout)
        .keep_alive_timeout(params.header_read_timeout);
    let builder = Arc::new(builder);
    let tracker = TaskTracker::new();
    let accept = || async { listener.accept().await.map(|(s, p)| (s, Some(p))) };
    loop {
        match governor.accept(&shutdown, accept).await {
            None => break,
            Some(Admission::Serve(s, Some(peer), permit)) => {
                tracker.spawn(connection(
                    s,
                    peer,
                    app.clone(),
                    builder.clone(),
                    params,
                    counters.clone(),
                    shutdown.clone(),
                    permit,
                ));
            }
            Some(Admission::OverIpCap(s, _, permit)) => {
                tracker.spawn(refuse_over_ip_cap(s, permit));
            }
            Some(Admission::Serve(..)) => {}
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// What the watchdog knows of a connection's requests.
struct Activity {
    started: AtomicU64,
    in_flight: AtomicUsize,
    last_end: Mutex<Instant>,
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last_end.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    params: ServerParams,
    limits: Arc<super::HttpLimits>,
    shutdown: CancellationToken,
    permit: ConnPermit,
) {
    let _ = stream.set_nodelay(true);
    let accepted = Instant::now();
    let activity = Arc::new(Activity {
        started: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        last_end: Mutex::new(accepted),
    });
    let act = activity.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        act.started.fetch_add(1, Ordering::Relaxed);
        act.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(act.clone());
        req.extensions_mut().insert(ConnectInfo(peer));
        let fut = tower::ServiceExt::oneshot(app.clone(), req);
        async move {
            let r = fut.await;
            drop(guard);
            r
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let counters: &HttpCounters = &limits.counters;
    let mut closing = false;
    loop {
        // Before the first request the header timeout runs from accept (it
        // also covers the HTTP-version sniffing, which hyper does not time);
        // between requests the keep-alive timeout runs from the last response.
        let (deadline, first) = if activity.started.load(Ordering::Relaxed) == 0 {
            (accepted + params.header_read_timeout, true)
        } else if activity.in_flight.load(Ordering::Relaxed) > 0 {
            (Instant::now() + params.keepalive_timeout, false)
        } else {
            let last = *activity.last_end.lock().unwrap_or_else(|p| p.into_inner());
            (last + params.keepalive_timeout, false)
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    let timed_out = e
                        .downcast_ref::<hyper::Error>()
                        .is_some_and(|h| h.is_timeout());
                    if timed_out {
                        counters.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            _ = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep_until(deadline), if !closing => {
                let idle = activity.in_flight.load(Ordering::Relaxed) == 0;
                let due = if first {
                    activity.started.load(Ordering::Relaxed) == 0
                } else {
                    idle && activity.last_end.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
                        >= params.keepalive_timeout
                };
                if due {
                    if first {
                        counters.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    } else {
                        counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                    }
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
    drop(permit);
}

/// A client over `http.max_connections_per_ip`: `503` with `Retry-After`,
/// then close. What it sent is read (briefly) first, so closing does not
/// reset the connection before the client has read the answer.
async fn refuse_over_ip_cap(mut s: TcpStream, permit: ConnPermit) {
    let body = format!(
        "{{\"error\":\"too many connections from your address (http.max_connections_per_ip); retry in {PER_IP_RETRY_SECS} s\"}}"
    );
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {PER_IP_RETRY_SECS}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        s.write_all(msg.as_bytes()).await?;
        s.shutdown().await?;
        let mut buf = [0u8; 4096];
        while s.read(&mut buf).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
    drop(permit);
}

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
//! - A request head not complete within `http.header_read_timeout_secs` of
//!   its first byte (or of accept, for a client that sends nothing): the
//!   connection is closed.
//! - No byte of a next request within `http.keepalive_timeout_secs` of the
//!   last response: the idle connection is closed.
//!
//! hyper's own header timer starts as soon as a connection waits for a head,
//! idle or not, so it would cut keep-alive at the header timeout; it is set to
//! the sum of both timeouts as a backstop, and the two limits above are
//! enforced per connection by a watchdog that sees the bytes arrive.
//! - A request head over `http.max_header_bytes`: `431`.
//! - With TLS (`http.tls_cert_file`): the handshake runs in the connection's
//!   task, under its permit (so it counts against both caps) and
//!   `http.tls_handshake_timeout_secs`; a client that has not finished it
//!   by then is cut (`ganglion_http_refused_total{reason="tls_handshake_timeout"}`),
//!   one that fails it is closed (`tls_handshake_failed`). The header and
//!   keep-alive timers start once the handshake is done. Refusals at the
//!   caps are answered over TLS too (after a handshake of at most
//!   [`REFUSAL_HANDSHAKE`]).
//! - Shutdown: no new connections; idle ones are closed, running requests
//!   finish (bounded by the aggregator's stop timeout).

use super::HttpCounters;
use super::tls::Tls;
use crate::diag::{self, Event, Level, LogAs};
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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The server's timers and sizes (`[http]`), and TLS when it is on.
#[derive(Debug, Clone)]
pub struct ServerParams {
    /// `http.header_read_timeout_secs`.
    pub header_read_timeout: Duration,
    /// `http.keepalive_timeout_secs`.
    pub keepalive_timeout: Duration,
    /// `http.max_header_bytes`.
    pub max_header_bytes: usize,
    /// `http.tls_cert_file` and `http.tls_key_file`, loaded.
    pub tls: Option<Arc<Tls>>,
    /// `http.tls_handshake_timeout_secs`.
    pub tls_handshake_timeout: Duration,
}

/// The longest handshake a refused TLS client is given to receive its 503.
pub const REFUSAL_HANDSHAKE: Duration = Duration::from_secs(1);

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
        .header_read_timeout(params.header_read_timeout + params.keepalive_timeout)
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
                    params.clone(),
                    counters.clone(),
                    shutdown.clone(),
                    permit,
                ));
            }
            Some(Admission::OverIpCap(s, _, permit)) => {
                tracker.spawn(refuse(
                    s,
                    permit,
                    "http.max_connections_per_ip",
                    "from your address",
                    params.tls.clone(),
                ));
            }
            Some(Admission::OverCap(s, refusal)) => {
                tracker.spawn(refuse(
                    s,
                    refusal,
                    "http.max_connections",
                    "on this server",
                    params.tls.clone(),
                ));
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
    times: Mutex<Times>,
    /// Wakes the watchdog when its deadline may have moved.
    changed: tokio::sync::Notify,
}

struct Times {
    /// When the last response was produced (or the connection accepted).
    last_end: Instant,
    /// First byte received since then: a head is being read.
    head_since: Option<Instant>,
}

impl Activity {
    fn times(&self) -> std::sync::MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(a: &Arc<Activity>) -> InFlight {
        a.started.fetch_add(1, Ordering::Relaxed);
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.times().head_since = None;
        a.changed.notify_one();
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut t = self.0.times();
        t.last_end = Instant::now();
        t.head_since = None;
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.notify_one();
    }
}

/// The socket (or the TLS stream over it), noting when the bytes of a new
/// request head start to arrive.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && self.activity.in_flight.load(Ordering::Relaxed) == 0 {
            let mut t = self.activity.times();
            if t.head_since.is_none() {
                t.head_since = Some(Instant::now());
                self.activity.changed.notify_one();
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why the watchdog may close a connection at its next deadline.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Due {
    /// A request is running: only look again later.
    Busy,
    /// A head started (or a fresh connection sent nothing) too long ago.
    Header,
    /// No next request after the keep-alive time.
    Idle,
}

/// The watchdog's next deadline and what it would mean.
fn next_deadline(a: &Activity, accepted: Instant, p: &ServerParams) -> (Instant, Due) {
    if a.in_flight.load(Ordering::Relaxed) > 0 {
        return (Instant::now() + p.keepalive_timeout, Due::Busy);
    }
    let t = a.times();
    match t.head_since {
        Some(since) => (since + p.header_read_timeout, Due::Header),
        None if a.started.load(Ordering::Relaxed) == 0 => {
            (accepted + p.header_read_timeout, Due::Header)
        }
        None => (t.last_end + p.keepalive_timeout, Due::Idle),
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
    match params.tls.clone() {
        None => serve_io(stream, peer, app, &builder, &params, &limits, &shutdown).await,
        Some(tls) => {
            let handshake = tokio::select! {
                _ = shutdown.cancelled() => None,
                r = tokio::time::timeout(params.tls_handshake_timeout, tls.acceptor().accept(stream)) => Some(r),
            };
            let event = match handshake {
                None => None,
                Some(Ok(Ok(s))) => {
                    serve_io(s, peer, app, &builder, &params, &limits, &shutdown).await;
                    None
                }
                Some(Ok(Err(e))) => Some(Handshake::Failed(peer, e)),
                Some(Err(_)) => Some(Handshake::TimedOut(peer)),
            };
            if let Some(e) = event {
                limits.diag.emit(e, &limits.counters);
            }
        }
    }
    drop(permit);
}

/// A TLS handshake that did not complete
/// (`ganglion_http_refused_total{reason="tls_handshake_failed|tls_handshake_timeout"}`):
/// scanners and plain-HTTP clients do this all day, so the line is at debug
/// level, once a minute per address.
enum Handshake {
    Failed(SocketAddr, std::io::Error),
    TimedOut(SocketAddr),
}

impl Event for Handshake {
    type Counters = HttpCounters;
    type Key = std::net::IpAddr;
    const LEVEL: Level = Level::DEBUG;

    fn count(&self, c: &HttpCounters) {
        match self {
            Handshake::Failed(..) => diag::inc(&c.tls_handshake_failed),
            Handshake::TimedOut(_) => diag::inc(&c.tls_handshake_timeouts),
        }
    }

    fn log_as(&self) -> LogAs<std::net::IpAddr> {
        match self {
            Handshake::Failed(p, _) | Handshake::TimedOut(p) => LogAs::PerKey(p.ip()),
        }
    }

    fn log(&self, _: &HttpCounters) {
        match self {
            Handshake::Failed(peer, error) => diag::line!(
                Self::LEVEL,
                %peer,
                %error,
                "TLS handshake failed (logged once a minute per address)"
            ),
            Handshake::TimedOut(peer) => diag::line!(
                Self::LEVEL,
                %peer,
                "TLS handshake not done in time; closed (logged once a minute per address)"
            ),
        }
    }
}

/// Serves HTTP on one (plain or TLS) connection until it ends, a timer
/// closes it, or shutdown.
async fn serve_io<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    builder: &auto::Builder<TokioExecutor>,
    params: &ServerParams,
    limits: &super::HttpLimits,
    shutdown: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let accepted = Instant::now();
    let activity = Arc::new(Activity {
        started: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        times: Mutex::new(Times {
            last_end: accepted,
            head_since: None,
        }),
        changed: tokio::sync::Notify::new(),
    });
    let act = activity.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let guard = InFlight::begin(&act);
        req.extensions_mut().insert(ConnectInfo(peer));
        let fut = tower::ServiceExt::oneshot(app.clone(), req);
        async move {
            let r = fut.await;
            drop(guard);
            r
        }
    });
    let io = Tracked {
        inner: stream,
        activity: activity.clone(),
    };
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let counters: &HttpCounters = &limits.counters;
    let mut closing = false;
    loop {
        let (deadline, due) = next_deadline(&activity, accepted, params);
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
            _ = activity.changed.notified(), if !closing => {}
            _ = tokio::time::sleep_until(deadline), if !closing => {
                // Still the same situation at its deadline? Then close.
                let (now_deadline, now_due) = next_deadline(&activity, accepted, params);
                if now_due != Due::Busy && now_due == due && now_deadline <= Instant::now() {
                    match due {
                        Due::Header => counters.header_timeouts.fetch_add(1, Ordering::Relaxed),
                        _ => counters.idle_closed.fetch_add(1, Ordering::Relaxed),
                    };
                    // No request is running: dropping the connection closes
                    // the socket at once (a graceful shutdown would wait for
                    // a half-read head to finish).
                    break;
                }
            }
        }
    }
}

/// A client over `http.max_connections_per_ip` or `http.max_connections`:
/// `503` with `Retry-After`, then close; `hold` (the connection's slot) is
/// given back at once. Over TLS after a handshake of at most
/// [`REFUSAL_HANDSHAKE`] (a client that does not finish it is just closed).
async fn refuse<P>(mut s: TcpStream, hold: P, key: &str, where_: &str, tls: Option<Arc<Tls>>) {
    let body = format!(
        "{{\"error\":\"too many connections {where_} ({key}); retry in {PER_IP_RETRY_SECS} s\"}}"
    );
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {PER_IP_RETRY_SECS}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Some(tls) = tls {
        if let Ok(Ok(mut t)) =
            tokio::time::timeout(REFUSAL_HANDSHAKE, tls.acceptor().accept(s)).await
        {
            let _ =
                tokio::time::timeout(Duration::from_millis(200), t.write_all(msg.as_bytes())).await;
            let _ = tokio::time::timeout(Duration::from_millis(50), t.flush()).await;
            // What the client sent after the handshake is read, so the
            // close does not reset the connection under the answer.
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_millis(50), t.read(&mut buf)).await;
            let _ = tokio::time::timeout(Duration::from_millis(50), t.shutdown()).await;
        }
        drop(hold);
        return;
    }
    // Done in microseconds, so a few refusal slots keep a backlog full of idle
    // sockets moving: the answer fits the socket buffer; what the client
    // already sent is read (a close with unread data would reset the
    // connection and could destroy the answer), then the socket is closed
    // without waiting for the client to close its side.
    let _ = tokio::time::timeout(Duration::from_millis(200), s.write_all(msg.as_bytes())).await;
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.try_read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(50), s.shutdown()).await;
    drop(s);
    drop(hold);
}

//! The XML side: gmond's per-cluster port, gmetad's dump port (8651) and
//! interactive port (8652). Documents are rendered from an immutable snapshot on
//! a blocking thread, outside any lock, then written with a deadline: a client
//! that reads slowly or never reads is dropped and delays nobody.

use crate::config::Trusted;
use crate::diag::{self, Diag, Event, Level, LogAs};
use crate::listen::{Admission, Governor};
use crate::state::{
    ClusterSnap, GridSnap, HostSnap, MetricSnap, Snapshot, State, Summary, now_secs,
};
use ganglion_proto::xml::{
    ClusterAttrs, GridAttrs, HostAttrs, MetricAttrs, Style, SummaryAttrs, XmlWriter,
};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What a listener serves.
#[derive(Debug, Clone)]
pub enum Service {
    /// gmond XML of one cluster (writes and closes; reads nothing).
    Gmond(String),
    /// gmetad's full dump (writes and closes; reads nothing).
    Dump,
    /// gmetad's interactive port: one request line, then the answer.
    Query,
}

/// Shared by every XML connection.
#[derive(Clone)]
pub struct XmlContext {
    /// State to snapshot.
    pub state: Arc<State>,
    /// `trusted_hosts` (loopback is always trusted).
    pub trusted: Arc<Vec<Trusted>>,
    /// `all_trusted`.
    pub all_trusted: bool,
    /// Per-connection deadline.
    pub timeout: Duration,
    /// Process start (for `/status`).
    pub boot: u64,
    /// The last full documents rendered (dump, each gmond port).
    pub docs: Arc<DocCache>,
}

/// The last rendered full document of each port, for the snapshot it was
/// rendered from. The snapshot changes at most once a second, so fifty
/// clients looping over 8651 cost one render per second, not fifty: a reader
/// that finds the document of the current snapshot writes it as it is;
/// readers arriving while it is rendered wait for that render (the slot's
/// lock) instead of rendering it again.
#[derive(Default)]
pub struct DocCache {
    slots: std::sync::Mutex<std::collections::HashMap<String, Arc<DocSlot>>>,
}

type DocSlot = tokio::sync::Mutex<Option<(Arc<Snapshot>, Arc<Vec<u8>>)>>;

impl DocCache {
    fn slot(&self, key: &str) -> Arc<DocSlot> {
        let mut m = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(key.to_string()).or_default().clone()
    }
}

/// The document for `key` rendered from `snap`, from the cache when it holds
/// one of the same snapshot.
async fn cached_doc(
    cache: &DocCache,
    key: &str,
    snap: Arc<Snapshot>,
    render: impl FnOnce(&Snapshot, &mut Vec<u8>) -> io::Result<()> + Send + 'static,
) -> io::Result<Arc<Vec<u8>>> {
    let slot = cache.slot(key);
    let mut held = slot.lock().await;
    if let Some((s, doc)) = held.as_ref()
        && Arc::ptr_eq(s, &snap)
    {
        return Ok(doc.clone());
    }
    let hint = LAST_SIZE.load(Ordering::Relaxed);
    let for_render = snap.clone();
    let body = tokio::task::spawn_blocking(move || {
        let mut v = Vec::with_capacity(hint + hint / 8 + 4096);
        render(&for_render, &mut v)?;
        LAST_SIZE.store(v.len(), Ordering::Relaxed);
        Ok::<_, io::Error>(v)
    })
    .await
    .map_err(io::Error::other)??;
    let doc = Arc::new(body);
    *held = Some((snap, doc.clone()));
    Ok(doc)
}

/// How often a client address's refusals are logged (at debug level).
const CLIENT_LOG_EVERY: Duration = Duration::from_secs(60);

/// Something an XML-port client did that closed its connection.
enum ClientClosed {
    /// From outside `trusted_hosts`: closed without a reply, like gmetad
    /// (`ganglion_xml_untrusted_total`).
    Untrusted(SocketAddr),
    /// Did not send its request line, or take the document, in time
    /// (`ganglion_xml_timeouts_total`).
    TooSlow(SocketAddr),
}

impl Event for ClientClosed {
    type Counters = crate::telemetry::Counters;
    type Key = IpAddr;
    const LEVEL: Level = Level::DEBUG;

    fn count(&self, c: &crate::telemetry::Counters) {
        match self {
            ClientClosed::Untrusted(_) => diag::inc(&c.xml_untrusted),
            ClientClosed::TooSlow(_) => diag::inc(&c.xml_timeouts),
        }
    }

    fn log_as(&self) -> LogAs<IpAddr> {
        match self {
            ClientClosed::Untrusted(p) | ClientClosed::TooSlow(p) => LogAs::PerKey(p.ip()),
        }
    }

    fn log(&self, _: &crate::telemetry::Counters) {
        match self {
            ClientClosed::Untrusted(peer) => diag::line!(
                Self::LEVEL,
                %peer,
                "XML client outside trusted_hosts; closed (logged once a minute per address)"
            ),
            ClientClosed::TooSlow(peer) => diag::line!(
                Self::LEVEL,
                %peer,
                "XML client too slow; dropped (logged once a minute per address)"
            ),
        }
    }
}

impl XmlContext {
    fn is_trusted(&self, ip: IpAddr) -> bool {
        crate::config::trusts(&self.trusted, self.all_trusted, ip)
    }
}

/// Accepts connections until shutdown.
pub async fn serve(
    listener: TcpListener,
    service: Service,
    ctx: XmlContext,
    governor: Arc<Governor>,
    shutdown: CancellationToken,
) {
    let accept = || async { listener.accept().await.map(|(s, p)| (s, Some(p))) };
    let diag: Arc<Diag<IpAddr>> = Arc::new(Diag::new(CLIENT_LOG_EVERY));
    loop {
        // A permit first, then accept: at `xml.max_connections` new clients
        // wait in the backlog instead of taking descriptors storage needs.
        let (sock, peer, permit) = match governor.accept(&shutdown, accept).await {
            None => return,
            Some(Admission::Serve(s, Some(p), permit)) => (s, p, permit),
            // A TCP listener always names the peer; a client over
            // `xml.max_connections_per_ip` is closed without a reply.
            Some(Admission::Serve(..))
            | Some(Admission::OverIpCap(..))
            | Some(Admission::OverCap(..)) => continue,
        };
        if !ctx.is_trusted(peer.ip()) {
            diag.emit(ClientClosed::Untrusted(peer), ctx.state.counters());
            continue; // closed without a reply, like gmetad
        }
        let ctx = ctx.clone();
        let service = service.clone();
        let diag = diag.clone();
        tokio::spawn(async move {
            let timeout = ctx.timeout;
            match tokio::time::timeout(timeout, handle(sock, peer, service, &ctx, &diag)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "XML client error"),
                Err(_) => {
                    diag.emit(ClientClosed::TooSlow(peer), ctx.state.counters());
                }
            }
            drop(permit);
        });
    }
}

/// How long the interactive port waits for its request line.
const QUERY_LINE_SECS: u64 = 10;

async fn handle(
    mut sock: TcpStream,
    peer: SocketAddr,
    service: Service,
    ctx: &XmlContext,
    diag: &Diag<IpAddr>,
) -> io::Result<()> {
    ctx.state
        .counters()
        .xml_requests
        .fetch_add(1, Ordering::Relaxed);
    match service {
        Service::Gmond(cluster) => {
            let snap = ctx.state.snapshot(now_secs());
            let key = format!("gmond:{cluster}");
            let doc = cached_doc(&ctx.docs, &key, snap, move |s, w| {
                render_gmond(s, &cluster, w)
            })
            .await?;
            sock.write_all(&doc).await?;
        }
        Service::Dump => {
            let snap = ctx.state.snapshot(now_secs());
            let doc = cached_doc(&ctx.docs, "dump", snap, |s, w| render_dump(s, w)).await?;
            sock.write_all(&doc).await?;
        }
        Service::Query => {
            let (rd, _) = sock.split();
            let mut rd = BufReader::new(rd.take(2048));
            let mut line = Vec::new();
            // The request line is one short line sent at once by gmetad and
            // ganglia-web: a client that has not sent it within
            // QUERY_LINE_SECS holds a slot for nothing (the slot is needed by
            // the next poller), whatever client_timeout_secs allows the answer.
            let wait = Duration::from_secs(QUERY_LINE_SECS).min(ctx.timeout);
            match tokio::time::timeout(wait, rd.read_until(b'\n', &mut line)).await {
                Ok(r) => {
                    r?;
                }
                Err(_) => {
                    diag.emit(ClientClosed::TooSlow(peer), ctx.state.counters());
                    return Ok(());
                }
            }
            let line = String::from_utf8_lossy(&line);
            let line = line.split(['\n', '\r']).next().unwrap_or("").to_string();
            let Some(req) = Request::parse(&line) else {
                return Ok(()); // gmetad closes silently on a bad request
            };
            if req.status {
                let snap = ctx.state.snapshot(now_secs());
                let json = status_json(&snap, ctx, req.callback.as_deref());
                let mut out = Vec::new();
                write!(
                    out,
                    "HTTP/1.0 200 OK\r\nServer: ganglion/{}\r\nAccess-Control-Allow-Origin: *\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{json}",
                    env!("CARGO_PKG_VERSION")
                )?;
                sock.write_all(&out).await?;
            } else {
                let snap = ctx.state.snapshot(now_secs());
                render_and_write(&mut sock, move |w| {
                    if req.http {
                        // gmetad's exact header, including its one bare \n.
                        Write::write_all(w, b"HTTP/1.0 200 OK\r\nServer: gmetad/3.7.2-1\r\nAccess-Control-Allow-Origin: *\nContent-Type: application/xml\r\nConnection: close\r\n\r\n")?;
                    }
                    render_query(&snap, &req, w)
                })
                .await?;
            }
        }
    }
    sock.shutdown().await
}

/// Renders on a blocking thread into one buffer, then writes it. Streaming in
/// chunks was measured slower under full ingest on two cores (the renderer and
/// the socket task kept trading the core with the receive thread: dumps of
/// 1000 hosts took 0.048–0.067 s instead of 0.034–0.051 s); the buffer is
/// transient and sized from the previous document, so it grows without
/// copying.
async fn render_and_write(
    sock: &mut TcpStream,
    render: impl FnOnce(&mut Vec<u8>) -> io::Result<()> + Send + 'static,
) -> io::Result<()> {
    let hint = LAST_SIZE.load(Ordering::Relaxed);
    let body = tokio::task::spawn_blocking(move || {
        let mut v = Vec::with_capacity(hint + hint / 8 + 4096);
        render(&mut v)?;
        LAST_SIZE.store(v.len(), Ordering::Relaxed);
        Ok::<_, io::Error>(v)
    })
    .await
    .map_err(io::Error::other)??;
    sock.write_all(&body).await
}

/// Size of the last document rendered (any port): the next buffer's guess.
static LAST_SIZE: AtomicUsize = AtomicUsize::new(64 * 1024);

fn cluster_attrs(c: &ClusterSnap) -> ClusterAttrs<'_> {
    ClusterAttrs {
        name: &c.name,
        localtime: c.localtime,
        owner: &c.owner,
        latlong: &c.latlong,
        url: &c.url,
    }
}

fn write_host<W: Write>(
    w: &mut XmlWriter<W>,
    h: &HostSnap,
    only_metric: Option<&str>,
) -> io::Result<()> {
    w.begin_host(&HostAttrs {
        name: &h.name,
        ip: &h.ip,
        tags: &h.tags,
        reported: h.reported,
        tn: h.tn,
        tmax: h.tmax,
        dmax: h.dmax,
        location: &h.location,
        gmond_started: h.gmond_started,
    })?;
    for m in &h.metrics {
        if only_metric.is_some_and(|n| n != &*m.name) {
            continue;
        }
        write_metric(w, m)?;
    }
    w.end_host()
}

fn write_metric<W: Write>(w: &mut XmlWriter<W>, m: &MetricSnap) -> io::Result<()> {
    w.metric(
        &MetricAttrs {
            name: &m.name,
            val: &m.val,
            metric_type: m.metric_type,
            units: &m.units,
            tn: m.tn,
            tmax: m.tmax,
            dmax: m.dmax,
            slope: m.slope,
        },
        m.extras(),
    )
}

fn write_summary<W: Write>(w: &mut XmlWriter<W>, s: &Summary) -> io::Result<()> {
    w.hosts(s.hosts_up, s.hosts_down, "gmetad")?;
    for m in &s.metrics {
        let sum = m.sum_text();
        w.metrics(
            &SummaryAttrs {
                name: &m.name,
                sum: &sum,
                num: m.num,
                units: &m.units,
                slope: m.slope,
            },
            m.extras.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )?;
    }
    Ok(())
}

fn grid_attrs(snap: &Snapshot) -> GridAttrs<'_> {
    GridAttrs {
        name: &snap.grid_name,
        authority: &snap.authority,
        localtime: snap.localtime,
    }
}

fn write_child_grid<W: Write>(w: &mut XmlWriter<W>, g: &GridSnap) -> io::Result<()> {
    w.begin_grid(&GridAttrs {
        name: &g.name,
        authority: &g.authority,
        localtime: g.localtime,
    })?;
    write_summary(w, &g.summary)?;
    w.end_grid()
}

/// gmond's XML for one cluster (empty cluster element if unknown).
pub fn render_gmond<W: Write>(snap: &Snapshot, cluster: &str, out: W) -> io::Result<()> {
    let mut w = XmlWriter::new(out, Style::Gmond);
    w.begin_document()?;
    if let Some(c) = snap.cluster(cluster) {
        w.begin_cluster(&cluster_attrs(c))?;
        for h in &c.hosts {
            write_host(&mut w, h, None)?;
        }
        w.end_cluster()?;
    }
    w.end_document()
}

/// gmetad's dump: the root GRID, every cluster in full, child grids as summaries.
pub fn render_dump<W: Write>(snap: &Snapshot, out: W) -> io::Result<()> {
    let mut w = XmlWriter::new(out, Style::Gmetad);
    w.begin_document()?;
    w.begin_grid(&grid_attrs(snap))?;
    for c in &snap.clusters {
        w.begin_cluster(&cluster_attrs(c))?;
        for h in &c.hosts {
            write_host(&mut w, h, None)?;
        }
        w.end_cluster()?;
    }
    for g in &snap.grids {
        write_child_grid(&mut w, g)?;
    }
    w.end_grid()?;
    w.end_document()
}

/// A parsed request line on the interactive port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET … HTTP/1.x` (answer with an HTTP header) or a plain path.
    pub http: bool,
    /// Path components after the leading `/`.
    pub path: Vec<String>,
    /// `?filter=summary`
    pub summary: bool,
    /// `/status`
    pub status: bool,
    /// JSONP `?callback=fn` for `/status`.
    pub callback: Option<String>,
}

impl Request {
    /// Parses one request line as gmetad does; `None` = close silently.
    pub fn parse(line: &str) -> Option<Request> {
        let (http, target) = match line.strip_prefix("GET ") {
            Some(rest) => (true, rest.split_whitespace().next().unwrap_or("")),
            None => (false, line.trim()),
        };
        if !target.starts_with('/') || target.chars().any(|c| ">!@#$%`;|\"\\'<".contains(c)) {
            return None;
        }
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let mut summary = false;
        let mut callback = None;
        for kv in query.unwrap_or("").split('&') {
            match kv.split_once('=') {
                Some(("filter", "summary")) => summary = true,
                Some(("callback", f))
                    if f.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') =>
                {
                    callback = Some(f.to_string());
                }
                _ => {}
            }
        }
        let path: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let status = path.first().is_some_and(|p| p == "status");
        Some(Request {
            http,
            path,
            summary,
            status,
            callback,
        })
    }
}

/// gmetad's interactive answer for `req`.
pub fn render_query<W: Write>(snap: &Snapshot, req: &Request, out: W) -> io::Result<()> {
    let mut w = XmlWriter::new(out, Style::Gmetad);
    w.begin_document()?;
    w.begin_grid(&grid_attrs(snap))?;
    let first = req.path.first().map(String::as_str);
    match first {
        None => {
            if req.summary {
                write_summary(&mut w, &snap.grid_summary())?;
                for c in &snap.clusters {
                    w.begin_cluster(&cluster_attrs(c))?;
                    write_summary(&mut w, &c.summary)?;
                    w.end_cluster()?;
                }
                for g in &snap.grids {
                    write_child_grid(&mut w, g)?;
                }
            } else {
                for c in &snap.clusters {
                    write_cluster(&mut w, c, None, req)?;
                }
                for g in &snap.grids {
                    write_child_grid(&mut w, g)?;
                }
            }
        }
        Some("*") if req.http => {
            for c in &snap.clusters {
                write_cluster(&mut w, c, req.path.get(1).map(String::as_str), req)?;
            }
        }
        Some(name) => {
            if let Some(c) = snap.cluster(name) {
                write_cluster(&mut w, c, req.path.get(1).map(String::as_str), req)?;
            } else if let Some(g) = snap.grids.iter().find(|g| g.name == name) {
                write_child_grid(&mut w, g)?;
            } else if !req.http {
                // Unknown element, plain request: gmetad prints the whole parent.
                for c in &snap.clusters {
                    write_cluster(&mut w, c, None, req)?;
                }
            }
        }
    }
    w.end_grid()?;
    w.end_document()
}

fn write_cluster<W: Write>(
    w: &mut XmlWriter<W>,
    c: &ClusterSnap,
    host: Option<&str>,
    req: &Request,
) -> io::Result<()> {
    w.begin_cluster(&cluster_attrs(c))?;
    match host {
        None if req.summary => write_summary(w, &c.summary)?,
        None => {
            for h in &c.hosts {
                write_host(w, h, None)?;
            }
        }
        Some(hname) => {
            let metric = req.path.get(2).map(String::as_str);
            let wildcard = req.http && hname == "*";
            let found: Vec<&HostSnap> = c
                .hosts
                .iter()
                .filter(|h| wildcard || h.name.eq_ignore_ascii_case(hname) || h.ip == hname)
                .collect();
            if found.is_empty() && !req.http {
                for h in &c.hosts {
                    write_host(w, h, None)?;
                }
            }
            for h in found {
                let m = metric.filter(|m| !(req.http && *m == "*"));
                let known = m.is_none_or(|m| h.metrics.iter().any(|x| &*x.name == m));
                if known || req.http {
                    write_host(w, h, m)?;
                } else {
                    write_host(w, h, None)?;
                }
            }
        }
    }
    w.end_cluster()
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// gmetad's `/status` JSON, with real counters.
pub fn status_json(snap: &Snapshot, ctx: &XmlContext, callback: Option<&str>) -> String {
    let now = snap.localtime;
    let c = ctx.state.counters();
    let received =
        c.values_received.load(Ordering::Relaxed) + c.metadata_received.load(Ordering::Relaxed);
    let mut counters = String::new();
    for (name, _, v) in c.list() {
        counters.push_str(&format!(
            ",{}:{v}",
            json_str(
                name.trim_start_matches("ganglion_")
                    .trim_end_matches("_total")
            )
        ));
    }
    let sum = snap.grid_summary();
    let body = format!(
        "{{\"host\":{},\"gridname\":{},\"version\":{},\"stattime\":{now},\"boottime\":{},\"uptime\":{},\"uptimeMillis\":{},\"metrics\":{{\"received\":{received},\"sent\":{{\"all\":0,\"rrdtool\":0,\"rrdcached\":0,\"graphite\":0,\"memcached\":0,\"riemann\":0}}}},\"hosts\":{{\"up\":{},\"down\":{}}},\"clusters\":{},\"requests\":{}{counters}}}",
        json_str(
            &hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
        json_str(&snap.grid_name),
        json_str(env!("CARGO_PKG_VERSION")),
        ctx.boot,
        now.saturating_sub(ctx.boot),
        now.saturating_sub(ctx.boot) * 1000,
        sum.hosts_up,
        sum.hosts_down,
        snap.clusters.len(),
        c.xml_requests.load(Ordering::Relaxed),
    );
    match callback {
        Some(f) => format!("{f}({body})"),
        None => body,
    }
}

#[cfg(test)]
mod tests {

    fn snap(t: u64) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            grid_name: "g".into(),
            authority: "a".into(),
            localtime: t,
            clusters: Vec::new(),
            grids: Vec::new(),
            root_only: Arc::from(Vec::<String>::new()),
        })
    }

    #[tokio::test]
    async fn one_render_per_snapshot_however_many_readers() {
        use std::sync::atomic::AtomicUsize;
        let cache = DocCache::default();
        let renders = Arc::new(AtomicUsize::new(0));
        let render = |n: Arc<AtomicUsize>| {
            move |s: &Snapshot, w: &mut Vec<u8>| {
                n.fetch_add(1, Ordering::Relaxed);
                render_dump(s, w)
            }
        };
        let first = snap(100);
        let mut docs = Vec::new();
        for _ in 0..5 {
            docs.push(
                cached_doc(&cache, "dump", first.clone(), render(renders.clone()))
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(renders.load(Ordering::Relaxed), 1);
        assert!(docs.iter().all(|d| Arc::ptr_eq(d, &docs[0])));
        // A new snapshot (the next second) is rendered anew.
        let next = cached_doc(&cache, "dump", snap(101), render(renders.clone()))
            .await
            .unwrap();
        assert_eq!(renders.load(Ordering::Relaxed), 2);
        assert_ne!(next, docs[0]);
        // Another port has its own slot.
        cached_doc(&cache, "gmond:c", first, render(renders.clone()))
            .await
            .unwrap();
        assert_eq!(renders.load(Ordering::Relaxed), 3);
    }

    use super::*;

    #[test]
    fn request_lines() {
        let r = Request::parse("/").unwrap();
        assert!(!r.http && r.path.is_empty() && !r.summary);
        let r = Request::parse("GET /c1/h1?filter=summary HTTP/1.1").unwrap();
        assert!(r.http && r.summary);
        assert_eq!(r.path, ["c1", "h1"]);
        assert!(Request::parse("c1").is_none());
        assert!(Request::parse("/a;rm").is_none());
        assert!(Request::parse("/status?callback=cb").unwrap().status);
    }
}

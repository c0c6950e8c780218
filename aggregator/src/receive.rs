//! The UDP receive path: one dedicated thread per listening socket, decoding
//! with `proto` and applying to the state. Bad datagrams are counted and logged
//! once per source per minute; nothing here can stop other senders' data.
//!
//! Datagrams are read in batches with `recvmmsg` (up to 64 per system call,
//! blocking for the first only), so a busy receiver pays one syscall per batch.
//!
//! Clusters with `auth` on verify each datagram's envelope before it is
//! decoded ([`crate::auth`]); with `auth = "off"` (the default) the path is
//! the plain one, a single branch away.
//!
//! Metadata requests (136) go back to the sender's own address and port, so a
//! `ganglion-agent` (which listens on its sending socket) re-sends metadata at
//! once after an aggregator restart; gmond senders simply ignore them.

use crate::diag::{self, Diag, Event, Level, LogAs};
use crate::state::{ApplyOutcome, Datagram, State, canonical_ip, now_secs};
use crate::telemetry::Counters;
use ganglion_proto::model::MetricType;
use ganglion_proto::xdr::{self, DecodeError, MAX_RECV_LEN, Message};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Binds a UDP socket with the requested receive buffer (IPv6 sockets are
/// v6-only so `0.0.0.0` and `[::]` can both be bound on one port).
pub fn bind_udp(addr: SocketAddr, recv_buffer_bytes: usize) -> std::io::Result<UdpSocket> {
    bind_udp_joined(addr, recv_buffer_bytes, &[], None)
}

/// [`bind_udp`], joining the multicast `groups` of the socket's family (and
/// the bound address itself when it is a group) on interface `iface`, as
/// gmond's `udp_recv_channel { mcast_join, bind, mcast_if }` does. The
/// address is shared (SO_REUSEADDR) so other receivers of the group, a gmond
/// among them, can bind the same port.
pub fn bind_udp_joined(
    addr: SocketAddr,
    recv_buffer_bytes: usize,
    groups: &[std::net::IpAddr],
    iface: Option<&str>,
) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    let mut joined: Vec<std::net::IpAddr> = groups
        .iter()
        .copied()
        .filter(|g| g.is_ipv4() == addr.is_ipv4())
        .collect();
    if addr.ip().is_multicast() && !joined.contains(&addr.ip()) {
        joined.push(addr.ip());
    }
    if !joined.is_empty() {
        s.set_reuse_address(true)?;
    }
    if recv_buffer_bytes > 0 {
        // The kernel caps a plain request at net.core.rmem_max; with
        // CAP_NET_ADMIN SO_RCVBUFFORCE may pass it. A smaller buffer is not
        // fatal, but it is said once: bursts beyond it are dropped by the
        // kernel before we see them.
        let forced = nix::sys::socket::setsockopt(
            &s,
            nix::sys::socket::sockopt::RcvBufForce,
            &recv_buffer_bytes,
        )
        .is_ok();
        if !forced {
            let _ = s.set_recv_buffer_size(recv_buffer_bytes);
        }
        // Linux reports twice what it grants (its bookkeeping overhead).
        let granted = s.recv_buffer_size().unwrap_or(0) / 2;
        if granted < recv_buffer_bytes {
            tracing::warn!(
                %addr,
                requested = recv_buffer_bytes,
                granted,
                "UDP receive buffer smaller than recv_buffer_bytes: raise net.core.rmem_max \
                 (or give the aggregator CAP_NET_ADMIN); bursts beyond it are dropped by the \
                 kernel (the drops column of /proc/net/udp)"
            );
        }
    }
    s.bind(&addr.into())?;
    if !joined.is_empty() {
        let index = match iface {
            Some(name) => nix::net::if_::if_nametoindex(name).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("mcast_if {name:?}: {e}"),
                )
            })?,
            None => 0,
        };
        for g in &joined {
            match g {
                std::net::IpAddr::V4(g4) => {
                    s.join_multicast_v4_n(g4, &socket2::InterfaceIndexOrAddress::Index(index))?
                }
                std::net::IpAddr::V6(g6) => s.join_multicast_v6(g6, index)?,
            }
            tracing::info!(%addr, group = %g, interface = iface.unwrap_or("(routing table)"), "joined multicast group");
        }
        // Metadata requests to the groups leave by the same interface.
        if let Some(name) = iface {
            match addr {
                SocketAddr::V6(_) => s.set_multicast_if_v6(index)?,
                SocketAddr::V4(_) => {
                    let v4 = nix::ifaddrs::getifaddrs()
                        .map_err(std::io::Error::from)?
                        .filter(|a| a.interface_name == name)
                        .find_map(|a| a.address.and_then(|x| x.as_sockaddr_in().map(|i| i.ip())));
                    if let Some(v4) = v4 {
                        s.set_multicast_if_v4(&v4)?;
                    }
                }
            }
        }
    }
    let s: UdpSocket = s.into();
    // Wake up regularly to notice shutdown.
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(s)
}

/// Lookups waiting for the resolver thread, at most. Past it a new address
/// is not queued (nor cached), so it is tried again on a later datagram:
/// under a spoofed flood, real hosts never wait behind a million lookups.
const DNS_QUEUE: usize = 4096;

/// Reverse DNS with a cache, resolved off the receive path (a slow resolver
/// must never stall ingest). Until a name is known the host is named by its IP,
/// and renamed once the answer arrives.
pub struct Resolver {
    enabled: bool,
    cache: Mutex<HashMap<IpAddr, Option<String>>>,
    tx: Mutex<Option<mpsc::SyncSender<IpAddr>>>,
}

impl Resolver {
    /// A resolver; `enabled = false` never looks anything up.
    pub fn new(enabled: bool, state: Arc<State>) -> Arc<Resolver> {
        let r = Arc::new(Resolver {
            enabled,
            cache: Mutex::new(HashMap::new()),
            tx: Mutex::new(None),
        });
        if enabled {
            let (tx, rx) = mpsc::sync_channel::<IpAddr>(DNS_QUEUE);
            *r.tx.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
            let weak = Arc::downgrade(&r);
            std::thread::Builder::new()
                .name("ganglion-dns".into())
                .spawn(move || {
                    while let Ok(ip) = rx.recv() {
                        let name = dns_lookup::lookup_addr(&ip)
                            .ok()
                            .filter(|n| n != &ip.to_string());
                        let Some(r) = weak.upgrade() else { break };
                        if let Some(n) = &name {
                            state.rename_host(&ip.to_string(), n);
                        }
                        r.cache
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(ip, name);
                    }
                })
                .ok();
        }
        r
    }

    /// The cached name, or `None` (queuing a lookup on first sight).
    pub fn name(&self, ip: IpAddr) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = c.get(&ip) {
            return v.clone();
        }
        if let Some(tx) = &*self.tx.lock().unwrap_or_else(|p| p.into_inner())
            && c.len() < 1_000_000
            && tx.try_send(ip).is_ok()
        {
            c.insert(ip, None);
        }
        None
    }
}

/// Everything one receive thread needs.
pub struct Receiver {
    /// The socket.
    pub socket: UdpSocket,
    /// Cluster index in the state.
    pub cluster: usize,
    /// Shared state.
    pub state: Arc<State>,
    /// Reverse DNS.
    pub resolver: Arc<Resolver>,
    /// Stops the loop.
    pub shutdown: CancellationToken,
    /// Multicast groups (with the port) this socket joined: metadata requests
    /// also go there, as gmond sends them on its channels, so every gmond
    /// listening on the group re-sends what the aggregator lacks.
    pub request_groups: Vec<SocketAddr>,
    /// The cluster's authenticated transport, `None` when `auth = "off"`.
    pub auth: Option<Arc<crate::auth::ClusterAuth>>,
}

const BATCH: usize = 64;

/// Receives up to `bufs.len()` datagrams in one `recvmmsg` call, blocking
/// (up to the socket's read timeout) for the first only.
fn recv_batch(
    sock: &UdpSocket,
    bufs: &mut [Vec<u8>],
    out: &mut Vec<(usize, SocketAddr)>,
) -> std::io::Result<()> {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage, recvmmsg,
    };
    use std::os::fd::AsRawFd;
    out.clear();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(bufs.len(), None);
    let mut iovs: Vec<[std::io::IoSliceMut<'_>; 1]> = bufs
        .iter_mut()
        .map(|b| [std::io::IoSliceMut::new(b.as_mut_slice())])
        .collect();
    let res = recvmmsg(
        sock.as_raw_fd(),
        &mut headers,
        iovs.iter_mut(),
        MsgFlags::MSG_WAITFORONE,
        None,
    )
    .map_err(std::io::Error::from)?;
    for r in res {
        let addr = r.address.and_then(|a| match a.family() {
            Some(AddressFamily::Inet) => a
                .as_sockaddr_in()
                .map(|s| SocketAddr::V4(std::net::SocketAddrV4::from(*s))),
            Some(AddressFamily::Inet6) => a
                .as_sockaddr_in6()
                .map(|s| SocketAddr::V6(std::net::SocketAddrV6::from(*s))),
            _ => None,
        });
        if let Some(addr) = addr {
            out.push((r.bytes, addr));
        }
    }
    Ok(())
}

/// Per-thread scratch space and rate limits.
struct Scratch {
    /// One line per sender a minute, whatever the event (a flood of
    /// spoofed sources is counted exactly and logs a bounded number of lines).
    diag: Diag<IpAddr>,
    asked: HashMap<(SocketAddr, String), u64>,
    out: Vec<u8>,
    /// The decoded datagrams of one receive batch, applied under one lock.
    batch: Vec<Datagram>,
    outcomes: Vec<(SocketAddr, ApplyOutcome)>,
    /// The host each authenticated sender last spoke for, as this thread
    /// told the sender table: the table is locked again only on a change.
    noted: HashMap<crate::auth::senders::SenderKey, String>,
}

impl Receiver {
    /// Runs until shutdown; meant for a dedicated thread.
    pub fn run(self) {
        // One byte more than gmond's buffer, so an oversized datagram is detected.
        let mut bufs = vec![vec![0u8; MAX_RECV_LEN + 1]; BATCH];
        let mut got: Vec<(usize, SocketAddr)> = Vec::with_capacity(BATCH);
        let mut scratch = Scratch {
            diag: Diag::new(Duration::from_secs(60)),
            asked: HashMap::new(),
            out: Vec::with_capacity(256),
            batch: Vec::with_capacity(BATCH),
            outcomes: Vec::with_capacity(BATCH),
            noted: HashMap::new(),
        };
        while !self.shutdown.is_cancelled() {
            match recv_batch(&self.socket, &mut bufs, &mut got) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    scratch
                        .diag
                        .emit(ReceiveFailed { error: &e }, self.state.counters());
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            let now = now_secs();
            for (k, &(n, src)) in got.iter().enumerate() {
                if let Some(d) = self.decode(&mut bufs[k], n, src, now, &mut scratch) {
                    scratch.batch.push(d);
                }
            }
            self.state
                .apply_batch(self.cluster, &mut scratch.batch, now, &mut scratch.outcomes);
            let mut outcomes = std::mem::take(&mut scratch.outcomes);
            for (src, outcome) in outcomes.drain(..) {
                self.follow_up(src, outcome, now, &mut scratch);
            }
            scratch.outcomes = outcomes;
        }
    }

    /// Decodes one datagram (counting and logging what is wrong with it).
    fn decode(
        &self,
        buf: &mut [u8],
        n: usize,
        src: SocketAddr,
        now: u64,
        s: &mut Scratch,
    ) -> Option<Datagram> {
        let counters = self.state.counters();
        counters.datagrams.fetch_add(1, Ordering::Relaxed);
        let Some(auth) = &self.auth else {
            // gmond reads at most 1472 bytes; a longer datagram is cut and fails.
            let data = &buf[..n.min(MAX_RECV_LEN)];
            return self.decode_plain(data, n, src, s);
        };
        // Verified before anything is decoded or applied; a longer
        // envelope than 1472 bytes is malformed, a plain one is cut as above.
        match auth.check(&mut buf[..n], src, now) {
            crate::auth::Outcome::Refused => None,
            crate::auth::Outcome::Plain => {
                let d = self.decode_plain(&buf[..n.min(MAX_RECV_LEN)], n, src, s)?;
                auth.plain_allowed(src, &d.2.metric_id().host).then_some(d)
            }
            crate::auth::Outcome::Authentic { payload, sender } => {
                let d = self.decode_plain(payload, payload.len(), src, s)?;
                let host = &d.2.metric_id().host;
                if s.noted.get(&sender) != Some(host) {
                    auth.note_host(&sender, host);
                    // Bounded like the table itself (senders per cluster).
                    if s.noted.len() >= 1 << 16 {
                        s.noted.clear();
                    }
                    s.noted.insert(sender, host.clone());
                }
                Some(d)
            }
        }
    }

    /// Decodes one XDR message.
    fn decode_plain(
        &self,
        data: &[u8],
        n: usize,
        src: SocketAddr,
        s: &mut Scratch,
    ) -> Option<Datagram> {
        let counters = self.state.counters();
        let msg = match xdr::decode(data) {
            Ok(m) => m,
            Err(DecodeError::UnknownMessage { id }) => {
                s.diag.emit(UnknownMessage { src, id }, counters);
                return None;
            }
            Err(error) => {
                s.diag.emit(Undecodable { src, error, len: n }, counters);
                return None;
            }
        };
        if matches!(msg, Message::Metadata(_) | Message::Value(_))
            && msg.metric_id().spoof
            && msg.metric_id().spoof_parts().is_none()
        {
            s.diag.emit(
                BadSpoof {
                    src,
                    host: &msg.metric_id().host,
                },
                counters,
            );
        }
        let name = self.resolver.name(canonical_ip(src.ip()));
        Some((src, name, msg))
    }

    /// What the receive path does after a datagram was applied.
    fn follow_up(&self, src: SocketAddr, outcome: ApplyOutcome, now: u64, s: &mut Scratch) {
        let counters = self.state.counters();
        if let Some(tc) = &outcome.type_change {
            s.diag.emit(TypeChanged { src, change: tc }, counters);
        }
        if let Some(req) = outcome.request_metadata {
            // At most one request per sender and metric every 10 s.
            let key = (src, req.name.clone());
            if s.asked.get(&key).is_none_or(|t| now >= t + 10) {
                if s.asked.len() > 100_000 {
                    s.asked.clear();
                }
                s.asked.insert(key, now);
                if xdr::encode_into(&Message::MetadataRequest(req), &mut s.out).is_ok() {
                    if self.socket.send_to(&s.out, src).is_ok() {
                        counters
                            .metadata_requests_sent
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    for g in &self.request_groups {
                        if self.socket.send_to(&s.out, *g).is_ok() {
                            counters
                                .metadata_requests_sent
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
}

// Internal events of the receive path (see `diag`): each knows its counter
// and its line; every one is rate-limited per sender address.

/// `recvmmsg` failed with something other than a timeout.
struct ReceiveFailed<'a> {
    error: &'a std::io::Error,
}

impl Event for ReceiveFailed<'_> {
    type Counters = Counters;
    type Key = IpAddr;
    const LEVEL: Level = Level::WARN;
    fn count(&self, c: &Counters) {
        diag::inc(&c.receive_errors);
    }
    fn log_as(&self) -> LogAs<IpAddr> {
        // Not a sender's fault: one key for the socket.
        LogAs::PerKey(IpAddr::from([0, 0, 0, 0]))
    }
    fn log(&self, c: &Counters) {
        diag::line!(Self::LEVEL, error = %self.error,
            total = c.receive_errors.load(Ordering::Relaxed),
            "UDP receive failed (logged once a minute)");
    }
}

/// A datagram whose message id Ganglia ≥ 3.1 does not define.
struct UnknownMessage {
    src: SocketAddr,
    id: u32,
}

impl Event for UnknownMessage {
    type Counters = Counters;
    type Key = IpAddr;
    const LEVEL: Level = Level::WARN;
    fn count(&self, c: &Counters) {
        diag::inc(&c.unknown_messages);
    }
    fn log_as(&self) -> LogAs<IpAddr> {
        LogAs::PerKey(self.src.ip())
    }
    fn log(&self, _: &Counters) {
        diag::line!(Self::LEVEL, src = %self.src, id = self.id,
            "ignoring datagram with unknown message id (logged once a minute per sender)");
    }
}

/// A datagram that does not decode as Ganglia XDR.
struct Undecodable {
    src: SocketAddr,
    error: DecodeError,
    len: usize,
}

impl Event for Undecodable {
    type Counters = Counters;
    type Key = IpAddr;
    const LEVEL: Level = Level::WARN;
    fn count(&self, c: &Counters) {
        diag::inc(&c.decode_errors);
    }
    fn log_as(&self) -> LogAs<IpAddr> {
        LogAs::PerKey(self.src.ip())
    }
    fn log(&self, _: &Counters) {
        diag::line!(Self::LEVEL, src = %self.src, error = %self.error, len = self.len,
            "dropping undecodable datagram (logged once a minute per sender)");
    }
}

/// A spoofed message without a usable `IP:name`. The state counts it
/// (`bad_spoof`) where it refuses the message, under the lock, for every door;
/// this event carries the receive path's line.
struct BadSpoof<'a> {
    src: SocketAddr,
    host: &'a str,
}

impl Event for BadSpoof<'_> {
    type Counters = Counters;
    type Key = IpAddr;
    const LEVEL: Level = Level::WARN;
    fn count(&self, _: &Counters) {}
    fn log_as(&self) -> LogAs<IpAddr> {
        LogAs::PerKey(self.src.ip())
    }
    fn log(&self, c: &Counters) {
        diag::line!(Self::LEVEL, src = %self.src, host = %self.host,
            total = c.bad_spoof.load(Ordering::Relaxed),
            "incorrect format for spoof argument (want IP:name; logged once a minute per sender)");
    }
}

/// A metric that changed between numeric and string types. Counted by the
/// state when it applies the change (`metric_type_changes`, under the lock);
/// this event carries the line.
struct TypeChanged<'a> {
    src: SocketAddr,
    change: &'a crate::state::TypeChange,
}

impl Event for TypeChanged<'_> {
    type Counters = Counters;
    type Key = IpAddr;
    const LEVEL: Level = Level::WARN;
    fn count(&self, _: &Counters) {}
    fn log_as(&self) -> LogAs<IpAddr> {
        LogAs::PerKey(self.src.ip())
    }
    fn log(&self, _: &Counters) {
        let tc = self.change;
        let effect = if MetricType::parse(&tc.to).is_some_and(MetricType::is_numeric) {
            "its RRD file gets samples again"
        } else {
            "its RRD file keeps its data but gets no new samples while it is not numeric, as in gmetad"
        };
        diag::line!(Self::LEVEL, src = %self.src, host = %tc.host, metric = %tc.metric,
            from = %tc.from, to = %tc.to,
            "metric changed between numeric and string types; {effect} (logged once a minute per sender)");
    }
}

//! Ganglion aggregator: receives Ganglia XDR, keeps cluster state, and serves
//! gmond/gmetad XML plus a browser dashboard — a drop-in for a unicast Ganglia
//! collector gmond and gmetad.
//!
//! Module map: [`config`] (TOML, validated), [`receive`] (UDP threads),
//! [`state`] (gmond semantics, snapshots), [`xml`] (gmond port, 8651, 8652),
//! [`poll`] (gmetad-style data sources), [`http`] (dashboard, `/api`,
//! `/metrics`), [`storage`] (RRD sampler, write-back cache, journal,
//! rrdcached), [`daemon`] (rrdcached's protocol for readers), [`listen`]
//! (the connection governor every TCP listener shares, `RLIMIT_NOFILE`),
//! [`flush_gate`] (single-flight, rate-limited full flushes), [`telemetry`]
//! (counters, log rate limits).

pub mod acl;
pub mod addr;
pub mod alerts;
pub mod auth;
pub mod config;
pub mod daemon;
pub mod diag;
pub mod flush_gate;
pub mod forward;
pub mod handlers;
#[cfg(test)]
pub(crate) mod hostile;
pub mod http;
pub mod import;
pub mod listen;
pub mod nagios;
pub mod poll;
pub mod receive;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod xml;

use crate::config::Config;
use crate::listen::{Caps, Governor, Kind, ListenCounters};
use crate::receive::{Receiver, Resolver};
use crate::state::{ClusterInfo, Limits, State, now_secs};
use crate::telemetry::Counters;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A running aggregator: its bound addresses (port 0 resolved) and handles.
pub struct Running {
    /// `(cluster, address)` of every UDP listener.
    pub udp_addrs: Vec<(String, SocketAddr)>,
    /// `(cluster, address)` of every gmond-compatible XML port.
    pub gmond_addrs: Vec<(String, SocketAddr)>,
    /// gmetad dump port.
    pub dump_addr: Option<SocketAddr>,
    /// gmetad interactive port.
    pub query_addr: Option<SocketAddr>,
    /// HTTP listener.
    pub http_addr: Option<SocketAddr>,
    /// The state (for in-process tests and embedding).
    pub state: Arc<State>,
    /// The RRD writer, when `write_rrds` is on.
    pub storage: Option<storage::StorageHandle>,
    /// Connection counters of every listener.
    pub listen_counters: Arc<ListenCounters>,
    /// Health, alerts and events, when `[alerts]` is enabled.
    pub alerts: Option<alerts::Alerts>,
    /// Every `[[forward]]`'s counters.
    pub forwards: forward::Forwards,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// The authenticated senders' state file, written exactly at the end.
    auth_state: Option<Arc<auth::persist::StateFile>>,
}

impl Running {
    /// Waits until `shutdown` is cancelled, then stops everything in order:
    /// UDP first, then servers (bounded wait), then returns.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        self.shutdown.cancelled().await;
        for t in self.threads.drain(..) {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        // No datagram is accepted any more: the exact sender state.
        if let Some(s) = self.auth_state.take() {
            let _ = tokio::task::spawn_blocking(move || s.write(true)).await;
        }
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish within 10 s; closing them");
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        // The last handle gone, the writer drains its cache to disk and exits.
        self.storage = None;
        if let Some(w) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        tracing::info!("aggregator stopped");
        Ok(())
    }

    /// Cancels and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

async fn bind_tcp(key: &str, addr: &str) -> anyhow::Result<TcpListener> {
    let a: SocketAddr = addr.parse().with_context(|| format!("{key}: {addr:?}"))?;
    TcpListener::bind(a)
        .await
        .with_context(|| format!("cannot listen on {a} ({key})"))
}

/// Binds every listener and starts every task. Returns once all are bound.
pub async fn start(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    config.validate()?;
    // Descriptors first: raise the soft limit, then check that the
    // listeners' caps leave `limits.fd_reserve` for storage.
    let nofile = listen::raise_nofile();
    let budget =
        listen::check_fd_budget(&config.fd_budget(), nofile).map_err(anyhow::Error::msg)?;
    tracing::info!(
        needed = budget,
        limit = nofile,
        "descriptor budget: listener caps plus limits.fd_reserve fit RLIMIT_NOFILE"
    );
    let listen_counters = Arc::new(ListenCounters::default());
    let xml_caps = Caps {
        max_connections: config.xml.max_connections,
        max_connections_per_ip: config.xml.max_connections_per_ip,
    };
    // One absolute root for the writer, the readers and rrdcached (which
    // resolves relative names against its own directory).
    if config.write_rrds {
        std::fs::create_dir_all(&config.rrd_root)
            .with_context(|| format!("cannot create rrd_root {}", config.rrd_root.display()))?;
    }
    if let Ok(abs) = std::fs::canonicalize(&config.rrd_root) {
        config.rrd_root = abs;
    }
    let counters = Arc::new(Counters::default());
    let infos: Vec<ClusterInfo> = config
        .cluster
        .iter()
        .map(|c| ClusterInfo {
            name: c.name.clone(),
            owner: c.owner.clone(),
            latlong: c.latlong.clone(),
            url: c.url.clone(),
            host_tmax: c.host_tmax_secs,
            host_dmax: c.host_dmax_secs,
            trust_packet_hostname: c.trust_packet_hostname,
        })
        .collect();
    let state = Arc::new(
        State::new(
            config.grid_name.clone(),
            config.authority.clone(),
            infos,
            Limits {
                max_hosts: config.limits.max_hosts_per_cluster,
                max_metrics: config.limits.max_metrics_per_host,
                max_string_bytes: config.limits.max_string_bytes,
            },
            counters,
        )
        .summarize_only(config.summarized_metrics.clone()),
    );
    let mut tasks = JoinSet::new();
    let mut threads = Vec::new();
    let mut udp_addrs = Vec::new();
    let mut gmond_addrs = Vec::new();
    let ctx = xml::XmlContext {
        state: state.clone(),
        trusted: Arc::new(config.trusted()),
        all_trusted: config.all_trusted,
        timeout: Duration::from_secs(u64::from(config.xml.client_timeout_secs.max(1))),
        boot: now_secs(),
        docs: Default::default(),
    };

    let auth = Arc::new(auth::Registry::new(&config)?);
    auth.spawn_reload_on_sighup(&mut tasks, shutdown.clone())?;
    let auth_state = auth::persist::StateFile::open(&auth, &config.rrd_root);
    if let Some(s) = &auth_state {
        s.spawn(&mut tasks, shutdown.clone());
    }
    for (i, c) in config.cluster.iter().enumerate() {
        let resolver = Resolver::new(c.reverse_dns, state.clone());
        for a in &c.udp_listen {
            let addr: SocketAddr = a
                .parse()
                .with_context(|| format!("cluster {:?} udp_listen", c.name))?;
            let groups: Vec<std::net::IpAddr> =
                c.mcast_join.iter().filter_map(|g| g.parse().ok()).collect();
            let socket =
                receive::bind_udp_joined(addr, c.recv_buffer_bytes, &groups, c.mcast_if.as_deref())
                    .with_context(|| format!("cannot bind UDP {addr} for cluster {:?}", c.name))?;
            let bound = socket.local_addr()?;
            tracing::info!(cluster = %c.name, addr = %bound, "receiving UDP");
            udp_addrs.push((c.name.clone(), bound));
            let mut request_groups: Vec<SocketAddr> = groups
                .iter()
                .filter(|g| g.is_ipv4() == addr.is_ipv4())
                .map(|g| SocketAddr::new(*g, addr.port()))
                .collect();
            if addr.ip().is_multicast() && !request_groups.contains(&addr) {
                request_groups.push(addr);
            }
            let r = Receiver {
                request_groups,
                socket,
                cluster: i,
                state: state.clone(),
                resolver: resolver.clone(),
                shutdown: shutdown.clone(),
                auth: auth.clusters.get(i).cloned().flatten(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("recv-{}", c.name))
                    .spawn(move || r.run())?,
            );
        }
        if let Some(x) = c.xml_listen.as_deref().filter(|x| !x.is_empty()) {
            let l = bind_tcp(&format!("cluster {:?} xml_listen", c.name), x).await?;
            let bound = l.local_addr()?;
            tracing::info!(cluster = %c.name, addr = %bound, "serving gmond XML");
            gmond_addrs.push((c.name.clone(), bound));
            let gov = Governor::new(
                Kind::Gmond,
                format!("cluster {:?} xml_listen", c.name),
                xml_caps,
                listen_counters.clone(),
            );
            tasks.spawn(xml::serve(
                l,
                xml::Service::Gmond(c.name.clone()),
                ctx.clone(),
                gov,
                shutdown.clone(),
            ));
        }
    }
    let dump_addr = if config.xml.dump_listen.is_empty() {
        None
    } else {
        let l = bind_tcp("xml.dump_listen", &config.xml.dump_listen).await?;
        let a = l.local_addr()?;
        tracing::info!(addr = %a, "serving gmetad XML dump");
        let gov = Governor::new(
            Kind::Dump,
            "xml.dump_listen",
            xml_caps,
            listen_counters.clone(),
        );
        tasks.spawn(xml::serve(
            l,
            xml::Service::Dump,
            ctx.clone(),
            gov,
            shutdown.clone(),
        ));
        Some(a)
    };
    let query_addr = if config.xml.query_listen.is_empty() {
        None
    } else {
        let l = bind_tcp("xml.query_listen", &config.xml.query_listen).await?;
        let a = l.local_addr()?;
        tracing::info!(addr = %a, "serving gmetad interactive queries");
        let gov = Governor::new(
            Kind::Query,
            "xml.query_listen",
            xml_caps,
            listen_counters.clone(),
        );
        tasks.spawn(xml::serve(
            l,
            xml::Service::Query,
            ctx.clone(),
            gov,
            shutdown.clone(),
        ));
        Some(a)
    };
    let mut flush_gate = None;
    let (storage, writer) = if config.write_rrds {
        let (h, t) = storage::start(
            storage::StorageParams {
                rrd_root: config.rrd_root.clone(),
                step_secs: config.step_secs,
                rras: config.rras.clone(),
                case_sensitive_hostnames: config.case_sensitive_hostnames,
                config: config.storage.clone(),
                rrdcached: config.rrdcached.clone(),
            },
            state.counters(),
        )
        .with_context(|| format!("cannot use rrd_root {}", config.rrd_root.display()))?;
        let rrds = storage::SummaryRrds {
            unsummarized: config.unsummarized_metrics.clone(),
            sflow_vm: config.unsummarized_sflow_vm_metrics,
            root_only: config.summarized_metrics.clone(),
        };
        tasks.spawn(storage::run_sampler(
            state.clone(),
            h.clone(),
            config.step_secs,
            Arc::new(rrds),
            shutdown.clone(),
        ));
        let mode = (config.storage.daemon_socket_mode_bits())
            .context("storage.daemon_socket_mode is not octal permissions")?;
        let gate = flush_gate::FlushGate::new(
            h.clone(),
            Duration::from_secs(u64::from(config.http.flush_min_interval_secs)),
            http::admin::FULL_FLUSH_WAIT,
        );
        flush_gate = Some(gate.clone());
        let daemon = Arc::new(daemon::Daemon::new(
            h.clone(),
            config.rrd_root.clone(),
            gate,
        ));
        for (i, a) in config.storage.daemon_listen.iter().enumerate() {
            let key = format!("storage.daemon_listen[{i}]");
            let l = daemon::Listener::bind(&key, a, mode).await?;
            tracing::info!(addr = %l.describe(), "serving rrdcached's protocol for readers");
            let trust = daemon::Trust {
                trusted: ctx.trusted.clone(),
                all: ctx.all_trusted,
            };
            let gov = Governor::new(
                Kind::Daemon,
                key,
                Caps {
                    max_connections: config.limits.daemon_max_connections,
                    max_connections_per_ip: config.limits.daemon_max_connections_per_ip,
                },
                listen_counters.clone(),
            );
            tasks.spawn(daemon::serve(
                l,
                daemon.clone(),
                trust,
                gov,
                shutdown.clone(),
            ));
        }
        (Some(h), Some(t))
    } else {
        (None, None)
    };
    let alerts = if config.alerts_enabled() {
        let (a, t) = alerts::start(
            alerts::Params {
                config: config.alerts_config(),
                rules: config.alert.clone(),
                database: config.alerts_database(),
            },
            state.clone(),
            shutdown.clone(),
        )?;
        threads.extend(t);
        Some(a)
    } else {
        None
    };
    // [[handler]] and [nagios] follow the engine's events (validate made
    // sure the engine runs when either is configured).
    // SIGHUP reloads them and the rules (alerts::reload).
    if let Some(a) = &alerts {
        alerts::reload::start(&config, a, state.clone(), shutdown.clone(), &mut tasks)?;
    }
    let forwards = forward::start(&config, &state, &shutdown, &mut tasks)?;
    let http_addr = if config.http.listen.is_empty() {
        None
    } else {
        let l = bind_tcp("http.listen", &config.http.listen).await?;
        let a = l.local_addr()?;
        let limits = http::HttpLimits::new(&config.http);
        let mut security = http::security::Security::new(&config.http, &limits)?;
        let scheme = if security.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(addr = %a, url = %format!("{scheme}://{a}/"), auth = security.auth.is_some(), "serving dashboard");
        let app = security.protect(http::router(http::AppState {
            state: state.clone(),
            storage: storage.clone(),
            rrd_root: config.rrd_root.clone(),
            case_sensitive_hostnames: config.case_sensitive_hostnames,
            limits: limits.clone(),
            flush: flush_gate.clone(),
            trusted: ctx.trusted.clone(),
            all_trusted: ctx.all_trusted,
            listen_counters: listen_counters.clone(),
            alerts: alerts.clone(),
            auth: auth.clone(),
            forwards: forwards.clone(),
        }));
        if let Some(reload) = security.reload_task(limits.clone(), shutdown.clone()) {
            tasks.spawn(reload);
        }
        let gov = Governor::new(
            Kind::Http,
            "http.listen",
            Caps {
                max_connections: config.http.max_connections,
                max_connections_per_ip: config.http.max_connections_per_ip,
            },
            listen_counters.clone(),
        );
        let params = http::ServerParams {
            header_read_timeout: Duration::from_secs(u64::from(
                config.http.header_read_timeout_secs,
            )),
            keepalive_timeout: Duration::from_secs(u64::from(config.http.keepalive_timeout_secs)),
            max_header_bytes: config.http.max_header_bytes,
            tls: security.tls.clone(),
            tls_handshake_timeout: Duration::from_secs(u64::from(
                config.http.tls_handshake_timeout_secs,
            )),
        };
        tasks.spawn(http::serve(l, app, gov, params, limits, shutdown.clone()));
        Some(a)
    };
    for ds in &config.data_source {
        tasks.spawn(poll::run_source(
            ds.clone(),
            state.clone(),
            shutdown.clone(),
        ));
    }
    // gmond's cleanup pass (host_dmax, metric dmax).
    {
        let state = state.clone();
        let sd = shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = sd.cancelled() => return,
                    _ = tick.tick() => {
                        let (h, m) = state.cleanup(now_secs());
                        if h + m > 0 {
                            tracing::info!(hosts = h, metrics = m, "expired by dmax");
                        }
                    }
                }
            }
        });
    }
    Ok(Running {
        udp_addrs,
        gmond_addrs,
        dump_addr,
        query_addr,
        http_addr,
        state,
        storage,
        listen_counters,
        alerts,
        forwards,
        shutdown,
        tasks,
        threads,
        writer,
        auth_state,
    })
}

/// Starts the aggregator and runs it until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await
}

//! Aggregator configuration (TOML). Keys, defaults and meaning follow gmond's and
//! gmetad's where one exists; every problem `validate` finds names its key.

pub mod alerts;
pub mod nagios;

mod auth;

pub use auth::{AuthConfig, AuthMode};
pub mod forward;

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use thiserror::Error;

pub mod http_security;
mod storage;

pub use storage::{RrdcachedConfig, StorageConfig};

/// A configuration problem, naming the key.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown/mistyped key.
    #[error("{0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("invalid `{key}`: {message}")]
    Invalid {
        /// Dotted key path, e.g. `cluster[0].udp_listen`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole aggregator configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `GRID NAME` (gmetad `gridname`).
    pub grid_name: String,
    /// `GRID AUTHORITY` URL.
    pub authority: String,
    /// Root of the gmetad-layout RRD tree.
    pub rrd_root: PathBuf,
    /// RRD step (seconds).
    pub step_secs: u32,
    /// RRA definitions for new files.
    pub rras: Vec<String>,
    /// gmetad `case_sensitive_hostnames`.
    pub case_sensitive_hostnames: bool,
    /// gmetad `write_rrds`.
    pub write_rrds: bool,
    /// gmetad `unsummarized_metrics`: metrics whose name starts with one of
    /// these get no summary RRDs (cluster, grid or root).
    pub unsummarized_metrics: Vec<String>,
    /// gmetad `unsummarized_sflow_vm_metrics`: no summary RRDs for names
    /// whose last `.` is followed by `v` (sFlow's per-VM metrics).
    pub unsummarized_sflow_vm_metrics: bool,
    /// gmetad `summarized_metrics`: when set, the only metrics (exact names)
    /// with root summary RRDs.
    pub summarized_metrics: Vec<String>,
    /// Addresses allowed on the XML ports besides loopback (IPs or CIDR blocks).
    pub trusted_hosts: Vec<String>,
    /// gmetad `all_trusted`.
    pub all_trusted: bool,
    /// Clusters whose agents send UDP here.
    pub cluster: Vec<ClusterConfig>,
    /// Sources polled over TCP (gmetad `data_source`).
    pub data_source: Vec<DataSourceConfig>,
    /// The gmetad-compatible XML ports.
    pub xml: XmlConfig,
    /// The dashboard/API listener.
    pub http: HttpConfig,
    /// Memory bounds.
    pub limits: LimitsConfig,
    /// The RRD writer.
    pub storage: StorageConfig,
    /// Optional rrdcached for writes.
    pub rrdcached: Option<RrdcachedConfig>,
    /// `[alerts]`: the health engine (absent = off unless `[[alert]]` rules exist).
    #[serde(default)]
    pub alerts: Option<alerts::AlertsConfig>,
    /// `[[alert]]`: metric rules.
    #[serde(default)]
    pub alert: Vec<alerts::AlertRule>,
    /// `[[handler]]`: programs run on alert events.
    #[serde(default)]
    pub handler: Vec<nagios::HandlerConfig>,
    /// `[handlers]`: limits all handlers share.
    #[serde(default)]
    pub handlers: nagios::HandlersConfig,
    /// `[nagios]`: passive results for Nagios or Icinga.
    #[serde(default)]
    pub nagios: nagios::NagiosConfig,
    /// Authenticated UDP transport limits (`[auth]`).
    #[serde(default)]
    pub auth: AuthConfig,
    /// Forwards to time-series engines (Graphite, remote write).
    #[serde(default)]
    pub forward: Vec<forward::ForwardConfig>,
    /// The file this configuration was read from ([`Config::load`] sets it),
    /// so SIGHUP can read it again.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grid_name: "unspecified".into(),
            authority: "http://localhost:8080/".into(),
            rrd_root: "/var/lib/ganglion/rrds".into(),
            step_secs: 15,
            rras: vec![
                "RRA:AVERAGE:0.5:1:5856".into(),
                "RRA:AVERAGE:0.5:4:20160".into(),
                "RRA:AVERAGE:0.5:40:52704".into(),
            ],
            case_sensitive_hostnames: false,
            write_rrds: true,
            unsummarized_metrics: Vec::new(),
            unsummarized_sflow_vm_metrics: false,
            summarized_metrics: Vec::new(),
            trusted_hosts: vec!["127.0.0.1".into(), "::1".into()],
            all_trusted: false,
            cluster: Vec::new(),
            data_source: Vec::new(),
            xml: XmlConfig::default(),
            http: HttpConfig::default(),
            limits: LimitsConfig::default(),
            storage: StorageConfig::default(),
            rrdcached: None,
            alerts: None,
            alert: Vec::new(),
            handler: Vec::new(),
            handlers: Default::default(),
            nagios: Default::default(),
            auth: AuthConfig::default(),
            forward: Vec::new(),
            source: None,
        }
    }
}

/// A `[[cluster]]`: a UDP channel whose senders form one cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `CLUSTER NAME`.
    pub name: String,
    /// `OWNER`.
    pub owner: String,
    /// `LATLONG`.
    pub latlong: String,
    /// `URL`.
    pub url: String,
    /// UDP listen addresses (IPv4 or IPv6); one string or a list. A multicast
    /// address is bound and joined, like gmond's `bind = <group>`.
    #[serde(deserialize_with = "one_or_many")]
    pub udp_listen: Vec<String>,
    /// Multicast groups every `udp_listen` socket of the same family joins
    /// (gmond's `udp_recv_channel { mcast_join }`); one string or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub mcast_join: Vec<String>,
    /// Interface the groups are joined on (gmond's `mcast_if`); default: the
    /// kernel's choice from the routing table.
    pub mcast_if: Option<String>,
    /// Optional gmond-compatible XML port for this cluster.
    pub xml_listen: Option<String>,
    /// Forget hosts silent this long (0 = never), like gmond `host_dmax`.
    pub host_dmax_secs: u32,
    /// Printed as every HOST's TMAX, like gmond `host_tmax`; alive = TN < 4 × TMAX.
    pub host_tmax_secs: u32,
    /// SO_RCVBUF for the UDP sockets (0 = the kernel default).
    pub recv_buffer_bytes: usize,
    /// Name hosts by reverse DNS of the source address, as gmond does (cached).
    pub reverse_dns: bool,
    /// Name non-spoofed hosts by the host string in the packet instead.
    pub trust_packet_hostname: bool,
    /// Authenticated transport: `off` (default), `optional` or `required`.
    pub auth: AuthMode,
    /// Key files (or directories of `*.key` files) accepted on this cluster;
    /// re-read on SIGHUP.
    pub key_files: Vec<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: "unspecified".into(),
            owner: "unspecified".into(),
            latlong: "unspecified".into(),
            url: "unspecified".into(),
            udp_listen: vec!["0.0.0.0:8649".into()],
            mcast_join: Vec::new(),
            mcast_if: None,
            xml_listen: Some("0.0.0.0:8649".into()),
            host_dmax_secs: 86400,
            host_tmax_secs: 20,
            recv_buffer_bytes: 4 * 1024 * 1024,
            reverse_dns: true,
            trust_packet_hostname: false,
            auth: AuthMode::Off,
            key_files: Vec::new(),
        }
    }
}

/// A `[[data_source]]` polled like gmetad does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSourceConfig {
    /// Source name (the RRD directory comes from the XML's CLUSTER NAME, as in gmetad).
    pub name: String,
    /// Poll interval.
    pub poll_secs: u32,
    /// Addresses in failover order, `host:port` (port defaults to 8649).
    pub addresses: Vec<String>,
    /// Per-read timeout (gmetad: 10 s, fixed).
    pub timeout_secs: u32,
    /// Largest document accepted (MiB), as received and after gunzip; a poll
    /// holds up to this much memory while it reads.
    pub max_document_mb: u32,
}

impl Default for DataSourceConfig {
    fn default() -> Self {
        DataSourceConfig {
            name: String::new(),
            poll_secs: 15,
            addresses: Vec::new(),
            timeout_secs: 10,
            max_document_mb: 512,
        }
    }
}

/// `[xml]`: gmetad's ports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XmlConfig {
    /// Full dump (gmetad `xml_port`), `""` to disable.
    pub dump_listen: String,
    /// Interactive queries (gmetad `interactive_port`), `""` to disable.
    pub query_listen: String,
    /// A client must be served within this time or is dropped.
    pub client_timeout_secs: u32,
    /// Connections served at once by EACH XML listener (8651, 8652 and every
    /// cluster's `xml_listen`); at the cap, new clients wait in the backlog.
    pub max_connections: usize,
    /// Connections one client address may hold on one XML listener; beyond
    /// it a connection is closed without a reply.
    pub max_connections_per_ip: usize,
}

impl Default for XmlConfig {
    fn default() -> Self {
        XmlConfig {
            dump_listen: "0.0.0.0:8651".into(),
            query_listen: "0.0.0.0:8652".into(),
            client_timeout_secs: 60,
            max_connections: 64,
            max_connections_per_ip: 16,
        }
    }
}

/// `[http]`: the dashboard and JSON API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address, `""` to disable.
    pub listen: String,
    /// Connections served at once; at the cap, new clients wait in the
    /// listen backlog until one ends.
    pub max_connections: usize,
    /// Connections one client address may hold; beyond it a connection is
    /// answered `503` with `Retry-After` and closed.
    pub max_connections_per_ip: usize,
    /// Time a client has to send a whole request head, counted from its
    /// first byte (from accept for a new connection that sends nothing);
    /// then the connection is closed (slowloris defence).
    pub header_read_timeout_secs: u32,
    /// A keep-alive connection with no next request this long after the
    /// last response is closed.
    pub keepalive_timeout_secs: u32,
    /// Largest request head (request line plus headers), in bytes (at least
    /// 8192, hyper's smallest buffer); larger ones get `431`.
    pub max_header_bytes: usize,
    /// `/api/series`, `/api/export` and `/api/search` requests served at
    /// once; more get `503` with `Retry-After`.
    pub max_heavy_requests: usize,
    /// `rrdtool graph` subprocesses at once (`/api/graph.png`); more get
    /// `503` with `Retry-After`.
    pub max_graph_processes: usize,
    /// Most columns (hosts) one `/api/series` or `/api/export` answers;
    /// a selection matching more gets `400` naming this key.
    pub max_series_columns: usize,
    /// Most rows (`points`) one `/api/series` answers; more gets `400`
    /// naming this key.
    pub max_series_rows: usize,
    /// Most rows one `/api/export` writes (at the step of the files it
    /// reads); more gets `400` naming this key.
    pub max_export_rows: usize,
    /// `POST /api/flush` (and the daemon socket's `FLUSHALL`) start at most
    /// one new full pass per this many seconds; a caller arriving during a
    /// pass joins the next one, a caller arriving sooner after an idle pass
    /// gets `429` with `Retry-After` (`FLUSHALL`: `-1 Flush rate limited…`).
    pub flush_min_interval_secs: u32,
    /// TLS certificate chain (PEM, leaf first); with `tls_key_file` the port
    /// speaks HTTPS only. Reloaded on SIGHUP (see [`http_security`]).
    pub tls_cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, RSA or EC).
    pub tls_key_file: Option<PathBuf>,
    /// A TLS handshake not done this long after accept: closed.
    pub tls_handshake_timeout_secs: u32,
    /// `[http.basic_auth_users]` name = bcrypt hash: when set, every route
    /// needs HTTP basic authentication.
    pub basic_auth_users: std::collections::BTreeMap<String, String>,
    /// Leave `/metrics` and `/metrics/*` open when users are set.
    pub metrics_without_auth: bool,
    /// bcrypt verifications at once; a request finding none free within 2 s
    /// gets `503` with `Retry-After`.
    pub auth_max_concurrent_checks: usize,
    /// How long a verified user and password are remembered (0 = never).
    pub auth_cache_secs: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:8080".into(),
            max_connections: 256,
            max_connections_per_ip: 32,
            header_read_timeout_secs: 10,
            keepalive_timeout_secs: 60,
            max_header_bytes: 16 * 1024,
            max_heavy_requests: 4,
            max_graph_processes: 2,
            max_series_columns: 1000,
            max_series_rows: 10_000,
            max_export_rows: 200_000,
            flush_min_interval_secs: 5,
            tls_cert_file: None,
            tls_key_file: None,
            tls_handshake_timeout_secs: http_security::DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS,
            basic_auth_users: Default::default(),
            metrics_without_auth: false,
            auth_max_concurrent_checks: http_security::DEFAULT_AUTH_MAX_CONCURRENT_CHECKS,
            auth_cache_secs: http_security::DEFAULT_AUTH_CACHE_SECS,
        }
    }
}

/// `[limits]`: bounds that keep memory finite whatever senders do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Hosts per cluster; new hosts beyond it are refused (counted).
    pub max_hosts_per_cluster: usize,
    /// Metrics per host; new metrics beyond it are refused (counted).
    pub max_metrics_per_host: usize,
    /// Longest string value kept, in bytes; longer ones are cut.
    pub max_string_bytes: usize,
    /// File descriptors kept out of the listeners' reach, for RRD files
    /// (librrd), the journal, rrdcached, UDP sockets and polls. At start the
    /// sum of every listener's `max_connections` plus this must fit in the
    /// (raised) soft `RLIMIT_NOFILE`, or the aggregator refuses to start.
    pub fd_reserve: usize,
    /// Connections served at once by EACH `storage.daemon_listen` socket.
    pub daemon_max_connections: usize,
    /// Connections one client address may hold on a TCP `daemon_listen`
    /// socket (unix sockets have no address: only the cap above applies).
    pub daemon_max_connections_per_ip: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_hosts_per_cluster: 100_000,
            max_metrics_per_host: 10_000,
            max_string_bytes: 1_400,
            fd_reserve: 256,
            daemon_max_connections: 64,
            daemon_max_connections_per_ip: 16,
        }
    }
}

use crate::acl::resolve_name;
pub use crate::acl::{Trusted, trusts};

/// The TOML printed by `--print-default-config` (parsed in a test).
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../examples/aggregator.toml");

/// The embedded config `--local` starts from: localhost only, data under `./var/`.
pub const LOCAL_CONFIG_TOML: &str = include_str!("../../examples/local.toml");

/// Parses a socket address, naming the key on failure.
pub fn parse_addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse::<SocketAddr>()
        .map_err(|e| invalid(key, format!("{s:?} is not an IP:port address ({e})")))
}

impl Config {
    /// Parses TOML text and validates it.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Reads and validates a file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut c = Config::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse(m) => ConfigError::Parse(format!("{}: {m}", path.display())),
            e => e,
        })?;
        c.source = Some(path.to_path_buf());
        Ok(c)
    }

    /// The trusted-host list, parsed. Host names are resolved (every address
    /// they have is trusted), once, at start — as gmetad does.
    pub fn trusted(&self) -> Vec<Trusted> {
        self.trusted_hosts
            .iter()
            .flat_map(|s| match Trusted::parse(s) {
                Some(t) => vec![t],
                None => resolve_name(s),
            })
            .collect()
    }

    /// Checks every value, naming the key of the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.grid_name.is_empty() {
            return Err(invalid("grid_name", "must not be empty"));
        }
        if !(1..=86400).contains(&self.step_secs) {
            return Err(invalid("step_secs", "must be between 1 and 86400"));
        }
        if self.rras.is_empty() {
            return Err(invalid("rras", "needs at least one RRA"));
        }
        // The storage keys are checked here too, so --check-config and a bad
        // file at start say the same thing before anything is bound.
        self.storage.validate().map_err(|(k, m)| invalid(k, m))?;
        http_security::validate(&self.http)?;
        nagios::validate(
            &self.handler,
            &self.handlers,
            &self.nagios,
            self.alerts_enabled(),
        )?;
        if let Some(r) = &self.rrdcached {
            r.validate().map_err(|(k, m)| invalid(k, m))?;
        }
        self.alerts_config().validate(&self.alert)?;
        for (i, r) in self.rras.iter().enumerate() {
            let parts: Vec<&str> = r.split(':').collect();
            let ok = parts.len() == 5
                && parts[0] == "RRA"
                && ["AVERAGE", "MIN", "MAX", "LAST"].contains(&parts[1])
                && parts[2]
                    .parse::<f64>()
                    .is_ok_and(|x| (0.0..1.0).contains(&x))
                && parts[3].parse::<u32>().is_ok_and(|x| x > 0)
                && parts[4].parse::<u32>().is_ok_and(|x| x > 0);
            if !ok {
                return Err(invalid(
                    format!("rras[{i}]"),
                    format!("{r:?} is not RRA:<CF>:<xff 0..1>:<steps>:<rows>"),
                ));
            }
        }
        for (i, t) in self.trusted_hosts.iter().enumerate() {
            if Trusted::parse(t).is_none() && resolve_name(t).is_empty() {
                return Err(invalid(
                    format!("trusted_hosts[{i}]"),
                    format!(
                        "{t:?} is not an IP address, a CIDR block or a host name that resolves"
                    ),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, c) in self.cluster.iter().enumerate() {
            let k = |f: &str| format!("cluster[{i}].{f}");
            if c.name.is_empty() {
                return Err(invalid(k("name"), "must not be empty"));
            }
            if !names.insert(c.name.as_str()) {
                return Err(invalid(
                    k("name"),
                    format!("duplicate cluster name {:?}", c.name),
                ));
            }
            if c.udp_listen.is_empty() {
                return Err(invalid(k("udp_listen"), "needs at least one address"));
            }
            for (j, g) in c.mcast_join.iter().enumerate() {
                if !g
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_multicast())
                {
                    return Err(invalid(
                        format!("cluster[{i}].mcast_join[{j}]"),
                        format!("{g:?} is not a multicast address (224.0.0.0/4 or ff00::/8)"),
                    ));
                }
            }
            if c.mcast_if.as_deref().is_some_and(str::is_empty) {
                return Err(invalid(k("mcast_if"), "must name an interface"));
            }
            for (j, a) in c.udp_listen.iter().enumerate() {
                parse_addr(&format!("cluster[{i}].udp_listen[{j}]"), a)?;
            }
            if let Some(x) = c.xml_listen.as_deref().filter(|x| !x.is_empty()) {
                parse_addr(&k("xml_listen"), x)?;
            }
            if c.host_tmax_secs == 0 {
                return Err(invalid(k("host_tmax_secs"), "must be at least 1"));
            }
        }
        for (i, d) in self.data_source.iter().enumerate() {
            let k = |f: &str| format!("data_source[{i}].{f}");
            if d.name.is_empty() {
                return Err(invalid(k("name"), "must not be empty"));
            }
            if d.addresses.is_empty() {
                return Err(invalid(k("addresses"), "needs at least one host:port"));
            }
            if d.poll_secs == 0 {
                return Err(invalid(k("poll_secs"), "must be at least 1"));
            }
            if d.timeout_secs == 0 {
                return Err(invalid(k("timeout_secs"), "must be at least 1"));
            }
            if d.max_document_mb == 0 {
                return Err(invalid(k("max_document_mb"), "must be at least 1"));
            }
        }
        self.auth.validate(&self.cluster)?;
        if self.cluster.is_empty() && self.data_source.is_empty() {
            return Err(invalid(
                "cluster",
                "configure at least one [[cluster]] or [[data_source]]",
            ));
        }
        for (key, v) in [
            ("xml.dump_listen", &self.xml.dump_listen),
            ("xml.query_listen", &self.xml.query_listen),
            ("http.listen", &self.http.listen),
        ] {
            if !v.is_empty() {
                parse_addr(key, v)?;
            }
        }
        for (i, a) in self.storage.daemon_listen.iter().enumerate() {
            let key = format!("storage.daemon_listen[{i}]");
            if !self.write_rrds {
                return Err(invalid(&key, "serves RRD files: needs write_rrds = true"));
            }
            if crate::addr::unix_path(a).is_none() {
                parse_addr(&key, a)?;
            }
        }
        if self.storage.daemon_socket_mode_bits().is_none() {
            return Err(invalid(
                "storage.daemon_socket_mode",
                "must be octal permissions such as \"0660\"",
            ));
        }
        if self.storage.flush_interval_secs == 0 {
            return Err(invalid("storage.flush_interval_secs", "must be at least 1"));
        }
        if let Some(r) = &self.rrdcached
            && r.address.is_empty()
        {
            return Err(invalid("rrdcached.address", "must not be empty"));
        }
        if self.limits.max_hosts_per_cluster == 0 {
            return Err(invalid(
                "limits.max_hosts_per_cluster",
                "must be at least 1",
            ));
        }
        if self.limits.max_metrics_per_host == 0 {
            return Err(invalid("limits.max_metrics_per_host", "must be at least 1"));
        }
        let at_least_1 = [
            ("http.max_connections", self.http.max_connections as u64),
            (
                "http.max_connections_per_ip",
                self.http.max_connections_per_ip as u64,
            ),
            (
                "http.header_read_timeout_secs",
                u64::from(self.http.header_read_timeout_secs),
            ),
            (
                "http.keepalive_timeout_secs",
                u64::from(self.http.keepalive_timeout_secs),
            ),
            (
                "http.max_heavy_requests",
                self.http.max_heavy_requests as u64,
            ),
            (
                "http.max_graph_processes",
                self.http.max_graph_processes as u64,
            ),
            (
                "http.max_series_columns",
                self.http.max_series_columns as u64,
            ),
            ("xml.max_connections", self.xml.max_connections as u64),
            (
                "xml.max_connections_per_ip",
                self.xml.max_connections_per_ip as u64,
            ),
            (
                "limits.daemon_max_connections",
                self.limits.daemon_max_connections as u64,
            ),
            (
                "limits.daemon_max_connections_per_ip",
                self.limits.daemon_max_connections_per_ip as u64,
            ),
        ];
        for (key, v) in at_least_1 {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        // Bounded above so one key cannot ask for more than a process could
        // ever get (the descriptor budget is checked at start).
        for (key, v) in [
            ("http.max_connections", self.http.max_connections),
            ("xml.max_connections", self.xml.max_connections),
            (
                "limits.daemon_max_connections",
                self.limits.daemon_max_connections,
            ),
            ("limits.fd_reserve", self.limits.fd_reserve),
        ] {
            if v > 1_000_000 {
                return Err(invalid(key, "must be at most 1000000"));
            }
        }
        if !(8192..=1024 * 1024).contains(&self.http.max_header_bytes) {
            return Err(invalid(
                "http.max_header_bytes",
                "must be between 8192 and 1048576",
            ));
        }
        if !(10..=1_000_000).contains(&self.http.max_series_rows) {
            return Err(invalid(
                "http.max_series_rows",
                "must be between 10 and 1000000",
            ));
        }
        if self.http.max_export_rows == 0 {
            return Err(invalid("http.max_export_rows", "must be at least 1"));
        }
        forward::validate(&self.forward)?;
        if self.limits.fd_reserve < 64 {
            return Err(invalid(
                "limits.fd_reserve",
                "must be at least 64 (librrd, the journal, rrdcached and the UDP sockets need them)",
            ));
        }
        Ok(())
    }

    /// What every listener may hold open, plus the reserve, keyed by the
    /// config key that sets each figure: checked against `RLIMIT_NOFILE`.
    pub fn fd_budget(&self) -> Vec<(String, u64)> {
        let mut lines = Vec::new();
        if !self.http.listen.is_empty() {
            lines.push((
                "http.max_connections".into(),
                self.http.max_connections as u64,
            ));
        }
        let xml_listeners = self
            .cluster
            .iter()
            .filter(|c| c.xml_listen.as_deref().is_some_and(|x| !x.is_empty()))
            .count()
            + usize::from(!self.xml.dump_listen.is_empty())
            + usize::from(!self.xml.query_listen.is_empty());
        if xml_listeners > 0 {
            lines.push((
                format!("xml.max_connections ({xml_listeners} listeners)"),
                (self.xml.max_connections * xml_listeners) as u64,
            ));
        }
        if self.write_rrds && !self.storage.daemon_listen.is_empty() {
            let n = self.storage.daemon_listen.len();
            lines.push((
                format!("limits.daemon_max_connections ({n} listeners)"),
                (self.limits.daemon_max_connections * n) as u64,
            ));
        }
        // Listening and UDP sockets, one poll connection per data source.
        let sockets = self
            .cluster
            .iter()
            .map(|c| c.udp_listen.len())
            .sum::<usize>()
            + xml_listeners
            + self.data_source.len()
            + 1
            + self.storage.daemon_listen.len();
        lines.push(("listening/UDP sockets and polls".into(), sockets as u64));
        // Listeners at their cap refuse through a few short-lived sockets each.
        let listeners = usize::from(!self.http.listen.is_empty())
            + xml_listeners
            + if self.write_rrds {
                self.storage.daemon_listen.len()
            } else {
                0
            };
        lines.push((
            "refusals at the caps (8 per listener)".into(),
            (listeners * 8) as u64,
        ));
        lines.push(("limits.fd_reserve".into(), self.limits.fd_reserve as u64));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_parse() {
        let d = Config::from_toml(DEFAULT_CONFIG_TOML).unwrap();
        assert_eq!(d.step_secs, 15);
        assert_eq!(d.cluster[0].udp_listen, ["0.0.0.0:8649"]);
        // The example shows every key with its default.
        let s = StorageConfig::default();
        assert_eq!(
            (
                d.storage.flush_interval_secs,
                d.storage.max_file_writes_per_sec,
                d.storage.queue_max_batches,
                d.storage.journal,
                d.storage.journal_commit_interval_ms,
                d.storage.retry_window_secs,
            ),
            (
                s.flush_interval_secs,
                s.max_file_writes_per_sec,
                s.queue_max_batches,
                s.journal,
                s.journal_commit_interval_ms,
                s.retry_window_secs,
            )
        );
        let l = Config::from_toml(LOCAL_CONFIG_TOML).unwrap();
        assert!(l.cluster[0].udp_listen[0].starts_with("127.0.0.1:"));
    }

    #[test]
    fn errors_name_the_key() {
        let e =
            Config::from_toml("[[cluster]]\nname = \"a\"\nudp_listen = [\"nope\"]\n").unwrap_err();
        assert!(e.to_string().contains("cluster[0].udp_listen[0]"), "{e}");
        let e = Config::from_toml("step_secs = 0\n[[cluster]]\n").unwrap_err();
        assert!(e.to_string().contains("step_secs"), "{e}");
        let e = Config::from_toml("bogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = Config::from_toml("rras = [\"RRA:AVG:0.5:1:10\"]\n[[cluster]]\n").unwrap_err();
        assert!(e.to_string().contains("rras[0]"), "{e}");
        let e = Config::from_toml("trusted_hosts = [\"10.0.0.0/99\"]\n[[cluster]]\n").unwrap_err();
        assert!(e.to_string().contains("trusted_hosts[0]"), "{e}");
        for (toml, key) in [
            (
                "[storage]\ndaemon_listen = [\"nope\"]\n",
                "storage.daemon_listen[0]",
            ),
            (
                "write_rrds = false\n[storage]\ndaemon_listen = [\"/run/x.sock\"]\n",
                "storage.daemon_listen[0]",
            ),
            (
                "[storage]\ndaemon_socket_mode = \"0999\"\n",
                "storage.daemon_socket_mode",
            ),
            ("[http]\nmax_connections = 0\n", "http.max_connections"),
            ("[http]\nmax_header_bytes = 100\n", "http.max_header_bytes"),
            ("[http]\nmax_series_rows = 5\n", "http.max_series_rows"),
            (
                "[xml]\nmax_connections_per_ip = 0\n",
                "xml.max_connections_per_ip",
            ),
            ("[limits]\nfd_reserve = 10\n", "limits.fd_reserve"),
            (
                "[limits]\ndaemon_max_connections = 0\n",
                "limits.daemon_max_connections",
            ),
        ] {
            let e = Config::from_toml(&format!("{toml}[[cluster]]\n")).unwrap_err();
            assert!(e.to_string().contains(key), "{toml}: {e}");
        }
        let c = Config::from_toml(
            "[storage]\ndaemon_listen = [\"unix:/run/g.sock\", \"/run/h.sock\", \"127.0.0.1:42217\"]\n[[cluster]]\n",
        );
        assert!(c.is_ok(), "{c:?}");
    }

    #[test]
    fn trusted_blocks() {
        let t = Trusted::parse("10.1.0.0/16").unwrap();
        assert!(t.contains("10.1.2.3".parse().unwrap()));
        assert!(!t.contains("10.2.0.1".parse().unwrap()));
        assert!(t.contains("::ffff:10.1.9.9".parse().unwrap()));
        // By name, as gmetad allows: "localhost" resolves to loopback.
        let c = Config::from_toml("trusted_hosts = [\"localhost\"]\n[[cluster]]\n").unwrap();
        let by_name = c.trusted();
        assert!(!by_name.is_empty());
        assert!(by_name.iter().all(|t| t.addr.is_loopback()), "{by_name:?}");
        let e = Config::from_toml("trusted_hosts = [\"no-such-host.invalid\"]\n[[cluster]]\n")
            .unwrap_err();
        assert!(e.to_string().contains("trusted_hosts[0]"), "{e}");
        let t6 = Trusted::parse("fd00::/8").unwrap();
        assert!(t6.contains("fd12::1".parse().unwrap()));
        assert!(
            Trusted::parse("::1")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
    }
}

//! `[[forward]]`: pushing every numeric metric of every alive host into a
//! time-series engine once per interval, by Graphite plaintext (carbon,
//! VictoriaMetrics, anything that speaks it) or Prometheus remote write 1.0
//! (Prometheus, VictoriaMetrics, Mimir, Thanos). The sender lives in the
//! aggregator's `forward` module; this file only holds the keys and their checks.

use super::{ConfigError, invalid};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Which wire a forward speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ForwardKind {
    /// Not set: refused by `validate`.
    #[default]
    Unset,
    /// Graphite plaintext lines (`path value timestamp\n`).
    Graphite,
    /// Prometheus remote write 1.0 (protobuf + snappy over HTTP POST).
    RemoteWrite,
}

impl ForwardKind {
    /// The name used in config and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardKind::Unset => "unset",
            ForwardKind::Graphite => "graphite",
            ForwardKind::RemoteWrite => "remote_write",
        }
    }
}

/// Graphite transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GraphiteProtocol {
    /// One persistent connection, reconnected with backoff.
    #[default]
    Tcp,
    /// Lines packed into datagrams of at most 1400 bytes.
    Udp,
}

/// How Graphite paths are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GraphiteCompat {
    /// Exactly as gmetad 3.7's carbon export: cluster spaces → `_`, host dots
    /// → `_` (lowercased unless `case_sensitive_hostnames`), metric spaces →
    /// `_`; a prefix or path of one character is ignored, as gmetad does.
    #[default]
    Gmetad,
    /// As `gmetad`, and every byte outside `[A-Za-z0-9_.:-]` of the three
    /// names also becomes `_` (so no name can add a field to the line).
    Strict,
}

/// `basic_auth = { username = "…", password = "…" }` (or `password_file`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password (prefer `password_file`).
    pub password: String,
    /// File whose first line is the password, read at start.
    pub password_file: Option<PathBuf>,
}

/// One `[[forward]]` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// Label `forward="…"` on the self-metrics and the dashboard; default:
    /// the kind. Must be unique.
    pub name: String,
    /// `graphite` or `remote_write`.
    pub kind: ForwardKind,
    /// Graphite: `host:port` of the line receiver.
    pub address: String,
    /// Graphite: `tcp` (default) or `udp`.
    pub protocol: GraphiteProtocol,
    /// Graphite: path prefix (gmetad `graphite_prefix`).
    pub prefix: String,
    /// Graphite: path template with `%s` cluster, `%h` host, `%m` metric
    /// (gmetad `graphite_path`); empty = `%s.%h.%m`.
    pub path: String,
    /// Graphite: path rules, `gmetad` (default) or `strict`.
    pub compat: GraphiteCompat,
    /// Remote write: the endpoint (`http://` or `https://`).
    pub url: String,
    /// Remote write: extra request headers (e.g. `X-Scope-OrgID`). The
    /// protocol's own headers cannot be overridden.
    pub headers: BTreeMap<String, String>,
    /// Remote write: HTTP basic authentication.
    pub basic_auth: Option<BasicAuth>,
    /// Remote write: `Authorization: Bearer …`.
    pub bearer_token: String,
    /// Remote write: file whose first line is the bearer token.
    pub bearer_token_file: Option<PathBuf>,
    /// Remote write over https: PEM file of the CA(s) to trust instead of
    /// the system's.
    pub tls_ca: Option<PathBuf>,
    /// Remote write: labels added to every series (the `grid` label is the
    /// grid name unless set here).
    pub external_labels: BTreeMap<String, String>,
    /// Globs on `cluster/host/metric`; a metric is sent when it matches one
    /// (empty: all) and no `exclude`.
    pub include: Vec<String>,
    /// Globs on `cluster/host/metric` never sent (exclude wins).
    pub exclude: Vec<String>,
    /// Seconds between two snapshots sent; 0 = `step_secs`.
    pub interval_secs: u32,
    /// Also send each cluster's summary (sum and count over alive hosts).
    pub summaries: bool,
    /// Bytes of encoded batches held for sending; past it the oldest batch
    /// is dropped (`reason="queue_full"`).
    pub queue_max_bytes: u64,
    /// Samples (remote write) or lines (Graphite) per request or write.
    pub max_samples_per_send: usize,
    /// Per-request (remote write) or per-write (Graphite TCP) timeout.
    pub timeout_secs: u32,
    /// First retry delay after a failure, doubled up to `backoff_max_ms`.
    pub backoff_min_ms: u64,
    /// Longest retry delay.
    pub backoff_max_ms: u64,
    /// Batches older than this are dropped, not retried (`reason="too_old"`).
    pub max_sample_age_secs: u32,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            name: String::new(),
            kind: ForwardKind::Unset,
            address: String::new(),
            protocol: GraphiteProtocol::Tcp,
            prefix: String::new(),
            path: String::new(),
            compat: GraphiteCompat::Gmetad,
            url: String::new(),
            headers: BTreeMap::new(),
            basic_auth: None,
            bearer_token: String::new(),
            bearer_token_file: None,
            tls_ca: None,
            external_labels: BTreeMap::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            interval_secs: 0,
            summaries: false,
            queue_max_bytes: 64 * 1024 * 1024,
            max_samples_per_send: 2000,
            timeout_secs: 10,
            backoff_min_ms: 30,
            backoff_max_ms: 5000,
            max_sample_age_secs: 3600,
        }
    }
}

/// Headers remote write sets itself (the spec forbids overriding them).
pub const RESERVED_HEADERS: [&str; 7] = [
    "content-encoding",
    "content-type",
    "content-length",
    "user-agent",
    "x-prometheus-remote-write-version",
    "host",
    "authorization",
];

/// The labels every remote-write series carries itself.
pub const RESERVED_LABELS: [&str; 3] = ["__name__", "cluster", "host"];

impl ForwardConfig {
    /// The name used in labels: `name`, else the kind.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            self.kind.as_str()
        } else {
            &self.name
        }
    }

    /// The effective interval.
    pub fn interval(&self, step_secs: u32) -> u32 {
        if self.interval_secs == 0 {
            step_secs
        } else {
            self.interval_secs
        }
    }

    fn check(&self, i: usize) -> Result<(), ConfigError> {
        let k = |f: &str| format!("forward[{i}].{f}");
        match self.kind {
            ForwardKind::Unset => {
                return Err(invalid(
                    k("kind"),
                    "must be \"graphite\" or \"remote_write\"",
                ));
            }
            ForwardKind::Graphite => {
                if self.address.is_empty() {
                    return Err(invalid(k("address"), "graphite needs host:port"));
                }
                let ok = self
                    .address
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                if !ok {
                    return Err(invalid(
                        k("address"),
                        format!("{:?} is not host:port", self.address),
                    ));
                }
                if !self.url.is_empty() {
                    return Err(invalid(k("url"), "is for kind = \"remote_write\""));
                }
            }
            ForwardKind::RemoteWrite => {
                if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
                    return Err(invalid(
                        k("url"),
                        "remote_write needs an http:// or https:// URL",
                    ));
                }
                if !self.address.is_empty() {
                    return Err(invalid(k("address"), "is for kind = \"graphite\""));
                }
                if self.tls_ca.is_some() && !self.url.starts_with("https://") {
                    return Err(invalid(k("tls_ca"), "needs an https:// url"));
                }
            }
        }
        for h in self.headers.keys() {
            let lower = h.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(invalid(
                    k("headers"),
                    format!(
                        "{h:?} is set by the sender (use basic_auth/bearer_token for Authorization)"
                    ),
                ));
            }
            if h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(k("headers"), format!("{h:?} is not a header name")));
            }
        }
        for (h, v) in &self.headers {
            if v.bytes().any(|b| b < 0x20 && b != b'\t') {
                return Err(invalid(
                    k("headers"),
                    format!("value of {h:?} has control characters"),
                ));
            }
        }
        let auths = usize::from(self.basic_auth.is_some())
            + usize::from(!self.bearer_token.is_empty() || self.bearer_token_file.is_some());
        if auths > 1 {
            return Err(invalid(
                k("basic_auth"),
                "use either basic_auth or bearer_token, not both",
            ));
        }
        if let Some(b) = &self.basic_auth
            && b.username.is_empty()
        {
            return Err(invalid(k("basic_auth.username"), "must not be empty"));
        }
        for l in self.external_labels.keys() {
            let valid = l.bytes().enumerate().all(|(j, c)| {
                c == b'_' || c.is_ascii_alphabetic() || (j > 0 && c.is_ascii_digit())
            });
            if l.is_empty()
                || !valid
                || l.starts_with("__")
                || RESERVED_LABELS.contains(&l.as_str())
            {
                return Err(invalid(
                    k("external_labels"),
                    format!(
                        "{l:?} is not a free label name ([a-zA-Z_][a-zA-Z0-9_]*, not __*, cluster or host)"
                    ),
                ));
            }
        }
        for (l, v) in &self.external_labels {
            if v.is_empty() {
                return Err(invalid(
                    k("external_labels"),
                    format!("{l:?} has an empty value"),
                ));
            }
        }
        for (key, globs) in [("include", &self.include), ("exclude", &self.exclude)] {
            for (j, g) in globs.iter().enumerate() {
                if let Err(e) = globset::Glob::new(g) {
                    return Err(invalid(format!("forward[{i}].{key}[{j}]"), e.to_string()));
                }
            }
        }
        if self.interval_secs > 86400 {
            return Err(invalid(k("interval_secs"), "must be at most 86400"));
        }
        if self.queue_max_bytes < 64 * 1024 {
            return Err(invalid(k("queue_max_bytes"), "must be at least 65536"));
        }
        if !(1..=1_000_000).contains(&self.max_samples_per_send) {
            return Err(invalid(
                k("max_samples_per_send"),
                "must be between 1 and 1000000",
            ));
        }
        if !(1..=3600).contains(&self.timeout_secs) {
            return Err(invalid(k("timeout_secs"), "must be between 1 and 3600"));
        }
        if self.backoff_min_ms == 0 || self.backoff_min_ms > self.backoff_max_ms {
            return Err(invalid(
                k("backoff_min_ms"),
                "must be at least 1 and at most backoff_max_ms",
            ));
        }
        if self.backoff_max_ms > 600_000 {
            return Err(invalid(k("backoff_max_ms"), "must be at most 600000"));
        }
        if self.max_sample_age_secs == 0 {
            return Err(invalid(k("max_sample_age_secs"), "must be at least 1"));
        }
        Ok(())
    }
}

/// Checks every `[[forward]]` block and that their names are unique.
pub fn validate(forwards: &[ForwardConfig]) -> Result<(), ConfigError> {
    let mut names = std::collections::HashSet::new();
    for (i, f) in forwards.iter().enumerate() {
        f.check(i)?;
        if !names.insert(f.label()) {
            return Err(invalid(
                format!("forward[{i}].name"),
                format!(
                    "duplicate forward name {:?} (give each block a name)",
                    f.label()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn err(extra: &str) -> String {
        let text = format!("[[cluster]]\nname = \"c\"\n{extra}");
        match Config::from_toml(&text) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn forwards_parse_and_errors_name_the_key() {
        let ok = Config::from_toml(
            "[[cluster]]\nname = \"c\"\n\
             [[forward]]\nkind = \"graphite\"\naddress = \"127.0.0.1:2003\"\nprefix = \"ganglia\"\ncompat = \"gmetad\"\n\
             [[forward]]\nkind = \"remote_write\"\nurl = \"http://127.0.0.1:8428/api/v1/write\"\n\
             headers = { \"X-Scope-OrgID\" = \"t1\" }\nexclude = [\"*/*/cpu_aidle\"]\n",
        )
        .unwrap();
        assert_eq!(ok.forward.len(), 2);
        assert_eq!(ok.forward[1].label(), "remote_write");
        assert_eq!(ok.forward[0].interval(15), 15);
        for (extra, key) in [
            ("[[forward]]\naddress = \"a:1\"\n", "forward[0].kind"),
            (
                "[[forward]]\nkind = \"graphite\"\naddress = \"nope\"\n",
                "forward[0].address",
            ),
            (
                "[[forward]]\nkind = \"remote_write\"\nurl = \"ftp://x\"\n",
                "forward[0].url",
            ),
            (
                "[[forward]]\nkind = \"remote_write\"\nurl = \"http://x/\"\nheaders = { \"Content-Type\" = \"x\" }\n",
                "forward[0].headers",
            ),
            (
                "[[forward]]\nkind = \"remote_write\"\nurl = \"http://x/\"\nexternal_labels = { host = \"x\" }\n",
                "forward[0].external_labels",
            ),
            (
                "[[forward]]\nkind = \"remote_write\"\nurl = \"http://x/\"\ninclude = [\"a[\"]\n",
                "forward[0].include[0]",
            ),
            (
                "[[forward]]\nkind = \"graphite\"\naddress = \"a:1\"\n[[forward]]\nkind = \"graphite\"\naddress = \"b:1\"\n",
                "forward[1].name",
            ),
            (
                "[[forward]]\nkind = \"graphite\"\naddress = \"a:1\"\nqueue_max_bytes = 10\n",
                "forward[0].queue_max_bytes",
            ),
        ] {
            let e = err(extra);
            assert!(e.contains(key), "{extra:?} gave {e:?}, wanted {key}");
        }
    }
}

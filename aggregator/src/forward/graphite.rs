//! Graphite plaintext: the paths gmetad 3.7's carbon export builds
//! (`gmetad/export_helpers.c`, reproduced from its documented behaviour),
//! the lines, and the TCP/UDP sender.
//!
//! Differences from gmetad, all on purpose: no NUL after each line (carbon
//! ignores it, VictoriaMetrics counts each one as an invalid line); one
//! persistent TCP connection instead of one per line; a space in a metric
//! name becomes `_` with or without `graphite_path` (gmetad sends it raw
//! without one, and carbon rejects the 4-field line); whitespace and control
//! characters in any name become `_`, so no name can split or add a line;
//! `/` and `\\` become `_` (carbon turns the path into a file path); an
//! empty level (an empty name, `a..b`, a leading or trailing dot) becomes
//! `_` (carbon would fold it into its neighbour's file); a value that is
//! not a number as carbon reads one is sent as the parsed number.

use super::Outcome;
use crate::config::forward::{GraphiteCompat, GraphiteProtocol};
use std::io::Write as _;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

/// Largest UDP datagram sent (whole lines only): fits an Ethernet MTU.
pub const MAX_DATAGRAM: usize = 1400;

/// How paths are built: gmetad's `graphite_prefix`, `graphite_path`,
/// `case_sensitive_hostnames`, and the compat mode.
#[derive(Debug, Clone)]
pub struct PathRules {
    /// Used only when longer than one byte, as gmetad does.
    pub prefix: String,
    /// `%s`/`%h`/`%m` template, used only when longer than one byte.
    pub template: String,
    /// Host names keep their case.
    pub case_sensitive_hostnames: bool,
    /// `gmetad` or `strict`.
    pub compat: GraphiteCompat,
}

fn clean(out: &mut String, s: &str, strict: bool, map: impl Fn(char) -> char) {
    for c in s.chars() {
        let c = map(c);
        let bad = c.is_whitespace()
            || c.is_control()
            || matches!(c, '/' | '\\')
            || (strict && !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')));
        out.push(if bad { '_' } else { c });
    }
}

impl PathRules {
    /// The prefix gmetad would use (`None` when it would ignore it).
    fn prefix(&self) -> Option<&str> {
        (self.prefix.len() > 1).then_some(self.prefix.as_str())
    }

    /// The cluster part: spaces become `_`; dots stay (they add levels).
    pub fn cluster(&self, cluster: &str) -> String {
        let mut s = String::with_capacity(cluster.len());
        clean(&mut s, cluster, self.strict(), |c| c);
        s
    }

    /// The host part: dots become `_`, lowercased unless case-sensitive.
    pub fn host(&self, host: &str) -> String {
        let mut s = String::with_capacity(host.len());
        let lower = !self.case_sensitive_hostnames;
        clean(&mut s, host, self.strict(), |c| match c {
            '.' => '_',
            c if lower => c.to_ascii_lowercase(),
            c => c,
        });
        s
    }

    fn strict(&self) -> bool {
        self.compat == GraphiteCompat::Strict
    }

    /// The whole path for a metric of an already-mapped cluster and host.
    pub fn path(&self, out: &mut String, cluster: &str, host: &str, metric: &str) {
        let start = out.len();
        self.raw_path(out, cluster, host, metric);
        if out[start..].starts_with('.') || out.ends_with('.') || out[start..].contains("..") {
            let filled = fill_empty_levels(&out[start..]);
            out.truncate(start);
            out.push_str(&filled);
        }
    }

    fn raw_path(&self, out: &mut String, cluster: &str, host: &str, metric: &str) {
        let mut m = String::with_capacity(metric.len());
        clean(&mut m, metric, self.strict(), |c| c);
        if let Some(p) = self.prefix() {
            out.push_str(p);
            out.push('.');
        }
        if self.template.len() > 1 {
            // One pass: a name holding `%h` or `%m` is not expanded again.
            let mut rest = self.template.as_str();
            while let Some(i) = rest.find('%') {
                out.push_str(&rest[..i]);
                let tail = &rest[i..];
                let part = match tail.as_bytes().get(1) {
                    Some(b's') => Some(cluster),
                    Some(b'h') => Some(host),
                    Some(b'm') => Some(m.as_str()),
                    _ => None,
                };
                match part {
                    Some(p) => {
                        out.push_str(p);
                        rest = &tail[2..];
                    }
                    None => {
                        out.push('%');
                        rest = &tail[1..];
                    }
                }
            }
            out.push_str(rest);
        } else {
            out.push_str(cluster);
            out.push('.');
            out.push_str(host);
            out.push('.');
            out.push_str(&m);
        }
    }
}

/// `_` for every empty level of a dotted path.
fn fill_empty_levels(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 2);
    for (i, level) in path.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(if level.is_empty() { "_" } else { level });
    }
    out
}

/// Appends `path value ts\n`. `val` is the VAL text as received (gmetad
/// sends it verbatim); one that is not a number falls back to `number`.
pub fn line(out: &mut Vec<u8>, path: &str, val: &str, number: f64, ts: u64) {
    let v = val.trim();
    // Verbatim only when it is one number token (carbon reads it with
    // Python's float(); Rust's f64 grammar is a subset of that).
    let _ = if v.parse::<f64>().is_err() {
        writeln!(out, "{path} {} {ts}", ryu::Buffer::new().format(number))
    } else {
        writeln!(out, "{path} {v} {ts}")
    };
}

/// Splits lines into datagrams of at most [`MAX_DATAGRAM`] bytes (a single
/// longer line goes alone).
pub fn datagrams(payload: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for (i, b) in payload.iter().enumerate() {
        if *b == b'\n' {
            if i + 1 - start > MAX_DATAGRAM && end > start {
                out.push(&payload[start..end]);
                start = end;
            }
            end = i + 1;
        }
    }
    if end > start {
        out.push(&payload[start..end]);
    }
    out
}

/// The Graphite connection of one forward.
pub struct Sender {
    address: String,
    protocol: GraphiteProtocol,
    tcp: Option<TcpStream>,
    udp: Option<UdpSocket>,
    timeout: Duration,
}

impl Sender {
    /// Not connected yet: the first send connects.
    pub fn new(address: &str, protocol: GraphiteProtocol, timeout: Duration) -> Sender {
        Sender {
            address: address.to_string(),
            protocol,
            tcp: None,
            udp: None,
            timeout,
        }
    }

    /// Writes one batch of lines.
    pub async fn send(&mut self, payload: &[u8]) -> Outcome {
        let r = match self.protocol {
            GraphiteProtocol::Tcp => self.send_tcp(payload).await,
            GraphiteProtocol::Udp => self.send_udp(payload).await,
        };
        match r {
            Ok(()) => Outcome::Sent,
            Err(e) => {
                self.tcp = None;
                self.udp = None;
                Outcome::Retry {
                    error: e,
                    after: None,
                }
            }
        }
    }

    async fn send_tcp(&mut self, payload: &[u8]) -> Result<(), String> {
        // A receiver that closed its end shows as EOF on read: reconnect
        // rather than write into a socket whose bytes would be lost.
        if let Some(s) = &self.tcp {
            let mut b = [0u8; 64];
            match s.try_read(&mut b) {
                Ok(0) => self.tcp = None,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => self.tcp = None,
                _ => {}
            }
        }
        if self.tcp.is_none() {
            let s = tokio::time::timeout(self.timeout, TcpStream::connect(&self.address))
                .await
                .map_err(|_| format!("connect to {} timed out", self.address))?
                .map_err(|e| format!("connect to {}: {e}", self.address))?;
            let _ = s.set_nodelay(true);
            self.tcp = Some(s);
        }
        let Some(s) = self.tcp.as_mut() else {
            return Err("not connected".into());
        };
        tokio::time::timeout(self.timeout, s.write_all(payload))
            .await
            .map_err(|_| format!("write to {} timed out (receiver not reading)", self.address))?
            .map_err(|e| format!("write to {}: {e}", self.address))
    }

    async fn send_udp(&mut self, payload: &[u8]) -> Result<(), String> {
        if self.udp.is_none() {
            let target = tokio::net::lookup_host(&self.address)
                .await
                .map_err(|e| format!("resolve {}: {e}", self.address))?
                .next()
                .ok_or_else(|| format!("{} resolves to nothing", self.address))?;
            let local = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let s = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
            s.connect(target).await.map_err(|e| e.to_string())?;
            self.udp = Some(s);
        }
        let Some(s) = self.udp.as_ref() else {
            return Err("no socket".into());
        };
        for d in datagrams(payload) {
            tokio::time::timeout(self.timeout, s.send(d))
                .await
                .map_err(|_| "send timed out".to_string())?
                .map_err(|e| format!("send to {}: {e}", self.address))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(prefix: &str, template: &str, cs: bool) -> PathRules {
        PathRules {
            prefix: prefix.into(),
            template: template.into(),
            case_sensitive_hostnames: cs,
            compat: GraphiteCompat::Gmetad,
        }
    }

    fn path(r: &PathRules, c: &str, h: &str, m: &str) -> String {
        let mut s = String::new();
        r.path(&mut s, &r.cluster(c), &r.host(h), m);
        s
    }

    #[test]
    fn gmetad_path_rules() {
        let r = rules("", "", false);
        assert_eq!(
            path(&r, "my cluster", "Node1.example.com", "load_one"),
            "my_cluster.node1_example_com.load_one"
        );
        // Dots in the cluster add levels; the host keeps case when asked.
        assert_eq!(
            path(&rules("", "", true), "Web.PRD", "Node1.x", "m"),
            "Web.PRD.Node1_x.m"
        );
        assert_eq!(
            path(&rules("dc1.gmetad", "", false), "c", "h", "m"),
            "dc1.gmetad.c.h.m"
        );
        // One-character prefix or template: ignored, as gmetad does.
        assert_eq!(path(&rules("x", "%", false), "c", "h", "m"), "c.h.m");
        assert_eq!(
            path(&rules("", "%h.%s.%m.%m", false), "c", "h", "a b"),
            "h.c.a_b.a_b"
        );
        assert_eq!(
            path(&rules("p", "ganglia.%s.%m", false), "c", "h", "m"),
            "ganglia.c.m"
        );
        // Names are not templates: `%h` in a cluster stays text.
        assert_eq!(
            path(&rules("", "%s.%h.%m", false), "a%hb", "x%m", "%s"),
            "a%hb.x%m.%s"
        );
        // A space in the metric becomes `_` without a template too.
        assert_eq!(path(&r, "c", "h", "my metric"), "c.h.my_metric");
        // No name can add a line or a field.
        assert_eq!(
            path(&r, "c\n", "h\tx", "m\r\nevil 1 2"),
            "c_.h_x.m__evil_1_2"
        );
        let strict = PathRules {
            compat: GraphiteCompat::Strict,
            ..rules("", "", false)
        };
        assert_eq!(path(&strict, "c/é", "h", "m;k=v"), "c__.h.m_k_v");
    }

    #[test]
    fn lines_have_no_nul_and_datagrams_keep_whole_lines() {
        let mut out = Vec::new();
        line(&mut out, "a.b", "0.42", 0.42, 1_700_000_000);
        line(&mut out, "a.c", "1 2", 3.5, 1_700_000_000);
        assert_eq!(out, b"a.b 0.42 1700000000\na.c 3.5 1700000000\n");
        let big: Vec<u8> = (0..200)
            .flat_map(|i| format!("ganglia.c.h.metric{i} {i} 1700000000\n").into_bytes())
            .collect();
        let parts = datagrams(&big);
        assert!(parts.len() > 1);
        assert_eq!(parts.concat(), big);
        for p in parts {
            assert!(p.len() <= MAX_DATAGRAM && p.ends_with(b"\n"));
        }
    }

    /// Whatever the names and value text: one line of exactly three
    /// fields, a path of non-empty levels with no whitespace, control
    /// character or slash, and a value carbon reads as a number.
    #[test]
    fn hostile_names_give_one_three_field_line() {
        let names = crate::hostile::names();
        let all_rules = [
            rules("", "", false),
            rules("", "", true),
            rules("pre", "%h.%s.%m", false),
            PathRules {
                compat: GraphiteCompat::Strict,
                ..rules("", "", false)
            },
        ];
        for r in &all_rules {
            for a in &names {
                for b in &names {
                    for (c, h, m) in [(a.as_str(), b.as_str(), "m"), ("c", a, b), (a, "h", b)] {
                        let mut out = Vec::new();
                        line(&mut out, &path(r, c, h, m), b, 1.5, 1_700_000_000);
                        let text = String::from_utf8(out).unwrap();
                        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
                        let fields: Vec<&str> = text.trim_end_matches('\n').split(' ').collect();
                        assert_eq!(fields.len(), 3, "{text:?}");
                        let p = fields[0];
                        assert!(
                            !p.chars().any(|c| c.is_whitespace()
                                || c.is_control()
                                || c == '/'
                                || c == '\\'),
                            "{p:?}"
                        );
                        assert!(p.split('.').all(|l| !l.is_empty()), "{p:?}");
                        assert!(fields[1].parse::<f64>().is_ok(), "{text:?}");
                        assert_eq!(fields[2], "1700000000");
                    }
                }
            }
        }
    }
}

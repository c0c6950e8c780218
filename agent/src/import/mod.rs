//! `ganglion-agent import gmond.conf`: prints the agent TOML that does what a
//! gmond 3.7 configuration's sending side did, with a comment for every
//! setting that has no equivalent. The receiving side of a collector gmond
//! (`udp_recv_channel`, `tcp_accept_channel`, host_dmax/tmax, the cluster's
//! owner/latlong/url) belongs to the aggregator; it is printed as a commented
//! `[[cluster]]` block to paste into the aggregator's config.
//!
//! gmond reads its file with libconfuse: `name = value`, lists `{ a, b }`,
//! sections `name { … }` and titled sections `name "title" { … }`, comments
//! `#`, `//` and `/* */`, strings in double or single quotes, names
//! case-insensitive, and `include ("glob")`, expanded in place (sorted, as
//! glob(3) returns them); the syntax lives in `confuse`, the mapping here.

mod confuse;

#[cfg(test)]
use confuse::Tok;
pub use confuse::{Fs, ImportError, Source, wildcard};
use confuse::{Node, Parser, tokenize};
use std::fmt::Write as _;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

fn opt<'n>(body: &'n [Node], name: &str) -> Option<&'n str> {
    body.iter().rev().find_map(|n| match n {
        Node::Opt {
            name: k, values, ..
        } if k == name => values.first().map(String::as_str),
        _ => None,
    })
}

/// The `name { … }` sections directly in `body`, with their lines.
fn sections<'n>(body: &'n [Node], name: &'n str) -> impl Iterator<Item = (&'n usize, &'n [Node])> {
    body.iter().filter_map(move |n| match n {
        Node::Sec {
            line,
            name: k,
            body,
            ..
        } if k == name => Some((line, body.as_slice())),
        _ => None,
    })
}

fn yes(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Some(true),
        "no" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The modules gmond links or ships as `.so` whose metrics the agent collects itself.
const BUILTIN_MODULES: &[&str] = &[
    "core_metrics",
    "cpu_module",
    "disk_module",
    "load_module",
    "mem_module",
    "net_module",
    "proc_module",
    "sys_module",
];

/// What an import produced.
#[derive(Debug, Default)]
pub struct Imported {
    /// Agent TOML (comments included).
    pub toml: String,
    /// Settings with no agent equivalent (each a comment in `toml`).
    pub unmapped: usize,
}

/// Translates gmond.conf text; `file` names it in comments and resolves nothing
/// (include patterns are absolute in practice, as gmond resolves them against
/// its working directory `/`).
pub fn gmond_conf(text: &str, file: &str, src: &dyn Source) -> Imported {
    let mut notes: Vec<String> = Vec::new();
    let nodes = {
        let mut p = Parser {
            toks: tokenize(text),
            pos: 0,
            file: file.to_string(),
            src,
            depth: 0,
            notes: &mut notes,
        };
        p.body(false)
    };
    let mut top = String::new();
    let mut sends = String::new();
    let mut groups = String::new();
    let mut collector = String::new();
    let note = |notes: &mut Vec<String>, at: String, why: &str| {
        notes.push(format!("{at}: {why}"));
    };
    let mut builtin_seen = Vec::new();
    let mut recv_ports: Vec<String> = Vec::new();
    let mut xml_ports: Vec<String> = Vec::new();
    let mut cluster_extra = String::new();
    let mut py_dir = "/usr/lib/ganglia/python_modules".to_string();
    let mut mcast_groups: Vec<String> = Vec::new();
    let mut mcast_if: Option<String> = None;
    let mut py_modules: Vec<(String, Vec<String>, String)> = Vec::new();

    for n in &nodes {
        let Node::Sec {
            line,
            name,
            title: _,
            body,
            file,
        } = n
        else {
            if let Node::Opt {
                line, name, file, ..
            } = n
            {
                note(
                    &mut notes,
                    format!("{file}:{line}"),
                    &format!("top-level `{name}` is not a gmond setting: ignored"),
                );
            }
            continue;
        };
        let at = |l: &usize| format!("{file}:{l}");
        match name.as_str() {
            "globals" => {
                for o in body {
                    let Node::Opt {
                        line, name, values, ..
                    } = o
                    else {
                        continue;
                    };
                    let v = values.first().map(String::as_str).unwrap_or("");
                    match name.as_str() {
                        "send_metadata_interval" => {
                            let n: u32 = v.parse().unwrap_or(0);
                            if n == 0 {
                                top.push_str("send_metadata_interval_secs = 60   # gmond.conf: 0 (once). Unicast collectors lose metrics after a restart without re-sends; 0 keeps gmond's behaviour\n");
                            } else {
                                let _ = writeln!(top, "send_metadata_interval_secs = {n}");
                            }
                        }
                        "override_hostname" => {
                            let _ = writeln!(top, "override_hostname = {}", q(v));
                        }
                        "override_ip" => {
                            let _ = writeln!(top, "override_ip = {}", q(v));
                        }
                        "gexec" => {
                            let _ = writeln!(top, "gexec = {}", yes(v).unwrap_or(false));
                        }
                        "tags" => {
                            let tags: Vec<String> = v
                                .split(',')
                                .map(str::trim)
                                .filter(|t| !t.is_empty())
                                .map(q)
                                .collect();
                            let _ = writeln!(top, "tags = [{}]", tags.join(", "));
                        }
                        "host_dmax" => {
                            let _ = writeln!(cluster_extra, "# host_dmax_secs = {v}");
                        }
                        "host_tmax" => {
                            let _ = writeln!(cluster_extra, "# host_tmax_secs = {v}");
                        }
                        "mute" if yes(v) == Some(true) => note(
                            &mut notes,
                            at(line),
                            "mute = yes (a collector-only gmond): run no agent on this host; the aggregator's [[cluster]] below receives",
                        ),
                        "deaf" if yes(v) == Some(true) => {
                            collector.push_str("# this gmond was deaf (sent only): no [[cluster]] is needed for it\n");
                        }
                        "mute" | "deaf" => {} // "no": what the agent does anyway
                        "daemonize" | "setuid" | "user" | "debug_level" | "max_udp_msg_len"
                        | "cleanup_threshold" | "allow_extra_data" | "module_dir" => {
                            let why = match name.as_str() {
                                "daemonize" => "systemd runs the agent in the foreground",
                                "setuid" | "user" => "the unit runs the agent as its own user",
                                "debug_level" => "set RUST_LOG=debug instead",
                                "max_udp_msg_len" => "the agent's datagrams are at most 1472 bytes",
                                "cleanup_threshold" => {
                                    "the aggregator expires hosts and metrics every 60 s"
                                }
                                "allow_extra_data" => {
                                    "the aggregator always writes EXTRA_DATA, as gmond's default"
                                }
                                _ => "collectors are built into the agent",
                            };
                            note(
                                &mut notes,
                                at(line),
                                &format!("globals.{name} = {v}: no equivalent ({why})"),
                            );
                        }
                        other => note(
                            &mut notes,
                            at(line),
                            &format!("globals.{other}: not a gmond 3.7 setting: ignored"),
                        ),
                    }
                }
            }
            "cluster" => {
                if let Some(n) = opt(body, "name") {
                    let _ = writeln!(top, "cluster = {}", q(n));
                    let _ = writeln!(cluster_extra, "# name = {}", q(n));
                }
                for k in ["owner", "latlong", "url"] {
                    if let Some(v) = opt(body, k) {
                        let _ = writeln!(cluster_extra, "# {k} = {}", q(v));
                    }
                }
            }
            "host" => {
                if let Some(l) = opt(body, "location") {
                    let _ = writeln!(top, "location = {}", q(l));
                }
            }
            "udp_send_channel" => {
                let port = opt(body, "port").unwrap_or("8649");
                let dest = opt(body, "host").or(opt(body, "mcast_join"));
                match dest {
                    Some(h) => {
                        let _ = writeln!(
                            sends,
                            "\n[[send]]                       # {}\nhost = {}\nport = {port}",
                            at(line),
                            q(h)
                        );
                        if opt(body, "mcast_join").is_some() && opt(body, "host").is_none() {
                            let ttl = opt(body, "ttl").unwrap_or("1");
                            let _ = writeln!(
                                sends,
                                "ttl = {ttl}                        # a multicast group, as gmond's mcast_join"
                            );
                            if let Some(i) = opt(body, "mcast_if") {
                                let _ = writeln!(sends, "mcast_if = {}", q(i));
                            }
                        }
                        for k in ["bind", "bind_hostname"] {
                            if let Some(v) = opt(body, k) {
                                note(
                                    &mut notes,
                                    at(line),
                                    &format!(
                                        "udp_send_channel.{k} = {v}: no equivalent (the kernel picks the source address)"
                                    ),
                                );
                            }
                        }
                    }
                    None => note(
                        &mut notes,
                        at(line),
                        "udp_send_channel without host or mcast_join: skipped (gmond refuses it)",
                    ),
                }
            }
            "udp_recv_channel" => {
                let port = opt(body, "port").unwrap_or("8649");
                let bind = match (opt(body, "bind"), opt(body, "mcast_join")) {
                    // Bound to the group itself: receive on every address instead.
                    (Some(b), Some(g)) if b == g => "0.0.0.0",
                    (Some(b), _) => b,
                    (None, _) => "0.0.0.0",
                };
                let addr = if bind.contains(':') {
                    format!("[{bind}]:{port}")
                } else {
                    format!("{bind}:{port}")
                };
                recv_ports.push(q(&addr));
                if let Some(g) = opt(body, "mcast_join") {
                    mcast_groups.push(q(g));
                }
                if let Some(i) = opt(body, "mcast_if") {
                    mcast_if = Some(q(i));
                }
                if sections(body, "acl").next().is_some() {
                    let _ = writeln!(
                        collector,
                        "# its acl {{ }}: use the aggregator's trusted_hosts for TCP; UDP senders are not filtered"
                    );
                }
            }
            "tcp_accept_channel" => {
                let port = opt(body, "port").unwrap_or("8649");
                let bind = opt(body, "bind").unwrap_or("0.0.0.0");
                xml_ports.push(q(&format!("{bind}:{port}")));
                if sections(body, "acl").next().is_some() {
                    let _ = writeln!(
                        collector,
                        "# tcp_accept_channel acl {{ }} at {}: the aggregator's trusted_hosts decides who reads XML",
                        at(line)
                    );
                }
            }
            "modules" => {
                for (line, body) in sections(body, "module") {
                    let mname = opt(body, "name").unwrap_or("?");
                    let lang = opt(body, "language").unwrap_or("C");
                    if opt(body, "enabled").and_then(yes) == Some(false) {
                        continue;
                    }
                    if BUILTIN_MODULES.contains(&mname) {
                        builtin_seen.push(mname.to_string());
                    } else if mname == "python_module" {
                        // modpython itself: its params is the modules' directory.
                        if let Some(d) = opt(body, "params") {
                            py_dir = d.to_string();
                        }
                    } else if lang.eq_ignore_ascii_case("python") {
                        let params: Vec<String> = body
                            .iter()
                            .filter_map(|n| match n {
                                Node::Sec {
                                    name,
                                    title: Some(t),
                                    body,
                                    ..
                                } if name == "param" => Some(format!(
                                    "{} = {}",
                                    q(t),
                                    q(opt(body, "value").unwrap_or(""))
                                )),
                                _ => None,
                            })
                            .collect();
                        py_modules.push((mname.to_string(), params, at(line)));
                    } else {
                        note(
                            &mut notes,
                            at(line),
                            &format!("module {mname} ({lang}): no equivalent in ganglion-agent"),
                        );
                    }
                }
            }
            "collection_group" => {
                let mut g = String::new();
                let _ = writeln!(g, "\n[[collection_group]]           # {}", at(line));
                if let Some(v) = opt(body, "collect_once").and_then(yes) {
                    let _ = writeln!(g, "collect_once = {v}");
                }
                if let Some(v) = opt(body, "collect_every") {
                    let _ = writeln!(g, "collect_every_secs = {v}");
                }
                if let Some(v) = opt(body, "time_threshold") {
                    let _ = writeln!(g, "time_threshold_secs = {v}");
                }
                let mut metrics = 0;
                for (line, body) in sections(body, "metric") {
                    if let Some(re) = opt(body, "name_match") {
                        note(
                            &mut notes,
                            at(line),
                            &format!(
                                "metric name_match = {re}: regular-expression groups are not supported; list the metrics by name"
                            ),
                        );
                        continue;
                    }
                    let Some(mn) = opt(body, "name") else {
                        continue;
                    };
                    if crate::metrics::find(mn).is_none() {
                        note(
                            &mut notes,
                            at(line),
                            &format!(
                                "metric {mn}: not one of the agent's built-in metrics: left out of its group (a Python module's metrics are sent by its [[module]] entry)"
                            ),
                        );
                        continue;
                    }
                    metrics += 1;
                    let _ = writeln!(g, "[[collection_group.metric]]\nname = {}", q(mn));
                    if let Some(v) = opt(body, "value_threshold")
                        && v.parse::<f64>().is_ok()
                    {
                        let _ = writeln!(g, "value_threshold = {v}");
                    }
                    if let Some(t) = opt(body, "title") {
                        let _ = writeln!(g, "title = {}", q(t));
                    }
                }
                if metrics > 0 {
                    groups.push_str(&g);
                }
            }
            "sflow" => note(&mut notes, at(line), "sflow { }: no equivalent"),
            "acl" => note(
                &mut notes,
                at(line),
                "a top-level acl: use the aggregator's trusted_hosts",
            ),
            other => note(
                &mut notes,
                at(line),
                &format!("section {other} {{ }}: not a gmond 3.7 section: ignored"),
            ),
        }
    }
    let unmapped = notes.len();

    let mut out = String::new();
    out.push_str("# ganglion-agent configuration imported from gmond.conf.\n");
    out.push_str("# Check it with: ganglion-agent --check-config --config FILE\n\n");
    out.push_str(&top);
    if !builtin_seen.is_empty() {
        let _ = writeln!(
            out,
            "# modules {}: built into ganglion-agent",
            builtin_seen.join(", ")
        );
    }
    if sends.is_empty() {
        out.push_str("\n# gmond.conf had no udp_send_channel: add [[send]] host = \"aggregator\" or use --send-to\n");
    }
    out.push_str(&sends);
    out.push_str(&groups);
    for (name, params, at) in &py_modules {
        let _ = writeln!(
            out,
            "\n[[module]]                     # {at}: a gmond Python module\nname = {}\npath = {}\nparams = {{ {} }}",
            q(name),
            q(&format!("{py_dir}/{name}.py")),
            params.join(", ")
        );
    }
    if !recv_ports.is_empty() || !xml_ports.is_empty() {
        out.push_str("\n# This gmond also collected (udp_recv_channel / tcp_accept_channel). In Ganglion the\n");
        out.push_str(
            "# aggregator does that; paste this into its config (aggregator.toml) and uncomment:\n",
        );
        out.push_str("# [[cluster]]\n");
        out.push_str(&cluster_extra);
        if !recv_ports.is_empty() {
            let _ = writeln!(out, "# udp_listen = [{}]", recv_ports.join(", "));
        }
        if !mcast_groups.is_empty() {
            mcast_groups.dedup();
            let _ = writeln!(out, "# mcast_join = [{}]", mcast_groups.join(", "));
        }
        if let Some(i) = &mcast_if {
            let _ = writeln!(out, "# mcast_if = {i}");
        }
        if let Some(x) = xml_ports.first() {
            let _ = writeln!(out, "# xml_listen = {x}");
        }
        out.push_str(&collector);
    }
    if !notes.is_empty() {
        out.push_str("\n# Settings with no equivalent here:\n");
        for n in &notes {
            let _ = writeln!(out, "#   {n}");
        }
    }
    Imported {
        toml: out,
        unmapped,
    }
}

/// Reads `path` (and its includes) and translates it.
pub fn gmond_conf_file(path: &Path) -> Result<Imported, ImportError> {
    let text = Fs.read(path).map_err(|source| ImportError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(gmond_conf(&text, &path.display().to_string(), &Fs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;
    use std::collections::BTreeMap;

    struct Mem(BTreeMap<String, String>);

    impl Source for Mem {
        fn read(&self, path: &Path) -> std::io::Result<String> {
            self.0
                .get(path.to_str().unwrap_or(""))
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
        fn glob(&self, pattern: &str) -> Vec<PathBuf> {
            let p = Path::new(pattern);
            let dir = p.parent().unwrap();
            let name = p.file_name().unwrap().to_str().unwrap();
            self.0
                .keys()
                .map(PathBuf::from)
                .filter(|k| k.parent() == Some(dir))
                .filter(|k| wildcard(name, k.file_name().unwrap().to_str().unwrap()))
                .collect()
        }
    }

    fn load(t: &str) -> AgentConfig {
        AgentConfig::from_toml(t).unwrap_or_else(|e| panic!("{e}\n{t}"))
    }

    const UNICAST: &str = r#"
/* a unicast site */
globals {
  daemonize = yes
  send_metadata_interval = 30 // seconds
  override_hostname = "web01.example"
  override_ip = 10.1.1.1
  gexec = no
}
cluster { name = "Web Tier"  owner = "ops" }
host { location = "rack 4" }
udp_send_channel { host = collector.example  port = 8650 }
udp_send_channel { host = "2001:db8::1" }
collection_group {
  collect_every = 20
  time_threshold = 90
  metric { name = "cpu_user"  value_threshold = "1.0"  title = "CPU User" }
  metric { name = "my_python_metric" }
  metric { name_match = "multicpu_([a-z]+)([0-9]+)" }
}
"#;

    #[test]
    fn a_unicast_sender_maps_to_the_agent() {
        let i = gmond_conf(UNICAST, "gmond.conf", &Mem(BTreeMap::new()));
        let c = load(&i.toml);
        assert_eq!(c.cluster.as_deref(), Some("Web Tier"));
        assert_eq!(c.location, "rack 4");
        assert_eq!(c.send_metadata_interval_secs, 30);
        assert_eq!(c.override_hostname.as_deref(), Some("web01.example"));
        assert_eq!(c.send.len(), 2);
        assert_eq!(
            (c.send[0].host.as_str(), c.send[0].port),
            ("collector.example", 8650)
        );
        assert_eq!(
            (c.send[1].host.as_str(), c.send[1].port),
            ("2001:db8::1", 8649)
        );
        assert_eq!(c.collection_group.len(), 1);
        let g = &c.collection_group[0];
        assert_eq!((g.collect_every_secs, g.time_threshold_secs), (20, 90));
        assert_eq!(g.metric.len(), 1);
        assert_eq!(g.metric[0].value_threshold, 1.0);
        assert_eq!(g.metric[0].title.as_deref(), Some("CPU User"));
        // daemonize, the unknown metric and the name_match: comments.
        assert_eq!(i.unmapped, 3, "{}", i.toml);
        assert!(i.toml.contains("my_python_metric"));
        assert!(i.toml.contains("name_match"));
    }

    #[test]
    fn includes_expand_in_place_sorted_and_python_modules_are_named() {
        let mut files = BTreeMap::new();
        files.insert(
            "/etc/ganglia/conf.d/b.conf".to_string(),
            "udp_send_channel { host = b.example }".to_string(),
        );
        files.insert(
            "/etc/ganglia/conf.d/a.conf".to_string(),
            "udp_send_channel { host = a.example }\ninclude ('/etc/ganglia/conf.d/*.pyconf')"
                .to_string(),
        );
        files.insert(
            "/etc/ganglia/conf.d/mod.pyconf".to_string(),
            "modules { module { name = \"redis\" language = \"python\" param host { value = 1 } } }"
                .to_string(),
        );
        files.insert(
            "/etc/ganglia/conf.d/.hidden.conf".to_string(),
            "udp_send_channel { host = hidden }".to_string(),
        );
        let text = "include (\"/etc/ganglia/conf.d/*.conf\")\ninclude ('/nowhere/*.conf')\n";
        let i = gmond_conf(text, "gmond.conf", &Mem(files));
        let c = load(&i.toml);
        let hosts: Vec<&str> = c.send.iter().map(|s| s.host.as_str()).collect();
        assert_eq!(hosts, vec!["a.example", "b.example"]);
        assert_eq!(c.module.len(), 1, "{}", i.toml);
        assert_eq!(c.module[0].name, "redis");
        assert_eq!(
            c.module[0].path,
            std::path::Path::new("/usr/lib/ganglia/python_modules/redis.py")
        );
        assert_eq!(
            c.module[0].params.get("host").and_then(|v| v.as_str()),
            Some("1")
        );
        assert!(i.toml.contains("matches no file"), "{}", i.toml);
    }

    #[test]
    fn a_multicast_collector_becomes_a_send_and_a_cluster_suggestion() {
        let text = r#"
globals { host_dmax = 0 }
cluster { name = "unspecified" owner = "unspecified" }
udp_send_channel { mcast_join = 239.2.11.71  port = 8649  ttl = 1 }
udp_recv_channel { mcast_join = 239.2.11.71  port = 8649  bind = 239.2.11.71 }
tcp_accept_channel { port = 8649 acl { default = "deny" access { ip = 127.0.0.1 mask = 32 action = "allow" } } }
modules { module { name = "core_metrics" } module { name = "cpu_module" path = "modcpu.so" } }
"#;
        let i = gmond_conf(text, "gmond.conf", &Mem(BTreeMap::new()));
        let c = load(&i.toml);
        assert_eq!(c.send[0].host, "239.2.11.71");
        assert!(
            i.toml.contains("# udp_listen = [\"0.0.0.0:8649\"]"),
            "{}",
            i.toml
        );
        assert!(
            i.toml.contains("# xml_listen = \"0.0.0.0:8649\""),
            "{}",
            i.toml
        );
        assert!(i.toml.contains("# host_dmax_secs = 0"), "{}", i.toml);
        assert!(i.toml.contains("trusted_hosts"), "{}", i.toml);
        assert!(
            i.toml.contains("core_metrics, cpu_module: built into"),
            "{}",
            i.toml
        );
    }

    #[test]
    fn comments_strings_and_case() {
        let toks = tokenize("A = \"x // y\" # c\n/* b\n */ B = 'q\"' // z\n");
        assert_eq!(
            toks.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>(),
            vec![
                Tok::Word("A".into()),
                Tok::Punct('='),
                Tok::Str("x // y".into()),
                Tok::Word("B".into()),
                Tok::Punct('='),
                Tok::Str("q\"".into()),
            ]
        );
        assert_eq!(toks[3].0, 3, "line numbers survive block comments");
        let c = load(&gmond_conf("HOST { LOCATION = \"x\" }", "f", &Mem(BTreeMap::new())).toml);
        assert_eq!(c.location, "x");
    }

    #[test]
    fn wildcards_are_globs() {
        assert!(wildcard("*.conf", "a.conf"));
        assert!(!wildcard("*.conf", "a.pyconf.bak"));
        assert!(wildcard("?.conf", "a.conf"));
        assert!(!wildcard("*.conf", ".a.conf"));
    }

    #[test]
    fn garbage_never_panics_and_still_loads() {
        for t in [
            "{{{{",
            "}}}",
            "globals {",
            "x = ",
            "include (",
            "/* open",
            "\"open",
            "a b c",
        ] {
            let i = gmond_conf(t, "f", &Mem(BTreeMap::new()));
            load(&i.toml);
        }
    }
}

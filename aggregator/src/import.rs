//! `ganglion-aggregator import gmetad.conf`: prints the aggregator TOML that
//! does what a gmetad 3.7 configuration did, with a comment for every setting
//! that has no equivalent. Pure: text in, text out (the caller reads files).
//!
//! gmetad reads its file with dotconf (`gmetad/conf.c`): one directive per
//! line, keywords case-insensitive, arguments separated by blanks, double
//! quotes around arguments with blanks, `#` starts a comment outside quotes,
//! a trailing `\` continues the line. Where gmetad's built-in default differs
//! from ours, the import writes gmetad's value out, so the imported
//! aggregator behaves like the gmetad it replaces, not like a fresh install:
//! `case_sensitive_hostnames` is 1 in gmetad's code (only the sample file
//! sets 0), and `authority` defaults to `http://<hostname>/ganglia/`.

use std::fmt::Write as _;

/// One directive: keyword (lowercased), its arguments, and its line.
#[derive(Debug, Clone, PartialEq)]
struct Directive {
    line: usize,
    key: String,
    args: Vec<String>,
    raw: String,
}

/// Splits dotconf text into directives. Unterminated quotes end at the line's end.
fn directives(text: &str) -> Vec<Directive> {
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut first_line = 0;
    for (i, line) in text.lines().enumerate() {
        if pending.is_empty() {
            first_line = i + 1;
        }
        if let Some(body) = line.strip_suffix('\\') {
            pending.push_str(body);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let logical = std::mem::take(&mut pending);
        let words = split_words(&logical);
        if let Some((key, args)) = words.split_first() {
            out.push(Directive {
                line: first_line,
                key: key.to_ascii_lowercase(),
                args: args.to_vec(),
                raw: logical.trim().to_string(),
            });
        }
    }
    out
}

fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut has_word = false;
    for c in line.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_word = true;
            }
            '#' if !in_quotes => break,
            c if c.is_whitespace() && !in_quotes => {
                if has_word {
                    words.push(std::mem::take(&mut cur));
                    has_word = false;
                }
            }
            c => {
                cur.push(c);
                has_word = true;
            }
        }
    }
    if has_word {
        words.push(cur);
    }
    words
}

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn on_off(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "yes" | "true" | "1" => Some(true),
        "off" | "no" | "false" | "0" => Some(false),
        _ => None,
    }
}

/// `host[:port]` with gmetad's default port 8649; IPv6 in brackets passes through.
fn with_port(addr: &str) -> String {
    if addr.starts_with('[') {
        if addr.contains("]:") {
            addr.to_string()
        } else {
            format!("{addr}:8649")
        }
    } else if addr.matches(':').count() == 1 {
        addr.to_string()
    } else if addr.contains(':') {
        // A bare IPv6 address (gmetad itself would not take it).
        format!("[{addr}]:8649")
    } else {
        format!("{addr}:8649")
    }
}

/// What an import produced.
#[derive(Debug, Default)]
pub struct Imported {
    /// The TOML text (comments included).
    pub toml: String,
    /// Settings that had no equivalent (also written as comments in `toml`).
    pub unmapped: usize,
}

/// Translates a gmetad.conf. `hostname` stands in for gmetad's `gethostname()`
/// in the default authority.
pub fn gmetad_conf(text: &str, hostname: &str) -> Imported {
    let mut top = String::new();
    let mut sources = String::new();
    let mut xml = String::new();
    let mut rrdcached = String::new();
    let mut notes = String::new();
    let mut unmapped = 0usize;
    let mut trusted: Vec<String> = Vec::new();
    let mut seen_case = false;
    let mut seen_authority = false;
    let mut source_names: Vec<String> = Vec::new();
    // carbon_server, carbon_port, carbon_protocol, carbon_timeout,
    // graphite_prefix, graphite_path: one [[forward]] at the end.
    let mut carbon: Vec<(String, String)> = Vec::new();
    let mut carbon_lines: Vec<Directive> = Vec::new();
    let mut note = |d: &Directive, why: &str| {
        unmapped += 1;
        let _ = writeln!(notes, "# line {}: {}\n#   {why}", d.line, d.raw);
    };

    for d in directives(text) {
        let a = &d.args;
        let first = a.first().map(String::as_str).unwrap_or("");
        match d.key.as_str() {
            "data_source" => {
                let Some((name, rest)) = a.split_first() else {
                    note(
                        &d,
                        "data_source without a name: skipped (gmetad refuses to start)",
                    );
                    continue;
                };
                let (step, hosts) = match rest.split_first() {
                    Some((s, h)) if s.parse::<u32>().is_ok() => (s.parse::<u32>().unwrap_or(15), h),
                    _ => (15, rest),
                };
                if hosts.is_empty() {
                    note(&d, "data_source without addresses: skipped");
                    continue;
                }
                if source_names.iter().any(|n| n == name) {
                    note(
                        &d,
                        "a second data_source of this name: gmetad keeps both threads; here the name must be unique, so it is renamed",
                    );
                }
                let mut unique = name.clone();
                let mut k = 2;
                while source_names.contains(&unique) {
                    unique = format!("{name}-{k}");
                    k += 1;
                }
                source_names.push(unique.clone());
                let addrs: Vec<String> = hosts.iter().map(|h| with_port(h)).collect();
                let _ = writeln!(
                    sources,
                    "\n[[data_source]]                # line {}\nname = {}\npoll_secs = {step}\naddresses = {}   # failover order, as gmetad",
                    d.line,
                    q(&unique),
                    list(&addrs)
                );
            }
            "gridname" => {
                let _ = writeln!(top, "grid_name = {}", q(first));
            }
            "authority" => {
                seen_authority = true;
                let _ = writeln!(top, "authority = {}", q(first));
            }
            "trusted_hosts" => trusted.extend(a.iter().cloned()),
            "all_trusted" => match on_off(first) {
                Some(b) => {
                    let _ = writeln!(top, "all_trusted = {b}");
                }
                None => note(&d, "not on/off: left at the default (off)"),
            },
            "xml_port" | "interactive_port" => {
                let key = if d.key == "xml_port" {
                    "dump_listen"
                } else {
                    "query_listen"
                };
                match first.parse::<u16>() {
                    Ok(p) => {
                        let _ = writeln!(xml, "{key} = \"0.0.0.0:{p}\"");
                    }
                    Err(_) => note(&d, "not a port number: left at the default"),
                }
            }
            "rrd_rootdir" => {
                let _ = writeln!(
                    top,
                    "rrd_root = {}   # the existing tree is used as it is",
                    q(first)
                );
            }
            "write_rrds" => match on_off(first) {
                Some(b) => {
                    let _ = writeln!(top, "write_rrds = {b}");
                }
                None => note(&d, "not on/off: left at the default (on)"),
            },
            "rras" => {
                let _ = writeln!(top, "rras = {}", list(a));
            }
            "case_sensitive_hostnames" => {
                seen_case = true;
                let b = first.parse::<i64>().map(|n| n != 0).unwrap_or(true);
                let _ = writeln!(top, "case_sensitive_hostnames = {b}");
            }
            "unsummarized_metrics" => {
                let _ = writeln!(top, "unsummarized_metrics = {}", list(a));
            }
            "summarized_metrics" => {
                let _ = writeln!(top, "summarized_metrics = {}", list(a));
            }
            "unsummarized_sflow_vm_metrics" => match on_off(first) {
                Some(b) => {
                    let _ = writeln!(top, "unsummarized_sflow_vm_metrics = {b}");
                }
                None => note(&d, "not on/off: left at the default (off)"),
            },
            "rrdcached_address" => {
                let _ = writeln!(rrdcached, "\n[rrdcached]\naddress = {}", q(first));
            }
            "server_threads" => note(
                &d,
                "no equivalent: connections are served concurrently, capped by xml.max_connections",
            ),
            "umask" => note(&d, "no equivalent: set UMask= in the systemd unit"),
            "setuid" | "setuid_username" => note(
                &d,
                "no equivalent: the unit runs as its own user; give it the existing rrd tree (chown -R) or set User= in the unit",
            ),
            "scalable" => note(
                &d,
                "no equivalent: child grids are always kept as summaries (gmetad's scalable on)",
            ),
            "debug_level" => note(
                &d,
                "no equivalent: set RUST_LOG=debug in the unit's environment",
            ),
            "carbon_server" | "carbon_port" | "carbon_protocol" | "carbon_timeout"
            | "graphite_prefix" | "graphite_path" => {
                carbon.retain(|(k, _)| *k != d.key);
                carbon.push((d.key.clone(), first.to_string()));
                carbon_lines.push(d.clone());
            }
            "memcached_parameters" | "memcached_include_cluster_in_key" => {
                note(&d, "no equivalent: memcached export is not supported")
            }
            "riemann_server" | "riemann_port" | "riemann_protocol" | "riemann_attributes" => {
                note(&d, "no equivalent: Riemann export is not supported")
            }
            _ => note(&d, "not a gmetad 3.7 setting: ignored"),
        }
    }
    let forward = carbon_forward(&carbon, &carbon_lines, &mut note);
    if !trusted.is_empty() {
        let _ = writeln!(
            top,
            "trusted_hosts = {}   # loopback is always trusted",
            list(&trusted)
        );
    }
    if !seen_case {
        top.push_str(
            "case_sensitive_hostnames = true   # gmetad's built-in default (only its sample file sets 0)\n",
        );
    }
    if !seen_authority {
        let _ = writeln!(
            top,
            "authority = {}   # gmetad's default: http://<hostname>/ganglia/",
            q(&format!("http://{hostname}/ganglia/"))
        );
    }
    let mut out = String::new();
    out.push_str("# ganglion-aggregator configuration imported from gmetad.conf.\n");
    out.push_str("# Check it with: ganglion-aggregator --check-config --config FILE\n\n");
    out.push_str(&top);
    if source_names.is_empty() {
        out.push_str(
            "\n# gmetad.conf had no data_source. Agents or gmonds send to a [[cluster]]:\n[[cluster]]\nname = \"unspecified\"\n",
        );
    }
    out.push_str(&sources);
    out.push_str("\n[xml]\n");
    if xml.is_empty() {
        out.push_str("dump_listen = \"0.0.0.0:8651\"\nquery_listen = \"0.0.0.0:8652\"\n");
    } else {
        out.push_str(&xml);
    }
    out.push_str(&rrdcached);
    out.push_str(&forward);
    if !notes.is_empty() {
        out.push_str("\n# Settings with no equivalent here:\n");
        out.push_str(&notes);
    }
    Imported {
        toml: out,
        unmapped,
    }
}

/// gmetad's carbon export as a `[[forward]]` (kind graphite, compat
/// gmetad), or nothing when `carbon_server` is unset (gmetad sends nothing
/// then, and the `graphite_*` lines are noted as unused).
fn carbon_forward(
    carbon: &[(String, String)],
    lines: &[Directive],
    note: &mut dyn FnMut(&Directive, &str),
) -> String {
    let get = |k: &str| {
        carbon
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let line_of = |k: &str| lines.iter().rev().find(|d| d.key == k);
    let Some(server) = get("carbon_server").filter(|s| !s.is_empty()) else {
        for d in lines {
            note(
                d,
                "no carbon_server: gmetad sends nothing to Graphite, so neither does this",
            );
        }
        return String::new();
    };
    let port = get("carbon_port")
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(2003);
    let host = if server.contains(':') && !server.starts_with('[') {
        format!("[{server}]")
    } else {
        server.to_string()
    };
    let mut out = format!(
        "\n[[forward]]                   # gmetad's carbon export\nname = \"carbon\"\nkind = \"graphite\"\naddress = {}\ncompat = \"gmetad\"   # the same paths, no NUL after each line\n",
        q(&format!("{host}:{port}"))
    );
    match get("carbon_protocol") {
        Some("udp") => out.push_str("protocol = \"udp\"\n"),
        Some("tcp") | None => {}
        Some(_) => {
            if let Some(d) = line_of("carbon_protocol") {
                note(
                    d,
                    "gmetad takes only exactly tcp or udp (any other value sent nothing): imported as tcp",
                );
            }
        }
    }
    // gmetad ignores a prefix or path of one character.
    for (key, ours) in [("graphite_prefix", "prefix"), ("graphite_path", "path")] {
        match get(key) {
            Some(v) if v.len() > 1 => {
                let _ = writeln!(out, "{ours} = {}", q(v));
            }
            Some(_) => {
                if let Some(d) = line_of(key) {
                    note(
                        d,
                        "one character: gmetad ignores it, and so does the import",
                    );
                }
            }
            None => {}
        }
    }
    if let Some(ms) = get("carbon_timeout").and_then(|t| t.parse::<u64>().ok()) {
        let _ = writeln!(
            out,
            "timeout_secs = {}   # carbon_timeout {ms} ms, rounded up (a write timeout here)",
            ms.div_ceil(1000).max(1)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn load(t: &str) -> Config {
        Config::from_toml(t).unwrap_or_else(|e| panic!("{e}\n{t}"))
    }

    #[test]
    fn data_sources_steps_ports_and_failover_order() {
        let i = gmetad_conf(
            "data_source \"my cluster\" 30 a.example:8650 b.example\n\
             data_source grid2 c:8651\n",
            "h",
        );
        let c = load(&i.toml);
        assert_eq!(c.data_source.len(), 2);
        assert_eq!(c.data_source[0].name, "my cluster");
        assert_eq!(c.data_source[0].poll_secs, 30);
        assert_eq!(
            c.data_source[0].addresses,
            vec!["a.example:8650".to_string(), "b.example:8649".to_string()]
        );
        assert_eq!(c.data_source[1].poll_secs, 15);
    }

    #[test]
    fn gmetad_defaults_that_differ_from_ours_are_written_out() {
        let c = load(&gmetad_conf("data_source x localhost\n", "vm7").toml);
        assert!(c.case_sensitive_hostnames, "gmetad's code default is 1");
        assert_eq!(c.authority, "http://vm7/ganglia/");
        let c = load(
            &gmetad_conf(
                "data_source x localhost\ncase_sensitive_hostnames 0\nauthority \"http://g/\"\n",
                "vm7",
            )
            .toml,
        );
        assert!(!c.case_sensitive_hostnames);
        assert_eq!(c.authority, "http://g/");
    }

    #[test]
    fn every_setting_maps_or_is_commented() {
        let text = "# comment\n\
            data_source a 10.0.0.1\n\
            gridname \"My Grid\"\n\
            trusted_hosts 10.0.0.5 10.0.0.6\n\
            trusted_hosts 10.0.0.7\n\
            all_trusted off\n\
            xml_port 8661\n\
            interactive_port 8662\n\
            server_threads 8\n\
            rrd_rootdir \"/srv/ganglia/rrds\"\n\
            umask 022\n\
            setuid_username \"ganglia\"\n\
            scalable off\n\
            write_rrds on\n\
            RRAs \"RRA:AVERAGE:0.5:1:244\" \"RRA:AVERAGE:0.5:24:244\"\n\
            unsummarized_metrics diskstat CPU\n\
            unsummarized_sflow_vm_metrics on\n\
            rrdcached_address 127.0.0.1:42217\n\
            carbon_server graphite.example\n\
            graphite_prefix ganglia\n\
            memcached_parameters \"--SERVER=127.0.0.1\"\n\
            frobnicate 3\n";
        let i = gmetad_conf(text, "h");
        let c = load(&i.toml);
        assert_eq!(c.grid_name, "My Grid");
        assert_eq!(c.trusted_hosts.len(), 3);
        assert_eq!(c.xml.dump_listen, "0.0.0.0:8661");
        assert_eq!(c.xml.query_listen, "0.0.0.0:8662");
        assert_eq!(c.rrd_root, std::path::Path::new("/srv/ganglia/rrds"));
        assert_eq!(c.rras.len(), 2);
        assert_eq!(c.unsummarized_metrics, vec!["diskstat", "CPU"]);
        assert!(c.unsummarized_sflow_vm_metrics);
        assert_eq!(
            c.rrdcached.as_ref().map(|r| r.address.as_str()),
            Some("127.0.0.1:42217")
        );
        // server_threads, umask, setuid_username, scalable, memcached,
        // frobnicate: each a comment naming its line.
        assert_eq!(i.unmapped, 6, "{}", i.toml);
        assert_eq!(c.forward.len(), 1);
        assert_eq!(c.forward[0].address, "graphite.example:2003");
        assert_eq!(c.forward[0].prefix, "ganglia");
        for line in [9, 11, 12, 13, 21, 22] {
            assert!(i.toml.contains(&format!("# line {line}:")), "{}", i.toml);
        }
    }

    #[test]
    fn dotconf_quoting_comments_and_continuations() {
        assert_eq!(
            split_words("data_source \"a b\" 20 h1 # trailing"),
            vec!["data_source", "a b", "20", "h1"]
        );
        assert_eq!(
            split_words("gridname \"#1 grid\""),
            vec!["gridname", "#1 grid"]
        );
        let d = directives("data_source x \\\n  h1 h2\n\n   # only a comment\n");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].args, vec!["x", "h1", "h2"]);
        // Keywords are case-insensitive.
        let c = load(&gmetad_conf("DATA_SOURCE x h\nGridName G\n", "h").toml);
        assert_eq!(c.grid_name, "G");
    }

    #[test]
    fn no_data_source_and_duplicate_names_still_load() {
        let c = load(&gmetad_conf("gridname g\n", "h").toml);
        assert_eq!(c.cluster.len(), 1);
        let i = gmetad_conf("data_source a h1\ndata_source a h2\n", "h");
        let c = load(&i.toml);
        assert_eq!(c.data_source[1].name, "a-2");
        assert_eq!(i.unmapped, 1);
    }

    #[test]
    fn carbon_settings_become_one_graphite_forward() {
        use crate::config::forward::GraphiteProtocol;
        let i = gmetad_conf(
            "data_source a h1\ncarbon_server 10.1.1.1\ncarbon_port 2013\ncarbon_protocol udp\n\
             carbon_timeout 1500\ngraphite_prefix dc1.gmetad\ngraphite_path \"%s.%h.%m\"\n",
            "h",
        );
        let f = &load(&i.toml).forward[0];
        assert_eq!(i.unmapped, 0, "{}", i.toml);
        assert_eq!(f.address, "10.1.1.1:2013");
        assert_eq!(f.protocol, GraphiteProtocol::Udp);
        assert_eq!(
            (f.prefix.as_str(), f.path.as_str()),
            ("dc1.gmetad", "%s.%h.%m")
        );
        assert_eq!(f.timeout_secs, 2);
        // One-character prefix: ignored, as gmetad ignores it; odd protocol: tcp.
        let i = gmetad_conf(
            "data_source a h1\ncarbon_server c.example\ncarbon_protocol TCP\ngraphite_prefix x\n",
            "h",
        );
        let f = &load(&i.toml).forward[0];
        assert_eq!((f.prefix.as_str(), f.protocol), ("", GraphiteProtocol::Tcp));
        assert_eq!(i.unmapped, 2, "{}", i.toml);
        // No server: nothing forwarded, the prefix noted.
        let i = gmetad_conf("data_source a h1\ngraphite_prefix ganglia\n", "h");
        assert!(load(&i.toml).forward.is_empty());
        assert_eq!(i.unmapped, 1);
    }
}

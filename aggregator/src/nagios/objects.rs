//! The Nagios object definitions for what the aggregator watches, so a site
//! does not write them by hand (`ganglion-aggregator nagios-config`): the
//! `check_ganglion` commands, a host per Ganglia host, and a passive service
//! per `[[alert]]` rule on every host it matches, each with a freshness
//! check. Hosts fall back to an active `check_ganglion --heartbeat` when
//! passive results stop; services to `check_dummy 3` (UNKNOWN: no data).

use std::fmt::Write;

/// A rule as the generator needs it.
#[derive(Debug, Clone)]
pub struct RuleRef {
    /// `[[alert]] name` (the service description).
    pub name: String,
    /// Cluster glob.
    pub cluster: String,
    /// Host glob.
    pub hosts: String,
    /// A cluster rule: one service on the cluster's own host object.
    pub cluster_rule: bool,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Params {
    /// The aggregator's URL as Nagios should reach it (check_ganglion `-u`).
    pub url: String,
    /// Directory holding `check_ganglion` and `check_dummy`.
    pub plugin_dir: String,
    /// `freshness_threshold` in seconds.
    pub freshness_secs: u32,
    /// Contacts for the templates (empty = none; the site's own `use`
    /// templates can add them).
    pub contacts: Vec<String>,
    /// `--ca FILE` for check_ganglion (an https aggregator with a private CA).
    pub ca: Option<String>,
}

/// A Nagios object name: no characters Nagios refuses in names
/// (`illegal_object_name_chars` default `` `~!$%^&*|'"<>?,()= `` and
/// control characters), no `;` (starts a comment in a definition), no `\`
/// (a trailing one joins the next line), no `{`/`}`, and no leading or
/// trailing whitespace (Nagios trims values, so the object would be named
/// differently from the command-file field); `false` when the name breaks
/// any of these.
fn object_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.trim() == s
        && !s.chars().any(|c| {
            c.is_control()
                || c.is_whitespace() && c != ' '
                || ";\\{}".contains(c)
                || "`~!$%^&*|'\"<>?,()=".contains(c)
        })
}

/// A refused name as it is listed in the closing comment: quoted and
/// escaped, so a newline in it cannot end the comment and start a
/// definition.
fn listed(s: &str) -> String {
    format!("{s:?}")
}

/// Renders the definitions for `clusters` (name → host names) and `rules`.
/// Names Nagios cannot take are listed in a comment instead.
pub fn render(p: &Params, clusters: &[(String, Vec<String>)], rules: &[RuleRef]) -> String {
    let mut o = String::new();
    let plugins = p.plugin_dir.trim_end_matches('/');
    let ca =
        p.ca.as_deref()
            .map(|c| format!(" --ca '{}'", c.replace('\'', "")))
            .unwrap_or_default();
    let _ = writeln!(
        o,
        "# Nagios object definitions for the hosts and [[alert]] rules of a Ganglion aggregator,\n\
         # printed by `ganglion-aggregator nagios-config`. Results arrive passively through\n\
         # [nagios] command_file; freshness checks catch an aggregator that stopped sending.\n"
    );
    let contacts = if p.contacts.is_empty() {
        String::new()
    } else {
        format!("    contacts                 {}\n", p.contacts.join(","))
    };
    let _ = write!(
        o,
        "define command {{\n    command_name    check_ganglion_heartbeat\n    command_line    {plugins}/check_ganglion -u '$ARG1$' -C '$ARG2$' -H '$HOSTNAME$' --heartbeat{ca}\n}}\n\n\
         define command {{\n    command_name    check_ganglion_metric\n    command_line    {plugins}/check_ganglion -u '$ARG1$' -C '$ARG2$' -H '$HOSTNAME$' -m '$ARG3$' -w '$ARG4$' -c '$ARG5$'{ca}\n}}\n\n\
         define command {{\n    command_name    ganglion_no_passive_result\n    command_line    {plugins}/check_dummy 3 'no passive result from the Ganglion aggregator (stale)'\n}}\n\n\
         define host {{\n    name                     ganglion-host\n    register                 0\n    max_check_attempts       1\n    check_interval           5\n    retry_interval           1\n    active_checks_enabled    0\n    passive_checks_enabled   1\n    check_freshness          1\n    freshness_threshold      {f}\n    flap_detection_enabled   0\n    event_handler_enabled    0\n    notification_interval    0\n{contacts}}}\n\n\
         define service {{\n    name                     ganglion-service\n    register                 0\n    max_check_attempts       1\n    check_interval           5\n    retry_interval           1\n    active_checks_enabled    0\n    passive_checks_enabled   1\n    check_freshness          1\n    freshness_threshold      {f}\n    check_command            ganglion_no_passive_result\n    flap_detection_enabled   0\n    event_handler_enabled    0\n    notification_interval    0\n{contacts}}}\n\n",
        f = p.freshness_secs
    );
    let _ = writeln!(
        o,
        "# SOFT/HARD attempts, flapping and event handlers are decided by the aggregator\n\
         # (its [alerts] and [[handler]]); Nagios takes its states as they come (max_check_attempts 1).\n"
    );
    let mut refused = Vec::new();
    let url = p.url.replace('!', "%21");
    use crate::handlers::Pattern;
    let globs: Vec<(Pattern, Pattern)> = rules
        .iter()
        .map(|r| (Pattern::new(&r.cluster), Pattern::new(&r.hosts)))
        .collect();
    for (cluster, hosts) in clusters {
        let cluster_ok = object_name_ok(cluster) && !cluster.contains('!');
        for h in hosts {
            if !object_name_ok(h) || !cluster_ok {
                refused.push(format!("{}/{}", listed(cluster), listed(h)));
                continue;
            }
            let _ = write!(
                o,
                "define host {{\n    use                      ganglion-host\n    host_name                {h}\n    alias                    {h} ({cluster})\n    address                  {h}\n    check_command            check_ganglion_heartbeat!{url}!{cluster}\n}}\n\n"
            );
            for (r, _) in rules
                .iter()
                .zip(&globs)
                .filter(|(r, (c, hs))| !r.cluster_rule && c.is_match(cluster) && hs.is_match(h))
            {
                if !object_name_ok(&r.name) {
                    refused.push(format!("rule {}", listed(&r.name)));
                    continue;
                }
                let _ = write!(
                    o,
                    "define service {{\n    use                      ganglion-service\n    host_name                {h}\n    service_description      {}\n}}\n\n",
                    r.name
                );
            }
        }
        let cluster_rules: Vec<&RuleRef> = rules
            .iter()
            .zip(&globs)
            .filter(|(r, (c, _))| r.cluster_rule && c.is_match(cluster))
            .map(|(r, _)| r)
            .collect();
        if cluster_ok && !cluster_rules.is_empty() {
            // Cluster rules report on a host named after the cluster.
            let _ = write!(
                o,
                "define host {{\n    use                      ganglion-host\n    host_name                {cluster}\n    alias                    cluster {cluster}\n    address                  {cluster}\n    check_command            ganglion_no_passive_result\n}}\n\n"
            );
            for r in cluster_rules {
                if !object_name_ok(&r.name) {
                    refused.push(format!("rule {}", listed(&r.name)));
                } else {
                    let _ = write!(
                        o,
                        "define service {{\n    use                      ganglion-service\n    host_name                {cluster}\n    service_description      {}\n}}\n\n",
                        r.name
                    );
                }
            }
        }
    }
    if !refused.is_empty() {
        refused.sort();
        refused.dedup();
        let _ = writeln!(
            o,
            "# Left out: names Nagios does not accept as object names:\n#   {}",
            refused.join("\n#   ")
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_services_and_commands_are_defined() {
        let p = Params {
            url: "http://mon:8080".into(),
            plugin_dir: "/usr/lib/nagios/plugins/".into(),
            freshness_secs: 180,
            contacts: vec!["ops".into()],
            ca: None,
        };
        let clusters = vec![
            (
                "prod".to_string(),
                vec![
                    "web1".to_string(),
                    "db1".to_string(),
                    "bad;name".to_string(),
                ],
            ),
            ("test".to_string(), vec!["t1".to_string()]),
        ];
        let rules = vec![
            RuleRef {
                name: "load".into(),
                cluster: "*".into(),
                hosts: "web*".into(),
                cluster_rule: false,
            },
            RuleRef {
                name: "disk".into(),
                cluster: "prod".into(),
                hosts: "*".into(),
                cluster_rule: false,
            },
            RuleRef {
                name: "prod-load".into(),
                cluster: "prod".into(),
                hosts: "*".into(),
                cluster_rule: true,
            },
        ];
        let out = render(&p, &clusters, &rules);
        assert!(
            out.contains("command_line    /usr/lib/nagios/plugins/check_ganglion -u '$ARG1$'"),
            "{out}"
        );
        assert!(
            out.contains(
                "check_command            check_ganglion_heartbeat!http://mon:8080!prod\n"
            )
        );
        assert!(out.contains("freshness_threshold      180\n"));
        assert!(out.contains("contacts                 ops\n"));
        let services = |h: &str| {
            out.split("define service {")
                .map(|b| b.split('}').next().unwrap())
                .filter(|b| b.contains(&format!("host_name                {h}\n")))
                .map(|b| {
                    b.lines()
                        .find_map(|l| l.trim().strip_prefix("service_description"))
                        .unwrap()
                        .trim()
                        .to_string()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(services("web1"), ["load", "disk"]);
        assert_eq!(services("db1"), ["disk"]);
        assert_eq!(services("t1"), Vec::<String>::new());
        assert_eq!(services("prod"), ["prod-load"]);
        assert!(
            out.contains(
                "# Left out: names Nagios does not accept as object names:\n#   \"prod\"/\"bad;name\""
            ),
            "{out}"
        );
        let with_ca = render(
            &Params {
                ca: Some("/etc/ganglion/ca.pem".into()),
                ..p.clone()
            },
            &clusters,
            &rules,
        );
        assert!(
            with_ca.contains("--heartbeat --ca '/etc/ganglion/ca.pem'\n"),
            "{with_ca}"
        );
    }

    /// Every line of the output is a comment, a blank, `define x {`, `}`
    /// or `    directive value` with a value that cannot reopen anything,
    /// whatever the cluster, host and rule names.
    #[test]
    fn hostile_names_never_break_the_config() {
        let p = Params {
            url: "http://mon:8080".into(),
            plugin_dir: "/p".into(),
            freshness_secs: 180,
            contacts: vec![],
            ca: None,
        };
        let names = crate::hostile::names();
        let clusters: Vec<(String, Vec<String>)> = names
            .iter()
            .map(|c| (c.clone(), names.clone()))
            .chain([("ok".to_string(), names.clone())])
            .collect();
        let rules: Vec<RuleRef> = names
            .iter()
            .flat_map(|n| {
                [false, true].map(|cluster_rule| RuleRef {
                    name: n.clone(),
                    cluster: "*".into(),
                    hosts: "*".into(),
                    cluster_rule,
                })
            })
            .collect();
        let out = render(&p, &clusters, &rules);
        let mut depth = 0;
        for l in out.lines() {
            if l.is_empty() || l.starts_with('#') {
                assert_eq!(depth, 0, "comment inside a definition: {l:?}");
                continue;
            }
            if let Some(kind) = l.strip_prefix("define ") {
                assert!(
                    ["command {", "host {", "service {"].contains(&kind),
                    "{l:?}"
                );
                assert_eq!(depth, 0);
                depth = 1;
                continue;
            }
            if l == "}" {
                assert_eq!(depth, 1);
                depth = 0;
                continue;
            }
            assert_eq!(depth, 1, "directive outside a definition: {l:?}");
            let value = l.trim_start().split_once(' ').map_or("", |(_, v)| v.trim());
            assert!(
                !l.ends_with('\\') && !l.contains(['{', '}'].as_slice())
                    || l.contains("command_line"),
                "{l:?}"
            );
            assert!(!value.contains(';') || l.contains("command_line"), "{l:?}");
        }
        assert_eq!(depth, 0);
        // The well-formed names are defined, the others listed.
        assert!(
            out.contains("host_name                a b\n"),
            "spaces are fine"
        );
        assert!(out.contains("#   \"ok\"/\"a\\nb\""), "{out}");
    }
}

/// Why the grid could not be read from the aggregator.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// HTTP failed.
    #[error("{0}")]
    Client(#[from] ganglion_nagios::client::ClientError),
    /// Not the answer expected.
    #[error("{0}")]
    Reply(String),
}

/// The `http://` (or with TLS `https://`) URL of a `[http] listen` address, as a local client
/// reaches it (a wildcard address becomes loopback).
pub fn local_url(listen: &str, tls: bool) -> String {
    let l = listen
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "[::1]:");
    if tls {
        format!("https://{l}")
    } else {
        format!("http://{l}")
    }
}

/// Every cluster and its hosts, from a running aggregator's `/api/grid` and
/// `/api/cluster/{name}`.
pub fn fetch_grid(
    url: &str,
    auth: Option<&(String, String)>,
    timeout: std::time::Duration,
    ca: Option<&std::path::Path>,
) -> Result<Vec<(String, Vec<String>)>, FetchError> {
    use ganglion_nagios::client::{self, BaseUrl};
    use serde_json::Value;
    let base = BaseUrl::parse(url)?;
    let deadline = std::time::Instant::now() + timeout;
    let get = |path: &str| -> Result<Value, FetchError> {
        let r = client::get(&base, path, auth, deadline, timeout.as_secs(), ca)?;
        if r.status != 200 {
            return Err(FetchError::Reply(format!(
                "HTTP {} for {url}{path}",
                r.status
            )));
        }
        serde_json::from_slice(&r.body)
            .map_err(|e| FetchError::Reply(format!("{url}{path}: not JSON: {e}")))
    };
    let grid = get("/api/grid")?;
    let names: Vec<String> = grid
        .get("clusters")
        .and_then(Value::as_array)
        .ok_or_else(|| FetchError::Reply(format!("{url}/api/grid has no clusters")))?
        .iter()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    let mut out = Vec::new();
    for c in names {
        let j = get(&format!("/api/cluster/{}", client::segment(&c)))?;
        let mut hosts: Vec<String> = j
            .get("hosts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|h| h.get("name").and_then(Value::as_str).map(str::to_string))
            .collect();
        hosts.sort();
        out.push((c, hosts));
    }
    Ok(out)
}

/// `nagios-config`: the definitions for `config`'s rules and the hosts of
/// the aggregator at `url` (default: its `[http] listen`). Credentials for
/// an aggregator behind basic auth come from `GANGLION_USER` and
/// `GANGLION_PASSWORD`, as for check_ganglion.
pub fn for_config(
    config: &crate::config::Config,
    url: Option<&str>,
    plugin_dir: &str,
    contacts: &[String],
    ca: Option<&std::path::Path>,
) -> Result<String, FetchError> {
    let tls = config.http.tls_cert_file.is_some();
    let url = url.map_or_else(|| local_url(&config.http.listen, tls), str::to_string);
    let auth = std::env::var("GANGLION_USER")
        .ok()
        .zip(std::env::var("GANGLION_PASSWORD").ok());
    let clusters = fetch_grid(&url, auth.as_ref(), std::time::Duration::from_secs(30), ca)
        .map_err(|e| {
            FetchError::Reply(format!(
                "cannot read the hosts from the aggregator at {url} (is it running? --url): {e}"
            ))
        })?;
    let p = Params {
        url,
        plugin_dir: plugin_dir.to_string(),
        freshness_secs: config.nagios.freshness(),
        contacts: contacts.to_vec(),
        ca: ca.map(|c| c.display().to_string()),
    };
    Ok(render(&p, &clusters, &rules_of(config)))
}

/// The `[[alert]]` rules as the generator needs them.
fn rules_of(config: &crate::config::Config) -> Vec<RuleRef> {
    config
        .alert
        .iter()
        .map(|r| RuleRef {
            name: r.name.clone(),
            cluster: r.cluster_glob().to_string(),
            hosts: r.hosts_glob().to_string(),
            cluster_rule: r.aggregate != crate::config::alerts::Aggregate::None,
        })
        .collect()
}

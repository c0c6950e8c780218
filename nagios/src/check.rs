//! The check itself: ask the aggregator, then turn its JSON into a state.
//! [`evaluate_host`] and [`evaluate_cluster`] are pure, so every rule is
//! unit-tested without a server.

use crate::cli::Options;
use crate::client::{self, BaseUrl, ClientError};
use crate::perfdata::{self, Perf};
use ganglion_proto::range::{Range, Status, classify};
use serde_json::Value;
use std::time::Instant;

/// The plugin's answer.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The state (the exit code).
    pub status: Status,
    /// The first line's text after `GANGLION <STATE> - `.
    pub text: String,
    /// Performance data.
    pub perfdata: Vec<Perf>,
    /// Long output lines (`-v`).
    pub long: Vec<String>,
    /// Printed as is (help, version), without the `GANGLION` prefix.
    plain: bool,
}

impl Outcome {
    /// A result.
    pub fn new(status: Status, text: String) -> Outcome {
        Outcome {
            status,
            text,
            perfdata: Vec::new(),
            long: Vec::new(),
            plain: false,
        }
    }

    /// UNKNOWN with the reason: every failure of the plugin itself.
    pub fn unknown(text: String) -> Outcome {
        Outcome::new(Status::Unknown, text)
    }

    /// Text printed as is with exit code 3 (help, version).
    pub fn plain(text: String) -> Outcome {
        Outcome {
            plain: true,
            ..Outcome::unknown(text)
        }
    }

    /// What the plugin prints: `GANGLION <STATE> - text | perfdata`, then
    /// the long lines. Output text never carries a `|` (Nagios would take
    /// the rest for perfdata) or a line break (it would become long output).
    pub fn render(&self) -> String {
        if self.plain {
            let mut t = self.text.clone();
            if !t.ends_with('\n') {
                t.push('\n');
            }
            return t;
        }
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c == '|' {
                        '/'
                    } else if c.is_control() {
                        ' '
                    } else {
                        c
                    }
                })
                .collect()
        };
        let mut out = format!("GANGLION {} - {}", self.status.as_str(), clean(&self.text));
        if !self.perfdata.is_empty() {
            out.push_str(" | ");
            let items: Vec<String> = self.perfdata.iter().map(Perf::render).collect();
            out.push_str(&items.join(" "));
        }
        out.push('\n');
        for l in &self.long {
            out.push_str(&clean(l));
            out.push('\n');
        }
        out
    }
}

/// Runs the check: fetches what `opts` names and evaluates it.
pub fn run(opts: &Options) -> Outcome {
    match fetch_and_evaluate(opts) {
        Ok(o) => o,
        Err(e) => Outcome::unknown(e),
    }
}

fn fetch_and_evaluate(opts: &Options) -> Result<Outcome, String> {
    let base = BaseUrl::parse(&opts.url).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + opts.timeout;
    let get = |path: &str| -> Result<Value, String> {
        let reply = client::get(
            &base,
            path,
            opts.auth.as_ref(),
            deadline,
            opts.timeout.as_secs(),
            opts.ca.as_deref(),
        )
        .map_err(|e: ClientError| e.to_string())?;
        let json: Option<Value> = serde_json::from_slice(&reply.body).ok();
        let api_error = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(Value::as_str)
            .map(str::to_string);
        match reply.status {
            200 => json.ok_or_else(|| format!("the reply to {path} is not JSON")),
            401 => Err(format!(
                "HTTP 401 from {}: authentication required (--user with --password-file, or GANGLION_USER/GANGLION_PASSWORD)",
                opts.url
            )),
            403 => Err(format!(
                "HTTP 403 from {}: this user may not read {path}",
                opts.url
            )),
            s => Err(match api_error {
                Some(m) => format!("HTTP {s}: {m}"),
                None => format!("HTTP {s} for {path}"),
            }),
        }
    };
    let Some(host) = &opts.host else {
        let cluster = opts.cluster.as_deref().unwrap_or_default();
        let j = get(&format!("/api/cluster/{}", client::segment(cluster)))?;
        return Ok(evaluate_cluster(opts, cluster, &j));
    };
    let cluster = match &opts.cluster {
        Some(c) => c.clone(),
        None => find_cluster(
            &get(&format!("/api/search?q={}", client::segment(host)))?,
            host,
        )?,
    };
    let j = get(&format!(
        "/api/host/{}/{}",
        client::segment(&cluster),
        client::segment(host)
    ))?;
    Ok(evaluate_host(opts, &cluster, &j))
}

/// The one cluster holding a host of exactly this name, from `/api/search`.
pub fn find_cluster(search: &Value, host: &str) -> Result<String, String> {
    let mut clusters: Vec<&str> = search
        .get("hosts")
        .and_then(Value::as_array)
        .ok_or("the /api/search reply has no hosts list")?
        .iter()
        .filter(|h| h.get("host").and_then(Value::as_str) == Some(host))
        .filter_map(|h| h.get("cluster").and_then(Value::as_str))
        .collect();
    clusters.sort_unstable();
    clusters.dedup();
    match clusters.as_slice() {
        [] => Err(format!("host {host:?} not found in any cluster")),
        [one] => Ok((*one).to_string()),
        many => Err(format!(
            "host {host:?} is in several clusters ({}); give -C/--cluster",
            many.join(", ")
        )),
    }
}

fn f(j: &Value, k: &str) -> Option<f64> {
    j.get(k).and_then(Value::as_f64)
}

fn age_text(secs: f64) -> String {
    format!("{secs:.0} s")
}

/// Evaluates `/api/host/{cluster}/{host}`.
pub fn evaluate_host(opts: &Options, cluster: &str, j: &Value) -> Outcome {
    let host = j.get("name").and_then(Value::as_str).unwrap_or("?");
    let (Some(alive), Some(tn)) = (j.get("alive").and_then(Value::as_bool), f(j, "tn")) else {
        return Outcome::unknown(format!(
            "the reply for host {host:?} has no alive/tn fields"
        ));
    };
    let mut long = Vec::new();
    if opts.verbose > 0 {
        long.push(format!(
            "cluster {cluster}, host {host} ({}), {}, last report {} ago",
            j.get("ip").and_then(Value::as_str).unwrap_or("?"),
            if alive { "UP" } else { "DOWN" },
            age_text(tn)
        ));
    }
    let mut o = if opts.heartbeat {
        heartbeat(opts, host, alive, tn)
    } else {
        metric(opts, host, alive, tn, j, &mut long)
    };
    o.long = long;
    o
}

fn heartbeat(opts: &Options, host: &str, alive: bool, tn: f64) -> Outcome {
    let perf = Perf {
        label: "age".into(),
        value: Some(tn),
        uom: "s",
        warning: opts.warning,
        critical: opts.critical,
        min: Some(0.0),
        max: None,
    };
    let (status, text) = if !alive {
        (
            Status::Critical,
            format!("{host} is DOWN: no report for {}", age_text(tn)),
        )
    } else if let Some(max) = opts.max_age.filter(|m| tn > *m as f64) {
        (
            Status::Critical,
            format!(
                "{host} last reported {} ago (--max-age {max})",
                age_text(tn)
            ),
        )
    } else {
        let s = classify(tn, opts.warning.as_ref(), opts.critical.as_ref());
        (s, format!("{host} is UP, last report {} ago", age_text(tn)))
    };
    let mut o = Outcome::new(status, text);
    o.perfdata.push(perf);
    o
}

fn metric(
    opts: &Options,
    host: &str,
    alive: bool,
    host_tn: f64,
    j: &Value,
    long: &mut Vec<String>,
) -> Outcome {
    let name = opts.metric.as_deref().unwrap_or_default();
    let Some(m) = j.get("metrics").and_then(Value::as_array).and_then(|ms| {
        ms.iter()
            .find(|m| m.get("name").and_then(Value::as_str) == Some(name))
    }) else {
        return Outcome::unknown(format!("metric {name:?} not found on host {host:?}"));
    };
    let units = m.get("units").and_then(Value::as_str).unwrap_or("").trim();
    let val = m.get("val").and_then(Value::as_str).unwrap_or("");
    let tn = f(m, "tn").unwrap_or(host_tn);
    if opts.verbose > 0 {
        long.push(format!(
            "{name}: {val} {units} ({}), updated {} ago, tmax {} s, dmax {} s",
            m.get("type").and_then(Value::as_str).unwrap_or("?"),
            age_text(tn),
            f(m, "tmax").unwrap_or(0.0),
            f(m, "dmax").unwrap_or(0.0)
        ));
    }
    let shown = if units.is_empty() {
        format!("{name} = {val}")
    } else {
        format!("{name} = {val} {units}")
    };
    let numeric = m.get("numeric").and_then(Value::as_bool).unwrap_or(false);
    let value = f(m, "value").filter(|v| v.is_finite());
    let perf = |value: Option<f64>| Perf {
        label: name.to_string(),
        value,
        uom: perfdata::uom(units),
        warning: opts.warning,
        critical: opts.critical,
        min: None,
        max: None,
    };
    let stale = |why: String| {
        let mut o = Outcome::unknown(format!("{shown} on {host} is stale: {why}"));
        o.perfdata.push(perf(None));
        o
    };
    if !alive {
        return stale(format!(
            "the host is DOWN (no report for {})",
            age_text(host_tn)
        ));
    }
    if let Some(max) = opts.max_age.filter(|m| tn > *m as f64) {
        return stale(format!("updated {} ago (--max-age {max})", age_text(tn)));
    }
    // gmetad's liveness rule applied to the metric, as the aggregator's
    // alert rules do: heard within 4 × TMAX (60 s without a TMAX).
    let tmax = f(m, "tmax").unwrap_or(0.0);
    let limit = if tmax > 0.0 { 4.0 * tmax } else { 60.0 };
    if tn >= limit {
        return stale(format!(
            "updated {} ago, past 4 × TMAX ({tmax:.0} s)",
            age_text(tn)
        ));
    }
    if !numeric {
        if opts.warning.is_some() || opts.critical.is_some() {
            return Outcome::unknown(format!(
                "{name} on {host} is text ({val:?}) and cannot be compared with -w/-c"
            ));
        }
        return Outcome::new(Status::Ok, format!("{shown} on {host}"));
    }
    let Some(v) = value else {
        return Outcome::unknown(format!("{name} on {host} has no numeric value ({val:?})"));
    };
    let status = classify(v, opts.warning.as_ref(), opts.critical.as_ref());
    let mut text = format!("{shown} on {host}");
    text.push_str(&threshold_note(
        status,
        opts.warning.as_ref(),
        opts.critical.as_ref(),
    ));
    let mut o = Outcome::new(status, text);
    o.perfdata.push(perf(Some(v)));
    o
}

/// ` (critical 8)` or ` (warning 4)` for a non-OK state: which range fired.
fn threshold_note(status: Status, w: Option<&Range>, c: Option<&Range>) -> String {
    match (status, w, c) {
        (Status::Critical, _, Some(c)) => format!(" (critical {c})"),
        (Status::Warning, Some(w), _) => format!(" (warning {w})"),
        _ => String::new(),
    }
}

/// Evaluates `/api/cluster/{cluster}` (no `-H`): the summary of `-m`, or
/// with `--heartbeat` the number of DOWN hosts.
pub fn evaluate_cluster(opts: &Options, cluster: &str, j: &Value) -> Outcome {
    let (Some(up), Some(down)) = (f(j, "hosts_up"), f(j, "hosts_down")) else {
        return Outcome::unknown(format!(
            "the reply for cluster {cluster:?} has no hosts_up/hosts_down"
        ));
    };
    let mut long = Vec::new();
    if opts.verbose > 0 {
        for h in j
            .get("hosts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if h.get("alive").and_then(Value::as_bool) == Some(false) {
                long.push(format!(
                    "DOWN: {} (no report for {})",
                    h.get("name").and_then(Value::as_str).unwrap_or("?"),
                    age_text(f(h, "tn").unwrap_or(0.0))
                ));
            }
        }
    }
    let mut o = if opts.heartbeat {
        // Without ranges, any DOWN host is CRITICAL.
        let zero = Range::parse("0").ok();
        let critical = opts.critical.as_ref().or(if opts.warning.is_none() {
            zero.as_ref()
        } else {
            None
        });
        let s = classify(down, opts.warning.as_ref(), critical);
        let mut o = Outcome::new(
            s,
            format!(
                "cluster {cluster}: {down:.0} of {:.0} hosts DOWN",
                up + down
            ),
        );
        o.perfdata.push(Perf {
            label: "hosts_down".into(),
            value: Some(down),
            uom: "",
            warning: opts.warning,
            critical: critical.copied(),
            min: Some(0.0),
            max: Some(up + down),
        });
        o
    } else {
        let name = opts.metric.as_deref().unwrap_or_default();
        let Some(m) = j
            .get("summary")
            .and_then(|s| s.get("metrics"))
            .and_then(Value::as_array)
            .and_then(|ms| {
                ms.iter()
                    .find(|m| m.get("name").and_then(Value::as_str) == Some(name))
            })
        else {
            return Outcome::unknown(format!(
                "metric {name:?} has no summary in cluster {cluster:?}"
            ));
        };
        let (Some(sum), num) = (f(m, "sum"), f(m, "num").unwrap_or(0.0)) else {
            return Outcome::unknown(format!("summary of {name:?} has no sum"));
        };
        let units = m.get("units").and_then(Value::as_str).unwrap_or("").trim();
        let s = classify(sum, opts.warning.as_ref(), opts.critical.as_ref());
        let mut text = format!(
            "cluster {cluster}: sum of {name} = {} {units} over {num:.0} hosts",
            perfdata::number(Some(sum))
        );
        text = text.replace("  over", " over");
        text.push_str(&threshold_note(
            s,
            opts.warning.as_ref(),
            opts.critical.as_ref(),
        ));
        let mut o = Outcome::new(s, text);
        o.perfdata.push(Perf {
            label: name.to_string(),
            value: Some(sum),
            uom: perfdata::uom(units),
            warning: opts.warning,
            critical: opts.critical,
            min: None,
            max: None,
        });
        o.perfdata.push(Perf {
            label: "hosts".into(),
            value: Some(num),
            uom: "",
            warning: None,
            critical: None,
            min: Some(0.0),
            max: None,
        });
        o
    };
    o.long = long;
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(args: &[&str]) -> Options {
        let mut v = vec!["check_ganglion"];
        v.extend_from_slice(args);
        crate::cli::parse_with_env(v, |_| None).unwrap()
    }

    fn host(alive: bool, tn: u64, metrics: Value) -> Value {
        json!({"name": "node1", "ip": "10.0.0.1", "alive": alive, "tn": tn, "metrics": metrics})
    }

    fn load(v: f64, tn: u64) -> Value {
        json!([{"name": "load_one", "val": format!("{v:.2}"), "value": v, "type": "float",
                "units": " ", "tn": tn, "tmax": 70, "dmax": 0, "numeric": true}])
    }

    #[test]
    fn a_metric_is_classified_with_critical_first_and_perfdata() {
        let o = opts(&["-H", "node1", "-m", "load_one", "-w", "4", "-c", "8"]);
        for (v, want) in [
            (0.5, Status::Ok),
            (4.0, Status::Ok),
            (4.5, Status::Warning),
            (9.2, Status::Critical),
        ] {
            let out = evaluate_host(&o, "c", &host(true, 3, load(v, 3)));
            assert_eq!(out.status, want, "{v}");
        }
        let out = evaluate_host(&o, "c", &host(true, 3, load(9.2, 3))).render();
        assert_eq!(
            out,
            "GANGLION CRITICAL - load_one = 9.20 on node1 (critical 8) | 'load_one'=9.2;4;8\n"
        );
    }

    #[test]
    fn missing_stale_text_and_dead_host_metrics_are_unknown() {
        let o = opts(&[
            "-H",
            "node1",
            "-m",
            "load_one",
            "-c",
            "8",
            "--max-age",
            "60",
        ]);
        let cases = [
            (host(true, 3, json!([])), "not found"),
            (host(true, 3, load(1.0, 120)), "--max-age 60"),
            (host(false, 400, load(1.0, 400)), "host is DOWN"),
            (
                host(
                    true,
                    3,
                    json!([{"name": "load_one", "val": "high", "type": "string", "numeric": false, "tn": 1}]),
                ),
                "is text",
            ),
            (
                host(
                    true,
                    3,
                    json!([{"name": "load_one", "val": "nan", "value": null, "type": "float", "numeric": true, "tn": 1}]),
                ),
                "no numeric value",
            ),
            (json!({"name": "node1"}), "no alive/tn"),
        ];
        for (j, says) in cases {
            let out = evaluate_host(&o, "c", &j);
            assert_eq!(out.status, Status::Unknown, "{j}");
            assert!(out.render().contains(says), "{}", out.render());
        }
    }

    #[test]
    fn a_metric_past_4_tmax_is_stale_without_max_age() {
        let o = opts(&["-H", "node1", "-m", "load_one", "-c", "8"]);
        // TMAX 70: stale from 280 s on, as the aggregator's rules see it.
        assert_eq!(
            evaluate_host(&o, "c", &host(true, 3, load(1.0, 279))).status,
            Status::Ok
        );
        let out = evaluate_host(&o, "c", &host(true, 3, load(1.0, 280)));
        assert_eq!(out.status, Status::Unknown);
        assert!(
            out.render().contains("past 4 × TMAX (70 s)"),
            "{}",
            out.render()
        );
    }

    #[test]
    fn a_text_metric_without_thresholds_is_ok() {
        let o = opts(&["-H", "node1", "-m", "os_name"]);
        let j = host(
            true,
            3,
            json!([{"name": "os_name", "val": "Linux", "type": "string", "numeric": false, "tn": 1}]),
        );
        let out = evaluate_host(&o, "c", &j);
        assert_eq!(out.status, Status::Ok);
        assert_eq!(out.render(), "GANGLION OK - os_name = Linux on node1\n");
    }

    #[test]
    fn heartbeat_is_critical_when_down_or_too_old() {
        let o = opts(&["-H", "node1", "--heartbeat"]);
        let up = evaluate_host(&o, "c", &host(true, 5, json!([])));
        assert_eq!(up.status, Status::Ok);
        assert_eq!(
            up.render(),
            "GANGLION OK - node1 is UP, last report 5 s ago | 'age'=5s;;;0\n"
        );
        let down = evaluate_host(&o, "c", &host(false, 95, json!([])));
        assert_eq!(down.status, Status::Critical);
        assert!(down.render().contains("DOWN: no report for 95 s"));
        let o = opts(&["-H", "node1", "--heartbeat", "--max-age", "30"]);
        assert_eq!(
            evaluate_host(&o, "c", &host(true, 31, json!([]))).status,
            Status::Critical
        );
        let o = opts(&["-H", "node1", "--heartbeat", "-w", "20"]);
        assert_eq!(
            evaluate_host(&o, "c", &host(true, 21, json!([]))).status,
            Status::Warning
        );
    }

    #[test]
    fn clusters_count_down_hosts_or_check_summaries() {
        let j = json!({"name": "c", "hosts_up": 8, "hosts_down": 2,
            "hosts": [{"name": "a", "alive": false, "tn": 300}],
            "summary": {"metrics": [{"name": "load_one", "sum": 12.5, "num": 8, "units": " "}]}});
        let o = opts(&["-C", "c", "--heartbeat", "-v"]);
        let out = evaluate_cluster(&o, "c", &j);
        assert_eq!(out.status, Status::Critical);
        assert!(
            out.render().contains(
                "2 of 10 hosts DOWN | 'hosts_down'=2;;0;0;10\nDOWN: a (no report for 300 s)\n"
            ),
            "{}",
            out.render()
        );
        let o = opts(&["-C", "c", "--heartbeat", "-c", "3"]);
        assert_eq!(evaluate_cluster(&o, "c", &j).status, Status::Ok);
        let o = opts(&["-C", "c", "-m", "load_one", "-w", "10"]);
        let out = evaluate_cluster(&o, "c", &j);
        assert_eq!(out.status, Status::Warning);
        assert!(out.render().starts_with("GANGLION WARNING - cluster c: sum of load_one = 12.5 over 8 hosts (warning 10) | 'load_one'=12.5;10 'hosts'=8;;;0\n"), "{}", out.render());
        let o = opts(&["-C", "c", "-m", "nope"]);
        assert_eq!(evaluate_cluster(&o, "c", &j).status, Status::Unknown);
    }

    #[test]
    fn the_cluster_of_a_host_is_found_by_exact_name_only() {
        let s =
            json!({"hosts": [{"cluster": "a", "host": "web10"}, {"cluster": "b", "host": "web1"}]});
        assert_eq!(find_cluster(&s, "web1").unwrap(), "b");
        assert!(find_cluster(&s, "web").unwrap_err().contains("not found"));
        let s = json!({"hosts": [{"cluster": "a", "host": "x"}, {"cluster": "b", "host": "x"}]});
        assert!(find_cluster(&s, "x").unwrap_err().contains("-C/--cluster"));
    }

    #[test]
    fn output_text_cannot_inject_perfdata_or_lines() {
        let mut o = Outcome::new(Status::Ok, "a|b\nc".into());
        o.long.push("x|y".into());
        assert_eq!(o.render(), "GANGLION OK - a/b c\nx/y\n");
    }
}

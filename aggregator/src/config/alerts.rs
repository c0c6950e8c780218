//! `[alerts]` (the health engine's defaults, warm-up, flap detection, storm
//! control and event store) and `[[alert]]` (one metric rule each).
//!
//! Names follow Nagios where Nagios has the concept (`max_check_attempts`,
//! flap thresholds); thresholds use the monitoring-plugins range syntax
//! (`10`, `10:`, `~:10`, `10:20`, `@10:20`), critical checked first.

use super::{ConfigError, invalid};
use ganglion_proto::range::Range;
use serde::Deserialize;
use std::path::PathBuf;

/// Largest `max_check_attempts` (the attempt is kept in a byte).
pub const MAX_CHECK_ATTEMPTS: u32 = 100;

/// Most `[[alert]]` rules (a rule's index is kept in 16 bits per target).
pub const MAX_RULES: usize = 10_000;

/// `[alerts]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Run the engine. It runs when `[alerts]` or any `[[alert]]` is
    /// present, unless this is `false`.
    pub enabled: bool,
    /// Default `max_check_attempts` of rules and hosts (Nagios' name).
    pub max_check_attempts: u32,
    /// Host DOWN after this many seconds without a report; 0 = gmond's rule
    /// (TN ≥ 4 × TMAX).
    pub host_down_after_secs: u32,
    /// Seconds between evaluations.
    pub interval_secs: u32,
    /// No events for this long after start; hosts not heard yet are not DOWN.
    pub warmup_secs: u32,
    /// Flap detection on rules (Nagios' `enable_flap_detection`).
    pub flap_detection: bool,
    /// Flapping stops at or below this percent state change.
    pub low_flap_threshold: f64,
    /// Flapping starts at or above this percent state change.
    pub high_flap_threshold: f64,
    /// Storm control: share of a cluster's hosts (0 < f ≤ 1) going DOWN
    /// within `storm_window_secs` that makes one cluster incident instead of
    /// per-host events; 0 turns storm control off.
    pub storm_fraction: f64,
    /// Storm control's window.
    pub storm_window_secs: u32,
    /// Storm control needs at least this many hosts down.
    pub storm_min_hosts: u32,
    /// The SQLite file; empty = `.ganglion-alerts.sqlite` under `rrd_root`.
    pub database: PathBuf,
    /// Keep at most this many events (oldest pruned first).
    pub history_max_events: u64,
    /// Prune events older than this many days.
    pub history_days: u32,
    /// Events and state changes waiting for the store thread, in batches
    /// (one batch per evaluation, one per recorded event); a full queue drops
    /// and counts.
    pub queue_batches: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            max_check_attempts: 3,
            host_down_after_secs: 0,
            interval_secs: 15,
            warmup_secs: 120,
            flap_detection: true,
            low_flap_threshold: 5.0,
            high_flap_threshold: 20.0,
            storm_fraction: 0.5,
            storm_window_secs: 300,
            storm_min_hosts: 5,
            database: PathBuf::new(),
            history_max_events: 1_000_000,
            history_days: 90,
            queue_batches: 1024,
        }
    }
}

/// What a rule evaluates.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// One state per matching host: the host's value (the default).
    #[default]
    None,
    /// Cluster rule: sum over matching alive hosts (gmetad's SUM).
    Sum,
    /// Cluster rule: number of matching alive hosts with the metric (NUM).
    Num,
    /// Cluster rule: SUM / NUM.
    Mean,
    /// Cluster rule: smallest value.
    Min,
    /// Cluster rule: largest value.
    Max,
    /// Cluster rule, "k of n": how many matching hosts' values raise `each`.
    Count,
    /// Cluster rule: as `count`, in percent of the hosts with the metric.
    Percent,
    /// Cluster rule: matching hosts DOWN (no metric needed).
    HostsDown,
    /// Cluster rule: matching hosts DOWN, in percent of matching hosts.
    HostsDownPercent,
}

impl Aggregate {
    /// The TOML name.
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::None => "none",
            Aggregate::Sum => "sum",
            Aggregate::Num => "num",
            Aggregate::Mean => "mean",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Count => "count",
            Aggregate::Percent => "percent",
            Aggregate::HostsDown => "hosts_down",
            Aggregate::HostsDownPercent => "hosts_down_percent",
        }
    }

    /// Reads no metric.
    pub fn is_host_count(self) -> bool {
        matches!(self, Aggregate::HostsDown | Aggregate::HostsDownPercent)
    }
}

/// `[[alert]]`: one rule (a Nagios service per matching host, or one per
/// matching cluster when `aggregate` is set).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AlertRule {
    /// Nagios service description; unique.
    pub name: String,
    /// Metric name (exact); may be empty only for `hosts_down` aggregates.
    pub metric: String,
    /// Cluster glob.
    pub cluster: String,
    /// Host glob.
    pub hosts: String,
    /// Warning range.
    pub warning: String,
    /// Critical range.
    pub critical: String,
    /// Override of `alerts.max_check_attempts`.
    pub max_check_attempts: Option<u32>,
    /// Cluster rule over matching hosts (see [`Aggregate`]).
    pub aggregate: Aggregate,
    /// Per-host range for `count`/`percent` ("hosts whose value raises it").
    pub each: String,
}

fn parse_range(rule: &str, key: &str, text: &str) -> Result<Option<Range>, ConfigError> {
    if text.is_empty() {
        return Ok(None);
    }
    Range::parse(text)
        .map(Some)
        .map_err(|e| invalid(format!("alert[{rule:?}].{key}"), format!("{text:?}: {e}")))
}

impl AlertRule {
    /// `warning` parsed (validated at start, so `None` also for bad text).
    pub fn warning_range(&self) -> Option<Range> {
        Range::parse(&self.warning).ok()
    }

    /// `critical` parsed.
    pub fn critical_range(&self) -> Option<Range> {
        Range::parse(&self.critical).ok()
    }

    /// `each` parsed.
    pub fn each_range(&self) -> Option<Range> {
        Range::parse(&self.each).ok()
    }

    /// `cluster`, `*` when empty.
    pub fn cluster_glob(&self) -> &str {
        if self.cluster.is_empty() {
            "*"
        } else {
            &self.cluster
        }
    }

    /// `hosts`, `*` when empty.
    pub fn hosts_glob(&self) -> &str {
        if self.hosts.is_empty() {
            "*"
        } else {
            &self.hosts
        }
    }
}

fn check_glob(key: String, g: &str) -> Result<(), ConfigError> {
    globset::Glob::new(g)
        .map(|_| ())
        .map_err(|e| invalid(key, format!("{g:?} is not a glob: {e}")))
}

impl AlertsConfig {
    /// Checks `[alerts]` and every `[[alert]]`, naming the key.
    pub fn validate(&self, rules: &[AlertRule]) -> Result<(), ConfigError> {
        let attempts = |key: String, v: u32| {
            if (1..=MAX_CHECK_ATTEMPTS).contains(&v) {
                Ok(())
            } else {
                Err(invalid(
                    key,
                    format!("must be between 1 and {MAX_CHECK_ATTEMPTS}"),
                ))
            }
        };
        attempts("alerts.max_check_attempts".into(), self.max_check_attempts)?;
        if !(1..=86400).contains(&self.interval_secs) {
            return Err(invalid(
                "alerts.interval_secs",
                "must be between 1 and 86400",
            ));
        }
        let pct = |v: f64| v.is_finite() && (0.0..=100.0).contains(&v);
        if !pct(self.low_flap_threshold) {
            return Err(invalid(
                "alerts.low_flap_threshold",
                "must be a percent, 0 to 100",
            ));
        }
        if !pct(self.high_flap_threshold) || self.high_flap_threshold < self.low_flap_threshold {
            return Err(invalid(
                "alerts.high_flap_threshold",
                "must be a percent, 0 to 100, not below alerts.low_flap_threshold",
            ));
        }
        if !(self.storm_fraction.is_finite() && (0.0..=1.0).contains(&self.storm_fraction)) {
            return Err(invalid(
                "alerts.storm_fraction",
                "must be between 0 (off) and 1",
            ));
        }
        if self.storm_fraction > 0.0 && self.storm_window_secs == 0 {
            return Err(invalid("alerts.storm_window_secs", "must be at least 1"));
        }
        if self.storm_min_hosts == 0 {
            return Err(invalid("alerts.storm_min_hosts", "must be at least 1"));
        }
        if self.history_max_events == 0 {
            return Err(invalid("alerts.history_max_events", "must be at least 1"));
        }
        if self.history_days == 0 {
            return Err(invalid("alerts.history_days", "must be at least 1"));
        }
        if !(1..=1_000_000).contains(&self.queue_batches) {
            return Err(invalid(
                "alerts.queue_batches",
                "must be between 1 and 1000000",
            ));
        }
        if rules.len() > MAX_RULES {
            return Err(invalid(
                "alert",
                format!("{} rules; at most {MAX_RULES}", rules.len()),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, r) in rules.iter().enumerate() {
            if r.name.is_empty() {
                return Err(invalid(format!("alert[{i}].name"), "must not be empty"));
            }
            if r.name.contains(['\n', ';', '\0']) {
                return Err(invalid(
                    format!("alert[{:?}].name", r.name),
                    "must not contain newlines, `;` or NUL (Nagios' command syntax)",
                ));
            }
            if !names.insert(r.name.as_str()) {
                return Err(invalid(
                    format!("alert[{:?}].name", r.name),
                    "is used by another [[alert]]",
                ));
            }
            let key = |k: &str| format!("alert[{:?}].{k}", r.name);
            if r.metric.is_empty() && !r.aggregate.is_host_count() {
                return Err(invalid(key("metric"), "must not be empty"));
            }
            check_glob(key("cluster"), r.cluster_glob())?;
            check_glob(key("hosts"), r.hosts_glob())?;
            let w = parse_range(&r.name, "warning", &r.warning)?;
            let c = parse_range(&r.name, "critical", &r.critical)?;
            if w.is_none() && c.is_none() {
                return Err(invalid(
                    key("critical"),
                    "a rule needs `warning`, `critical` or both",
                ));
            }
            let each = parse_range(&r.name, "each", &r.each)?;
            match r.aggregate {
                Aggregate::Count | Aggregate::Percent if each.is_none() => {
                    return Err(invalid(
                        key("each"),
                        "`count` and `percent` need the per-host range `each`",
                    ));
                }
                Aggregate::Count | Aggregate::Percent => {}
                _ if each.is_some() => {
                    return Err(invalid(
                        key("each"),
                        "is only read by aggregate = \"count\" or \"percent\"",
                    ));
                }
                _ => {}
            }
            if let Some(m) = r.max_check_attempts {
                attempts(key("max_check_attempts"), m)?;
            }
        }
        Ok(())
    }
}

impl super::Config {
    /// Whether the health engine runs: `[alerts]` or any `[[alert]]` is
    /// present and `alerts.enabled` is not `false`.
    pub fn alerts_enabled(&self) -> bool {
        match &self.alerts {
            Some(a) => a.enabled,
            None => !self.alert.is_empty(),
        }
    }

    /// `[alerts]` with defaults when absent.
    pub fn alerts_config(&self) -> AlertsConfig {
        self.alerts.clone().unwrap_or_default()
    }

    /// The event database: `alerts.database`, or under `rrd_root`.
    pub fn alerts_database(&self) -> PathBuf {
        match &self.alerts {
            Some(a) if !a.database.as_os_str().is_empty() => a.database.clone(),
            _ => self.rrd_root.join(".ganglion-alerts.sqlite"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<super::super::Config, String> {
        let text = format!("{text}\n[[cluster]]\nname = \"c\"\nudp_listen = \"127.0.0.1:0\"\n");
        let c: super::super::Config = toml::from_str(&text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn the_issue_example_parses() {
        let c = parse(
            "[alerts]\nmax_check_attempts = 3\nhost_down_after_secs = 0\n\
             [[alert]]\nname = \"load\"\nmetric = \"load_one\"\ncluster = \"*\"\nhosts = \"*\"\n\
             warning = \"4\"\ncritical = \"8\"\nmax_check_attempts = 1\n",
        )
        .unwrap();
        assert!(c.alerts_enabled());
        assert_eq!(c.alert[0].max_check_attempts, Some(1));
        assert_eq!(c.alerts_config().warmup_secs, 120);
    }

    #[test]
    fn absent_tables_leave_the_engine_off() {
        let c = parse("").unwrap();
        assert!(!c.alerts_enabled());
        let c = parse("[alerts]\nenabled = false\n[[alert]]\nname = \"a\"\nmetric = \"m\"\ncritical = \"1\"\n").unwrap();
        assert!(!c.alerts_enabled());
    }

    #[test]
    fn errors_name_the_rule_and_key() {
        let e = parse("[[alert]]\nname = \"load\"\nmetric = \"load_one\"\nwarning = \"5:1\"\n")
            .unwrap_err();
        assert!(e.contains("alert[\"load\"].warning"), "{e}");
        let e = parse("[[alert]]\nname = \"load\"\nmetric = \"load_one\"\n").unwrap_err();
        assert!(e.contains("alert[\"load\"].critical"), "{e}");
        let e = parse("[[alert]]\nname = \"x\"\nmetric = \"m\"\ncritical = \"1\"\nhosts = \"[\"\n")
            .unwrap_err();
        assert!(e.contains("alert[\"x\"].hosts"), "{e}");
        let e = parse(
            "[[alert]]\nname = \"x\"\nmetric = \"m\"\ncritical = \"1\"\n\
             [[alert]]\nname = \"x\"\nmetric = \"n\"\ncritical = \"1\"\n",
        )
        .unwrap_err();
        assert!(e.contains("is used by another"), "{e}");
        let e = parse(
            "[[alert]]\nname = \"k\"\nmetric = \"m\"\ncritical = \"3:\"\naggregate = \"count\"\n",
        )
        .unwrap_err();
        assert!(e.contains("alert[\"k\"].each"), "{e}");
        let e = parse("[alerts]\nmax_check_attempts = 0\n").unwrap_err();
        assert!(e.contains("alerts.max_check_attempts"), "{e}");
        let e =
            parse("[alerts]\nlow_flap_threshold = 30.0\nhigh_flap_threshold = 20.0\n").unwrap_err();
        assert!(e.contains("alerts.high_flap_threshold"), "{e}");
        let e = parse("[alerts]\nstorm_fraction = 1.5\n").unwrap_err();
        assert!(e.contains("alerts.storm_fraction"), "{e}");
    }

    #[test]
    fn hosts_down_rules_need_no_metric() {
        let c = parse(
            "[[alert]]\nname = \"down\"\naggregate = \"hosts_down\"\ncluster = \"web\"\ncritical = \"3\"\n",
        )
        .unwrap();
        assert_eq!(c.alert[0].aggregate, Aggregate::HostsDown);
    }
}

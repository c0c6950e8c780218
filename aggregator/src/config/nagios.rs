//! `[[handler]]` (event handlers), `[handlers]` (their shared limits) and
//! `[nagios]` (the passive-result sink): keys, defaults, validation. The
//! runtime is in the `handlers` and `nagios` modules.

use super::{ConfigError, invalid};
use serde::Deserialize;
use std::path::PathBuf;

/// The event kinds a `[[handler]] on` list may name (`flap` = flap start
/// and stop).
pub const HANDLER_KINDS: [&str; 7] = [
    "host_down",
    "host_up",
    "alert",
    "recovery",
    "flap",
    "cluster_incident",
    "cluster_recovered",
];

/// Placeholders an argv element may use (`{name}`; `{{`/`}}` are literal
/// braces). Each is also exported as `GANGLION_<NAME>`.
pub const PLACEHOLDERS: [&str; 14] = [
    "host",
    "cluster",
    "state",
    "state_type",
    "attempt",
    "max_attempts",
    "rule",
    "metric",
    "value",
    "output",
    "kind",
    "time",
    "event_id",
    "handler",
];

/// A `[[handler]]`: a program run when a matching event happens.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HandlerConfig {
    /// Name (in events, logs and the rate limiter).
    pub name: String,
    /// Event kinds that run it (see [`HANDLER_KINDS`]).
    pub on: Vec<String>,
    /// The program and its arguments, placeholders expanded; no shell
    /// unless argv names one (`["/bin/sh", "-c", "…"]`).
    pub argv: Vec<String>,
    /// Cluster glob (`*`, `?`).
    pub cluster: String,
    /// Host glob; cluster-wide events (no host) match only `*`.
    pub hosts: String,
    /// `[[alert]]` name glob; events without a rule (host liveness) match
    /// only `*`.
    pub rules: String,
    /// Only these states (e.g. `["DOWN", "CRITICAL"]`); empty = any.
    pub states: Vec<String>,
    /// Only these state types (`["HARD"]` to skip SOFT attempts); empty = any.
    pub state_types: Vec<String>,
    /// SIGTERM to the handler's process group after this long, SIGKILL
    /// `kill_grace_secs` later.
    pub timeout_secs: u32,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace_secs: u32,
    /// At most this many runs per target (handler + cluster + host) per
    /// `rate_limit_window_secs`; more are refused and recorded as such.
    pub rate_limit_runs: u32,
    /// The rate limiter's window.
    pub rate_limit_window_secs: u32,
    /// Working directory (default: the aggregator's).
    pub cwd: Option<PathBuf>,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        HandlerConfig {
            name: String::new(),
            on: Vec::new(),
            argv: Vec::new(),
            cluster: "*".into(),
            hosts: "*".into(),
            rules: "*".into(),
            states: Vec::new(),
            state_types: Vec::new(),
            timeout_secs: 30,
            kill_grace_secs: 5,
            rate_limit_runs: 5,
            rate_limit_window_secs: 600,
            cwd: None,
        }
    }
}

/// `[handlers]`: limits every handler shares.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HandlersConfig {
    /// Handler processes running at once over all handlers; further runs
    /// wait for a slot.
    pub max_running: usize,
    /// Runs waiting for a slot; beyond it a run is refused and recorded.
    pub max_waiting: usize,
    /// Bytes kept of each of stdout and stderr per run (the rest is read
    /// and dropped, and the run is marked truncated).
    pub max_output_bytes: usize,
}

impl Default for HandlersConfig {
    fn default() -> Self {
        HandlersConfig {
            max_running: 8,
            max_waiting: 256,
            max_output_bytes: 64 * 1024,
        }
    }
}

/// `[nagios]`: passive results for Nagios or Icinga.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NagiosConfig {
    /// The external command file (Debian: `/var/lib/nagios4/rw/nagios.cmd`);
    /// unset = no sink.
    pub command_file: Option<PathBuf>,
    /// Every host and rule state is sent again this often (and each change
    /// at once); keep it below the Nagios services' freshness threshold.
    pub resend_secs: u32,
    /// Lines queued for the writer; beyond it lines are dropped and counted.
    pub queue_max_lines: usize,
    /// `freshness_threshold` of the services `nagios-config` prints, and
    /// the `ttl` of Icinga 2 results (0 = 3 × `resend_secs`).
    pub freshness_secs: u32,
    /// Icinga 2's API (`https://icinga:5665`); unset = not used. Results go
    /// to `POST /v1/actions/process-check-result`, one request each.
    pub icinga2_url: Option<String>,
    /// The `ApiUser` (needs permission `actions/process-check-result`).
    pub icinga2_user: String,
    /// File whose first line is that user's password.
    pub icinga2_password_file: Option<PathBuf>,
    /// CAs (PEM) Icinga's certificate must chain to (default: the system's).
    pub icinga2_ca: Option<PathBuf>,
    /// Longest wait for one request.
    pub icinga2_timeout_secs: u32,
}

impl Default for NagiosConfig {
    fn default() -> Self {
        NagiosConfig {
            command_file: None,
            resend_secs: 60,
            queue_max_lines: 100_000,
            freshness_secs: 0,
            icinga2_url: None,
            icinga2_user: String::new(),
            icinga2_password_file: None,
            icinga2_ca: None,
            icinga2_timeout_secs: 10,
        }
    }
}

impl NagiosConfig {
    /// The freshness threshold in effect.
    pub fn freshness(&self) -> u32 {
        if self.freshness_secs == 0 {
            self.resend_secs.saturating_mul(3)
        } else {
            self.freshness_secs
        }
    }
}

/// Checks `[[handler]]`, `[handlers]` and `[nagios]`, naming the key.
/// `alerts_on`: the alerts engine runs (handlers and the sink follow its
/// events, so without it they would never do anything).
pub fn validate(
    handlers: &[HandlerConfig],
    limits: &HandlersConfig,
    nagios: &NagiosConfig,
    alerts_on: bool,
) -> Result<(), ConfigError> {
    if !alerts_on {
        if !handlers.is_empty() {
            return Err(invalid(
                "handler[0]",
                "handlers run on alert events: add an [alerts] table (or [[alert]] rules)",
            ));
        }
        if nagios.command_file.is_some() || nagios.icinga2_url.is_some() {
            return Err(invalid(
                "nagios.command_file",
                "passive results come from the alerts engine: add an [alerts] table (or [[alert]] rules)",
            ));
        }
    }
    let mut names = std::collections::HashSet::new();
    for (i, h) in handlers.iter().enumerate() {
        let key = |k: &str| format!("handler[{i}].{k}");
        if h.name.is_empty() || h.name.chars().any(char::is_control) {
            return Err(invalid(
                key("name"),
                "must be a non-empty name without control characters",
            ));
        }
        if !names.insert(h.name.as_str()) {
            return Err(invalid(
                key("name"),
                format!("{:?} is used by two handlers", h.name),
            ));
        }
        if h.on.is_empty() {
            return Err(invalid(
                key("on"),
                format!("name at least one of {HANDLER_KINDS:?}"),
            ));
        }
        for k in &h.on {
            if !HANDLER_KINDS.contains(&k.as_str()) {
                return Err(invalid(
                    key("on"),
                    format!("{k:?} is not one of {HANDLER_KINDS:?}"),
                ));
            }
        }
        if h.argv.is_empty() || h.argv[0].is_empty() {
            return Err(invalid(key("argv"), "needs at least the program"));
        }
        for (j, a) in h.argv.iter().enumerate() {
            if a.contains('\0') {
                return Err(invalid(
                    format!("handler[{i}].argv[{j}]"),
                    "contains a NUL byte",
                ));
            }
            check_placeholders(a).map_err(|m| invalid(format!("handler[{i}].argv[{j}]"), m))?;
        }
        for s in &h.states {
            if !["UP", "DOWN", "OK", "WARNING", "CRITICAL", "UNKNOWN"].contains(&s.as_str()) {
                return Err(invalid(
                    key("states"),
                    format!("{s:?} is not UP, DOWN, OK, WARNING, CRITICAL or UNKNOWN"),
                ));
            }
        }
        for s in &h.state_types {
            if s != "SOFT" && s != "HARD" {
                return Err(invalid(
                    key("state_types"),
                    format!("{s:?} is not SOFT or HARD"),
                ));
            }
        }
        for (k, g) in [
            ("cluster", &h.cluster),
            ("hosts", &h.hosts),
            ("rules", &h.rules),
        ] {
            if g.is_empty() {
                return Err(invalid(
                    key(k),
                    "must not be empty (\"*\" matches everything)",
                ));
            }
            if let Err(e) = globset::Glob::new(g) {
                return Err(invalid(key(k), format!("{g:?} is not a glob: {e}")));
            }
        }
        if !(1..=86400).contains(&h.timeout_secs) {
            return Err(invalid(key("timeout_secs"), "must be between 1 and 86400"));
        }
        if h.kill_grace_secs > 3600 {
            return Err(invalid(key("kill_grace_secs"), "must be at most 3600"));
        }
        if h.rate_limit_runs == 0 {
            return Err(invalid(key("rate_limit_runs"), "must be at least 1"));
        }
        if h.rate_limit_window_secs == 0 {
            return Err(invalid(key("rate_limit_window_secs"), "must be at least 1"));
        }
    }
    if limits.max_running == 0 {
        return Err(invalid("handlers.max_running", "must be at least 1"));
    }
    if !(1024..=16 << 20).contains(&limits.max_output_bytes) {
        return Err(invalid(
            "handlers.max_output_bytes",
            "must be between 1024 and 16777216",
        ));
    }
    if let Some(p) = &nagios.command_file
        && (p.as_os_str().is_empty() || !p.is_absolute())
    {
        return Err(invalid("nagios.command_file", "must be an absolute path"));
    }
    if !(1..=86400).contains(&nagios.resend_secs) {
        return Err(invalid("nagios.resend_secs", "must be between 1 and 86400"));
    }
    if let Some(u) = &nagios.icinga2_url {
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            return Err(invalid(
                "nagios.icinga2_url",
                "must be an https:// URL (Icinga 2's API port, 5665)",
            ));
        }
        if nagios.icinga2_user.is_empty() {
            return Err(invalid(
                "nagios.icinga2_user",
                "an ApiUser is needed with nagios.icinga2_url",
            ));
        }
        if nagios.icinga2_password_file.is_none() {
            return Err(invalid(
                "nagios.icinga2_password_file",
                "needed with nagios.icinga2_url",
            ));
        }
        if !(1..=300).contains(&nagios.icinga2_timeout_secs) {
            return Err(invalid(
                "nagios.icinga2_timeout_secs",
                "must be between 1 and 300",
            ));
        }
    }
    if nagios.queue_max_lines == 0 {
        return Err(invalid("nagios.queue_max_lines", "must be at least 1"));
    }
    Ok(())
}

/// Checks the `{…}` placeholders of one argv element.
fn check_placeholders(s: &str) -> Result<(), String> {
    let mut rest = s;
    while let Some(i) = rest.find(['{', '}']) {
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err("a lone `}` (write `}}` for a literal brace)".into());
        }
        let Some(end) = tail.find('}') else {
            return Err("an unclosed `{` (write `{{` for a literal brace)".into());
        };
        let name = &tail[1..end];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}}; known: {PLACEHOLDERS:?}"
            ));
        }
        rest = &tail[end + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_handler() -> HandlerConfig {
        HandlerConfig {
            name: "replace-vm".into(),
            on: vec!["host_down".into()],
            argv: vec!["/bin/echo".into(), "{host}".into(), "{{literal}}".into()],
            ..HandlerConfig::default()
        }
    }

    #[test]
    fn handlers_and_the_sink_need_the_engine() {
        let e = validate(
            &[ok_handler()],
            &HandlersConfig::default(),
            &NagiosConfig::default(),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("[alerts]"), "{e}");
    }

    #[test]
    fn a_valid_handler_passes() {
        validate(
            &[ok_handler()],
            &HandlersConfig::default(),
            &NagiosConfig::default(),
            true,
        )
        .unwrap();
    }

    #[test]
    fn each_bad_key_is_named() {
        type Change = Box<dyn Fn(&mut HandlerConfig)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|h| h.name.clear()), "handler[0].name"),
            (Box::new(|h| h.on = vec!["boom".into()]), "handler[0].on"),
            (Box::new(|h| h.on.clear()), "handler[0].on"),
            (Box::new(|h| h.argv.clear()), "handler[0].argv"),
            (
                Box::new(|h| h.argv.push("{hots}".into())),
                "handler[0].argv[3]",
            ),
            (
                Box::new(|h| h.argv.push("{host".into())),
                "handler[0].argv[3]",
            ),
            (Box::new(|h| h.argv.push("a}".into())), "handler[0].argv[3]"),
            (
                Box::new(|h| h.states = vec!["BAD".into()]),
                "handler[0].states",
            ),
            (
                Box::new(|h| h.state_types = vec!["hard".into()]),
                "handler[0].state_types",
            ),
            (Box::new(|h| h.timeout_secs = 0), "handler[0].timeout_secs"),
            (
                Box::new(|h| h.rate_limit_runs = 0),
                "handler[0].rate_limit_runs",
            ),
            (Box::new(|h| h.hosts.clear()), "handler[0].hosts"),
            (Box::new(|h| h.cluster = "[a".into()), "handler[0].cluster"),
        ];
        for (change, key) in cases {
            let mut h = ok_handler();
            change(&mut h);
            let e = validate(
                &[h],
                &HandlersConfig::default(),
                &NagiosConfig::default(),
                true,
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
        }
        let e = validate(
            &[ok_handler(), ok_handler()],
            &HandlersConfig::default(),
            &NagiosConfig::default(),
            true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("handler[1].name"), "{e}");
        let n = NagiosConfig {
            command_file: Some("relative/nagios.cmd".into()),
            ..NagiosConfig::default()
        };
        let e = validate(&[], &HandlersConfig::default(), &n, true).unwrap_err();
        assert!(e.to_string().contains("nagios.command_file"), "{e}");
        for (n, key) in [
            (
                NagiosConfig {
                    icinga2_url: Some("ftp://icinga".into()),
                    ..NagiosConfig::default()
                },
                "nagios.icinga2_url",
            ),
            (
                NagiosConfig {
                    icinga2_url: Some("https://icinga:5665".into()),
                    ..NagiosConfig::default()
                },
                "nagios.icinga2_user",
            ),
            (
                NagiosConfig {
                    icinga2_url: Some("https://icinga:5665".into()),
                    icinga2_user: "u".into(),
                    ..NagiosConfig::default()
                },
                "nagios.icinga2_password_file",
            ),
        ] {
            let e = validate(&[], &HandlersConfig::default(), &n, true).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
        let l = HandlersConfig {
            max_running: 0,
            ..HandlersConfig::default()
        };
        let e = validate(&[], &l, &NagiosConfig::default(), true).unwrap_err();
        assert!(e.to_string().contains("handlers.max_running"), "{e}");
    }
}

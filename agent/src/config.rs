//! Agent configuration (TOML). Defaults reproduce gmond's default collection
//! groups (`gmond -t`); every validation error names its key.

use serde::Deserialize;
use thiserror::Error;

/// A configuration problem, naming the key.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax or unknown key.
    #[error("{0}")]
    Parse(String),
    /// Bad value.
    #[error("invalid `{key}`: {message}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// Problem.
        message: String,
    },
}

/// The agent's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Destinations (`[[send]]`).
    pub send: Vec<SendConfig>,
    /// Re-send metadata this often (0 = only at start and on request). gmond's
    /// default is 0; 60 is the advice for unicast, so it is ours.
    pub send_metadata_interval_secs: u32,
    /// Report as this host name (metrics go out spoofed, like gmond's override_hostname).
    pub override_hostname: Option<String>,
    /// With `override_hostname`: the IP to report.
    pub override_ip: Option<String>,
    /// `location` metric value.
    pub location: String,
    /// Tags (informational; Ganglia prints them as HOST TAGS when its collector knows them).
    pub tags: Vec<String>,
    /// Cluster name, sent as the CLUSTER extra.
    pub cluster: Option<String>,
    /// `gexec` metric: ON or OFF.
    pub gexec: bool,
    /// Collection groups; the default is gmond's.
    pub collection_group: Vec<GroupConfig>,
    /// Scripts run on a schedule whose output lines are metrics (gmetric cron jobs).
    pub script: Vec<ScriptConfig>,
    /// gmond Python metric modules.
    pub module: Vec<ModuleConfig>,
    /// Key file (`ganglion-agent keygen`): every datagram goes out in the
    /// authenticated envelope. `--key-file` overrides it. Re-read on SIGHUP
    /// (a file that does not load keeps the current key).
    pub key_file: Option<std::path::PathBuf>,
}

/// `[[script]]`: an argv run every `interval_secs`; see [`crate::custom::script`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptConfig {
    /// Name for logs (default: the program).
    #[serde(default)]
    pub name: Option<String>,
    /// Program and arguments (no shell unless the argv names one).
    pub argv: Vec<String>,
    /// Seconds between runs.
    #[serde(default = "default_script_interval")]
    pub interval_secs: u32,
    /// Killed (its process group) after this long.
    #[serde(default = "default_script_timeout")]
    pub timeout_secs: u32,
    /// GROUP of its metrics unless a JSON line says otherwise.
    #[serde(default = "default_script_group")]
    pub group: String,
}

impl ScriptConfig {
    /// The name logs use.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.argv.first().cloned())
            .unwrap_or_default()
    }
}

fn default_script_interval() -> u32 {
    60
}
fn default_script_timeout() -> u32 {
    30
}
fn default_script_group() -> String {
    "scripts".into()
}

/// `[[module]]`: a gmond Python metric module; see [`crate::custom::pymod`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleConfig {
    /// Module name (gmond.conf's `module { name }`), for logs and the default group.
    pub name: String,
    /// The module's `.py` file.
    pub path: std::path::PathBuf,
    /// `metric_init`'s params (gmond's `param NAME { value = … }`), passed as strings.
    #[serde(default)]
    pub params: toml::Table,
    /// Seconds between collections.
    #[serde(default = "default_module_every")]
    pub collect_every_secs: u32,
    /// A request not answered within this is a hung module: killed and restarted.
    #[serde(default = "default_module_timeout")]
    pub timeout_secs: u32,
    /// GROUP of its metrics (default: each descriptor's `groups`, else the module name).
    #[serde(default)]
    pub group: Option<String>,
    /// The Python interpreter.
    #[serde(default = "default_python")]
    pub python: String,
}

fn default_module_every() -> u32 {
    15
}
fn default_module_timeout() -> u32 {
    10
}
fn default_python() -> String {
    "python3".into()
}

/// One destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendConfig {
    /// Host name or IP (IPv4 or IPv6).
    pub host: String,
    /// UDP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// When `host` is a multicast group (gmond's `udp_send_channel { mcast_join }`):
    /// the TTL (IPv4) or hop limit (IPv6) of the datagrams, as gmond's `ttl`.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// When `host` is a multicast group: the interface to send on (a name such as
    /// `eth0`), as gmond's `mcast_if`; default: the kernel's route.
    #[serde(default)]
    pub mcast_if: Option<String>,
}

fn default_ttl() -> u32 {
    1
}

fn default_port() -> u16 {
    8649
}

/// A gmond collection group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Collect once at start, then only re-send.
    #[serde(default)]
    pub collect_once: bool,
    /// Seconds between collections.
    #[serde(default = "default_every")]
    pub collect_every_secs: u32,
    /// Send at least this often, changed or not.
    #[serde(default = "default_threshold")]
    pub time_threshold_secs: u32,
    /// Metrics.
    pub metric: Vec<GroupMetric>,
}

fn default_every() -> u32 {
    60
}
fn default_threshold() -> u32 {
    3600
}

/// A metric in a group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMetric {
    /// Metric name (see `ganglion-agent --list-metrics`).
    pub name: String,
    /// A change at least this large sends the whole group now (-1 = never).
    #[serde(default = "neg_one")]
    pub value_threshold: f64,
    /// TITLE extra (defaults to gmond's title for the metric).
    pub title: Option<String>,
}

fn neg_one() -> f64 {
    -1.0
}

/// gmond's default groups, plus the optional cpu_intr/cpu_sintr left out as gmond does.
pub const DEFAULT_GROUPS_TOML: &str = include_str!("../examples/default-groups.toml");

impl Default for AgentConfig {
    fn default() -> Self {
        #[derive(Deserialize)]
        struct G {
            collection_group: Vec<GroupConfig>,
        }
        let groups = toml::from_str::<G>(DEFAULT_GROUPS_TOML)
            .map(|g| g.collection_group)
            .unwrap_or_default();
        AgentConfig {
            send: Vec::new(),
            send_metadata_interval_secs: 60,
            override_hostname: None,
            override_ip: None,
            location: "unspecified".into(),
            tags: Vec::new(),
            cluster: None,
            gexec: false,
            collection_group: groups,
            script: Vec::new(),
            module: Vec::new(),
            key_file: None,
        }
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl AgentConfig {
    /// Parses and validates TOML.
    pub fn from_toml(text: &str) -> Result<AgentConfig, ConfigError> {
        let c: AgentConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Reads and validates a file.
    pub fn load(path: &std::path::Path) -> Result<AgentConfig, ConfigError> {
        let t = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        AgentConfig::from_toml(&t)
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, s) in self.send.iter().enumerate() {
            if s.host.is_empty() {
                return Err(invalid(format!("send[{i}].host"), "must not be empty"));
            }
            if s.port == 0 {
                return Err(invalid(format!("send[{i}].port"), "must not be 0"));
            }
            if !(1..=255).contains(&s.ttl) {
                return Err(invalid(
                    format!("send[{i}].ttl"),
                    "must be between 1 and 255",
                ));
            }
            if s.mcast_if.as_deref().is_some_and(str::is_empty) {
                return Err(invalid(
                    format!("send[{i}].mcast_if"),
                    "must name an interface",
                ));
            }
        }
        if self
            .key_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(invalid("key_file", "must name a key file"));
        }
        if self.override_ip.is_some() && self.override_hostname.is_none() {
            return Err(invalid("override_ip", "needs override_hostname"));
        }
        for (i, s) in self.script.iter().enumerate() {
            if s.argv.first().is_none_or(|p| p.is_empty()) {
                return Err(invalid(format!("script[{i}].argv"), "needs a program"));
            }
            if s.interval_secs == 0 {
                return Err(invalid(
                    format!("script[{i}].interval_secs"),
                    "must be at least 1",
                ));
            }
            if s.timeout_secs == 0 {
                return Err(invalid(
                    format!("script[{i}].timeout_secs"),
                    "must be at least 1",
                ));
            }
        }
        for (i, m) in self.module.iter().enumerate() {
            if m.name.is_empty() {
                return Err(invalid(format!("module[{i}].name"), "must not be empty"));
            }
            if m.path.as_os_str().is_empty() {
                return Err(invalid(
                    format!("module[{i}].path"),
                    "names the module's .py file",
                ));
            }
            if m.collect_every_secs == 0 || m.timeout_secs == 0 {
                return Err(invalid(
                    format!("module[{i}].collect_every_secs"),
                    "collect_every_secs and timeout_secs must be at least 1",
                ));
            }
        }
        for (i, g) in self.collection_group.iter().enumerate() {
            if !g.collect_once && g.collect_every_secs == 0 {
                return Err(invalid(
                    format!("collection_group[{i}].collect_every_secs"),
                    "must be at least 1",
                ));
            }
            if g.time_threshold_secs == 0 {
                return Err(invalid(
                    format!("collection_group[{i}].time_threshold_secs"),
                    "must be at least 1",
                ));
            }
            for (j, m) in g.metric.iter().enumerate() {
                if crate::metrics::find(&m.name).is_none() {
                    return Err(invalid(
                        format!("collection_group[{i}].metric[{j}].name"),
                        format!("unknown metric {:?} (see --list-metrics)", m.name),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_groups_are_gmonds() {
        let c = AgentConfig::default();
        assert_eq!(c.collection_group.len(), 11);
        c.validate().unwrap();
        let cpu = c
            .collection_group
            .iter()
            .find(|g| g.metric.iter().any(|m| m.name == "cpu_idle"))
            .unwrap();
        assert_eq!((cpu.collect_every_secs, cpu.time_threshold_secs), (20, 90));
        let idle = cpu.metric.iter().find(|m| m.name == "cpu_idle").unwrap();
        assert_eq!(idle.value_threshold, 5.0);
        assert!(c.collection_group[0].collect_once);
    }

    #[test]
    fn shipped_example_parses_and_errors_name_keys() {
        AgentConfig::from_toml(include_str!("../examples/agent.toml")).unwrap();
        let e = AgentConfig::from_toml(
            "[[collection_group]]\n[[collection_group.metric]]\nname = \"nope\"\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("collection_group[0].metric[0].name"),
            "{e}"
        );
        let e = AgentConfig::from_toml("bogus = 1").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}

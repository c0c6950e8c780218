//! Keys of the authenticated UDP transport: per `[[cluster]]` `auth` and
//! `key_files`, and the `[auth]` section's sender cap.

use super::{ClusterConfig, ConfigError, invalid};
use serde::Deserialize;

/// A cluster's policy for plain (unauthenticated) Ganglia XDR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No envelope checks at all: today's Ganglia behaviour (enveloped
    /// datagrams are not understood and count as unknown messages).
    #[default]
    Off,
    /// Authenticated datagrams are verified; plain XDR is accepted only from
    /// hosts (source address or host name) that never sent an authenticated
    /// one, so a keyed host cannot be downgraded.
    Optional,
    /// Every plain datagram is refused (counted `plain_refused`).
    Required,
}

impl AuthMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Off => "off",
            AuthMode::Optional => "optional",
            AuthMode::Required => "required",
        }
    }
}

/// The `[auth]` section: limits shared by every authenticated cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Senders (sender id streams) remembered per cluster. A new sender past
    /// it is refused (`too_many_senders`, logged once a minute); known ones
    /// keep working. About 1 KiB each.
    pub max_senders_per_cluster: usize,
    /// Subkey derivations (a new sender, a restart, a `ganglion-agent send`
    /// run: ≈ 1 µs each) per second per cluster. Beyond it such datagrams are
    /// refused (`session_limit`), so a flood of forgeries under a known key id
    /// costs bounded CPU while known senders, whose keys are cached, go on.
    pub max_new_sessions_per_sec: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            max_senders_per_cluster: 10_000,
            max_new_sessions_per_sec: 10_000,
        }
    }
}

impl AuthConfig {
    /// Checks `[auth]` and every cluster's `auth`/`key_files`.
    pub fn validate(&self, clusters: &[ClusterConfig]) -> Result<(), ConfigError> {
        if self.max_senders_per_cluster == 0 {
            return Err(invalid(
                "auth.max_senders_per_cluster",
                "must be at least 1",
            ));
        }
        if self.max_new_sessions_per_sec == 0 {
            return Err(invalid(
                "auth.max_new_sessions_per_sec",
                "must be at least 1",
            ));
        }
        for (i, c) in clusters.iter().enumerate() {
            if c.auth != AuthMode::Off && c.key_files.is_empty() {
                return Err(invalid(
                    format!("cluster[{i}].key_files"),
                    format!(
                        "auth = \"{}\" needs at least one key file (ganglion-agent keygen writes one)",
                        c.auth.as_str()
                    ),
                ));
            }
            for (j, f) in c.key_files.iter().enumerate() {
                if f.as_os_str().is_empty() {
                    return Err(invalid(
                        format!("cluster[{i}].key_files[{j}]"),
                        "must name a key file or a directory of *.key files",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn err(extra: &str) -> String {
        Config::from_toml(&format!(
            "[[cluster]]\nname = \"a\"\nudp_listen = \"127.0.0.1:0\"\nxml_listen = \"\"\n{extra}"
        ))
        .and_then(|c| c.validate().map(|()| c))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
    }

    #[test]
    fn auth_keys_are_validated_by_name() {
        assert_eq!(err(""), "");
        assert_eq!(err("auth = \"off\""), "");
        assert!(
            err("auth = \"required\"").contains("cluster[0].key_files"),
            "{}",
            err("auth = \"required\"")
        );
        assert!(err("auth = \"maybe\"").contains("maybe"));
        assert_eq!(err("auth = \"optional\"\nkey_files = [\"/k\"]"), "");
        assert!(
            err("[auth]\nmax_senders_per_cluster = 0").contains("auth.max_senders_per_cluster")
        );
    }
}

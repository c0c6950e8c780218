//! `[storage]` and `[rrdcached]`: the RRD writer's keys. They live under
//! `config` with the rest of the configuration, so `config` depends on no
//! service module (a tidy test checks it).

use serde::Deserialize;
use std::time::Duration;

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Write cached samples to the RRD files this often.
    pub flush_interval_secs: u32,
    /// At most this many file writes per second (0 = unlimited).
    pub max_file_writes_per_sec: u32,
    /// Samples waiting for the writer; beyond this, new batches are dropped and counted.
    pub queue_max_batches: usize,
    /// Keep a write-ahead journal for crash safety.
    pub journal: bool,
    /// Journal group-commit interval.
    pub journal_commit_interval_ms: u32,
    /// After a write fails because the disk is full or read-only, keep the
    /// file's samples for retry while they are at most this old (0 = drop
    /// them at once). Costs about 64 bytes per sample held.
    pub retry_window_secs: u32,
    /// Serve rrdcached's protocol for readers here (`unix:/path`, `/path` or
    /// `host:port`; none by default), so `rrdtool … --daemon` and
    /// ganglia-web's `rrdcached_socket` read files with every cached sample.
    pub daemon_listen: Vec<String>,
    /// Permissions of a unix `daemon_listen` socket (octal).
    pub daemon_socket_mode: String,
    /// Readers' per-file flush requests that may wait for the writer;
    /// beyond this a reader is answered "busy" at once (HTTP 503).
    pub control_queue_max: usize,
    /// At most one forced pass over every file (`POST /api/flush`,
    /// FLUSHALL) starts per this many seconds; callers beyond that join the
    /// next allowed pass. Unset: `flush_interval_secs / 10`. 0: no limit.
    pub min_forced_flush_interval_secs: Option<u32>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            // rrdcached's default write delay: 20 samples per file write at
            // gmetad's 15 s step. Readers flush what they read first.
            flush_interval_secs: 300,
            max_file_writes_per_sec: 0,
            queue_max_batches: 64,
            journal: true,
            journal_commit_interval_ms: 1000,
            // An hour of outage survives without a gap (240 samples a file at
            // gmetad's 15 s step).
            retry_window_secs: 3600,
            daemon_listen: Vec::new(),
            // Readers may read the tree anyway; the socket adds only "write
            // this file's cached samples now".
            daemon_socket_mode: "0666".into(),
            control_queue_max: 256,
            min_forced_flush_interval_secs: None,
        }
    }
}

impl StorageConfig {
    /// The shortest time between two forced passes.
    pub fn min_forced_flush_interval(&self) -> Duration {
        match self.min_forced_flush_interval_secs {
            Some(s) => Duration::from_secs(u64::from(s)),
            None => Duration::from_millis(u64::from(self.flush_interval_secs) * 100),
        }
    }

    /// Checks the keys this module adds; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.queue_max_batches == 0 {
            return Err(("storage.queue_max_batches", "must be at least 1"));
        }
        if self.control_queue_max == 0 {
            return Err(("storage.control_queue_max", "must be at least 1"));
        }
        if self.flush_interval_secs == 0 {
            return Err(("storage.flush_interval_secs", "must be at least 1"));
        }
        Ok(())
    }

    /// `daemon_socket_mode` as permission bits; `None` when it is not octal
    /// or has more than permission bits.
    pub fn daemon_socket_mode_bits(&self) -> Option<u32> {
        u32::from_str_radix(&self.daemon_socket_mode, 8)
            .ok()
            .filter(|m| *m <= 0o777)
    }
}

/// `[rrdcached]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RrdcachedConfig {
    /// `unix:/path` or `host:port`.
    pub address: String,
    /// Longest wait to connect, to send a request and for each reply line;
    /// past it the connection is dropped and made again.
    #[serde(default = "RrdcachedConfig::default_timeout_secs")]
    pub timeout_secs: u32,
    /// Longest wait between two attempts to reach a daemon that is down
    /// (the wait starts at 0.1 s and doubles).
    #[serde(default = "RrdcachedConfig::default_reconnect_max_secs")]
    pub reconnect_max_secs: u32,
}

impl RrdcachedConfig {
    fn default_timeout_secs() -> u32 {
        30
    }

    fn default_reconnect_max_secs() -> u32 {
        10
    }

    /// Checks the keys; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.address.is_empty() {
            return Err(("rrdcached.address", "must not be empty"));
        }
        if self.timeout_secs == 0 {
            return Err(("rrdcached.timeout_secs", "must be at least 1"));
        }
        if self.reconnect_max_secs == 0 {
            return Err(("rrdcached.reconnect_max_secs", "must be at least 1"));
        }
        Ok(())
    }

    /// The client's options.
    pub fn options(&self) -> ganglion_rrd::rrdcached::Options {
        ganglion_rrd::rrdcached::Options {
            timeout: Duration::from_secs(u64::from(self.timeout_secs)),
            max_backoff: Duration::from_secs(u64::from(self.reconnect_max_secs)),
        }
    }
}

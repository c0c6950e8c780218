//! Listen addresses as the configuration writes them: `IP:port` for TCP and
//! UDP, `unix:/path` (or an absolute path) for the rrdcached-protocol socket.
//! A leaf module: it depends on nothing else in the crate.

use std::path::Path;

/// The path of a unix-socket address (`unix:/path` or `/path`); `None` for
/// anything else (a TCP `IP:port`).
pub fn unix_path(address: &str) -> Option<&Path> {
    let p = address.strip_prefix("unix:").unwrap_or(address);
    p.starts_with('/').then(|| Path::new(p))
}

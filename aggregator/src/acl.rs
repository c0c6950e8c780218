//! Who may use the TCP services (gmetad's ports, the rrdcached-protocol
//! socket, `POST /api/flush`): `trusted_hosts` entries (addresses, CIDR
//! blocks, names resolved once at start) and IPv4-mapped IPv6 seen as IPv4.
//! A leaf module: it depends on nothing else in the crate.

use std::net::IpAddr;

/// IPv4-mapped IPv6 sources are shown as plain IPv4, as a dual-stack gmond would.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Every address a host name resolves to, as single-address blocks.
pub fn resolve_name(name: &str) -> Vec<Trusted> {
    use std::net::ToSocketAddrs;
    if name.is_empty() || name.contains('/') {
        return Vec::new();
    }
    (name, 0)
        .to_socket_addrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| Trusted::parse(&a.ip().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a TCP peer may use gmetad's ports (and the rrdcached-protocol
/// socket): loopback always, else `all_trusted` or a `trusted_hosts` entry.
pub fn trusts(trusted: &[Trusted], all_trusted: bool, ip: IpAddr) -> bool {
    let ip = canonical_ip(ip);
    all_trusted || ip.is_loopback() || trusted.iter().any(|t| t.contains(ip))
}

/// A `trusted_hosts` entry: an address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trusted {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Trusted {
    /// Parses `1.2.3.4`, `10.0.0.0/8`, `::1` or `fd00::/8`.
    pub fn parse(s: &str) -> Option<Trusted> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse().ok().filter(|&p| p <= max)?,
            None => max,
        };
        Some(Trusted { addr, prefix })
    }

    /// Whether `ip` is inside this block (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

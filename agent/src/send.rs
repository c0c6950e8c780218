//! Building gmond-identical messages and sending them to every destination.

use crate::keys::Sealer;
use crate::metrics::MetricDef;
use ganglion_proto::MetricMeta;
use ganglion_proto::model::{MetricType, extra};
use ganglion_proto::xdr::{self, Message, MetadataMsg, MetricId, Value, ValueMsg};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};

/// Who the messages are about.
#[derive(Debug, Clone)]
pub struct Identity {
    /// metric_id.host
    pub host: String,
    /// metric_id.spoof
    pub spoof: bool,
    /// CLUSTER extra, if any.
    pub cluster: Option<String>,
}

impl Identity {
    /// gmond's rules: the host name, or `"<ip or name>:<name>"` spoofed when
    /// `override_hostname` is set.
    pub fn new(
        override_hostname: Option<&str>,
        override_ip: Option<&str>,
        cluster: Option<String>,
    ) -> Identity {
        match override_hostname {
            Some(name) => Identity {
                host: format!("{}:{name}", override_ip.unwrap_or(name)),
                spoof: true,
                cluster,
            },
            None => Identity {
                host: hostname::get()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "localhost".into()),
                spoof: false,
                cluster,
            },
        }
    }

    fn id(&self, name: &str) -> MetricId {
        MetricId {
            host: self.host.clone(),
            name: name.to_string(),
            spoof: self.spoof,
        }
    }

    /// gmond's metadata for one of its own metrics: module tmax, dmax 0,
    /// extras TITLE, DESC, then GROUP (then our CLUSTER, if configured).
    pub fn metadata(&self, def: &MetricDef, title: &str) -> Message {
        let mut extras = vec![
            (extra::TITLE.to_string(), title.to_string()),
            (extra::DESC.to_string(), def.desc.to_string()),
            (extra::GROUP.to_string(), def.group.to_string()),
        ];
        if let Some(c) = &self.cluster {
            extras.push((extra::CLUSTER.to_string(), c.clone()));
        }
        Message::Metadata(MetadataMsg {
            id: self.id(def.name),
            meta: MetricMeta {
                type_name: def.metric_type.as_str().to_string(),
                name: def.name.to_string(),
                units: def.units.to_string(),
                slope: def.slope.to_wire(),
                tmax: def.tmax,
                dmax: 0,
                extra: extras,
            },
        })
    }

    /// The value message, with the metric's native type id and format.
    pub fn value(&self, def: &MetricDef, value: Value) -> Message {
        Message::Value(ValueMsg {
            id: self.id(def.name),
            fmt: def.fmt.to_string(),
            value: wire_value(def, value),
        })
    }
}

/// `value` as the metric's native wire type (which decides the message id).
pub fn wire_value(def: &MetricDef, value: Value) -> Value {
    match (def.metric_type, value) {
        (MetricType::Uint16, v) => Value::UShort(v.as_f64().unwrap_or(0.0) as u16),
        (MetricType::Uint32, Value::UInt(x)) => Value::UInt(x),
        (MetricType::Uint32, v) => Value::UInt(v.as_f64().unwrap_or(0.0) as u32),
        (MetricType::Float, v @ Value::Float(_)) => v,
        (MetricType::Float, v) => Value::Float(v.as_f64().unwrap_or(0.0) as f32),
        (MetricType::Double, v) => Value::Double(v.as_f64().unwrap_or(0.0)),
        (_, v) => v,
    }
}

/// Resolves `host:port` destinations (names, IPv4, IPv6).
pub fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    Ok((h, port).to_socket_addrs()?.collect())
}

/// One connected UDP socket per destination. Connected, like gmond's send
/// channels: the kernel skips the route lookup of every `sendto`, and only
/// the destination can send back to it (metadata requests).
pub struct Channels {
    socks: Vec<UdpSocket>,
    /// Destinations.
    pub dests: Vec<SocketAddr>,
    buf: Vec<u8>,
    /// Wraps each datagram in the authenticated envelope (`key_file`).
    sealer: Option<Sealer>,
    sealed: std::cell::RefCell<Vec<u8>>,
}

/// How datagrams to one destination go out when it is a multicast group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOpts {
    /// Multicast TTL / IPv6 hop limit (gmond's `ttl`, default 1).
    pub ttl: u32,
    /// Multicast interface by name (gmond's `mcast_if`).
    pub mcast_if: Option<String>,
    /// The authenticated stream datagrams to this destination go out in
    /// (every destination of one process shares one).
    pub sealer: Option<Sealer>,
}

impl Default for SendOpts {
    fn default() -> Self {
        SendOpts {
            ttl: 1,
            mcast_if: None,
            sealer: None,
        }
    }
}

/// Applies `opts` to a socket sending to the multicast group `dest`.
fn multicast(s: &UdpSocket, dest: &SocketAddr, opts: &SendOpts) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(s);
    match dest {
        SocketAddr::V4(_) => {
            s.set_multicast_ttl_v4(opts.ttl)?;
            s.set_multicast_loop_v4(true)?;
            if let Some(name) = &opts.mcast_if {
                sock.set_multicast_if_v4(&interface_v4(name)?)?;
            }
        }
        SocketAddr::V6(_) => {
            sock.set_multicast_hops_v6(opts.ttl)?;
            s.set_multicast_loop_v6(true)?;
            if let Some(name) = &opts.mcast_if {
                sock.set_multicast_if_v6(interface_index(name)?)?;
            }
        }
    }
    Ok(())
}

/// The kernel's index of interface `name`.
pub fn interface_index(name: &str) -> std::io::Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("interface {name:?}: {e}"),
        )
    })
}

/// The first IPv4 address of interface `name` (IP_MULTICAST_IF takes an address).
pub fn interface_v4(name: &str) -> std::io::Result<std::net::Ipv4Addr> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    for a in addrs {
        if a.interface_name != name {
            continue;
        }
        if let Some(v4) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            return Ok(v4.ip());
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("interface {name:?} has no IPv4 address"),
    ))
}

impl Channels {
    /// Opens and connects a socket per destination.
    pub fn open(dests: Vec<SocketAddr>) -> std::io::Result<Channels> {
        Channels::open_with(
            dests
                .into_iter()
                .map(|d| (d, SendOpts::default()))
                .collect(),
        )
    }

    /// Opens and connects a socket per destination, with each one's multicast
    /// options (ignored for unicast destinations).
    pub fn open_with(with_opts: Vec<(SocketAddr, SendOpts)>) -> std::io::Result<Channels> {
        let socks = with_opts
            .iter()
            .map(|(d, o)| {
                let s = UdpSocket::bind(if d.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
                if d.ip().is_multicast() {
                    multicast(&s, d, o)?;
                }
                s.connect(d)?;
                Ok(s)
            })
            .collect::<std::io::Result<_>>()?;
        let sealer = with_opts.iter().find_map(|(_, o)| o.sealer.clone());
        let dests = with_opts.into_iter().map(|(d, _)| d).collect();
        Ok(Channels {
            socks,
            dests,
            buf: Vec::with_capacity(xdr::MAX_MESSAGE_LEN),
            sealer,
            sealed: std::cell::RefCell::new(Vec::with_capacity(
                ganglion_proto::envelope::MAX_DATAGRAM,
            )),
        })
    }

    /// The sockets (metadata requests arrive on them).
    pub fn sockets(&self) -> impl Iterator<Item = &UdpSocket> {
        self.socks.iter()
    }

    /// Sends one message to every destination; returns how many sends failed.
    pub fn send(&mut self, msg: &Message) -> Result<usize, xdr::EncodeError> {
        xdr::encode_into(msg, &mut self.buf)?;
        Ok(self.send_encoded(&self.buf))
    }

    /// Sends an encoded message to every destination; returns how many sends
    /// failed.
    pub fn send_encoded(&self, bytes: &[u8]) -> usize {
        let Some(sealer) = &self.sealer else {
            // A refused send (nothing listening yet) is counted, not fatal.
            return self.socks.iter().filter(|s| s.send(bytes).is_err()).count();
        };
        let mut sealed = self.sealed.borrow_mut();
        if let Err(e) = sealer.seal(bytes, &mut sealed) {
            // Only a message over the envelope's 1428-byte payload.
            tracing::warn!(error = %e, len = bytes.len(), "cannot seal datagram; not sent");
            return self.socks.len();
        }
        self.socks
            .iter()
            .filter(|s| s.send(&sealed).is_err())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multicast_destination_gets_its_ttl_and_interface() {
        let group: SocketAddr = "239.255.77.1:8649".parse().unwrap();
        let unicast: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let ch = Channels::open_with(vec![
            (
                group,
                SendOpts {
                    ttl: 7,
                    mcast_if: Some("lo".into()),
                    sealer: None,
                },
            ),
            (unicast, SendOpts::default()),
        ])
        .unwrap();
        let socks: Vec<&UdpSocket> = ch.sockets().collect();
        assert_eq!(socks[0].multicast_ttl_v4().unwrap(), 7);
        assert_eq!(
            socket2::SockRef::from(socks[0]).multicast_if_v4().unwrap(),
            std::net::Ipv4Addr::LOCALHOST
        );
        assert_eq!(socks[0].peer_addr().unwrap(), group);
        // Unicast destinations are left as the kernel sets them.
        assert_eq!(socks[1].multicast_ttl_v4().unwrap(), 1);
    }

    #[test]
    fn an_unknown_interface_is_an_error_naming_it() {
        let e = Channels::open_with(vec![(
            "239.255.77.1:8649".parse().unwrap(),
            SendOpts {
                ttl: 1,
                mcast_if: Some("no-such-if0".into()),
                sealer: None,
            },
        )])
        .err()
        .expect("refused");
        assert!(e.to_string().contains("no-such-if0"), "{e}");
    }
}

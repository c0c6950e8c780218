//! Building gmond-identical messages and sending them to every destination.

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
}

impl Channels {
    /// Opens and connects a socket per destination.
    pub fn open(dests: Vec<SocketAddr>) -> std::io::Result<Channels> {
        let socks = dests
            .iter()
            .map(|d| {
                let s = UdpSocket::bind(if d.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
                s.connect(d)?;
                Ok(s)
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Channels {
            socks,
            dests,
            buf: Vec::with_capacity(xdr::MAX_MESSAGE_LEN),
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
        // A refused send (nothing listening yet) is counted, not fatal.
        self.socks.iter().filter(|s| s.send(bytes).is_err()).count()
    }
}

//! `ganglion-agent send`: gmetric 3.7.2's flags and behaviour, so scripts work
//! by changing the command name. Sends metadata then the value — always as a
//! string with `%s`, as gmetric does — to every destination, and fails (exit 1)
//! if any destination fails. The bytes equal real gmetric's for the same
//! arguments (tested against it).

use crate::send::{Channels, resolve};
use clap::Args;
use ganglion_proto::MetricMeta;
use ganglion_proto::model::{MetricType, Slope, extra};
use ganglion_proto::xdr::{Message, MetadataMsg, MetricId, Value, ValueMsg};
use std::net::SocketAddr;
use thiserror::Error;

/// gmetric's options.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// Name of the metric.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// Value of the metric.
    #[arg(short = 'v', long, allow_hyphen_values = true)]
    pub value: Option<String>,
    /// Either string|int8|uint8|int16|uint16|int32|uint32|float|double.
    #[arg(short = 't', long = "type")]
    pub metric_type: Option<String>,
    /// Unit of measure for the value.
    #[arg(short = 'u', long, default_value = "")]
    pub units: String,
    /// Either zero|positive|negative|both|derivative.
    #[arg(short = 's', long, default_value = "both")]
    pub slope: String,
    /// The maximum time in seconds between gmetric calls.
    #[arg(short = 'x', long, default_value_t = 60)]
    pub tmax: u32,
    /// The lifetime in seconds of this metric (0 = forever).
    #[arg(short = 'd', long, default_value_t = 0)]
    pub dmax: u32,
    /// Group(s) of the metric, separated by commas or spaces.
    #[arg(short = 'g', long)]
    pub group: Option<String>,
    /// Cluster of the metric (informational).
    #[arg(short = 'C', long)]
    pub cluster: Option<String>,
    /// Description of the metric.
    #[arg(short = 'D', long)]
    pub desc: Option<String>,
    /// Title of the metric.
    #[arg(short = 'T', long)]
    pub title: Option<String>,
    /// IP address and name of the host being spoofed: `IP:HOST`.
    #[arg(short = 'S', long)]
    pub spoof: Option<String>,
    /// Spoof a heartbeat message (use with -S).
    #[arg(short = 'H', long)]
    pub heartbeat: bool,
    /// Destination (repeatable); defaults to the agent config's [[send]].
    #[arg(long = "send-to", value_name = "HOST:PORT")]
    pub send_to: Vec<String>,
}

/// Why `send` failed (each message matches gmetric's).
#[derive(Debug, Error)]
pub enum GmetricError {
    /// Missing -n/-v/-t.
    #[error("Incorrect options supplied, exiting.")]
    Options,
    /// A `"` in name, value, type or units.
    #[error("one of your parameters has an invalid character '\"'. exiting.")]
    Quote,
    /// Unknown -t.
    #[error("the type parameter \"{0}\" is not a valid type. exiting.")]
    Type(String),
    /// Non-numeric value for a numeric type.
    #[error("the value parameter \"{0}\" does not represent a number. exiting.")]
    NotNumber(String),
    /// -S without `:`.
    #[error("Incorrect format for spoof argument. exiting.")]
    Spoof,
    /// No destination given.
    #[error("no destination: pass --send-to HOST:PORT or configure [[send]] in the agent config")]
    NoDestination,
    /// A destination could not be resolved.
    #[error("cannot resolve destination {0:?}")]
    Resolve(String),
    /// The metadata is larger than a Ganglia datagram.
    #[error("metric too large to send: {0}")]
    TooLarge(String),
    /// Sending failed.
    #[error("There was an error sending to {0} of the send channels.")]
    Send(usize),
}

/// strtod's idea of "a number": a leading numeric prefix is enough, as in gmetric.
fn strtod_ok(s: &str) -> bool {
    let t = s.trim_start();
    let b = t.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let lower = t[i..].to_ascii_lowercase();
    if lower.starts_with("inf") || lower.starts_with("nan") {
        return true;
    }
    if lower.starts_with("0x") && lower[2..].starts_with(|c: char| c.is_ascii_hexdigit()) {
        return true;
    }
    let digits_before = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    let after_dot = if b.get(i + digits_before) == Some(&b'.') {
        b[i + digits_before + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    } else {
        0
    };
    digits_before + after_dot > 0
}

/// Builds the two datagrams gmetric would send. `host` is the sender's host
/// name (used when not spoofing).
pub fn build(a: &SendArgs, host: &str) -> Result<[Message; 2], GmetricError> {
    let heartbeat = a.spoof.is_some() && a.heartbeat;
    let (name, value, type_name, units, slope, tmax, dmax) = if heartbeat {
        (
            "heartbeat".to_string(),
            "0".to_string(),
            "uint32".to_string(),
            String::new(),
            Slope::Zero,
            0,
            0,
        )
    } else {
        let (Some(n), Some(v), Some(t)) = (&a.name, &a.value, &a.metric_type) else {
            return Err(GmetricError::Options);
        };
        (
            n.clone(),
            v.clone(),
            t.clone(),
            a.units.clone(),
            Slope::parse(&a.slope),
            a.tmax,
            a.dmax,
        )
    };
    if [&name, &value, &type_name, &units]
        .iter()
        .any(|s| s.contains('"'))
    {
        return Err(GmetricError::Quote);
    }
    let Some(t) = MetricType::parse(&type_name).filter(|t| *t != MetricType::Timestamp) else {
        return Err(GmetricError::Type(type_name));
    };
    if t != MetricType::String && !strtod_ok(&value) {
        return Err(GmetricError::NotNumber(value));
    }
    if a.spoof.as_deref().is_some_and(|s| !s.contains(':')) {
        return Err(GmetricError::Spoof);
    }
    let mut extras: Vec<(String, String)> = Vec::new();
    if let Some(s) = &a.spoof {
        extras.push((extra::SPOOF_HOST.into(), s.clone()));
    }
    if a.heartbeat {
        extras.push((extra::SPOOF_HEARTBEAT.into(), "yes".into()));
    }
    if let Some(c) = &a.cluster {
        extras.push((extra::CLUSTER.into(), c.clone()));
    }
    if let Some(g) = &a.group {
        for part in g.split([',', ' ']).filter(|p| !p.is_empty()) {
            extras.push((extra::GROUP.into(), part.to_string()));
        }
    }
    if let Some(d) = &a.desc {
        extras.push((extra::DESC.into(), d.clone()));
    }
    if let Some(t) = &a.title {
        extras.push((extra::TITLE.into(), t.clone()));
    }
    let id = match &a.spoof {
        Some(s) => MetricId {
            host: s.clone(),
            name: name.clone(),
            spoof: true,
        },
        None => MetricId {
            host: host.to_string(),
            name: name.clone(),
            spoof: false,
        },
    };
    Ok([
        Message::Metadata(MetadataMsg {
            id: id.clone(),
            meta: MetricMeta {
                type_name: t.as_str().to_string(),
                name,
                units,
                slope: slope.to_wire(),
                tmax,
                dmax,
                extra: extras,
            },
        }),
        Message::Value(ValueMsg {
            id,
            fmt: "%s".into(),
            value: Value::Str(value),
        }),
    ])
}

/// Parses `HOST:PORT` (`[v6]:port` for IPv6).
pub fn parse_dest(s: &str) -> Result<Vec<SocketAddr>, GmetricError> {
    let (h, p) = s
        .rsplit_once(':')
        .ok_or_else(|| GmetricError::Resolve(s.into()))?;
    let port: u16 = p.parse().map_err(|_| GmetricError::Resolve(s.into()))?;
    resolve(h, port).map_err(|_| GmetricError::Resolve(s.into()))
}

/// Sends to every destination.
pub fn send(a: &SendArgs, dests: Vec<SocketAddr>, host: &str) -> Result<(), GmetricError> {
    send_sealed(a, dests, host, None)
}

/// [`send`], in the authenticated envelope when `sealer` is given (a
/// one-shot stream, [`crate::keys::Sealer::oneshot`]).
pub fn send_sealed(
    a: &SendArgs,
    dests: Vec<SocketAddr>,
    host: &str,
    sealer: Option<crate::keys::Sealer>,
) -> Result<(), GmetricError> {
    let msgs = build(a, host)?;
    if dests.is_empty() {
        return Err(GmetricError::NoDestination);
    }
    let opts = crate::send::SendOpts {
        sealer,
        ..Default::default()
    };
    let mut ch = Channels::open_with(dests.into_iter().map(|d| (d, opts.clone())).collect())
        .map_err(|_| GmetricError::Send(1))?;
    let mut failed = 0;
    for m in &msgs {
        failed += ch
            .send(m)
            .map_err(|e| GmetricError::TooLarge(e.to_string()))?;
    }
    if failed > 0 {
        return Err(GmetricError::Send(failed.div_ceil(2)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: SendArgs,
    }

    fn args(v: &[&str]) -> SendArgs {
        T::parse_from(std::iter::once("send").chain(v.iter().copied())).a
    }

    #[test]
    fn gmetric_validation() {
        assert!(matches!(
            build(&args(&["-n", "x", "-v", "1"]), "h"),
            Err(GmetricError::Options)
        ));
        assert!(matches!(
            build(&args(&["-n", "a\"b", "-v", "1", "-t", "int32"]), "h"),
            Err(GmetricError::Quote)
        ));
        assert!(matches!(
            build(&args(&["-n", "a", "-v", "1", "-t", "int64"]), "h"),
            Err(GmetricError::Type(_))
        ));
        assert!(matches!(
            build(&args(&["-n", "a", "-v", "abc", "-t", "float"]), "h"),
            Err(GmetricError::NotNumber(_))
        ));
        assert!(
            build(&args(&["-n", "a", "-v", "12abc", "-t", "float"]), "h").is_ok(),
            "strtod prefix"
        );
        assert!(build(&args(&["-n", "a", "-v", "-3", "-t", "int32"]), "h").is_ok());
        assert!(matches!(
            build(
                &args(&["-n", "a", "-v", "1", "-t", "int32", "-S", "x"]),
                "h"
            ),
            Err(GmetricError::Spoof)
        ));
        let [Message::Metadata(m), _] = build(&args(&["-S", "1.2.3.4:n", "-H"]), "h").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (m.id.name.as_str(), m.meta.tmax, m.id.spoof),
            ("heartbeat", 0, true)
        );
        let [Message::Metadata(m), _] = build(
            &args(&[
                "-n", "a", "-v", "1", "-t", "int32", "-g", "x, y", "-s", "bogus",
            ]),
            "h",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(m.meta.extra.len(), 2);
        assert_eq!(m.meta.slope(), Slope::Unspecified);
    }
}

//! The Ganglia ≥ 3.1 XDR codec (`lib/gm_protocol.x`): one message per datagram.
//!
//! Decoding never panics and never allocates more than the datagram could hold:
//! every length and count read from the wire is checked against the bytes that
//! remain before anything is allocated. Text fields are raw bytes on the wire;
//! valid UTF-8 decodes as such (so encode reproduces it byte for byte), anything
//! else is read as ISO-8859-1, which is how Ganglia itself treats text.

use crate::model::MetricMeta;
use std::fmt;
use thiserror::Error;

/// Largest message a Ganglia sender may encode (1500 − IP − UDP headers − 8).
pub const MAX_MESSAGE_LEN: usize = 1464;
/// gmond's receive buffer (`max_udp_msg_len`); longer datagrams are cut short.
pub const MAX_RECV_LEN: usize = 1472;

/// Message ids (`Ganglia_msg_formats`).
pub mod id {
    /// `gmetadata_full`
    pub const METADATA: u32 = 128;
    /// `gmetric_ushort`
    pub const USHORT: u32 = 129;
    /// `gmetric_short`
    pub const SHORT: u32 = 130;
    /// `gmetric_int`
    pub const INT: u32 = 131;
    /// `gmetric_uint`
    pub const UINT: u32 = 132;
    /// `gmetric_string`
    pub const STRING: u32 = 133;
    /// `gmetric_float`
    pub const FLOAT: u32 = 134;
    /// `gmetric_double`
    pub const DOUBLE: u32 = 135;
    /// `gmetadata_request`
    pub const METADATA_REQUEST: u32 = 136;
}

/// `Ganglia_metric_id`: who and what a message is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MetricId {
    /// Sender's host string; a receiver ignores it unless `spoof` is set,
    /// in which case it reads `"IP:hostname"`.
    pub host: String,
    /// Metric name.
    pub name: String,
    /// Whether `host` is authoritative.
    pub spoof: bool,
}

impl MetricId {
    /// Splits a spoofed host string into `(ip, name)` the way gmond does: at the
    /// first `:` searched from the second character. `None` when there is no
    /// such `:` or the name part is empty (gmond drops such messages).
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "`idx` is the position of a `:` in `h`, so `idx + 1 <= h.len()`"
    )]
    pub fn spoof_parts(&self) -> Option<(&str, &str)> {
        let h = &self.host;
        let idx = h.char_indices().skip(1).find(|&(_, c)| c == ':')?.0;
        let (ip, name) = (&h[..idx], &h[idx + 1..]);
        (!name.is_empty()).then_some((ip, name))
    }
}

/// A typed value as carried by messages 129–135.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// 129: sent as 4 bytes, value in the low 16 bits.
    UShort(u16),
    /// 130: sent as a 4-byte signed int.
    Short(i16),
    /// 131
    Int(i32),
    /// 132
    UInt(u32),
    /// 133
    Str(String),
    /// 134: IEEE single.
    Float(f32),
    /// 135: IEEE double.
    Double(f64),
}

impl Value {
    /// The message id that carries this value.
    pub fn message_id(&self) -> u32 {
        match self {
            Value::UShort(_) => id::USHORT,
            Value::Short(_) => id::SHORT,
            Value::Int(_) => id::INT,
            Value::UInt(_) => id::UINT,
            Value::Str(_) => id::STRING,
            Value::Float(_) => id::FLOAT,
            Value::Double(_) => id::DOUBLE,
        }
    }

    /// The value as a number, when it is one (a string must parse whole, after
    /// trimming whitespace).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::UShort(v) => Some(f64::from(*v)),
            Value::Short(v) => Some(f64::from(*v)),
            Value::Int(v) => Some(f64::from(*v)),
            Value::UInt(v) => Some(f64::from(*v)),
            Value::Float(v) => Some(f64::from(*v)),
            Value::Double(v) => Some(*v),
            Value::Str(s) => s.trim().parse().ok(),
        }
    }
}

/// A value message (129–135).
#[derive(Debug, Clone, PartialEq)]
pub struct ValueMsg {
    /// Who and what.
    pub id: MetricId,
    /// printf-style format the sender suggests for display (see [`crate::format`]).
    pub fmt: String,
    /// The value.
    pub value: Value,
}

/// A metadata message (128).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataMsg {
    /// Who and what.
    pub id: MetricId,
    /// The description of the metric.
    pub meta: MetricMeta,
}

/// One decoded datagram.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// 128 `gmetadata_full`
    Metadata(MetadataMsg),
    /// 129–135
    Value(ValueMsg),
    /// 136 `gmetadata_request`
    MetadataRequest(MetricId),
}

impl Message {
    /// The message id (first four bytes on the wire).
    pub fn message_id(&self) -> u32 {
        match self {
            Message::Metadata(_) => id::METADATA,
            Message::Value(v) => v.value.message_id(),
            Message::MetadataRequest(_) => id::METADATA_REQUEST,
        }
    }

    /// The metric id of any message.
    pub fn metric_id(&self) -> &MetricId {
        match self {
            Message::Metadata(m) => &m.id,
            Message::Value(v) => &v.id,
            Message::MetadataRequest(id) => id,
        }
    }
}

/// Which field a decode error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The 4-byte message id.
    MessageId,
    /// `metric_id.host`
    Host,
    /// `metric_id.name`
    Name,
    /// `metric_id.spoof`
    Spoof,
    /// value `fmt`
    Format,
    /// the value itself
    Value,
    /// metadata `type`
    Type,
    /// metadata `name`
    MetaName,
    /// metadata `units`
    Units,
    /// metadata `slope`
    Slope,
    /// metadata `tmax`
    Tmax,
    /// metadata `dmax`
    Dmax,
    /// extra-data count
    ExtraCount,
    /// an extra-data key
    ExtraName,
    /// an extra-data value
    ExtraValue,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Field::MessageId => "message id",
            Field::Host => "metric_id.host",
            Field::Name => "metric_id.name",
            Field::Spoof => "metric_id.spoof",
            Field::Format => "fmt",
            Field::Value => "value",
            Field::Type => "metadata type",
            Field::MetaName => "metadata name",
            Field::Units => "metadata units",
            Field::Slope => "metadata slope",
            Field::Tmax => "metadata tmax",
            Field::Dmax => "metadata dmax",
            Field::ExtraCount => "extra_data count",
            Field::ExtraName => "extra_data name",
            Field::ExtraValue => "extra_data value",
        };
        f.write_str(s)
    }
}

/// Why a datagram could not be decoded; `offset` is where in the datagram.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The datagram ends inside a field.
    #[error("truncated at offset {offset}: {field} needs {needed} bytes, {available} left")]
    Truncated {
        /// Field being read.
        field: Field,
        /// Offset of the field.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the datagram.
        available: usize,
    },
    /// A message id Ganglia ≥ 3.1 does not define (gmond ignores these).
    #[error("unknown message id {id} at offset 0")]
    UnknownMessage {
        /// The id read.
        id: u32,
    },
    /// The extra-data count cannot fit in what remains.
    #[error("extra_data count {count} at offset {offset} exceeds the {available} bytes left")]
    TooManyExtras {
        /// Offset of the count.
        offset: usize,
        /// Count read.
        count: u32,
        /// Bytes left.
        available: usize,
    },
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// Larger than [`MAX_MESSAGE_LEN`]; Ganglia senders cannot send it either.
    #[error("message is {len} bytes, over the {max}-byte Ganglia limit")]
    TooLong {
        /// Encoded size.
        len: usize,
        /// Limit.
        max: usize,
    },
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, field: Field) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated {
                field,
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        let end = self.pos.saturating_add(n);
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated {
            field,
            offset: self.pos,
            needed: n,
            available: self.remaining(),
        })?;
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self, field: Field) -> Result<u32, DecodeError> {
        let b = self.take(4, field)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_be_bytes(a))
    }

    fn u64(&mut self, field: Field) -> Result<u64, DecodeError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn bool(&mut self, field: Field) -> Result<bool, DecodeError> {
        // glibc's xdr_bool reads any nonzero word as TRUE; gmond therefore does too.
        Ok(self.u32(field)? != 0)
    }

    fn string(&mut self, field: Field) -> Result<String, DecodeError> {
        let offset = self.pos;
        let len = self.u32(field)? as usize;
        let padded = len.checked_add(3).map(|l| l & !3).unwrap_or(usize::MAX);
        if padded > self.remaining() {
            // Checked before any allocation: a hostile length cannot make us
            // reserve more than the datagram holds.
            return Err(DecodeError::Truncated {
                field,
                offset,
                needed: padded.saturating_add(4),
                available: self.remaining().saturating_add(4),
            });
        }
        let bytes = self.take(padded, field)?;
        Ok(text_from_wire(bytes.get(..len).unwrap_or(bytes)))
    }
}

/// Text bytes → `String`: UTF-8 when valid, else ISO-8859-1 (lossless either way).
pub fn text_from_wire(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => b.iter().map(|&c| char::from(c)).collect(),
    }
}

/// Decodes one datagram. Trailing bytes after a complete message are ignored, as
/// gmond's XDR decoder does; nonzero padding bytes are tolerated likewise.
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let msg_id = r.u32(Field::MessageId)?;
    if !(id::METADATA..=id::METADATA_REQUEST).contains(&msg_id) {
        return Err(DecodeError::UnknownMessage { id: msg_id });
    }
    let metric_id = MetricId {
        host: r.string(Field::Host)?,
        name: r.string(Field::Name)?,
        spoof: r.bool(Field::Spoof)?,
    };
    match msg_id {
        id::METADATA => {
            let type_name = r.string(Field::Type)?;
            let name = r.string(Field::MetaName)?;
            let units = r.string(Field::Units)?;
            let slope = r.u32(Field::Slope)?;
            let tmax = r.u32(Field::Tmax)?;
            let dmax = r.u32(Field::Dmax)?;
            let count_offset = r.pos;
            let count = r.u32(Field::ExtraCount)?;
            // Each pair is at least two empty strings (8 bytes).
            if (count as usize).saturating_mul(8) > r.remaining() {
                return Err(DecodeError::TooManyExtras {
                    offset: count_offset,
                    count,
                    available: r.remaining(),
                });
            }
            let mut extra = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let k = r.string(Field::ExtraName)?;
                let v = r.string(Field::ExtraValue)?;
                extra.push((k, v));
            }
            Ok(Message::Metadata(MetadataMsg {
                id: metric_id,
                meta: MetricMeta {
                    type_name,
                    name,
                    units,
                    slope,
                    tmax,
                    dmax,
                    extra,
                },
            }))
        }
        id::METADATA_REQUEST => Ok(Message::MetadataRequest(metric_id)),
        _ => {
            let fmt = r.string(Field::Format)?;
            let value = match msg_id {
                // XDR's u_short/short travel as 4-byte ints; like glibc's
                // xdr_u_short we keep the low 16 bits.
                id::USHORT => Value::UShort(r.u32(Field::Value)? as u16),
                id::SHORT => Value::Short(r.u32(Field::Value)? as i32 as i16),
                id::INT => Value::Int(r.u32(Field::Value)? as i32),
                id::UINT => Value::UInt(r.u32(Field::Value)?),
                id::STRING => Value::Str(r.string(Field::Value)?),
                id::FLOAT => Value::Float(f32::from_bits(r.u32(Field::Value)?)),
                _ => Value::Double(f64::from_bits(r.u64(Field::Value)?)),
            };
            Ok(Message::Value(ValueMsg {
                id: metric_id,
                fmt,
                value,
            }))
        }
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "`pad` is below 4, the length of the zeros it slices"
)]
fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
    let pad = (4 - b.len() % 4) % 4;
    out.extend_from_slice(&[0u8; 3][..pad]);
}

#[allow(
    clippy::arithmetic_side_effects,
    reason = "the length of a string held in memory, rounded up to 4"
)]
fn str_len(s: &str) -> usize {
    4 + s.len().div_ceil(4) * 4
}

/// Exact encoded size of a message.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "a sum of the lengths of strings held in memory cannot reach usize::MAX"
)]
pub fn encoded_len(msg: &Message) -> usize {
    let id = msg.metric_id();
    let head = 4 + str_len(&id.host) + str_len(&id.name) + 4;
    head + match msg {
        Message::MetadataRequest(_) => 0,
        Message::Metadata(m) => {
            let meta = &m.meta;
            str_len(&meta.type_name)
                + str_len(&meta.name)
                + str_len(&meta.units)
                + 16
                + meta
                    .extra
                    .iter()
                    .map(|(k, v)| str_len(k) + str_len(v))
                    .sum::<usize>()
        }
        Message::Value(v) => {
            str_len(&v.fmt)
                + match &v.value {
                    Value::Str(s) => str_len(s),
                    Value::Double(_) => 8,
                    _ => 4,
                }
        }
    }
}

/// Appends the XDR encoding of `msg` to `out`, whatever its size.
pub fn encode_unchecked(msg: &Message, out: &mut Vec<u8>) {
    out.reserve(encoded_len(msg));
    put_u32(out, msg.message_id());
    let id = msg.metric_id();
    put_str(out, &id.host);
    put_str(out, &id.name);
    put_u32(out, u32::from(id.spoof));
    match msg {
        Message::MetadataRequest(_) => {}
        Message::Metadata(m) => {
            let meta = &m.meta;
            put_str(out, &meta.type_name);
            put_str(out, &meta.name);
            put_str(out, &meta.units);
            put_u32(out, meta.slope);
            put_u32(out, meta.tmax);
            put_u32(out, meta.dmax);
            put_u32(out, meta.extra.len() as u32);
            for (k, v) in &meta.extra {
                put_str(out, k);
                put_str(out, v);
            }
        }
        Message::Value(v) => {
            put_str(out, &v.fmt);
            match &v.value {
                Value::UShort(x) => put_u32(out, u32::from(*x)),
                Value::Short(x) => put_u32(out, i32::from(*x) as u32),
                Value::Int(x) => put_u32(out, *x as u32),
                Value::UInt(x) => put_u32(out, *x),
                Value::Str(s) => put_str(out, s),
                Value::Float(x) => put_u32(out, x.to_bits()),
                Value::Double(x) => out.extend_from_slice(&x.to_bits().to_be_bytes()),
            }
        }
    }
}

/// Encodes `msg` into `out` (cleared first), refusing messages over
/// [`MAX_MESSAGE_LEN`] exactly as libganglia's fixed buffer does.
pub fn encode_into(msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let len = encoded_len(msg);
    if len > MAX_MESSAGE_LEN {
        return Err(EncodeError::TooLong {
            len,
            max: MAX_MESSAGE_LEN,
        });
    }
    out.clear();
    encode_unchecked(msg, out);
    Ok(())
}

/// Encodes `msg` into a new buffer (see [`encode_into`]).
pub fn encode(msg: &Message) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(msg, &mut out)?;
    Ok(out)
}

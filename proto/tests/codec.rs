//! Table tests (value ↔ bytes), error offsets, limits and property tests for the
//! XDR codec.

use ganglion_proto::model::MetricMeta;
use ganglion_proto::xdr::{
    self, DecodeError, EncodeError, Field, MAX_MESSAGE_LEN, Message, MetadataMsg, MetricId, Value,
    ValueMsg,
};
use proptest::prelude::*;

fn value_msg(value: Value) -> Message {
    Message::Value(ValueMsg {
        id: MetricId {
            host: "h".into(),
            name: "m".into(),
            spoof: false,
        },
        fmt: "%d".into(),
        value,
    })
}

/// Bytes of the common prefix for id, host "h", name "m", spoof 0, fmt "%d".
fn prefix(id: u8) -> Vec<u8> {
    let mut v = vec![0, 0, 0, id];
    v.extend_from_slice(&[0, 0, 0, 1, b'h', 0, 0, 0]);
    v.extend_from_slice(&[0, 0, 0, 1, b'm', 0, 0, 0]);
    v.extend_from_slice(&[0, 0, 0, 0]);
    v.extend_from_slice(&[0, 0, 0, 2, b'%', b'd', 0, 0]);
    v
}

#[test]
fn value_table() {
    let cases: Vec<(Value, u8, Vec<u8>)> = vec![
        (Value::UShort(0xBEEF), 0x81, vec![0, 0, 0xBE, 0xEF]),
        (Value::Short(-2), 0x82, vec![0xFF, 0xFF, 0xFF, 0xFE]),
        (Value::Int(-1), 0x83, vec![0xFF; 4]),
        (Value::UInt(0xDEADBEEF), 0x84, vec![0xDE, 0xAD, 0xBE, 0xEF]),
        (
            Value::Str("abcde".into()),
            0x85,
            vec![0, 0, 0, 5, b'a', b'b', b'c', b'd', b'e', 0, 0, 0],
        ),
        (Value::Str(String::new()), 0x85, vec![0, 0, 0, 0]),
        (Value::Float(1.0), 0x86, vec![0x3F, 0x80, 0, 0]),
        (Value::Double(-2.0), 0x87, vec![0xC0, 0, 0, 0, 0, 0, 0, 0]),
    ];
    for (value, id, tail) in cases {
        let mut want = prefix(id);
        want.extend_from_slice(&tail);
        let msg = value_msg(value.clone());
        assert_eq!(xdr::encode(&msg).unwrap(), want, "{value:?}");
        assert_eq!(xdr::decode(&want).unwrap(), msg, "{value:?}");
    }
}

#[test]
fn short_values_use_low_16_bits_like_glibc() {
    let mut b = prefix(0x81);
    b.extend_from_slice(&[0x12, 0x34, 0x00, 0x07]);
    assert!(matches!(
        xdr::decode(&b),
        Ok(Message::Value(ValueMsg {
            value: Value::UShort(7),
            ..
        }))
    ));
}

#[test]
fn errors_name_field_and_offset() {
    assert_eq!(
        xdr::decode(&[0, 0]),
        Err(DecodeError::Truncated {
            field: Field::MessageId,
            offset: 0,
            needed: 4,
            available: 2
        })
    );
    assert_eq!(
        xdr::decode(&[0, 0, 0, 5]),
        Err(DecodeError::UnknownMessage { id: 5 })
    );
    // A host length far larger than the datagram: refused before allocating.
    let b = [0, 0, 0, 0x85, 0xFF, 0xFF, 0xFF, 0xF0, 1, 2, 3, 4];
    match xdr::decode(&b) {
        Err(DecodeError::Truncated {
            field: Field::Host,
            offset: 4,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // The value is cut short.
    let mut b = prefix(0x87);
    b.extend_from_slice(&[1, 2, 3]);
    match xdr::decode(&b) {
        Err(DecodeError::Truncated {
            field: Field::Value,
            offset,
            needed: 8,
            available: 3,
        }) => {
            assert_eq!(offset, prefix(0x87).len())
        }
        other => panic!("{other:?}"),
    }
    let e = xdr::decode(&b).unwrap_err().to_string();
    assert!(e.contains("offset") && e.contains("value"), "{e}");
}

#[test]
fn hostile_extra_count_is_refused_before_allocating() {
    let meta = Message::Metadata(MetadataMsg {
        id: MetricId::default(),
        meta: MetricMeta::default(),
    });
    let mut b = xdr::encode(&meta).unwrap();
    let n = b.len();
    b[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        xdr::decode(&b),
        Err(DecodeError::TooManyExtras {
            count: u32::MAX,
            ..
        })
    ));
}

#[test]
fn trailing_bytes_are_ignored_like_gmond() {
    let msg = value_msg(Value::Int(3));
    let mut b = xdr::encode(&msg).unwrap();
    b.extend_from_slice(&[9, 9, 9]);
    assert_eq!(xdr::decode(&b).unwrap(), msg);
}

#[test]
fn send_limit_is_1464_bytes() {
    let make = |desc_len: usize| {
        Message::Metadata(MetadataMsg {
            id: MetricId {
                host: "vm".into(),
                name: "x".into(),
                spoof: false,
            },
            meta: MetricMeta {
                type_name: "float".into(),
                name: "x".into(),
                extra: vec![("DESC".into(), "d".repeat(desc_len))],
                ..MetricMeta::default()
            },
        })
    };
    let base = xdr::encoded_len(&make(0));
    let fits = make(MAX_MESSAGE_LEN - base);
    assert_eq!(xdr::encode(&fits).unwrap().len(), MAX_MESSAGE_LEN);
    let over = make(MAX_MESSAGE_LEN - base + 1);
    assert!(matches!(
        xdr::encode(&over),
        Err(EncodeError::TooLong { max: 1464, .. })
    ));
}

#[test]
fn latin1_text_is_kept() {
    // Not UTF-8: read as ISO-8859-1, as Ganglia treats text.
    let b = vec![
        0, 0, 0, 0x88, 0, 0, 0, 1, 0xE9, 0, 0, 0, 0, 0, 0, 1, b'm', 0, 0, 0, 0, 0, 0, 0,
    ];
    let Message::MetadataRequest(id) = xdr::decode(&b).unwrap() else {
        panic!()
    };
    assert_eq!(id.host, "é");
}

#[test]
fn spoof_parts_follow_gmond() {
    let id = |h: &str| MetricId {
        host: h.into(),
        name: "m".into(),
        spoof: true,
    };
    assert_eq!(
        id("10.0.0.5:node5").spoof_parts(),
        Some(("10.0.0.5", "node5"))
    );
    assert_eq!(id("::1:v6host").spoof_parts(), Some((":", "1:v6host")));
    assert_eq!(id("nocolon").spoof_parts(), None);
    assert_eq!(id("1.2.3.4:").spoof_parts(), None);
    assert_eq!(id(":x").spoof_parts(), None);
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,24}",
        "[a-z_]{0,12}",
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(|b| xdr::text_from_wire(&b))
    ]
}

fn arb_id() -> impl Strategy<Value = MetricId> {
    (arb_text(), arb_text(), any::<bool>()).prop_map(|(host, name, spoof)| MetricId {
        host,
        name,
        spoof,
    })
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u16>().prop_map(Value::UShort),
        any::<i16>().prop_map(Value::Short),
        any::<i32>().prop_map(Value::Int),
        any::<u32>().prop_map(Value::UInt),
        arb_text().prop_map(Value::Str),
        any::<f32>().prop_map(Value::Float),
        any::<f64>().prop_map(Value::Double),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (arb_id(), arb_text(), arb_value()).prop_map(|(id, fmt, value)| Message::Value(ValueMsg {
            id,
            fmt,
            value
        })),
        arb_id().prop_map(Message::MetadataRequest),
        (
            arb_id(),
            (arb_text(), arb_text(), arb_text()),
            (any::<u32>(), any::<u32>(), any::<u32>()),
            proptest::collection::vec((arb_text(), arb_text()), 0..6)
        )
            .prop_map(
                |(id, (type_name, name, units), (slope, tmax, dmax), extra)| {
                    Message::Metadata(MetadataMsg {
                        id,
                        meta: MetricMeta {
                            type_name,
                            name,
                            units,
                            slope,
                            tmax,
                            dmax,
                            extra,
                        },
                    })
                }
            ),
    ]
}

proptest! {
    #[test]
    fn encode_decode_roundtrip(msg in arb_message()) {
        let mut buf = Vec::new();
        xdr::encode_unchecked(&msg, &mut buf);
        prop_assert_eq!(buf.len(), xdr::encoded_len(&msg));
        prop_assert_eq!(buf.len() % 4, 0);
        let back = xdr::decode(&buf).unwrap();
        // Compare by re-encoding so NaN payloads compare bit for bit.
        let mut again = Vec::new();
        xdr::encode_unchecked(&back, &mut again);
        prop_assert_eq!(again, buf);
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = xdr::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_valid_prefixes(msg in arb_message(), cut in 0usize..200) {
        let mut buf = Vec::new();
        xdr::encode_unchecked(&msg, &mut buf);
        let cut = cut.min(buf.len());
        if cut < buf.len() {
            prop_assert!(xdr::decode(&buf[..cut]).is_err());
        }
    }
}

//! Golden datagrams captured from the real Debian gmetric and gmond 3.7.2
//! (`data/packets/recapture.py`): every one decodes, re-encodes to the identical
//! bytes, and our encoder builds the same bytes from the same arguments.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "tests read fixtures and run xmllint; proto/clippy.toml is about the library"
)]

use ganglion_proto::format::render;
use ganglion_proto::model::{MetricMeta, Slope};
use ganglion_proto::xdr::{self, Message, MetadataMsg, MetricId, Value, ValueMsg};
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/packets")
}

fn packet(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn decode(name: &str) -> Message {
    xdr::decode(&packet(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The sender's host string as gmetric put it on the wire (its gethostname()).
fn sender_host() -> String {
    decode("gmetric_float_meta.bin").metric_id().host.clone()
}

fn id(host: &str, name: &str, spoof: bool) -> MetricId {
    MetricId {
        host: host.into(),
        name: name.into(),
        spoof,
    }
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn gmetric_meta(
    mid: MetricId,
    type_name: &str,
    units: &str,
    slope: Slope,
    tmax: u32,
    dmax: u32,
    extra: &[(&str, &str)],
) -> Message {
    Message::Metadata(MetadataMsg {
        meta: MetricMeta {
            type_name: type_name.into(),
            name: mid.name.clone(),
            units: units.into(),
            slope: slope.to_wire(),
            tmax,
            dmax,
            extra: pairs(extra),
        },
        id: mid,
    })
}

fn gmetric_value(mid: MetricId, v: &str) -> Message {
    // gmetric always sends the value as a string with fmt "%s" (reference §1.6).
    Message::Value(ValueMsg {
        id: mid,
        fmt: "%s".into(),
        value: Value::Str(v.into()),
    })
}

#[test]
fn every_golden_packet_roundtrips_byte_for_byte() {
    let mut n = 0;
    for entry in std::fs::read_dir(data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("bin") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let msg = xdr::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(xdr::encoded_len(&msg), bytes.len(), "{}", path.display());
        let again = xdr::encode(&msg).unwrap();
        assert_eq!(again, bytes, "{} re-encodes differently", path.display());
        n += 1;
    }
    assert!(n >= 30, "expected the full golden set, found {n} packets");
}

#[test]
fn manifest_lists_every_packet() {
    let manifest = std::fs::read_to_string(data_dir().join("manifest.json")).unwrap();
    for entry in std::fs::read_dir(data_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".bin") {
            assert!(
                manifest.contains(&format!("\"{name}\"")),
                "{name} not in manifest"
            );
        }
    }
}

#[test]
fn gmetric_float_example_matches_reference_bytes() {
    // The worked example of the reference, §1.7–1.8.
    let host = sender_host();
    let mid = id(&host, "temp_c", false);
    let meta = gmetric_meta(
        mid.clone(),
        "float",
        "Celsius",
        Slope::Both,
        60,
        0,
        &[
            ("GROUP", "env"),
            ("DESC", "Room temp"),
            ("TITLE", "Temperature"),
        ],
    );
    assert_eq!(
        xdr::encode(&meta).unwrap(),
        packet("gmetric_float_meta.bin")
    );
    let value = gmetric_value(mid, "42.5");
    assert_eq!(
        xdr::encode(&value).unwrap(),
        packet("gmetric_float_value.bin")
    );
}

#[test]
fn gmetric_each_type_matches() {
    let host = sender_host();
    for (t, v) in [
        ("int8", "-8"),
        ("uint8", "200"),
        ("int16", "-300"),
        ("uint16", "60000"),
        ("int32", "-70000"),
        ("uint32", "4000000000"),
        ("double", "3.14159265358979"),
        ("string", "hello world"),
    ] {
        let mid = id(&host, &format!("m_{t}"), false);
        // gmetric defaults: slope both, tmax 60, dmax 0, no extras.
        let meta = gmetric_meta(mid.clone(), t, "", Slope::Both, 60, 0, &[]);
        assert_eq!(
            xdr::encode(&meta).unwrap(),
            packet(&format!("gmetric_{t}_meta.bin")),
            "{t} metadata"
        );
        assert_eq!(
            xdr::encode(&gmetric_value(mid, v)).unwrap(),
            packet(&format!("gmetric_{t}_value.bin")),
            "{t} value"
        );
    }
}

#[test]
fn gmetric_spoofed_metric_and_heartbeat_match() {
    let mid = id("10.0.0.5:node5", "jobs", true);
    let meta = gmetric_meta(
        mid.clone(),
        "uint32",
        "",
        Slope::Both,
        60,
        300,
        &[("SPOOF_HOST", "10.0.0.5:node5"), ("CLUSTER", "mycluster")],
    );
    assert_eq!(
        xdr::encode(&meta).unwrap(),
        packet("gmetric_spoof_meta.bin")
    );
    assert_eq!(
        xdr::encode(&gmetric_value(mid.clone(), "7")).unwrap(),
        packet("gmetric_spoof_value.bin")
    );
    assert_eq!(mid.spoof_parts(), Some(("10.0.0.5", "node5")));

    let hb = id("10.0.0.5:node5", "heartbeat", true);
    let meta = gmetric_meta(
        hb.clone(),
        "uint32",
        "",
        Slope::Zero,
        0,
        0,
        &[("SPOOF_HOST", "10.0.0.5:node5"), ("SPOOF_HEARTBEAT", "yes")],
    );
    assert_eq!(
        xdr::encode(&meta).unwrap(),
        packet("gmetric_spoof_heartbeat_meta.bin")
    );
    assert_eq!(
        xdr::encode(&gmetric_value(hb, "0")).unwrap(),
        packet("gmetric_spoof_heartbeat_value.bin")
    );
}

#[test]
fn gmetric_groups_and_slopes_match() {
    let host = sender_host();
    let meta = gmetric_meta(
        id(&host, "reqs", false),
        "uint32",
        "req/s",
        Slope::Positive,
        60,
        0,
        &[("GROUP", "web"), ("GROUP", "app")],
    );
    assert_eq!(
        xdr::encode(&meta).unwrap(),
        packet("gmetric_multigroup_meta.bin")
    );
    let meta = gmetric_meta(
        id(&host, "bytes_total", false),
        "double",
        "",
        Slope::Derivative,
        60,
        0,
        &[],
    );
    assert_eq!(
        xdr::encode(&meta).unwrap(),
        packet("gmetric_derivative_meta.bin")
    );
}

#[test]
fn gmond_native_values_decode_and_render_like_gmond() {
    let Message::Value(v) = decode("gmond_ushort_cpu_num.bin") else {
        panic!("cpu_num is a value")
    };
    assert_eq!(v.fmt, "%hu");
    assert!(matches!(v.value, Value::UShort(n) if n >= 1));

    let Message::Value(v) = decode("gmond_uint_heartbeat.bin") else {
        panic!("heartbeat is a value")
    };
    assert_eq!((v.fmt.as_str(), v.id.name.as_str()), ("%u", "heartbeat"));
    assert!(matches!(v.value, Value::UInt(t) if t > 1_000_000_000));

    let Message::Value(v) = decode("gmond_float_load_one.bin") else {
        panic!("load_one is a value")
    };
    assert_eq!(v.fmt, "%.2f");
    let shown = render(&v.fmt, &v.value);
    assert!(
        shown.contains('.') && shown.split('.').nth(1).unwrap().len() == 2,
        "{shown}"
    );

    let Message::Value(v) = decode("gmond_double_disk_free.bin") else {
        panic!("disk_free is a value")
    };
    assert_eq!(v.fmt, "%.3f");
    assert!(matches!(v.value, Value::Double(_)));

    let Message::Value(v) = decode("gmond_string_os_name.bin") else {
        panic!("os_name is a value")
    };
    assert_eq!(v.value, Value::Str("Linux".into()));

    // Metadata from gmond: module tmax, dmax 0, TITLE, DESC, then GROUP.
    let Message::Metadata(m) = decode("gmond_meta_load_one.bin") else {
        panic!("metadata")
    };
    assert_eq!(m.meta.type_name, "float");
    assert_eq!(m.meta.units, " ");
    assert_eq!(
        (m.meta.slope(), m.meta.tmax, m.meta.dmax),
        (Slope::Both, 70, 0)
    );
    let keys: Vec<&str> = m.meta.extra.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["TITLE", "DESC", "GROUP"]);
    assert_eq!(
        m.meta.extra(ganglion_proto::model::extra::GROUP),
        Some("load")
    );
}

#[test]
fn gmond_metadata_request_matches() {
    // The request names the host by the receiver's reverse DNS of 127.0.0.1.
    let bytes = packet("gmond_metadata_request.bin");
    let Message::MetadataRequest(mid) = xdr::decode(&bytes).unwrap() else {
        panic!("136 expected")
    };
    assert!(!mid.spoof);
    assert_eq!(mid.name, "m_string");
    let built = Message::MetadataRequest(id(&mid.host, "m_string", false));
    assert_eq!(xdr::encode(&built).unwrap(), bytes);
}

//! Decode/encode throughput of the XDR codec on real captured datagrams
//! (`tests/data/packets`), and XML parsing of a polled gmond document (200
//! hosts × 30 metrics, the storage benchmark's source).
//! `cargo bench -p ganglion-proto --bench codec`. Throughput is reported in
//! messages (or metrics) per second on one core.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "tests read fixtures and run xmllint; proto/clippy.toml is about the library"
)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ganglion_proto::{xdr, xml};
use std::hint::black_box;
use std::path::Path;

fn packet(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/packets")
            .join(name),
    )
    .expect("golden packet")
}

fn codec(c: &mut Criterion) {
    let cases = [
        ("gmond_float_value", packet("gmond_float_part_max_used.bin")),
        ("gmetric_string_value", packet("gmetric_float_value.bin")),
        ("gmetric_metadata", packet("gmetric_float_meta.bin")),
    ];
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    for (name, bytes) in &cases {
        g.bench_function(*name, |b| b.iter(|| xdr::decode(black_box(bytes)).unwrap()));
    }
    g.finish();

    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    for (name, bytes) in &cases {
        let msg = xdr::decode(bytes).unwrap();
        let mut out = Vec::with_capacity(xdr::MAX_MESSAGE_LEN);
        g.bench_function(*name, |b| {
            b.iter(|| {
                xdr::encode_into(black_box(&msg), &mut out).unwrap();
                black_box(out.len())
            })
        });
    }
    g.finish();
}

/// A gmond document as a data source serves it (the shape of
/// `scripts/bench/storage.py`'s source).
fn gmond_document(hosts: usize, metrics: usize) -> Vec<u8> {
    let mut d = String::from(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" standalone=\"yes\"?>\n\
         <GANGLIA_XML VERSION=\"3.7.2\" SOURCE=\"gmond\">\n\
         <CLUSTER NAME=\"bench\" LOCALTIME=\"1700000000\" OWNER=\"o\" LATLONG=\"l\" URL=\"u\">\n",
    );
    for h in 0..hosts {
        d.push_str(&format!(
            "<HOST NAME=\"node{h:04}\" IP=\"10.0.{}.{}\" TAGS=\"\" REPORTED=\"1700000000\" TN=\"1\" \
             TMAX=\"20\" DMAX=\"0\" LOCATION=\"x\" GMOND_STARTED=\"1\">\n",
            h >> 8,
            h & 255
        ));
        for m in 0..metrics {
            d.push_str(&format!(
                "<METRIC NAME=\"m{m:02}\" VAL=\"{:.2}\" TYPE=\"float\" UNITS=\"u\" TN=\"1\" TMAX=\"60\" \
                 DMAX=\"0\" SLOPE=\"both\">\n<EXTRA_DATA>\n</EXTRA_DATA>\n</METRIC>\n",
                (h + m) as f64 / 3.0
            ));
        }
        d.push_str("</HOST>\n");
    }
    d.push_str("</CLUSTER>\n</GANGLIA_XML>\n");
    d.into_bytes()
}

fn xml_parse(c: &mut Criterion) {
    let (hosts, metrics) = (200, 30);
    let doc = gmond_document(hosts, metrics);
    let mut g = c.benchmark_group("xml_parse");
    g.throughput(Throughput::Elements((hosts * metrics) as u64));
    g.bench_function("gmond_200x30", |b| {
        b.iter(|| {
            let out = xml::parse_bytes(black_box(&doc), &xml::Limits::default());
            assert!(out.error.is_none());
            black_box(out.document.items.len())
        })
    });
    g.finish();
}

criterion_group!(benches, codec, xml_parse);
criterion_main!(benches);

//! Decode/encode throughput of the XDR codec on real captured datagrams
//! (`tests/data/packets`). `cargo bench -p ganglion-proto --bench codec`.
//! Throughput is reported in messages per second on one core.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ganglion_proto::xdr;
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

criterion_group!(benches, codec);
criterion_main!(benches);

//! The polled half of the storage benchmark (`scripts/bench/storage.py`) in
//! one process: a gmond document of 200 hosts × 30 metrics is parsed, applied
//! to the state as a poll does, and turned into one step's RRD samples as the
//! sampler does. `cargo bench -p ganglion-aggregator --bench poll_cycle`.
//! Throughput is in metrics per second on one core; the stages are also
//! timed alone so a change shows where it helped.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ganglion_aggregator::state::{Limits, State};
use ganglion_aggregator::{poll, storage};
use ganglion_proto::xml;
use std::hint::black_box;
use std::sync::Arc;

const HOSTS: usize = 200;
const METRICS: usize = 30;
const NOW: u64 = 1_700_000_000;

/// The storage benchmark's source document, with `now` as its clock.
fn gmond_document(now: u64) -> Vec<u8> {
    let mut d = format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" standalone=\"yes\"?>\n\
         <GANGLIA_XML VERSION=\"3.7.2\" SOURCE=\"gmond\">\n\
         <CLUSTER NAME=\"bench\" LOCALTIME=\"{now}\" OWNER=\"o\" LATLONG=\"l\" URL=\"u\">\n"
    );
    for h in 0..HOSTS {
        d.push_str(&format!(
            "<HOST NAME=\"node{h:04}\" IP=\"10.0.{}.{}\" TAGS=\"\" REPORTED=\"{now}\" TN=\"1\" \
             TMAX=\"20\" DMAX=\"0\" LOCATION=\"x\" GMOND_STARTED=\"1\">\n",
            h >> 8,
            h & 255
        ));
        for m in 0..METRICS {
            d.push_str(&format!(
                "<METRIC NAME=\"m{m:02}\" VAL=\"{:.2}\" TYPE=\"float\" UNITS=\"u\" TN=\"1\" TMAX=\"60\" \
                 DMAX=\"0\" SLOPE=\"both\">\n<EXTRA_DATA>\n</EXTRA_DATA>\n</METRIC>\n",
                ((now as usize + h + m) % 100) as f64 / 3.0
            ));
        }
        d.push_str("</HOST>\n");
    }
    d.push_str("</CLUSTER>\n</GANGLIA_XML>\n");
    d.into_bytes()
}

fn state() -> State {
    State::new(
        "grid".into(),
        "http://localhost/".into(),
        Vec::new(),
        Limits {
            max_hosts: 100_000,
            max_metrics: 1000,
            max_string_bytes: 1024,
        },
        Arc::default(),
    )
}

fn poll_cycle(c: &mut Criterion) {
    let doc = gmond_document(NOW);
    let limits = xml::Limits::default();
    let mut g = c.benchmark_group("poll_cycle");
    g.throughput(Throughput::Elements((HOSTS * METRICS) as u64));

    g.bench_function("parse", |b| {
        b.iter(|| black_box(xml::parse_bytes(black_box(&doc), &limits)))
    });

    let st = state();
    poll::apply(&st, xml::parse_bytes(&doc, &limits).document, NOW);
    g.bench_function("apply", |b| {
        b.iter_batched(
            || xml::parse_bytes(&doc, &limits).document,
            |d| poll::apply(&st, d, NOW),
            criterion::BatchSize::LargeInput,
        )
    });

    g.bench_function("sample", |b| {
        b.iter(|| {
            let snap = st.snapshot(NOW + 5);
            black_box(storage::samples(&snap, 15, &Default::default()))
        })
    });

    // The whole step as the aggregator runs it.
    g.bench_function("parse_apply_sample", |b| {
        b.iter(|| {
            let d = xml::parse_bytes(black_box(&doc), &limits).document;
            poll::apply(&st, d, NOW);
            let snap = st.snapshot(NOW + 5);
            black_box(storage::samples(&snap, 15, &Default::default()))
        })
    });
    g.finish();
}

criterion_group!(benches, poll_cycle);
criterion_main!(benches);

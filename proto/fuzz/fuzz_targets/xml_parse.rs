//! The XML reader on arbitrary bytes (plain, gzip when they start with its
//! magic, ISO-8859-1 or UTF-8) under tight limits: it must never panic, and
//! what it returns must respect the limits. Polled documents come from remote
//! peers, so this is the reader's hostile-input contract. Run with
//! `cargo fuzz run xml_parse` from `proto/`.
#![no_main]

use ganglion_proto::xml::{self, Item, Limits, XmlError};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_depth: 8,
    max_elements: 256,
    max_extras: 4,
    max_attr_len: 256,
    max_input_bytes: 64 * 1024,
};

fuzz_target!(|data: &[u8]| {
    let out = xml::parse_bytes(data, &LIMITS);
    if matches!(out.error, Some(XmlError::LimitExceeded { .. })) {
        assert!(out.document.items.is_empty(), "an oversized document is refused whole");
    }
    let mut elements = 0usize;
    for item in &out.document.items {
        elements += count(item);
    }
    assert!(elements <= LIMITS.max_elements, "{elements} elements kept");
    // The plain entry point on the same bytes must not panic either.
    let _ = xml::parse(data, &LIMITS);
});

/// Elements kept under one item, each checked against the per-element limits.
fn count(item: &Item) -> usize {
    match item {
        Item::Grid(g) => {
            1 + g.metrics.len()
                + g.clusters.iter().map(|c| count(&Item::Cluster(c.clone()))).sum::<usize>()
                + g.grids.iter().map(|c| count(&Item::Grid(c.clone()))).sum::<usize>()
        }
        Item::Cluster(c) => {
            for m in &c.metrics {
                assert!(m.extras.len() <= LIMITS.max_extras);
            }
            1 + c.metrics.len()
                + c.hosts.iter().map(|h| count(&Item::Host(h.clone()))).sum::<usize>()
        }
        Item::Host(h) => {
            for m in &h.metrics {
                assert!(m.extras.len() <= LIMITS.max_extras);
                assert!(m.name.len() <= LIMITS.max_attr_len && m.val.len() <= LIMITS.max_attr_len);
            }
            1 + h.metrics.len()
        }
    }
}

//! Per-datagram cost of the authenticated envelope: seal (agent) and
//! header parse + open (aggregator, with the sender's subkey cached), for a
//! typical 100-byte value message and a 1400-byte one, in both algorithms
//! and both modes; and the subkey derivation a new sender epoch costs once.
//! `cargo bench -p ganglion-proto --bench envelope`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ganglion_proto::envelope::{self, Alg, FLAG_ENC, Header, Secret, SubKey};
use std::hint::black_box;

fn envelope(c: &mut Criterion) {
    for alg in [Alg::ChaCha20Poly1305, Alg::Aes256Gcm] {
        let secret = Secret {
            key_id: 1,
            alg,
            bytes: [7; 32],
        };
        for (mode, flags) in [("auth", 0), ("enc", FLAG_ENC)] {
            let h = Header {
                alg,
                flags,
                key_id: 1,
                sender_id: 2,
                epoch: 3,
                salt: 4,
                counter: 5,
            };
            let key = SubKey::derive(&secret, &h).unwrap();
            let mut g = c.benchmark_group(format!("envelope/{}/{mode}", alg.name()));
            g.throughput(Throughput::Elements(1));
            for size in [100usize, 1400] {
                let payload = vec![0x5a; size];
                let mut out = Vec::with_capacity(envelope::MAX_DATAGRAM);
                g.bench_function(format!("seal_{size}"), |b| {
                    b.iter(|| envelope::seal(&key, &h, black_box(&payload), &mut out).unwrap())
                });
                let mut sealed = Vec::new();
                envelope::seal(&key, &h, &payload, &mut sealed).unwrap();
                let mut buf = sealed.clone();
                g.bench_function(format!("parse_open_{size}"), |b| {
                    b.iter(|| {
                        buf.copy_from_slice(&sealed);
                        let h = Header::parse(black_box(&buf)).unwrap();
                        envelope::open(&key, &h, &mut buf).map(|p| p.len()).unwrap()
                    })
                });
            }
            g.finish();
        }
        c.bench_function(&format!("envelope/{}/derive_subkey", alg.name()), |b| {
            b.iter(|| {
                SubKey::derive(
                    &secret,
                    black_box(&Header {
                        alg,
                        flags: 0,
                        key_id: 1,
                        sender_id: 2,
                        epoch: 3,
                        salt: 4,
                        counter: 0,
                    }),
                )
                .unwrap()
            })
        });
    }
}

criterion_group!(benches, envelope);
criterion_main!(benches);

//! Parse + open of one 100-byte value datagram per algorithm and mode, hot
//! (back to back) and after the core did only scalar work for a while (the
//! receiver between bursts), to see whether one algorithm pays a warm-up
//! the other does not (vector units powering up, caches evicted).
//! Prints median and 99th percentile per case; `Instant` overhead included
//! alike in every case.
//! `cargo bench -p ganglion-proto --bench envelope_cold`.

use ganglion_proto::envelope::{self, Alg, FLAG_ENC, Header, Secret, SubKey};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Integer work only, for `d`.
fn spin_scalar(d: Duration) {
    let end = Instant::now() + d;
    let mut x = 1u64;
    while Instant::now() < end {
        for _ in 0..64 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

fn main() {
    let samples = 2000;
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
            let payload = vec![0x5a; 100];
            let mut sealed = Vec::new();
            envelope::seal(&key, &h, &payload, &mut sealed).unwrap();
            let mut buf = sealed.clone();
            for gap in [
                Duration::ZERO,
                Duration::from_micros(10),
                Duration::from_millis(1),
            ] {
                let mut t: Vec<u64> = (0..samples)
                    .map(|_| {
                        spin_scalar(gap);
                        buf.copy_from_slice(&sealed);
                        let t0 = Instant::now();
                        let h = Header::parse(black_box(&buf)).unwrap();
                        black_box(envelope::open(&key, &h, &mut buf).map(|p| p.len()).unwrap());
                        t0.elapsed().as_nanos() as u64
                    })
                    .collect();
                t.sort_unstable();
                println!(
                    "{:<18} {:<4} gap {:>7?}: median {:>5} ns, p99 {:>6} ns",
                    alg.name(),
                    mode,
                    gap,
                    t[samples / 2],
                    t[samples * 99 / 100]
                );
            }
        }
        let t0 = Instant::now();
        let n = 20_000u32;
        for i in 0..n {
            let mut h = Header {
                alg,
                flags: 0,
                key_id: 1,
                sender_id: i,
                epoch: 3,
                salt: 4,
                counter: 0,
            };
            h.salt = black_box(i);
            black_box(SubKey::derive(&secret, &h).unwrap());
        }
        println!(
            "{:<18} derive_subkey: {} ns each (mean of {n})",
            alg.name(),
            t0.elapsed().as_nanos() / u128::from(n)
        );
    }
}

//! Any bytes: parsing the envelope header never panics; whatever parses is
//! opened with a fixed key (it must fail unless sealed with it), and a header
//! that parses re-serialises to the same 28 bytes. Sealing the input as a
//! payload and opening it gives the input back.
#![no_main]

use ganglion_proto::envelope::{self, Alg, Header, Secret, SubKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let secret = Secret {
        key_id: 1,
        alg: Alg::ChaCha20Poly1305,
        bytes: [7; 32],
    };
    if let Ok(h) = Header::parse(data) {
        assert_eq!(&h.to_bytes()[..], &data[..envelope::HEADER_LEN]);
        if let Ok(k) = SubKey::derive(&secret, &h) {
            let mut d = data.to_vec();
            let _ = envelope::open(&k, &h, &mut d);
        }
    }
    if data.len() <= envelope::MAX_PAYLOAD {
        for flags in [0, envelope::FLAG_ENC] {
            let h = Header {
                alg: Alg::ChaCha20Poly1305,
                flags,
                key_id: 1,
                sender_id: 2,
                epoch: 3,
                salt: 4,
                counter: data.len() as u64,
            };
            let k = SubKey::derive(&secret, &h).expect("same algorithm");
            let mut out = Vec::new();
            envelope::seal(&k, &h, data, &mut out).expect("fits");
            let parsed = Header::parse(&out).expect("own header parses");
            assert_eq!(envelope::open(&k, &parsed, &mut out).expect("verifies"), data);
        }
    }
});

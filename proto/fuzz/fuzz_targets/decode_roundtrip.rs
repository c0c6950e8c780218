//! decode → encode → decode must give the same message, and decoding arbitrary
//! bytes must never panic. Run with `cargo fuzz run decode_roundtrip` from `proto/`.
#![no_main]

use ganglion_proto::xdr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = xdr::decode(data) {
        let mut bytes = Vec::new();
        xdr::encode_unchecked(&msg, &mut bytes);
        let again = xdr::decode(&bytes).expect("our own encoding must decode");
        let mut bytes2 = Vec::new();
        xdr::encode_unchecked(&again, &mut bytes2);
        assert_eq!(bytes, bytes2, "decode/encode is not stable");
    }
    // The value renderer must not panic on any sender-supplied format either.
    if let Ok(xdr::Message::Value(v)) = xdr::decode(data) {
        let _ = ganglion_proto::format::render(&v.fmt, &v.value);
    }
});

//! The real `gmetric` 3.7.2 sends to a UDP socket this test owns; `proto`
//! decodes every datagram, and re-encoding reproduces the bytes exactly.

use ganglion_proto::model::Slope;
use ganglion_proto::xdr::{self, Message, Value};
use ganglion_tests::require_binary;
use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

fn gmetric_to(port: u16, args: &[&str]) {
    let gmetric = require_binary("gmetric");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("gmetric.conf");
    std::fs::write(
        &conf,
        format!("globals {{\n}}\nudp_send_channel {{\n  host = 127.0.0.1\n  port = {port}\n}}\n"),
    )
    .unwrap();
    let st = Command::new(gmetric)
        .arg("-c")
        .arg(&conf)
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "gmetric {args:?} failed: {st}");
}

fn recv_all(sock: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while out.len() < n {
        let (len, _) = sock.recv_from(&mut buf).expect("datagram from gmetric");
        out.push(buf[..len].to_vec());
    }
    out
}

#[test]
fn real_gmetric_datagrams_decode_and_reencode() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = sock.local_addr().unwrap().port();

    let cases: &[(&[&str], &str, &str)] = &[
        (
            &[
                "-n", "t_float", "-v", "1.25", "-t", "float", "-u", "C", "-g", "env",
            ],
            "float",
            "1.25",
        ),
        (
            &["-n", "t_int", "-v", "-3", "-t", "int32", "-s", "positive"],
            "int32",
            "-3",
        ),
        (
            &["-n", "t_str", "-v", "a <b> & 'c'", "-t", "string"],
            "string",
            "a <b> & 'c'",
        ),
        (
            &[
                "-n",
                "t_dbl",
                "-v",
                "1e300",
                "-t",
                "double",
                "-s",
                "derivative",
            ],
            "double",
            "1e300",
        ),
        (
            &[
                "-n",
                "t_sp",
                "-v",
                "9",
                "-t",
                "uint16",
                "-S",
                "192.0.2.7:spoofed.example",
                "-d",
                "30",
            ],
            "uint16",
            "9",
        ),
    ];
    for (args, ty, val) in cases {
        gmetric_to(port, args);
        let pkts = recv_all(&sock, 2);
        for p in &pkts {
            let msg = xdr::decode(p).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(
                &xdr::encode(&msg).unwrap(),
                p,
                "{args:?} re-encodes differently"
            );
        }
        let Message::Metadata(meta) = xdr::decode(&pkts[0]).unwrap() else {
            panic!("{args:?}: first datagram is metadata")
        };
        assert_eq!(meta.meta.type_name, *ty);
        let Message::Value(v) = xdr::decode(&pkts[1]).unwrap() else {
            panic!("{args:?}: second datagram is the value")
        };
        assert_eq!(v.fmt, "%s");
        assert_eq!(v.value, Value::Str((*val).to_string()));
        if args.contains(&"-S") {
            assert!(v.id.spoof);
            assert_eq!(v.id.spoof_parts(), Some(("192.0.2.7", "spoofed.example")));
            assert_eq!(meta.meta.dmax, 30);
        }
        if args.contains(&"derivative") {
            assert_eq!(meta.meta.slope(), Slope::Derivative);
        }
    }
}

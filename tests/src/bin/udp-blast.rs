//! Benchmark helper: replays pre-encoded datagrams at a UDP port as fast as one
//! core allows, so receivers can be driven past saturation (Python cannot).
//!
//! Usage: `udp-blast FILE HOST:PORT ROUNDS [PPS] [--seal KEYFILE SENDER_ID]`
//! where FILE holds datagrams as 4-byte big-endian length + bytes. With PPS,
//! sending is paced to that rate. With `--seal`, every datagram is wrapped in
//! the authenticated envelope with that key, as one sender stream (epoch =
//! the Unix second, counter 0, 1, 2, … across rounds), sealed as it is sent
//! (so each round is fresh, never a replay). Prints `sent=N secs=S`.

use ganglion_proto::envelope::{self, Header, KeyFile, SubKey};
use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let mut seal = None;
    if let Some(i) = args.iter().position(|a| a == "--seal") {
        let (Some(file), Some(sender)) = (args.get(i + 1), args.get(i + 2)) else {
            eprintln!("usage: --seal KEYFILE SENDER_ID");
            std::process::exit(2);
        };
        let kf = KeyFile::parse(&std::fs::read_to_string(file).expect("read key file"))
            .expect("key file");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let header = Header {
            alg: kf.secret.alg,
            flags: if kf.encrypt { envelope::FLAG_ENC } else { 0 },
            key_id: kf.secret.key_id,
            sender_id: sender.parse().expect("SENDER_ID"),
            epoch: now.as_secs() as u32,
            salt: now.subsec_nanos(),
            counter: 0,
        };
        let key = SubKey::derive(&kf.secret, &header).expect("alg");
        seal = Some((header, key));
        args.drain(i..i + 3);
    }
    if args.len() < 4 {
        eprintln!("usage: udp-blast FILE HOST:PORT ROUNDS [PPS] [--seal KEYFILE SENDER_ID]");
        std::process::exit(2);
    }
    let data = std::fs::read(&args[1]).expect("read packet file");
    let mut pkts = Vec::new();
    let mut i = 0;
    while i + 4 <= data.len() {
        let n = u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]) as usize;
        pkts.push(&data[i + 4..i + 4 + n]);
        i += 4 + n;
    }
    let rounds: usize = args[3].parse().expect("ROUNDS");
    let pps: Option<f64> = args.get(4).and_then(|s| s.parse().ok());
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.connect(&args[2]).expect("connect");
    let mut sealed = Vec::with_capacity(envelope::MAX_DATAGRAM);
    let start = Instant::now();
    let mut sent = 0u64;
    for _ in 0..rounds {
        for p in &pkts {
            let _ = match &mut seal {
                None => sock.send(p),
                Some((h, key)) => {
                    envelope::seal(key, h, p, &mut sealed).expect("fits one datagram");
                    h.counter += 1;
                    sock.send(&sealed)
                }
            };
            sent += 1;
            if let Some(r) = pps
                && sent.is_multiple_of(256)
            {
                let due = Duration::from_secs_f64(sent as f64 / r);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
    }
    println!("sent={sent} secs={:.3}", start.elapsed().as_secs_f64());
}

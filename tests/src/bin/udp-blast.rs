//! Benchmark helper: replays pre-encoded datagrams at a UDP port as fast as one
//! core allows, so receivers can be driven past saturation (Python cannot).
//!
//! Usage: `udp-blast FILE HOST:PORT ROUNDS [PPS]` where FILE holds datagrams as
//! 4-byte big-endian length + bytes. With PPS, sending is paced to that rate.
//! Prints `sent=N secs=S`.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: udp-blast FILE HOST:PORT ROUNDS [PPS]");
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
    let start = Instant::now();
    let mut sent = 0u64;
    for _ in 0..rounds {
        for p in &pkts {
            let _ = sock.send(p);
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

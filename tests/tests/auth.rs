//! The authenticated transport end to end: forged, replayed, stale, unknown
//! key and plain datagrams are refused, counted and change nothing; loss is
//! counted exactly from the counter; the agent daemon and `send` are
//! accepted across restarts of either side; keys rotate on SIGHUP with
//! traffic flowing and nothing lost; real gmond and gmetric keep working
//! where the cluster allows plain XDR; new senders past the cap are refused.

use ganglion_proto::envelope::{self, Alg, Header, KeyFile, Secret, SubKey};
use ganglion_proto::model::MetricMeta;
use ganglion_proto::xdr::{self, Message, MetadataMsg, MetricId, Value, ValueMsg};
use ganglion_tests::*;
use serde_json::Value as J;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

fn secret(key_id: u16) -> Secret {
    Secret {
        key_id,
        alg: Alg::ChaCha20Poly1305,
        bytes: [key_id as u8 ^ 0x5a; 32],
    }
}

/// Writes key `key_id` as `dir/name` (mode 0600).
fn write_key(dir: &Path, name: &str, key_id: u16) -> PathBuf {
    let p = dir.join(name);
    let kf = KeyFile {
        secret: secret(key_id),
        encrypt: false,
        sender_id: None,
    };
    std::fs::write(&p, kf.to_text()).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A test sender: one (key, sender, epoch, salt) stream.
struct Stream {
    secret: Secret,
    header: Header,
    key: SubKey,
}

impl Stream {
    fn new(key_id: u16, sender_id: u32, epoch: u32, salt: u32) -> Stream {
        let secret = secret(key_id);
        let header = Header {
            alg: secret.alg,
            flags: 0,
            key_id,
            sender_id,
            epoch,
            salt,
            counter: 0,
        };
        let key = SubKey::derive(&secret, &header).unwrap();
        Stream {
            secret,
            header,
            key,
        }
    }

    /// Switches to another key, keeping epoch, salt and counter (rotation).
    fn rekey(&mut self, key_id: u16) {
        self.secret = secret(key_id);
        self.header.key_id = key_id;
        self.key = SubKey::derive(&self.secret, &self.header).unwrap();
    }

    fn seal(&self, msg: &Message, counter: u64) -> Vec<u8> {
        let mut h = self.header;
        h.counter = counter;
        let mut out = Vec::new();
        envelope::seal(&self.key, &h, &xdr::encode(msg).unwrap(), &mut out).unwrap();
        out
    }
}

fn metric(host: &str, name: &str, v: f32) -> [Message; 2] {
    let id = MetricId {
        host: host.into(),
        name: name.into(),
        spoof: true,
    };
    [
        Message::Metadata(MetadataMsg {
            id: id.clone(),
            meta: MetricMeta {
                type_name: "float".into(),
                name: name.into(),
                units: "".into(),
                slope: 3,
                tmax: 60,
                dmax: 0,
                extra: vec![("SPOOF_HOST".into(), host.into())],
            },
        }),
        Message::Value(ValueMsg {
            id,
            fmt: "%.1f".into(),
            value: Value::Float(v),
        }),
    ]
}

/// A socket on its own loopback address, so its host is told apart from
/// gmond's and gmetric's (127.0.0.1) in `optional` mode.
fn sock_on(ip: [u8; 4]) -> UdpSocket {
    UdpSocket::bind(SocketAddr::from((ip, 0))).unwrap()
}

fn rejected(agg: &Aggregator, reason: &str) -> u64 {
    metrics_value(
        agg.http,
        &format!("ganglion_auth_rejected_total{{reason=\"{reason}\"}}"),
    )
}

fn all_rejected(agg: &Aggregator) -> u64 {
    [
        "bad_tag",
        "replay",
        "unknown_key",
        "plain_refused",
        "stale_epoch",
        "sender_conflict",
        "too_many_senders",
        "malformed",
        "session_limit",
    ]
    .iter()
    .map(|r| rejected(agg, r))
    .sum()
}

fn senders(agg: &Aggregator) -> Vec<J> {
    let v: J = serde_json::from_str(&http_get(agg.http, "/api/senders")).unwrap();
    v["senders"].as_array().cloned().unwrap_or_default()
}

fn sender(agg: &Aggregator, id: u32, oneshot: bool) -> Option<J> {
    senders(agg)
        .into_iter()
        .find(|s| s["sender_id"] == id && s["oneshot"] == oneshot)
}

fn field(agg: &Aggregator, id: u32, f: &str) -> u64 {
    sender(agg, id, false).map_or(0, |s| s[f].as_u64().unwrap_or(0))
}

fn gmond_xml(agg: &Aggregator) -> String {
    String::from_utf8_lossy(&read_tcp(agg.gmond, None)).into_owned()
}

fn metric_val(agg: &Aggregator, host: &str, name: &str) -> Option<String> {
    let xml = gmond_xml(agg);
    let h = xml.find(&format!("<HOST NAME=\"{host}\""))?;
    let m = h + xml[h..].find(&format!("<METRIC NAME=\"{name}\" VAL=\""))?;
    let v = &xml[m..];
    let start = v.find("VAL=\"")? + 5;
    Some(v[start..start + v[start..].find('"')?].to_string())
}

fn auth_cluster(mode: &str, key_files: &[&Path]) -> String {
    let files: Vec<String> = key_files
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    format!(
        "reverse_dns = false\nauth = \"{mode}\"\nkey_files = [{}]\n",
        files.join(", ")
    )
}

/// A genuine datagram on a separate stream, waited for: every datagram sent
/// before it has been applied or refused, and the XML shows it.
struct Marker {
    stream: Stream,
    n: u64,
}

impl Marker {
    fn sync(&mut self, sock: &UdpSocket, agg: &Aggregator) {
        let [meta, value] = metric("10.0.0.6:marker", "mark", self.n as f32);
        sock.send_to(&self.stream.seal(&meta, 2 * self.n), agg.udp)
            .unwrap();
        sock.send_to(&self.stream.seal(&value, 2 * self.n + 1), agg.udp)
            .unwrap();
        let want = format!("{}.0", self.n);
        wait_until("the marker", WAIT, || {
            (metric_val(agg, "marker", "mark")? == want).then_some(())
        });
        self.n += 1;
    }
}

#[test]
fn forged_replayed_stale_unknown_and_plain_datagrams_are_refused_and_change_nothing() {
    let keys = tempfile::tempdir().unwrap();
    let k1 = write_key(keys.path(), "k1.key", 1);
    let agg = Aggregator::start_with("Secure", &auth_cluster("required", &[&k1]), "");
    let sock = sock_on([127, 0, 0, 1]);
    let s = Stream::new(1, 42, 1000, 7);
    let [meta, value] = metric("10.0.0.5:web1", "temp", 1.0);
    sock.send_to(&s.seal(&meta, 0), agg.udp).unwrap();
    sock.send_to(&s.seal(&value, 1), agg.udp).unwrap();
    wait_until("the first value", WAIT, || {
        (metric_val(&agg, "web1", "temp")? == "1.0").then_some(())
    });

    // Every single-bit flip of a fresh datagram carrying another value.
    let [_, forged_value] = metric("10.0.0.5:web1", "temp", 99.0);
    let good = s.seal(&forged_value, 2);
    let before = all_rejected(&agg);
    let mut sent = 0;
    for bit in 0..good.len() * 8 {
        let mut d = good.clone();
        d[bit / 8] ^= 1 << (bit % 8);
        sock.send_to(&d, agg.udp).unwrap();
        sent += 1;
        if sent % 200 == 0 {
            // Paced, so the socket buffer never drops one.
            wait_until("forgeries counted", WAIT, || {
                (all_rejected(&agg) == before + sent).then_some(())
            });
        }
    }
    wait_until("every forgery counted", WAIT, || {
        (all_rejected(&agg) == before + sent).then_some(())
    });
    assert!(rejected(&agg, "bad_tag") > 0);
    assert!(rejected(&agg, "unknown_key") > 0, "key id bits flipped");
    assert!(rejected(&agg, "malformed") > 0, "version, alg, flag bits");
    assert!(rejected(&agg, "plain_refused") > 0, "magic bits flipped");
    let mut marker = Marker {
        stream: Stream::new(1, 99, 1, 1),
        n: 1,
    };
    marker.sync(&sock, &agg);
    assert_eq!(metric_val(&agg, "web1", "temp").as_deref(), Some("1.0"));
    assert_eq!(
        (field(&agg, 42, "received"), field(&agg, 42, "lost")),
        (2, 0)
    );

    // Unknown key, plain XDR: refused.
    let other = Stream::new(9, 43, 1000, 7);
    sock.send_to(&other.seal(&forged_value, 5), agg.udp)
        .unwrap();
    sock.send_to(&xdr::encode(&forged_value).unwrap(), agg.udp)
        .unwrap();
    wait_until("unknown key and plain counted", WAIT, || {
        (all_rejected(&agg) == before + sent + 2).then_some(())
    });

    // The genuine datagram is accepted once; its replay is refused.
    let replays = rejected(&agg, "replay");
    sock.send_to(&good, agg.udp).unwrap();
    sock.send_to(&good, agg.udp).unwrap();
    wait_until("replay refused", WAIT, || {
        (rejected(&agg, "replay") == replays + 1).then_some(())
    });
    wait_until("the genuine value", WAIT, || {
        (metric_val(&agg, "web1", "temp")? == "99.0").then_some(())
    });
    assert_eq!(field(&agg, 42, "replays_rejected"), 1);

    // Reordered within the window: 10, 12, 11 all accepted.
    for (c, v) in [(10, 10.0), (12, 12.0), (11, 11.0)] {
        let [_, val] = metric("10.0.0.5:web1", "temp", v);
        sock.send_to(&s.seal(&val, c), agg.udp).unwrap();
    }
    wait_until("reordered datagrams accepted", WAIT, || {
        (field(&agg, 42, "received") == 6).then_some(())
    });
    assert_eq!(field(&agg, 42, "reordered"), 1);
    // Counters 3..=9 never came: 7 lost.
    assert_eq!(field(&agg, 42, "lost"), 7);

    // A restart (epoch 1001) is accepted; a captured datagram of the old
    // epoch is then refused as stale, without calling it a clone.
    let s2 = Stream::new(1, 42, 1001, 8);
    let [_, v2] = metric("10.0.0.5:web1", "temp", 2.0);
    sock.send_to(&s2.seal(&v2, 0), agg.udp).unwrap();
    wait_until("new epoch accepted", WAIT, || {
        (field(&agg, 42, "epoch") == 1001).then_some(())
    });
    let stale = rejected(&agg, "stale_epoch");
    sock.send_to(&good, agg.udp).unwrap();
    wait_until("old epoch refused", WAIT, || {
        (rejected(&agg, "stale_epoch") == stale + 1).then_some(())
    });
    marker.sync(&sock, &agg);
    assert_eq!(metric_val(&agg, "web1", "temp").as_deref(), Some("2.0"));
    let row = sender(&agg, 42, false).unwrap();
    assert_eq!(row["cloned"], false);
    assert_eq!(row["restarts"], 1);
    assert_eq!(row["host"], "10.0.0.5:web1");

    // A clone: the old epoch keeps advancing after the restart.
    let [_, v3] = metric("10.0.0.5:web1", "temp", 3.0);
    sock.send_to(&s.seal(&v3, 13), agg.udp).unwrap();
    wait_until("clone flagged", WAIT, || {
        (sender(&agg, 42, false)?["cloned"] == true).then_some(())
    });
    assert_eq!(
        metrics_value(agg.http, "ganglion_auth_cloned_senders_total"),
        1
    );
    marker.sync(&sock, &agg);
    assert_eq!(metric_val(&agg, "web1", "temp").as_deref(), Some("2.0"));
}

#[test]
fn captured_datagrams_forwarded_with_gaps_give_the_exact_loss() {
    let keys = tempfile::tempdir().unwrap();
    let k1 = write_key(keys.path(), "k1.key", 1);
    let agg = Aggregator::start_with(
        "Lossy",
        &auth_cluster("required", &[&k1]),
        "[auth]\nmax_senders_per_cluster = 1\n",
    );
    let sock = sock_on([127, 0, 0, 1]);
    let s = Stream::new(1, 7, 50, 1);
    let [meta, _] = metric("10.0.0.7:db1", "load", 0.0);
    let captured: Vec<Vec<u8>> = (0..300u64)
        .map(|c| {
            if c == 0 {
                s.seal(&meta, c)
            } else {
                let [_, v] = metric("10.0.0.7:db1", "load", c as f32);
                s.seal(&v, c)
            }
        })
        .collect();
    // Dropped on the "path": 17 counters, some in runs, none the last.
    let dropped: Vec<u64> = vec![
        3, 4, 5, 40, 41, 99, 100, 101, 102, 150, 151, 200, 250, 251, 252, 253, 298,
    ];
    let mut forwarded = 0;
    for (c, d) in captured.iter().enumerate() {
        if !dropped.contains(&(c as u64)) {
            sock.send_to(d, agg.udp).unwrap();
            forwarded += 1;
            if forwarded % 100 == 0 {
                wait_until("forwarded batch", WAIT, || {
                    (field(&agg, 7, "received") == forwarded).then_some(())
                });
            }
        }
    }
    wait_until("everything forwarded received", WAIT, || {
        (field(&agg, 7, "received") == forwarded).then_some(())
    });
    assert_eq!(field(&agg, 7, "lost"), dropped.len() as u64);
    assert!(
        metrics_value(agg.http, "ganglion_auth_lost_total{cluster=\"Lossy\"}")
            == dropped.len() as u64
    );
    assert_eq!(
        metrics_value(agg.http, "ganglion_auth_received_total{cluster=\"Lossy\"}"),
        forwarded
    );
    // One object per sender, with every documented field.
    let row = sender(&agg, 7, false).unwrap();
    for f in [
        "cluster",
        "address",
        "host",
        "key_id",
        "epoch",
        "received",
        "lost",
        "duplicates",
        "reordered",
        "replays_rejected",
        "last_seen",
        "cloned",
    ] {
        assert!(row.get(f).is_some(), "{f} missing in {row}");
    }

    // At the sender cap a new sender is refused, counted; the known one stays.
    let other = Stream::new(1, 8, 50, 1);
    sock.send_to(&other.seal(&meta, 0), agg.udp).unwrap();
    wait_until("the new sender refused at the cap", WAIT, || {
        (rejected(&agg, "too_many_senders") == 1).then_some(())
    });
    assert_eq!(senders(&agg).len(), 1);

    // The dashboard's senders table in a real browser: loss 17 of 300.
    let dom = Command::new(require_binary("chromium"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("http://{}/#/cluster/Lossy", agg.http))
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("data-testid=\"senders-table\""), "{dom}");
    assert!(dom.contains("5.67 %"), "loss % in {dom}");
    assert!(
        dom.contains("class=\"authed\""),
        "authenticated host marked: {dom}"
    );
}

fn agent_bin() -> PathBuf {
    workspace_bin("ganglion-agent")
}

fn keygen(dir: &Path, id: u16) -> PathBuf {
    let p = dir.join(format!("agent-{id}.key"));
    let st = Command::new(agent_bin())
        .args(["keygen", "--id", &id.to_string(), "--out"])
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    p
}

fn send_cmd(key: &Path, to: SocketAddr, value: &str) {
    let st = Command::new(agent_bin())
        .args(["send", "--key-file"])
        .arg(key)
        .args([
            "--send-to",
            &to.to_string(),
            "-n",
            "jobs",
            "-v",
            value,
            "-t",
            "uint32",
            "-S",
            "10.0.0.8:batch1",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "ganglion-agent send failed");
}

fn oneshot_received(agg: &Aggregator) -> u64 {
    senders(agg)
        .iter()
        .filter(|s| s["oneshot"] == true)
        .map(|s| s["received"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn agent_and_send_are_accepted_across_restarts_and_send_cannot_be_replayed() {
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), 3);
    let agg = Aggregator::start_with("Fleet", &auth_cluster("required", &[&key]), "");
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "key_file = \"{}\"\nsend_metadata_interval_secs = 0\n\
         [[collection_group]]\ncollect_every_secs = 1\ntime_threshold_secs = 1\n\
         [[collection_group.metric]]\nname = \"cpu_num\"\n\
         [[collection_group.metric]]\nname = \"load_one\"\nvalue_threshold = -1.0\n",
        key.display()
    );
    let send_to = agg.udp.to_string();
    let mut agent = start_agent(dir.path(), "agent.toml", &toml, &["--send-to", &send_to]);
    let first = wait_until("the agent's datagrams", WAIT, || {
        senders(&agg)
            .into_iter()
            .find(|s| s["oneshot"] == false && s["received"].as_u64().unwrap_or(0) >= 3)
    });
    let id = first["sender_id"].as_u64().unwrap() as u32;
    let epoch = first["epoch"].as_u64().unwrap();

    // Agent restart: a new epoch, accepted at once.
    agent.terminate(Duration::from_secs(5));
    drop(agent);
    let agent = start_agent(dir.path(), "agent.toml", &toml, &["--send-to", &send_to]);
    wait_until("the restarted agent's epoch", WAIT, || {
        (field(&agg, id, "epoch") > epoch && field(&agg, id, "restarts") == 1).then_some(())
    });

    // One-shot sends in quick succession: every one accepted.
    for i in 0..10 {
        send_cmd(&key, agg.udp, &i.to_string());
    }
    wait_until("all 20 one-shot datagrams", WAIT, || {
        (oneshot_received(&agg) == 20).then_some(())
    });

    // A captured `send`, forwarded twice: once accepted, then a replay.
    let trap = UdpSocket::bind("127.0.0.1:0").unwrap();
    trap.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    send_cmd(&key, trap.local_addr().unwrap(), "77");
    let mut buf = [0u8; 1500];
    let mut captured = Vec::new();
    for _ in 0..2 {
        let (n, _) = trap.recv_from(&mut buf).unwrap();
        captured.push(buf[..n].to_vec());
    }
    let sock = sock_on([127, 0, 0, 1]);
    let replays = rejected(&agg, "replay");
    for d in captured.iter().chain(captured.iter()) {
        sock.send_to(d, agg.udp).unwrap();
    }
    wait_until("the replayed send refused", WAIT, || {
        (rejected(&agg, "replay") == replays + 2 && oneshot_received(&agg) == 22).then_some(())
    });
    wait_until("the value of the captured send", WAIT, || {
        (metric_val(&agg, "batch1", "jobs")? == "77").then_some(())
    });
    assert_eq!(rejected(&agg, "bad_tag"), 0);

    // Aggregator restart on the same ports: the running agent's stream and
    // new sends are accepted by the fresh process.
    let config = agg.dir.path().join("aggregator.toml");
    let (udp, http) = (agg.udp, agg.http);
    let mut agg = agg;
    agg.guard.terminate(Duration::from_secs(10));
    let mut fresh = ChildGuard::spawn(
        "ganglion-aggregator",
        Command::new(workspace_bin("ganglion-aggregator"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::null()),
    );
    wait_for_tcp(http, WAIT);
    let api = |path: &str| http_get(http, path);
    wait_until("the agent after the aggregator restart", WAIT, || {
        let v: J = serde_json::from_str(&api("/api/senders")).ok()?;
        v["senders"]
            .as_array()?
            .iter()
            .find(|s| {
                s["sender_id"] == id
                    && s["oneshot"] == false
                    && s["received"].as_u64().unwrap_or(0) >= 2
            })
            .map(|s| assert_eq!(s["lost"], 0, "{s}"))
    });
    send_cmd(&key, udp, "5");
    wait_until("a send after the aggregator restart", WAIT, || {
        let v: J = serde_json::from_str(&api("/api/senders")).ok()?;
        v["senders"]
            .as_array()?
            .iter()
            .any(|s| s["oneshot"] == true && s["received"] == 2)
            .then_some(())
    });
    drop(agent);
    fresh.terminate(Duration::from_secs(10));
}

fn hup(pid: u32) {
    let st = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn keys_rotate_on_sighup_with_traffic_flowing_and_nothing_is_lost() {
    let keys = tempfile::tempdir().unwrap();
    std::fs::set_permissions(keys.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    write_key(keys.path(), "k1.key", 1);
    let agg = Aggregator::start_with("Rotate", &auth_cluster("required", &[keys.path()]), "");
    let sock = sock_on([127, 0, 0, 1]);
    let mut s = Stream::new(1, 500, 9, 9);
    let [meta, _] = metric("10.0.0.9:app1", "rps", 0.0);
    let mut counter = 0u64;
    let send = |s: &Stream, counter: &mut u64| {
        let [_, v] = metric("10.0.0.9:app1", "rps", *counter as f32);
        let msg = if *counter == 0 { &meta } else { &v };
        sock.send_to(&s.seal(msg, *counter), agg.udp).unwrap();
        *counter += 1;
        std::thread::sleep(Duration::from_millis(2));
    };
    for _ in 0..100 {
        send(&s, &mut counter);
    }
    // Add key 2 and reload, while the stream keeps flowing under key 1; a
    // probe stream under key 2 tells when the reload happened.
    write_key(keys.path(), "k2.key", 2);
    hup(agg.guard.pid());
    let probe_sock = sock_on([127, 0, 0, 1]);
    let probe = Stream::new(2, 501, 1, 1);
    let mut pc = 0;
    let [_, pv] = metric("10.0.0.10:probe", "x", 1.0);
    wait_until("key 2 accepted", WAIT, || {
        send(&s, &mut counter);
        probe_sock.send_to(&probe.seal(&pv, pc), agg.udp).unwrap();
        pc += 1;
        (field(&agg, 501, "received") > 0).then_some(())
    });
    // Move the sender to key 2: its window continues.
    s.rekey(2);
    for _ in 0..100 {
        send(&s, &mut counter);
    }
    // Retire key 1.
    std::fs::remove_file(keys.path().join("k1.key")).unwrap();
    hup(agg.guard.pid());
    let old = Stream::new(1, 502, 1, 1);
    let unknown = rejected(&agg, "unknown_key");
    let mut oc = 0;
    wait_until("key 1 retired", WAIT, || {
        send(&s, &mut counter);
        probe_sock.send_to(&old.seal(&pv, oc), agg.udp).unwrap();
        oc += 1;
        (rejected(&agg, "unknown_key") > unknown).then_some(())
    });
    for _ in 0..50 {
        send(&s, &mut counter);
    }
    wait_until("every datagram of the rotated stream", WAIT, || {
        (field(&agg, 500, "received") == counter).then_some(())
    });
    let row = sender(&agg, 500, false).unwrap();
    assert_eq!(
        (row["lost"].as_u64(), row["key_id"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(row["restarts"], 0);
    assert_eq!(rejected(&agg, "bad_tag"), 0);
    assert_eq!(rejected(&agg, "replay"), 0);
    assert_eq!(
        metrics_value(agg.http, "ganglion_auth_key_reload_failures_total"),
        0
    );
}

#[test]
fn optional_mode_keeps_real_gmond_and_gmetric_and_refuses_downgrades() {
    let keys = tempfile::tempdir().unwrap();
    let k1 = write_key(keys.path(), "k1.key", 1);
    let agg = Aggregator::start_with("Mixed", &auth_cluster("optional", &[&k1]), "");
    let dir = tempfile::tempdir().unwrap();

    // Real gmetric and gmond, plain XDR from 127.0.0.1.
    let conf = gmetric_conf(dir.path(), agg.udp);
    gmetric(
        &conf,
        &[
            "-n",
            "legacy",
            "-v",
            "5",
            "-t",
            "uint32",
            "-S",
            "10.0.0.20:old1",
        ],
    );
    let gport = free_port_pair();
    let gconf = gmond_conf(dir.path(), "Mixed", gport, Some(agg.udp));
    let _gmond = start_gmond(&gconf, gport);
    wait_until("gmetric's and gmond's hosts", WAIT, || {
        let xml = gmond_xml(&agg);
        (xml.contains("<HOST NAME=\"old1\"") && xml.matches("<HOST NAME=").count() >= 2)
            .then_some(())
    });

    // A keyed host on another address.
    let keyed = sock_on([127, 0, 0, 33]);
    let s = Stream::new(1, 77, 1, 1);
    let [meta, value] = metric("10.0.0.21:new1", "temp", 4.0);
    keyed.send_to(&s.seal(&meta, 0), agg.udp).unwrap();
    keyed.send_to(&s.seal(&value, 1), agg.udp).unwrap();
    wait_until("the keyed host", WAIT, || {
        (metric_val(&agg, "new1", "temp")? == "4.0").then_some(())
    });
    // gmetric impersonating the keyed host is refused; plain from the
    // keyed address is refused; gmetric for its own host still works.
    let refused = rejected(&agg, "plain_refused");
    gmetric(
        &conf,
        &[
            "-n",
            "temp",
            "-v",
            "66",
            "-t",
            "float",
            "-S",
            "10.0.0.21:new1",
        ],
    );
    let [meta2, value2] = metric("10.0.0.22:other", "temp", 6.0);
    for m in [meta2, value2] {
        keyed.send_to(&xdr::encode(&m).unwrap(), agg.udp).unwrap();
    }
    gmetric(
        &conf,
        &[
            "-n",
            "legacy",
            "-v",
            "6",
            "-t",
            "uint32",
            "-S",
            "10.0.0.20:old1",
        ],
    );
    wait_until("downgrades refused", WAIT, || {
        (rejected(&agg, "plain_refused") == refused + 4).then_some(())
    });
    wait_until("plain host still updated", WAIT, || {
        (metric_val(&agg, "old1", "legacy")? == "6").then_some(())
    });
    assert_eq!(metric_val(&agg, "new1", "temp").as_deref(), Some("4.0"));
    assert!(!gmond_xml(&agg).contains("<HOST NAME=\"other\""));
}

/// Datagrams read from `trap` until `n` arrived.
fn capture(trap: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
    let mut buf = [0u8; 1500];
    (0..n)
        .map(|_| {
            let (len, _) = trap.recv_from(&mut buf).unwrap();
            buf[..len].to_vec()
        })
        .collect()
}

/// The envelope counter of a sealed datagram.
fn counter_of(d: &[u8]) -> u64 {
    Header::parse(d).unwrap().counter
}

/// The per-sender limits the aggregator's state file holds for `cluster`:
/// (sender id, one-shot) → limit. Empty while the file is absent or torn.
fn persisted_limits(rrd_root: &Path, cluster: &str) -> Vec<((u64, bool), u64)> {
    let Ok(text) = std::fs::read_to_string(rrd_root.join(".ganglion-auth-senders")) else {
        return Vec::new();
    };
    let Some(body) = text.lines().nth(1) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<J>(body) else {
        return Vec::new();
    };
    v["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == cluster)
        .flat_map(|c| c["senders"].as_array().cloned().unwrap_or_default())
        .map(|s| {
            (
                (
                    s["id"].as_u64().unwrap_or(0),
                    s["oneshot"].as_bool().unwrap_or(false),
                ),
                s["limit"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Starts the aggregator again on `agg`'s configuration (same ports, same
/// rrd_root) after its process ended.
fn respawn(agg: &mut Aggregator) {
    let config = agg.dir.path().join("aggregator.toml");
    agg.guard = ChildGuard::spawn(
        "ganglion-aggregator",
        Command::new(workspace_bin("ganglion-aggregator"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::null()),
    );
    wait_for_tcp(agg.http, WAIT);
}

#[test]
fn captured_datagrams_stay_refused_after_an_aggregator_crash_or_restart() {
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), 4);
    let mut agg = Aggregator::start_with("Fleet", &auth_cluster("required", &[&key]), "");
    let trap = UdpSocket::bind("127.0.0.1:0").unwrap();
    trap.set_read_timeout(Some(WAIT)).unwrap();
    let trap_addr = trap.local_addr().unwrap().to_string();

    // The agent daemon's datagrams and a `send` run's, captured on their
    // way and forwarded: all accepted.
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "key_file = \"{}\"\nsend_metadata_interval_secs = 0\n\
         [[collection_group]]\ncollect_every_secs = 1\ntime_threshold_secs = 1\n\
         [[collection_group.metric]]\nname = \"load_one\"\nvalue_threshold = -1.0\n",
        key.display()
    );
    let mut agent = start_agent(dir.path(), "agent.toml", &toml, &["--send-to", &trap_addr]);
    let daemon = capture(&trap, 6);
    agent.terminate(Duration::from_secs(5));
    drop(agent);
    // Whatever the agent sent while stopping is not forwarded.
    trap.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while trap.recv_from(&mut [0u8; 1500]).is_ok() {}
    trap.set_read_timeout(Some(WAIT)).unwrap();
    send_cmd(&key, trap.local_addr().unwrap(), "41");
    let oneshot = capture(&trap, 2);
    let all: Vec<&Vec<u8>> = daemon.iter().chain(oneshot.iter()).collect();
    let sock = sock_on([127, 0, 0, 1]);
    for d in &all {
        sock.send_to(d, agg.udp).unwrap();
    }
    let daemon_id = u64::from(Header::parse(&daemon[0]).unwrap().sender_id);
    let oneshot_id = u64::from(Header::parse(&oneshot[0]).unwrap().sender_id);
    wait_until("the captured datagrams accepted", WAIT, || {
        (field(&agg, daemon_id as u32, "received") == 6 && oneshot_received(&agg) == 2)
            .then_some(())
    });

    // The state file covers them within about a second (a new sender
    // wakes an early write).
    let daemon_top = daemon.iter().map(|d| counter_of(d)).max().unwrap();
    let oneshot_top = oneshot.iter().map(|d| counter_of(d)).max().unwrap();
    wait_until(
        "the state file covering every accepted datagram",
        WAIT,
        || {
            let l = persisted_limits(&agg.rrd_root, "Fleet");
            let limit = |k| l.iter().find(|(id, _)| *id == k).map(|(_, v)| *v);
            (limit((daemon_id, false))? >= daemon_top && limit((oneshot_id, true))? >= oneshot_top)
                .then_some(())
        },
    );

    // A crash (SIGKILL: no shutdown write), then a start on the same
    // rrd_root: every captured datagram is refused and changes nothing.
    let st = Command::new("kill")
        .args(["-KILL", &agg.guard.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    agg.guard.terminate(Duration::from_secs(5));
    respawn(&mut agg);
    let replayed = |agg: &Aggregator| rejected(agg, "replay") + rejected(agg, "stale_epoch");
    for d in &all {
        sock.send_to(d, agg.udp).unwrap();
    }
    wait_until("every replay after the crash refused", WAIT, || {
        (replayed(&agg) == all.len() as u64).then_some(())
    });
    assert_eq!(all_rejected(&agg), all.len() as u64);
    let rows = senders(&agg);
    assert_eq!(rows.len(), 2, "{rows:?}");
    for s in &rows {
        assert_eq!(s["received"], 0, "{s}");
        assert_eq!(s["cloned"], false, "{s}");
        assert_eq!(s["restored"], true, "{s}");
    }
    assert!(
        !gmond_xml(&agg).contains("batch1"),
        "a replayed send reached the state"
    );

    // A fresh send after the restart is accepted; captured on its way, it
    // too stays refused after a clean restart (the shutdown write).
    send_cmd(&key, trap.local_addr().unwrap(), "42");
    let fresh = capture(&trap, 2);
    for d in &fresh {
        sock.send_to(d, agg.udp).unwrap();
    }
    wait_until("the fresh send accepted", WAIT, || {
        (metric_val(&agg, "batch1", "jobs")? == "42").then_some(())
    });
    agg.guard.terminate(Duration::from_secs(10));
    respawn(&mut agg);
    for d in all.iter().copied().chain(fresh.iter()) {
        sock.send_to(d, agg.udp).unwrap();
    }
    wait_until("every replay after the clean restart refused", WAIT, || {
        (replayed(&agg) == (all.len() + fresh.len()) as u64).then_some(())
    });
    assert!(senders(&agg).iter().all(|s| s["received"] == 0));
    send_cmd(&key, agg.udp, "43");
    wait_until("a send after the clean restart", WAIT, || {
        (metric_val(&agg, "batch1", "jobs")? == "43").then_some(())
    });
    agg.guard.terminate(Duration::from_secs(10));
}

#[test]
fn the_agent_moves_to_a_new_key_on_sighup_and_keeps_its_key_on_a_bad_file() {
    let keys = tempfile::tempdir().unwrap();
    let (old, new) = (keygen(keys.path(), 5), keygen(keys.path(), 6));
    let agg = Aggregator::start_with("Fleet", &auth_cluster("required", &[&old, &new]), "");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("agent.key");
    std::fs::copy(&old, &key).unwrap();
    let toml = format!(
        "key_file = \"{}\"\nsend_metadata_interval_secs = 0\n\
         [[collection_group]]\ncollect_every_secs = 1\ntime_threshold_secs = 1\n\
         [[collection_group.metric]]\nname = \"load_one\"\nvalue_threshold = -1.0\n",
        key.display()
    );
    let send_to = agg.udp.to_string();
    let mut agent = start_agent(dir.path(), "agent.toml", &toml, &["--send-to", &send_to]);
    let row = wait_until("the agent on key 5", WAIT, || {
        senders(&agg)
            .into_iter()
            .find(|s| s["key_id"] == 5 && s["received"].as_u64().unwrap_or(0) >= 2)
    });
    let id = row["sender_id"].as_u64().unwrap() as u32;
    let epoch = row["epoch"].as_u64().unwrap();

    // The key file now holds key 6: after SIGHUP the same stream goes on
    // under it, without a restart and without a datagram lost.
    std::fs::copy(&new, &key).unwrap();
    hup(agent.pid());
    wait_until("the agent on key 6", WAIT, || {
        (field(&agg, id, "key_id") == 6).then_some(())
    });
    let received = field(&agg, id, "received");
    wait_until("more datagrams under key 6", WAIT, || {
        (field(&agg, id, "received") >= received + 2).then_some(())
    });
    let row = sender(&agg, id, false).unwrap();
    assert_eq!(row["epoch"], epoch, "{row}");
    assert_eq!(
        (row["restarts"].as_u64(), row["lost"].as_u64()),
        (Some(0), Some(0)),
        "{row}"
    );

    // A bad file: logged, the agent keeps key 6 and goes on sending.
    std::fs::write(&key, "not a key file\n").unwrap();
    hup(agent.pid());
    let received = field(&agg, id, "received");
    wait_until("datagrams after the bad reload", WAIT, || {
        (field(&agg, id, "received") >= received + 3).then_some(())
    });
    assert_eq!(field(&agg, id, "key_id"), 6);
    assert_eq!(all_rejected(&agg), 0);
    assert_eq!(
        agent.terminate(Duration::from_secs(5)),
        Some(0),
        "the agent stopped cleanly"
    );
}

#[test]
fn check_config_loads_the_key_files_as_start_does() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), 7);
    let check = |key_file: &Path| {
        let conf = dir.path().join("aggregator.toml");
        std::fs::write(
            &conf,
            format!(
                "rrd_root = \"{}\"\n[[cluster]]\nname = \"Fleet\"\n\
                 udp_listen = \"127.0.0.1:18649\"\n{}",
                dir.path().join("rrds").display(),
                auth_cluster("required", &[key_file])
            ),
        )
        .unwrap();
        Command::new(workspace_bin("ganglion-aggregator"))
            .arg("--check-config")
            .arg("--config")
            .arg(&conf)
            .output()
            .unwrap()
    };
    let ok = check(&key);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let missing = check(&dir.path().join("absent.key"));
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("cluster[0].key_files"), "{err}");
    std::fs::write(&key, "not a key\n").unwrap();
    let bad = check(&key);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cluster[0].key_files"));
}

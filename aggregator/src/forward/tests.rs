//! Encoding a snapshot, and the sender against an in-process receiver
//! scripted to fail.

use super::*;
use crate::config::forward::GraphiteCompat;
use crate::state::{ClusterInfo, Limits};
use crate::telemetry::Counters;
use ganglion_proto::MetricMeta;
use ganglion_proto::xdr::{Message, MetadataMsg, MetricId, Value as XValue, ValueMsg};

/// Cluster "my cluster", host "Node1.example.com": load_one 0.42 (float),
/// "disk free" 12 (uint32), os_name (string).
pub(crate) fn state() -> Arc<State> {
    state_sized("my cluster", 10)
}

/// [`state`] with another cluster name and room for `max_hosts` hosts.
pub(crate) fn state_sized(cluster: &str, max_hosts: usize) -> Arc<State> {
    let state = Arc::new(State::new(
        "g".into(),
        "http://x/".into(),
        vec![ClusterInfo {
            name: cluster.into(),
            owner: "o".into(),
            latlong: "l".into(),
            url: "u".into(),
            host_tmax: 20,
            host_dmax: 0,
            trust_packet_hostname: false,
        }],
        Limits {
            max_hosts,
            max_metrics: 10,
            max_string_bytes: 100,
        },
        Arc::new(Counters::default()),
    ));
    let src = "10.0.0.1:1".parse().unwrap();
    let now = now_secs();
    for (name, ty, fmt, v) in [
        ("load_one", "float", "%.2f", XValue::Float(0.42)),
        ("disk free", "uint32", "%u", XValue::UInt(12)),
        ("os_name", "string", "%s", XValue::Str("Linux".into())),
    ] {
        let id = MetricId {
            host: "h".into(),
            name: name.into(),
            spoof: false,
        };
        state.apply(
            0,
            src,
            Some("Node1.example.com"),
            Message::Metadata(MetadataMsg {
                id: id.clone(),
                meta: MetricMeta {
                    type_name: ty.into(),
                    name: name.into(),
                    units: " ".into(),
                    slope: 3,
                    tmax: 70,
                    dmax: 0,
                    extra: vec![],
                },
            }),
            now,
        );
        state.apply(
            0,
            src,
            Some("Node1.example.com"),
            Message::Value(ValueMsg {
                id,
                fmt: fmt.into(),
                value: v,
            }),
            now,
        );
    }
    state
}

fn graphite_plan(filter: Filter, summaries: bool) -> Plan {
    Plan {
        wire: Wire::Graphite(graphite::PathRules {
            prefix: "ganglia".into(),
            template: String::new(),
            case_sensitive_hostnames: false,
            compat: GraphiteCompat::Gmetad,
        }),
        filter,
        per_batch: 1,
        summaries,
        alive: Default::default(),
    }
}

#[test]
fn graphite_pass_sends_numeric_metrics_of_alive_hosts() {
    let s = state();
    let snap = s.snapshot(now_secs());
    let batches = graphite_plan(Filter::new(&[], &[]).unwrap(), false).encode(&snap, 1_700_000_010);
    // One line per batch (per_batch = 1), strings left out.
    let text: Vec<String> = batches
        .iter()
        .map(|b| String::from_utf8(b.payload.to_vec()).unwrap())
        .collect();
    assert_eq!(
        text,
        [
            "ganglia.my_cluster.node1_example_com.disk_free 12 1700000010\n",
            "ganglia.my_cluster.node1_example_com.load_one 0.42 1700000010\n",
        ]
    );
    let only_load = Filter::new(&["my cluster/*/load_*".into()], &[]).unwrap();
    assert_eq!(graphite_plan(only_load, false).encode(&snap, 1).len(), 1);
    let not_load = Filter::new(&[], &["*/load_one".into()]).unwrap();
    assert_eq!(graphite_plan(not_load, false).encode(&snap, 1).len(), 1);
    // Summaries add sum and num per metric.
    let with = graphite_plan(Filter::new(&[], &[]).unwrap(), true).encode(&snap, 1);
    assert_eq!(with.len(), 6);
}

#[test]
fn remote_write_pass_has_sorted_labels_and_ms_timestamps() {
    let s = state();
    let snap = s.snapshot(now_secs());
    let plan = Plan {
        wire: Wire::RemoteWrite(vec![
            ("grid".into(), "g".into()),
            ("job".into(), "ganglion".into()),
        ]),
        filter: Filter::new(&[], &[]).unwrap(),
        per_batch: 2000,
        summaries: false,
        alive: Default::default(),
    };
    let batches = plan.encode(&snap, 1_700_000_010);
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].samples, 2);
    let w = remote_write::decode(&batches[0].payload).unwrap();
    let first = &w.timeseries[0];
    let labels: Vec<(&str, &str)> = first
        .labels
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("__name__", "ganglia_disk_free"),
            ("cluster", "my cluster"),
            ("grid", "g"),
            ("host", "Node1.example.com"),
            ("job", "ganglion"),
        ]
    );
    assert_eq!(first.samples[0].timestamp, 1_700_000_010_000);
    assert_eq!(first.samples[0].value, 12.0);
    assert_eq!(w.timeseries[1].samples[0].value, 0.42);
}

#[test]
fn backoff_doubles_and_stays_bounded() {
    let b = Backoff {
        min: Duration::from_millis(30),
        max: Duration::from_secs(5),
    };
    assert!(b.delay(1) >= Duration::from_millis(30) && b.delay(1) < Duration::from_millis(40));
    assert!(b.delay(3) >= Duration::from_millis(120));
    assert!(b.delay(40) <= Duration::from_secs(5));
    assert_eq!(next_boundary(1_700_000_014, 15), 1_700_000_025);
    assert_eq!(next_boundary(1_700_000_010, 15), 1_700_000_025);
}

/// A receiver answering from a script (status per request, then 204).
async fn scripted(script: Vec<u16>) -> (String, Arc<std::sync::Mutex<Vec<u16>>>) {
    use axum::routing::post;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let script = Arc::new(std::sync::Mutex::new(script.into_iter()));
    let seen2 = seen.clone();
    let app = axum::Router::new().route(
        "/w",
        post(move |body: axum::body::Bytes| {
            let script = script.clone();
            let seen = seen2.clone();
            async move {
                let code = script.lock().unwrap().next().unwrap_or(204);
                if remote_write::decode(&body).is_ok() {
                    seen.lock().unwrap().push(code);
                }
                axum::http::StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/w", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, seen)
}

fn rw_batch() -> Batch {
    let mut e = remote_write::Encoder::default();
    e.series("ganglia_x", &[], 1.0, 1000);
    Batch {
        ts: 1,
        samples: 1,
        payload: e.finish(),
        made: Instant::now(),
    }
}

#[tokio::test]
async fn sender_retries_5xx_and_429_and_drops_other_4xx() {
    let (url, seen) = scripted(vec![500, 429, 204, 400, 204]).await;
    let c = ForwardConfig {
        kind: ForwardKind::RemoteWrite,
        url,
        ..Default::default()
    };
    let stats = Arc::new(Stats::new("t", "remote_write", "x"));
    let queue = Arc::new(Queue::new(1 << 20, stats.clone()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(send_loop(
        Sender::RemoteWrite(remote_write::Sender::new(&c).unwrap()),
        queue.clone(),
        stats.clone(),
        Backoff {
            min: Duration::from_millis(1),
            max: Duration::from_millis(5),
        },
        Duration::from_secs(60),
        shutdown.clone(),
    ));
    queue.push(rw_batch());
    queue.push(rw_batch());
    queue.push(rw_batch());
    for _ in 0..500 {
        if seen.lock().unwrap().len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Wait for the last answer to be counted.
    for _ in 0..500 {
        if stats.sent.load(Ordering::Relaxed) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*seen.lock().unwrap(), [500, 429, 204, 400, 204]);
    assert_eq!(stats.sent.load(Ordering::Relaxed), 2);
    assert_eq!(stats.retried.load(Ordering::Relaxed), 2);
    assert_eq!(stats.dropped(Reason::Rejected), 1);
    assert_eq!(stats.queue_bytes(), 0);
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn requests_carry_the_protocol_headers_credentials_and_user_headers() {
    use axum::routing::post;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let app = axum::Router::new().route(
        "/w",
        post(move |headers: axum::http::HeaderMap| {
            let seen = seen2.clone();
            async move {
                let mut h: Vec<String> = headers
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("")))
                    .collect();
                h.sort();
                seen.lock().unwrap().push(h);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/w", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "p\n").unwrap();
    let c = ForwardConfig {
        kind: ForwardKind::RemoteWrite,
        url,
        headers: [("X-Scope-OrgID".to_string(), "t1".to_string())].into(),
        basic_auth: Some(crate::config::forward::BasicAuth {
            username: "u".into(),
            password: String::new(),
            password_file: Some(pass),
        }),
        ..Default::default()
    };
    let mut s = remote_write::Sender::new(&c).unwrap();
    assert!(matches!(s.send(&rw_batch().payload).await, Outcome::Sent));
    let h = seen.lock().unwrap()[0].clone();
    for want in [
        "authorization: Basic dTpw",
        "content-encoding: snappy",
        "content-type: application/x-protobuf",
        "x-prometheus-remote-write-version: 0.1.0",
        "x-scope-orgid: t1",
    ] {
        assert!(h.iter().any(|l| l == want), "{want} not in {h:?}");
    }
    // A CA file that is not there fails at start, naming the forward.
    let bad = ForwardConfig {
        name: "secure".into(),
        kind: ForwardKind::RemoteWrite,
        url: "https://127.0.0.1:1/w".into(),
        tls_ca: Some(dir.path().join("missing.pem")),
        ..Default::default()
    };
    let e = remote_write::Sender::new(&bad).err().unwrap().to_string();
    assert!(e.contains("secure") && e.contains("tls_ca"), "{e}");
}

#[test]
fn a_host_that_dies_gets_one_stale_marker_per_series() {
    let s = state();
    let now = now_secs();
    let plan = Plan {
        wire: Wire::RemoteWrite(vec![("grid".into(), "g".into())]),
        filter: Filter::new(&[], &[]).unwrap(),
        per_batch: 2000,
        summaries: false,
        alive: Default::default(),
    };
    let first = plan.encode(&s.snapshot(now), 1_700_000_010);
    assert_eq!(first[0].samples, 2);
    // 4 × TMAX (20 s) later the host is dead: one stale NaN per series.
    let dead = plan.encode(&s.snapshot(now + 1000), 1_700_000_025);
    assert_eq!(dead.len(), 1);
    let w = remote_write::decode(&dead[0].payload).unwrap();
    assert_eq!(w.timeseries.len(), 2);
    for t in &w.timeseries {
        assert_eq!(t.samples[0].value.to_bits(), 0x7ff0_0000_0000_0002);
        assert_eq!(t.samples[0].timestamp, 1_700_000_025_000);
    }
    // Once only.
    assert!(
        plan.encode(&s.snapshot(now + 1015), 1_700_000_040)
            .is_empty()
    );
}

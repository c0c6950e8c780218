//! Handler tests, driven through the router with `oneshot`.

use super::*;
use crate::config::HttpConfig;
use crate::state::{ClusterInfo, Limits, now_secs};
use crate::telemetry::Counters;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use ganglion_proto::MetricMeta;
use ganglion_proto::xdr::{Message, MetadataMsg, MetricId, Value as XValue, ValueMsg};
use ganglion_rrd::layout::{self, Series};
use serde_json::Value;
use tower::ServiceExt;

/// An `AppState` with nothing optional switched on (other modules' tests start from it).
pub(super) fn app_state(state: Arc<State>, root: &std::path::Path, c: &HttpConfig) -> AppState {
    AppState {
        state,
        storage: None,
        rrd_root: root.to_path_buf(),
        case_sensitive_hostnames: false,
        limits: HttpLimits::new(c),
        flush: None,
        trusted: Arc::new(Vec::new()),
        all_trusted: false,
        listen_counters: Arc::new(ListenCounters::default()),
        alerts: None,
        auth: Default::default(),
        forwards: Default::default(),
    }
}

fn app() -> (Router, tempfile::TempDir) {
    let (a, dir) = app_with(&HttpConfig::default(), false);
    (router(a), dir)
}

/// node1 with load_one, and node2 too when `two`.
fn app_with(c: &HttpConfig, two: bool) -> (AppState, tempfile::TempDir) {
    let state = Arc::new(State::new(
        "g".into(),
        "http://x/".into(),
        vec![ClusterInfo {
            name: "c1".into(),
            owner: "o".into(),
            latlong: "l".into(),
            url: "u".into(),
            host_tmax: 20,
            host_dmax: 0,
            trust_packet_hostname: false,
        }],
        Limits {
            max_hosts: 10,
            max_metrics: 10,
            max_string_bytes: 100,
        },
        Arc::new(Counters::default()),
    ));
    let id = MetricId {
        host: "h".into(),
        name: "load_one".into(),
        spoof: false,
    };
    let src = "10.0.0.1:1".parse().unwrap();
    let now = now_secs();
    state.apply(
        0,
        src,
        Some("node1"),
        Message::Metadata(MetadataMsg {
            id: id.clone(),
            meta: MetricMeta {
                type_name: "float".into(),
                name: "load_one".into(),
                units: " ".into(),
                slope: 3,
                tmax: 70,
                dmax: 0,
                extra: vec![("GROUP".into(), "load".into())],
            },
        }),
        now,
    );
    state.apply(
        0,
        src,
        None,
        Message::Value(ValueMsg {
            id,
            fmt: "%.2f".into(),
            value: XValue::Float(0.5),
        }),
        now,
    );
    if two {
        state.apply(
            0,
            "10.0.0.2:1".parse().unwrap(),
            Some("node2"),
            Message::Value(ValueMsg {
                id: MetricId {
                    host: "h".into(),
                    name: "load_one".into(),
                    spoof: false,
                },
                fmt: "%.2f".into(),
                value: XValue::Float(0.25),
            }),
            now,
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let a = app_state(state, dir.path(), c);
    (a, dir)
}

/// GETs `uri` and parses the body as JSON (`Null` when it is not).
pub(super) async fn get(r: &Router, uri: &str) -> (StatusCode, Value) {
    let resp = r
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn api_answers_and_rejects_bad_parameters() {
    let (r, _dir) = app();
    let (s, v) = get(&r, "/api/grid").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["clusters"][0]["name"], "c1");
    assert_eq!(v["summary"]["hosts_up"], 1);
    let (s, v) = get(&r, "/api/cluster/c1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["hosts"][0]["name"], "node1");
    assert_eq!(v["hosts"][0]["load_one"], 0.5);
    let (s, v) = get(&r, "/api/host/c1/node1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["metrics"][0]["group"], "load");
    assert_eq!(v["metrics"][0]["val"], "0.50");
    let (s, v) = get(&r, "/api/search?q=NODE").await;
    assert_eq!(
        (s, v["hosts"][0]["host"].clone()),
        (StatusCode::OK, "node1".into())
    );

    for (uri, want) in [
        ("/api/cluster/nope", StatusCode::NOT_FOUND),
        ("/api/host/c1/ghost", StatusCode::NOT_FOUND),
        (
            "/api/series?cluster=c1&host=ghost&metric=load_one",
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/series?cluster=c1&host=node1&metric=load_one&start=now&end=now-1d",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/series?cluster=c1&host=node1&metric=load_one&points=99999999",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/series?cluster=c1&host=node1&metric=load_one&cf=MEDIAN",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/series?cluster=c1&hosts=(&metric=load_one",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/series?host=node1&metric=load_one",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/export?cluster=c1&host=node1&metric=load_one&format=xml",
            StatusCode::BAD_REQUEST,
        ),
        ("/api/search?q=", StatusCode::BAD_REQUEST),
    ] {
        let (s, v) = get(&r, uri).await;
        assert_eq!(s, want, "{uri}: {v}");
        assert!(v["error"].is_string(), "{uri}: JSON error body");
    }
    // No RRD yet: an empty series, not an error.
    let (s, v) = get(&r, "/api/series?cluster=c1&host=node1&metric=load_one").await;
    assert_eq!(
        (s, v["times"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
}

#[tokio::test]
async fn series_is_decimated_to_points_and_names_hosts() {
    let (r, dir) = app();
    let file = layout::path(
        dir.path(),
        &Series::Host {
            cluster: "c1".into(),
            host: "node1".into(),
            metric: "load_one".into(),
        },
        false,
    );
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let last = (now_secs() as i64 / 15 - 1) * 15;
    let first = last - 7200;
    let defs = ["DS:sum:GAUGE:120:U:U", "RRA:AVERAGE:0.5:1:1000"].map(String::from);
    ganglion_rrd::create(&file, 15, first - 15, &defs).unwrap();
    let ups: Vec<String> = (0..=480)
        .map(|k| format!("{}:{k}", first + k * 15))
        .collect();
    ganglion_rrd::update(&file, &ups).unwrap();

    let uri = format!(
        "/api/series?cluster=c1&hosts=node&metric=load_one&start={}&end={last}&points=100",
        first
    );
    let (s, v) = get(&r, &uri).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let times = v["times"].as_array().unwrap();
    assert!(
        times.len() <= 100 && times.len() >= 90,
        "{} rows",
        times.len()
    );
    assert_eq!(v["step"], 75, "480 rows of 15 s merged 5 by 5");
    assert_eq!(v["columns"][0]["host"], "node1");
    // Each merged row is the average of its five 15 s rows, ending on a
    // multiple of 75 s: the value k at time first + 15k averages to
    // the middle member's k.
    let t = times[10].as_i64().unwrap();
    assert_eq!(t % 75, 0);
    let want = ((t - 30 - first) / 15) as f64;
    assert_eq!(v["values"][0][10].as_f64(), Some(want));

    let (s, v) = get(&r, "/api/cluster/c1?metric=load_one").await;
    assert_eq!(
        (s, v["hosts"][0]["value"].as_f64()),
        (StatusCode::OK, Some(0.5))
    );
}

#[tokio::test]
async fn metrics_in_prometheus_text_and_openmetrics() {
    let (r, _dir) = app();
    let fetch = |accept: &'static str| {
        let r = r.clone();
        async move {
            let resp = r
                .oneshot(
                    Request::get("/metrics")
                        .header("accept", accept)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let ctype = resp.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .to_string();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            (ctype, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    let (ctype, text) = fetch("text/plain").await;
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    assert!(
        text.contains("# TYPE ganglion_values_received_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("\nganglion_values_received_total 1\n"),
        "{text}"
    );
    assert!(
        text.contains("ganglion_hosts_up{cluster=\"c1\"} 1\n"),
        "{text}"
    );
    assert!(!text.contains("# EOF"));
    let (ctype, text) = fetch("application/openmetrics-text; version=1.0.0").await;
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(
        text.contains("# TYPE ganglion_values_received counter\n"),
        "{text}"
    );
    assert!(
        text.contains("\nganglion_values_received_total 1\n"),
        "{text}"
    );
    assert!(
        text.contains("ganglion_metrics{cluster=\"c1\"} 1\n"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test]
async fn assets_are_embedded() {
    let (r, _dir) = app();
    let resp = r
        .clone()
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = r
        .oneshot(
            Request::get("/assets/vendor/uPlot.iife.min.js")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn flush_is_forbidden_from_an_untrusted_address() {
    let (a, _dir) = app_with(&HttpConfig::default(), false);
    let r = router(a.clone());
    let post = |from: &str| {
        let mut req = Request::post("/api/flush").body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(from.parse::<std::net::SocketAddr>().unwrap()));
        r.clone().oneshot(req)
    };
    let resp = post("10.9.9.9:4000").await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("trusted_hosts"),
        "{v}"
    );
    assert_eq!(
        a.limits
            .counters
            .flush_forbidden
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Loopback is trusted (storage is off here: 404, not 403).
    let resp = post("127.0.0.1:4000").await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn flush_takes_credentials_in_place_of_a_trusted_address() {
    let mut c = HttpConfig::default();
    c.basic_auth_users
        .insert("ops".into(), bcrypt::hash("pw", 4).unwrap());
    let (a, _dir) = app_with(&c, false);
    let r = super::auth::BasicAuth::new(&c, a.limits.clone())
        .unwrap()
        .protect(router(a));
    let post = |from: &str, creds: Option<&str>| {
        let mut req = Request::post("/api/flush");
        if let Some(c) = creds {
            use base64::Engine;
            let b = base64::engine::general_purpose::STANDARD.encode(c);
            req = req.header(header::AUTHORIZATION, format!("Basic {b}"));
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(from.parse::<std::net::SocketAddr>().unwrap()));
        r.clone().oneshot(req)
    };
    // With users set, even loopback must authenticate.
    let resp = post("127.0.0.1:4000", None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = post("10.9.9.9:4000", Some("ops:wrong")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Authenticated from an untrusted address: past the 403 (storage is
    // off here: 404).
    let resp = post("10.9.9.9:4000", Some("ops:pw")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn column_cap_is_a_400_naming_the_key() {
    let c = HttpConfig {
        max_series_columns: 1,
        ..HttpConfig::default()
    };
    let (a, _dir) = app_with(&c, true);
    let r = router(a);
    let (s, v) = get(&r, "/api/series?cluster=c1&hosts=node&metric=load_one").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("http.max_series_columns") && e.contains("2 hosts"),
        "{e}"
    );
    let (s, _) = get(&r, "/api/series?cluster=c1&hosts=node1&metric=load_one").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn heavy_requests_beyond_the_cap_get_503_with_retry_after() {
    let c = HttpConfig {
        max_heavy_requests: 1,
        ..HttpConfig::default()
    };
    let (a, _dir) = app_with(&c, true);
    let held = a.limits.heavy.clone().acquire_owned().await.unwrap();
    let r = router(a.clone());
    let resp = r
        .clone()
        .oneshot(
            Request::get("/api/search?q=node")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key(header::RETRY_AFTER));
    assert_eq!(
        a.limits
            .counters
            .busy
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    drop(held);
    let (s, _) = get(&r, "/api/search?q=node").await;
    assert_eq!(s, StatusCode::OK);
}

#[test]
fn a_file_locked_by_another_writer_is_a_retry_not_a_fault() {
    let r = super::read_failed("fetch /x/m.rrd: could not lock RRD");
    assert_eq!(r.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()[axum::http::header::RETRY_AFTER], "1");
    let r = super::read_failed("fetch /x/m.rrd: not an RRD file");
    assert_eq!(r.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
}

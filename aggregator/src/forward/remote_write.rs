//! Prometheus remote write 1.0: the message types (prost derive, written by
//! hand from the spec, no `.proto` and no `protoc`), a zero-copy encoder
//! that writes the same wire format straight from the snapshot, snappy
//! block framing, and the HTTP sender.
//!
//! Why an encoder beside the types: building a `WriteRequest` of owned
//! strings costs eight allocations per sample; at a million samples per
//! step that alone would be most of the CPU budget. The types stay the
//! reference (the tests decode every encoded batch with them).
//!
//! Retries follow the spec: 5xx, 429 (honouring `Retry-After`), timeouts and
//! connection errors are retried; any other 4xx is dropped and counted.

use super::Outcome;
use crate::config::forward::ForwardConfig;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// `prometheus.WriteRequest` (fields 2 and 3 are reserved by the spec).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Sorted by name, `__name__` first.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// In timestamp order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `ganglia_` + the name with every byte outside `[a-zA-Z0-9_]` as `_`
/// (OpenMetrics' metric-name alphabet without the colon, which it reserves
/// for recording rules; node_exporter's old gmond collector used the same
/// rule).
pub fn metric_name(out: &mut String, prefix: &str, name: &str) {
    out.push_str(prefix);
    for c in name.chars() {
        out.push(if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        });
    }
}

fn varint(buf: &mut Vec<u8>, v: u64) {
    prost::encoding::encode_varint(v, buf);
}

fn string_field(buf: &mut Vec<u8>, tag: u8, s: &[u8]) {
    buf.push(tag);
    varint(buf, s.len() as u64);
    buf.extend_from_slice(s);
}

/// Appends one encoded `Label` (as field 1 of a `TimeSeries`).
pub fn put_label(buf: &mut Vec<u8>, name: &str, value: &str) {
    let len = 2
        + prost::encoding::encoded_len_varint(name.len() as u64)
        + name.len()
        + prost::encoding::encoded_len_varint(value.len() as u64)
        + value.len();
    buf.push(0x0a);
    varint(buf, len as u64);
    string_field(buf, 0x0a, name.as_bytes());
    string_field(buf, 0x12, value.as_bytes());
}

/// Builds a `WriteRequest` body one series at a time.
#[derive(Default)]
pub struct Encoder {
    body: Vec<u8>,
    series: Vec<u8>,
    /// Series in `body`.
    pub count: u64,
}

impl Encoder {
    /// Appends a series: `name` first, then `labels` (already encoded with
    /// [`put_label`], sorted, all after `__name__`), one sample.
    pub fn series(&mut self, name: &str, labels: &[u8], value: f64, ts_ms: i64) {
        self.series.clear();
        put_label(&mut self.series, "__name__", name);
        self.series.extend_from_slice(labels);
        // Sample: double (field 1, fixed64) and int64 (field 2, varint).
        let ts = ts_ms as u64;
        let sample_len = 9 + 1 + prost::encoding::encoded_len_varint(ts);
        self.series.push(0x12);
        varint(&mut self.series, sample_len as u64);
        self.series.push(0x09);
        self.series.extend_from_slice(&value.to_le_bytes());
        self.series.push(0x10);
        varint(&mut self.series, ts);
        self.body.push(0x0a);
        varint(&mut self.body, self.series.len() as u64);
        self.body.extend_from_slice(&self.series);
        self.count += 1;
    }

    /// The snappy-compressed body (block format, as the spec requires),
    /// leaving the encoder empty.
    pub fn finish(&mut self) -> Bytes {
        let out = snap::raw::Encoder::new()
            .compress_vec(&self.body)
            .unwrap_or_default();
        self.body.clear();
        self.count = 0;
        Bytes::from(out)
    }

    /// Uncompressed bytes so far.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// Nothing encoded yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Decodes a compressed body (tests, and the fake receivers of the
/// integration tests).
pub fn decode(body: &[u8]) -> Result<WriteRequest, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| e.to_string())?;
    <WriteRequest as prost::Message>::decode(raw.as_slice()).map_err(|e| e.to_string())
}

/// Where and how to POST.
struct Target {
    https: bool,
    host: String,
    port: u16,
    authority: String,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    tls: Option<tokio_rustls::TlsConnector>,
}

/// A remote-write endpoint with one keep-alive connection.
pub struct Sender {
    target: Arc<Target>,
    conn: Option<SendRequest<Full<Bytes>>>,
    timeout: Duration,
}

/// A URL, header or credential the sender cannot use.
#[derive(Debug, thiserror::Error)]
#[error("forward {name:?}: {message}")]
pub struct SetupError {
    name: String,
    message: String,
}

fn read_secret(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().next().unwrap_or("").trim().to_string())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn tls_connector(ca: Option<&std::path::Path>) -> Result<tokio_rustls::TlsConnector, String> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(p) => {
            let certs = CertificateDer::pem_file_iter(p)
                .map_err(|e| format!("tls_ca {}: {e}", p.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("tls_ca {}: {e}", p.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("tls_ca {}: {e}", p.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("tls_ca {} holds no certificate", p.display()));
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

impl Sender {
    /// Checks the URL, reads credentials and the CA: everything that can
    /// fail does so at start, naming the forward.
    pub fn new(c: &ForwardConfig) -> Result<Sender, SetupError> {
        let fail = |message: String| SetupError {
            name: c.label().to_string(),
            message,
        };
        let uri: hyper::Uri = c
            .url
            .parse()
            .map_err(|e| fail(format!("url {:?}: {e}", c.url)))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .ok_or_else(|| fail(format!("url {:?} has no host", c.url)))?
            .trim_matches(|ch| ch == '[' || ch == ']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.as_str().rsplit('@').next().unwrap_or("").to_string())
            .unwrap_or_default();
        let path = uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        let mut headers = Vec::new();
        let hv = |v: &str| HeaderValue::from_str(v).map_err(|e| fail(format!("header value: {e}")));
        for (k, v) in &c.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| fail(format!("header {k:?}: {e}")))?;
            headers.push((name, hv(v)?));
        }
        if let Some(b) = &c.basic_auth {
            let password = match &b.password_file {
                Some(p) => read_secret(p).map_err(fail)?,
                None => b.password.clone(),
            };
            let token = base64(format!("{}:{password}", b.username).as_bytes());
            headers.push((hyper::header::AUTHORIZATION, hv(&format!("Basic {token}"))?));
        }
        let bearer = match &c.bearer_token_file {
            Some(p) => read_secret(p).map_err(fail)?,
            None => c.bearer_token.clone(),
        };
        if !bearer.is_empty() {
            headers.push((
                hyper::header::AUTHORIZATION,
                hv(&format!("Bearer {bearer}"))?,
            ));
        }
        let tls = if https {
            Some(tls_connector(c.tls_ca.as_deref()).map_err(fail)?)
        } else {
            None
        };
        Ok(Sender {
            target: Arc::new(Target {
                https,
                host,
                port,
                authority,
                path,
                headers,
                tls,
            }),
            conn: None,
            timeout: Duration::from_secs(u64::from(c.timeout_secs)),
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let t = &self.target;
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| format!("connect to {}: {e}", t.authority))?;
        let _ = tcp.set_nodelay(true);
        if let (true, Some(tls)) = (t.https, &t.tls) {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(t.host.clone())
                .map_err(|e| format!("server name {:?}: {e}", t.host))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {}: {e}", t.authority))?;
            handshake(hyper_util::rt::TokioIo::new(stream)).await
        } else {
            handshake(hyper_util::rt::TokioIo::new(tcp)).await
        }
    }

    /// POSTs one compressed `WriteRequest`.
    pub async fn send(&mut self, body: &Bytes) -> Outcome {
        match tokio::time::timeout(self.timeout, self.try_send(body)).await {
            Ok(o) => o,
            Err(_) => {
                // The connection may be mid-request: never reuse it.
                self.conn = None;
                Outcome::Retry {
                    error: format!("no answer within {} s", self.timeout.as_secs()),
                    after: None,
                }
            }
        }
    }

    async fn try_send(&mut self, body: &Bytes) -> Outcome {
        let retry = |error: String| Outcome::Retry { error, after: None };
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            match self.connect().await {
                Ok(c) => self.conn = Some(c),
                Err(e) => return retry(e),
            }
        }
        // A kept-alive connection the engine closed while idle is not a
        // failure: connect again once before calling it one.
        if let Some(c) = self.conn.as_mut()
            && c.ready().await.is_err()
        {
            self.conn = match self.connect().await {
                Ok(c) => Some(c),
                Err(e) => return retry(e),
            };
        }
        let Some(conn) = self.conn.as_mut() else {
            return retry("not connected".into());
        };
        if conn.ready().await.is_err() {
            self.conn = None;
            return retry("connection closed".into());
        }
        let t = &self.target;
        let mut req = Request::post(&t.path)
            .header(hyper::header::HOST, &t.authority)
            .header(hyper::header::CONTENT_ENCODING, "snappy")
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
            .header(
                hyper::header::USER_AGENT,
                concat!("ganglion/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-Prometheus-Remote-Write-Version", "0.1.0");
        for (k, v) in &t.headers {
            req = req.header(k, v);
        }
        let req = match req.body(Full::new(body.clone())) {
            Ok(r) => r,
            Err(e) => return Outcome::Rejected(format!("request: {e}")),
        };
        let resp = match conn.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return retry(format!("POST {}: {e}", t.path));
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read (a bounded part of) the body so the connection can be reused
        // and a refusal can say why.
        let mut text = Vec::new();
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref()
                        && text.len() < 512
                    {
                        text.extend_from_slice(&d[..d.len().min(512 - text.len())]);
                    }
                }
                Err(_) => {
                    self.conn = None;
                    break;
                }
            }
        }
        let msg = format!(
            "HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&text).trim()
        );
        if status.is_success() {
            Outcome::Sent
        } else if status.is_server_error() || status.as_u16() == 429 {
            Outcome::Retry {
                error: msg,
                after: retry_after,
            }
        } else {
            Outcome::Rejected(msg)
        }
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// Standard base64 (for basic auth; not worth a dependency).
fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_round_trips_through_prost_and_snappy() {
        let mut labels = Vec::new();
        put_label(&mut labels, "cluster", "my cluster");
        put_label(&mut labels, "grid", "g");
        put_label(&mut labels, "host", "node1");
        let mut e = Encoder::default();
        e.series("ganglia_load_one", &labels, 0.42, 1_700_000_000_000);
        e.series(
            "ganglia_x",
            &labels,
            f64::from_bits(0x7ff0_0000_0000_0002),
            5,
        );
        assert_eq!(e.count, 2);
        let body = e.finish();
        assert!(e.is_empty());
        let w = decode(&body).unwrap();
        assert_eq!(w.timeseries.len(), 2);
        let s = &w.timeseries[0];
        let names: Vec<(&str, &str)> = s
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("__name__", "ganglia_load_one"),
                ("cluster", "my cluster"),
                ("grid", "g"),
                ("host", "node1")
            ]
        );
        assert_eq!(
            s.samples,
            [Sample {
                value: 0.42,
                timestamp: 1_700_000_000_000
            }]
        );
        // The stale marker's exact bits survive.
        assert_eq!(
            w.timeseries[1].samples[0].value.to_bits(),
            0x7ff0_0000_0000_0002
        );
        // The same message encoded by prost is byte-identical.
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert_eq!(prost::Message::encode_to_vec(&w), raw);
    }

    /// Hostile names: prost (which refuses a string field that is not
    /// UTF-8, as Prometheus does for the whole request) decodes every
    /// series, label values read back unchanged, names are valid.
    #[test]
    fn hostile_names_encode_to_a_valid_request() {
        let names = crate::hostile::names();
        let mut e = Encoder::default();
        for n in &names {
            let mut labels = Vec::new();
            put_label(&mut labels, "cluster", n);
            put_label(&mut labels, "host", n);
            let mut name = String::new();
            metric_name(&mut name, "ganglia_", n);
            e.series(&name, &labels, 1.0, 5);
        }
        let w = decode(&e.finish()).unwrap();
        assert_eq!(w.timeseries.len(), names.len());
        for (s, n) in w.timeseries.iter().zip(&names) {
            let name = &s.labels[0].value;
            assert!(
                name.starts_with("ganglia_")
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{name:?}"
            );
            assert_eq!(&s.labels[2].value, n);
        }
    }

    #[test]
    fn names_are_sanitised() {
        let mut s = String::new();
        metric_name(&mut s, "ganglia_", "disk.free /var é:x");
        assert_eq!(s, "ganglia_disk_free__var___x");
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}

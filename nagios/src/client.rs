//! A small blocking HTTP/1.1 GET: one request per connection
//! (`Connection: close`), every step bounded by one deadline, basic auth,
//! `Content-Length` and chunked bodies, a size cap, and `https://` through
//! rustls (the server's certificate checked against `--ca FILE` or the
//! system's PEM bundle). A plugin runs once and exits, so this is all it
//! needs; keeping it here keeps the binary free of an HTTP stack.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// The TLS client configuration [`request`] takes (rustls').
pub use rustls::ClientConfig as TlsConfig;

/// Where the system's CA bundle is looked for (Debian first), when no
/// `--ca` is given.
pub const SYSTEM_CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Largest response body read (a cluster of thousands of hosts is a few MiB).
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// Why a request failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The `-u` value is not an http URL.
    #[error("bad -u/--url {0:?}: {1}")]
    BadUrl(String, &'static str),
    /// The name did not resolve.
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, std::io::Error),
    /// No address accepted the connection.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    /// The deadline passed.
    #[error("no answer from {0} within {1} s (-t/--timeout)")]
    Timeout(String, u64),
    /// Reading or writing failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The reply is not HTTP as expected.
    #[error("bad HTTP reply from {0}: {1}")]
    BadReply(String, String),
    /// TLS could not be set up (CA file, server name).
    #[error("TLS: {0}")]
    Tls(String),
}

/// An `http[s]://host[:port][/prefix]` base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// `https://`.
    pub tls: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (80, or 443 for https, when not given).
    pub port: u16,
    /// Path prefix without a trailing `/` (empty at the root).
    pub prefix: String,
}

impl BaseUrl {
    /// Parses the `-u` value; a bare `host:port` means `http://host:port`.
    pub fn parse(s: &str) -> Result<BaseUrl, ClientError> {
        let bad = |why| ClientError::BadUrl(s.to_string(), why);
        let (tls, rest) = if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if s.contains("://") {
            return Err(bad("only http:// and https:// URLs are supported"));
        } else {
            (false, s)
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err(bad(
                "no credentials in the URL; use --user and --password-file",
            ));
        }
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let end = r
                .find(']')
                .ok_or_else(|| bad("unclosed [ in the address"))?;
            let port = &r[end + 1..];
            (&r[..end], port.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None if tls => 443,
            None => 80,
            Some(p) => p
                .parse()
                .map_err(|_| bad("the port is not a number 1..65535"))?,
        };
        if port == 0 {
            return Err(bad("the port is not a number 1..65535"));
        }
        Ok(BaseUrl {
            tls,
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Percent-encodes one path segment (cluster and host names may hold
/// spaces, `/`, `?`, anything). A name of only dots has them encoded too:
/// a bare `.` or `..` segment is removed or climbs a level in any proxy
/// that normalises the path, asking about another object.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let dots = !s.is_empty() && s.bytes().all(|b| b == b'.');
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_~".contains(&b) || (b == b'.' && !dots) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Base64 (standard alphabet, padded) for the basic-auth header.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(A[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A reply: status and body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// The TLS client configuration: roots from `ca` (a PEM file) or the
/// first system bundle found.
pub fn tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let file = match ca {
        Some(p) => p.to_path_buf(),
        None => SYSTEM_CA_BUNDLES
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
            .ok_or_else(|| ClientError::Tls("no system CA bundle found; give --ca FILE".into()))?
            .to_path_buf(),
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&file)
        .map_err(|e| ClientError::Tls(format!("{}: {e}", file.display())))?;
    for c in certs {
        let c = c.map_err(|e| ClientError::Tls(format!("{}: {e}", file.display())))?;
        // A bundle may hold certificates this verifier cannot use; skip those.
        let _ = roots.add(c);
    }
    if roots.is_empty() {
        return Err(ClientError::Tls(format!(
            "{}: no CA certificates in it",
            file.display()
        )));
    }
    // ring, as the aggregator's TLS (no cmake); its deprecation in 0.23.48
    // is about post-quantum key exchange, which an aggregator need not offer.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A plain or TLS connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// GETs `path` (starting with `/`, already encoded) under `base`, all of it
/// before `deadline`; `ca` is the PEM file of CAs for https (default: the
/// system bundle).
pub fn get(
    base: &BaseUrl,
    path: &str,
    auth: Option<&(String, String)>,
    deadline: Instant,
    timeout_secs: u64,
    ca: Option<&Path>,
) -> Result<Reply, ClientError> {
    let tls = if base.tls {
        Some(tls_config(ca)?)
    } else {
        None
    };
    let req = Request {
        method: "GET",
        path,
        body: None,
        auth,
    };
    request(base, &req, tls, deadline, timeout_secs)
}

/// One HTTP request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`.
    pub method: &'a str,
    /// Path and query under the base URL, encoded.
    pub path: &'a str,
    /// A JSON body (sent with `Content-Type: application/json`).
    pub body: Option<&'a [u8]>,
    /// Basic-auth user and password.
    pub auth: Option<&'a (String, String)>,
}

/// Sends `req` to `base` and reads the reply, all before `deadline`; `tls`
/// is required for an https base (see [`tls_config`]).
pub fn request(
    base: &BaseUrl,
    req: &Request<'_>,
    tls: Option<Arc<rustls::ClientConfig>>,
    deadline: Instant,
    timeout_secs: u64,
) -> Result<Reply, ClientError> {
    let (path, auth) = (req.path, req.auth);
    let what = base.authority();
    let timeout = || ClientError::Timeout(what.clone(), timeout_secs);
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let addrs: Vec<_> = (base.host.as_str(), base.port)
        .to_socket_addrs()
        .map_err(|e| ClientError::Resolve(base.host.clone(), e))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for a in addrs {
        let Some(d) = left() else {
            return Err(timeout());
        };
        match TcpStream::connect_timeout(&a, d) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(timeout()),
            Err(e) => last = Some(e),
        }
    }
    let Some(tcp) = stream else {
        return Err(ClientError::Connect(
            what.clone(),
            last.unwrap_or_else(|| std::io::Error::other("no address")),
        ));
    };
    let mut s = if base.tls {
        let name = ServerName::try_from(base.host.clone())
            .map_err(|e| ClientError::Tls(format!("{:?} is not a server name: {e}", base.host)))?;
        let cfg =
            tls.ok_or_else(|| ClientError::Tls("no TLS configuration for an https URL".into()))?;
        let conn = rustls::ClientConnection::new(cfg, name)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
    } else {
        Stream::Plain(tcp)
    };
    let mut head = format!(
        "{} {}{} HTTP/1.1\r\nHost: {}\r\nUser-Agent: check_ganglion/{}\r\nAccept: application/json\r\nConnection: close\r\n",
        req.method,
        base.prefix,
        path,
        what,
        env!("CARGO_PKG_VERSION")
    );
    if let Some((u, p)) = auth {
        head.push_str(&format!(
            "Authorization: Basic {}\r\n",
            base64(format!("{u}:{p}").as_bytes())
        ));
    }
    if let Some(b) = req.body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(req.body.unwrap_or_default());
    let io = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            timeout()
        } else {
            ClientError::Io(what.clone(), e)
        }
    };
    s.tcp()
        .set_write_timeout(Some(left().ok_or_else(timeout)?))
        .map_err(io)?;
    s.tcp()
        .set_read_timeout(Some(left().ok_or_else(timeout)?))
        .map_err(io)?;
    s.write_all(&out).map_err(io)?;
    s.flush().map_err(io)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let d = left().ok_or_else(timeout)?;
        s.tcp()
            .set_read_timeout(Some(d.max(Duration::from_millis(1))))
            .map_err(io)?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_BODY_BYTES + 65536 {
                    return Err(ClientError::BadReply(
                        what,
                        format!("larger than {MAX_BODY_BYTES} bytes"),
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A TLS peer that closes without close_notify: the reply is
            // judged by its own framing below.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) => return Err(io(e)),
        }
    }
    parse_reply(&raw).map_err(|m| ClientError::BadReply(what, m))
}

/// Splits a whole HTTP/1.x reply into status and body.
pub fn parse_reply(raw: &[u8]) -> Result<Reply, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the header")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "header is not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not HTTP/1.x: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status code in {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.parse::<usize>().map_err(|_| "bad Content-Length")?);
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or("body shorter than Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Reply { status, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&rest[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_and_without_scheme_port_and_prefix() {
        let u = BaseUrl::parse("http://mon.example:8080/ganglion/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("mon.example", 8080, "/ganglion")
        );
        let u = BaseUrl::parse("127.0.0.1:9").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("127.0.0.1", 9, "")
        );
        let u = BaseUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert_eq!(u.authority(), "[::1]:8080");
        assert_eq!(BaseUrl::parse("http://h").unwrap().port, 80);
        let u = BaseUrl::parse("https://mon").unwrap();
        assert_eq!((u.tls, u.port), (true, 443));
        for bad in [
            "ftp://h",
            "http://:80",
            "http://h:x",
            "http://h:0",
            "http://u:p@h",
            "http://[::1",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("web 1/a?b%"), "web%201%2Fa%3Fb%25");
        assert_eq!(segment("node-1.example_x~"), "node-1.example_x~");
        assert_eq!(segment("ü"), "%C3%BC");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("."), "%2E");
        assert_eq!(segment("a..b"), "a..b");
        // Whatever the name: only unreserved bytes and %XX escapes.
        for name in [
            "a\0b",
            "x\r\ny",
            "#%;|'\"<>",
            "\u{2028}",
            "../../x",
            "a/../b",
        ] {
            let e = segment(name);
            assert!(
                e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
                "{e}"
            );
            assert!(e.split('/').count() == 1 && e != "." && e != "..");
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn replies_with_length_chunked_or_until_close() {
        let r = parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}garbage").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let r = parse_reply(b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        let r = parse_reply(b"HTTP/1.0 200 OK\r\n\r\nbody").unwrap();
        assert_eq!(r.body, b"body");
        for bad in [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"SSH-2.0-x\r\n\r\n",
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert!(
                parse_reply(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

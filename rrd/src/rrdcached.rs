//! rrdcached's text protocol: a minimal client for the existing daemon
//! (`FLUSH`, `UPDATE`, `BATCH`), over a unix socket (`unix:/path` or a path) or
//! TCP (`host:port`), and the field rules both ends share ([`escape_field`],
//! [`split_fields`]).
//!
//! The client outlives the daemon's restarts: any IO error, a timeout, an
//! end of stream or a reply it cannot read drops the connection (a stream
//! whose replies may lag its requests is never used again), and the next
//! request connects anew, waiting between failed attempts with a doubling
//! backoff. Requests made while it waits fail at once with
//! [`CachedError::Down`]. Reads and writes both have a timeout, so a stuck
//! daemon cannot hold the caller for ever.

use crate::Cause;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};
use thiserror::Error;

/// An rrdcached failure.
#[derive(Debug, Error)]
pub enum CachedError {
    /// Could not connect or talk.
    #[error("rrdcached at {addr}: {source}")]
    Io {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The daemon answered with an error status.
    #[error("rrdcached at {addr} refused {command}: {message}")]
    Refused {
        /// Address.
        addr: String,
        /// Command sent.
        command: String,
        /// Its message.
        message: String,
    },
    /// Not connected, and the next attempt to connect is not due yet.
    #[error("rrdcached at {addr} is not reachable (next attempt in {retry_in:?}): {last}")]
    Down {
        /// Address.
        addr: String,
        /// Until the next attempt.
        retry_in: Duration,
        /// Why the last attempt failed.
        last: String,
    },
    /// The file's name has a line break, which the protocol cannot carry.
    #[error("{file:?}: a file name with a line break cannot be sent to rrdcached")]
    Unsendable {
        /// The name.
        file: String,
    },
}

/// A file name as a request field; a name with a line break is refused, as
/// it would end the request early and turn the rest into a command of its own.
fn sendable(file: &str) -> Result<String, CachedError> {
    if file.contains(['\n', '\r']) {
        return Err(CachedError::Unsendable { file: file.into() });
    }
    Ok(escape_field(file))
}

impl CachedError {
    /// What the failure says about the disk or the file: the daemon relays
    /// librrd's messages; a connection problem (the daemon down, restarting
    /// or stuck) is [`Cause::Transient`]: the same request works once it is
    /// back.
    pub fn cause(&self) -> Cause {
        match self {
            CachedError::Io { .. } | CachedError::Down { .. } => Cause::Transient,
            CachedError::Unsendable { .. } => Cause::Other,
            CachedError::Refused { message, .. } => Cause::of_message(message),
        }
    }

    /// Whether the connection (not the request) failed.
    pub fn is_connection(&self) -> bool {
        matches!(self, CachedError::Io { .. } | CachedError::Down { .. })
    }
}

/// One field of a request as rrdcached reads it: fields are separated by
/// single spaces, and a backslash makes the next byte literal, so a file name
/// with a space or a backslash is sent escaped (as librrd's client does).
pub fn escape_field(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        if c == ' ' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Splits a request line (without its line end) into fields the way
/// rrdcached does (`buffer_get_field` in `src/rrd_daemon.c`): every single
/// space ends a field (two spaces make an empty field), a backslash takes
/// the next character literally.
pub fn split_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' => fields.push(std::mem::take(&mut cur)),
            '\\' => cur.extend(chars.next()),
            c => cur.push(c),
        }
    }
    if !cur.is_empty() || line.ends_with(' ') {
        fields.push(cur);
    }
    fields
}

trait Stream: std::io::Read + Write + Send {}
impl<T: std::io::Read + Write + Send> Stream for T {}

/// How the client talks to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Longest wait for connecting, for a write to be taken and for a reply
    /// line; past it the connection is dropped.
    pub timeout: Duration,
    /// Longest wait between two failed connection attempts (the wait starts
    /// at [`Options::FIRST_BACKOFF`] and doubles).
    pub max_backoff: Duration,
}

impl Options {
    /// The first wait after a failed attempt.
    pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(30),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// A connection to rrdcached, made again as needed (see the module docs).
pub struct Client {
    addr: String,
    opts: Options,
    conn: Option<BufReader<Box<dyn Stream>>>,
    /// No attempt to connect before this (after a failed one).
    next_try: Option<Instant>,
    backoff: Duration,
    /// Why the last attempt to connect failed.
    last_failure: String,
    /// Connections made after the first.
    reconnects: u64,
    connected_once: bool,
}

fn open(addr: &str, timeout: Duration) -> std::io::Result<Box<dyn Stream>> {
    let path = addr.strip_prefix("unix:").unwrap_or(addr);
    let t = Some(timeout.max(Duration::from_millis(1)));
    Ok(if path.starts_with('/') {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(t)?;
        s.set_write_timeout(t)?;
        Box::new(s)
    } else {
        use std::net::ToSocketAddrs;
        let mut last = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the address resolves to nothing",
        );
        let mut found = None;
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, timeout.max(Duration::from_millis(1))) {
                Ok(s) => {
                    found = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let s = found.ok_or(last)?;
        s.set_read_timeout(t)?;
        s.set_write_timeout(t)?;
        let _ = s.set_nodelay(true);
        Box::new(s)
    })
}

impl Client {
    /// Connects to `unix:/path`, `/path`, or `host:port` now, with the
    /// default [`Options`]; fails if the daemon cannot be reached.
    pub fn connect(addr: &str) -> Result<Client, CachedError> {
        let mut c = Client::new(addr, Options::default());
        c.ensure()?;
        Ok(c)
    }

    /// A client that connects on first use (and again after any failure).
    pub fn new(addr: &str, opts: Options) -> Client {
        Client {
            addr: addr.to_string(),
            opts,
            conn: None,
            next_try: None,
            backoff: Options::FIRST_BACKOFF,
            last_failure: String::new(),
            reconnects: 0,
            connected_once: false,
        }
    }

    /// The daemon's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether a connection is open now.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Connections made after the first one (the daemon restarted, or a
    /// connection was dropped after an error).
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Connects unless connected; respects the backoff after failures.
    pub fn ensure(&mut self) -> Result<(), CachedError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let now = Instant::now();
        if let Some(t) = self.next_try
            && now < t
        {
            return Err(CachedError::Down {
                addr: self.addr.clone(),
                retry_in: t - now,
                last: self.last_failure.clone(),
            });
        }
        match open(&self.addr, self.opts.timeout) {
            Ok(s) => {
                self.conn = Some(BufReader::new(s));
                self.next_try = None;
                self.backoff = Options::FIRST_BACKOFF;
                if self.connected_once {
                    self.reconnects += 1;
                }
                self.connected_once = true;
                Ok(())
            }
            Err(e) => {
                self.last_failure = e.to_string();
                self.next_try = Some(now + self.backoff);
                self.backoff =
                    (self.backoff * 2).min(self.opts.max_backoff.max(Options::FIRST_BACKOFF));
                Err(self.io(e))
            }
        }
    }

    fn io(&self, source: std::io::Error) -> CachedError {
        CachedError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    /// The connection failed mid-request: it is never used again (a late
    /// reply would be read as the next request's). The next request
    /// connects at once; only a failed connect backs off.
    fn lost(&mut self, e: std::io::Error) -> CachedError {
        self.conn = None;
        self.next_try = None;
        self.io(e)
    }

    /// Runs one exchange on the connection; any failure drops it.
    fn exchange<T>(
        &mut self,
        f: impl FnOnce(&mut BufReader<Box<dyn Stream>>) -> std::io::Result<T>,
    ) -> Result<T, CachedError> {
        self.ensure()?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(self.io(std::io::ErrorKind::NotConnected.into()));
        };
        f(conn).map_err(|e| self.lost(e))
    }

    /// Sends one command line and reads the status line plus its detail lines.
    fn command(&mut self, line: &str) -> Result<Vec<String>, CachedError> {
        let (n, msg, lines) = self.exchange(|c| {
            c.get_mut().write_all(format!("{line}\n").as_bytes())?;
            let status = read_reply_line(c)?;
            let (n, msg) = parse_status(&status)?;
            let mut lines = Vec::new();
            for _ in 0..n.max(0) {
                lines.push(read_reply_line(c)?);
            }
            Ok((n, msg, lines))
        })?;
        if n < 0 {
            return Err(CachedError::Refused {
                addr: self.addr.clone(),
                command: line.into(),
                message: msg,
            });
        }
        Ok(lines)
    }

    /// `FLUSH <file>`: the daemon writes what it holds for the file.
    pub fn flush(&mut self, file: &Path) -> Result<(), CachedError> {
        let file = sendable(&file.to_string_lossy())?;
        self.command(&format!("FLUSH {file}")).map(|_| ())
    }

    /// `UPDATE <file> <T:v>…` in one request.
    pub fn update(&mut self, file: &Path, values: &[String]) -> Result<(), CachedError> {
        let file = sendable(&file.to_string_lossy())?;
        self.command(&format!("UPDATE {file} {}", values.join(" ")))
            .map(|_| ())
    }

    /// `BATCH` of many `UPDATE` lines, one reply; returns the per-line errors.
    pub fn batch(&mut self, updates: &[(String, Vec<String>)]) -> Result<Vec<String>, CachedError> {
        let mut body = String::from("BATCH\n");
        for (file, vals) in updates {
            body.push_str(&format!("UPDATE {} {}\n", sendable(file)?, vals.join(" ")));
        }
        body.push_str(".\n");
        self.exchange(|c| {
            c.get_mut().write_all(body.as_bytes())?;
            // "0 Go ahead.", then the summary status with its error lines.
            let go = read_reply_line(c)?;
            parse_status(&go)?;
            let status = read_reply_line(c)?;
            let (n, _) = parse_status(&status)?;
            let mut errs = Vec::new();
            for _ in 0..n.max(0) {
                errs.push(read_reply_line(c)?);
            }
            Ok(errs)
        })
    }
}

/// Longest reply line taken (rrdcached's own lines are far shorter): a
/// peer that never ends a line cannot make us buffer without bound.
const MAX_REPLY_LINE: u64 = 64 * 1024;

/// One reply line without its line end; the end of the stream or a line
/// without an end is an error (the daemon went away mid-reply).
fn read_reply_line(c: &mut BufReader<Box<dyn Stream>>) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    c.by_ref()
        .take(MAX_REPLY_LINE)
        .read_until(b'\n', &mut buf)?;
    if buf.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the connection ended in the middle of a reply",
        ));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `<n> <message>`: a status line must start with a number; anything else
/// means the stream is out of step with our requests.
fn parse_status(line: &str) -> std::io::Result<(i64, String)> {
    let (n, msg) = line.split_once(' ').unwrap_or((line, ""));
    let n: i64 = n.parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an rrdcached status line: {line:?}"),
        )
    })?;
    Ok((n, msg.to_string()))
}

/// The daemon's "last update time is T" from a refused update ("illegal
/// attempt to update using time X when last update time is T"): what it
/// already has, so a retry can send only what is newer.
pub fn refused_last_update(message: &str) -> Option<i64> {
    let (_, rest) = message.rsplit_once("last update time is ")?;
    let num: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let secs = num.split('.').next()?;
    secs.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_split_and_escape_like_rrdcached() {
        assert_eq!(split_fields("FLUSH /a/b.rrd"), ["FLUSH", "/a/b.rrd"]);
        // Two spaces make an empty field (FETCH skips empty DS names).
        assert_eq!(
            split_fields("FETCH f AVERAGE 1 2  sum"),
            ["FETCH", "f", "AVERAGE", "1", "2", "", "sum"]
        );
        assert_eq!(split_fields("a "), ["a", ""]);
        assert_eq!(split_fields(""), Vec::<String>::new());
        for name in [
            "/r/my host/m.rrd",
            "/r/back\\slash/x.rrd",
            "plain",
            " lead",
            "trail\\",
        ] {
            let line = format!("FLUSH {}", escape_field(name));
            assert_eq!(split_fields(&line), ["FLUSH", name], "{line}");
        }
        assert!(matches!(
            sendable("/r/a\nFLUSHALL.rrd"),
            Err(CachedError::Unsendable { .. })
        ));
        assert_eq!(sendable("/r/a b.rrd").unwrap(), "/r/a\\ b.rrd");
    }

    #[test]
    fn refused_updates_tell_what_the_daemon_has() {
        let m = "illegal attempt to update using time 1000000002.000000 when last update \
                 time is 1000000007.000000 (minimum one second step)";
        assert_eq!(refused_last_update(m), Some(1_000_000_007));
        assert_eq!(
            refused_last_update("1 illegal attempt ... last update time is 5"),
            Some(5)
        );
        assert_eq!(refused_last_update("No such file"), None);
    }

    /// A fake daemon on a unix socket: each accepted connection is handed
    /// to `serve` in turn.
    fn fake(
        dir: &Path,
        serve: Vec<Box<dyn FnOnce(UnixStream) + Send>>,
    ) -> (String, std::thread::JoinHandle<()>) {
        let sock = dir.join("fake.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            for f in serve {
                let (s, _) = l.accept().unwrap();
                f(s);
            }
        });
        (format!("unix:{}", sock.display()), t)
    }

    fn answer(mut s: UnixStream, replies: &[&str]) {
        let mut r = BufReader::new(s.try_clone().unwrap());
        for reply in replies {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            s.write_all(reply.as_bytes()).unwrap();
        }
    }

    #[test]
    fn a_dropped_connection_is_made_again_and_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, t) = fake(
            dir.path(),
            vec![
                // Answers once, then goes away mid-reply.
                Box::new(|s| answer(s, &["0 flushed\n", "0 part"])),
                // A new daemon.
                Box::new(|s| answer(s, &["0 flushed\n"])),
            ],
        );
        let mut c = Client::new(
            &addr,
            Options {
                timeout: Duration::from_secs(5),
                max_backoff: Duration::from_secs(1),
            },
        );
        c.flush(Path::new("/r/a.rrd")).unwrap();
        let e = c.flush(Path::new("/r/a.rrd")).unwrap_err();
        assert!(e.is_connection() && e.cause() == Cause::Transient, "{e}");
        assert!(!c.is_connected(), "a stream out of step is dropped");
        c.flush(Path::new("/r/a.rrd")).unwrap();
        assert_eq!(c.reconnects(), 1);
        t.join().unwrap();
    }

    #[test]
    fn a_daemon_that_does_not_answer_costs_one_timeout_then_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (addr, t) = fake(
            dir.path(),
            vec![
                // Reads the request and says nothing until told.
                Box::new(move |s| {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut line = String::new();
                    let _ = r.read_line(&mut line);
                    let _ = rx.recv();
                    // The late reply must never be taken for the next one.
                    let mut s = s;
                    let _ = s.write_all(b"0 late\n");
                }),
                Box::new(|s| answer(s, &["-1 No such file: /r/b.rrd\n"])),
            ],
        );
        let mut c = Client::new(
            &addr,
            Options {
                timeout: Duration::from_millis(200),
                max_backoff: Duration::from_secs(1),
            },
        );
        let e = c.flush(Path::new("/r/a.rrd")).unwrap_err();
        assert!(e.is_connection(), "{e}");
        tx.send(()).unwrap();
        let e = c.flush(Path::new("/r/b.rrd")).unwrap_err();
        assert!(
            matches!(&e, CachedError::Refused { message, .. } if message.contains("No such file")),
            "the new connection's own reply: {e}"
        );
        t.join().unwrap();
    }

    #[test]
    fn a_daemon_that_is_down_is_asked_again_after_a_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("unix:{}", dir.path().join("none.sock").display());
        let mut c = Client::new(&addr, Options::default());
        let e = c.flush(Path::new("/r/a.rrd")).unwrap_err();
        assert!(matches!(e, CachedError::Io { .. }), "{e}");
        // Within the backoff: refused at once, without a connect.
        let e = c.flush(Path::new("/r/a.rrd")).unwrap_err();
        assert!(matches!(e, CachedError::Down { .. }), "{e}");
        assert_eq!(e.cause(), Cause::Transient);
        assert!(Client::connect(&addr).is_err());
    }
}

//! rrdcached's text protocol: a minimal client for the existing daemon
//! (`FLUSH`, `UPDATE`, `BATCH`), over a unix socket (`unix:/path` or a path) or
//! TCP (`host:port`), and the field rules both ends share ([`escape_field`],
//! [`split_fields`]).

use crate::Cause;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;
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
    /// librrd's messages; a connection problem is [`Cause::Other`].
    pub fn cause(&self) -> Cause {
        match self {
            CachedError::Io { .. } | CachedError::Unsendable { .. } => Cause::Other,
            CachedError::Refused { message, .. } => Cause::of_message(message),
        }
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

/// A connection to rrdcached.
pub struct Client {
    addr: String,
    rd: BufReader<Box<dyn Stream>>,
}

impl Client {
    /// Connects to `unix:/path`, `/path`, or `host:port`.
    pub fn connect(addr: &str) -> Result<Client, CachedError> {
        let io = |source| CachedError::Io {
            addr: addr.to_string(),
            source,
        };
        let path = addr.strip_prefix("unix:").unwrap_or(addr);
        let stream: Box<dyn Stream> = if path.starts_with('/') {
            let s = UnixStream::connect(path).map_err(io)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .map_err(io)?;
            Box::new(s)
        } else {
            let s = TcpStream::connect(addr).map_err(io)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .map_err(io)?;
            Box::new(s)
        };
        Ok(Client {
            addr: addr.to_string(),
            rd: BufReader::new(stream),
        })
    }

    fn io(&self, source: std::io::Error) -> CachedError {
        CachedError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    /// Sends one command line and reads the status line plus its detail lines.
    fn command(&mut self, line: &str) -> Result<Vec<String>, CachedError> {
        self.rd
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| self.io(e))?;
        let mut status = String::new();
        self.rd.read_line(&mut status).map_err(|e| self.io(e))?;
        let (n, msg) = status
            .trim_end()
            .split_once(' ')
            .unwrap_or((status.trim_end(), ""));
        let n: i64 = n.parse().unwrap_or(-1);
        if n < 0 {
            return Err(CachedError::Refused {
                addr: self.addr.clone(),
                command: line.into(),
                message: msg.into(),
            });
        }
        let mut lines = Vec::new();
        for _ in 0..n {
            let mut l = String::new();
            self.rd.read_line(&mut l).map_err(|e| self.io(e))?;
            lines.push(l.trim_end().to_string());
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
        self.rd
            .get_mut()
            .write_all(body.as_bytes())
            .map_err(|e| self.io(e))?;
        // "0 Go ahead.", then the summary status with its error lines.
        let mut go = String::new();
        self.rd.read_line(&mut go).map_err(|e| self.io(e))?;
        let mut status = String::new();
        self.rd.read_line(&mut status).map_err(|e| self.io(e))?;
        let n: usize = status
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut errs = Vec::new();
        for _ in 0..n {
            let mut l = String::new();
            self.rd.read_line(&mut l).map_err(|e| self.io(e))?;
            errs.push(l.trim_end().to_string());
        }
        Ok(errs)
    }
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
}

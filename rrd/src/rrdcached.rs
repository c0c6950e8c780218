//! A minimal client for the existing rrdcached daemon's text protocol
//! (`FLUSH`, `UPDATE`, `BATCH`), over a unix socket (`unix:/path` or a path) or
//! TCP (`host:port`).

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
}

impl CachedError {
    /// What the failure says about the disk or the file: the daemon relays
    /// librrd's messages; a connection problem is [`Cause::Other`].
    pub fn cause(&self) -> Cause {
        match self {
            CachedError::Io { .. } => Cause::Other,
            CachedError::Refused { message, .. } => Cause::of_message(message),
        }
    }
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
        self.command(&format!("FLUSH {}", file.display()))
            .map(|_| ())
    }

    /// `UPDATE <file> <T:v>…` in one request.
    pub fn update(&mut self, file: &Path, values: &[String]) -> Result<(), CachedError> {
        self.command(&format!("UPDATE {} {}", file.display(), values.join(" ")))
            .map(|_| ())
    }

    /// `BATCH` of many `UPDATE` lines, one reply; returns the per-line errors.
    pub fn batch(&mut self, updates: &[(String, Vec<String>)]) -> Result<Vec<String>, CachedError> {
        let mut body = String::from("BATCH\n");
        for (file, vals) in updates {
            body.push_str(&format!("UPDATE {file} {}\n", vals.join(" ")));
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

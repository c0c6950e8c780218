//! rrdcached's protocol for readers, so tools that read RRD files "through the
//! daemon" see every sample the write-back cache holds: `rrdtool
//! fetch|graph|xport|info|first|last|lastupdate --daemon ADDRESS`,
//! ganglia-web's `$conf['rrdcached_socket']`, `rrd-export --daemon`. Each
//! request writes the cached samples of the file it names before reading it,
//! as rrdcached does with its own cache (`src/rrd_daemon.c`).
//!
//! The wire format is rrdcached's: one command per line, fields separated by
//! spaces ([`split_fields`]); a reply is `<n> <message>` followed by n lines,
//! or `-1 <message>`. Served: `FLUSH`, `FLUSHALL`, `FETCH`, `INFO`, `FIRST`,
//! `LAST`, `STATS`, `PING`, `HELP`, `QUIT`, with rrdcached's reply texts and
//! number formats (librrd's client parses them). The aggregator writes its
//! own tree, so the write commands (`UPDATE`, `BATCH`, `CREATE`, …) are
//! refused with a message saying so. A file is named as rrdcached clients
//! name it (absolute — librrd's client resolves symlinks when it talks over a
//! unix socket — or relative to `rrd_root`) and must lie inside `rrd_root`
//! and end in `.rrd`; anything else is `Permission denied`, rrdcached's
//! answer for a file outside its base directory.

use crate::config::Trusted;
use crate::diag::{self, Diag, Event, Level, LogAs};
use crate::flush_gate::{FlushGate, Ticket};
use crate::listen::{Admission, ConnPermit, Governor};
use crate::storage::{StorageCounters, StorageHandle};
use anyhow::Context;
use ganglion_rrd::plan::{FetchPlan, Header};
use ganglion_rrd::rrdcached::split_fields;
use ganglion_rrd::{InfoValue, RrdError};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

/// Longest request line, as rrdcached (`RRD_CMD_MAX`).
const MAX_LINE: usize = 4096;
/// Most rows one FETCH returns: the answer is text of about 37 bytes per row
/// and data source, so 1M rows is ~37 MB per data source for one client (the
/// socket's connections are capped). librrd's readers ask for a resolution,
/// and a year at gmetad's coarsest RRA is 52,704 rows.
const MAX_FETCH_ROWS: u64 = 1_000_000;
/// Latest FETCH time accepted: ten years ahead of now.
const MAX_FUTURE_SECS: i64 = 10 * 366 * 86_400;
/// How long a request waits for its file's cached samples to be written
/// before the file is read as it is (a request that arrives during a flush
/// pass is answered when the pass ends: about a minute at a million files).
const FLUSH_WAIT: Duration = Duration::from_secs(10);
/// A connection that sends no request for this long is closed, so idle
/// clients cannot hold every connection slot.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A reply not taken by the client within this long closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

const SERVED: &str = "FLUSH, FLUSHALL, FETCH, INFO, FIRST, LAST, STATS, PING, HELP and QUIT";

/// What requests act on: the writer and the tree.
pub struct Daemon {
    storage: StorageHandle,
    root: PathBuf,
    gate: Arc<FlushGate>,
    diag: Diag<&'static str>,
}

/// Something the socket refused (`-1 …`, or a connection closed at once):
/// every one is counted in `ganglion_rrd_daemon_errors_total`; a write
/// command and a file outside `rrd_root` are logged, once per 10 minutes
/// each (a client misconfigured to write here, or probing the tree).
enum Refused<'a> {
    /// A write command the socket does not serve.
    Unsupported { command: &'a str },
    /// A file outside `rrd_root` (or not an `.rrd`).
    Outside { file: &'a str, root: &'a Path },
    /// A client outside `trusted_hosts`.
    Untrusted,
    /// A request line over [`MAX_LINE`].
    TooLong,
    /// Any other refusal (bad arguments, no such file, librrd's errors…).
    Other,
}

impl Event for Refused<'_> {
    type Counters = StorageCounters;
    type Key = &'static str;
    const LEVEL: Level = Level::WARN;

    fn count(&self, c: &StorageCounters) {
        diag::inc(&c.daemon_errors);
    }

    fn log_as(&self) -> LogAs<&'static str> {
        match self {
            Refused::Unsupported { .. } => LogAs::PerKey("unsupported"),
            Refused::Outside { .. } => LogAs::PerKey("outside"),
            Refused::Untrusted | Refused::TooLong | Refused::Other => LogAs::Skip,
        }
    }

    fn log(&self, _: &StorageCounters) {
        match self {
            Refused::Unsupported { command } => diag::line!(
                Self::LEVEL,
                command = %command,
                "rrdcached socket: refused a command it does not serve (logged once per 10 minutes)"
            ),
            Refused::Outside { file, root } => diag::line!(
                Self::LEVEL,
                file = ?file,
                root = %root.display(),
                "rrdcached socket: refused a file outside rrd_root (logged once per 10 minutes)"
            ),
            Refused::Untrusted | Refused::TooLong | Refused::Other => {}
        }
    }
}

/// A `-1` answer, and which refusal it is.
struct Refusal {
    message: String,
    /// Set for a file outside the tree: the name asked for.
    outside: Option<String>,
    /// A write command the socket does not serve.
    unsupported: bool,
}

impl From<String> for Refusal {
    fn from(message: String) -> Refusal {
        Refusal {
            message,
            outside: None,
            unsupported: false,
        }
    }
}

impl From<&str> for Refusal {
    fn from(message: &str) -> Refusal {
        Refusal::from(message.to_string())
    }
}

/// A bound listener: a unix socket (removed again when dropped) or TCP.
pub enum Listener {
    /// `unix:/path` or `/path`.
    Unix(UnixListener, SocketFile),
    /// `host:port`, checked against `trusted_hosts`.
    Tcp(TcpListener),
}

/// The socket file of a unix listener, removed when the listener goes.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Listener {
    /// Binds `address` (`unix:/path`, `/path` or `host:port`); a unix socket
    /// gets permissions `mode`. A socket file left by a process that is gone
    /// is replaced; one that still answers is an error.
    pub async fn bind(key: &str, address: &str, mode: u32) -> anyhow::Result<Listener> {
        let Some(path) = unix_path(address) else {
            let a = crate::config::parse_addr(key, address)?;
            let l = TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} ({key})"))?;
            return Ok(Listener::Tcp(l));
        };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                anyhow::bail!("{key}: {} exists and is not a socket", path.display());
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!("{key}: another process serves {}", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("{key}: cannot replace {}", path.display()))?;
        }
        let l = UnixListener::bind(path)
            .with_context(|| format!("cannot listen on {} ({key})", path.display()))?;
        let file = SocketFile(path.to_path_buf());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("{key}: cannot set the mode of {}", path.display()))?;
        Ok(Listener::Unix(l, file))
    }

    /// The bound address, for the log.
    pub fn describe(&self) -> String {
        match self {
            Listener::Unix(_, f) => format!("unix:{}", f.0.display()),
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string()),
        }
    }
}

pub use crate::addr::unix_path;

/// Who may use a TCP listener (unix sockets are guarded by their mode).
pub struct Trust {
    /// `trusted_hosts`.
    pub trusted: Arc<Vec<Trusted>>,
    /// `all_trusted`.
    pub all: bool,
}

/// Accepts connections until shutdown, each under a permit of `governor`
/// (`limits.daemon_max_connections`, and per client address on TCP).
pub async fn serve(
    listener: Listener,
    daemon: Arc<Daemon>,
    trust: Trust,
    governor: Arc<Governor>,
    shutdown: CancellationToken,
) {
    loop {
        let admitted = match &listener {
            Listener::Unix(l, _) => {
                governor
                    .accept(&shutdown, || async {
                        l.accept().await.map(|(s, _)| (Conn::Unix(s), None))
                    })
                    .await
            }
            Listener::Tcp(l) => {
                governor
                    .accept(&shutdown, || async {
                        l.accept().await.map(|(s, p)| (Conn::Tcp(s), Some(p)))
                    })
                    .await
            }
        };
        let (conn, peer, permit) = match admitted {
            None => return,
            Some(Admission::Serve(c, peer, permit)) => (c, peer, permit),
            // Over `limits.daemon_max_connections_per_ip`: closed at once.
            Some(Admission::OverIpCap(..)) | Some(Admission::OverCap(..)) => continue,
        };
        if let Some(p) = peer
            && !crate::config::trusts(&trust.trusted, trust.all, p.ip())
        {
            // Outside trusted_hosts: closed without a reply, as gmetad's
            // ports do, and counted as an error.
            daemon.refused(Refused::Untrusted);
            continue;
        }
        let (d, sd) = (daemon.clone(), shutdown.clone());
        match conn {
            Conn::Unix(s) => spawn_session(s, d, sd, permit),
            Conn::Tcp(s) => spawn_session(s, d, sd, permit),
        }
    }
}

/// Serves one connection on its own task, holding its connection slot.
fn spawn_session<S: AsyncRead + AsyncWrite + Send + 'static>(
    s: S,
    daemon: Arc<Daemon>,
    shutdown: CancellationToken,
    slot: ConnPermit,
) {
    tokio::spawn(async move {
        session(s, daemon, shutdown).await;
        drop(slot);
    });
}

enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

/// Reads request lines and answers each until the client quits or goes.
async fn session<S: AsyncRead + AsyncWrite>(
    s: S,
    daemon: Arc<Daemon>,
    shutdown: CancellationToken,
) {
    let (r, mut w) = tokio::io::split(s);
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut r).take(MAX_LINE as u64 + 1);
        let read = tokio::select! {
            _ = shutdown.cancelled() => return,
            n = tokio::time::timeout(IDLE_TIMEOUT, limited.read_until(b'\n', &mut line)) => n,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
        let too_long = !line.ends_with(b"\n") && line.len() > MAX_LINE;
        let reply = if too_long {
            daemon.refused(Refused::TooLong);
            Some("-1 Command too long\n".to_string())
        } else {
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            let d = daemon.clone();
            tokio::task::spawn_blocking(move || d.handle(&text))
                .await
                .unwrap_or_else(|_| Some("-1 Internal error\n".into()))
        };
        let Some(reply) = reply else {
            return; // QUIT
        };
        let sent = tokio::time::timeout(WRITE_TIMEOUT, w.write_all(reply.as_bytes())).await;
        if too_long || !matches!(sent, Ok(Ok(()))) {
            return;
        }
    }
}

/// A successful reply: `<lines> <message>` and the lines.
fn ok(message: &str, body: &str) -> String {
    format!("{} {message}\n{body}", body.matches('\n').count())
}

fn refuse(message: &str) -> String {
    format!("-1 {message}\n")
}

impl Daemon {
    /// Requests flush through `storage`; files must lie in `root` (absolute).
    /// `FLUSHALL` goes through `gate`, shared with `POST /api/flush`.
    pub fn new(storage: StorageHandle, root: PathBuf, gate: Arc<FlushGate>) -> Daemon {
        Daemon {
            storage,
            root,
            gate,
            diag: Diag::new(Duration::from_secs(600)),
        }
    }

    /// Counts (and maybe logs) one refusal.
    fn refused(&self, r: Refused<'_>) {
        self.diag.emit(r, &self.storage.counters);
    }

    /// Answers one request line; `None` closes the connection (`QUIT`).
    pub fn handle(&self, line: &str) -> Option<String> {
        let fields = split_fields(line);
        let Some(cmd) = fields.first() else {
            self.refused(Refused::Other);
            return Some(refuse("Empty command"));
        };
        let cmd = cmd.to_ascii_uppercase();
        let args = &fields[1..];
        self.storage
            .counters
            .daemon_requests
            .fetch_add(1, Ordering::Relaxed);
        let reply: Result<String, Refusal> = match cmd.as_str() {
            "QUIT" => return None,
            "PING" => Ok(ok("PONG", "")),
            "HELP" => Ok(help()),
            "STATS" => Ok(self.stats()),
            "FLUSHALL" => {
                // rrdcached answers before the pass is done; so do we. The
                // gate joins the running or queued pass, so a flood of
                // FLUSHALL costs at most two passes, never one each.
                match self.gate.request() {
                    Ticket::Pass(_) => Ok(ok("Started flush.", "")),
                    Ticket::RateLimited(d) => Err(format!(
                        "Flush rate limited: a full flush ran less than {} s ago; retry in {} s",
                        self.gate.min_interval().as_secs(),
                        d.as_secs() + 1
                    )
                    .into()),
                }
            }
            "FLUSH" => self.flush(args),
            "FETCH" => self.fetch(args),
            "INFO" => self.info(args),
            "FIRST" => self.first(args),
            "LAST" => self.last(args),
            "UPDATE" | "BATCH" | "CREATE" | "FORGET" | "WROTE" | "SUSPEND" | "RESUME"
            | "SUSPENDALL" | "RESUMEALL" | "TUNE" | "DUMP" | "FETCHBIN" | "PENDING" | "QUEUE"
            | "LIST" => Err(Refusal {
                unsupported: true,
                ..Refusal::from(format!(
                    "{cmd} is not available: ganglion-aggregator writes its own RRD files; this socket serves {SERVED}"
                ))
            }),
            _ => Err(format!("Unknown command: {cmd}").into()),
        };
        Some(reply.unwrap_or_else(|r| {
            self.refused(match (&r.outside, r.unsupported) {
                (Some(file), _) => Refused::Outside {
                    file,
                    root: &self.root,
                },
                (None, true) => Refused::Unsupported { command: &cmd },
                (None, false) => Refused::Other,
            });
            refuse(&r.message)
        }))
    }

    /// The file a request names, inside the tree, or rrdcached's refusal.
    fn file(&self, name: &str) -> Result<PathBuf, Refusal> {
        resolve(&self.root, name).ok_or_else(|| Refusal {
            outside: Some(name.to_string()),
            ..Refusal::from(format!("{name}: Permission denied"))
        })
    }

    /// Writes the file's cached samples; reading goes on when that takes
    /// longer than [`FLUSH_WAIT`] (a stale file beats no answer).
    fn write_cached(&self, path: &Path) -> bool {
        self.storage.flush(vec![path.to_path_buf()], FLUSH_WAIT)
    }

    fn flush(&self, args: &[String]) -> Result<String, Refusal> {
        let [name] = args else {
            return Err("Usage: FLUSH <filename>".into());
        };
        let path = self.file(name)?;
        if !self.write_cached(&path) {
            return Err(format!(
                "Flush of {} did not finish within {} s",
                path.display(),
                FLUSH_WAIT.as_secs()
            )
            .into());
        }
        if path.is_file() {
            Ok(ok(&format!("Successfully flushed {}.", path.display()), ""))
        } else {
            Err(format!("No such file: {}.", path.display()).into())
        }
    }

    fn fetch(&self, args: &[String]) -> Result<String, Refusal> {
        let [name, cf, rest @ ..] = args else {
            return Err("Usage: FETCH <filename> <CF> [<start> [<end> [<ds>...]]]".into());
        };
        let path = self.file(name)?;
        self.write_cached(&path);
        let now = crate::state::now_secs() as i64;
        let start = rest
            .first()
            .map_or(Ok(now - 86400), |s| fetch_time("start", s, now))?;
        let end = rest.get(1).map_or(Ok(now), |s| fetch_time("end", s, now))?;
        // rrdcached asks for step -1 (as a C long), so librrd picks the
        // finest archive that covers the range; a resolution of 1 ranks the
        // archives the same way. librrd allocates every row of the range at
        // once, so a range of a billion rows is refused rather than allocated.
        let info = ganglion_rrd::info(&path)
            .map_err(|e| format!("rrd_fetch_r failed: {}", librrd_message(&e)))?;
        if let Some(plan) =
            Header::from_info(&info).and_then(|h| FetchPlan::new(&h, cf, start, end, 1))
            && plan.rows() > MAX_FETCH_ROWS
        {
            return Err(format!(
                "The range {start}..{end} is {} rows of {} s; at most {MAX_FETCH_ROWS} rows per FETCH",
                plan.rows(),
                plan.step
            )
            .into());
        }
        let f = ganglion_rrd::fetch(&path, cf, start, end, 1)
            .map_err(|e| format!("rrd_fetch_r failed: {}", librrd_message(&e)))?;
        let mut fields = Vec::new();
        for name in rest.iter().skip(2).filter(|n| !n.is_empty()) {
            let Some(i) = f.ds_names.iter().position(|d| d == name) else {
                return Err(format!("field {name} not found in {}", path.display()).into());
            };
            if fields.contains(&i) {
                return Err(format!("field {name} already used").into());
            }
            fields.push(i);
        }
        if fields.is_empty() {
            fields = (0..f.ds_names.len()).collect();
        }
        let n = f.ds_names.len();
        let mut body = String::with_capacity(64 + f.rows() * (12 + 25 * fields.len()));
        let _ = writeln!(
            body,
            "FlushVersion: 1\nStart: {}\nEnd: {}\nStep: {}",
            f.start, f.end, f.step
        );
        let names: Vec<&str> = fields.iter().map(|&i| f.ds_names[i].as_str()).collect();
        let _ = writeln!(
            body,
            "DSCount: {}\nDSName: {}",
            fields.len(),
            names.join(" ")
        );
        for row in 0..f.rows() {
            let _ = write!(body, "{:>10}:", f.time(row));
            for &i in &fields {
                body.push(' ');
                body.push_str(&c_exp(f.data[row * n + i], 17));
            }
            body.push('\n');
        }
        Ok(ok("Success", &body))
    }

    /// The file a request names, its cache written, and librrd's info of it.
    fn cached_info(&self, name: &str) -> Result<(PathBuf, Vec<(String, InfoValue)>), Refusal> {
        let path = self.file(name)?;
        self.write_cached(&path);
        let info = ganglion_rrd::info(&path).map_err(rrd_error)?;
        Ok((path, info))
    }

    fn info(&self, args: &[String]) -> Result<String, Refusal> {
        let [name] = args else {
            return Err("Usage: INFO <filename>".into());
        };
        let (path, info) = self.cached_info(name)?;
        let mut body = String::new();
        for (key, v) in info {
            // librrd's rrd_info_type numbers: VAL, CNT, STR, INT, BLO.
            let _ = match v {
                InfoValue::Val(x) if x.is_nan() => writeln!(body, "{key} 0 NaN"),
                InfoValue::Val(x) => writeln!(body, "{key} 0 {}", c_exp(x, 10)),
                InfoValue::Count(c) => writeln!(body, "{key} 1 {c}"),
                InfoValue::Str(s) => writeln!(body, "{key} 2 {s}"),
                InfoValue::Int(i) => writeln!(body, "{key} 3 {i}"),
                InfoValue::Blob(n) => writeln!(body, "{key} 4 {n}"),
            };
        }
        Ok(ok(&format!("Info for {} follows", path.display()), &body))
    }

    fn first(&self, args: &[String]) -> Result<String, Refusal> {
        let [name, index] = args else {
            return Err("Usage: FIRST <filename> <rra index>".into());
        };
        let path = self.file(name)?;
        let Ok(rra) = index.parse::<u32>() else {
            return Err(format!("Invalid index specified ({index})").into());
        };
        self.write_cached(&path);
        let t = ganglion_rrd::first(&path, rra).map_err(rrd_error)?;
        Ok(ok(&t.to_string(), ""))
    }

    fn last(&self, args: &[String]) -> Result<String, Refusal> {
        let [name] = args else {
            return Err("Usage: LAST <filename>".into());
        };
        let (_, info) = self.cached_info(name)?;
        let count = |k: &str| {
            info.iter().find_map(|(key, v)| match v {
                InfoValue::Count(c) if key == k => Some(*c),
                _ => None,
            })
        };
        match (count("last_update"), count("step")) {
            // rrdcached answers the last update rounded down to the step.
            (Some(t), Some(step)) if step > 0 && t >= step => {
                Ok(ok(&(t - t % step).to_string(), ""))
            }
            _ => Err("Error: rrdcached: Invalid timestamp returned".into()),
        }
    }

    fn stats(&self) -> String {
        let c = &self.storage.counters;
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        // rrdcached's names for what the writer counts: samples taken in,
        // file writes, samples written.
        let body = format!(
            "UpdatesReceived: {}\nUpdatesWritten: {}\nDataSetsWritten: {}\n",
            g(&c.samples),
            g(&c.file_writes),
            g(&c.samples_written),
        );
        ok("Statistics follow", &body)
    }
}

fn help() -> String {
    let body = [
        "Commands served (rrdcached's protocol, read side):",
        "FLUSH <filename>",
        "FLUSHALL",
        "FETCH <filename> <CF> [<start> [<end> [<ds>...]]]",
        "INFO <filename>",
        "FIRST <filename> <rra index>",
        "LAST <filename>",
        "STATS",
        "PING",
        "HELP",
        "QUIT",
    ]
    .join("\n");
    ok("Command overview", &(body + "\n"))
}

/// librrd's own message, without our "op path:" prefix (rrdcached relays
/// librrd's text as it is).
fn librrd_message(e: &RrdError) -> String {
    match e {
        RrdError::Librrd { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// rrdcached's reply text for a failed librrd call.
fn rrd_error(e: RrdError) -> String {
    format!("RRD Error: {}", librrd_message(&e))
}

/// A FETCH time as rrdcached reads it: an integer; positive is absolute,
/// zero or negative is relative to now.
fn fetch_time(which: &str, s: &str, now: i64) -> Result<i64, String> {
    let t = match s.parse::<i64>() {
        Ok(v) if v > 0 => v,
        Ok(v) => now.saturating_add(v),
        Err(_) => {
            return Err(format!(
                "Cannot parse {which} time `{s}': Only simple integers are allowed."
            ));
        }
    };
    // Times librrd could not plan anyway (before 1970, or past any RRD's
    // life) are refused here, before any arithmetic on them.
    if t <= 0 || t > now.saturating_add(MAX_FUTURE_SECS) {
        return Err(format!(
            "{which} time {t} is out of range (1 .. now + 10 years)"
        ));
    }
    Ok(t)
}

/// The file `name` refers to, when it is an `.rrd` inside `root`: relative
/// names are taken from `root`, `..` is never followed.
pub fn resolve(root: &Path, name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('\0') {
        return None;
    }
    let given = Path::new(name);
    let joined = if given.is_absolute() {
        given.to_path_buf()
    } else {
        root.join(given)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::RootDir | Component::Normal(_) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    let inside = out.starts_with(root) && out != root;
    (inside && out.extension().is_some_and(|e| e == "rrd")).then_some(out)
}

/// A double as C's `printf("%.*e")` writes it (`1.50000e+02`, `-nan`,
/// `-inf`): what rrdcached sends, and what librrd's client reads back. The
/// sign of a NaN is kept: librrd's unknown is a negative NaN, which
/// `rrdtool fetch` prints as `-nan`.
pub fn c_exp(x: f64, precision: usize) -> String {
    if x.is_nan() {
        return if x.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let s = format!("{x:.precision$e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_counted_and_two_kinds_are_logged_once() {
        let c = StorageCounters::default();
        let d: Diag<&'static str> = Diag::new(Duration::from_secs(600));
        let root = Path::new("/r");
        let ((), sink) = crate::diag::testing::logging(|| {
            for _ in 0..3 {
                d.emit(Refused::Unsupported { command: "UPDATE" }, &c);
                d.emit(
                    Refused::Outside {
                        file: "/etc/passwd",
                        root,
                    },
                    &c,
                );
                d.emit(Refused::Other, &c);
                d.emit(Refused::Untrusted, &c);
                d.emit(Refused::TooLong, &c);
            }
        });
        assert_eq!(c.daemon_errors.load(Ordering::Relaxed), 15);
        assert_eq!(sink.lines("refused a command it does not serve"), 1);
        assert_eq!(sink.lines("refused a file outside rrd_root"), 1);
        assert_eq!(sink.lines("rrdcached socket"), 2);
    }

    #[test]
    fn numbers_are_written_as_c_does() {
        assert_eq!(c_exp(150.0, 5), "1.50000e+02");
        assert_eq!(c_exp(0.0, 3), "0.000e+00");
        assert_eq!(c_exp(-2.5e-7, 2), "-2.50e-07");
        assert_eq!(c_exp(1e300, 1), "1.0e+300");
        assert_eq!(c_exp(f64::NAN, 17), "nan");
        assert_eq!(c_exp(-f64::NAN, 17), "-nan");
        assert_eq!(c_exp(f64::NEG_INFINITY, 17), "-inf");
        // 17 digits carry every double exactly.
        for x in [0.1, 1.0 / 3.0, 123456.789, f64::MIN_POSITIVE, f64::MAX] {
            assert_eq!(c_exp(x, 17).parse::<f64>().unwrap(), x);
        }
    }

    #[test]
    fn only_rrd_files_inside_the_root_are_served() {
        let root = Path::new("/var/lib/ganglion/rrds");
        let inside = PathBuf::from("/var/lib/ganglion/rrds/web/host1/load_one.rrd");
        assert_eq!(
            resolve(root, "/var/lib/ganglion/rrds/web/host1/load_one.rrd"),
            Some(inside.clone())
        );
        assert_eq!(
            resolve(root, "web/host1/load_one.rrd"),
            Some(inside.clone())
        );
        assert_eq!(resolve(root, "./web/./host1/load_one.rrd"), Some(inside));
        for bad in [
            "",
            "/etc/passwd",
            "/var/lib/ganglion/rrds",
            "/var/lib/ganglion/rrds/../secret.rrd",
            "web/../../other.rrd",
            "../rrds/web/x.rrd",
            "/var/lib/ganglion/rrds-other/x.rrd",
            "/var/lib/ganglion/rrds/web/host1/notes.txt",
            "web/a\0b.rrd",
        ] {
            assert_eq!(resolve(root, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fetch_times_like_rrdcached() {
        assert_eq!(
            fetch_time("start", "1700000000", 1_700_000_500),
            Ok(1700000000)
        );
        assert_eq!(fetch_time("start", "-300", 1000), Ok(700));
        assert_eq!(fetch_time("end", "0", 1000), Ok(1000));
        let e = fetch_time("start", "now-1h", 1000).unwrap_err();
        assert!(e.contains("Only simple integers"), "{e}");
        // Before 1970 or beyond ten years from now: refused before planning.
        assert!(fetch_time("start", "-2000", 1000).is_err());
        assert!(fetch_time("end", &i64::MAX.to_string(), 1000).is_err());
        assert!(fetch_time("end", &(1000 + MAX_FUTURE_SECS).to_string(), 1000).is_ok());
    }

    #[test]
    fn replies_count_their_lines() {
        assert_eq!(ok("PONG", ""), "0 PONG\n");
        assert_eq!(ok("Info", "a 1 2\nb 2 x\n"), "2 Info\na 1 2\nb 2 x\n");
        assert!(help().starts_with(&format!(
            "{} Command overview\n",
            help().lines().count() - 1
        )));
    }
}

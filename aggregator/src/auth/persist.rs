//! The sender state file: replay protection across aggregator restarts.
//!
//! Without it a restarted aggregator knows no sender, and a captured
//! datagram newer than anything seen since would be accepted once. The
//! state of every authenticated cluster's senders (identity, epoch, salt and
//! a *limit*: every counter up to it is refused after a restart) is written
//! to `.ganglion-auth-senders` under `rrd_root`, beside the journal:
//!
//! - **Atomically**: a temporary file, `fsync`, rename, `fsync` of the
//!   directory. A reader sees the old file or the new one.
//! - **Checksummed**: a marker line, one JSON line, and `crc32 <hex>` of
//!   that line. A torn, corrupt or foreign file is reported once and
//!   ignored (the aggregator starts as without one); it is never trusted.
//! - **When**: every [`PERIOD`] if anything was accepted, early (at most
//!   once per [`MIN_SPACING`]) when a sender goes past what the file refuses
//!   (a new sender, a new epoch, a one-shot run, a daemon past its reserve),
//!   and exactly at shutdown, after the UDP receivers stopped.
//! - **Reserve**: a periodic write refuses through a daemon's highest
//!   counter plus twice its advance since the previous write
//!   ([`super::senders::RESERVE_MIN`] … [`super::senders::RESERVE_MAX`]),
//!   so the datagrams it accepts until the next write are already refused
//!   after a crash. The shutdown write has no reserve.
//!
//! Loaded senders are conservative: every counter up to the limit counts as
//! seen, older epochs are stale, and their first datagram after the restart
//! re-derives the subkey (one session from `auth.max_new_sessions_per_sec`).

use super::Registry;
use super::senders::Persisted;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The file's name under `rrd_root`.
pub const FILE_NAME: &str = ".ganglion-auth-senders";
/// First line of the file.
const MARKER: &str = "#ganglion-auth-senders v1";
/// Periodic write interval (when anything was accepted).
pub const PERIOD: Duration = Duration::from_secs(10);
/// Least time between two writes woken by senders past the file.
pub const MIN_SPACING: Duration = Duration::from_secs(1);

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not this file's format (another program's file, or another version).
    #[error("not a ganglion sender state file (no {MARKER:?} line)")]
    Foreign,
    /// Torn or altered: the checksum does not match.
    #[error("checksum mismatch (torn or altered file)")]
    Checksum,
    /// The checksummed body is not the expected JSON.
    #[error("unreadable body: {0}")]
    Body(#[from] serde_json::Error),
    /// Larger than the sender caps allow: not written by us.
    #[error("larger than {0} bytes, more than the sender caps allow")]
    TooLarge(u64),
}

/// Bytes a file may hold per allowed sender: its line and up to four
/// keyed host names and addresses, with room for long names.
const BYTES_PER_SENDER: u64 = 8 << 10;

#[derive(Debug, Serialize, Deserialize)]
struct FileBody {
    clusters: Vec<ClusterBody>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ClusterBody {
    name: String,
    senders: Vec<SenderBody>,
    keyed_ips: Vec<IpAddr>,
    keyed_hosts: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SenderBody {
    id: u32,
    oneshot: bool,
    key_id: u16,
    epoch: u32,
    salt: u32,
    limit: u64,
    host: Option<String>,
}

impl From<&Persisted> for SenderBody {
    fn from(p: &Persisted) -> Self {
        SenderBody {
            id: p.sender_id,
            oneshot: p.oneshot,
            key_id: p.key_id,
            epoch: p.epoch,
            salt: p.salt,
            limit: p.limit,
            host: p.host.clone(),
        }
    }
}

impl From<SenderBody> for Persisted {
    fn from(b: SenderBody) -> Self {
        Persisted {
            sender_id: b.id,
            oneshot: b.oneshot,
            key_id: b.key_id,
            epoch: b.epoch,
            salt: b.salt,
            limit: b.limit,
            host: b.host,
        }
    }
}

/// Encodes the file: marker, JSON line, checksum line.
fn encode(body: &FileBody) -> Result<Vec<u8>, serde_json::Error> {
    let json = serde_json::to_vec(body)?;
    let mut out = Vec::with_capacity(json.len() + 64);
    out.extend_from_slice(MARKER.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&json);
    out.push(b'\n');
    out.extend_from_slice(format!("crc32 {:08x}\n", crc32fast::hash(&json)).as_bytes());
    Ok(out)
}

/// Decodes a whole file; anything but an intact one of ours is an error.
fn decode(bytes: &[u8]) -> Result<FileBody, StateError> {
    let rest = bytes
        .strip_prefix(MARKER.as_bytes())
        .and_then(|r| r.strip_prefix(b"\n"))
        .ok_or(StateError::Foreign)?;
    let nl = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(StateError::Checksum)?;
    let (json, tail) = (&rest[..nl], &rest[nl + 1..]);
    let want = format!("crc32 {:08x}\n", crc32fast::hash(json));
    if tail != want.as_bytes() {
        return Err(StateError::Checksum);
    }
    Ok(serde_json::from_slice(json)?)
}

/// Reads the file, refusing more than `max` bytes; `None` when absent.
fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>, StateError> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = Vec::new();
    f.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(StateError::TooLarge(max));
    }
    Ok(Some(bytes))
}

/// Writes `bytes` to `path` atomically and durably.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename itself must survive a crash.
    std::fs::File::open(dir)?.sync_all()
}

/// The state file of a [`Registry`].
pub struct StateFile {
    path: PathBuf,
    registry: Arc<Registry>,
    /// Serialises writes; `true` once the shutdown write is done (a late
    /// periodic write must not add a reserve after it).
    closed: Mutex<bool>,
    /// The last write failed (logged once until one succeeds).
    failing: AtomicBool,
}

impl StateFile {
    /// The state file under `root` for the clusters that authenticate,
    /// loaded into their sender tables; `None` when none does.
    pub fn open(registry: &Arc<Registry>, root: &Path) -> Option<Arc<StateFile>> {
        if !registry.any() {
            return None;
        }
        let s = StateFile {
            path: root.join(FILE_NAME),
            registry: registry.clone(),
            closed: Mutex::new(false),
            failing: AtomicBool::new(false),
        };
        s.load();
        Some(Arc::new(s))
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) {
        let max = self
            .registry
            .clusters
            .iter()
            .flatten()
            .map(|c| c.table().cap() as u64)
            .sum::<u64>()
            .saturating_mul(BYTES_PER_SENDER)
            .max(1 << 20);
        let bytes = match read_bounded(&self.path, max) {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => return self.ignore(&e),
        };
        let body = match decode(&bytes) {
            Ok(b) => b,
            Err(e) => return self.ignore(&e),
        };
        for c in body.clusters {
            let Some(auth) = self
                .registry
                .clusters
                .iter()
                .flatten()
                .find(|a| a.cluster == c.name)
            else {
                // A cluster removed or turned off since: nothing to protect.
                continue;
            };
            let senders: Vec<Persisted> = c.senders.into_iter().map(Persisted::from).collect();
            let mut t = auth.table();
            t.restore(&senders, &c.keyed_ips, &c.keyed_hosts);
            // Restored state is what the file holds: nothing to write yet.
            t.mark_written(&senders);
            tracing::info!(cluster = %auth.cluster, senders = t.len(),
                "sender state restored: counters seen before the restart stay refused");
        }
    }

    fn ignore(&self, e: &StateError) {
        tracing::warn!(path = %self.path.display(), error = %e,
            "sender state file ignored: replay protection starts empty (captured datagrams newer than anything seen since the restart are accepted once)");
    }

    /// Whether any cluster accepted something since the last write.
    pub fn dirty(&self) -> bool {
        self.registry
            .clusters
            .iter()
            .flatten()
            .any(|c| c.table().dirty())
    }

    /// Writes every cluster's senders (`exact`: no reserve, for the
    /// shutdown write). Failures are counted and logged once until a write
    /// succeeds again.
    pub fn write(&self, exact: bool) {
        let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        if *closed {
            return;
        }
        let mut exported = Vec::new();
        let mut body = FileBody {
            clusters: Vec::new(),
        };
        for c in self.registry.clusters.iter().flatten() {
            let (senders, ips, hosts) = c.table().export(exact);
            body.clusters.push(ClusterBody {
                name: c.cluster.clone(),
                senders: senders.iter().map(SenderBody::from).collect(),
                keyed_ips: ips,
                keyed_hosts: hosts,
            });
            exported.push((c, senders));
        }
        let r = encode(&body)
            .map_err(StateError::from)
            .and_then(|bytes| write_atomic(&self.path, &bytes).map_err(StateError::from));
        match r {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(path = %self.path.display(), "sender state written again");
                }
                let mut again = false;
                for (c, senders) in &exported {
                    again |= c.table().mark_written(senders);
                }
                if again {
                    self.registry.counters.state_wake.notify_one();
                }
            }
            Err(e) => {
                crate::diag::inc(&self.registry.counters.state_write_failures);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(path = %self.path.display(), error = %e,
                        "cannot write the sender state file: after a restart, datagrams accepted since the last good write could be replayed once (logged once until a write succeeds)");
                }
            }
        }
        *closed = exact;
    }

    /// Writes periodically and when woken, until `shutdown`. The exact
    /// final write is [`StateFile::write`]`(true)`, done by the caller once
    /// the receivers stopped.
    pub fn spawn(
        self: &Arc<Self>,
        tasks: &mut tokio::task::JoinSet<()>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let me = self.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last = tokio::time::Instant::now();
            loop {
                let woken = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => false,
                    _ = me.registry.counters.state_wake.notified() => true,
                };
                if woken {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep_until(last + MIN_SPACING) => {}
                    }
                } else if !me.dirty() {
                    continue;
                }
                let w = me.clone();
                let _ = tokio::task::spawn_blocking(move || w.write(false)).await;
                last = tokio::time::Instant::now();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AuthCounters, ClusterAuth, Outcome};
    use super::*;
    use crate::config::AuthMode;
    use ganglion_proto::envelope::{self, Alg, Header, KeyFile, Secret, SubKey};
    use std::net::SocketAddr;
    use std::os::unix::fs::PermissionsExt;

    fn secret() -> Secret {
        Secret {
            key_id: 1,
            alg: Alg::ChaCha20Poly1305,
            bytes: [9; 32],
        }
    }

    /// A registry with one `required` cluster "web" keyed from `dir`.
    fn registry(dir: &Path) -> Arc<Registry> {
        let key = dir.join("web.key");
        if !key.exists() {
            let kf = KeyFile {
                secret: secret(),
                encrypt: false,
                sender_id: None,
            };
            std::fs::write(&key, kf.to_text()).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let counters = Arc::new(AuthCounters::default());
        let c = ClusterAuth::new("web", AuthMode::Required, &[key], 10, 100, counters.clone())
            .unwrap()
            .unwrap();
        Arc::new(Registry {
            clusters: vec![Some(Arc::new(c))],
            counters,
        })
    }

    fn datagram(counter: u64) -> Vec<u8> {
        let h = Header {
            alg: Alg::ChaCha20Poly1305,
            flags: 0,
            key_id: 1,
            sender_id: 3,
            epoch: 1_700_000_000,
            salt: 5,
            counter,
        };
        let mut out = Vec::new();
        envelope::seal(
            &SubKey::derive(&secret(), &h).unwrap(),
            &h,
            b"xdr",
            &mut out,
        )
        .unwrap();
        out
    }

    /// Whether `r`'s cluster accepts the datagram with `counter`.
    fn accepts(r: &Registry, counter: u64) -> bool {
        let src = SocketAddr::from(([10, 0, 0, 1], 8649));
        let c = r.clusters[0].as_ref().unwrap();
        matches!(
            c.check(&mut datagram(counter), src, 1),
            Outcome::Authentic { .. }
        )
    }

    #[test]
    fn a_restart_refuses_what_the_previous_process_accepted_and_a_bad_file_is_ignored() {
        let keys = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let first = registry(keys.path());
        let file = StateFile::open(&first, root.path()).unwrap();
        assert!((0..5).all(|c| accepts(&first, c)));
        // A periodic write (with its reserve), then a crash.
        file.write(false);
        let path = file.path().to_path_buf();
        drop(file);
        let second = registry(keys.path());
        let _file = StateFile::open(&second, root.path()).unwrap();
        assert!((0..5).all(|c| !accepts(&second, c)));
        // The live sender past the reserve is accepted.
        assert!(accepts(
            &second,
            5 + super::super::senders::RESERVE_MIN + 100
        ));

        // Each kind of bad file is ignored (the process starts as without
        // one) and never crashes the load.
        let good = std::fs::read(&path).unwrap();
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x10;
        for bad in [
            good[..good.len() - 3].to_vec(),
            flipped,
            b"#ganglion-journal v2\n".to_vec(),
            vec![0xff; 64],
        ] {
            std::fs::write(&path, &bad).unwrap();
            let r = registry(keys.path());
            let _f = StateFile::open(&r, root.path()).unwrap();
            assert!(accepts(&r, 0), "a bad file must not restore anything");
        }
        // Too large for the caps: refused without being parsed.
        std::fs::write(&path, vec![b' '; 2 << 20]).unwrap();
        assert!(matches!(
            read_bounded(&path, 1 << 20),
            Err(StateError::TooLarge(_))
        ));
    }

    fn body() -> FileBody {
        FileBody {
            clusters: vec![ClusterBody {
                name: "web".into(),
                senders: vec![SenderBody {
                    id: 7,
                    oneshot: false,
                    key_id: 1,
                    epoch: 1_700_000_000,
                    salt: 42,
                    limit: 1234,
                    host: Some("web1".into()),
                }],
                keyed_ips: vec!["10.0.0.1".parse().unwrap()],
                keyed_hosts: vec!["web1".into()],
            }],
        }
    }

    #[test]
    fn an_intact_file_round_trips() {
        let bytes = encode(&body()).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.clusters[0].senders[0].limit, 1234);
        assert_eq!(back.clusters[0].keyed_hosts, ["web1"]);
    }

    #[test]
    fn torn_altered_and_foreign_files_are_refused() {
        let bytes = encode(&body()).unwrap();
        // Torn anywhere: every proper prefix is refused.
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes accepted");
        }
        // One flipped bit anywhere is refused (the limit lowered by a bit
        // would accept replays).
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(decode(&b).is_err(), "byte {i} bit {bit} flipped accepted");
            }
        }
        assert!(matches!(
            decode(b"#ganglion-journal v2\n1 2 3\n"),
            Err(StateError::Foreign)
        ));
        assert!(matches!(decode(b""), Err(StateError::Foreign)));
        // Checksummed but not our body.
        let json = b"{\"x\":1}";
        let mut f = format!("{MARKER}\n").into_bytes();
        f.extend_from_slice(json);
        f.extend_from_slice(format!("\ncrc32 {:08x}\n", crc32fast::hash(json)).as_bytes());
        assert!(matches!(decode(&f), Err(StateError::Body(_))));
    }
}

//! The agent's side of the authenticated transport: `keygen`, reading its key
//! file, and the [`Sealer`] that wraps every datagram in an envelope
//! (`ganglion_proto::envelope`).
//!
//! Streams and restarts, without saved state or a handshake:
//! - The daemon is one stream per process: `sender_id` from the key file or
//!   a hash of the host name, `epoch` = the Unix second after it started
//!   (it waits for the second to turn, so a restart always gets a higher
//!   epoch than the process before it), a random salt, counter 0, 1, 2, …
//!   Scripts and Python modules share the daemon's stream.
//! - `ganglion-agent send` is a one-shot stream (flag `ONESHOT`): a fresh
//!   random salt per run and the clock in nanoseconds as counter, so each run
//!   counts above every earlier one however quickly runs follow each other,
//!   and the receiver's one-shot window refuses any repeat.

use ganglion_proto::envelope::{
    self, Alg, EnvelopeError, FLAG_ENC, FLAG_ONESHOT, Header, KeyFile, Secret, SubKey,
};
use ring::rand::{SecureRandom, SystemRandom};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Why a key could not be made or read.
#[derive(Debug, Error)]
pub enum KeyError {
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a key file.
    #[error("{path}: {source}")]
    Parse {
        /// File.
        path: String,
        /// Cause.
        source: envelope::KeyFileError,
    },
    /// Readable by group or others.
    #[error("{path}: mode {mode:04o} lets others read the key; chmod 600 it")]
    Permissions {
        /// File.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The system's random source failed.
    #[error("no random bytes from the system")]
    Random,
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| KeyError::Random)?;
    Ok(b)
}

/// Writes a new random key to `out` (mode 0600; an existing file is never
/// overwritten).
pub fn keygen(
    key_id: u16,
    alg: Alg,
    encrypt: bool,
    sender_id: Option<u32>,
    out: &Path,
) -> Result<(), KeyError> {
    let kf = KeyFile {
        secret: Secret {
            key_id,
            alg,
            bytes: random()?,
        },
        encrypt,
        sender_id,
    };
    let io = |source| KeyError::Io {
        path: out.display().to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(io)?;
    f.write_all(kf.to_text().as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Reads a key file, refusing one that group or others can read.
pub fn read(path: &Path) -> Result<KeyFile, KeyError> {
    let p = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Io {
        path: p.clone(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path: p, mode });
    }
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: p.clone(),
        source,
    })?;
    KeyFile::parse(&text).map_err(|source| KeyError::Parse { path: p, source })
}

/// The default sender id: FNV-1a of the host name the agent reports. Hosts
/// of one cluster collide with probability ≈ n²/2³³ (1000 hosts: 1 in
/// 8600); set `sender_id` in the key file to rule it out.
pub fn sender_id_for(host: &str) -> u32 {
    host.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

struct SealState {
    header: Header,
    key: SubKey,
    /// The last counter used (one-shot streams: never repeat one).
    last: Option<u64>,
    /// The sender id when the key file sets none (from the host name).
    default_sender: u32,
}

/// Seals datagrams for one stream; cheap to clone (the stream is shared, so
/// every socket and thread of one process counts in one sequence).
#[derive(Clone)]
pub struct Sealer(Arc<Mutex<SealState>>);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("Sealer")
            .field("key_id", &s.header.key_id)
            .field("sender_id", &s.header.sender_id)
            .field("epoch", &s.header.epoch)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Sealer {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Sealer {}

impl Sealer {
    fn new(kf: &KeyFile, sender_id: u32, epoch: u32, oneshot: bool) -> Result<Sealer, KeyError> {
        let mut flags = if kf.encrypt { FLAG_ENC } else { 0 };
        if oneshot {
            flags |= FLAG_ONESHOT;
        }
        let header = Header {
            alg: kf.secret.alg,
            flags,
            key_id: kf.secret.key_id,
            sender_id: kf.sender_id.unwrap_or(sender_id),
            epoch,
            salt: u32::from_be_bytes(random()?),
            counter: 0,
        };
        let key = SubKey::derive(&kf.secret, &header).map_err(|_| KeyError::Random)?;
        Ok(Sealer(Arc::new(Mutex::new(SealState {
            header,
            key,
            last: None,
            default_sender: sender_id,
        }))))
    }

    /// The daemon's stream. Waits for the Unix second to turn (at most 1 s)
    /// and takes it as epoch, so a restarted agent always has a higher one.
    pub fn daemon(kf: &KeyFile, host: &str) -> Result<Sealer, KeyError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let next = now.as_secs() + 1;
        std::thread::sleep(Duration::from_secs(next) - now);
        Sealer::new(kf, sender_id_for(host), next as u32, false)
    }

    /// A one-shot stream (`ganglion-agent send`): counter = the clock (ns).
    pub fn oneshot(kf: &KeyFile, host: &str) -> Result<Sealer, KeyError> {
        let epoch = (now_ns() / 1_000_000_000) as u32;
        Sealer::new(kf, sender_id_for(host), epoch, true)
    }

    /// Wraps `payload` into `out`, using the stream's next counter.
    pub fn seal(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), EnvelopeError> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let counter = if s.header.oneshot() {
            // The clock, but never at or below a counter already used.
            now_ns().max(s.last.map_or(0, |l| l + 1))
        } else {
            s.last.map_or(0, |l| l + 1)
        };
        let mut h = s.header;
        h.counter = counter;
        envelope::seal(&s.key, &h, payload, out)?;
        s.last = Some(counter);
        Ok(())
    }

    /// Moves the stream to the key of `kf` (SIGHUP): from the next datagram
    /// on, its key id, algorithm, ENC flag and sender id; epoch, salt and
    /// counter go on, so the receiver's window continues (the subkey is new,
    /// so no (key, nonce) pair repeats). On error the current key stays.
    pub fn rekey(&self, kf: &KeyFile) -> Result<(), KeyError> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut h = s.header;
        h.alg = kf.secret.alg;
        h.key_id = kf.secret.key_id;
        h.flags = (h.flags & FLAG_ONESHOT) | if kf.encrypt { FLAG_ENC } else { 0 };
        h.sender_id = kf.sender_id.unwrap_or(s.default_sender);
        let key = SubKey::derive(&kf.secret, &h).map_err(|_| KeyError::Random)?;
        s.header = h;
        s.key = key;
        Ok(())
    }

    /// (key id, sender id, epoch), for the start-up log.
    pub fn describe(&self) -> (u16, u32, u32) {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (s.header.key_id, s.header.sender_id, s.header.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_file_that_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("agent.key");
        keygen(3, Alg::Aes256Gcm, true, Some(77), &p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k = read(&p).unwrap();
        assert_eq!(
            (k.secret.key_id, k.secret.alg, k.encrypt, k.sender_id),
            (3, Alg::Aes256Gcm, true, Some(77))
        );
        // Never overwritten; never readable by others.
        assert!(keygen(4, Alg::Aes256Gcm, false, None, &p).is_err());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("chmod 600"));
    }

    #[test]
    fn streams_count_up_and_open_on_the_other_side() {
        let kf = KeyFile {
            secret: Secret {
                key_id: 1,
                alg: Alg::ChaCha20Poly1305,
                bytes: [5; 32],
            },
            encrypt: false,
            sender_id: None,
        };
        for s in [
            Sealer::new(&kf, 9, 100, false).unwrap(),
            Sealer::oneshot(&kf, "h").unwrap(),
        ] {
            let mut last = None;
            for _ in 0..3 {
                let mut out = Vec::new();
                s.seal(b"\0\0\0\x85x", &mut out).unwrap();
                let h = Header::parse(&out).unwrap();
                assert!(last.is_none_or(|l| h.counter > l));
                last = Some(h.counter);
                let k = SubKey::derive(&kf.secret, &h).unwrap();
                assert_eq!(envelope::open(&k, &h, &mut out).unwrap(), b"\0\0\0\x85x");
            }
        }
        assert_ne!(sender_id_for("a"), sender_id_for("b"));
    }
}

//! The authenticated UDP transport on the receiving side: per cluster, the
//! keys, the policy for plain XDR, and the sender table (replay windows,
//! epochs, loss accounting, clone detection).
//!
//! Order per datagram ([`ClusterAuth::check`]): dispatch on the first word
//! (envelope or plain) → parse the header → find the key → open the AEAD
//! with the sender's cached subkey (or a freshly derived one, within a
//! per-second budget) → only then
//! look at the sender's epoch and window and change anything. A forgery can
//! never move a window, start an epoch, create a sender or touch host
//! state. Refusals are counted by reason ([`Reason`]) and logged once a
//! minute per source address.
//!
//! Keys are an `Arc` swapped on SIGHUP ([`Registry::reload`]): windows,
//! epochs and counters stay, so a rotation loses nothing.
//!
//! Module map: [`keys`] (key files), [`window`] (RFC 6479 window and the
//! one-shot window), [`senders`] (the sender table, loss accounting),
//! [`persist`] (the sender state file: replays stay refused across
//! restarts).

pub mod keys;
pub mod persist;
pub mod senders;
pub mod window;

use crate::config::{AuthMode, Config};
use crate::diag::{self, Diag, Event, Level, LogAs};
use crate::telemetry::LabelledCounter;
use ganglion_proto::envelope::{self, EnvelopeError, Header, SubKey};
use keys::KeySet;
use senders::{CachedKey, Decision, SenderKey, SenderRow, Table};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The tag did not verify (forged, corrupted, wrong key).
    BadTag,
    /// A repeat, or too far behind the sender's window.
    Replay,
    /// A key id this cluster does not have.
    UnknownKey,
    /// Plain XDR where the cluster refuses it.
    PlainRefused,
    /// An epoch older than the sender's current one.
    StaleEpoch,
    /// Same sender and epoch with another salt (a clone).
    SenderConflict,
    /// A new sender past `auth.max_senders_per_cluster`.
    TooManySenders,
    /// Not a well-formed v1 envelope (length, version, algorithm, flags).
    Malformed,
    /// A new session's subkey past `auth.max_new_sessions_per_sec`.
    SessionLimit,
}

impl Reason {
    const ALL: [Reason; 9] = [
        Reason::BadTag,
        Reason::Replay,
        Reason::UnknownKey,
        Reason::PlainRefused,
        Reason::StaleEpoch,
        Reason::SenderConflict,
        Reason::TooManySenders,
        Reason::Malformed,
        Reason::SessionLimit,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadTag => "bad_tag",
            Reason::Replay => "replay",
            Reason::UnknownKey => "unknown_key",
            Reason::PlainRefused => "plain_refused",
            Reason::StaleEpoch => "stale_epoch",
            Reason::SenderConflict => "sender_conflict",
            Reason::TooManySenders => "too_many_senders",
            Reason::Malformed => "malformed",
            Reason::SessionLimit => "session_limit",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Refusal counters of every cluster, by reason.
#[derive(Debug, Default)]
pub struct AuthCounters {
    rejected: [AtomicU64; 9],
    /// Senders newly flagged as cloned.
    pub clones: AtomicU64,
    /// Key reloads that failed (the previous keys stay).
    pub reload_failures: AtomicU64,
    /// Writes of the sender state file that failed.
    pub state_write_failures: AtomicU64,
    /// Woken when a sender goes past what the state file refuses.
    pub(crate) state_wake: tokio::sync::Notify,
}

impl AuthCounters {
    fn reject(&self, r: Reason) {
        self.rejected[r.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals for `r`.
    pub fn rejected(&self, r: Reason) -> u64 {
        self.rejected[r.index()].load(Ordering::Relaxed)
    }
}

/// What [`ClusterAuth::check`] made of a datagram.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// Plain XDR the policy may accept: decode it, then ask
    /// [`ClusterAuth::plain_allowed`] (in `optional` mode).
    Plain,
    /// Authentic and fresh: decode the payload, then report the host name
    /// with [`ClusterAuth::note_host`].
    Authentic {
        /// The XDR message.
        payload: &'a [u8],
        /// Who sent it.
        sender: SenderKey,
    },
    /// Refused (counted and logged already).
    Refused,
}

/// Keys with a generation number (a reload bumps it, so cached subkeys of
/// a changed secret are derived again).
#[derive(Debug)]
struct Keys {
    set: KeySet,
    generation: u64,
}

/// One cluster's authentication state.
pub struct ClusterAuth {
    /// The cluster's name.
    pub cluster: String,
    /// `auth`.
    pub mode: AuthMode,
    key_files: Vec<PathBuf>,
    keys: RwLock<Arc<Keys>>,
    table: Mutex<Table>,
    counters: Arc<AuthCounters>,
    /// Refusals and clones: one line per sender address a minute.
    diag: Diag<IpAddr>,
    /// Label value for this cluster's per-cluster counters.
    label: &'static str,
}

impl ClusterAuth {
    /// Loads the cluster's keys; `None` when `auth = "off"`.
    pub fn new(
        cluster: &str,
        mode: AuthMode,
        key_files: &[PathBuf],
        max_senders: usize,
        max_sessions_per_sec: u32,
        counters: Arc<AuthCounters>,
    ) -> Result<Option<ClusterAuth>, keys::KeyError> {
        if mode == AuthMode::Off {
            return Ok(None);
        }
        let set = keys::load(key_files)?;
        let mut ids: Vec<u16> = set.keys.keys().copied().collect();
        ids.sort_unstable();
        tracing::info!(cluster, auth = mode.as_str(), key_ids = ?ids, "authenticated transport on");
        Ok(Some(ClusterAuth {
            cluster: cluster.to_string(),
            mode,
            key_files: key_files.to_vec(),
            keys: RwLock::new(Arc::new(Keys { set, generation: 0 })),
            table: Mutex::new(Table::new(max_senders, max_sessions_per_sec)),
            counters,
            diag: Diag::new(Duration::from_secs(60)),
            // Cluster names are fixed for the process's life: one small
            // leak per cluster gives the exposition its static label.
            label: Box::leak(cluster.to_string().into_boxed_str()),
        }))
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refuse(&self, r: Reason, src: SocketAddr, detail: &dyn std::fmt::Display) {
        self.diag.emit(
            Refused {
                cluster: &self.cluster,
                reason: r,
                src,
                detail,
            },
            &self.counters,
        );
    }

    /// Re-reads the key files; on any error the current keys stay.
    pub fn reload(&self) {
        match keys::load(&self.key_files) {
            Ok(set) => {
                let mut ids: Vec<u16> = set.keys.keys().copied().collect();
                ids.sort_unstable();
                let mut k = self.keys.write().unwrap_or_else(|p| p.into_inner());
                // Cached subkeys stay valid unless a key id now has another
                // secret: adding and retiring keys costs no re-derivation
                // (a retired id fails the lookup before any cache is used).
                let changed = set
                    .keys
                    .iter()
                    .any(|(id, new)| k.set.keys.get(id).is_some_and(|old| old != new));
                let generation = k.generation + u64::from(changed);
                *k = Arc::new(Keys { set, generation });
                tracing::info!(cluster = %self.cluster, key_ids = ?ids, "keys reloaded");
            }
            Err(e) => {
                diag::emit_rare(
                    ReloadFailed {
                        cluster: &self.cluster,
                        error: &e,
                    },
                    &self.counters,
                );
            }
        }
    }

    /// Verifies a datagram (`buf` holds exactly its bytes; an encrypted
    /// payload is decrypted in place).
    pub fn check<'a>(&self, buf: &'a mut [u8], src: SocketAddr, now: u64) -> Outcome<'a> {
        if !envelope::looks_enveloped(buf) {
            if self.mode == AuthMode::Required {
                self.refuse(
                    Reason::PlainRefused,
                    src,
                    &"plain datagram refused: the cluster has auth = \"required\"",
                );
                return Outcome::Refused;
            }
            return Outcome::Plain;
        }
        let h = match Header::parse(buf) {
            Ok(h) => h,
            Err(e) => {
                self.refuse(Reason::Malformed, src, &e);
                return Outcome::Refused;
            }
        };
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let Some(secret) = keys.set.keys.get(&h.key_id) else {
            self.refuse(
                Reason::UnknownKey,
                src,
                &format_args!("unknown key id {}", h.key_id),
            );
            return Outcome::Refused;
        };
        if secret.alg != h.alg {
            self.refuse(Reason::Malformed, src, &EnvelopeError::AlgMismatch);
            return Outcome::Refused;
        }
        let sender = (h.sender_id, h.oneshot());
        let mut table = self.table();
        // The sender's cached subkey when it fits, else a fresh one (kept
        // only if the datagram is accepted).
        let cached = table
            .get(&sender)
            .and_then(|s| s.cached.as_ref())
            .is_some_and(|c| c.fits(&h, keys.generation));
        if !cached && !table.take_session(now) {
            drop(table);
            self.refuse(
                Reason::SessionLimit,
                src,
                &"new session refused: auth.max_new_sessions_per_sec reached",
            );
            return Outcome::Refused;
        }
        let fresh = if cached {
            None
        } else {
            match SubKey::derive(secret, &h) {
                Ok(key) => Some(CachedKey {
                    key_id: h.key_id,
                    flags: h.flags,
                    epoch: h.epoch,
                    salt: h.salt,
                    generation: keys.generation,
                    key,
                }),
                Err(e) => {
                    drop(table);
                    self.refuse(Reason::Malformed, src, &e);
                    return Outcome::Refused;
                }
            }
        };
        let opened = {
            let key = match (&fresh, table.get(&sender)) {
                (Some(k), _) => &k.key,
                (None, Some(s)) => match &s.cached {
                    Some(c) => &c.key,
                    None => return Outcome::Refused,
                },
                (None, None) => return Outcome::Refused,
            };
            envelope::open(key, &h, buf)
        };
        let payload = match opened {
            Ok(p) => p,
            Err(e) => {
                drop(table);
                self.refuse(Reason::BadTag, src, &e);
                return Outcome::Refused;
            }
        };
        let (decision, newly_cloned) = table.apply(&h, fresh, src, now);
        let wake = table.take_wake();
        drop(table);
        if wake {
            self.counters.state_wake.notify_one();
        }
        if newly_cloned {
            self.diag.emit(
                Cloned {
                    cluster: &self.cluster,
                    src,
                    sender_id: h.sender_id,
                    epoch: h.epoch,
                },
                &self.counters,
            );
        }
        match decision {
            Decision::Accepted => Outcome::Authentic { payload, sender },
            Decision::Replay => {
                self.refuse(
                    Reason::Replay,
                    src,
                    &format_args!(
                        "replayed datagram refused (sender {}, counter {})",
                        h.sender_id, h.counter
                    ),
                );
                Outcome::Refused
            }
            Decision::StaleEpoch => {
                self.refuse(
                    Reason::StaleEpoch,
                    src,
                    &format_args!(
                        "datagram of an older epoch {} refused (sender {})",
                        h.epoch, h.sender_id
                    ),
                );
                Outcome::Refused
            }
            Decision::Conflict => {
                self.refuse(
                    Reason::SenderConflict,
                    src,
                    &format_args!(
                        "sender {} epoch {} sent with two salts",
                        h.sender_id, h.epoch
                    ),
                );
                Outcome::Refused
            }
            Decision::Full => {
                self.refuse(
                    Reason::TooManySenders,
                    src,
                    &"new sender refused: auth.max_senders_per_cluster reached",
                );
                Outcome::Refused
            }
        }
    }

    /// Records the host an accepted datagram spoke for.
    pub fn note_host(&self, sender: &SenderKey, host: &str) {
        self.table().note_host(sender, host);
    }

    /// In `optional` mode: whether a plain datagram from `src` about `host`
    /// is accepted (refusals are counted `plain_refused`).
    pub fn plain_allowed(&self, src: SocketAddr, host: &str) -> bool {
        if self.mode != AuthMode::Optional {
            return self.mode == AuthMode::Off;
        }
        if self.table().is_keyed(src.ip(), host) {
            self.refuse(
                Reason::PlainRefused,
                src,
                &format_args!(
                    "plain datagram for {host:?} refused: this host or address has sent authenticated datagrams"
                ),
            );
            return false;
        }
        true
    }

    /// The `GET /api/senders` rows.
    pub fn rows(&self) -> Vec<SenderRow> {
        self.table().rows(&self.cluster)
    }
}

/// Every cluster's authentication state (index = cluster index).
#[derive(Default)]
pub struct Registry {
    /// Per cluster, `None` when `auth = "off"`.
    pub clusters: Vec<Option<Arc<ClusterAuth>>>,
    /// Refusals by reason, all clusters.
    pub counters: Arc<AuthCounters>,
}

impl Registry {
    /// Loads every cluster's keys (an error names the cluster).
    pub fn new(config: &Config) -> anyhow::Result<Registry> {
        let counters = Arc::new(AuthCounters::default());
        let mut clusters = Vec::new();
        for (i, c) in config.cluster.iter().enumerate() {
            let a = ClusterAuth::new(
                &c.name,
                c.auth,
                &c.key_files,
                config.auth.max_senders_per_cluster,
                config.auth.max_new_sessions_per_sec,
                counters.clone(),
            )
            .map_err(|e| anyhow::anyhow!("cluster[{i}].key_files: {e}"))?;
            clusters.push(a.map(Arc::new));
        }
        Ok(Registry { clusters, counters })
    }

    /// Re-reads every cluster's keys.
    pub fn reload(&self) {
        for c in self.clusters.iter().flatten() {
            c.reload();
        }
    }

    /// Whether any cluster authenticates.
    pub fn any(&self) -> bool {
        self.clusters.iter().any(Option::is_some)
    }

    /// Every sender of every cluster.
    pub fn rows(&self) -> Vec<SenderRow> {
        self.clusters
            .iter()
            .flatten()
            .flat_map(|c| c.rows())
            .collect()
    }

    /// `/metrics`: refusals by reason, per-cluster received and lost.
    pub fn labelled(&self) -> Vec<LabelledCounter> {
        let mut received = Vec::new();
        let mut lost = Vec::new();
        for c in self.clusters.iter().flatten() {
            let (r, l) = c.table().totals();
            received.push((c.label, r));
            lost.push((c.label, l));
        }
        let mut v = vec![(
            "ganglion_auth_rejected_total",
            "Datagrams refused by the authenticated transport, by reason",
            "reason",
            Reason::ALL
                .iter()
                .map(|r| (r.as_str(), self.counters.rejected(*r)))
                .collect(),
        )];
        if !received.is_empty() {
            v.push((
                "ganglion_auth_received_total",
                "Authenticated datagrams accepted, per cluster",
                "cluster",
                received,
            ));
            v.push((
                "ganglion_auth_lost_total",
                "Authenticated datagrams lost on the way (expected - received per sender epoch), per cluster",
                "cluster",
                lost,
            ));
        }
        v
    }

    /// `/metrics`: plain counters.
    pub fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        vec![
            (
                "ganglion_auth_cloned_senders_total",
                "Senders found shared by two processes (cloned VM or shared sender id)",
                self.counters.clones.load(Ordering::Relaxed),
            ),
            (
                "ganglion_auth_key_reload_failures_total",
                "Key reloads (SIGHUP) that failed; the previous keys stayed",
                self.counters.reload_failures.load(Ordering::Relaxed),
            ),
            (
                "ganglion_auth_state_write_failures_total",
                "Writes of the sender state file (replay protection across restarts) that failed",
                self.counters.state_write_failures.load(Ordering::Relaxed),
            ),
        ]
    }

    /// Reloads the keys on every SIGHUP until `shutdown`.
    pub fn spawn_reload_on_sighup(
        self: &Arc<Self>,
        tasks: &mut tokio::task::JoinSet<()>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<()> {
        if !self.any() {
            return Ok(());
        }
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        let me = self.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    got = hup.recv() => {
                        if got.is_none() {
                            return;
                        }
                        let me = me.clone();
                        let _ = tokio::task::spawn_blocking(move || me.reload()).await;
                    }
                }
            }
        });
        Ok(())
    }
}

// Internal events of the authenticated transport (see `diag`).

/// A datagram refused for `reason`, counted under it.
struct Refused<'a> {
    cluster: &'a str,
    reason: Reason,
    src: SocketAddr,
    detail: &'a dyn std::fmt::Display,
}

impl Event for Refused<'_> {
    type Counters = AuthCounters;
    type Key = IpAddr;
    const LEVEL: Level = Level::WARN;
    fn count(&self, c: &AuthCounters) {
        c.reject(self.reason);
    }
    fn log_as(&self) -> LogAs<IpAddr> {
        LogAs::PerKey(self.src.ip())
    }
    fn log(&self, _: &AuthCounters) {
        diag::line!(Self::LEVEL, cluster = %self.cluster, src = %self.src,
            reason = self.reason.as_str(),
            "{} (logged once a minute per sender)", self.detail);
    }
}

/// One sender identity seen from two processes.
struct Cloned<'a> {
    cluster: &'a str,
    src: SocketAddr,
    sender_id: u32,
    epoch: u32,
}

impl Event for Cloned<'_> {
    type Counters = AuthCounters;
    type Key = IpAddr;
    const LEVEL: Level = Level::WARN;
    fn count(&self, c: &AuthCounters) {
        diag::inc(&c.clones);
    }
    fn log_as(&self) -> LogAs<IpAddr> {
        LogAs::PerKey(self.src.ip())
    }
    fn log(&self, _: &AuthCounters) {
        diag::line!(Self::LEVEL, cluster = %self.cluster, src = %self.src,
            sender_id = self.sender_id, epoch = self.epoch,
            "two processes send as one sender id (a cloned VM or a shared key file with sender_id): give each its own sender_id");
    }
}

/// Key files that did not load on SIGHUP; the keys in use stay.
struct ReloadFailed<'a> {
    cluster: &'a str,
    error: &'a keys::KeyError,
}

impl Event for ReloadFailed<'_> {
    type Counters = AuthCounters;
    type Key = ();
    const LEVEL: Level = Level::ERROR;
    fn count(&self, c: &AuthCounters) {
        diag::inc(&c.reload_failures);
    }
    fn log_as(&self) -> LogAs<()> {
        LogAs::Always
    }
    fn log(&self, _: &AuthCounters) {
        diag::line!(Self::LEVEL, cluster = %self.cluster, error = %self.error,
            "key reload failed; keeping the current keys");
    }
}

//! The sender table of one cluster: per (sender id, stream kind) its epoch,
//! replay window, cached subkey, loss accounting and identity. Only
//! authenticated datagrams reach it (the tag is verified first).
//!
//! Loss per sender follows RTP (RFC 3550 A.3) per epoch, without its
//! probation and wrap heuristics (the counter is 64-bit and authenticated):
//! `expected = highest − base + 1`, `lost = expected − received`, where
//! `base` is 0 when the receiver saw the epoch begin (a restart it
//! witnessed) and the first counter seen otherwise (first contact after the
//! aggregator started). When an epoch ends its loss is frozen and added to
//! the sender's total. Duplicates are refused and counted apart; reordered
//! datagrams are accepted and counted; datagrams too far behind the window
//! are refused and stay inside `lost`.

use super::window::{Sparse, Verdict, Window};
use ganglion_proto::envelope::{Header, SubKey};
use serde::Serialize;
// Keys enter these maps only after their datagram authenticated, so an
// outsider cannot choose them: the fast hash is enough.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::net::{IpAddr, SocketAddr};

/// A sender stream: its id and whether it is a one-shot stream
/// (`ganglion-agent send`, counter = clock).
pub type SenderKey = (u32, bool);

/// Which window a stream uses.
#[derive(Debug)]
enum Stream {
    /// A daemon: counter 0, 1, 2, … per epoch.
    Counter(Window),
    /// One-shot runs: counter = clock (ns), salt fresh per run.
    Oneshot(Sparse),
}

/// The subkey of one (key, flags, epoch, salt), with the key-set generation
/// it was derived under (a reload re-derives).
#[derive(Debug)]
pub struct CachedKey {
    /// Key id.
    pub key_id: u16,
    /// Flags.
    pub flags: u8,
    /// Epoch.
    pub epoch: u32,
    /// Salt.
    pub salt: u32,
    /// Key-set generation.
    pub generation: u64,
    /// The AEAD key.
    pub key: SubKey,
}

impl CachedKey {
    /// Whether it opens datagrams with header `h` under `generation`.
    pub fn fits(&self, h: &Header, generation: u64) -> bool {
        self.key_id == h.key_id
            && self.flags == h.flags
            && self.epoch == h.epoch
            && self.salt == h.salt
            && self.generation == generation
    }
}

/// One sender's state (about 1 KiB with the cached key and map overhead).
#[derive(Debug)]
pub struct Sender {
    /// Current epoch.
    pub epoch: u32,
    /// Its salt.
    pub salt: u32,
    /// Key id of the last accepted datagram.
    pub key_id: u16,
    /// Subkey of the last accepted datagram (none for a sender restored
    /// from the state file until its next datagram).
    pub cached: Option<CachedKey>,
    stream: Stream,
    /// Restored from the state file: counters up to it in `epoch` count as
    /// seen (refused as replays) although the window never saw them.
    floor: Option<u64>,
    /// What the state file holds for this sender (see [`Written`]).
    written: Option<Written>,
    /// First counter of the epoch's accounting.
    base: u64,
    /// Accepted in the current epoch.
    received_epoch: u64,
    /// Loss of finished epochs.
    lost_frozen: u64,
    /// Accepted in all epochs.
    pub received: u64,
    /// Repeats refused.
    pub duplicates: u64,
    /// Accepted out of order.
    pub reordered: u64,
    /// Refused as repeats or too far behind the window.
    pub replays_rejected: u64,
    /// Epochs started after the first.
    pub restarts: u64,
    /// Authentic datagrams of an older epoch refused.
    pub stale_epochs: u64,
    /// Same epoch with another salt, or an older epoch still advancing, or
    /// a repeat from another address: two processes share this identity.
    pub cloned: bool,
    /// The previous epoch (epoch, salt, highest counter), to tell a replay
    /// of a finished session from a clone still sending in it.
    prev: Option<(u32, u32, u64)>,
    /// Address of the last accepted datagram.
    pub addr: SocketAddr,
    /// Host name its messages carry.
    pub host: Option<String>,
    /// Unix time of the last accepted datagram.
    pub last_seen: u64,
}

/// The part of a sender the state file holds: everything up to `limit` in
/// `epoch` is refused after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The epoch written.
    pub epoch: u32,
    /// The highest counter accepted when it was written.
    pub top: u64,
    /// `top` plus the reserve: the floor a restarted aggregator refuses
    /// through.
    pub limit: u64,
}

/// `base` of a restored sender: its first accepted datagram becomes the
/// base (first contact, as after a restart without a state file).
const BASE_UNSET: u64 = u64::MAX;

/// One sender as the state file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persisted {
    /// Sender id.
    pub sender_id: u32,
    /// A one-shot stream.
    pub oneshot: bool,
    /// Key id of the last accepted datagram.
    pub key_id: u16,
    /// Current epoch (older ones are refused as `stale_epoch`).
    pub epoch: u32,
    /// Its salt (another salt in the same epoch is a conflict).
    pub salt: u32,
    /// Every counter up to it in `epoch` (any epoch for one-shot streams,
    /// whose counter is a clock) is refused.
    pub limit: u64,
    /// Host name its messages carried.
    pub host: Option<String>,
}

/// What the table decided about an authentic datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Accepted (the first datagram of a new sender included).
    Accepted,
    /// Repeat or too old.
    Replay,
    /// An older epoch.
    StaleEpoch,
    /// Same epoch, another salt.
    Conflict,
    /// New sender at the cap.
    Full,
}

impl Sender {
    fn new(h: &Header, key: CachedKey, src: SocketAddr, now: u64) -> Sender {
        let stream = if h.oneshot() {
            let mut s = Sparse::default();
            s.accept(h.counter);
            Stream::Oneshot(s)
        } else {
            Stream::Counter(Window::starting_at(h.counter))
        };
        Sender {
            epoch: h.epoch,
            salt: h.salt,
            key_id: h.key_id,
            cached: Some(key),
            stream,
            floor: None,
            written: None,
            base: h.counter,
            received_epoch: 1,
            lost_frozen: 0,
            received: 1,
            duplicates: 0,
            reordered: 0,
            replays_rejected: 0,
            restarts: 0,
            stale_epochs: 0,
            cloned: false,
            prev: None,
            addr: src,
            host: None,
            last_seen: now,
        }
    }

    /// Whether this is a one-shot stream.
    pub fn oneshot(&self) -> bool {
        matches!(self.stream, Stream::Oneshot(_))
    }

    /// A sender restored from the state file: nothing received since the
    /// restart, every counter up to `p.limit` refused.
    fn restored(p: &Persisted) -> Sender {
        let (stream, floor) = if p.oneshot {
            (Stream::Oneshot(Sparse::refusing_through(p.limit)), None)
        } else {
            (Stream::Counter(Window::fresh()), Some(p.limit))
        };
        Sender {
            epoch: p.epoch,
            salt: p.salt,
            key_id: p.key_id,
            cached: None,
            stream,
            floor,
            written: Some(Written {
                epoch: p.epoch,
                top: p.limit,
                limit: p.limit,
            }),
            base: BASE_UNSET,
            received_epoch: 0,
            lost_frozen: 0,
            received: 0,
            duplicates: 0,
            reordered: 0,
            replays_rejected: 0,
            restarts: 0,
            stale_epochs: 0,
            cloned: false,
            prev: None,
            // Unspecified until its first datagram: no address to compare
            // for the clone check.
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            host: p.host.clone(),
            last_seen: 0,
        }
    }

    /// The highest counter accepted in the current epoch (or refused
    /// through, when restored).
    fn top(&self) -> u64 {
        let seen = match &self.stream {
            Stream::Counter(w) => w.top(),
            Stream::Oneshot(s) => s.top().unwrap_or(0),
        };
        seen.max(self.floor.unwrap_or(0))
    }

    /// Whether the state file already refuses everything accepted so far
    /// (one-shot streams: every run's clock counter; daemons: the epoch and
    /// counter).
    fn covered(&self) -> bool {
        self.written
            .is_some_and(|w| (self.oneshot() || w.epoch == self.epoch) && self.top() <= w.limit)
    }

    fn epoch_lost(&self) -> u64 {
        match &self.stream {
            Stream::Counter(w) if self.received_epoch > 0 && self.base != BASE_UNSET => (w.top()
                - self.base)
                .saturating_add(1)
                .saturating_sub(self.received_epoch),
            _ => 0,
        }
    }

    /// Datagrams lost on the way, over all epochs (0 for one-shot streams,
    /// whose counter is a clock).
    pub fn lost(&self) -> u64 {
        self.lost_frozen + self.epoch_lost()
    }

    /// Applies an authentic datagram. Returns the decision and whether this
    /// datagram newly revealed a clone.
    fn apply(
        &mut self,
        h: &Header,
        key: Option<CachedKey>,
        src: SocketAddr,
        now: u64,
    ) -> (Decision, bool) {
        let was_cloned = self.cloned;
        let decision = match &mut self.stream {
            Stream::Oneshot(s) => match s.accept(h.counter) {
                Verdict::Duplicate | Verdict::TooOld => {
                    self.duplicates += 1;
                    self.replays_rejected += 1;
                    Decision::Replay
                }
                v => {
                    self.reordered += u64::from(v == Verdict::Reordered);
                    Decision::Accepted
                }
            },
            Stream::Counter(w) => {
                if h.epoch > self.epoch {
                    // The sender restarted: freeze the old epoch's loss; the
                    // new one is seen from its start (base 0).
                    self.lost_frozen += if self.received_epoch > 0 && self.base != BASE_UNSET {
                        (w.top() - self.base)
                            .saturating_add(1)
                            .saturating_sub(self.received_epoch)
                    } else {
                        0
                    };
                    // A restored sender's old epoch ends at its floor.
                    let top = w.top().max(self.floor.take().unwrap_or(0));
                    self.prev = Some((self.epoch, self.salt, top));
                    *w = Window::fresh();
                    w.accept(h.counter);
                    self.epoch = h.epoch;
                    self.salt = h.salt;
                    self.base = 0;
                    self.received_epoch = 0;
                    self.restarts += 1;
                    Decision::Accepted
                } else if h.epoch < self.epoch {
                    self.stale_epochs += 1;
                    if let Some((e, s, top)) = &mut self.prev
                        && *e == h.epoch
                        && *s == h.salt
                        && h.counter > *top
                    {
                        // The previous session still advances: it did not end.
                        *top = h.counter;
                        self.cloned = true;
                    }
                    Decision::StaleEpoch
                } else if h.salt != self.salt {
                    self.cloned = true;
                    Decision::Conflict
                } else if self.floor.is_some_and(|f| h.counter <= f) {
                    // Accepted before the aggregator restarted (or within
                    // the reserve the state file added).
                    self.replays_rejected += 1;
                    Decision::Replay
                } else {
                    match w.accept(h.counter) {
                        Verdict::Duplicate => {
                            self.duplicates += 1;
                            self.replays_rejected += 1;
                            // The same datagram from two addresses: a
                            // cloned VM sending the same stream.
                            if src != self.addr && !self.addr.ip().is_unspecified() {
                                self.cloned = true;
                            }
                            Decision::Replay
                        }
                        Verdict::TooOld => {
                            self.replays_rejected += 1;
                            Decision::Replay
                        }
                        v => {
                            if v == Verdict::Reordered {
                                self.reordered += 1;
                                self.base = self.base.min(h.counter);
                            }
                            Decision::Accepted
                        }
                    }
                }
            }
        };
        if decision == Decision::Accepted {
            if self.base == BASE_UNSET {
                self.base = h.counter;
            }
            self.received += 1;
            self.received_epoch += 1;
            self.key_id = h.key_id;
            self.epoch = h.epoch;
            self.salt = h.salt;
            self.addr = src;
            self.last_seen = now;
            if let Some(k) = key {
                self.cached = Some(k);
            }
        }
        (decision, self.cloned && !was_cloned)
    }
}

/// Bound on the host names and addresses remembered as keyed, per sender
/// allowed: a gmetric proxy may speak for several hosts.
const KEYED_PER_SENDER: usize = 4;

/// Every sender of one cluster, and the hosts that ever authenticated.
#[derive(Debug)]
pub struct Table {
    senders: HashMap<SenderKey, Sender>,
    cap: usize,
    /// Source addresses that sent an authenticated datagram.
    keyed_ips: HashSet<IpAddr>,
    /// Host names authenticated datagrams carried.
    keyed_hosts: HashSet<String>,
    /// Subkey derivations allowed per second, and (second, used) so far.
    sessions_per_sec: u32,
    sessions: (u64, u32),
    /// Something was accepted since the state file was last written.
    dirty: bool,
    /// Some sender has gone past what the state file refuses.
    uncovered: bool,
    /// `uncovered` just turned on: the caller wakes the state writer.
    wake: bool,
}

/// Reserve added to a daemon's highest counter in a periodic write: twice
/// its advance since the previous write, within these bounds. A crash
/// refuses at most this many of a live sender's next datagrams; a sender
/// passing it wakes an early write.
pub const RESERVE_MIN: u64 = 64;
/// See [`RESERVE_MIN`].
pub const RESERVE_MAX: u64 = 1 << 20;

impl Table {
    /// An empty table holding at most `cap` senders and deriving at most
    /// `sessions_per_sec` subkeys a second.
    pub fn new(cap: usize, sessions_per_sec: u32) -> Table {
        Table {
            senders: HashMap::new(),
            cap,
            keyed_ips: HashSet::new(),
            keyed_hosts: HashSet::new(),
            sessions_per_sec,
            sessions: (0, 0),
            dirty: false,
            uncovered: false,
            wake: false,
        }
    }

    /// Whether the state writer should be woken now (reported once per
    /// uncovered period).
    pub fn take_wake(&mut self) -> bool {
        std::mem::take(&mut self.wake)
    }

    /// Whether anything was accepted since the last [`Table::mark_written`].
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    fn note_accepted(&mut self, covered: bool) {
        self.dirty = true;
        if !covered && !self.uncovered {
            self.uncovered = true;
            self.wake = true;
        }
    }

    /// The state to write: per sender its limit (the highest counter, plus
    /// a reserve unless `exact`: see [`RESERVE_MIN`]; one-shot streams get
    /// none, a later run's clock is higher anyway) and the keyed addresses
    /// and host names.
    pub fn export(&self, exact: bool) -> (Vec<Persisted>, Vec<IpAddr>, Vec<String>) {
        let senders = self
            .senders
            .iter()
            .map(|(k, s)| {
                let top = s.top();
                let reserve = if exact || s.oneshot() {
                    0
                } else {
                    // Counted from the first datagram after an aggregator
                    // restart (`base`), not across the downtime: a long
                    // outage is no rate.
                    let advance = match s.written {
                        Some(w) if w.epoch == s.epoch => top.saturating_sub(w.top.max(s.base)),
                        _ => s.received_epoch,
                    };
                    advance.saturating_mul(2).clamp(RESERVE_MIN, RESERVE_MAX)
                };
                Persisted {
                    sender_id: k.0,
                    oneshot: k.1,
                    key_id: s.key_id,
                    epoch: s.epoch,
                    salt: s.salt,
                    limit: top.saturating_add(reserve),
                    host: s.host.clone(),
                }
            })
            .collect();
        (
            senders,
            self.keyed_ips.iter().copied().collect(),
            self.keyed_hosts.iter().cloned().collect(),
        )
    }

    /// Records that `written` (from [`Table::export`]) is durable; senders
    /// that moved on since keep their progress. Returns whether some sender
    /// is already past it (write again soon).
    pub fn mark_written(&mut self, written: &[Persisted]) -> bool {
        for p in written {
            if let Some(s) = self.senders.get_mut(&(p.sender_id, p.oneshot))
                && (p.oneshot || s.epoch == p.epoch)
            {
                let top = s.top().min(p.limit);
                s.written = Some(Written {
                    epoch: p.epoch,
                    top,
                    limit: p.limit,
                });
            }
        }
        self.dirty = false;
        self.uncovered = self.senders.values().any(|s| !s.covered());
        self.uncovered
    }

    /// Restores senders and keyed hosts from the state file, within the
    /// caps (the rest is dropped: those senders start as new).
    pub fn restore(&mut self, senders: &[Persisted], ips: &[IpAddr], hosts: &[String]) {
        for p in senders
            .iter()
            .take(self.cap.saturating_sub(self.senders.len()))
        {
            self.senders
                .insert((p.sender_id, p.oneshot), Sender::restored(p));
        }
        let keyed_cap = self.cap.saturating_mul(KEYED_PER_SENDER);
        for ip in ips {
            if self.keyed_ips.len() < keyed_cap {
                self.keyed_ips.insert(crate::state::canonical_ip(*ip));
            }
        }
        for h in hosts {
            if self.keyed_hosts.len() < keyed_cap {
                self.keyed_hosts.insert(h.clone());
            }
        }
    }

    /// Takes one subkey derivation from this second's budget.
    pub fn take_session(&mut self, now: u64) -> bool {
        if self.sessions.0 != now {
            self.sessions = (now, 0);
        }
        if self.sessions.1 >= self.sessions_per_sec {
            return false;
        }
        self.sessions.1 += 1;
        true
    }

    /// The sender, if known.
    pub fn get(&self, k: &SenderKey) -> Option<&Sender> {
        self.senders.get(k)
    }

    /// Senders it may hold (`auth.max_senders_per_cluster`).
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Senders known.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Whether no sender is known.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Every sender.
    pub fn iter(&self) -> impl Iterator<Item = (&SenderKey, &Sender)> {
        self.senders.iter()
    }

    /// Applies an authentic datagram with header `h`; `key` is a freshly
    /// derived subkey when the sender's cached one did not fit.
    pub fn apply(
        &mut self,
        h: &Header,
        key: Option<CachedKey>,
        src: SocketAddr,
        now: u64,
    ) -> (Decision, bool) {
        let k = (h.sender_id, h.oneshot());
        if let Some(s) = self.senders.get_mut(&k) {
            let r = s.apply(h, key, src, now);
            if r.0 == Decision::Accepted {
                let covered = s.covered();
                self.note_accepted(covered);
                self.note_ip(src.ip());
            }
            return r;
        }
        let Some(key) = key else {
            return (Decision::Full, false);
        };
        if self.senders.len() >= self.cap {
            return (Decision::Full, false);
        }
        self.senders.insert(k, Sender::new(h, key, src, now));
        self.note_accepted(false);
        self.note_ip(src.ip());
        (Decision::Accepted, false)
    }

    fn note_ip(&mut self, ip: IpAddr) {
        if self.keyed_ips.len() < self.cap.saturating_mul(KEYED_PER_SENDER) {
            self.keyed_ips.insert(crate::state::canonical_ip(ip));
        }
    }

    /// Records the host name an accepted datagram of `k` carried.
    pub fn note_host(&mut self, k: &SenderKey, host: &str) {
        match self.senders.get_mut(k) {
            // The usual case: the same host as before, already keyed.
            Some(s) if s.host.as_deref() == Some(host) => return,
            Some(s) => s.host = Some(host.to_string()),
            None => {}
        }
        if !self.keyed_hosts.contains(host)
            && self.keyed_hosts.len() < self.cap.saturating_mul(KEYED_PER_SENDER)
        {
            self.keyed_hosts.insert(host.to_string());
        }
    }

    /// Whether a plain datagram from `ip` about `host` would impersonate a
    /// keyed host (the downgrade `optional` refuses).
    pub fn is_keyed(&self, ip: IpAddr, host: &str) -> bool {
        self.keyed_ips.contains(&crate::state::canonical_ip(ip))
            || self.keyed_hosts.contains(host)
            || host
                .split_once(':')
                .is_some_and(|(_, name)| self.keyed_hosts.contains(name))
    }

    /// The JSON rows of `GET /api/senders`.
    pub fn rows(&self, cluster: &str) -> Vec<SenderRow> {
        let mut v: Vec<SenderRow> = self
            .senders
            .iter()
            .map(|(k, s)| SenderRow {
                cluster: cluster.to_string(),
                sender_id: k.0,
                oneshot: k.1,
                address: s.addr.to_string(),
                host: s.host.clone(),
                key_id: s.key_id,
                epoch: s.epoch,
                received: s.received,
                lost: s.lost(),
                duplicates: s.duplicates,
                reordered: s.reordered,
                replays_rejected: s.replays_rejected,
                stale_epochs: s.stale_epochs,
                restarts: s.restarts,
                cloned: s.cloned,
                last_seen: s.last_seen,
                restored: s.addr.ip().is_unspecified(),
            })
            .collect();
        v.sort_by_key(|r| (r.sender_id, r.oneshot));
        v
    }

    /// (received, lost) over every sender.
    pub fn totals(&self) -> (u64, u64) {
        self.senders
            .values()
            .fold((0, 0), |(r, l), s| (r + s.received, l + s.lost()))
    }
}

/// One object of `GET /api/senders`.
#[derive(Debug, Clone, Serialize)]
pub struct SenderRow {
    /// Cluster.
    pub cluster: String,
    /// Sender id.
    pub sender_id: u32,
    /// A one-shot stream (`ganglion-agent send`): no loss accounting.
    pub oneshot: bool,
    /// Source address of the last accepted datagram.
    pub address: String,
    /// Host name its messages carry.
    pub host: Option<String>,
    /// Key id in use.
    pub key_id: u16,
    /// Current epoch.
    pub epoch: u32,
    /// Datagrams accepted.
    pub received: u64,
    /// Datagrams lost (expected − received, per epoch).
    pub lost: u64,
    /// Repeats refused.
    pub duplicates: u64,
    /// Accepted out of order.
    pub reordered: u64,
    /// Refused as replays (repeats and too old).
    pub replays_rejected: u64,
    /// Authentic datagrams of an older epoch refused.
    pub stale_epochs: u64,
    /// Epochs started after the first seen.
    pub restarts: u64,
    /// Two processes seem to share this identity.
    pub cloned: bool,
    /// Unix time of the last accepted datagram.
    pub last_seen: u64,
    /// Known from the state file only: nothing accepted since the
    /// aggregator started (`address` and `last_seen` are then unset).
    pub restored: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ganglion_proto::envelope::{self, Alg, Secret};

    fn hdr(epoch: u32, salt: u32, counter: u64) -> Header {
        Header {
            alg: Alg::ChaCha20Poly1305,
            flags: 0,
            key_id: 1,
            sender_id: 9,
            epoch,
            salt,
            counter,
        }
    }

    fn key(h: &Header) -> Option<CachedKey> {
        let s = Secret {
            key_id: 1,
            alg: Alg::ChaCha20Poly1305,
            bytes: [1; 32],
        };
        Some(CachedKey {
            key_id: h.key_id,
            flags: h.flags,
            epoch: h.epoch,
            salt: h.salt,
            generation: 0,
            key: SubKey::derive(&s, h).unwrap(),
        })
    }

    fn a(p: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], p))
    }

    fn feed(t: &mut Table, h: Header, src: SocketAddr) -> Decision {
        t.apply(&h, key(&h), src, 0).0
    }

    #[test]
    fn loss_is_expected_minus_received_per_epoch() {
        let mut t = Table::new(10, 100);
        // First contact at counter 100: base 100. Gaps 103, 105..=107.
        for c in [100, 101, 102, 104, 108] {
            assert_eq!(feed(&mut t, hdr(5, 1, c), a(1)), Decision::Accepted);
        }
        assert_eq!(t.get(&(9, false)).unwrap().lost(), 4);
        // A late one fills a gap; a repeat is not counted as received.
        assert_eq!(feed(&mut t, hdr(5, 1, 103), a(1)), Decision::Accepted);
        assert_eq!(feed(&mut t, hdr(5, 1, 103), a(1)), Decision::Replay);
        let s = t.get(&(9, false)).unwrap();
        assert_eq!((s.lost(), s.reordered, s.duplicates), (3, 1, 1));
        // Restart: old epoch frozen at 3 lost; the new one counts from 0.
        assert_eq!(feed(&mut t, hdr(6, 2, 2), a(1)), Decision::Accepted);
        let s = t.get(&(9, false)).unwrap();
        assert_eq!((s.lost(), s.restarts, s.received), (5, 1, 7));
        // An older epoch is refused from now on.
        assert_eq!(feed(&mut t, hdr(5, 1, 50), a(1)), Decision::StaleEpoch);
        assert!(!t.get(&(9, false)).unwrap().cloned);
    }

    #[test]
    fn clones_are_flagged() {
        // Same epoch, another salt.
        let mut t = Table::new(10, 100);
        feed(&mut t, hdr(5, 1, 0), a(1));
        assert_eq!(feed(&mut t, hdr(5, 2, 0), a(2)), Decision::Conflict);
        assert!(t.get(&(9, false)).unwrap().cloned);
        // The previous epoch still advancing after a restart.
        let mut t = Table::new(10, 100);
        feed(&mut t, hdr(5, 1, 10), a(1));
        feed(&mut t, hdr(6, 2, 0), a(2));
        assert_eq!(feed(&mut t, hdr(5, 1, 10), a(1)), Decision::StaleEpoch);
        assert!(
            !t.get(&(9, false)).unwrap().cloned,
            "a replay is not a clone"
        );
        assert_eq!(
            t.apply(&hdr(5, 1, 11), key(&hdr(5, 1, 11)), a(1), 0),
            (Decision::StaleEpoch, true)
        );
        // The same datagram from two addresses.
        let mut t = Table::new(10, 100);
        feed(&mut t, hdr(5, 1, 0), a(1));
        feed(&mut t, hdr(5, 1, 0), a(2));
        assert!(t.get(&(9, false)).unwrap().cloned);
    }

    #[test]
    fn restored_senders_refuse_everything_up_to_the_written_limit() {
        let mut t = Table::new(10, 100);
        for c in 0..10 {
            feed(&mut t, hdr(5, 1, c), a(1));
        }
        assert!(t.take_wake(), "a new sender wakes the writer");
        t.note_host(&(9, false), "web1");
        // A periodic write: top 9 plus twice the advance (10), at least
        // RESERVE_MIN.
        let (w, ips, hosts) = t.export(false);
        assert_eq!(w[0].limit, 9 + RESERVE_MIN);
        assert!(!t.mark_written(&w));
        // Accepted after the write, within the reserve: no early write.
        for c in 10..20 {
            feed(&mut t, hdr(5, 1, c), a(1));
        }
        assert!(!t.take_wake());
        // A crash; the next process loads the file. Every counter the
        // crashed one accepted is refused, also from another address,
        // without flagging a clone or counting anything received.
        let mut r = Table::new(10, 100);
        r.restore(&w, &ips, &hosts);
        for c in 0..20 {
            assert_eq!(feed(&mut r, hdr(5, 1, c), a(2)), Decision::Replay, "{c}");
        }
        assert_eq!(feed(&mut r, hdr(4, 1, 500), a(1)), Decision::StaleEpoch);
        let s = r.get(&(9, false)).unwrap();
        assert_eq!((s.cloned, s.received, s.replays_rejected), (false, 0, 20));
        assert!(r.is_keyed("10.0.0.1".parse().unwrap(), "x"));
        assert!(r.is_keyed("10.9.9.9".parse().unwrap(), "web1"));
        // The live sender past the reserve goes on (it sent 5000 while the
        // aggregator was down); loss counts from its first datagram after
        // the restart.
        let limit = 9 + RESERVE_MIN;
        let (c1, c2) = (limit + 5000, limit + 5002);
        assert_eq!(feed(&mut r, hdr(5, 1, limit), a(1)), Decision::Replay);
        assert_eq!(feed(&mut r, hdr(5, 1, c1), a(1)), Decision::Accepted);
        assert_eq!(feed(&mut r, hdr(5, 1, c2), a(1)), Decision::Accepted);
        assert_eq!(r.get(&(9, false)).unwrap().lost(), 1);
        assert!(r.take_wake(), "past what the file refuses: an early write");
        // Its reserve counts from then, not across the downtime.
        assert_eq!(r.export(false).0[0].limit, c2 + RESERVE_MIN);
        // The shutdown write is exact.
        assert_eq!(r.export(true).0[0].limit, c2);
        // A restart of the sender (new epoch) is accepted from counter 0.
        assert_eq!(feed(&mut r, hdr(6, 2, 0), a(1)), Decision::Accepted);
        // A restored sender restarting: its old epoch ends at the floor, so
        // a replay from before the crash is stale, not a clone.
        let mut r = Table::new(10, 100);
        r.restore(&w, &ips, &hosts);
        assert_eq!(feed(&mut r, hdr(6, 2, 0), a(1)), Decision::Accepted);
        assert_eq!(feed(&mut r, hdr(5, 1, 15), a(1)), Decision::StaleEpoch);
        assert!(!r.get(&(9, false)).unwrap().cloned);
    }

    #[test]
    fn restored_oneshot_streams_refuse_earlier_runs() {
        let o = |c: u64| {
            let mut h = hdr(5, c as u32, c);
            h.flags = envelope::FLAG_ONESHOT;
            h
        };
        let mut t = Table::new(10, 100);
        feed(&mut t, o(1000), a(1));
        feed(&mut t, o(2000), a(1));
        let (w, ips, hosts) = t.export(false);
        assert_eq!(
            w[0].limit, 2000,
            "no reserve: a later run's clock is higher"
        );
        let mut r = Table::new(10, 100);
        r.restore(&w, &ips, &hosts);
        assert_eq!(feed(&mut r, o(2000), a(1)), Decision::Replay);
        assert_eq!(feed(&mut r, o(1000), a(1)), Decision::Replay);
        assert_eq!(feed(&mut r, o(3000), a(1)), Decision::Accepted);
        // Every new run is past the file: the writer is woken.
        assert!(r.take_wake());
    }

    #[test]
    fn the_cap_refuses_new_senders_only() {
        let mut t = Table::new(1, 100);
        feed(&mut t, hdr(5, 1, 0), a(1));
        let mut other = hdr(5, 1, 0);
        other.sender_id = 10;
        assert_eq!(feed(&mut t, other, a(2)), Decision::Full);
        assert_eq!(feed(&mut t, hdr(5, 1, 1), a(1)), Decision::Accepted);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn subkey_derivations_are_budgeted_per_second() {
        let mut t = Table::new(10, 2);
        assert!(t.take_session(5) && t.take_session(5));
        assert!(!t.take_session(5));
        assert!(t.take_session(6));
    }

    #[test]
    fn keyed_hosts_and_addresses_cannot_go_plain() {
        let mut t = Table::new(10, 100);
        feed(&mut t, hdr(5, 1, 0), a(1));
        t.note_host(&(9, false), "web1");
        assert!(t.is_keyed("10.0.0.1".parse().unwrap(), "other"));
        assert!(t.is_keyed("10.9.9.9".parse().unwrap(), "web1"));
        assert!(t.is_keyed("10.9.9.9".parse().unwrap(), "1.2.3.4:web1"));
        assert!(!t.is_keyed("10.9.9.9".parse().unwrap(), "web2"));
    }
}

#[cfg(test)]
mod size {
    /// The per-sender bound ARCHITECTURE.md states: the struct (cached AEAD
    /// key and window inline) plus at most the one-shot window's heap
    /// (64 × 8 B) and a host name, before hash-map overhead.
    #[test]
    fn sender_state_is_bounded() {
        let s = std::mem::size_of::<super::Sender>();
        eprintln!("size_of::<Sender>() = {s}");
        assert!(s <= 1024, "{s}");
    }
}

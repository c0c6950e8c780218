//! The authenticated envelope, v1: an optional wrapper around one Ganglia XDR
//! message that proves which key sealed it and carries a per-sender counter
//! for replay protection and loss accounting.
//!
//! Layout (big-endian, like XDR):
//!
//! | off | size | field | rule |
//! |---|---|---|---|
//! | 0 | 4 | magic | `47 4E 4C 01` ("GNL", version 1): the first byte is non-zero, so the word is never an XDR message id (128–136) |
//! | 4 | 1 | alg | 1 = ChaCha20-Poly1305, 2 = AES-256-GCM; must match the key |
//! | 5 | 1 | flags | bit 0 [`FLAG_ENC`] (payload encrypted), bit 1 [`FLAG_ONESHOT`] (counter is a clock in ns, see below); others 0 |
//! | 6 | 2 | key_id | selects the long-term secret |
//! | 8 | 4 | sender_id | one sequential stream (one sending process) |
//! | 12 | 4 | epoch | rises at each start of the sender |
//! | 16 | 4 | salt | random, drawn at each epoch start |
//! | 20 | 8 | counter | 0, 1, 2, … within the epoch |
//! | 28 | n | payload | one XDR message (ciphertext when `ENC`) |
//! | 28+n | 16 | tag | AEAD tag |
//!
//! Overhead [`OVERHEAD`] = 44 bytes, so the largest payload in a 1472-byte
//! datagram is [`MAX_PAYLOAD`] = 1428 bytes.
//!
//! Authenticate-only (`ENC` = 0) authenticates header and payload as AAD with
//! an empty plaintext; `ENC` = 1 authenticates the header and encrypts the
//! payload. Each (key, flags, sender, epoch, salt) gets its own subkey
//! (HKDF-SHA256 of the long-term secret), and the nonce is `0^32 ‖ counter`,
//! so senders sharing a cluster key never share a (key, nonce) pair.
//!
//! `ONESHOT` streams (`ganglion-agent send`, one process per datagram pair)
//! use a fresh salt per run and the sender's clock in nanoseconds as counter:
//! every run counts above the previous one without any saved state.
//!
//! This module is pure: it parses, builds, seals and opens byte buffers and
//! keeps no state. Replay windows and sender tables live in the aggregator.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use thiserror::Error;

/// The first word of every v1 envelope: "GNL" and version 1.
pub const MAGIC: [u8; 4] = *b"GNL\x01";
/// Header bytes before the payload.
pub const HEADER_LEN: usize = 28;
/// AEAD tag bytes after the payload.
pub const TAG_LEN: usize = 16;
/// Header plus tag.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Largest datagram Ganglia reads (gmond's buffer).
pub const MAX_DATAGRAM: usize = 1472;
/// Largest XDR payload an envelope carries in one datagram.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - OVERHEAD;
/// Flag bit 0: the payload is encrypted.
pub const FLAG_ENC: u8 = 1;
/// Flag bit 1: a one-shot stream whose counter is the sender's clock (ns).
pub const FLAG_ONESHOT: u8 = 2;
/// Length of a long-term secret.
pub const SECRET_LEN: usize = 32;
/// The HKDF salt every subkey derivation uses.
const HKDF_SALT: &[u8] = b"ganglion-udp-v1";

/// The AEAD of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// ChaCha20-Poly1305 (wire value 1): constant time everywhere.
    ChaCha20Poly1305,
    /// AES-256-GCM (wire value 2): less CPU on hosts with AES instructions.
    Aes256Gcm,
}

impl Alg {
    /// The wire byte.
    pub fn to_wire(self) -> u8 {
        match self {
            Alg::ChaCha20Poly1305 => 1,
            Alg::Aes256Gcm => 2,
        }
    }

    /// From the wire byte.
    pub fn from_wire(b: u8) -> Option<Alg> {
        match b {
            1 => Some(Alg::ChaCha20Poly1305),
            2 => Some(Alg::Aes256Gcm),
            _ => None,
        }
    }

    /// The name used in key files.
    pub fn name(self) -> &'static str {
        match self {
            Alg::ChaCha20Poly1305 => "chacha20-poly1305",
            Alg::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// From a key file's name.
    pub fn from_name(s: &str) -> Option<Alg> {
        match s {
            "chacha20-poly1305" => Some(Alg::ChaCha20Poly1305),
            "aes-256-gcm" => Some(Alg::Aes256Gcm),
            _ => None,
        }
    }

    fn ring(self) -> &'static aead::Algorithm {
        match self {
            Alg::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
            Alg::Aes256Gcm => &aead::AES_256_GCM,
        }
    }
}

/// Why a datagram is not a usable envelope, or sealing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    /// Shorter than header plus tag.
    #[error("datagram shorter than the 44-byte envelope overhead")]
    TooShort,
    /// Longer than 1472 bytes (or a payload over [`MAX_PAYLOAD`] to seal).
    #[error("envelope longer than 1472 bytes")]
    TooLong,
    /// The first word is not the envelope's.
    #[error("not an envelope (first word)")]
    BadMagic,
    /// "GNL" with another version.
    #[error("envelope version {0} is not supported")]
    BadVersion(u8),
    /// An algorithm byte this version does not define.
    #[error("unknown algorithm {0}")]
    BadAlg(u8),
    /// Reserved flag bits set.
    #[error("reserved flag bits set: {0:#04x}")]
    BadFlags(u8),
    /// The tag does not verify: forged, corrupted, or another key.
    #[error("authentication tag does not verify")]
    BadTag,
    /// The algorithm in the header is not the key's.
    #[error("algorithm does not match the key")]
    AlgMismatch,
}

/// The 28-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// AEAD.
    pub alg: Alg,
    /// Flag bits ([`FLAG_ENC`], [`FLAG_ONESHOT`]).
    pub flags: u8,
    /// Long-term key.
    pub key_id: u16,
    /// The sending stream.
    pub sender_id: u32,
    /// Sender start number.
    pub epoch: u32,
    /// Random per epoch.
    pub salt: u32,
    /// Datagram number within the epoch.
    pub counter: u64,
}

impl Header {
    /// Whether the payload is encrypted.
    pub fn encrypted(&self) -> bool {
        self.flags & FLAG_ENC != 0
    }

    /// Whether this is a one-shot stream (counter = clock).
    pub fn oneshot(&self) -> bool {
        self.flags & FLAG_ONESHOT != 0
    }

    /// The header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        let (magic, rest) = b.split_at_mut(4);
        magic.copy_from_slice(&MAGIC);
        let (ab, rest) = rest.split_at_mut(1);
        ab.copy_from_slice(&[self.alg.to_wire()]);
        let (fb, rest) = rest.split_at_mut(1);
        fb.copy_from_slice(&[self.flags]);
        let (k, rest) = rest.split_at_mut(2);
        k.copy_from_slice(&self.key_id.to_be_bytes());
        let (s, rest) = rest.split_at_mut(4);
        s.copy_from_slice(&self.sender_id.to_be_bytes());
        let (e, rest) = rest.split_at_mut(4);
        e.copy_from_slice(&self.epoch.to_be_bytes());
        let (sa, c) = rest.split_at_mut(4);
        sa.copy_from_slice(&self.salt.to_be_bytes());
        c.copy_from_slice(&self.counter.to_be_bytes());
        b
    }

    /// Parses the header of a whole datagram (length, magic, version,
    /// algorithm and flags checked; the tag is not).
    pub fn parse(datagram: &[u8]) -> Result<Header, EnvelopeError> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(EnvelopeError::TooLong);
        }
        let first = datagram.get(..4).ok_or(EnvelopeError::TooShort)?;
        if first.get(..3) != MAGIC.get(..3) {
            return Err(EnvelopeError::BadMagic);
        }
        if first != MAGIC {
            return Err(EnvelopeError::BadVersion(
                first.get(3).copied().unwrap_or(0),
            ));
        }
        if datagram.len() < OVERHEAD {
            return Err(EnvelopeError::TooShort);
        }
        let h: &[u8; HEADER_LEN] = datagram
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(EnvelopeError::TooShort)?;
        let [
            _,
            _,
            _,
            _,
            alg,
            flags,
            k0,
            k1,
            s0,
            s1,
            s2,
            s3,
            e0,
            e1,
            e2,
            e3,
            a0,
            a1,
            a2,
            a3,
            c @ ..,
        ] = *h;
        let alg = Alg::from_wire(alg).ok_or(EnvelopeError::BadAlg(alg))?;
        if flags & !(FLAG_ENC | FLAG_ONESHOT) != 0 {
            return Err(EnvelopeError::BadFlags(flags));
        }
        Ok(Header {
            alg,
            flags,
            key_id: u16::from_be_bytes([k0, k1]),
            sender_id: u32::from_be_bytes([s0, s1, s2, s3]),
            epoch: u32::from_be_bytes([e0, e1, e2, e3]),
            salt: u32::from_be_bytes([a0, a1, a2, a3]),
            counter: u64::from_be_bytes(c),
        })
    }
}

/// Whether a datagram starts with the envelope's "GNL" (any version): the
/// receiver's dispatch between envelope and plain XDR.
pub fn looks_enveloped(datagram: &[u8]) -> bool {
    datagram.get(..3) == MAGIC.get(..3)
}

/// A long-term secret and its algorithm.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// Key id on the wire.
    pub key_id: u16,
    /// AEAD.
    pub alg: Alg,
    /// The 32 secret bytes.
    pub bytes: [u8; SECRET_LEN],
}

impl std::fmt::Debug for Secret {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("key_id", &self.key_id)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The AEAD key of one (key, flags, sender, epoch, salt): derived once per
/// sender epoch and cached by both sides.
pub struct SubKey {
    key: LessSafeKey,
    alg: Alg,
}

impl std::fmt::Debug for SubKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SubKey {
    /// HKDF-SHA256(ikm = secret, salt = "ganglion-udp-v1", info = alg ‖
    /// flags ‖ key_id ‖ sender_id ‖ epoch ‖ salt). The header's counter is
    /// not part of it. Fails only if the header's algorithm is not the key's.
    pub fn derive(secret: &Secret, h: &Header) -> Result<SubKey, EnvelopeError> {
        if h.alg != secret.alg {
            return Err(EnvelopeError::AlgMismatch);
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(&secret.bytes);
        let alg = [h.alg.to_wire(), h.flags];
        let key_id = h.key_id.to_be_bytes();
        let sender = h.sender_id.to_be_bytes();
        let epoch = h.epoch.to_be_bytes();
        let salt = h.salt.to_be_bytes();
        let info: [&[u8]; 5] = [&alg, &key_id, &sender, &epoch, &salt];
        // Both only fail for an output longer than 255 × 32 bytes; ours is
        // the AEAD's key length (32).
        let okm = prk
            .expand(&info, h.alg.ring())
            .map_err(|_| EnvelopeError::AlgMismatch)?;
        Ok(SubKey {
            key: LessSafeKey::new(UnboundKey::from(okm)),
            alg: h.alg,
        })
    }
}

/// A key file: one long-term key, in a TOML subset both the agent and the
/// aggregator read (written by `ganglion-agent keygen`):
///
/// ```text
/// # ganglion key file: keep it secret (mode 0600)
/// key_id = 7
/// alg = "chacha20-poly1305"
/// encrypt = false
/// secret = "<64 hex digits>"
/// sender_id = 123456    # optional, agent side: its stream id
/// ```
///
/// `alg` is `chacha20-poly1305` or `aes-256-gcm`; `encrypt` (default false)
/// makes the agent encrypt payloads; `sender_id` (agent only) overrides the
/// id derived from the host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// The key.
    pub secret: Secret,
    /// Whether senders encrypt with it.
    pub encrypt: bool,
    /// A fixed sender id for the agent using it.
    pub sender_id: Option<u32>,
}

/// Why a key file does not parse (never quotes the secret).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyFileError {
    /// A line that is not `name = value`, or a bad value.
    #[error("line {line}: {message}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A required key is absent.
    #[error("missing `{0}`")]
    Missing(&'static str),
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

fn hex_secret(v: &str) -> Option<[u8; SECRET_LEN]> {
    let v = v.as_bytes();
    if v.len() != SECRET_LEN.checked_mul(2)? {
        return None;
    }
    let mut out = [0u8; SECRET_LEN];
    for (o, pair) in out.iter_mut().zip(v.chunks_exact(2)) {
        let s = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

impl KeyFile {
    /// Parses a key file's text.
    pub fn parse(text: &str) -> Result<KeyFile, KeyFileError> {
        let (mut key_id, mut alg, mut secret, mut encrypt, mut sender_id) =
            (None, None, None, false, None);
        for (n, raw) in text.lines().enumerate() {
            let line_no = n.saturating_add(1);
            let err = |m: &str| KeyFileError::Line {
                line: line_no,
                message: m.to_string(),
            };
            // A `#` never occurs inside a value (hex, numbers, alg names).
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| err("expected `name = value`"))?;
            let v = unquote(v.trim());
            match k.trim() {
                "key_id" => {
                    key_id = Some(
                        v.parse::<u16>()
                            .map_err(|_| err("key_id must be 0..65535"))?,
                    )
                }
                "alg" => {
                    alg = Some(Alg::from_name(v).ok_or_else(|| {
                        err("alg must be \"chacha20-poly1305\" or \"aes-256-gcm\"")
                    })?)
                }
                "secret" => {
                    secret = Some(
                        hex_secret(v)
                            .ok_or_else(|| err("secret must be 64 hex digits (32 bytes)"))?,
                    )
                }
                "encrypt" => {
                    encrypt = match v {
                        "true" => true,
                        "false" => false,
                        _ => return Err(err("encrypt must be true or false")),
                    }
                }
                "sender_id" => {
                    sender_id = Some(
                        v.parse::<u32>()
                            .map_err(|_| err("sender_id must be 0..4294967295"))?,
                    )
                }
                other => return Err(err(&format!("unknown key `{other}`"))),
            }
        }
        Ok(KeyFile {
            secret: Secret {
                key_id: key_id.ok_or(KeyFileError::Missing("key_id"))?,
                alg: alg.ok_or(KeyFileError::Missing("alg"))?,
                bytes: secret.ok_or(KeyFileError::Missing("secret"))?,
            },
            encrypt,
            sender_id,
        })
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let hex: String = self
            .secret
            .bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut t = format!(
            "# ganglion key file: keep it secret (mode 0600)\n\
             key_id = {}\nalg = \"{}\"\nencrypt = {}\nsecret = \"{hex}\"\n",
            self.secret.key_id,
            self.secret.alg.name(),
            self.encrypt
        );
        if let Some(s) = self.sender_id {
            t.push_str(&format!("sender_id = {s}\n"));
        }
        t
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    let (_, c) = n.split_at_mut(4);
    c.copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Seals `payload` under `key` with header `h`, replacing `out` with the
/// datagram. `key` must be [`SubKey::derive`]d from the same header (all but
/// the counter).
pub fn seal(
    key: &SubKey,
    h: &Header,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EnvelopeError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(EnvelopeError::TooLong);
    }
    if key.alg != h.alg {
        return Err(EnvelopeError::AlgMismatch);
    }
    out.clear();
    out.extend_from_slice(&h.to_bytes());
    out.extend_from_slice(payload);
    let tag = if h.encrypted() {
        let (head, body) = out.split_at_mut(HEADER_LEN);
        key.key
            .seal_in_place_separate_tag(nonce(h.counter), Aad::from(&*head), body)
    } else {
        key.key
            .seal_in_place_separate_tag(nonce(h.counter), Aad::from(out.as_slice()), &mut [])
    }
    .map_err(|_| EnvelopeError::TooLong)?;
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

/// Verifies a whole datagram with `key` and returns the XDR payload
/// (decrypted in place when `ENC`). `h` is the datagram's parsed header. On
/// any error nothing about the datagram may be trusted.
pub fn open<'a>(
    key: &SubKey,
    h: &Header,
    datagram: &'a mut [u8],
) -> Result<&'a [u8], EnvelopeError> {
    if key.alg != h.alg {
        return Err(EnvelopeError::AlgMismatch);
    }
    let len = datagram.len();
    if len < OVERHEAD {
        return Err(EnvelopeError::TooShort);
    }
    let split = len.checked_sub(TAG_LEN).ok_or(EnvelopeError::TooShort)?;
    if h.encrypted() {
        let (head, body) = datagram.split_at_mut(HEADER_LEN);
        let plain = key
            .key
            .open_in_place(nonce(h.counter), Aad::from(&*head), body)
            .map_err(|_| EnvelopeError::BadTag)?;
        Ok(&*plain)
    } else {
        let (signed, tag) = datagram.split_at_mut(split);
        key.key
            .open_in_place(nonce(h.counter), Aad::from(&*signed), tag)
            .map_err(|_| EnvelopeError::BadTag)?;
        Ok(signed.get(HEADER_LEN..).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(alg: Alg) -> Secret {
        Secret {
            key_id: 7,
            alg,
            bytes: [0x42; 32],
        }
    }

    fn header(alg: Alg, flags: u8) -> Header {
        Header {
            alg,
            flags,
            key_id: 7,
            sender_id: 0x0102_0304,
            epoch: 1_700_000_000,
            salt: 0xdead_beef,
            counter: 5,
        }
    }

    #[test]
    fn key_files_round_trip_and_refuse_bad_lines() {
        let k = KeyFile {
            secret: secret(Alg::Aes256Gcm),
            encrypt: true,
            sender_id: Some(9),
        };
        assert_eq!(KeyFile::parse(&k.to_text()), Ok(k.clone()));
        let text = k.to_text();
        assert!(
            !format!("{:?}", k).contains("4242"),
            "Debug never shows the secret"
        );
        for (bad, want) in [
            ("key_id = 70000", "line 1"),
            ("alg = \"des\"", "line 1"),
            ("secret = \"abc\"", "line 1"),
            ("nonsense", "line 1"),
            ("colour = 1", "unknown key"),
            ("key_id = 1\nalg = \"aes-256-gcm\"", "missing `secret`"),
        ] {
            let e = KeyFile::parse(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
            assert!(!e.contains("4242"));
        }
        assert!(text.contains("key_id = 7"));
    }

    #[test]
    fn header_round_trips_and_has_the_documented_layout() {
        let h = header(Alg::Aes256Gcm, FLAG_ENC);
        let b = h.to_bytes();
        assert_eq!(
            b,
            [
                0x47, 0x4e, 0x4c, 0x01, 2, 1, 0, 7, 1, 2, 3, 4, 0x65, 0x53, 0xf1, 0x00, 0xde, 0xad,
                0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 5
            ]
        );
        let mut d = b.to_vec();
        d.extend_from_slice(&[0; TAG_LEN]);
        assert_eq!(Header::parse(&d), Ok(h));
    }

    #[test]
    fn the_first_word_is_never_an_xdr_message_id() {
        let w = u32::from_be_bytes(MAGIC);
        assert!(!(128..=136).contains(&w));
        for id in 128u32..=136 {
            assert!(!looks_enveloped(&id.to_be_bytes()));
        }
    }

    /// Table of header refusals, each with its reason.
    #[test]
    fn malformed_headers_are_refused_with_their_reason() {
        let good = {
            let mut d = header(Alg::ChaCha20Poly1305, 0).to_bytes().to_vec();
            d.extend_from_slice(&[0; TAG_LEN]);
            d
        };
        let with = |i: usize, v: u8| {
            let mut d = good.clone();
            d[i] = v;
            d
        };
        let cases: Vec<(Vec<u8>, EnvelopeError)> = vec![
            (good[..43].to_vec(), EnvelopeError::TooShort),
            (good[..2].to_vec(), EnvelopeError::TooShort),
            (vec![0x47; 1473], EnvelopeError::TooLong),
            (with(0, 0), EnvelopeError::BadMagic),
            (with(3, 2), EnvelopeError::BadVersion(2)),
            (with(4, 0), EnvelopeError::BadAlg(0)),
            (with(4, 3), EnvelopeError::BadAlg(3)),
            (with(5, 4), EnvelopeError::BadFlags(4)),
            (with(5, 0x80), EnvelopeError::BadFlags(0x80)),
        ];
        for (d, want) in cases {
            assert_eq!(Header::parse(&d), Err(want), "{d:?}");
        }
    }

    #[test]
    fn seal_and_open_in_both_modes_and_algorithms() {
        for alg in [Alg::ChaCha20Poly1305, Alg::Aes256Gcm] {
            for flags in [0, FLAG_ENC, FLAG_ONESHOT, FLAG_ENC | FLAG_ONESHOT] {
                let h = header(alg, flags);
                let k = SubKey::derive(&secret(alg), &h).unwrap();
                let payload = b"\0\0\0\x85hello xdr".to_vec();
                let mut out = Vec::new();
                seal(&k, &h, &payload, &mut out).unwrap();
                assert_eq!(out.len(), payload.len() + OVERHEAD);
                // Authenticate-only leaves the payload readable.
                assert_eq!(
                    &out[HEADER_LEN..HEADER_LEN + payload.len()] == payload.as_slice(),
                    flags & FLAG_ENC == 0
                );
                let parsed = Header::parse(&out).unwrap();
                assert_eq!(parsed, h);
                let k2 = SubKey::derive(&secret(alg), &parsed).unwrap();
                assert_eq!(open(&k2, &parsed, &mut out).unwrap(), payload.as_slice());
            }
        }
    }

    #[test]
    fn every_bit_flip_fails_to_verify() {
        for flags in [0, FLAG_ENC] {
            let h = header(Alg::ChaCha20Poly1305, flags);
            let s = secret(Alg::ChaCha20Poly1305);
            let k = SubKey::derive(&s, &h).unwrap();
            let mut good = Vec::new();
            seal(&k, &h, b"\0\0\0\x85payload", &mut good).unwrap();
            for bit in 0..good.len() * 8 {
                let mut d = good.clone();
                d[bit / 8] ^= 1 << (bit % 8);
                let ok = Header::parse(&d).ok().is_some_and(|h2| {
                    SubKey::derive(&s, &h2).is_ok_and(|k2| open(&k2, &h2, &mut d).is_ok())
                });
                assert!(!ok, "bit {bit} flipped still verifies");
            }
        }
    }

    #[test]
    fn another_key_or_counter_fails() {
        let h = header(Alg::Aes256Gcm, 0);
        let k = SubKey::derive(&secret(Alg::Aes256Gcm), &h).unwrap();
        let mut d = Vec::new();
        seal(&k, &h, b"x", &mut d).unwrap();
        let mut other = secret(Alg::Aes256Gcm);
        other.bytes[0] ^= 1;
        let k2 = SubKey::derive(&other, &h).unwrap();
        assert_eq!(open(&k2, &h, &mut d.clone()), Err(EnvelopeError::BadTag));
        let mut h3 = h;
        h3.counter = 6;
        assert_eq!(open(&k, &h3, &mut d), Err(EnvelopeError::BadTag));
        assert_eq!(
            SubKey::derive(&secret(Alg::ChaCha20Poly1305), &h).err(),
            Some(EnvelopeError::AlgMismatch)
        );
    }

    #[test]
    fn the_largest_payload_fits_one_datagram() {
        let h = header(Alg::ChaCha20Poly1305, FLAG_ENC);
        let k = SubKey::derive(&secret(Alg::ChaCha20Poly1305), &h).unwrap();
        let mut out = Vec::new();
        seal(&k, &h, &[0; MAX_PAYLOAD], &mut out).unwrap();
        assert_eq!(out.len(), MAX_DATAGRAM);
        assert_eq!(
            seal(&k, &h, &[0; MAX_PAYLOAD + 1], &mut out),
            Err(EnvelopeError::TooLong)
        );
    }

    /// Known answer: a fixed key, header and payload always give these bytes
    /// (pins HKDF info order, nonce and AAD against accidental change).
    #[test]
    fn known_answer() {
        let h = header(Alg::ChaCha20Poly1305, 0);
        let k = SubKey::derive(&secret(Alg::ChaCha20Poly1305), &h).unwrap();
        let mut out = Vec::new();
        seal(&k, &h, b"abc", &mut out).unwrap();
        let tag: String = out[HEADER_LEN + 3..]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(tag, KAT_TAG);
    }

    /// Computed by this implementation when the format was fixed; a change
    /// here means existing agents and aggregators no longer interoperate.
    const KAT_TAG: &str = "eb380684bc678f8da51a39a8caf10202";
}

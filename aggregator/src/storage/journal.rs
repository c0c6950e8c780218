//! The write-ahead journal: a pure codec for its records ([`encode_define`],
//! [`encode_sample`], [`parse`]) and [`Journal`], which owns the file, its
//! generation and the journals set aside during a pass.
//!
//! # Format (version 2)
//!
//! A journal file starts with the line `#ganglion-journal v2`. Each record is
//! one line: its fields separated by tabs, then a tab and the CRC-32 of
//! everything before that tab (8 lowercase hex digits), then `\n`:
//!
//! ```text
//! S <n> <DS type> <step> <DS count> <path> <crc>   names file n (once per generation)
//! <n> <time> <values> <crc>                        one update of file n
//! ```
//!
//! Paths are escaped (`\\`, `\t`, `\n`, `\r`). Only complete records (ended
//! by `\n`) whose checksum matches are replayed; a torn last record (a crash
//! mid-append) or a corrupted one is skipped, counted
//! (`ganglion_rrd_journal_bad_records_total`) and logged once per replay.
//! So replay writes a sample's exact value or nothing, never a value cut
//! short (`21.5` torn to `2`).
//!
//! # Journals from before version 2
//!
//! A file without the marker line is an older journal (no checksums). It is
//! still replayed, so an upgrade loses nothing, but only its complete lines
//! that parse cleanly (both older forms: numbered definitions and samples,
//! and the one-line-per-sample `<path> <type> <step> <time> <values>`); a
//! torn last line is skipped and reported like a bad record. At start such a
//! file is set aside (renamed like a journal of an unfinished pass) before
//! anything is appended, so a file never mixes the two formats.

use std::borrow::Cow;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

/// First line of a version-2 journal.
pub(super) const MARKER: &[u8] = b"#ganglion-journal v2\n";

/// One journal record, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Record<'a> {
    /// File `id` of this journal is `path`, created with these parameters.
    Define {
        /// The file's number in this journal.
        id: u32,
        /// DS type.
        ds_type: &'static str,
        /// Step.
        step: u32,
        /// DS count (1 or 2).
        dss: u8,
        /// The path, unescaped.
        path: String,
    },
    /// One update of file `id`.
    Sample {
        /// The file's number.
        id: u32,
        /// Time.
        time: u64,
        /// Values (`v` or `v:v`).
        values: &'a str,
    },
    /// One update naming its file (the oldest journal form).
    Whole {
        /// The path.
        path: String,
        /// DS type.
        ds_type: &'static str,
        /// Step.
        step: u32,
        /// Time.
        time: u64,
        /// Values.
        values: &'a str,
    },
}

/// Why a line is not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum BadRecord {
    /// No checksum, or one that does not match.
    #[error("checksum missing or wrong")]
    Checksum,
    /// The fields do not make a record.
    #[error("not a journal record")]
    Shape,
}

/// Journal lines name files by path; these characters would break a line.
pub(super) fn escape_path(p: &str) -> Cow<'_, str> {
    if !p.contains(['\\', '\t', '\n', '\r']) {
        return p.into();
    }
    let mut out = String::with_capacity(p.len() + 8);
    for c in p.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.into()
}

pub(super) fn unescape_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(c) => out.push(c),
            None => out.push('\\'),
        }
    }
    out
}

/// A DS type as the journal spells it (anything else reads as GAUGE, the
/// default, as before).
pub(super) fn parse_ds_type(t: &str) -> &'static str {
    match t {
        "COUNTER" => "COUNTER",
        "DERIVE" => "DERIVE",
        _ => "GAUGE",
    }
}

/// Ends the record started at `from` in `out`: tab, checksum, newline.
fn seal(out: &mut Vec<u8>, from: usize) {
    let crc = crc32fast::hash(&out[from..]);
    out.push(b'\t');
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..8).rev() {
        out.push(HEX[((crc >> (shift * 4)) & 0xf) as usize]);
    }
    out.push(b'\n');
}

/// Appends a definition record.
pub(super) fn encode_define(
    out: &mut Vec<u8>,
    id: u32,
    ds_type: &str,
    step: u32,
    dss: u8,
    path: &str,
) {
    let from = out.len();
    out.extend_from_slice(b"S\t");
    out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    out.push(b'\t');
    out.extend_from_slice(ds_type.as_bytes());
    out.push(b'\t');
    out.extend_from_slice(itoa::Buffer::new().format(step).as_bytes());
    out.push(b'\t');
    out.extend_from_slice(itoa::Buffer::new().format(dss).as_bytes());
    out.push(b'\t');
    out.extend_from_slice(escape_path(path).as_bytes());
    seal(out, from);
}

/// Appends a sample record (`values` as packed: `v` or `v:v`).
pub(super) fn encode_sample(out: &mut Vec<u8>, id: u32, time: u64, values: &[u8]) {
    let from = out.len();
    out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    out.push(b'\t');
    out.extend_from_slice(itoa::Buffer::new().format(time).as_bytes());
    out.push(b'\t');
    out.extend_from_slice(values);
    seal(out, from);
}

/// A decimal number of plain digits (no sign, no spaces).
fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses one version-2 record (without its `\n`).
pub(super) fn parse(line: &[u8]) -> Result<Record<'_>, BadRecord> {
    let tab = line
        .iter()
        .rposition(|&b| b == b'\t')
        .ok_or(BadRecord::Checksum)?;
    let (payload, crc) = (&line[..tab], &line[tab + 1..]);
    let crc = std::str::from_utf8(crc).map_err(|_| BadRecord::Checksum)?;
    if crc.len() != 8
        || !crc
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        || u32::from_str_radix(crc, 16).ok() != Some(crc32fast::hash(payload))
    {
        return Err(BadRecord::Checksum);
    }
    let payload = std::str::from_utf8(payload).map_err(|_| BadRecord::Shape)?;
    parse_fields(payload, false).ok_or(BadRecord::Shape)
}

/// Parses one line of a journal from before version 2 (without its `\n`).
pub(super) fn parse_legacy(line: &[u8]) -> Option<Record<'_>> {
    parse_fields(std::str::from_utf8(line).ok()?, true)
}

fn parse_fields(payload: &str, legacy: bool) -> Option<Record<'_>> {
    let parts: Vec<&str> = payload.split('\t').collect();
    match parts.as_slice() {
        ["S", id, ds_type, step, dss, path] => Some(Record::Define {
            id: number(id)?,
            ds_type: parse_ds_type(ds_type),
            step: number(step)?,
            dss: number(dss).filter(|d| (1..=2).contains(d))?,
            path: unescape_path(path),
        }),
        [id, time, values] => Some(Record::Sample {
            id: number(id)?,
            time: number(time)?,
            values: values_ok(values, None).then_some(*values)?,
        }),
        [path, ds_type, step, time, values] if legacy => Some(Record::Whole {
            path: path.to_string(),
            ds_type: parse_ds_type(ds_type),
            step: number(step)?,
            time: number(time)?,
            values: values_ok(values, None).then_some(*values)?,
        }),
        _ => None,
    }
}

/// Whether `values` can go into librrd's argument list and the journal:
/// `dss` (when given) non-empty fields separated by `:`, no control
/// characters.
pub(super) fn values_ok(values: &str, dss: Option<u8>) -> bool {
    let mut fields = 0usize;
    for f in values.split(':') {
        if f.is_empty() || f.bytes().any(|b| b < b' ' || b == 0x7f) {
            return false;
        }
        fields += 1;
    }
    fields <= 2 && dss.is_none_or(|d| usize::from(d) == fields)
}

/// What reading one journal file found besides its records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReadStats {
    /// The file had no version-2 marker.
    pub(super) legacy: bool,
    /// Complete lines that were not valid records.
    pub(super) bad: u64,
    /// Bytes of a last line without its `\n` (a torn append).
    pub(super) torn_bytes: u64,
}

/// Reads a journal file, handing each valid record to `f`.
pub(super) fn read(
    r: impl std::io::Read,
    mut f: impl FnMut(Record<'_>),
) -> std::io::Result<ReadStats> {
    let mut r = std::io::BufReader::with_capacity(1 << 16, r);
    let mut stats = ReadStats::default();
    let mut line = Vec::with_capacity(128);
    let mut first = true;
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            stats.torn_bytes = line.len() as u64;
            break;
        }
        if first {
            first = false;
            if line == MARKER {
                continue;
            }
            stats.legacy = true;
        }
        let body = &line[..line.len() - 1];
        let rec = if stats.legacy {
            parse_legacy(body).ok_or(BadRecord::Shape)
        } else {
            parse(body)
        };
        match rec {
            Ok(rec) => f(rec),
            Err(_) => stats.bad += 1,
        }
    }
    Ok(stats)
}

/// The current journal's path.
pub(super) fn journal_path(root: &Path) -> PathBuf {
    root.join(".ganglion-journal")
}

/// A journal set aside during a flush pass (see [`Journal::rotate`]).
pub(super) fn rotated_journal_path(root: &Path, seq: u64) -> PathBuf {
    root.join(format!(".ganglion-journal.{seq}"))
}

/// Set-aside journals left by a run that stopped mid-pass, oldest first.
pub(super) fn rotated_journals(root: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let seq = name
                .to_str()?
                .strip_prefix(".ganglion-journal.")?
                .parse()
                .ok()?;
            Some((seq, e.path()))
        })
        .collect();
    found.sort();
    found
}

fn journal_writer(file: std::fs::File) -> BufWriter<std::fs::File> {
    BufWriter::with_capacity(1 << 20, file)
}

/// Opens (creating) the journal for appending; a new or empty file gets the
/// marker first. An existing file of the older format is set aside first
/// (see the module docs), so it is replayed as it is.
pub(super) fn open_journal(root: &Path) -> std::io::Result<BufWriter<std::fs::File>> {
    let path = journal_path(root);
    if let Ok(mut f) = std::fs::File::open(&path) {
        use std::io::Read;
        let mut head = vec![0u8; MARKER.len()];
        let n = f.read(&mut head)?;
        if n > 0 && head[..n] != MARKER[..n] {
            let seq = rotated_journals(root).last().map_or(0, |(s, _)| *s) + 1;
            std::fs::rename(&path, rotated_journal_path(root, seq))?;
        }
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let empty = f.metadata()?.len() == 0;
    let mut w = journal_writer(f);
    if empty {
        w.write_all(MARKER)?;
    }
    Ok(w)
}

/// The journal file the writer appends to, and the files set aside during
/// a pass. It knows files and bytes; which records to write, and when to
/// start over, is the writer's business.
pub(super) struct Journal {
    root: PathBuf,
    file: Option<BufWriter<std::fs::File>>,
    /// Written since the last commit.
    pub(super) dirty: bool,
    /// Bumped whenever the journal starts over; a file's definition record
    /// is written once per generation, its samples then name it by number.
    pub(super) generation: u64,
    /// Journals set aside at the start of a pass, removed at its end.
    pub(super) rotated: Vec<PathBuf>,
    rotate_seq: u64,
}

impl Journal {
    /// A journal appending to `file` (`None`: journaling is off).
    pub(super) fn new(root: &Path, file: Option<BufWriter<std::fs::File>>) -> Journal {
        Journal {
            root: root.to_path_buf(),
            file,
            dirty: false,
            generation: 1,
            rotated: Vec::new(),
            rotate_seq: 0,
        }
    }

    /// Whether journaling is on.
    pub(super) fn is_on(&self) -> bool {
        self.file.is_some()
    }

    /// The current file's path.
    pub(super) fn path(&self) -> PathBuf {
        journal_path(&self.root)
    }

    /// Appends encoded records (whole: a failed write leaves no partial
    /// record behind in our buffer).
    pub(super) fn append(&mut self, records: &[u8]) -> std::io::Result<()> {
        if let Some(j) = &mut self.file {
            j.write_all(records)?;
            self.dirty = true;
        }
        Ok(())
    }

    /// Group commit: one write and one fsync per commit interval. Stays
    /// dirty on failure: what is still buffered goes out next time.
    pub(super) fn commit(&mut self) -> std::io::Result<()> {
        if self.dirty
            && let Some(j) = &mut self.file
        {
            j.flush().and_then(|()| j.get_ref().sync_data())?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Set-aside journals found at start (a run that stopped mid-pass),
    /// oldest first; they are removed once a pass has written them.
    pub(super) fn adopt_rotated(&mut self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for (seq, path) in rotated_journals(&self.root) {
            self.rotate_seq = self.rotate_seq.max(seq);
            files.push(path.clone());
            self.rotated.push(path);
        }
        files
    }

    /// At the start of a flush pass the journal is set aside under a
    /// numbered name and a fresh one takes what arrives during the pass; the
    /// set-aside files are removed when the pass has put their samples on
    /// disk. So a pass never rewrites the journal (at a million files that
    /// would be hundreds of megabytes) unless writes failed. `Ok(false)`
    /// when journaling is off.
    pub(super) fn rotate(&mut self) -> std::io::Result<bool> {
        let Some(j) = &mut self.file else {
            return Ok(false);
        };
        let root = self.root.clone();
        let jp = journal_path(&root);
        let next = rotated_journal_path(&root, self.rotate_seq + 1);
        let r = j
            .flush()
            .and_then(|()| j.get_ref().sync_data())
            .and_then(|()| std::fs::rename(&jp, &next))
            .and_then(|()| open_journal(&root))
            .and_then(|fresh| {
                // The new name and the new file must survive a crash too.
                std::fs::File::open(&root)?.sync_all()?;
                Ok(fresh)
            });
        match r {
            Ok(fresh) => {
                self.rotate_seq += 1;
                self.rotated.push(next);
                self.file = Some(fresh);
                self.generation += 1;
                // The marker of the fresh file is buffered.
                self.dirty = true;
                Ok(true)
            }
            Err(e) => {
                if !jp.exists() {
                    // Renamed but no fresh file: put the name back (the open
                    // handle writes to that same file either way).
                    let _ = std::fs::rename(&next, &jp);
                }
                Err(e)
            }
        }
    }

    /// Empties the journal (everything it held is in the files or was
    /// given up) and starts a new generation.
    pub(super) fn truncate(&mut self) -> std::io::Result<()> {
        let Some(j) = self.file.take() else {
            return Ok(());
        };
        self.generation += 1;
        // The old buffer is superseded: dropped unwritten.
        let (file, _) = j.into_parts();
        let r = file.set_len(0).and_then(|()| file.sync_data());
        let mut w = journal_writer(file);
        let marker = w.write_all(MARKER);
        self.file = Some(w);
        self.dirty = true;
        r.and(marker)
    }

    /// Replaces the journal with a new file holding what `fill` writes (a
    /// new generation; a temporary file renamed over the old, so a crash
    /// meanwhile loses nothing). On failure the old journal stays, and the
    /// generation moves on again so every file defines itself anew in it.
    pub(super) fn replace(
        &mut self,
        fill: impl FnOnce(&mut dyn Write, u64) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let Some(j) = self.file.take() else {
            return Ok(());
        };
        self.generation += 1;
        let generation = self.generation;
        let jp = journal_path(&self.root);
        let tmp = jp.with_extension("new");
        let result = (|| {
            let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
            w.write_all(MARKER)?;
            fill(&mut w, generation)?;
            w.into_inner().map_err(|e| e.into_error())?.sync_data()?;
            std::fs::rename(&tmp, &jp)?;
            std::fs::OpenOptions::new().append(true).open(&jp)
        })();
        match result {
            Ok(file) => {
                // The old handle's buffer is superseded: dropped unwritten.
                let _ = j.into_parts();
                self.file = Some(journal_writer(file));
                self.dirty = false;
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                self.generation += 1;
                self.file = Some(j);
                Err(e)
            }
        }
    }

    /// Removes the journals set aside (their samples are on disk or
    /// cached and in the current journal).
    pub(super) fn remove_rotated(&mut self) {
        for p in self.rotated.drain(..) {
            if let Err(e) = std::fs::remove_file(&p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %p.display(), error = %e, "cannot remove a set-aside RRD journal");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(bytes: &[u8]) -> (Vec<String>, ReadStats) {
        let mut out = Vec::new();
        let stats = read(bytes, |r| out.push(format!("{r:?}"))).unwrap();
        (out, stats)
    }

    #[test]
    fn records_round_trip_and_carry_their_checksum() {
        let mut buf = MARKER.to_vec();
        encode_define(&mut buf, 7, "COUNTER", 15, 2, "/r/a\tb\\c.rrd");
        encode_sample(&mut buf, 7, 1_700_000_015, b"21.5:3");
        let (recs, stats) = records(&buf);
        assert_eq!(stats, ReadStats::default());
        assert_eq!(
            recs,
            [
                format!(
                    "{:?}",
                    Record::Define {
                        id: 7,
                        ds_type: "COUNTER",
                        step: 15,
                        dss: 2,
                        path: "/r/a\tb\\c.rrd".into()
                    }
                ),
                format!(
                    "{:?}",
                    Record::Sample {
                        id: 7,
                        time: 1_700_000_015,
                        values: "21.5:3"
                    }
                ),
            ]
        );
        let line = std::str::from_utf8(&buf[MARKER.len()..]).unwrap();
        assert!(
            line.lines()
                .all(|l| l.rsplit('\t').next().unwrap().len() == 8)
        );
    }

    /// The review's case: `12\t1700000015\t21.5` torn to `…\t2` must not
    /// replay as 2, in either format.
    #[test]
    fn a_torn_or_altered_record_is_not_a_record() {
        let mut buf = Vec::new();
        encode_sample(&mut buf, 12, 1_700_000_015, b"21.5");
        let body = &buf[..buf.len() - 1];
        assert!(parse(body).is_ok());
        for cut in 0..body.len() {
            assert!(parse(&body[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..body.len() {
            for bit in 0..8 {
                let mut b = body.to_vec();
                b[i] ^= 1 << bit;
                assert!(parse(&b).is_err(), "byte {i} bit {bit}");
            }
        }
        // Without the marker: older lines, complete ones only.
        let (recs, stats) = records(b"12\t1700000015\t21.5\n12\t1700000030\t2");
        assert_eq!(recs.len(), 1);
        assert!(stats.legacy);
        assert_eq!(stats.torn_bytes, 15);
        let (recs, stats) = records(b"12\t1700000015\t\n12\t17000000x0\t5\n");
        assert!(recs.is_empty());
        assert_eq!(stats.bad, 2);
    }

    #[test]
    fn values_must_be_fields_a_librrd_update_takes() {
        assert!(values_ok("1.5", Some(1)) && values_ok("1.5:3", Some(2)));
        assert!(values_ok("U", None));
        for bad in ["", ":", "1:", ":1", "1::2", "1\n", "1:2:3", "1\t2"] {
            assert!(!values_ok(bad, None), "{bad:?}");
        }
        assert!(!values_ok("1", Some(2)));
    }
}

//! Re-reading a small /proc or /sys file without allocating: the file stays
//! open and is read again from offset 0 with `pread` into a buffer that is
//! kept between reads (as procps does with /proc/stat). The kernel regenerates
//! these files on every read from offset 0, so each read is a fresh snapshot,
//! and the agent saves an open and a close per read.

use super::{CollectError, src_err};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Big enough for /proc/meminfo, /proc/mounts and the head of /proc/stat on
/// small hosts; the buffer grows (once) for larger files and keeps its size.
const INITIAL_LEN: usize = 4096;

/// One file kept open, with its read buffer.
#[derive(Debug)]
pub struct ProcFile {
    path: &'static str,
    file: Option<File>,
    // Kept initialised to its full length; `filled` says how much of it holds
    // the last read, so nothing is zeroed again between reads.
    buf: Vec<u8>,
    filled: usize,
}

impl ProcFile {
    /// A reader for `path`; nothing is opened until the first read.
    pub const fn new(path: &'static str) -> ProcFile {
        ProcFile {
            path,
            file: None,
            buf: Vec::new(),
            filled: 0,
        }
    }

    /// The whole file as it is now.
    pub fn read(&mut self) -> Result<&[u8], CollectError> {
        self.read_with(false)
    }

    /// The start of the file as it is now: one read of up to the buffer's
    /// size, for callers that need only the first line (at least 4 KiB).
    pub fn read_head(&mut self) -> Result<&[u8], CollectError> {
        self.read_with(true)
    }

    fn read_with(&mut self, head_only: bool) -> Result<&[u8], CollectError> {
        match self.fill(head_only) {
            Ok(()) => Ok(&self.buf[..self.filled]),
            Err(e) => {
                self.filled = 0;
                // Re-open next time: the file may have been replaced (or the
                // descriptor gone bad); a later read may succeed.
                self.file = None;
                Err(src_err(self.path, e))
            }
        }
    }

    fn fill(&mut self, head_only: bool) -> io::Result<()> {
        if self.buf.is_empty() {
            self.buf.resize(INITIAL_LEN, 0);
        }
        let file = match &self.file {
            Some(f) => f,
            None => self.file.insert(File::open(self.path)?),
        };
        self.filled = 0;
        // Until EOF: seq_file returns at most about a page per read for
        // multi-record files, so a short read does not mean the end.
        loop {
            if self.filled == self.buf.len() {
                if head_only {
                    return Ok(());
                }
                let grown = self.buf.len() * 2;
                self.buf.resize(grown, 0);
            }
            let n = file.read_at(&mut self.buf[self.filled..], self.filled as u64)?;
            self.filled += n;
            if n == 0 || head_only {
                return Ok(());
            }
        }
    }
}

/// Lines of a /proc text, without the newline.
pub fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|&b| b == b'\n')
}

/// Whitespace-separated fields of one line (what `str::split_whitespace` gives
/// for ASCII text).
pub fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(u8::is_ascii_whitespace)
        .filter(|f| !f.is_empty())
}

/// One field parsed with `str::parse` (the same rules the procfs crate used).
pub fn parse<T: std::str::FromStr>(field: &[u8]) -> Option<T> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rereads_fresh_and_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one\n").unwrap();
        // The reader wants a 'static path, as every /proc path is.
        let leaked: &'static str = Box::leak(path.to_str().unwrap().to_owned().into_boxed_str());
        let mut f = ProcFile::new(leaked);
        assert_eq!(f.read().unwrap(), b"one\n");
        let big = "x".repeat(3 * INITIAL_LEN + 7);
        std::fs::write(&path, &big).unwrap();
        assert_eq!(f.read().unwrap(), big.as_bytes());
        // The grown buffer takes it in one read; a new reader's head is 4 KiB.
        assert_eq!(f.read_head().unwrap(), big.as_bytes());
        let mut fresh = ProcFile::new(leaked);
        assert_eq!(fresh.read_head().unwrap(), &big.as_bytes()[..INITIAL_LEN]);
        std::fs::write(&path, "two\n").unwrap();
        assert_eq!(f.read_head().unwrap(), b"two\n");
        assert_eq!(f.read().unwrap(), b"two\n");
    }

    #[test]
    fn missing_file_is_a_source_error() {
        let mut f = ProcFile::new("/nonexistent/ganglion-agent-test");
        assert!(matches!(f.read(), Err(CollectError::Source { .. })));
    }

    #[test]
    fn splitting() {
        let l: Vec<&[u8]> = fields(b"  cpu  1 22\t333 ").collect();
        assert_eq!(l, [&b"cpu"[..], b"1", b"22", b"333"]);
        assert_eq!(parse::<u64>(b"42"), Some(42));
        assert_eq!(parse::<u64>(b"4x"), None);
        assert_eq!(parse::<f32>(b"0.67"), Some(0.67));
        assert_eq!(lines(b"a\nb\n").collect::<Vec<_>>(), [&b"a"[..], b"b", b""]);
    }
}

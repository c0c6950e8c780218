//! The only crate with `unsafe`: a safe wrapper over librrd, gmetad's on-disk
//! layout, and an rrdcached client.
//!
//! Only librrd's thread-safe entry points are called concurrently: the `_r`
//! functions (create, update, fetch, info, last). `rrd_parsetime` keeps static
//! parser state, so [`parse_time_range`] serialises it behind a mutex. librrd
//! keeps its error string per thread; every wrapper reads and clears it on the
//! calling thread right after the call.

// time_t and c_ulong are 64-bit here but not everywhere: the casts stay for
// portability even where they are the identity.
#![allow(clippy::unnecessary_cast)]

pub mod layout;
pub mod plan;
pub mod prefetch;
pub mod rrdcached;

use std::ffi::{CStr, CString, c_char, c_int, c_ulong};
use std::path::Path;
use std::sync::Mutex;
use thiserror::Error;

/// A librrd or argument error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RrdError {
    /// librrd refused the operation.
    #[error("{op} {path}: {message}")]
    Librrd {
        /// Operation (`create`, `update`, `fetch`, `info`).
        op: &'static str,
        /// File.
        path: String,
        /// librrd's message.
        message: String,
    },
    /// A path or argument contains a NUL byte or is not valid text.
    #[error("invalid argument for {op}: {what}")]
    InvalidArgument {
        /// Operation.
        op: &'static str,
        /// What was wrong.
        what: String,
    },
    /// A time specification librrd could not parse.
    #[error("bad time {spec:?}: {message}")]
    Time {
        /// The specification.
        spec: String,
        /// librrd's message.
        message: String,
    },
}

impl RrdError {
    /// What this failure says about the disk or the file (see [`Cause`]).
    /// The file's own name is left out of what is read: a sender chooses
    /// metric names, and a metric called "No space left on device" must not
    /// look like a full disk.
    pub fn cause(&self) -> Cause {
        match self {
            RrdError::Librrd { message, path, .. } => Cause::of_error(message, Some(path)),
            RrdError::InvalidArgument { .. } | RrdError::Time { .. } => Cause::Other,
        }
    }
}

/// Why a create or update failed, as far as the error tells.
///
/// librrd reports failures only as text: its own phrases, plus `strerror` for
/// system errors. Our processes never call `setlocale`, so that text is the C
/// locale's English and these phrases are stable. rrdcached relays librrd's
/// messages, so its refusals classify the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The file system is full or the quota is used up (`ENOSPC`, `EDQUOT`).
    NoSpace,
    /// Writing is refused: a read-only file system, permissions, an
    /// immutable file (`EROFS`, `EACCES`, `EPERM`).
    ReadOnly,
    /// The file is not one librrd can update: not an RRD at all, truncated,
    /// corrupt, from another architecture or version, or with other data
    /// sources than the update carries.
    BadFile,
    /// Something the write needs is missing for now and will very likely be
    /// back: file descriptors (`EMFILE`, `ENFILE`), memory (`ENOMEM`), the
    /// rrdcached connection, or a temporary file librrd could not make.
    /// Retrying the same samples later works, so they are kept.
    Transient,
    /// Anything else (a value that is not a number, a time that goes back, a
    /// lock held by another process…): retrying the same samples would fail
    /// the same way.
    Other,
}

impl Cause {
    /// Whether samples whose write failed this way are kept and retried
    /// (within the retry window) rather than given up.
    pub fn retryable(self) -> bool {
        matches!(self, Cause::NoSpace | Cause::ReadOnly | Cause::Transient)
    }

    /// Classifies a librrd (or rrdcached) error message. Quoted text (librrd
    /// quotes the file name) is left out, see [`Cause::of_error`].
    pub fn of_message(message: &str) -> Cause {
        Cause::of_error(message, None)
    }

    /// Classifies a librrd (or rrdcached) error message about the file
    /// `path`. The file's name is removed before the message is read: first
    /// the path itself wherever it appears (rrdcached names files without
    /// quotes), then everything from the first to the last single quote
    /// (librrd's `'<path>'`, which may itself contain quotes). So only
    /// librrd's own words and `strerror`'s decide.
    pub fn of_error(message: &str, path: Option<&str>) -> Cause {
        let mut text = std::borrow::Cow::Borrowed(message);
        if let Some(p) = path.filter(|p| !p.is_empty())
            && text.contains(p)
        {
            text = text.replace(p, "").into();
        }
        if let (Some(a), Some(b)) = (text.find('\''), text.rfind('\''))
            && a < b
        {
            let mut t = String::with_capacity(text.len());
            t.push_str(&text[..a]);
            t.push_str(&text[b + 1..]);
            text = t.into();
        }
        Cause::classify(&text)
    }

    fn classify(message: &str) -> Cause {
        const NO_SPACE: [&str; 2] = ["No space left on device", "Disk quota exceeded"];
        const READ_ONLY: [&str; 3] = [
            "Read-only file system",
            "Permission denied",
            "Operation not permitted",
        ];
        // Resources of the process or the system, back once freed: out of
        // descriptors ("Too many open files", "… in system"), memory, or a
        // temporary file librrd could not make (it gives no errno for that;
        // a full or read-only disk is told apart by the caller's statvfs).
        const TRANSIENT: [&str; 6] = [
            "Too many open files",
            "Cannot allocate memory",
            "Resource temporarily unavailable",
            "Cannot create temporary file",
            "librrd could not write the new file and gave no reason",
            "Connection reset by peer",
        ];
        // librrd 1.7's phrases for a file it cannot read as an RRD, or whose
        // data sources do not match the update.
        const BAD_FILE: [&str; 7] = [
            "is not an RRD file",
            "is too small (should be",
            "reached EOF while loading header",
            "created on another architecture",
            "handle RRD file version",
            "data source readings",
            "found extra data on update argument",
        ];
        let has = |phrases: &[&str]| phrases.iter().any(|p| message.contains(p));
        // System errors first: "opening 'x': Read-only file system" is about
        // the disk, not the file.
        if has(&NO_SPACE) {
            Cause::NoSpace
        } else if has(&READ_ONLY) {
            Cause::ReadOnly
        } else if has(&TRANSIENT) {
            Cause::Transient
        } else if has(&BAD_FILE)
            // An empty file: mmap of length 0 is EINVAL.
            || (message.contains("mmaping file") && message.contains("Invalid argument"))
        {
            Cause::BadFile
        } else {
            Cause::Other
        }
    }

    /// The cause of a system error, where one of the kinds above applies.
    pub fn of_io(e: &std::io::Error) -> Cause {
        use std::io::ErrorKind as K;
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN | libc::EINTR) => {
                return Cause::Transient;
            }
            Some(libc::ENOSPC | libc::EDQUOT) => return Cause::NoSpace,
            Some(libc::EROFS | libc::EACCES | libc::EPERM) => return Cause::ReadOnly,
            _ => {}
        }
        match e.kind() {
            K::StorageFull | K::QuotaExceeded => Cause::NoSpace,
            K::ReadOnlyFilesystem | K::PermissionDenied => Cause::ReadOnly,
            K::OutOfMemory | K::WouldBlock | K::Interrupted | K::TimedOut => Cause::Transient,
            _ => Cause::Other,
        }
    }
}

fn cstring(op: &'static str, s: &str) -> Result<CString, RrdError> {
    CString::new(s).map_err(|_| RrdError::InvalidArgument {
        op,
        what: format!("{s:?} contains NUL"),
    })
}

fn path_cstring(op: &'static str, p: &Path) -> Result<CString, RrdError> {
    let s = p.to_str().ok_or_else(|| RrdError::InvalidArgument {
        op,
        what: format!("{} is not UTF-8", p.display()),
    })?;
    cstring(op, s)
}

const UNKNOWN: &str = "unknown librrd error";

/// Reads and clears librrd's per-thread error.
fn take_error() -> String {
    // SAFETY: rrd_get_error returns a pointer into the calling thread's librrd
    // context (a NUL-terminated buffer, never NULL); we copy it before
    // clearing, and nothing else on this thread touches it meanwhile.
    unsafe {
        let p = rrd_sys::rrd_get_error();
        let msg = if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        };
        rrd_sys::rrd_clear_error();
        if msg.is_empty() { UNKNOWN.into() } else { msg }
    }
}

fn err(op: &'static str, path: &Path) -> RrdError {
    RrdError::Librrd {
        op,
        path: path.display().to_string(),
        message: take_error(),
    }
}

/// Creates `path` with `step`, last update `start`, and the given `DS:…` and
/// `RRA:…` definitions (`rrd_create_r`). Fails if librrd does.
pub fn create(path: &Path, step: u64, start: i64, defs: &[String]) -> Result<(), RrdError> {
    let file = path_cstring("create", path)?;
    let args: Vec<CString> = defs
        .iter()
        .map(|d| cstring("create", d))
        .collect::<Result<_, _>>()?;
    let mut argv: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
    // SAFETY: every pointer is a live NUL-terminated CString for the whole
    // call; argc matches argv's length; rrd_create_r is thread-safe.
    let rc = unsafe {
        rrd_sys::rrd_clear_error();
        rrd_sys::rrd_create_r(
            file.as_ptr(),
            step as c_ulong,
            start as _,
            argv.len() as i32,
            argv.as_mut_ptr(),
        )
    };
    // librrd 1.7 writes a new file under a temporary name and renames it;
    // when that write fails (a full disk) it removes the temporary file and
    // returns with no message, or even reports success. Say what happened
    // rather than fail later with "No such file".
    let created = path.exists();
    if rc == 0 && created {
        return Ok(());
    }
    let message = take_error();
    Err(RrdError::Librrd {
        op: "create",
        path: path.display().to_string(),
        message: if rc != 0 && message != UNKNOWN {
            message
        } else {
            "librrd could not write the new file and gave no reason".into()
        },
    })
}

/// Applies many `T:v[:v…]` updates to one file in one call (`rrd_updatex_r`).
pub fn update(path: &Path, updates: &[String]) -> Result<(), RrdError> {
    if updates.is_empty() {
        return Ok(());
    }
    let file = path_cstring("update", path)?;
    let args: Vec<CString> = updates
        .iter()
        .map(|d| cstring("update", d))
        .collect::<Result<_, _>>()?;
    let mut argv: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
    // SAFETY: as in `create`; a NULL template means "all DS in order".
    let rc = unsafe {
        rrd_sys::rrd_clear_error();
        rrd_sys::rrd_updatex_r(
            file.as_ptr(),
            std::ptr::null(),
            0,
            argv.len() as i32,
            argv.as_mut_ptr(),
        )
    };
    if rc != 0 {
        Err(err("update", path))
    } else {
        Ok(())
    }
}

/// As [`update`], with the updates packed in one buffer, each `T:v[:v]`
/// followed by a NUL — a writer that batches thousands of files keeps one
/// buffer per file instead of one string per sample.
pub fn update_packed(path: &Path, packed: &[u8]) -> Result<(), RrdError> {
    if packed.is_empty() {
        return Ok(());
    }
    if packed.last() != Some(&0) {
        return Err(RrdError::InvalidArgument {
            op: "update",
            what: "packed updates must end with NUL".into(),
        });
    }
    let file = path_cstring("update", path)?;
    let mut argv: Vec<*const c_char> = Vec::with_capacity(packed.len() / 8);
    let mut start = 0;
    for (i, &b) in packed.iter().enumerate() {
        if b == 0 {
            argv.push(packed[start..].as_ptr().cast());
            start = i + 1;
        }
    }
    // SAFETY: every pointer starts a NUL-terminated string inside `packed`,
    // which outlives the call; librrd only reads them; argc matches argv.
    let rc = unsafe {
        rrd_sys::rrd_clear_error();
        rrd_sys::rrd_updatex_r(
            file.as_ptr(),
            std::ptr::null(),
            0,
            argv.len() as i32,
            argv.as_mut_ptr(),
        )
    };
    if rc != 0 {
        Err(err("update", path))
    } else {
        Ok(())
    }
}

/// Time of the last update (`rrd_last_r`).
pub fn last(path: &Path) -> Result<i64, RrdError> {
    let file = path_cstring("last", path)?;
    // SAFETY: the path is a live CString; rrd_last_r is thread-safe.
    let t = unsafe {
        rrd_sys::rrd_clear_error();
        rrd_sys::rrd_last_r(file.as_ptr())
    };
    if t == -1 {
        Err(err("last", path))
    } else {
        Ok(t as i64)
    }
}

/// Time of the first row of archive `rra` (`rrd_first_r`, `rrdtool first --rraindex`).
pub fn first(path: &Path, rra: u32) -> Result<i64, RrdError> {
    let file = path_cstring("first", path)?;
    let index = c_int::try_from(rra).map_err(|_| RrdError::InvalidArgument {
        op: "first",
        what: format!("archive index {rra} is out of range"),
    })?;
    // SAFETY: the path is a live CString; rrd_first_r is thread-safe and
    // checks the index against the file's archive count.
    let t = unsafe {
        rrd_sys::rrd_clear_error();
        rrd_sys::rrd_first_r(file.as_ptr(), index)
    };
    if t == -1 {
        Err(err("first", path))
    } else {
        Ok(t as i64)
    }
}

/// One `rrdtool info` value.
#[derive(Debug, Clone, PartialEq)]
pub enum InfoValue {
    /// A floating-point value (NaN when unknown).
    Val(f64),
    /// A count.
    Count(u64),
    /// Text.
    Str(String),
    /// An integer.
    Int(i64),
    /// A blob (length only).
    Blob(usize),
}

/// `rrdtool info` as key/value pairs, in librrd's order (`rrd_info_r`).
pub fn info(path: &Path) -> Result<Vec<(String, InfoValue)>, RrdError> {
    let file = path_cstring("info", path)?;
    // SAFETY: the path is a live CString; rrd_info_r is thread-safe and
    // returns a list we own and free with rrd_info_free below.
    let head = unsafe {
        rrd_sys::rrd_clear_error();
        rrd_sys::rrd_info_r(file.as_ptr())
    };
    if head.is_null() {
        return Err(err("info", path));
    }
    let mut out = Vec::new();
    let mut p = head;
    while !p.is_null() {
        // SAFETY: p walks the list librrd built; each node is valid until
        // rrd_info_free, its key is a NUL-terminated string, and the union
        // member read matches the node's type tag.
        unsafe {
            let node = &*p;
            let key = CStr::from_ptr(node.key).to_string_lossy().into_owned();
            let v = match node.type_ {
                rrd_sys::rrd_info_type_RD_I_VAL => InfoValue::Val(node.value.u_val),
                rrd_sys::rrd_info_type_RD_I_CNT => InfoValue::Count(node.value.u_cnt as u64),
                rrd_sys::rrd_info_type_RD_I_STR => InfoValue::Str(if node.value.u_str.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(node.value.u_str)
                        .to_string_lossy()
                        .into_owned()
                }),
                rrd_sys::rrd_info_type_RD_I_INT => InfoValue::Int(i64::from(node.value.u_int)),
                _ => InfoValue::Blob(node.value.u_blo.size as usize),
            };
            out.push((key, v));
            p = node.next;
        }
    }
    // SAFETY: head came from rrd_info_r and is freed exactly once.
    unsafe { rrd_sys::rrd_info_free(head) };
    Ok(out)
}

/// What `rrd_fetch_r` returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    /// Start as adjusted by librrd (rows cover (start, end]).
    pub start: i64,
    /// End as adjusted by librrd.
    pub end: i64,
    /// Step of the chosen RRA.
    pub step: u64,
    /// Data-source names.
    pub ds_names: Vec<String>,
    /// Row-major values: row i (timestamp start + (i+1)·step) has
    /// `ds_names.len()` values.
    pub data: Vec<f64>,
}

impl Fetched {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        if self.ds_names.is_empty() {
            0
        } else {
            self.data.len() / self.ds_names.len()
        }
    }

    /// Timestamp of row `i`, as `rrdtool fetch` prints it.
    pub fn time(&self, i: usize) -> i64 {
        self.start + (i as i64 + 1) * self.step as i64
    }
}

/// `rrdtool fetch FILE CF -s start -e end [-r resolution]` via `rrd_fetch_r`.
pub fn fetch(
    path: &Path,
    cf: &str,
    start: i64,
    end: i64,
    resolution: u64,
) -> Result<Fetched, RrdError> {
    let file = path_cstring("fetch", path)?;
    let cfc = cstring("fetch", cf)?;
    let (mut s, mut e, mut step): (rrd_sys::time_t, rrd_sys::time_t, c_ulong) =
        (start as _, end as _, resolution.max(1) as c_ulong);
    let mut ds_cnt: c_ulong = 0;
    let mut names: *mut *mut c_char = std::ptr::null_mut();
    let mut data: *mut f64 = std::ptr::null_mut();
    // SAFETY: all out-pointers point at live locals; rrd_fetch_r is
    // thread-safe; on success it allocates `names` (ds_cnt strings) and `data`
    // ((end-start)/step rows × ds_cnt values), which we copy and then free with
    // rrd_freemem exactly once.
    unsafe {
        rrd_sys::rrd_clear_error();
        let rc = rrd_sys::rrd_fetch_r(
            file.as_ptr(),
            cfc.as_ptr(),
            &mut s,
            &mut e,
            &mut step,
            &mut ds_cnt,
            &mut names,
            &mut data,
        );
        if rc != 0 {
            return Err(err("fetch", path));
        }
        let n = ds_cnt as usize;
        let mut ds_names = Vec::with_capacity(n);
        for i in 0..n {
            let p = *names.add(i);
            ds_names.push(CStr::from_ptr(p).to_string_lossy().into_owned());
            rrd_sys::rrd_freemem(p.cast());
        }
        rrd_sys::rrd_freemem(names.cast());
        let rows = if step == 0 {
            0
        } else {
            ((e - s) as u64 / step as u64) as usize
        };
        let vals = std::slice::from_raw_parts(data, rows * n).to_vec();
        rrd_sys::rrd_freemem(data.cast());
        Ok(Fetched {
            start: s as i64,
            end: e as i64,
            step: step as u64,
            ds_names,
            data: vals,
        })
    }
}

static PARSETIME: Mutex<()> = Mutex::new(());

/// Resolves an rrdtool start/end pair (`now-1d`, `-2h`, `end-1w`, epoch
/// seconds, `noon yesterday`…) exactly as `rrdtool fetch -s/-e` does, using
/// librrd's own parser.
pub fn parse_time_range(start: &str, end: &str) -> Result<(i64, i64), RrdError> {
    let sc = cstring("parsetime", start)?;
    let ec = cstring("parsetime", end)?;
    // rrd_parsetime keeps its scanner state in statics: one caller at a time.
    let _guard = PARSETIME.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: the time-value structs are plain C data zero-initialised here and
    // filled by librrd; the spec strings live across the calls; the returned
    // error pointer (if any) is a static string we only read.
    unsafe {
        let mut st: rrd_sys::rrd_time_value = std::mem::zeroed();
        let mut et: rrd_sys::rrd_time_value = std::mem::zeroed();
        let e1 = rrd_sys::rrd_parsetime(sc.as_ptr(), &mut st);
        if !e1.is_null() {
            return Err(RrdError::Time {
                spec: start.into(),
                message: CStr::from_ptr(e1).to_string_lossy().into_owned(),
            });
        }
        let e2 = rrd_sys::rrd_parsetime(ec.as_ptr(), &mut et);
        if !e2.is_null() {
            return Err(RrdError::Time {
                spec: end.into(),
                message: CStr::from_ptr(e2).to_string_lossy().into_owned(),
            });
        }
        let (mut s, mut e): (rrd_sys::time_t, rrd_sys::time_t) = (0, 0);
        rrd_sys::rrd_clear_error();
        if rrd_sys::rrd_proc_start_end(&mut st, &mut et, &mut s, &mut e) == -1 {
            return Err(RrdError::Time {
                spec: format!("{start} .. {end}"),
                message: take_error(),
            });
        }
        // The check `rrdtool fetch` adds after resolving the pair.
        if e < s {
            return Err(RrdError::Time {
                spec: format!("{start} .. {end}"),
                message: format!("start ({s}) should be less than end ({e})"),
            });
        }
        Ok((s as i64, e as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_update_fetch_info_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.rrd");
        // 1005 is a multiple of the step, so updates land on PDP boundaries.
        create(
            &p,
            15,
            1005,
            &[
                "DS:sum:GAUGE:120:U:U".into(),
                "RRA:AVERAGE:0.5:1:100".into(),
            ],
        )
        .unwrap();
        let ups: Vec<String> = (1..=10)
            .map(|i| format!("{}:{}", 1005 + i * 15, i))
            .collect();
        update(&p, &ups).unwrap();
        assert_eq!(last(&p).unwrap(), 1155);
        // 100 rows of 15 s ending at the last update.
        assert_eq!(first(&p, 0).unwrap(), 1155 - 99 * 15);
        assert!(first(&p, 1).is_err(), "there is one archive");
        let f = fetch(&p, "AVERAGE", 1005, 1155, 15).unwrap();
        assert_eq!((f.step, f.ds_names.clone()), (15, vec!["sum".to_string()]));
        let at = |t: i64| (0..f.rows()).find(|&i| f.time(i) == t).map(|i| f.data[i]);
        assert_eq!(at(1155), Some(10.0));
        assert_eq!(at(1035), Some(2.0));
        let i = info(&p).unwrap();
        assert!(i.contains(&("step".into(), InfoValue::Count(15))));
        assert!(i.contains(&("ds[sum].type".into(), InfoValue::Str("GAUGE".into()))));
        // Errors carry librrd's message and the path, on this thread.
        let e = update(&p, &["1005:5".into()]).unwrap_err();
        assert!(
            e.to_string().contains("t.rrd") && e.to_string().contains("minimum one second step"),
            "{e}"
        );
        let e = fetch(&dir.path().join("missing.rrd"), "AVERAGE", 0, 10, 1).unwrap_err();
        assert!(e.to_string().contains("missing.rrd"), "{e}");
        assert!(matches!(
            update(Path::new("a\0b"), &["1:1".into()]),
            Err(RrdError::InvalidArgument { .. })
        ));
    }

    #[test]
    fn causes_from_librrd_messages() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.rrd");
        let defs = [
            "DS:sum:GAUGE:120:U:U".to_string(),
            "RRA:AVERAGE:0.5:1:100".to_string(),
        ];
        create(&good, 15, 1005, &defs).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let cause_of = |name: &str, content: &[u8], update: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, content).unwrap();
            update_cause(&p, update)
        };
        fn update_cause(p: &Path, u: &str) -> (Cause, String) {
            let e = update(p, &[u.to_string()]).unwrap_err();
            (e.cause(), e.to_string())
        }
        // Files librrd cannot use, each with its own message.
        for (name, content) in [
            ("text.rrd", b"this is not an RRD file, just text".repeat(20)),
            ("short.rrd", bytes[..bytes.len() / 2].to_vec()),
            ("header.rrd", bytes[..10].to_vec()),
            ("empty.rrd", Vec::new()),
        ] {
            let (c, msg) = cause_of(name, &content, "1020:1");
            assert_eq!(c, Cause::BadFile, "{name}: {msg}");
        }
        // An RRD with other data sources than the update carries.
        let (c, msg) = update_cause(&good, "1020:1:2");
        assert_eq!(c, Cause::BadFile, "{msg}");
        // Problems of the sample, not of the file.
        let (c, msg) = update_cause(&good, "1020:abc");
        assert_eq!(c, Cause::Other, "{msg}");
        let (c, msg) = update_cause(&good, "1000:1");
        assert_eq!(c, Cause::Other, "{msg}");
        // System errors as librrd words them (strerror in the C locale).
        for (msg, want) in [
            ("opening 'a.rrd': No space left on device", Cause::NoSpace),
            ("opening 'a.rrd': Disk quota exceeded", Cause::NoSpace),
            ("opening 'a.rrd': Read-only file system", Cause::ReadOnly),
            ("opening 'a.rrd': Permission denied", Cause::ReadOnly),
            ("opening 'a.rrd': Operation not permitted", Cause::ReadOnly),
            ("Cannot create temporary file", Cause::Transient),
            ("opening 'a.rrd': Too many open files", Cause::Transient),
            (
                "opening 'a.rrd': Too many open files in system",
                Cause::Transient,
            ),
            (
                "mmaping file 'a.rrd': Cannot allocate memory",
                Cause::Transient,
            ),
        ] {
            assert_eq!(Cause::of_message(msg), want, "{msg}");
        }
    }

    /// A sender chooses metric names, so the file name in librrd's message
    /// must not decide the cause: only librrd's words and `strerror` do.
    #[test]
    fn the_file_name_never_decides_the_cause() {
        for name in [
            "No space left on device",
            "Permission denied",
            "Read-only file system",
            "Too many open files",
            "x' is not an RRD file",
            "a': No space left on device",
        ] {
            let path = format!("/r/c/h/{name}.rrd");
            for (template, want) in [
                ("opening '{}': No such file or directory", Cause::Other),
                ("'{}' is not an RRD file", Cause::BadFile),
                ("opening '{}': Too many open files", Cause::Transient),
                ("opening '{}': Read-only file system", Cause::ReadOnly),
                (
                    "illegal attempt to update using time 10 when last update time is 20",
                    Cause::Other,
                ),
            ] {
                let msg = template.replace("{}", &path);
                assert_eq!(Cause::of_message(&msg), want, "{msg}");
                assert_eq!(Cause::of_error(&msg, Some(&path)), want, "{msg}");
                let e = RrdError::Librrd {
                    op: "update",
                    path: path.clone(),
                    message: msg.clone(),
                };
                assert_eq!(e.cause(), want, "{msg}");
            }
            // rrdcached names the file without quotes.
            let msg = format!("No such file: {path}");
            assert_eq!(Cause::of_error(&msg, Some(&path)), Cause::Other, "{msg}");
        }
    }

    #[test]
    fn io_errors_that_pass_are_transient() {
        for (errno, want) in [
            (libc::EMFILE, Cause::Transient),
            (libc::ENFILE, Cause::Transient),
            (libc::ENOMEM, Cause::Transient),
            (libc::ENOSPC, Cause::NoSpace),
            (libc::EROFS, Cause::ReadOnly),
            (libc::ENOENT, Cause::Other),
        ] {
            let e = std::io::Error::from_raw_os_error(errno);
            assert_eq!(Cause::of_io(&e), want, "{e}");
        }
        assert!(Cause::Transient.retryable() && !Cause::Other.retryable());
        assert!(!Cause::BadFile.retryable());
    }

    #[test]
    fn at_style_times() {
        let (s, e) = parse_time_range("end-1h", "1700000000").unwrap();
        assert_eq!((s, e), (1700000000 - 3600, 1700000000));
        let (s, e) = parse_time_range("-2h", "now").unwrap();
        assert_eq!(e - s, 7200);
        assert!(parse_time_range("yesterday-nonsense", "now").is_err());
        assert!(
            parse_time_range("now", "now-1d").is_err(),
            "start after end"
        );
    }
}

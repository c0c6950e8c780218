//! Disk totals over local filesystems, as gmond computes them from /proc/mounts:
//! skip read-only mounts, remote devices (`:` in the device, `//…`, nfs*, autofs,
//! gfs, none), devices not under /dev/, and repeats of a device. total +=
//! blocks × bsize, free += bavail × bsize (f_bsize), in GB = 1e9 bytes;
//! part_max_used = max over partitions of (blocks − bavail) / blocks × 100.
//!
//! /proc/mounts is parsed by hand from a kept-open file: the procfs crate
//! builds strings and an option map for every mount on each read, where the
//! rules above need four borrowed fields.

use super::procfile::{ProcFile, lines};
use super::{CollectError, src_err};
use std::borrow::Cow;
use std::time::{Duration, Instant};

const PATH: &str = "/proc/mounts";

/// Summed disk facts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// disk_total (GB).
    pub total_gb: f64,
    /// disk_free (GB).
    pub free_gb: f64,
    /// part_max_used (%).
    pub max_used_pct: f64,
}

fn skip(device: &str, fstype: &str, ro: bool) -> bool {
    ro || device.contains(':')
        || device.starts_with("//")
        || fstype.starts_with("nfs")
        || ["autofs", "gfs", "none", "smbfs", "cifs"].contains(&fstype)
        || !(device.starts_with("/dev/") || device.starts_with("/dev2/"))
}

/// The kernel writes tab, newline, backslash and `#` in mount fields as octal
/// escapes; these four are decoded, as the procfs crate did. A space stays
/// `\040` (procfs left it too), so statvfs fails on such a mount point and it
/// is skipped — gmond, which decodes nothing, skips it as well.
fn unmangle(field: &str) -> Cow<'_, str> {
    if !field.contains('\\') {
        return Cow::Borrowed(field);
    }
    let mut s = field.to_string();
    for (octal, c) in [
        (r"\011", "\t"),
        (r"\012", "\n"),
        (r"\134", "\\"),
        (r"\043", "#"),
    ] {
        s = s.replace(octal, c);
    }
    Cow::Owned(s)
}

/// One mount: device, mount point, type, and whether it is read-only.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Mount<'a> {
    pub(crate) device: Cow<'a, str>,
    pub(crate) dir: Cow<'a, str>,
    pub(crate) fstype: Cow<'a, str>,
    pub(crate) ro: bool,
}

/// `device dir type options freq passno`, separated by single spaces; the
/// first four are needed.
pub(crate) fn parse_mount(line: &[u8]) -> Option<Mount<'_>> {
    let line = std::str::from_utf8(line).ok()?;
    let mut f = line.split(' ');
    let (device, dir, fstype, options) = (f.next()?, f.next()?, f.next()?, f.next()?);
    Some(Mount {
        device: unmangle(device),
        dir: unmangle(dir),
        fstype: unmangle(fstype),
        ro: unmangle(options).split(',').any(|o| o == "ro"),
    })
}

/// Disk collector state: one pass serves disk_total, disk_free and
/// part_max_used, which are collected together.
#[derive(Debug)]
pub struct Disk {
    file: ProcFile,
    cached: Option<(Instant, Totals)>,
}

impl Default for Disk {
    fn default() -> Self {
        Disk {
            file: ProcFile::new(PATH),
            cached: None,
        }
    }
}

impl Disk {
    /// The totals, computed at most once a second.
    pub fn totals(&mut self) -> Result<Totals, CollectError> {
        if let Some((t, v)) = self.cached
            && t.elapsed() < Duration::from_secs(1)
        {
            return Ok(v);
        }
        let v = self.compute()?;
        self.cached = Some((Instant::now(), v));
        Ok(v)
    }

    fn compute(&mut self) -> Result<Totals, CollectError> {
        let text = self.file.read()?;
        let mounts = || lines(text).filter(|l| !l.is_empty()).map(parse_mount);
        // A malformed line fails the read, as the procfs crate's parse did.
        if mounts().any(|m| m.is_none()) {
            return Err(src_err(PATH, "unparsable mount line"));
        }
        let mut seen: Vec<Cow<'_, str>> = Vec::new();
        let mut t = Totals::default();
        for m in mounts().flatten() {
            if skip(&m.device, &m.fstype, m.ro) || seen.contains(&m.device) {
                continue;
            }
            // A mount that vanished or is unreadable is skipped, not fatal.
            let st = nix::sys::statvfs::statvfs(&*m.dir);
            seen.push(m.device);
            let Ok(st) = st else {
                continue;
            };
            let (blocks, bavail, bsize) = (
                st.blocks() as f64,
                st.blocks_available() as f64,
                st.block_size() as f64,
            );
            if blocks <= 0.0 {
                continue;
            }
            t.total_gb += blocks * bsize / 1e9;
            t.free_gb += bavail * bsize / 1e9;
            t.max_used_pct = t.max_used_pct.max((blocks - bavail) / blocks * 100.0);
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_rules() {
        assert!(!skip("/dev/vda1", "ext4", false));
        assert!(skip("/dev/vda1", "ext4", true));
        assert!(skip("server:/export", "nfs4", false));
        assert!(skip("//srv/share", "cifs", false));
        assert!(skip("tmpfs", "tmpfs", false));
        assert!(skip("none", "none", false));
    }

    // Captured from a VM (kernel 6.18), plus escaped and read-only mounts.
    const MOUNTS: &[u8] = br"proc /proc proc rw,relatime 0 0
/dev/vda1 / ext4 rw,relatime,discard 0 0
tmpfs /run tmpfs rw,nosuid,nodev,size=2468412k,mode=755 0 0
/dev/vdb /mnt/a\040b\134c xfs rw,noatime 0 0
/dev/vdc /srv ext4 ro,relatime 0 0
";

    #[test]
    fn parses_mount_lines() {
        let m: Vec<Mount<'_>> = lines(MOUNTS)
            .filter(|l| !l.is_empty())
            .map(|l| parse_mount(l).unwrap())
            .collect();
        assert_eq!(m.len(), 5);
        assert_eq!(
            m[1],
            Mount {
                device: "/dev/vda1".into(),
                dir: "/".into(),
                fstype: "ext4".into(),
                ro: false,
            }
        );
        assert_eq!(m[3].dir, r"/mnt/a\040b\c");
        assert!(m[4].ro);
        assert!(!m[2].ro, "size=… is not ro");
        assert_eq!(parse_mount(b"/dev/vda1 / ext4"), None);
    }

    #[test]
    fn totals_of_this_host() {
        let t = Disk::default().totals().unwrap();
        assert!(t.total_gb >= t.free_gb && t.free_gb >= 0.0);
        assert!((0.0..=100.0).contains(&t.max_used_pct));
    }
}

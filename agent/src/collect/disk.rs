//! Disk totals over local filesystems, as gmond computes them from /proc/mounts:
//! skip read-only mounts, remote devices (`:` in the device, `//…`, nfs*, autofs,
//! gfs, none), devices not under /dev/, and repeats of a device. total +=
//! blocks × bsize, free += bavail × bsize (f_bsize), in GB = 1e9 bytes;
//! part_max_used = max over partitions of (blocks − bavail) / blocks × 100.

use super::{CollectError, src_err};
use std::collections::HashSet;

/// Summed disk facts.
#[derive(Debug, Clone, Copy, Default)]
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

// disk_free and part_max_used are collected together: one pass serves both.
static CACHE: std::sync::Mutex<Option<(std::time::Instant, Totals)>> = std::sync::Mutex::new(None);

/// The totals, computed at most once a second.
pub fn totals() -> Result<Totals, CollectError> {
    let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((t, v)) = &*c
        && t.elapsed() < std::time::Duration::from_secs(1)
    {
        return Ok(*v);
    }
    let v = compute()?;
    *c = Some((std::time::Instant::now(), v));
    Ok(v)
}

fn compute() -> Result<Totals, CollectError> {
    let mounts = procfs::mounts().map_err(|e| src_err("/proc/mounts", e))?;
    let mut seen = HashSet::new();
    let mut t = Totals::default();
    for m in mounts {
        let ro = m.fs_mntops.contains_key("ro");
        if skip(&m.fs_spec, &m.fs_vfstype, ro) || !seen.insert(m.fs_spec.clone()) {
            continue;
        }
        // A mount that vanished or is unreadable is skipped, not fatal.
        let Ok(st) = nix::sys::statvfs::statvfs(m.fs_file.as_str()) else {
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

#[cfg(test)]
mod tests {
    use super::skip;

    #[test]
    fn filesystem_rules() {
        assert!(!skip("/dev/vda1", "ext4", false));
        assert!(skip("/dev/vda1", "ext4", true));
        assert!(skip("server:/export", "nfs4", false));
        assert!(skip("//srv/share", "cifs", false));
        assert!(skip("tmpfs", "tmpfs", false));
        assert!(skip("none", "none", false));
    }
}

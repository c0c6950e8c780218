//! Loading the key files of a cluster: each entry of `key_files` is a key
//! file or a directory whose `*.key` files are all read. Files readable by
//! group or others are refused, as ssh refuses such private keys.

use ganglion_proto::envelope::{KeyFile, Secret};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a cluster's keys could not be loaded (never quotes a secret).
#[derive(Debug, Error)]
pub enum KeyError {
    /// Unreadable file or directory.
    #[error("{path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Readable by group or others.
    #[error("{path}: mode {mode:04o} lets others read the key; chmod 600 it")]
    Permissions {
        /// File.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not a key file.
    #[error("{path}: {source}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Cause.
        source: ganglion_proto::envelope::KeyFileError,
    },
    /// Two files with one key id.
    #[error("key id {key_id} is in both {first} and {second}")]
    Duplicate {
        /// The id.
        key_id: u16,
        /// One file.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
    /// No key at all (an empty directory).
    #[error("no key found in {0}")]
    Empty(String),
}

/// The keys of one cluster, by id.
#[derive(Debug, Default)]
pub struct KeySet {
    /// Secrets by key id.
    pub keys: HashMap<u16, Secret>,
    /// Where each came from (for logs).
    pub files: HashMap<u16, PathBuf>,
}

/// Reads one key file, checking its mode.
pub fn read_key_file(path: &Path) -> Result<KeyFile, KeyError> {
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Read {
        path: path.into(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.into(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.into(),
        source,
    })?;
    KeyFile::parse(&text).map_err(|source| KeyError::Parse {
        path: path.into(),
        source,
    })
}

/// Loads every key of `entries` (files, or directories of `*.key`).
pub fn load(entries: &[PathBuf]) -> Result<KeySet, KeyError> {
    let mut set = KeySet::default();
    for e in entries {
        let files = if e.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(e)
                .map_err(|source| KeyError::Read {
                    path: e.clone(),
                    source,
                })?
                .flatten()
                .map(|d| d.path())
                .filter(|p| p.extension().is_some_and(|x| x == "key") && p.is_file())
                .collect();
            v.sort();
            v
        } else {
            vec![e.clone()]
        };
        for f in files {
            let k = read_key_file(&f)?;
            let id = k.secret.key_id;
            if let Some(first) = set.files.get(&id) {
                return Err(KeyError::Duplicate {
                    key_id: id,
                    first: first.clone(),
                    second: f,
                });
            }
            set.keys.insert(id, k.secret);
            set.files.insert(id, f);
        }
    }
    if set.keys.is_empty() {
        return Err(KeyError::Empty(
            entries
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ganglion_proto::envelope::Alg;

    fn write(dir: &Path, name: &str, id: u16, mode: u32) -> PathBuf {
        let p = dir.join(name);
        let k = KeyFile {
            secret: Secret {
                key_id: id,
                alg: Alg::ChaCha20Poly1305,
                bytes: [id as u8; 32],
            },
            encrypt: false,
            sender_id: None,
        };
        std::fs::write(&p, k.to_text()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn files_and_directories_load_and_bad_ones_are_named() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.key", 1, 0o600);
        let sub = d.path().join("keys");
        std::fs::create_dir(&sub).unwrap();
        write(&sub, "b.key", 2, 0o600);
        write(&sub, "c.key", 3, 0o400);
        std::fs::write(sub.join("README"), "not a key").unwrap();
        let set = load(&[a.clone(), sub.clone()]).unwrap();
        let mut ids: Vec<u16> = set.keys.keys().copied().collect();
        ids.sort();
        assert_eq!(ids, [1, 2, 3]);

        let open = write(d.path(), "open.key", 4, 0o644);
        let e = load(&[open]).unwrap_err().to_string();
        assert!(e.contains("open.key") && e.contains("chmod 600"), "{e}");
        let dup = write(d.path(), "dup.key", 1, 0o600);
        assert!(matches!(
            load(&[a, dup]),
            Err(KeyError::Duplicate { key_id: 1, .. })
        ));
        let empty = d.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(matches!(load(&[empty]), Err(KeyError::Empty(_))));
        let missing = load(&[d.path().join("nope.key")]).unwrap_err().to_string();
        assert!(missing.contains("nope.key"), "{missing}");
    }
}

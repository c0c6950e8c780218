//! Layering rules that are cheaper to check than to remember (rust-analyzer's
//! tidy test does the same): `config`, the module everyone reads, depends
//! only on the leaf modules `acl` and `addr`, which depend on nothing in the
//! crate; `unsafe` appears only in the `rrd` crate; `proto` does no IO.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn crate_refs(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut refs: Vec<String> = text
        .match_indices("crate::")
        .map(|(i, _)| {
            text[i + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            if !p.ends_with("target") && !p.ends_with("node_modules") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn config_depends_only_on_leaf_modules() {
    let src = root().join("aggregator/src");
    // `config/` is a directory: `mod.rs` plus one file per feature's keys.
    let mut files = Vec::new();
    rust_files(&src.join("config"), &mut files);
    assert!(!files.is_empty(), "aggregator/src/config/ has no files");
    for f in files {
        let refs = crate_refs(&f);
        assert!(
            refs.iter()
                .all(|r| r == "acl" || r == "addr" || r == "config"),
            "{} may use only crate::acl, crate::addr and crate::config, found {refs:?}",
            f.display()
        );
    }
    for leaf in ["acl.rs", "addr.rs"] {
        let refs = crate_refs(&src.join(leaf));
        assert!(refs.is_empty(), "{leaf} is a leaf module but uses {refs:?}");
    }
}

#[test]
fn unsafe_lives_only_in_the_rrd_crate() {
    let mut files = Vec::new();
    for krate in ["proto", "agent", "aggregator", "rrd-export", "tests"] {
        rust_files(&root().join(krate), &mut files);
    }
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .any(|l| !l.trim_start().starts_with("//") && l.contains(concat!("unsafe", " {")))
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "unsafe outside rrd/: {offenders:?}");
}

#[test]
fn proto_does_no_io() {
    let mut files = Vec::new();
    rust_files(&root().join("proto/src"), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for banned in ["std::fs", "std::net", "std::process", "tokio"] {
            assert!(
                !text.contains(banned),
                "{} uses {banned}: proto does no IO",
                f.display()
            );
        }
    }
}

//! gmetad's RRD tree, and the one function that maps names to paths.
//!
//! ```text
//! <root>/<cluster>/<host>/<metric>.rrd           host metric, DS "sum"
//! <root>/<cluster>/__SummaryInfo__/<metric>.rrd  cluster (or child grid) summary, DS "sum","num"
//! <root>/__SummaryInfo__/<metric>.rrd            this grid's summary
//! ```
//!
//! Names gmetad would write are kept byte for byte, so existing trees keep
//! working. gmetad does no sanitising at all; we change only what could leave
//! the root or break the tree: `/` and NUL become `_`, an empty name becomes
//! `_`, and the names `.` and `..` become `_` and `__`. A host named
//! `__SummaryInfo__` would shadow the summary directory, so it becomes
//! `_SummaryInfo__`. With `case_sensitive_hostnames = false` only the host part
//! is lowercased, as in gmetad.

use std::path::{Component, Path, PathBuf};

/// The summary directory name.
pub const SUMMARY_DIR: &str = "__SummaryInfo__";

/// What an RRD file holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Series {
    /// One host's metric.
    Host {
        /// Cluster (XML CLUSTER NAME).
        cluster: String,
        /// Host.
        host: String,
        /// Metric.
        metric: String,
    },
    /// A cluster's or child grid's summary.
    Summary {
        /// Cluster or grid name.
        source: String,
        /// Metric.
        metric: String,
    },
    /// This grid's own summary.
    Root {
        /// Metric.
        metric: String,
    },
}

/// Makes one name safe as a single path component (see the module docs).
pub fn component(name: &str) -> String {
    match name {
        "" => "_".into(),
        "." => "_".into(),
        ".." => "__".into(),
        n => n.replace(['/', '\0'], "_"),
    }
}

fn host_component(host: &str, case_sensitive: bool) -> String {
    let h = if case_sensitive {
        host.to_string()
    } else {
        host.to_lowercase()
    };
    let c = component(&h);
    if c == SUMMARY_DIR {
        "_SummaryInfo__".into()
    } else {
        c
    }
}

/// The file for `series` under `root`. Never leaves `root`.
pub fn path(root: &Path, series: &Series, case_sensitive_hostnames: bool) -> PathBuf {
    let file = |m: &str| format!("{}.rrd", component(m));
    match series {
        Series::Host {
            cluster,
            host,
            metric,
        } => root
            .join(component(cluster))
            .join(host_component(host, case_sensitive_hostnames))
            .join(file(metric)),
        Series::Summary { source, metric } => root
            .join(component(source))
            .join(SUMMARY_DIR)
            .join(file(metric)),
        Series::Root { metric } => root.join(SUMMARY_DIR).join(file(metric)),
    }
}

/// The reverse: which series a file under `root` holds (for readers such as
/// rrd-export). `None` for paths outside the layout.
pub fn parse(root: &Path, file: &Path) -> Option<Series> {
    let rel = file.strip_prefix(root).ok()?;
    let parts: Vec<&str> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let metric = |f: &str| f.strip_suffix(".rrd").map(str::to_string);
    match parts.as_slice() {
        [dir, f] if *dir == SUMMARY_DIR => Some(Series::Root { metric: metric(f)? }),
        [src, dir, f] if *dir == SUMMARY_DIR => Some(Series::Summary {
            source: src.to_string(),
            metric: metric(f)?,
        }),
        [cluster, host, f] => Some(Series::Host {
            cluster: cluster.to_string(),
            host: host.to_string(),
            metric: metric(f)?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmetad_paths_are_kept() {
        let root = Path::new("/r");
        let s = Series::Host {
            cluster: "My Cluster".into(),
            host: "Node1.Example".into(),
            metric: "load_one".into(),
        };
        assert_eq!(
            path(root, &s, false),
            Path::new("/r/My Cluster/node1.example/load_one.rrd")
        );
        assert_eq!(
            path(root, &s, true),
            Path::new("/r/My Cluster/Node1.Example/load_one.rrd")
        );
        let s = Series::Summary {
            source: "c".into(),
            metric: "cpu_idle".into(),
        };
        assert_eq!(
            path(root, &s, false),
            Path::new("/r/c/__SummaryInfo__/cpu_idle.rrd")
        );
        assert_eq!(
            path(root, &Series::Root { metric: "m".into() }, false),
            Path::new("/r/__SummaryInfo__/m.rrd")
        );
    }

    #[test]
    fn hostile_names_stay_inside_root() {
        let root = Path::new("/r");
        for (c, h, m) in [
            ("..", "..", ".."),
            ("a/../../b", "/etc", "passwd\0"),
            ("", "", ""),
            (".", "__SummaryInfo__", "x/y"),
        ] {
            let p = path(
                root,
                &Series::Host {
                    cluster: c.into(),
                    host: h.into(),
                    metric: m.into(),
                },
                true,
            );
            assert!(p.starts_with(root));
            let rel = p.strip_prefix(root).unwrap();
            assert_eq!(rel.components().count(), 3, "{}", p.display());
            assert!(
                rel.components().all(|c| matches!(c, Component::Normal(_))),
                "{}",
                p.display()
            );
            assert!(
                parse(root, &p).is_some_and(|s| matches!(s, Series::Host { .. })),
                "{}",
                p.display()
            );
        }
    }

    #[test]
    fn reverse_mapping() {
        let root = Path::new("/r");
        assert_eq!(
            parse(root, Path::new("/r/c/h/m.rrd")),
            Some(Series::Host {
                cluster: "c".into(),
                host: "h".into(),
                metric: "m".into()
            })
        );
        assert_eq!(
            parse(root, Path::new("/r/__SummaryInfo__/m.rrd")),
            Some(Series::Root { metric: "m".into() })
        );
        assert_eq!(parse(root, Path::new("/r/c/h/m.txt")), None);
        assert_eq!(parse(root, Path::new("/elsewhere/c/h/m.rrd")), None);
    }
}

//! RRD storage when the disk or the tree misbehaves, against the real
//! aggregator binary: a full disk, a read-only directory, foreign and
//! truncated files where RRDs belong, a metric that changes type, and
//! `write_rrds = false`. Each fault must cost only the files it touches, be
//! counted by reason on `/metrics`, and be logged once, not once per sample.
//!
//! The disk faults need `mount` (the test command runs as root); every
//! mount is undone by a guard, even when an assertion fails.
//!
//! **When mounting is not permitted** (not root, a container without
//! `CAP_SYS_ADMIN`): with `GANGLION_REQUIRE_PRIVILEGED=1` (set by the test
//! script when it runs as root) the test **fails**. Without it the test
//! cannot check what it names, so it writes a `SKIPPED (not run)` line to the
//! real stderr (not captured by the test harness, so it shows in every run)
//! and ends; Rust has no way to mark a test ignored at run time, and a
//! static `#[ignore]` would also skip the root run that can check it.
//!
//! Negative checks ("still no such file") wait for flush passes to happen
//! (`ganglion_rrd_flush_passes_total`), not for a fixed time.

use ganglion_proto::xdr::Value;
use ganglion_tests::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One-second steps and flushes, and small files, so each fault plays out in
/// seconds.
const FAST: &str =
    "step_secs = 1\nrras = [\"RRA:AVERAGE:0.5:1:600\"]\n[storage]\nflush_interval_secs = 1\n";
const HOST_KEYS: &str = "reverse_dns = false\n";
const WAIT: Duration = Duration::from_secs(20);

/// A capability the test needs is missing: fails under
/// `GANGLION_REQUIRE_PRIVILEGED=1`, else says so where it is seen (see the
/// module docs).
fn unavailable(test: &str, what: &str) {
    if std::env::var("GANGLION_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        panic!("{test}: {what}, and GANGLION_REQUIRE_PRIVILEGED=1 requires it");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED (not run): {test}: {what}; run as root (GANGLION_REQUIRE_PRIVILEGED=1) to check it"
    );
}

/// Waits until `n` more passes over every file have happened: "still
/// absent" then means "absent after n flushes", not "after a while".
fn wait_passes(agg: &Aggregator, n: u64) {
    let start = metrics_value(agg.http, "ganglion_rrd_flush_passes_total");
    wait_until(&format!("{n} flush passes"), WAIT, || {
        (metrics_value(agg.http, "ganglion_rrd_flush_passes_total") >= start + n).then_some(())
    });
}

/// A mount made by a test, undone when dropped (lazily if something still
/// holds it busy, so no mount outlives the test).
struct Mount {
    path: PathBuf,
}

impl Mount {
    fn mount(args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let out = Command::new("mount")
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// A tmpfs of `size` (e.g. `"2m"`) on `path`, or `None` when this
    /// sandbox may not mount (see [`unavailable`]).
    fn tmpfs(path: &Path, size: &str) -> Option<Mount> {
        let opts = format!("size={size}");
        match Mount::mount(&[
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "-o".as_ref(),
            opts.as_ref(),
            "tmpfs".as_ref(),
            path.as_os_str(),
        ]) {
            Ok(()) => Some(Mount {
                path: path.to_path_buf(),
            }),
            Err(e) => {
                unavailable(
                    "a_full_disk_stops_only_new_files_and_loses_no_sample",
                    &format!("cannot mount a tmpfs here ({e})"),
                );
                None
            }
        }
    }

    /// `path` bound onto itself read-only, or `None` (see [`unavailable`]).
    fn read_only(path: &Path) -> Option<Mount> {
        const TEST: &str = "a_read_only_directory_costs_only_its_files_until_it_is_writable";
        let p = path.as_os_str();
        if let Err(e) = Mount::mount(&["--bind".as_ref(), p, p]) {
            unavailable(TEST, &format!("cannot bind-mount here ({e})"));
            return None;
        }
        // From here the guard exists, so a failed remount is undone too.
        let m = Mount {
            path: path.to_path_buf(),
        };
        match Mount::mount(&["-o".as_ref(), "remount,bind,ro".as_ref(), p]) {
            Ok(()) => Some(m),
            Err(e) => {
                unavailable(TEST, &format!("cannot remount read-only here ({e})"));
                None
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Last update of an RRD (0 while it cannot be read).
fn last(file: &Path) -> i64 {
    ganglion_rrd::last(file).unwrap_or(0)
}

/// Waits until every file has a sample newer than `t`.
fn wait_fresh<P: AsRef<Path>>(files: &[P], t: i64, what: &str) {
    wait_until(what, WAIT, || {
        files.iter().all(|f| last(f.as_ref()) > t).then_some(())
    });
}

/// Known values of a single-DS file at 1 s resolution in `(from, to]`.
fn values(file: &Path, from: i64, to: i64) -> Vec<(i64, f64)> {
    let f = ganglion_rrd::fetch(file, "AVERAGE", from, to, 1).unwrap();
    (0..f.rows())
        .map(|i| (f.time(i), f.data[i * f.ds_names.len()]))
        .filter(|(t, _)| *t > from && *t <= to)
        .collect()
}

fn write_errors(agg: &Aggregator, reason: &str) -> u64 {
    metrics_value(
        agg.http,
        &format!("ganglion_rrd_write_errors_total{{reason=\"{reason}\"}}"),
    )
}

fn wait_errors(agg: &Aggregator, reason: &str, at_least: u64) {
    wait_until(
        &format!("{at_least} write errors with reason {reason}"),
        WAIT,
        || (write_errors(agg, reason) >= at_least).then_some(()),
    );
}

/// How many lines of the aggregator's log contain `needle`.
fn log_lines(agg: &Aggregator, needle: &str) -> usize {
    agg.log().lines().filter(|l| l.contains(needle)).count()
}

fn host_file(root: &Path, cluster: &str, host: usize, metric: &str) -> PathBuf {
    root.join(cluster)
        .join(format!("host{host:04}"))
        .join(format!("{metric}.rrd"))
}

#[test]
fn a_full_disk_stops_only_new_files_and_loses_no_sample() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("rrds");
    std::fs::create_dir(&root).unwrap();
    let Some(_mount) = Mount::tmpfs(&root, "2m") else {
        return;
    };
    // Declared after the mount: stopped (files closed) before it is undone.
    let agg = Aggregator::start_at(&root, "full", HOST_KEYS, FAST);
    send_synthetic_hosts(agg.udp, 3, &["m_a", "m_b"], |h, k| (h * 10 + k) as f32);
    let mut existing: Vec<PathBuf> = (0..3)
        .flat_map(|h| ["m_a", "m_b"].map(|m| host_file(&root, "full", h, m)))
        .collect();
    existing.push(root.join("full/__SummaryInfo__/m_a.rrd"));
    existing.push(root.join("__SummaryInfo__/m_b.rrd"));
    wait_until("the first files", WAIT, || {
        existing.iter().all(|f| f.exists()).then_some(())
    });

    // Fill the file system to the last byte.
    let mut filler = std::fs::File::create(root.join("filler")).unwrap();
    while filler.write_all(&[0u8; 4096]).is_ok() {}
    let _ = filler.sync_all();
    let full_at = now();

    // A metric never seen before needs new files (host, cluster and grid
    // summary), which no longer fit.
    send_synthetic_hosts(agg.udp, 1, &["m_new"], |_, _| 7.0);
    wait_errors(&agg, "no_space", 9);
    // Files that exist keep being updated (their blocks are allocated).
    wait_fresh(
        &existing,
        full_at + 1,
        "fresh samples in the existing files",
    );
    let new_file = host_file(&root, "full", 0, "m_new");
    assert!(!new_file.exists());
    assert_eq!(
        log_lines(&agg, "no space left on the device"),
        1,
        "one line for the outage, not one per file or flush:\n{}",
        agg.log()
    );
    // The journal shares the disk: counted and logged once too.
    assert!(metrics_value(agg.http, "ganglion_rrd_journal_errors_total") >= 1);
    assert_eq!(
        log_lines(&agg, "cannot write the RRD journal"),
        1,
        "{}",
        agg.log()
    );

    // Space again: the new files appear and hold what was sampled meanwhile.
    drop(filler);
    std::fs::remove_file(root.join("filler")).unwrap();
    let freed_at = now();
    wait_until("the new files", WAIT, || {
        (last(&new_file) > freed_at).then_some(())
    });
    let during: Vec<f64> = values(&new_file, full_at, freed_at - 1)
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| !v.is_nan())
        .collect();
    assert!(
        !during.is_empty() && during.iter().all(|&v| v == 7.0),
        "samples taken while the disk was full reached the file: {during:?}"
    );
    assert!(root.join("full/__SummaryInfo__/m_new.rrd").exists());
    assert!(root.join("__SummaryInfo__/m_new.rrd").exists());
    assert_eq!(
        metrics_value(agg.http, "ganglion_rrd_samples_discarded_total"),
        0
    );
    for reason in ["read_only", "bad_file", "other"] {
        assert_eq!(write_errors(&agg, reason), 0, "{reason}");
    }
}

#[test]
fn a_read_only_directory_costs_only_its_files_until_it_is_writable() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("rrds");
    let agg = Aggregator::start_at(&root, "ro", HOST_KEYS, FAST);
    send_synthetic_hosts(agg.udp, 3, &["m_a"], |h, _| h as f32 + 0.5);
    let files: Vec<PathBuf> = (0..3).map(|h| host_file(&root, "ro", h, "m_a")).collect();
    wait_until("the files", WAIT, || {
        files.iter().all(|f| f.exists()).then_some(())
    });

    let Some(mount) = Mount::read_only(&root.join("ro/host0001")) else {
        return;
    };
    let ro_at = now();
    wait_errors(&agg, "read_only", 3);
    let others = [
        files[0].clone(),
        files[2].clone(),
        root.join("ro/__SummaryInfo__/m_a.rrd"),
        root.join("__SummaryInfo__/m_a.rrd"),
    ];
    wait_fresh(
        &others,
        ro_at + 1,
        "fresh samples outside the read-only directory",
    );
    assert_eq!(
        log_lines(&agg, "read-only file system or no permission"),
        1,
        "{}",
        agg.log()
    );

    // Writable again: what was sampled meanwhile is written, without a gap.
    drop(mount);
    let rw_at = now();
    wait_fresh(&files[1..2], rw_at, "the directory written again");
    let during = values(&files[1], ro_at + 1, rw_at - 1);
    assert!(
        !during.is_empty() && during.iter().all(|&(_, v)| v == 1.5),
        "every second of the outage is in the file: {during:?}"
    );
    assert_eq!(
        metrics_value(agg.http, "ganglion_rrd_samples_discarded_total"),
        0
    );
}

#[test]
fn foreign_and_truncated_files_are_left_alone_and_cost_only_themselves() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("rrds");
    // A text file where a metric's RRD belongs, before the aggregator starts.
    let foreign = host_file(&root, "bad", 0, "m_a");
    std::fs::create_dir_all(foreign.parent().unwrap()).unwrap();
    let text = b"this is not an RRD file\n".repeat(10);
    std::fs::write(&foreign, &text).unwrap();

    let agg = Aggregator::start_at(&root, "bad", HOST_KEYS, FAST);
    send_synthetic_hosts(agg.udp, 3, &["m_a", "m_b"], |h, k| (h * 10 + k) as f32);
    let healthy: Vec<PathBuf> = [
        host_file(&root, "bad", 0, "m_b"),
        host_file(&root, "bad", 1, "m_b"),
        host_file(&root, "bad", 2, "m_a"),
        host_file(&root, "bad", 2, "m_b"),
        root.join("bad/__SummaryInfo__/m_a.rrd"),
    ]
    .to_vec();
    let victim = host_file(&root, "bad", 1, "m_a");
    wait_until("the healthy files", WAIT, || {
        healthy
            .iter()
            .chain([&victim])
            .all(|f| f.exists())
            .then_some(())
    });

    // A real file cut short while the aggregator runs (a bad copy, another
    // tool's crash), swapped in atomically.
    let bytes = std::fs::read(&victim).unwrap();
    let cut = bytes[..bytes.len() / 2].to_vec();
    let tmp = victim.with_extension("tmp");
    std::fs::write(&tmp, &cut).unwrap();
    std::fs::rename(&tmp, &victim).unwrap();
    let cut_at = now();

    wait_errors(&agg, "bad_file", 6);
    wait_fresh(&healthy, cut_at + 1, "fresh samples in every healthy file");
    assert_eq!(
        std::fs::read(&foreign).unwrap(),
        text,
        "foreign file untouched"
    );
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        cut,
        "truncated file untouched"
    );
    assert_eq!(
        log_lines(&agg, "not an RRD file this aggregator can update"),
        2,
        "one line per bad file:\n{}",
        agg.log()
    );
    assert!(metrics_value(agg.http, "ganglion_rrd_samples_discarded_total") > 0);
    for reason in ["no_space", "read_only", "other"] {
        assert_eq!(write_errors(&agg, reason), 0, "{reason}");
    }

    // Once someone removes the foreign file, the metric gets its RRD.
    std::fs::remove_file(&foreign).unwrap();
    let removed_at = now();
    wait_until("a new RRD where the foreign file was", WAIT, || {
        (last(&foreign) > removed_at).then_some(())
    });
}

#[test]
fn a_metric_that_changes_type_keeps_its_file() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("rrds");
    let agg = Aggregator::start_at(&root, "types", HOST_KEYS, FAST);
    let host = "10.0.0.1:typed";
    send_metric(agg.udp, host, "steady", "float", 3, Value::Float(2.5));
    send_metric(agg.udp, host, "reqs", "float", 3, Value::Float(1.0));
    let steady = root.join("types/typed/steady.rrd");
    let reqs = root.join("types/typed/reqs.rrd");
    wait_until("the files", WAIT, || {
        (steady.exists() && reqs.exists()).then_some(())
    });
    let ds_type = |f: &Path| {
        ganglion_rrd::info(f)
            .unwrap()
            .into_iter()
            .find(|(k, _)| k == "ds[sum].type")
            .map(|(_, v)| v)
    };
    let gauge = Some(ganglion_rrd::InfoValue::Str("GAUGE".into()));
    assert_eq!(ds_type(&reqs), gauge);

    // The sender now calls it a positive-slope counter: gmetad would create
    // a COUNTER file, but this one exists, so it keeps its type and the
    // values keep coming into it.
    send_metric(agg.udp, host, "reqs", "uint32", 1, Value::UInt(100));
    let changed_at = now();
    wait_until("the type change counted", WAIT, || {
        (metrics_value(agg.http, "ganglion_rrd_type_changes_total") >= 1).then_some(())
    });
    wait_fresh(&[&reqs], changed_at + 2, "samples after the change");
    assert_eq!(ds_type(&reqs), gauge, "the file keeps its type");
    let after = values(&reqs, changed_at + 2, last(&reqs));
    assert!(
        !after.is_empty() && after.iter().all(|&(_, v)| v == 100.0),
        "{after:?}"
    );
    assert_eq!(
        log_lines(&agg, "changed its RRD data-source type"),
        1,
        "{}",
        agg.log()
    );

    // Then it becomes a string: no more samples for it (as in gmetad), the
    // file stays as it is, and everything else goes on.
    send_metric(agg.udp, host, "reqs", "string", 3, Value::Str("n/a".into()));
    wait_until("the string change counted", WAIT, || {
        (metrics_value(agg.http, "ganglion_metric_type_changes_total") >= 1).then_some(())
    });
    let applied_at = now();
    wait_fresh(&[&steady], applied_at + 2, "the other metric goes on");
    assert!(
        last(&reqs) <= applied_at,
        "no sample for a string metric: last {} vs change at {applied_at}",
        last(&reqs)
    );
    assert_eq!(ds_type(&reqs), gauge);
    assert_eq!(
        log_lines(&agg, "changed between numeric and string types"),
        1,
        "{}",
        agg.log()
    );
    for reason in ["no_space", "read_only", "bad_file", "other"] {
        assert_eq!(write_errors(&agg, reason), 0, "{reason}");
    }
}

#[test]
fn write_rrds_false_keeps_no_files_but_serves_everything() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("rrds");
    let agg = Aggregator::start_at(
        &root,
        "nofiles",
        HOST_KEYS,
        &format!("write_rrds = false\n{FAST}"),
    );
    send_synthetic_hosts(agg.udp, 2, &["m_a"], |h, _| h as f32);
    wait_until("the hosts in the gmetad dump", WAIT, || {
        let xml = String::from_utf8_lossy(&read_tcp(agg.dump, None)).into_owned();
        xml.contains("NAME=\"host0001\"").then_some(())
    });
    let gmond = String::from_utf8_lossy(&read_tcp(agg.gmond, None)).into_owned();
    assert!(gmond.contains("NAME=\"m_a\""), "{gmond}");
    let api = http_get(agg.http, "/api/cluster/nofiles");
    assert!(api.contains("host0001"), "{api}");
    let metrics = http_get(agg.http, "/metrics");
    assert!(
        metrics.contains("ganglion_values_received_total") && !metrics.contains("ganglion_rrd_"),
        "{metrics}"
    );
    let flush = String::from_utf8_lossy(&read_tcp(
        agg.http,
        Some(b"POST /api/flush HTTP/1.0\r\nContent-Length: 0\r\n\r\n"),
    ))
    .into_owned();
    assert!(
        flush.starts_with("HTTP/1.")
            && flush.contains(" 404 ")
            && flush.contains("write_rrds = false"),
        "{flush}"
    );
    // Several steps and flush intervals later there is still no tree at all.
    // (No writer runs, so there is no pass to wait for: this one negative
    // check waits for time itself.)
    std::thread::sleep(Duration::from_secs(3));
    assert!(!root.exists(), "no rrd_root, no journal, no files");
    assert!(agg.log().is_empty(), "{}", agg.log());
}

#[test]
fn gmetads_summary_options_decide_which_summary_files_exist() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("rrds");
    let agg = Aggregator::start_at(
        &root,
        "sums",
        HOST_KEYS,
        &format!(
            "unsummarized_metrics = [\"m_b\"]\nunsummarized_sflow_vm_metrics = true\n\
             summarized_metrics = [\"m_a\"]\n{FAST}"
        ),
    );
    let metrics = ["m_a", "m_b", "m_c", "m_d.vm1"];
    send_synthetic_hosts(agg.udp, 2, &metrics, |h, m| (h + m) as f32);
    let cluster = root.join("sums/__SummaryInfo__");
    let grid = root.join("__SummaryInfo__");
    wait_until("the summary files", WAIT, || {
        (cluster.join("m_a.rrd").exists() && grid.join("m_a.rrd").exists()).then_some(())
    });
    // Several steps and flushes later, the same set.
    wait_passes(&agg, 3);
    for m in metrics {
        assert!(
            host_file(&root, "sums", 0, m).exists(),
            "every host file: {m}"
        );
    }
    let has = |dir: &Path, m: &str| dir.join(format!("{m}.rrd")).exists();
    assert!(has(&cluster, "m_a") && has(&cluster, "m_c"));
    assert!(
        !has(&cluster, "m_b"),
        "unsummarized_metrics is a prefix list"
    );
    assert!(!has(&cluster, "m_d.vm1"), "an sFlow VM metric");
    assert!(has(&grid, "m_a"));
    for m in ["m_b", "m_c", "m_d.vm1"] {
        assert!(!has(&grid, m), "summarized_metrics limits the root: {m}");
    }
    // In the XML, as in gmetad: the grid's own summary holds only the
    // summarized_metrics; the cluster's sums are all there (the options
    // decide files, not sums).
    let xml =
        String::from_utf8_lossy(&read_tcp(agg.query, Some(b"/?filter=summary\n"))).into_owned();
    let (root_part, clusters) = xml
        .split_once("<CLUSTER")
        .expect("a cluster in the summary");
    assert!(root_part.contains("NAME=\"m_a\""), "{xml}");
    assert!(!root_part.contains("NAME=\"m_c\""), "{xml}");
    for m in metrics {
        assert!(clusters.contains(&format!("NAME=\"{m}\"")), "{m}: {xml}");
    }
    assert!(agg.log().is_empty(), "{}", agg.log());
}

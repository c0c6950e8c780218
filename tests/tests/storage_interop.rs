//! RRD storage against the real peers: the same real gmond polled by the real
//! gmetad and by our aggregator gives the same tree with the same file
//! parameters; kill -9 loses nothing that was journaled; rrdcached works as the
//! write backend, and a restart of rrdcached while samples flow loses none.
//! Faults (full disk, read-only or foreign files, type changes) are in
//! `storage_faults.rs`.
//!
//! No test sleeps for a fixed time to let something happen: each waits for
//! the event itself (a counter on `/metrics`, a record in the journal, a
//! file's last update).

use ganglion_tests::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn rrdtool_info(file: &Path) -> BTreeMap<String, String> {
    let out = Command::new(require_binary("rrdtool"))
        .arg("info")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rrdtool info {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once(" = ")
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The parameters gmetad decides: step, DS names/types/heartbeats, RRA shape.
fn shape(info: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    info.iter()
        .filter(|(k, _)| {
            k.as_str() == "step"
                || (k.starts_with("ds[")
                    && (k.ends_with(".type")
                        || k.ends_with(".minimal_heartbeat")
                        || k.ends_with(".min")
                        || k.ends_with(".max")))
                || (k.starts_with("rra[")
                    && (k.ends_with(".cf")
                        || k.ends_with(".rows")
                        || k.ends_with(".pdp_per_row")
                        || k.ends_with(".xff")))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Waits until the sampler has taken two batches after this call, so a
/// value that reached the aggregator before it is in at least one sample.
fn wait_sampled(agg: &Aggregator) {
    for _ in 0..2 {
        let before = metrics_value(agg.http, "ganglion_rrd_samples_total");
        wait_until("a sampler step", Duration::from_secs(20), || {
            (metrics_value(agg.http, "ganglion_rrd_samples_total") > before).then_some(())
        });
    }
}

fn rrd_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rrd") {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn same_gmond_same_tree_as_real_gmetad() {
    let dir = tempfile::tempdir().unwrap();
    let gport = free_port_pair();
    let gconf = gmond_conf(
        dir.path(),
        "compat",
        gport,
        Some(SocketAddr::from(([127, 0, 0, 1], gport))),
    );
    let _gmond = start_gmond(&gconf, gport);
    // A positive-slope metric so COUNTER files are compared too.
    let gm = gmetric_conf(dir.path(), SocketAddr::from(([127, 0, 0, 1], gport)));
    gmetric(
        &gm,
        &["-n", "reqs", "-v", "100", "-t", "uint32", "-s", "positive"],
    );
    // A constant gauge: its stored values must be equal in both trees.
    gmetric(
        &gm,
        &["-n", "const_g", "-v", "42.5", "-t", "float", "-x", "3600"],
    );

    let gmetad = start_gmetad(
        dir.path(),
        "gmetad",
        &format!(
            "data_source \"src\" 15 127.0.0.1:{gport}\ngridname \"G\"\ncase_sensitive_hostnames 0\n\
             unsummarized_metrics disk_"
        ),
    );
    let theirs = gmetad.rrds.clone();

    let agg = Aggregator::start(
        "unused",
        &format!(
            "unsummarized_metrics = [\"disk_\"]\n[storage]\nflush_interval_secs = 1\n[[data_source]]\nname = \"src\"\npoll_secs = 15\naddresses = [\"127.0.0.1:{gport}\"]\n"
        ),
    );
    let ours = agg.dir.path().join("rrds");
    let key_files = [
        "compat/__SummaryInfo__/load_one.rrd",
        "compat/__SummaryInfo__/reqs.rrd",
        "__SummaryInfo__/load_one.rrd",
    ];
    wait_until("both trees written", Duration::from_secs(60), || {
        let t = rrd_files(&theirs);
        let o = rrd_files(&ours);
        let ready = key_files
            .iter()
            .all(|k| t.contains(&PathBuf::from(k)) && o.contains(&PathBuf::from(k)))
            && t.iter().filter(|p| p.starts_with("compat")).count() > 20
            && t.iter().all(|p| !p.starts_with("compat") || o.contains(p));
        ready.then_some(())
    });
    let t = rrd_files(&theirs);
    let host_dir = t
        .iter()
        .find(|p| p.starts_with("compat") && !p.starts_with("compat/__SummaryInfo__"))
        .and_then(|p| p.parent())
        .unwrap()
        .to_path_buf();
    let mut compared = 0;
    for rel in &t {
        if !rel.starts_with("compat") && !rel.starts_with("__SummaryInfo__") {
            continue;
        }
        let (a, b) = (
            rrdtool_info(&theirs.join(rel)),
            rrdtool_info(&ours.join(rel)),
        );
        assert_eq!(shape(&b), shape(&a), "{}", rel.display());
        compared += 1;
    }
    assert!(compared > 40, "compared {compared} files");
    // Spot checks of gmetad's rules.
    let i = rrdtool_info(&ours.join(&host_dir).join("reqs.rrd"));
    assert_eq!(i["ds[sum].type"], "\"COUNTER\"");
    assert_eq!(i["ds[sum].minimal_heartbeat"], "120");
    assert_eq!(
        rrdtool_info(&ours.join("__SummaryInfo__/reqs.rrd"))["ds[sum].type"],
        "\"GAUGE\"",
        "root summary quirk"
    );
    assert!(
        !ours.join(&host_dir).join("os_name.rrd").exists(),
        "no file for strings"
    );
    // unsummarized_metrics (a name prefix): host files, no summary files, in
    // both trees.
    for tree in [&theirs, &ours] {
        let files = rrd_files(tree);
        let disk = |p: &PathBuf| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("disk_"))
        };
        assert!(
            files.iter().any(|p| disk(p) && p.starts_with(&host_dir)),
            "{}",
            tree.display()
        );
        assert!(
            !files
                .iter()
                .any(|p| disk(p) && p.parent().is_some_and(|d| d.ends_with("__SummaryInfo__"))),
            "{}: {files:?}",
            tree.display()
        );
    }

    // Values: for metrics that do not change (so when each daemon polled
    // within a step does not matter), `rrdtool fetch` of both trees shows
    // the same numbers at the same timestamps once both have a few rows.
    let constant = [
        host_dir.join("const_g.rrd"),
        host_dir.join("cpu_num.rrd"),
        host_dir.join("mem_total.rrd"),
        host_dir.join("reqs.rrd"),
        PathBuf::from("compat/__SummaryInfo__/const_g.rrd"),
        PathBuf::from("compat/__SummaryInfo__/cpu_num.rrd"),
    ];
    let mut agreed = 0;
    wait_until(
        "two common rows of every constant metric",
        Duration::from_secs(120),
        || {
            let _ = read_tcp(
                agg.http,
                Some(b"POST /api/flush HTTP/1.0\r\nContent-Length: 0\r\n\r\n"),
            );
            agreed = 0;
            for rel in &constant {
                let (a, b) = (
                    rrdtool_fetch(&theirs.join(rel)),
                    rrdtool_fetch(&ours.join(rel)),
                );
                let mut common = 0;
                for (t, va) in &a {
                    let Some(vb) = b.get(t) else { continue };
                    if va.iter().chain(vb).any(|v| v.is_nan()) {
                        continue;
                    }
                    assert_eq!(
                        va,
                        vb,
                        "{} at {t}: gmetad {va:?}, ours {vb:?}",
                        rel.display()
                    );
                    common += 1;
                }
                if common < 2 {
                    return None;
                }
                agreed += common;
            }
            Some(())
        },
    );
    assert!(agreed >= 12, "{agreed} rows compared");
}

/// `rrdtool fetch FILE AVERAGE -s end-10min`: timestamp → values per DS.
fn rrdtool_fetch(file: &Path) -> BTreeMap<i64, Vec<f64>> {
    let out = Command::new(require_binary("rrdtool"))
        .arg("fetch")
        .arg(file)
        .args(["AVERAGE", "-s", "end-10min"])
        .output()
        .unwrap();
    assert!(out.status.success(), "rrdtool fetch {}", file.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (t, vals) = l.split_once(':')?;
            let t: i64 = t.trim().parse().ok()?;
            let v = vals
                .split_whitespace()
                .map(|x| {
                    if x.contains("nan") {
                        f64::NAN
                    } else {
                        x.parse().unwrap_or(f64::NAN)
                    }
                })
                .collect();
            Some((t, v))
        })
        .collect()
}

/// Whether the journal (current or set aside) holds a sample record with
/// `value`: `<n>\t<time>\t<value>\t<crc>`.
fn journal_has(root: &Path, value: &str) -> bool {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".ganglion-journal")
        })
        .any(|e| {
            std::fs::read_to_string(e.path()).is_ok_and(|t| {
                t.lines().any(|l| {
                    let f: Vec<&str> = l.split('\t').collect();
                    f.len() == 4 && f[2] == value
                })
            })
        })
}

#[test]
fn kill_9_then_restart_loses_no_journaled_sample() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rrds");
    let port = free_port_pair();
    let cfg = dir.path().join("agg.toml");
    std::fs::write(
        &cfg,
        format!(
            "rrd_root = \"{}\"\nstep_secs = 1\n[storage]\nflush_interval_secs = 3600\njournal_commit_interval_ms = 200\n\
             [[cluster]]\nname = \"crash\"\nudp_listen = \"127.0.0.1:{port}\"\nxml_listen = \"127.0.0.1:{port}\"\nreverse_dns = false\n\
             [xml]\ndump_listen = \"\"\nquery_listen = \"\"\n[http]\nlisten = \"\"\n",
            root.display()
        ),
    )
    .unwrap();
    // Both runs log to one file, so a failure below can say what the
    // aggregator said.
    let log = dir.path().join("aggregator.log");
    let start = || {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let g = ChildGuard::spawn(
            "ganglion-aggregator",
            Command::new(workspace_bin("ganglion-aggregator"))
                .arg("--config")
                .arg(&cfg)
                .env("NO_COLOR", "1")
                .stderr(stderr),
        );
        wait_for_tcp(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        );
        g
    };
    let mut first = start();
    let gm = gmetric_conf(dir.path(), SocketAddr::from(([127, 0, 0, 1], port)));
    for i in 0..5 {
        let value = format!("{}", 20 + i);
        let args = [
            "-c",
            gm.to_str().unwrap(),
            "-n",
            "temp",
            "-v",
            &value,
            "-t",
            "float",
        ];
        let st = Command::new(require_binary("gmetric"))
            .args(args)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "gmetric {args:?} failed ({st}); aggregator {}; its log:\n{}",
            match first.child.try_wait() {
                Ok(Some(exit)) => format!("exited: {exit}"),
                _ => "still running".to_string(),
            },
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        // Sampled and committed to the journal (no HTTP here to ask).
        wait_until("the value in the journal", Duration::from_secs(20), || {
            journal_has(&root, &value).then_some(())
        });
    }
    let before_kill = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    let _ = first.child.kill(); // SIGKILL: no flush, no clean shutdown
    let _ = first.child.wait();
    let file = root.join("crash/127.0.0.1/temp.rrd");
    let rrd_last = |f: &Path| -> u64 {
        let out = Command::new(require_binary("rrdtool"))
            .arg("last")
            .arg(f)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    // The file was created at first sight with its first sample; the later
    // ones were only cached and journaled (the flush interval is an hour).
    let before_crash = rrd_last(&file);
    assert!(
        std::fs::metadata(root.join(".ganglion-journal"))
            .unwrap()
            .len()
            > 0
    );

    let mut second = start();
    let last = wait_until(
        "journal replayed into the RRD",
        Duration::from_secs(10),
        || Some(rrd_last(&file)).filter(|&t| t > before_crash),
    );
    assert!(
        last + 2 >= before_kill,
        "last update {last} vs kill at {before_kill}"
    );
    // Every file in the tree is intact.
    for rel in rrd_files(&root) {
        let f = root.join(&rel);
        rrdtool_info(&f);
        let out = Command::new(require_binary("rrdtool"))
            .args(["fetch"])
            .arg(&f)
            .args(["AVERAGE", "-s", "end-60", "-e", "now"])
            .output()
            .unwrap();
        assert!(out.status.success(), "fetch {}", rel.display());
    }
    assert_eq!(second.terminate(Duration::from_secs(15)), Some(0));
}

#[test]
fn rrdcached_backend_writes_through_the_real_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rrds");
    std::fs::create_dir_all(&root).unwrap();
    let sock = dir.path().join("rrdcached.sock");
    let _cached = ChildGuard::spawn(
        "rrdcached",
        Command::new(require_binary("rrdcached"))
            .args(["-g", "-w", "3600", "-z", "1", "-l"])
            .arg(format!("unix:{}", sock.display()))
            .arg("-p")
            .arg(dir.path().join("rrdcached.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_until("rrdcached socket", Duration::from_secs(10), || {
        sock.exists().then_some(())
    });
    let agg = Aggregator::start(
        "cached",
        &format!(
            "step_secs = 1\n[storage]\nflush_interval_secs = 1\n[rrdcached]\naddress = \"unix:{}\"\n",
            sock.display()
        ),
    );
    let gm = gmetric_conf(agg.dir.path(), agg.udp);
    for i in 0..4 {
        gmetric(
            &gm,
            &["-n", "temp", "-v", &format!("{}", 30 + i), "-t", "float"],
        );
        // A space is a field separator in rrdcached's protocol: the name
        // must travel escaped.
        gmetric(&gm, &["-n", "room temp", "-v", "21", "-t", "float"]);
        wait_sampled(&agg);
    }
    let file = agg.dir.path().join("rrds/cached/127.0.0.1/temp.rrd");
    wait_until("file created", Duration::from_secs(10), || {
        file.exists().then_some(())
    });
    // rrdcached holds the updates (-w 3600): the aggregator's flush endpoint
    // makes its readers see them (it FLUSHes the daemon too).
    let resp = read_tcp(
        agg.http,
        Some(b"POST /api/flush HTTP/1.0\r\nContent-Length: 0\r\n\r\n"),
    );
    assert!(
        String::from_utf8_lossy(&resp).contains("\"flushed\":true"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    let plain = Command::new(workspace_bin("rrd-export"))
        .arg(&file)
        .args(["-s", "end-30", "-e", "now", "-r", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(
        text.lines()
            .skip(1)
            .any(|l| l.ends_with(",30") || l.ends_with(",31") || l.ends_with(",32")),
        "values on disk after /api/flush: {text}"
    );
    let spaced = Command::new(workspace_bin("rrd-export"))
        .arg(agg.dir.path().join("rrds/cached/127.0.0.1/room temp.rrd"))
        .args(["-s", "end-30", "-e", "now", "-r", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&spaced.stdout);
    assert!(
        text.lines().skip(1).any(|l| l.ends_with(",21")),
        "a name with a space went through rrdcached: {text}{}",
        String::from_utf8_lossy(&spaced.stderr)
    );
    let out = Command::new(require_binary("rrdtool"))
        .args([
            "lastupdate",
            "--daemon",
            &format!("unix:{}", sock.display()),
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let export = Command::new(workspace_bin("rrd-export"))
        .arg(&file)
        .args([
            "--daemon",
            &format!("unix:{}", sock.display()),
            "-s",
            "end-30",
            "-e",
            "now",
            "-r",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let text = String::from_utf8_lossy(&export.stdout);
    assert!(
        text.lines()
            .skip(1)
            .any(|l| l.ends_with(",30") || l.ends_with(",31") || l.ends_with(",32")),
        "{text}"
    );
}

/// rrdtool with `args`: (exit status success, stdout, stderr).
fn rrdtool(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = Command::new(require_binary("rrdtool"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// rrdtool that must succeed; its stdout.
fn rrdtool_ok(args: &[&std::ffi::OsStr]) -> String {
    let (ok, out, err) = rrdtool(args);
    assert!(ok, "rrdtool {args:?}: {err}");
    out
}

#[test]
fn rrdtool_readers_through_our_daemon_socket_see_cached_samples() {
    use std::ffi::OsStr;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ganglion.sock");
    let tcp = free_tcp_port();
    // An hour between timed flushes: whatever reaches the files in this test
    // after their first sample was written because a reader asked through
    // the socket.
    let mut agg = Aggregator::start(
        "sock",
        &format!(
            "step_secs = 1\nrras = [\"RRA:AVERAGE:0.5:1:600\", \"RRA:MAX:0.5:5:100\"]\n\
             [storage]\nflush_interval_secs = 3600\n\
             daemon_listen = [\"unix:{}\", \"127.0.0.1:{tcp}\"]\n",
            sock.display()
        ),
    );
    let gm = gmetric_conf(agg.dir.path(), agg.udp);
    for v in [30, 31, 32] {
        gmetric(&gm, &["-n", "temp", "-v", &v.to_string(), "-t", "float"]);
        wait_sampled(&agg);
    }
    let rel = "sock/127.0.0.1/temp.rrd";
    let file = agg.rrd_root.join(rel);
    let unix = format!("unix:{}", sock.display());
    let (u, t) = (OsStr::new(&unix), format!("127.0.0.1:{tcp}"));
    let t = OsStr::new(&t);
    let f = file.as_os_str();
    let o = OsStr::new;
    // The file was created at first sight, as gmetad does, with its first
    // sample; the later ones wait in the cache.
    let plain = rrdtool_ok(&[o("lastupdate"), f]);
    assert!(plain.contains(": 30") && !plain.contains(": 32"), "{plain}");

    // Over TCP librrd's client sends names relative to the daemon's tree;
    // FETCH writes the file's cache first.
    let out = rrdtool_ok(&[
        o("fetch"),
        o("--daemon"),
        t,
        o(rel),
        o("AVERAGE"),
        o("-s"),
        o("end-60"),
    ]);
    let seen: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split_once(':')?.1.trim().parse().ok())
        .filter(|v: &f64| !v.is_nan())
        .collect();
    assert!(
        seen.contains(&30.0) && seen.contains(&32.0),
        "fetch through the daemon shows the cached samples: {out}"
    );

    // A new value is cached, not on disk, until a reader asks.
    gmetric(&gm, &["-n", "temp", "-v", "99", "-t", "float"]);
    wait_sampled(&agg);
    let plain = rrdtool_ok(&[o("lastupdate"), f]);
    assert!(!plain.contains(": 99"), "{plain}");
    let fresh = rrdtool_ok(&[o("lastupdate"), o("--daemon"), u, f]);
    assert!(
        fresh.contains(": 99"),
        "lastupdate --daemon flushes first: {fresh}"
    );

    // rrd-export's --daemon (FLUSH, then its own reader) works the same way.
    gmetric(&gm, &["-n", "temp", "-v", "77", "-t", "float"]);
    wait_sampled(&agg);
    let export = Command::new(workspace_bin("rrd-export"))
        .arg(&file)
        .args(["--daemon", &unix, "-s", "end-5", "-e", "now", "-r", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&export.stdout);
    assert!(
        export.status.success() && text.lines().any(|l| l.ends_with(",77")),
        "{text}{}",
        String::from_utf8_lossy(&export.stderr)
    );

    // Each reader gives through the socket what it gives from the file once
    // the cache is written: fetch, xport and graph (FETCH), info, first, last.
    let end = rrdtool_ok(&[o("last"), o("--daemon"), u, f])
        .trim()
        .parse::<i64>()
        .unwrap();
    let (s, e) = ((end - 40).to_string(), end.to_string());
    let range = [o("-s"), o(&s), o("-e"), o(&e)];
    let via = |cmd: &[&OsStr]| {
        let mut a = cmd.to_vec();
        a.extend([o("--daemon"), u]);
        a.extend(range);
        rrdtool_ok(&a)
    };
    let direct = |cmd: &[&OsStr]| {
        let mut a = cmd.to_vec();
        a.extend(range);
        rrdtool_ok(&a)
    };
    let fetch = [o("fetch"), f, o("AVERAGE")];
    assert_eq!(via(&fetch), direct(&fetch));
    let def = format!("DEF:a={}:sum:AVERAGE", file.display());
    let xport = [o("xport"), o(&def), o("XPORT:a")];
    assert_eq!(via(&xport), direct(&xport));
    let png = dir.path().join("g.png");
    let graph = [
        o("graph"),
        png.as_os_str(),
        o(&def),
        o("LINE1:a#ff0000"),
        o("PRINT:a:MAX:%.0lf"),
    ];
    let printed = via(&graph);
    assert!(
        printed.lines().any(|l| l == "99"),
        "the maximum of the range: {printed}"
    );
    assert_eq!(printed, direct(&graph));
    let info_via = rrdtool_ok(&[o("info"), o("--daemon"), u, f]);
    assert_eq!(info_via, rrdtool_ok(&[o("info"), f]));
    assert!(info_via.contains("ds[sum].last_ds = \"77"), "{info_via}");
    assert_eq!(
        rrdtool_ok(&[o("first"), o("--daemon"), u, f]),
        rrdtool_ok(&[o("first"), f])
    );
    assert_eq!(
        rrdtool_ok(&[o("last"), o("--daemon"), u, f]),
        rrdtool_ok(&[o("last"), f])
    );

    // Outside the tree, other files, and writes: refused, counted.
    for args in [
        vec![o("fetch"), o("--daemon"), u, o("/etc/passwd"), o("AVERAGE")],
        vec![
            o("fetch"),
            o("--daemon"),
            t,
            o("../escape.rrd"),
            o("AVERAGE"),
        ],
    ] {
        let (ok, _, err) = rrdtool(&args);
        assert!(!ok && err.contains("Permission denied"), "{args:?}: {err}");
    }
    let (ok, _, err) = rrdtool(&[
        o("fetch"),
        o("--daemon"),
        u,
        f,
        o("AVERAGE"),
        o("-s"),
        o("-630720000"),
    ]);
    assert!(
        !ok && err.contains("at most 1000000 rows"),
        "a range librrd would allocate whole: {err}"
    );
    let (ok, _, err) = rrdtool(&[o("update"), o("--daemon"), u, f, o("N:5")]);
    assert!(!ok && err.contains("writes its own RRD files"), "{err}");
    assert!(metrics_value(agg.http, "ganglion_rrd_daemon_errors_total") >= 4);

    // The protocol itself: PING, STATS, a line longer than rrdcached takes.
    let mut s = UnixStream::connect(&sock).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    s.write_all(b"PING\nSTATS\n").unwrap();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "0 PONG\n");
    line.clear();
    r.read_line(&mut line).unwrap();
    let n: usize = line.split(' ').next().unwrap().parse().unwrap();
    let mut stats = String::new();
    for _ in 0..n {
        r.read_line(&mut stats).unwrap();
    }
    assert!(stats.contains("UpdatesWritten: "), "{line}{stats}");
    s.write_all(&[b'x'; 5000]).unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "-1 Command too long\n");
    line.clear();
    assert_eq!(
        r.read_line(&mut line).unwrap(),
        0,
        "closed after a too-long line"
    );

    agg.guard.terminate(Duration::from_secs(30));
    assert!(!sock.exists(), "the socket file goes with the aggregator");
}

/// Starts the real rrdcached on `sock` (foreground; `-F`: what it holds is
/// written at shutdown, as a restart needs).
fn start_rrdcached(dir: &Path, sock: &Path) -> ChildGuard {
    let _ = std::fs::remove_file(sock);
    let g = ChildGuard::spawn(
        "rrdcached",
        Command::new(require_binary("rrdcached"))
            .args(["-g", "-F", "-w", "2", "-z", "1", "-l"])
            .arg(format!("unix:{}", sock.display()))
            .arg("-p")
            .arg(dir.join("rrdcached.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_until("rrdcached socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(sock)
            .ok()
            .map(|_| ())
    });
    g
}

/// rrdcached restarted while samples flow: the writer's connection breaks,
/// its writes fail as `transient` and stay cached and journaled, the client
/// reconnects, and every probe value reaches the file. Also: the aggregator
/// started while rrdcached is down says so and writes nothing around it.
#[test]
fn an_rrdcached_restart_loses_no_probe_sample() {
    use ganglion_proto::xdr::Value;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rrdcached.sock");
    // Down at start: logged, and no file written directly meanwhile.
    let agg = Aggregator::start(
        "restart",
        &format!(
            "step_secs = 1\n[storage]\nflush_interval_secs = 1\n\
             [rrdcached]\naddress = \"unix:{}\"\ntimeout_secs = 5\nreconnect_max_secs = 1\n",
            sock.display()
        ),
    );
    let host = "10.0.0.9:probe";
    let file = agg.rrd_root.join("restart/probe/probe.rrd");
    let mut sent: Vec<f64> = Vec::new();
    let mut probe = |v: f64, agg: &Aggregator| {
        send_metric(agg.udp, host, "probe", "float", 3, Value::Float(v as f32));
        sent.push(v);
        wait_sampled(agg);
    };
    let transient = |agg: &Aggregator| {
        metrics_value(
            agg.http,
            "ganglion_rrd_write_errors_total{reason=\"transient\"}",
        )
    };
    probe(1.0, &agg);
    wait_until("the outage counted", Duration::from_secs(20), || {
        (transient(&agg) >= 1).then_some(())
    });
    assert!(
        agg.log()
            .contains("rrdcached is configured but not reachable"),
        "{}",
        agg.log()
    );
    // The file is created directly (rrdcached cannot create files), but no
    // sample goes around the daemon.
    if file.exists() {
        let info = ganglion_rrd::info(&file).unwrap();
        assert!(
            info.contains(&(
                "ds[sum].last_ds".into(),
                ganglion_rrd::InfoValue::Str("U".into())
            )),
            "no update may go around rrdcached: {info:?}"
        );
    }
    let mut cached = start_rrdcached(dir.path(), &sock);
    for v in [2.0, 3.0, 4.0] {
        probe(v, &agg);
    }
    // Restart it mid-run while probes keep coming.
    let errors_before = transient(&agg);
    cached.terminate(Duration::from_secs(10));
    probe(5.0, &agg);
    wait_until(
        "writes refused while it is down",
        Duration::from_secs(20),
        || (transient(&agg) > errors_before).then_some(()),
    );
    probe(6.0, &agg);
    let _cached = start_rrdcached(dir.path(), &sock);
    for v in [7.0, 8.0, 9.0] {
        probe(v, &agg);
    }
    // Everything written and flushed through the daemon.
    let resp = read_tcp(
        agg.http,
        Some(b"POST /api/flush HTTP/1.0\r\nContent-Length: 0\r\n\r\n"),
    );
    assert!(
        String::from_utf8_lossy(&resp).contains("\"flushed\":true"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    let last = ganglion_rrd::last(&file).unwrap();
    let f = ganglion_rrd::fetch(&file, "AVERAGE", last - 600, last, 1).unwrap();
    let stored: Vec<f64> = (0..f.rows())
        .map(|i| f.data[i * f.ds_names.len()])
        .filter(|v| !v.is_nan())
        .collect();
    for v in &sent {
        assert!(
            stored.contains(v),
            "probe value {v} is not in {}: {stored:?}\n{}",
            file.display(),
            agg.log()
        );
    }
    assert_eq!(
        metrics_value(agg.http, "ganglion_rrd_samples_discarded_total"),
        0,
        "{}",
        agg.log()
    );
    assert_eq!(
        metrics_value(agg.http, "ganglion_rrd_dropped_batches_total"),
        0
    );
    assert!(metrics_value(agg.http, "ganglion_rrd_rrdcached_reconnects_total") >= 1);
}

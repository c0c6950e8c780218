//! CLI tests in the style of ripgrep's, and differential tests against the real
//! `rrdtool`: for files created and updated by rrdtool itself, every exported
//! value and timestamp equals what `rrdtool fetch` prints for the same file,
//! CF, resolution and range.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const T0: i64 = 1_790_000_000; // a multiple of 10, 60 and 300

fn rrdtool(args: &[&str]) -> String {
    let out = Command::new("rrdtool")
        .args(args)
        .output()
        .expect("rrdtool must be installed (run scripts/test.sh)");
    assert!(
        out.status.success(),
        "rrdtool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn export(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rrd-export"))
        .args(args)
        .output()
        .unwrap()
}

/// `rrdtool fetch` parsed: ds names and timestamp → values.
fn fetch(
    file: &Path,
    cf: &str,
    start: i64,
    end: i64,
    res: Option<u64>,
) -> (Vec<String>, BTreeMap<i64, Vec<f64>>) {
    let (s, e) = (start.to_string(), end.to_string());
    let mut args = vec!["fetch", file.to_str().unwrap(), cf, "-s", &s, "-e", &e];
    let r = res.map(|r| r.to_string());
    if let Some(r) = &r {
        args.extend(["-r", r]);
    }
    let text = rrdtool(&args);
    let mut lines = text.lines();
    let names = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut rows = BTreeMap::new();
    for l in lines.filter(|l| l.contains(':')) {
        let (t, vals) = l.split_once(':').unwrap();
        let vals = vals
            .split_whitespace()
            .map(|v| match v {
                "nan" | "-nan" => f64::NAN,
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap(),
            })
            .collect();
        rows.insert(t.trim().parse().unwrap(), vals);
    }
    (names, rows)
}

fn parse_csv(text: &str) -> (Vec<String>, BTreeMap<i64, Vec<f64>>) {
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .skip(1)
        .map(str::to_string)
        .collect();
    let mut rows = BTreeMap::new();
    for l in lines {
        let mut f = l.split(',');
        let t = f.next().unwrap().parse().unwrap();
        let v = f
            .map(|x| match x {
                "NaN" => f64::NAN,
                "Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                x => x.parse().unwrap(),
            })
            .collect();
        rows.insert(t, v);
    }
    (header, rows)
}

/// Equal as rrdtool prints them (%.10e), and bit-for-bit when rrdtool's text is exact.
fn same(ours: f64, theirs: f64) -> bool {
    if ours.is_nan() || theirs.is_nan() {
        return ours.is_nan() && theirs.is_nan();
    }
    if ours.is_infinite() || theirs.is_infinite() {
        return ours == theirs;
    }
    let exact_in_rrdtool = format!("{theirs:.10e}").parse::<f64>().unwrap() == ours;
    exact_in_rrdtool || format!("{ours:.10e}") == format!("{theirs:.10e}")
}

fn compare(file: &Path, cf: &str, start: i64, end: i64, res: Option<u64>) {
    compare_with(file, cf, start, end, res, &[]);
}

/// As [`compare`], with extra rrd-export arguments.
fn compare_with(file: &Path, cf: &str, start: i64, end: i64, res: Option<u64>, extra: &[&str]) {
    let (names, theirs) = fetch(file, cf, start, end, res);
    let (s, e) = (start.to_string(), end.to_string());
    let mut args = vec![file.to_str().unwrap(), "--cf", cf, "-s", &s, "-e", &e];
    args.extend(extra);
    let r = res.map(|r| r.to_string());
    if let Some(r) = &r {
        args.extend(["--resolution", r]);
    }
    let out = export(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (header, ours) = parse_csv(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(header.len(), names.len(), "{}", file.display());
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "{} {cf} {start}..{end} res {res:?} {extra:?}: timestamps",
        file.display()
    );
    for (t, tv) in &theirs {
        for (i, v) in tv.iter().enumerate() {
            let o = ours[t][i];
            assert!(
                same(o, *v),
                "{} {cf} res {res:?} {extra:?} t={t} ds={i}: ours {o:e} vs rrdtool {v:e}",
                file.display()
            );
        }
    }
}

fn fixtures(dir: &Path) -> Vec<PathBuf> {
    let t = |k: i64| (T0 + k).to_string();
    let mut files = Vec::new();
    // GAUGE with gaps, extremes and infinities; several RRAs and CFs.
    let g = dir.join("gauge.rrd");
    rrdtool(&[
        "create",
        g.to_str().unwrap(),
        "--start",
        &t(0),
        "--step",
        "10",
        "DS:v:GAUGE:20:U:U",
        "RRA:AVERAGE:0.5:1:200",
        "RRA:AVERAGE:0.5:6:50",
        "RRA:MIN:0.5:6:50",
        "RRA:MAX:0.5:6:50",
        "RRA:LAST:0.5:6:50",
    ]);
    let mut ups = Vec::new();
    for k in 1..=120 {
        let v = match k {
            30..=40 => continue, // gap → NaN
            50 => "inf".to_string(),
            51 => "-inf".to_string(),
            60 => "1e300".to_string(),
            61 => "-2.5e-300".to_string(),
            k => format!("{}", (k as f64) * 1.25 - 30.0),
        };
        ups.push(format!("{}:{v}", T0 + k * 10));
    }
    let mut a = vec!["update", g.to_str().unwrap()];
    a.extend(ups.iter().map(String::as_str));
    rrdtool(&a);
    files.push(g);
    // COUNTER that wraps at 2^32, and DERIVE going down.
    let c = dir.join("counter.rrd");
    rrdtool(&[
        "create",
        c.to_str().unwrap(),
        "--start",
        &t(0),
        "--step",
        "10",
        "DS:c:COUNTER:20:U:U",
        "DS:d:DERIVE:20:U:U",
        "RRA:AVERAGE:0.5:1:100",
    ]);
    let mut ups = Vec::new();
    let (mut cv, mut dv): (u64, i64) = (4_294_960_000, 1000);
    for k in 1..=50 {
        cv = (cv + 777) % 4_294_967_296;
        dv -= 13 * k;
        ups.push(format!("{}:{cv}:{dv}", T0 + k * 10));
    }
    let mut a = vec!["update", c.to_str().unwrap()];
    a.extend(ups.iter().map(String::as_str));
    rrdtool(&a);
    files.push(c);
    files
}

#[test]
fn values_and_timestamps_equal_rrdtool_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let files = fixtures(dir.path());
    let g = &files[0];
    compare(g, "AVERAGE", T0, T0 + 1200, None);
    compare(g, "AVERAGE", T0 + 100, T0 + 700, None);
    for cf in ["AVERAGE", "MIN", "MAX", "LAST"] {
        compare(g, cf, T0, T0 + 1200, Some(60));
    }
    compare(&files[1], "AVERAGE", T0, T0 + 500, None);
}

/// A gmetad-like file (one CF per step, three steps) whose finer RRAs have
/// wrapped several times, updated `steps` times from T0.
fn wrapped_file(dir: &Path, steps: i64) -> PathBuf {
    let f = dir.join("wrapped.rrd");
    rrdtool(&[
        "create",
        f.to_str().unwrap(),
        "--start",
        &T0.to_string(),
        "--step",
        "10",
        "DS:sum:GAUGE:80:U:U",
        "DS:num:GAUGE:80:U:U",
        "RRA:AVERAGE:0.5:1:100",
        "RRA:AVERAGE:0.5:5:60",
        "RRA:MAX:0.5:5:60",
        "RRA:AVERAGE:0.5:30:40",
    ]);
    let ups: Vec<String> = (1..=steps)
        .filter(|k| k % 97 > 3) // a few gaps
        .map(|k| format!("{}:{}:{}", T0 + k * 10, (k * 7919) % 1000, k % 13))
        .collect();
    for chunk in ups.chunks(500) {
        let mut a = vec!["update", f.to_str().unwrap()];
        a.extend(chunk.iter().map(String::as_str));
        rrdtool(&a);
    }
    f
}

#[test]
fn long_ranges_read_in_windows_equal_rrdtool_fetch() {
    // Windows of a few rows make every range below span many windows, so
    // the per-window RRA choice, the NaN rows older than the RRA and the
    // widened ends are all exercised against librrd's whole fetch.
    let dir = tempfile::tempdir().unwrap();
    let f = wrapped_file(dir.path(), 2000);
    let last = T0 + 20_000;
    let ranges = [
        (T0, last, None),
        (T0 - 5000, last + 3000, None),
        (last - 900, last, None),         // the 10 s RRA covers it
        (last - 990, last - 7, Some(10)), // unaligned end
        (last - 3000, last, None),        // only 50 s and 300 s cover it
        (last - 3000, last, Some(300)),
        (T0 + 3, last + 1, Some(1)), // partial cover: widest wins
        (last - 2995, last - 1005, Some(50)), // unaligned start
    ];
    for (start, end, res) in ranges {
        for w in ["3", "17", "1000"] {
            compare_with(&f, "AVERAGE", start, end, res, &["--window-rows", w]);
        }
    }
    // MAX: the 50 s MAX RRA, or the 10 s AVERAGE one (one PDP per row serves
    // any simple CF).
    compare_with(&f, "MAX", last - 2000, last, None, &["--window-rows", "5"]);
    compare_with(&f, "MAX", last - 500, last, None, &["--window-rows", "5"]);
    // Same-step RRAs of other CFs (gauge.rrd) are read whole: still equal.
    let g = &fixtures(dir.path())[0];
    for cf in ["AVERAGE", "MIN", "MAX", "LAST"] {
        compare_with(g, cf, T0, T0 + 1200, Some(60), &["--window-rows", "4"]);
    }
}

#[test]
fn windowed_join_of_mixed_steps_equals_whole_join() {
    let dir = tempfile::tempdir().unwrap();
    let f = wrapped_file(dir.path(), 2000);
    let files = fixtures(dir.path());
    let (f, g) = (f.to_str().unwrap(), files[0].to_str().unwrap());
    let (s, e) = ((T0 - 600).to_string(), (T0 + 20_000).to_string());
    for fmt in ["csv", "json"] {
        let args = [f, g, "-s", &s, "-e", &e, "--format", fmt];
        let whole = export(&args);
        assert!(whole.status.success());
        let mut windowed = args.to_vec();
        windowed.extend(["--window-rows", "7"]);
        let windowed = export(&windowed);
        assert!(windowed.status.success());
        assert!(whole.stdout.len() > 1000);
        assert_eq!(
            String::from_utf8(windowed.stdout).unwrap(),
            String::from_utf8(whole.stdout).unwrap()
        );
    }
}

#[test]
fn formats_json_ndjson_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let files = fixtures(dir.path());
    let (s, e) = (T0.to_string(), (T0 + 600).to_string());
    let g = files[0].to_str().unwrap();
    let out = export(&[g, "-s", &s, "-e", &e, "--format", "json"]);
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(j["meta"]["step"], 10);
    assert_eq!(j["meta"]["cf"], "AVERAGE");
    let rows = j["rows"].as_array().unwrap();
    let inf = rows.iter().find(|r| r["timestamp"] == T0 + 500).unwrap();
    assert_eq!(inf[g], "Inf");
    let ninf = rows.iter().find(|r| r["timestamp"] == T0 + 510).unwrap();
    assert_eq!(ninf[g], "-Inf");
    let gap = rows.iter().find(|r| r["timestamp"] == T0 + 350).unwrap();
    assert_eq!(gap[g], "NaN");
    let num = rows.iter().find(|r| r["timestamp"] == T0 + 100).unwrap();
    assert_eq!(num[g].as_f64(), Some(10.0 * 1.25 - 30.0));

    let out = export(&[
        g,
        "-s",
        &s,
        "-e",
        &e,
        "--format",
        "json",
        "--rows",
        "arrays",
        "--time-format",
        "rfc3339",
    ]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j["rows"][0][0].as_str().unwrap().ends_with('Z'));

    let out = export(&[
        g,
        &files[1].to_string_lossy(),
        "-s",
        &s,
        "-e",
        &e,
        "--format",
        "ndjson",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        first.as_object().unwrap().len(),
        4,
        "timestamp + 1 + 2 columns: {first}"
    );
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );

    let out = export(&[g, "-s", &s, "-e", &e, "--missing", "empty"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("{},\n", T0 + 350)),
        "empty cell for NaN"
    );
}

#[test]
fn tree_selection_with_globs_and_summaries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rrds");
    let files = fixtures(dir.path());
    for (c, h, m) in [
        ("web", "node1", "load_one"),
        ("web", "node2", "load_one"),
        ("db", "node3", "load_one"),
        ("web", "node1", "cpu_idle"),
    ] {
        std::fs::create_dir_all(root.join(c).join(h)).unwrap();
        std::fs::copy(&files[0], root.join(c).join(h).join(format!("{m}.rrd"))).unwrap();
    }
    std::fs::create_dir_all(root.join("web/__SummaryInfo__")).unwrap();
    std::fs::copy(&files[1], root.join("web/__SummaryInfo__/load_one.rrd")).unwrap();
    let (s, e) = (T0.to_string(), (T0 + 100).to_string());
    let r = root.to_str().unwrap();
    let out = export(&[
        "--root",
        r,
        "--cluster",
        "web",
        "--metric",
        "load_*",
        "-s",
        &s,
        "-e",
        &e,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(header, "timestamp,web/node1/load_one,web/node2/load_one");
    let out = export(&[
        "--root",
        r,
        "--summary",
        "--cluster",
        "web",
        "-s",
        &s,
        "-e",
        &e,
    ]);
    let header = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        header,
        "timestamp,web/__SummaryInfo__/load_one:c,web/__SummaryInfo__/load_one:d"
    );
    let out = export(&["--root", r, "--host", "nomatch*", "-s", &s, "-e", &e]);
    assert_eq!(out.status.code(), Some(1), "nothing matched → exit 1");
}

#[test]
fn bad_input_is_one_line_exit_2_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let files = fixtures(dir.path());
    let g = files[0].to_str().unwrap();
    let notrrd = dir.path().join("not.rrd");
    std::fs::write(&notrrd, b"hello, I am not an RRD file at all").unwrap();
    let trunc = dir.path().join("trunc.rrd");
    let bytes = std::fs::read(&files[0]).unwrap();
    std::fs::write(&trunc, &bytes[..bytes.len() / 3]).unwrap();
    let out_file = dir.path().join("out.csv");
    let (s, e) = (T0.to_string(), (T0 + 100).to_string());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["missing.rrd".into()], "missing.rrd"),
        (vec![notrrd.display().to_string()], "not.rrd"),
        (vec![trunc.display().to_string()], "trunc.rrd"),
        (vec![g.into(), "--cf".into(), "MEDIAN".into()], "MEDIAN"),
        (
            vec![g.into(), "-s".into(), e.clone(), "-e".into(), s.clone()],
            "start",
        ),
        (
            vec![g.into(), "-o".into(), "/nonexistent-dir/x.csv".into()],
            "nonexistent-dir",
        ),
        (
            vec![g.into(), "-s".into(), "yesterday-bogus".into()],
            "bogus",
        ),
    ];
    for (args, needle) in cases {
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        if !a.contains(&"-s") {
            a.extend(["-s", &s, "-e", &e]);
        }
        let out = export(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line: {err}"
        );
        assert!(err.contains(needle), "{args:?}: names the problem: {err}");
    }
    // An error during an export to a file leaves no partial file.
    let out = export(&[
        g,
        notrrd.to_str().unwrap(),
        "-s",
        &s,
        "-e",
        &e,
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!out_file.exists());
    // And a good one writes it whole.
    let out = export(&[g, "-s", &s, "-e", &e, "-o", out_file.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(
        std::fs::read_to_string(&out_file)
            .unwrap()
            .starts_with("timestamp,")
    );
}

#[test]
fn closed_pipe_is_success() {
    let dir = tempfile::tempdir().unwrap();
    let files = fixtures(dir.path());
    // 300 columns × 120 rows: far more than a pipe buffer holds.
    let many = vec![files[0].to_str().unwrap(); 300];
    let mut child = Command::new(env!("CARGO_BIN_EXE_rrd-export"))
        .args(many)
        .args([
            "-s",
            &T0.to_string(),
            "-e",
            &(T0 + 1190).to_string(),
            "-r",
            "10",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then close the pipe like `| head -1`.
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 16];
    use std::io::Read;
    let _ = stdout.read(&mut buf).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

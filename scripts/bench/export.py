#!/usr/bin/env python3
"""rrd-export vs rrdtool on the same data, whole-process wall time:
1. one day at 15 s (5,760 rows) of one gmetad-style file: rrd-export vs
   `rrdtool fetch` and `rrdtool xport --json` (median of N runs);
2. 1,000 such files (a gmetad tree: 1 cluster x 1000 hosts) to one CSV:
   rrd-export vs a shell loop of `rrdtool fetch` (median of 3 runs);
3. peak memory (max RSS) of rrd-export over those 1,000 files for a day
   and for a year (the year is read from the 600 s RRA: 52,704 rows per
   file), to show that memory does not grow with the range.
Usage: python3 scripts/bench/export.py [N]"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 30
T0 = 1790000100


def max_rss_kb(argv):
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    assert status == 0, argv
    return ru.ru_maxrss


def timed(argv):
    runs = []
    for _ in range(N):
        t = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs) * 1000


with tempfile.TemporaryDirectory() as tmp:
    f = os.path.join(tmp, "load_one.rrd")
    subprocess.run(["rrdtool", "create", f, "--start", str(T0), "--step", "15", "DS:sum:GAUGE:120:U:U",
                    "RRA:AVERAGE:0.5:1:5856", "RRA:AVERAGE:0.5:4:20160", "RRA:AVERAGE:0.5:40:52704"], check=True)
    ups = ["%d:%f" % (T0 + 15 * i, (i % 97) / 7.0) for i in range(1, 5761)]
    for k in range(0, len(ups), 1000):
        subprocess.run(["rrdtool", "update", f] + ups[k:k + 1000], check=True)
    s, e = str(T0), str(T0 + 86400)
    exe = os.environ.get("RRD_EXPORT", os.path.join(ROOT, "target/release/rrd-export"))
    rows = [
        ("rrdtool fetch", ["rrdtool", "fetch", f, "AVERAGE", "-s", s, "-e", e]),
        ("rrdtool xport --json", ["rrdtool", "xport", "--json", "-s", s, "-e", e, "DEF:a=%s:sum:AVERAGE" % f, "XPORT:a"]),
        ("rrd-export --format csv", [exe, f, "-s", s, "-e", e]),
        ("rrd-export --format json", [exe, f, "-s", s, "-e", e, "--format", "json"]),
    ]
    print("| command (5,760 rows) | median wall ms |")
    print("|---|---|")
    for name, argv in rows:
        print("| %s | %.2f |" % (name, timed(argv)))

    root = os.path.join(tmp, "rrds")
    for i in range(1000):
        d = os.path.join(root, "bench", "node%04d" % i)
        os.makedirs(d)
        with open(f, "rb") as src, open(os.path.join(d, "load_one.rrd"), "wb") as dst:
            dst.write(src.read())
    loop = "for f in %s/bench/*/load_one.rrd; do rrdtool fetch \"$f\" AVERAGE -s %s -e %s; done > /dev/null" % (root, s, e)
    N = 3
    t_loop = timed(["sh", "-c", loop])
    t_ours = timed(["sh", "-c", "%s --root %s --metric load_one -s %s -e %s -o %s/out.csv" % (exe, root, s, e, tmp)])
    print()
    print("| 1,000 files x one day to CSV | median wall ms |")
    print("|---|---|")
    print("| shell loop of rrdtool fetch | %.0f |" % t_loop)
    print("| rrd-export --root (one CSV, 1,001 columns) | %.0f |" % t_ours)
    print("\nrrd-export is %.1fx faster" % (t_loop / t_ours))

    year = str(T0 + 86400 - 365 * 86400)
    print()
    print("| rrd-export, 1,000 files to CSV | rows | wall ms | max RSS MB |")
    print("|---|---|---|---|")
    for name, start in [("one day (15 s RRA)", s), ("one year (600 s RRA)", year)]:
        argv = [exe, "--root", root, "--metric", "load_one", "-s", start, "-e", e, "-o", tmp + "/out.csv"]
        N = 1
        ms = timed(argv)
        rss = max_rss_kb(argv)
        with open(tmp + "/out.csv") as out:
            rows = sum(1 for _ in out) - 1
        print("| %s | %d | %.0f | %.1f |" % (name, rows, ms, rss / 1024))

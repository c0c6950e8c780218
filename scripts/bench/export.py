#!/usr/bin/env python3
"""rrd-export vs rrdtool fetch / rrdtool xport --json on the same file: one day
at 15 s (5,760 rows) of a gmetad-style single-DS file, whole-process wall time
per export (median of N runs). Usage: python3 scripts/bench/export.py [N]"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 30
T0 = 1790000100


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
    exe = os.path.join(ROOT, "target/release/rrd-export")
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

#!/usr/bin/env python3
"""Series API latency for a 1000-host cluster over one day, next to
`rrdtool xport` reading the same files (the data half of a ganglia-web
aggregate graph).

A gmetad-layout tree gets H hosts x load_one with a day of 15 s history
(`rrd-prefill`, gmetad's default RRAs); the aggregator serves it with those
hosts alive (spoofed gmetric-style packets). Then, N times each:
  GET /api/series?cluster=bench&hosts=.*&metric=load_one&start=end-1d&points=600
  rrdtool xport --start end-1d --maxrows 600 DEF/XPORT for every file
Prints median and worst wall times and the answer sizes.

Usage: python3 scripts/bench/dashboard.py [--hosts 1000] [--runs 10]
Needs a release build (cargo build --release) and rrdtool installed.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

from ingest import metadata, value, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REL = os.path.join(ROOT, "target/release")


def timed(f, runs):
    f()  # warm: page cache, first-use allocations
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        size = f()
        out.append(time.perf_counter() - t)
    return out, size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "rrds")
        pre = subprocess.run([os.path.join(REL, "rrd-prefill"), root, "bench", str(a.hosts), "load_one",
                              "86400", "15"], capture_output=True, text=True, check=True)
        print("prefill:", pre.stdout.strip())
        udp, hport = free_port(), free_port()
        conf = os.path.join(tmp, "agg.toml")
        with open(conf, "w") as f:
            f.write('rrd_root = "%s"\nstep_secs = 15\n' % root)
            f.write('[[cluster]]\nname = "bench"\nudp_listen = "127.0.0.1:%d"\nreverse_dns = false\n' % udp)
            f.write('[xml]\ndump_listen = ""\nquery_listen = ""\n[http]\nlisten = "127.0.0.1:%d"\n' % hport)
        agg = subprocess.Popen([os.path.join(REL, "ganglion-aggregator"), "--config", conf],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = "http://127.0.0.1:%d" % hport
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            deadline = time.time() + 30
            while True:
                for h in range(a.hosts):
                    host = "10.%d.%d.%d:host%04d" % (h >> 16, (h >> 8) & 255, h & 255, h)
                    s.sendto(metadata(host, "load_one"), ("127.0.0.1", udp))
                    s.sendto(value(host, "load_one", 1.0 + h % 7), ("127.0.0.1", udp))
                    if h % 200 == 0:
                        time.sleep(0.01)
                try:
                    c = json.load(urllib.request.urlopen(base + "/api/cluster/bench", timeout=10))
                    if c["hosts_up"] >= a.hosts:
                        break
                except OSError:
                    pass
                if time.time() > deadline:
                    raise SystemExit("aggregator did not see %d hosts" % a.hosts)
                time.sleep(0.5)

            url = base + "/api/series?cluster=bench&hosts=.*&metric=load_one&start=end-1d&end=now&points=600"

            def api():
                body = urllib.request.urlopen(url, timeout=60).read()
                return body

            body = api()
            doc = json.loads(body)
            cols, rows = len(doc["columns"]), len(doc["times"])
            nonnull = sum(v is not None for col in doc["values"] for v in col)
            api_t, _ = timed(lambda: len(api()), a.runs)

            files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(root, "bench"))
                           for f in fs if f == "load_one.rrd")
            argv = ["rrdtool", "xport", "--start", "end-1d", "--end", "now", "--maxrows", "600"]
            for i, f in enumerate(files):
                argv += ["DEF:v%d=%s:sum:AVERAGE" % (i, f), "XPORT:v%d:h%d" % (i, i)]

            def xport():
                return len(subprocess.run(argv, capture_output=True, check=True).stdout)

            x_t, x_size = timed(xport, a.runs)
        finally:
            agg.terminate()
            agg.wait(10)
    print("%d hosts x load_one, 1 day, 600 points; %d runs each after one warm-up" % (a.hosts, a.runs))
    print("series API: %d columns x %d rows (%d values with data), %d bytes" % (cols, rows, nonnull, len(body)))
    print("| reader | median ms | worst ms | answer bytes |")
    print("|---|---|---|---|")
    print("| GET /api/series (ganglion-aggregator) | %.1f | %.1f | %d |"
          % (statistics.median(api_t) * 1e3, max(api_t) * 1e3, len(body)))
    print("| rrdtool xport --maxrows 600 (same files) | %.1f | %.1f | %d |"
          % (statistics.median(x_t) * 1e3, max(x_t) * 1e3, x_size))
    print("\nrrdtool xport / series API: %.1fx" % (statistics.median(x_t) / statistics.median(api_t)))


if __name__ == "__main__":
    main()

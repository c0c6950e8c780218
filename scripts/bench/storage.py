#!/usr/bin/env python3
"""RRD storage side by side: real gmetad 3.7.2 vs ganglion-aggregator polling the
same synthetic gmond (H hosts x 30 float metrics, LOCALTIME advancing, values
changing; one listening port per daemon) with the same step and RRAs, over the
same window (both run at once; --apart runs them one after the other). Reported
per daemon: CPU seconds per step and per stored sample, RRD file writes, write
syscalls (syscw) and bytes written (write_bytes) per step from /proc/PID/io, RRD
files.

Usage: python3 scripts/bench/storage.py [--hosts 200] [--step 15] [--warm 30] [--secs 300]

Both daemons have created every file before the window starts (gmetad at its
first poll, the aggregator through POST /api/flush after the warm-up). With the
aggregator's default 300 s flush interval, a 300 s window holds one timed flush,
which is its steady-state rate.
Needs a release build (cargo build --release) and gmetad/rrdtool installed.
Uses small RRAs (RRA:AVERAGE:0.5:1:244 etc.) so thousands of files fit anywhere.
"""
import argparse
import os
import socket
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVED = {}  # polls answered per source port (gmetad writes every file once per poll)
RRAS = ["RRA:AVERAGE:0.5:1:244", "RRA:AVERAGE:0.5:24:244", "RRA:AVERAGE:0.5:168:244"]


def header():
    out = subprocess.run(["python3", "-c", "print(open('%s').read().split('<GANGLIA_XML')[0], end='')"
                          % os.path.join(ROOT, "proto/tests/data/xml/gmond.xml")], capture_output=True, text=True)
    return out.stdout


def serve(port, hosts, hdr, stop):
    SERVED[port] = 0
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    srv.settimeout(0.5)
    names = ["m%02d" % j for j in range(30)]
    while not stop.is_set():
        try:
            c, _ = srv.accept()
        except socket.timeout:
            continue
        now = int(time.time())
        parts = [hdr, '<GANGLIA_XML VERSION="3.7.2" SOURCE="gmond">\n',
                 '<CLUSTER NAME="bench" LOCALTIME="%d" OWNER="o" LATLONG="l" URL="u">\n' % now]
        for i in range(hosts):
            parts.append('<HOST NAME="node%04d" IP="10.0.%d.%d" TAGS="" REPORTED="%d" TN="1" TMAX="20" DMAX="0" '
                         'LOCATION="x" GMOND_STARTED="1">\n' % (i, i >> 8, i & 255, now))
            for j, n in enumerate(names):
                parts.append('<METRIC NAME="%s" VAL="%.2f" TYPE="float" UNITS="u" TN="1" TMAX="60" DMAX="0" '
                             'SLOPE="both">\n<EXTRA_DATA>\n</EXTRA_DATA>\n</METRIC>\n' % (n, (now + i + j) % 100 / 3.0))
            parts.append("</HOST>\n")
        parts.append("</CLUSTER>\n</GANGLIA_XML>\n")
        try:
            c.sendall("".join(parts).encode())
            SERVED[port] += 1
        finally:
            c.close()


def proc_stats(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    io = {}
    with open("/proc/%d/io" % pid) as f:
        for line in f:
            k, v = line.split(":")
            io[k] = int(v)
    # majflt: page faults that waited for the disk (evicted RRD pages read back).
    return cpu, io["syscw"], io["write_bytes"], int(fields[9])


def damon():
    """Whether proactive reclaim (a DAMON pageout scheme) runs: it evicts page
    cache idle for about a minute, so files written once per flush interval are
    read back from disk at the next flush."""
    try:
        with open("/sys/kernel/mm/damon/admin/kdamonds/0/state") as f:
            return f.read().strip()
    except OSError:
        return "absent"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def count(root):
    n = 0
    for _, _, files in os.walk(root):
        n += sum(1 for f in files if f.endswith(".rrd"))
    return n


def run(daemons, warm, secs, perf=None):
    """Steady state: deltas over `secs` after `warm` seconds and each daemon's
    `settle()` (which must leave every file created: creating 6,000 files is a
    one-time cost that does not belong in a per-step figure). Several daemons
    given together are measured over the same window, so both see the same
    machine (this VM's CPU time per unit of work drifts by ±15 % between
    runs minutes apart)."""
    procs = []
    try:
        for d in daemons:
            procs.append(subprocess.Popen(d["argv"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(warm)
        for d in daemons:
            if d.get("settle"):
                d["settle"]()
        before = [(proc_stats(p.pid), d["file_writes"](), d["stored"](), d["read_ahead"]()) for d, p in zip(daemons, procs)]
        # Optional profile of the window (perf's own cost lands in the
        # figures too, so a profiled run is for reading, not for the table).
        prof = None
        if perf:
            agg = [p for d, p in zip(daemons, procs) if d.get("profile")][0]
            prof = subprocess.Popen(["perf", "record", "-F", "999", "--call-graph", "dwarf,16384", "-o", perf, "-p", str(agg.pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(secs)
        if prof:
            prof.send_signal(2)
            prof.wait(120)
        after = [(proc_stats(p.pid), d["file_writes"](), d["stored"](), d["read_ahead"]()) for d, p in zip(daemons, procs)]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(300)
    out = []
    for d, ((c0, sw0, wb0, mf0), fw0, st0, ra0), ((c1, sw1, wb1, mf1), fw1, st1, ra1) in zip(daemons, before, after):
        out.append({"name": d["name"], "cpu": c1 - c0, "syscw": sw1 - sw0, "wbytes": wb1 - wb0, "majflt": mf1 - mf0,
                    "files": count(d["root"]), "file_writes": fw1 - fw0, "stored": st1 - st0,
                    "read_ahead": None if ra0 is None else ra1 - ra0})
    return out


def agg_counter(port, name):
    """A counter from the aggregator's /metrics."""
    def read():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
            for line in data.decode().splitlines():
                if line.startswith(name + " "):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0
    return read


def agg_flush(port):
    """POST /api/flush: the aggregator writes every file now. Both daemons
    create a file at its first sample (ours at most 256 per turn of its
    writer's loop); the flush makes sure every file exists and holds the
    warm-up's samples before the window, so creation stays out of it."""
    def settle():
        s = socket.create_connection(("127.0.0.1", port), timeout=120)
        s.sendall(b"POST /api/flush HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        reply = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            reply += b
        if b" 200 " not in reply.split(b"\r\n", 1)[0]:
            raise SystemExit("aggregator flush failed: %r" % reply[:200])
    return settle


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--step", type=int, default=15)
    ap.add_argument("--secs", type=int, default=300, help="measured window (after warm-up)")
    ap.add_argument("--warm", type=int, default=30)
    ap.add_argument("--flush", type=int, help="aggregator's flush_interval_secs (default: its own, 300); "
                    "choose --secs as a multiple of it")
    ap.add_argument("--only", choices=["gmetad", "ours"], help="run one daemon (no ratio line)")
    ap.add_argument("--perf", metavar="FILE", help="perf record the aggregator over the window into FILE")
    ap.add_argument("--apart", action="store_true",
                    help="measure the two daemons one after the other instead of over the same window")
    a = ap.parse_args()
    stop = threading.Event()
    # One source port per daemon, so each one's polls are counted apart.
    src, src_o = free_port(), free_port()
    for port in (src, src_o):
        threading.Thread(target=serve, args=(port, a.hosts, header(), stop), daemon=True).start()
    daemons = []
    with tempfile.TemporaryDirectory() as tmp:
        g_root = os.path.join(tmp, "gmetad")
        os.mkdir(g_root)
        conf = os.path.join(tmp, "gmetad.conf")
        with open(conf, "w") as f:
            f.write('data_source "bench" %d 127.0.0.1:%d\n' % (a.step, src))
            f.write("xml_port %d\ninteractive_port %d\n" % (free_port(), free_port()))
            f.write('rrd_rootdir "%s"\nsetuid off\nRRAs %s\n' % (g_root, " ".join('"%s"' % r for r in RRAS)))
        # gmetad writes every file once per poll: count polls from the source side.
        # Its polls drift a little from the step (19 or 21 in 20 steps), so
        # CPU is also given per sample actually stored.
        if a.only != "ours":
            per_poll = lambda: SERVED[src] * (a.hosts * 30 + 60)
            daemons.append({"name": "gmetad 3.7.2", "argv": ["gmetad", "-d", "1", "-c", conf], "root": g_root,
                            "file_writes": per_poll, "stored": per_poll, "read_ahead": lambda: None})

        o_root = os.path.join(tmp, "ours")
        aconf = os.path.join(tmp, "agg.toml")
        with open(aconf, "w") as f:
            f.write('rrd_root = "%s"\nstep_secs = %d\nrras = [%s]\n' % (o_root, a.step, ", ".join('"%s"' % r for r in RRAS)))
            f.write('[storage]\n')  # defaults: flush every 300 s, journal on
            if a.flush:
                f.write('flush_interval_secs = %d\n' % a.flush)
            f.write('[[data_source]]\nname = "bench"\npoll_secs = %d\naddresses = ["127.0.0.1:%d"]\n' % (a.step, src_o))
            hport = free_port()
            f.write('[xml]\ndump_listen = ""\nquery_listen = ""\n[http]\nlisten = "127.0.0.1:%d"\n' % hport)
        agg = os.path.join(ROOT, "target/release/ganglion-aggregator")
        if a.only != "gmetad":
            daemons.append({"name": "ganglion-aggregator", "argv": [agg, "--config", aconf], "root": o_root,
                            "file_writes": agg_counter(hport, "ganglion_rrd_file_writes_total"),
                            "stored": agg_counter(hport, "ganglion_rrd_samples_total"),
                            # Files a flush found evicted from the page cache.
                            "read_ahead": agg_counter(hport, "ganglion_rrd_files_read_ahead_total"),
                            "settle": agg_flush(hport), "profile": True})
        if a.apart:
            results = [r for d in daemons for r in run([d], a.warm, a.secs, a.perf if d.get("profile") else None)]
        else:
            results = run(daemons, a.warm, a.secs, a.perf)
    stop.set()
    steps = a.secs / a.step
    print("%d hosts x 30 metrics (%d host files + summaries), step %d s, %d s each, small RRAs, DAMON %s"
          % (a.hosts, a.hosts * 30, a.step, a.secs, damon()))
    print("| daemon | RRD files | CPU s per step | CPU µs per stored sample | RRD file writes per step | write syscalls per step | bytes written per step | page faults from disk per step | files found evicted per step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        evicted = "n/a" if r["read_ahead"] is None else "%.0f" % (r["read_ahead"] / steps)
        print("| %s | %d | %.3f | %.2f | %.0f | %.0f | %.0f | %.0f | %s |" % (
            r["name"], r["files"], r["cpu"] / steps, r["cpu"] / max(r["stored"], 1) * 1e6,
            r["file_writes"] / steps, r["syscw"] / steps, r["wbytes"] / steps, r["majflt"] / steps, evicted))
    if len(results) < 2:
        return
    g, o = results
    def ratio(k, per_sample=True):
        # gmetad's figure over ours (n/a when ours did none in the window).
        gv, ov = g[k], o[k]
        if per_sample:
            gv, ov = gv / max(g["stored"], 1), ov / max(o["stored"], 1)
        return "%.1fx" % (gv / ov) if ov else "n/a"
    print("\ngmetad / ganglion, per stored sample: CPU %s, RRD file writes %s, bytes written %s (per step: CPU %s)"
          % (ratio("cpu"), ratio("file_writes"), ratio("wbytes"), ratio("cpu", False)))


if __name__ == "__main__":
    main()

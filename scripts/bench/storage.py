#!/usr/bin/env python3
"""RRD storage side by side: real gmetad 3.7.2 vs ganglion-aggregator polling the
same synthetic gmond (H hosts x 30 float metrics, LOCALTIME advancing, values
changing) with the same step and RRAs, for the same wall time. Reported per
daemon: CPU seconds per step, write syscalls (syscw) and bytes written
(write_bytes) per step from /proc/PID/io, RRD files and samples stored.

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
SERVED = [0]  # polls answered (gmetad writes every file once per poll)
RRAS = ["RRA:AVERAGE:0.5:1:244", "RRA:AVERAGE:0.5:24:244", "RRA:AVERAGE:0.5:168:244"]


def header():
    out = subprocess.run(["python3", "-c", "print(open('%s').read().split('<GANGLIA_XML')[0], end='')"
                          % os.path.join(ROOT, "proto/tests/data/xml/gmond.xml")], capture_output=True, text=True)
    return out.stdout


def serve(port, hosts, hdr, stop):
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
            SERVED[0] += 1
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
    return cpu, io["syscw"], io["write_bytes"]


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


def run(name, argv, root, warm, secs, file_writes, settle=None, perf=None):
    """Steady state: deltas over `secs` after `warm` seconds and `settle()`
    (which must leave every file created: creating 6,000 files is a one-time
    cost that does not belong in a per-step figure)."""
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(warm)
        if settle:
            settle()
        cpu0, syscw0, wb0 = proc_stats(p.pid)
        fw0 = file_writes()
        # Optional profile of the window (perf's own cost lands in the
        # figures too, so a profiled run is for reading, not for the table).
        prof = None
        if perf:
            prof = subprocess.Popen(["perf", "record", "-F", "999", "--call-graph", "dwarf,16384", "-o", perf, "-p", str(p.pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(secs)
        if prof:
            prof.send_signal(2)
            prof.wait(120)
        cpu1, syscw1, wb1 = proc_stats(p.pid)
        fw1 = file_writes()
    finally:
        p.terminate()
        p.wait(300)
    return {"name": name, "cpu": cpu1 - cpu0, "syscw": syscw1 - syscw0, "wbytes": wb1 - wb0,
            "files": count(root), "file_writes": fw1 - fw0}


def agg_file_writes(port):
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
                if line.startswith("ganglion_rrd_file_writes_total "):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0
    return read


def agg_flush(port):
    """POST /api/flush: the aggregator writes (and so creates) every file now.
    gmetad creates its files at its first poll, inside the warm-up; ours would
    otherwise create them at the first timed flush, inside the window."""
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
    a = ap.parse_args()
    stop = threading.Event()
    src = free_port()
    threading.Thread(target=serve, args=(src, a.hosts, header(), stop), daemon=True).start()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        g_root = os.path.join(tmp, "gmetad")
        os.mkdir(g_root)
        conf = os.path.join(tmp, "gmetad.conf")
        with open(conf, "w") as f:
            f.write('data_source "bench" %d 127.0.0.1:%d\n' % (a.step, src))
            f.write("xml_port %d\ninteractive_port %d\n" % (free_port(), free_port()))
            f.write('rrd_rootdir "%s"\nsetuid off\nRRAs %s\n' % (g_root, " ".join('"%s"' % r for r in RRAS)))
        # gmetad writes every file once per poll: count polls from the source side.
        if a.only != "ours":
            results.append(run("gmetad 3.7.2", ["gmetad", "-d", "1", "-c", conf], g_root, a.warm, a.secs,
                               lambda: SERVED[0] * (a.hosts * 30 + 60)))

        o_root = os.path.join(tmp, "ours")
        aconf = os.path.join(tmp, "agg.toml")
        with open(aconf, "w") as f:
            f.write('rrd_root = "%s"\nstep_secs = %d\nrras = [%s]\n' % (o_root, a.step, ", ".join('"%s"' % r for r in RRAS)))
            f.write('[storage]\n')  # defaults: flush every 300 s, journal on
            if a.flush:
                f.write('flush_interval_secs = %d\n' % a.flush)
            f.write('[[data_source]]\nname = "bench"\npoll_secs = %d\naddresses = ["127.0.0.1:%d"]\n' % (a.step, src))
            hport = free_port()
            f.write('[xml]\ndump_listen = ""\nquery_listen = ""\n[http]\nlisten = "127.0.0.1:%d"\n' % hport)
        agg = os.path.join(ROOT, "target/release/ganglion-aggregator")
        if a.only != "gmetad":
            results.append(run("ganglion-aggregator", [agg, "--config", aconf], o_root, a.warm, a.secs,
                               agg_file_writes(hport), agg_flush(hport), a.perf))
    stop.set()
    steps = a.secs / a.step
    print("%d hosts x 30 metrics (%d host files + summaries), step %d s, %d s each, small RRAs"
          % (a.hosts, a.hosts * 30, a.step, a.secs))
    print("| daemon | RRD files | CPU s per step | RRD file writes per step | write syscalls per step | bytes written per step |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print("| %s | %d | %.3f | %.0f | %.0f | %.0f |" % (r["name"], r["files"], r["cpu"] / steps, r["file_writes"] / steps,
              r["syscw"] / steps, r["wbytes"] / steps))
    if len(results) < 2:
        return
    g, o = results
    print("\ngmetad / ganglion: CPU %.1fx, RRD file writes %.1fx, bytes written %.1fx"
          % (g["cpu"] / max(o["cpu"], 1e-9), g["file_writes"] / max(o["file_writes"], 1), g["wbytes"] / max(o["wbytes"], 1)))


if __name__ == "__main__":
    main()

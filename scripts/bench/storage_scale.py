#!/usr/bin/env python3
"""RRD storage at scale (issue #5): how many metrics per step each daemon stores
without falling behind, and whether ganglion-aggregator stores 1,000,000 metrics
per 15 s step (about 67k samples/s) with zero loss on this machine.

Part A (--hosts): ganglion-aggregator fed over UDP. H spoofed hosts x M float
metrics (ingest.py's encoder): metadata once, then one round of value packets
per step, every value in round k equal to k, paced by `udp-blast` over a few
seconds placed between two sampler ticks (the tick phase is read from the first
RRD file). Warm-up: until every file exists and one full flush pass has run
after that. Then a measured window of --steps steps: aggregator CPU (utime +
stime) per step, peak RSS, the ganglion_rrd_* counters, datagrams sent /
received / dropped by the kernel (/proc/net/udp). Then SIGTERM (the writer
drains its cache) and a loss check with `rrdtool fetch` on --verify-files
random host files plus some summaries (or every file with --verify-all, via
rrd-export): every step of the window must have a value, and a host file's
value must be the one the harness sent (round k), so a missing or stale
sample shows even where the 8-step heartbeat would hide it as interpolation.
Several H (--hosts 8000,16000,33334) run one after another until one fails.

Part B (--gmetad-hosts): real gmetad 3.7.2 polling storage.py's synthetic gmond
(H hosts x 30 float metrics) every step, with the same tiny RRAs, at each H in
turn. Sustained = the source is polled about once per step (gmetad sleeps
step +/- 5 % minus the time the poll took, so a poll that takes longer than a
step stretches the cycle), no two polls more than 1.5 steps apart, and no
sampled file's last update older than two steps. Reported: CPU per step and
per poll, poll interval, lag, gaps.

Usage:
  python3 scripts/bench/storage_scale.py --hosts 2000 --metrics 10 --steps 8 --flush 60
  python3 scripts/bench/storage_scale.py --hosts 33334 --metrics 30 --steps 40   # 1,000,020 metrics
  python3 scripts/bench/storage_scale.py --hosts 8000,16000,33334                # largest H
  python3 scripts/bench/storage_scale.py --gmetad-hosts 500,1000,2000,4000
Needs: cargo build --release -p ganglion-aggregator -p rrd-export and
cargo build --release -p ganglion-tests --bin udp-blast (binaries are looked
up next to --agg, by default $CARGO_TARGET_DIR or <repo>/target, release),
rrdtool, and gmetad for part B. Choose --steps as a multiple of
--flush / --step so the window holds whole flush passes. Disk: about 4 KB and
one inode per file (--workdir, default the system temp directory).
Every daemon it starts is stopped by PID, and its temporary directories are
removed, also on Ctrl-C and errors.
"""
import argparse
import csv
import io
import math
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the checkout
import ingest  # noqa: E402  XDR packet encoders, /proc readers
import storage  # noqa: E402  synthetic gmond XML source

CLUSTER = "bench"
SUMMARY = "__SummaryInfo__"
PORTS = range(20000, 32000)  # below the ephemeral range (see tests/src/lib.rs)
LEAD = 3.0  # seconds after a tick's (integer) timestamp before a round is sent
TOL = 0.15  # a sample one round off moves a row by >= 0.5; a tick 1 s late by 1/step


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# -- everything started is stopped by PID, every temp dir removed --------------

class Cleanup:
    def __init__(self):
        self.procs, self.dirs, self.events = [], [], []

    def spawn(self, argv, **kw):
        # Own session: a terminal Ctrl-C reaches only this script, which then
        # stops its children itself, in order.
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, timeout=10.0):
        if p.poll() is None:
            try:
                p.terminate()
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def mkdtemp(self, parent, prefix):
        d = tempfile.mkdtemp(prefix=prefix, dir=parent)
        self.dirs.append(d)
        return d

    def rmtree(self, d):
        shutil.rmtree(d, ignore_errors=True)
        if d in self.dirs:
            self.dirs.remove(d)

    def all(self):
        for e in self.events:
            e.set()
        for p in list(reversed(self.procs)):
            self.stop(p)
        for d in list(self.dirs):
            self.rmtree(d)


def _exit_on_signal(signum, _frame):
    raise SystemExit(128 + signum)


class Ports:
    """Loopback ports from a per-process sequence below the ephemeral range."""

    def __init__(self):
        self.i = os.getpid() * 7919 % len(PORTS)

    @staticmethod
    def _free(port, kind):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def take(self, udp=False):
        for _ in range(len(PORTS)):
            p = PORTS[self.i % len(PORTS)]
            self.i += 1
            if self._free(p, socket.SOCK_STREAM) and (not udp or self._free(p, socket.SOCK_DGRAM)):
                return p
        raise SystemExit("no free loopback port in %s" % PORTS)


# -- small readers ---------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(port, method, path, timeout=30.0):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method)
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def scrape(port):
    """The aggregator's /metrics as {name or name{labels}: value}."""
    _, body = http(port, "GET", "/metrics", timeout=120)
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def write_errors(m):
    return sum(v for k, v in m.items() if k.startswith("ganglion_rrd_write_errors_total"))


def mem_kb(pid):
    """(VmRSS, VmHWM) in KB."""
    got = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                got[k] = int(v.split()[0])
    return got.get("VmRSS", 0), got.get("VmHWM", 0)


def thread_cpu(pid):
    """CPU seconds per thread name (threads that already exited are not listed)."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def self_cpu():
    t = os.times()
    return t.user + t.system


def udp_rcvbuf(port):
    """The socket's effective receive buffer (bytes, from `ss`), or None."""
    try:
        out = subprocess.run(["ss", "-Hulnm", "sport = :%d" % port], capture_output=True, text=True).stdout
    except OSError:
        return None
    i = out.find(",rb")
    return int(out[i + 3:].split(",")[0]) if i >= 0 else None


def count_rrds(root):
    n = 0
    for _, _, files in os.walk(root):
        n += sum(1 for f in files if f.endswith(".rrd"))
    return n


def rrd_last(path):
    out = subprocess.run(["rrdtool", "last", path], capture_output=True, text=True)
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip().isdigit() else None


def rrd_fetch(path, step, start, end):
    """{timestamp: [values]} of the rows ending in (start, end]; None if unreadable."""
    out = subprocess.run(["rrdtool", "fetch", path, "AVERAGE", "-r", str(step), "-s", str(start), "-e", str(end)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None
    rows = {}
    for line in out.stdout.splitlines():
        t, sep, vals = line.partition(":")
        if sep and t.strip().isdigit():
            rows[int(t)] = [float(v) for v in vals.split()]  # float("-nan") is nan
    return rows


def check_disk(path, files, extra_bytes=0):
    st = os.statvfs(path)
    need_bytes, need_inodes = files * 4096 * 1.2 + extra_bytes + (1 << 30), files * 1.1 + 1000
    if st.f_bavail * st.f_frsize < need_bytes or st.f_favail < need_inodes:
        raise SystemExit("%s: not enough room for %d RRD files (need ~%.1f GB and %d inodes, have %.1f GB and %d)"
                         % (path, files, need_bytes / 1e9, need_inodes, st.f_bavail * st.f_frsize / 1e9, st.f_favail))


def default_bin_dir():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    return os.path.join(target, "release")


# -- part A: ganglion-aggregator, UDP-fed ---------------------------------------

def host_ids(h):
    return ["10.%d.%d.%d:node%06d" % (i >> 16 & 255, i >> 8 & 255, i & 255, i) for i in range(h)]


def host_name(i):
    return "node%06d" % i


def metric_names(m):
    w = max(2, len(str(m - 1)))
    return ["m%0*d" % (w, j) for j in range(m)]


def write_metadata(path, hosts, names):
    with open(path, "wb") as f:
        buf = []
        for h in hosts:
            for n in names:
                p = ingest.metadata(h, n)
                buf.append(struct.pack(">I", len(p)) + p)
            if len(buf) >= 100000:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))


class Rounds:
    """udp-blast files of value packets whose float is the round number; the
    packets are encoded once and the 4 value bytes joined in per round."""

    def __init__(self, hosts, names, pkt_dir):
        parts = []
        for h in hosts:
            for n in names:
                p = ingest.value(h, n, 0.0)[:-4]
                parts.append(struct.pack(">I", len(p) + 4) + p)
        parts.append(b"")
        self.parts, self.n = parts, len(parts) - 1
        self.paths = [os.path.join(pkt_dir, "values%d.bin" % i) for i in (0, 1)]
        self.sent = []  # (round value, send start, send end, datagrams)

    def write(self, value):
        # Two files in turn: the previous sender may still be reading its own.
        path = self.paths[int(value) % 2]
        with open(path, "wb") as f:
            f.write(struct.pack(">f", value).join(self.parts))
        return path

    def value_at(self, tick):
        """The round a sample taken at `tick` (integer seconds; the tick itself
        is in [tick, tick + 1)) holds, or None when a round was still being
        sent then (or the harness does not know)."""
        best = None
        for value, t0, t1, _ in self.sent:
            if t0 < tick + 1.0 and t1 + 0.5 > tick:
                return None
            if t1 + 0.5 <= tick:
                best = value
        return best


def agg_config(tmp, a, hosts, udp_port, http_port, rows):
    path = os.path.join(tmp, "agg.toml")
    with open(path, "w") as f:
        f.write('grid_name = "scale"\nrrd_root = "%s"\nstep_secs = %d\nrras = ["RRA:AVERAGE:0.5:1:%d"]\n'
                % (os.path.join(tmp, "rrds"), a.step, rows))
        f.write('[[cluster]]\nname = "%s"\nudp_listen = "127.0.0.1:%d"\nxml_listen = ""\nreverse_dns = false\n'
                'recv_buffer_bytes = %d\n' % (CLUSTER, udp_port, a.recv_buffer))
        f.write('[xml]\ndump_listen = ""\nquery_listen = ""\n[http]\nlisten = "127.0.0.1:%d"\n' % http_port)
        f.write('[storage]\nflush_interval_secs = %d\n' % a.flush)
        f.write('[limits]\nmax_hosts_per_cluster = %d\n' % max(100000, hosts + 10))
        if getattr(a, "vm_port", None):
            # --forward-vm: every metric also goes to VictoriaMetrics by remote write.
            f.write('[[forward]]\nname = "vm"\nkind = "remote_write"\n'
                    'url = "http://127.0.0.1:%d/api/v1/write"\n' % a.vm_port)
    return path


def blast(cl, exe, path, port, pps):
    p = cl.spawn([exe, path, "127.0.0.1:%d" % port, "1", "%d" % max(1, pps)],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p


def blast_wait(cl, p):
    out, err = p.communicate()
    cl.procs.remove(p)
    if p.returncode != 0:
        raise SystemExit("udp-blast failed: %s" % err.strip())
    kv = dict(x.split("=") for x in out.split())
    return int(kv["sent"])


def log_tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def log_problems(path):
    """WARN/ERROR lines of the aggregator's log (count, first few)."""
    lines = []
    try:
        with open(path, errors="replace") as f:
            lines = [x.rstrip() for x in f if " WARN " in x or " ERROR " in x]
    except OSError:
        pass
    return len(lines), lines[:5]


def expected_row(rounds, t, step, tick0):
    """The value rrdtool should show for the row ending at t of a host file:
    the time-weighted mix of the samples at the tick inside (t - step, t] and
    the next one (a GAUGE update covers the time since the previous one)."""
    tick = tick0 + (t - tick0) // step * step
    phi = tick - (t - step)
    v0, v1 = rounds.value_at(tick), rounds.value_at(tick + step)
    if v0 is None or v1 is None:
        return None
    return (phi * v0 + (step - phi) * v1) / step


def verify_series(rows, want_ts, expect):
    """(rows without a value, host rows whose value is not the round sent,
    host rows compared with the round sent)."""
    gaps = bad = compared = 0
    for t in want_ts:
        v = rows.get(t)
        if v is None or any(math.isnan(x) for x in v):
            gaps += 1
        elif expect is not None:
            e = expect(t)
            if e is not None:
                compared += 1
                bad += abs(v[0] - e) > TOL
    return gaps, bad, compared


def verify_sample(a, root, hosts, names, want_ts, expect):
    """rrdtool fetch on --verify-files random host files and up to 10 summaries."""
    rnd = random.Random(a.seed)
    picks = set()
    total = hosts * len(names)
    while len(picks) < min(a.verify_files, total):
        picks.add((rnd.randrange(hosts), rnd.randrange(len(names))))
    files = [(os.path.join(root, CLUSTER, host_name(i), names[j] + ".rrd"), True) for i, j in sorted(picks)]
    for n in rnd.sample(names, min(5, len(names))):
        files.append((os.path.join(root, CLUSTER, SUMMARY, n + ".rrd"), False))
        files.append((os.path.join(root, SUMMARY, n + ".rrd"), False))
    lo, hi = min(want_ts) - a.step, max(want_ts)
    missing = gaps = bad = gap_files = bad_files = compared = 0
    for path, is_host in files:
        rows = rrd_fetch(path, a.step, lo, hi) if os.path.exists(path) else None
        if rows is None:
            missing += 1
            continue
        g, b, c = verify_series(rows, want_ts, expect if is_host else None)
        gaps, bad, compared = gaps + g, bad + b, compared + c
        gap_files, bad_files = gap_files + (g > 0), bad_files + (b > 0)
    return {"checked": len(files), "missing": missing, "gaps": gaps, "bad": bad, "compared": compared,
            "gap_files": gap_files, "bad_files": bad_files}


def verify_all(a, root, hosts, want_ts, expect):
    """Every file, through rrd-export (1000 hosts per run, then the summaries)."""
    exe = a.rrd_export or os.path.join(os.path.dirname(a.agg), "rrd-export")
    lo, hi = min(want_ts) - a.step, max(want_ts)
    base = ["--root", root, "-s", str(lo), "-e", str(hi), "-r", str(a.step)]
    runs = [(["--cluster", CLUSTER, "--host", "node%03d*" % c], True) for c in range((hosts + 999) // 1000)]
    runs.append((["--summary"], False))
    checked = gaps = bad = gap_files = bad_files = compared = 0
    for sel, hosts_run in runs:
        out = subprocess.run([exe] + sel + base, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit("rrd-export %s failed: %s" % (" ".join(sel), out.stderr.strip()))
        table = list(csv.reader(io.StringIO(out.stdout)))
        head, body = table[0], table[1:]
        ts = [int(r[0]) for r in body]
        series = {}  # file -> its columns (a summary has sum and num)
        for c in range(1, len(head)):
            series.setdefault(head[c] if hosts_run else head[c].rsplit(":", 1)[0], []).append(c)
        for cols in series.values():
            rows = {t: [float(r[c]) for c in cols] for t, r in zip(ts, body)}
            g, b, cmp = verify_series(rows, want_ts, expect if hosts_run else None)
            checked += 1
            gaps, bad, compared = gaps + g, bad + b, compared + cmp
            gap_files, bad_files = gap_files + (g > 0), bad_files + (b > 0)
    return {"checked": checked, "missing": None, "gaps": gaps, "bad": bad, "compared": compared,
            "gap_files": gap_files, "bad_files": bad_files}


def run_ours(a, hosts, cl, ports):
    names = metric_names(a.metrics)
    host_files = hosts * a.metrics
    files = host_files + 2 * a.metrics  # + cluster and grid summaries
    rows = a.rows or max(40, a.steps + 20)
    tmp = cl.mkdtemp(a.workdir, "storage-scale-ours-")
    # The journal holds a flush interval of samples, about 100 bytes each.
    check_disk(tmp, files, files * 100 * (a.flush // a.step + 2))
    # Packet files (metadata ~150 B and values ~60 B a datagram, two value
    # files) in memory when /dev/shm has room, so they add no disk writes.
    shm, pkt_bytes = "/dev/shm", host_files * 300
    use_shm = os.path.isdir(shm) and os.access(shm, os.W_OK) and \
        os.statvfs(shm).f_bavail * os.statvfs(shm).f_frsize > 2 * pkt_bytes
    pkt_dir = cl.mkdtemp(shm, "storage-scale-pkts-") if use_shm else tmp
    rrd_root = os.path.join(tmp, "rrds")
    udp_port, http_port = ports.take(udp=True), ports.take()
    if a.forward_vm:
        import forward as fwd_bench  # noqa: E402  (its VictoriaMetrics starter)
        _vm, a.vm_port = fwd_bench.start_vm(cl, ports, a.workdir)
    conf = agg_config(tmp, a, hosts, udp_port, http_port, rows)
    blast_exe = a.blast or os.path.join(os.path.dirname(a.agg), "udp-blast")
    for exe in (a.agg, blast_exe):
        if not os.access(exe, os.X_OK):
            raise SystemExit("%s not found: build it (see --help)" % exe)

    log("part A: %d hosts x %d metrics = %d metrics, %d files; encoding packets" % (hosts, a.metrics, host_files, files))
    ids = host_ids(hosts)
    meta_path = os.path.join(pkt_dir, "meta.bin")
    write_metadata(meta_path, ids, names)
    rounds = Rounds(ids, names, pkt_dir)
    del ids
    pace = a.pace or max(1.0, a.step - LEAD - 2.0)
    pps = rounds.n / pace

    agg_log = os.path.join(tmp, "aggregator.log")
    with open(agg_log, "w") as lf:
        agg = cl.spawn([a.agg, "--config", conf], stdin=subprocess.DEVNULL, stdout=lf, stderr=lf)
    log("started ganglion-aggregator pid %d (udp %d, http %d), data in %s" % (agg.pid, udp_port, http_port, tmp))
    rcvbuf = None

    def alive():
        if agg.poll() is not None:
            raise SystemExit("aggregator exited (%s):\n%s" % (agg.returncode, log_tail(agg_log)))

    deadline = time.time() + 30
    while True:
        alive()
        try:
            scrape(http_port)
            rcvbuf = udp_rcvbuf(udp_port)
            break
        except OSError:
            if time.time() > deadline:
                raise SystemExit("aggregator HTTP did not answer:\n" + log_tail(agg_log))
            time.sleep(0.2)

    value = [0.0]

    def send_round(start_at=None):
        value[0] += 1
        path = rounds.write(value[0])
        if start_at is not None:
            time.sleep(max(0.0, start_at - time.time()))
        t0 = time.time()
        sent = blast_wait(cl, blast(cl, blast_exe, path, udp_port, pps))
        t1 = time.time()
        rounds.sent.append((value[0], t0, t1, sent))
        if start_at is not None and t1 > start_at - LEAD + a.step - 1.0:
            log("warning: round %d took %.1f s to send (pace %.1f s): the sender cannot keep up"
                % (value[0], t1 - t0, pace))
        return sent

    # Metadata once (paced: metadata is the expensive message), then values;
    # resend metadata if the aggregator holds fewer metrics than were sent.
    held = 0
    for attempt in range(3):
        rate = a.meta_pps / (2 ** attempt)
        log("metadata: %d packets at %d/s" % (rounds.n, rate))
        blast_wait(cl, blast(cl, blast_exe, meta_path, udp_port, rate))
        send_round()
        time.sleep(1.0)
        alive()
        held = int(scrape(http_port).get('ganglion_metrics{cluster="%s"}' % CLUSTER, 0))
        if held >= host_files:
            break
        log("aggregator holds %d of %d metrics; resending metadata" % (held, host_files))
    if held < host_files:
        raise SystemExit("aggregator holds only %d of %d metrics after 3 metadata rounds" % (held, host_files))

    # Sampler phase: flush one host file (a reader's flush creates it), read its
    # last update. Ticks are then tick0 + k * step (integer seconds).
    probe = os.path.join(rrd_root, CLUSTER, host_name(0), names[0] + ".rrd")
    query = "/api/series?cluster=%s&host=%s&metric=%s&start=end-10min" % (CLUSTER, host_name(0), names[0])
    deadline = time.time() + 3 * a.step + 60
    while not os.path.exists(probe):
        alive()
        if time.time() > deadline:
            raise SystemExit("no RRD file after %d s:\n%s" % (3 * a.step + 60, log_tail(agg_log)))
        http(http_port, "GET", query, timeout=120)
        time.sleep(1.0)
    tick0 = rrd_last(probe)
    log("sampler ticks at %d + k x %d" % (tick0, a.step))

    def next_slot():
        """Start of the next send slot: LEAD s after a tick's timestamp."""
        now = time.time() + 0.5
        k = math.ceil((now - LEAD - tick0) / a.step)
        return tick0 + k * a.step + LEAD

    # Warm-up: create every file now (one reader flush of the whole cache)
    # rather than at the first periodic flush; then wait for a full periodic
    # flush pass after the last file was created.
    threading.Thread(target=lambda: http(http_port, "POST", "/api/flush", timeout=60), daemon=True).start()
    t_warm = time.time()
    fw_created = None
    last_created = -1
    while True:
        send_round(next_slot())
        alive()
        m = scrape(http_port)
        created, fw = m.get("ganglion_rrd_files_created_total", 0), m.get("ganglion_rrd_file_writes_total", 0)
        if fw_created is None and created >= files and created == last_created:
            fw_created = fw
            log("all %d files created after %.0f s; waiting for a full flush pass" % (created, time.time() - t_warm))
        last_created = created
        if fw_created is not None and fw - fw_created >= files:
            break
        if time.time() - t_warm > a.warm_max:
            raise SystemExit("warm-up not done after %d s: %d of %d files created, %d file writes since"
                             % (a.warm_max, created, files, fw - (fw_created or fw)))
        log("warm-up: %d/%d files created, %d file writes" % (created, files, fw))
    warm_secs = time.time() - t_warm

    # Measured window: from just after round j was sent to just after round
    # j + steps; ticks j+1 .. j+steps fall inside. /metrics is read outside the
    # CPU deltas (it builds a snapshot).
    m0 = scrape(http_port)
    drops0, cpu0, th0 = ingest.udp_drops(udp_port), ingest.cpu_secs(agg.pid), thread_cpu(agg.pid)
    _, syscw0, wbytes0, majflt0 = storage.proc_stats(agg.pid)
    journal_max = 0
    sent0, t0 = sum(r[3] for r in rounds.sent), time.time()
    first_round = len(rounds.sent)
    log("measuring %d steps" % a.steps)
    for _ in range(a.steps):
        send_round(next_slot())
        alive()
        # The current journal plus any set aside by a flush pass in progress.
        journal_max = max(journal_max, sum(os.path.getsize(os.path.join(rrd_root, f))
                                           for f in os.listdir(rrd_root) if f.startswith(".ganglion-journal")))
    cpu1, drops1, t1, th1 = ingest.cpu_secs(agg.pid), ingest.udp_drops(udp_port), time.time(), thread_cpu(agg.pid)
    _, syscw1, wbytes1, majflt1 = storage.proc_stats(agg.pid)
    rss, hwm = mem_kb(agg.pid)
    c = ingest.cpu_secs(agg.pid)
    m1 = scrape(http_port)
    scrape_cpu = ingest.cpu_secs(agg.pid) - c
    # Did the sampler keep its phase? (A reader's flush of one file, then its last update.)
    http(http_port, "GET", query, timeout=120)
    drift = ((rrd_last(probe) or tick0) - tick0) % a.step
    if drift:
        log("warning: the sampler's ticks moved by %d s during the run" % drift)
    sent = sum(r[3] for r in rounds.sent) - sent0
    window = rounds.sent[first_round:]
    first_tick = tick0 + math.ceil((window[0][1] - tick0) / a.step) * a.step  # first tick after round j+1 went out
    last_tick = tick0 + math.floor((window[-1][2] - tick0) / a.step) * a.step + a.step  # sampled round j+steps

    # The tick that samples the last round has to happen before the stop.
    time.sleep(max(0.0, last_tick + 1.0 - time.time()))
    deadline = time.time() + a.step
    while scrape(http_port).get("ganglion_rrd_samples_total", 0) < m1.get("ganglion_rrd_samples_total", 0) + files:
        if time.time() > deadline:
            log("warning: the sampler did not submit the tick at %d within a step" % last_tick)
            break
        time.sleep(0.5)
    # Drain: SIGTERM makes the writer write everything cached.
    log("stopping the aggregator (SIGTERM; the writer drains its cache)")
    t_stop = time.time()
    agg.terminate()
    try:
        agg.wait(a.drain_timeout)
    except subprocess.TimeoutExpired:
        log("aggregator still draining after %d s; killing it" % a.drain_timeout)
        agg.kill()
        agg.wait()
    drain = time.time() - t_stop
    cl.procs.remove(agg)
    exit_code = agg.returncode

    # Rows whose PDP mixes two samples both taken inside the window.
    want_ts = [t for t in range(first_tick - first_tick % a.step, last_tick + 1, a.step)
               if first_tick <= t < last_tick]
    n_files = count_rrds(rrd_root)
    log("verifying %d rows x %s files" % (len(want_ts), "all" if a.verify_all else a.verify_files))

    def expect(t):
        return expected_row(rounds, t, a.step, tick0)

    if a.verify_all:
        ver = verify_all(a, rrd_root, hosts, want_ts, expect)
    else:
        ver = verify_sample(a, rrd_root, hosts, names, want_ts, expect)
    problems, first_problems = log_problems(agg_log)

    steps = (t1 - t0) / a.step
    d = {k: m1.get(k, 0) - m0.get(k, 0) for k in set(m0) | set(m1)}
    r = {
        "hosts": hosts, "metrics": host_files, "files": n_files, "expected_files": files,
        "cpu_step": (cpu1 - cpu0) / steps, "rss_mb": rss / 1024, "hwm_mb": hwm / 1024,
        "accepted_step": d.get("ganglion_rrd_samples_total", 0) / a.steps,
        "written_step": d.get("ganglion_rrd_samples_written_total", 0) / a.steps,
        "file_writes_step": d.get("ganglion_rrd_file_writes_total", 0) / a.steps,
        "dropped_batches": d.get("ganglion_rrd_dropped_batches_total", 0),
        "discarded": d.get("ganglion_rrd_samples_discarded_total", 0),
        "write_errors": write_errors(m1) - write_errors(m0),
        "backlog_steps": (m1.get("ganglion_rrd_samples_total", 0) - m1.get("ganglion_rrd_samples_written_total", 0)
                          - m1.get("ganglion_rrd_samples_discarded_total", 0)) / files,
        "sent": sent, "received": d.get("ganglion_udp_datagrams_total", 0), "udp_drops": drops1 - drops0,
        "drain": drain, "exit": exit_code, "warm": warm_secs, "steps": steps, "rows": len(want_ts),
        "verify": ver, "log_problems": problems, "first_problems": first_problems,
        "dropped_warm": m0.get("ganglion_rrd_dropped_batches_total", 0),
        "scrape_cpu": scrape_cpu, "drift": drift, "rcvbuf": rcvbuf, "journal_max": journal_max,
        "wbytes_step": (wbytes1 - wbytes0) / steps, "syscw_step": (syscw1 - syscw0) / steps,
        "majflt_step": (majflt1 - majflt0) / steps,
        "read_ahead_step": d.get("ganglion_rrd_files_read_ahead_total", 0) / a.steps,
        "recv_cpu": (th1.get("recv-" + CLUSTER, 0) - th0.get("recv-" + CLUSTER, 0)) / steps,
        "writer_cpu": (th1.get("rrd-writer", 0) - th0.get("rrd-writer", 0)) / steps,
    }
    if a.forward_vm:
        r["forward_sent_step"] = d.get('ganglion_forward_sent_total{forward="vm"}', 0) / a.steps
        r["forward_dropped"] = sum(v for k, v in d.items() if k.startswith('ganglion_forward_dropped_total{forward="vm"'))
        log("forward to VictoriaMetrics: %.0f samples sent per step, %d dropped in the window"
            % (r["forward_sent_step"], r["forward_dropped"]))
    r["ok"] = (r.get("forward_dropped", 0) == 0 and r["udp_drops"] == 0 and r["received"] >= r["sent"]
               and r["dropped_batches"] == 0
               and r["discarded"] == 0 and r["write_errors"] == 0 and n_files == files and exit_code == 0
               and r["accepted_step"] == files and drift == 0
               # The cache holds up to one flush interval, plus what queues
               # while a pass over every file runs (about a minute at 1M).
               and r["backlog_steps"] <= 1.5 * a.flush / a.step + 2
               and not ver["missing"] and ver["gaps"] == 0 and ver["bad"] == 0 and ver["compared"] > 0)
    cl.rmtree(tmp)
    if pkt_dir != tmp:
        cl.rmtree(pkt_dir)
    return r


def largest(results):
    ok = [r["hosts"] for r in results if r["ok"]]
    return max(ok) if ok else "none of those tried"


def print_ours(a, results):
    print("\n### ganglion-aggregator, UDP-fed (step %d s, flush every %d s, window %d steps)\n"
          % (a.step, a.flush, a.steps))
    print("| hosts x metrics | metrics/step | RRD files | CPU s/step | cores busy | RSS / peak MB | samples accepted/step "
          "| written/step | file writes/step | dropped batches | discarded | write errors | datagrams sent / received "
          "| UDP drops | drain s | rows checked (files) | gaps | wrong values (of compared) | sustained |")
    print("|" + "---|" * 19)
    for r in results:
        v = r["verify"]
        print("| %d x %d | %d | %d | %.3f | %.2f | %.0f / %.0f | %.0f | %.0f | %.0f | %d | %d | %d | %d / %d | %d | %.1f "
              "| %d (%d%s) | %d in %d files | %d of %d, in %d files | %s |"
              % (r["hosts"], a.metrics, r["metrics"], r["files"], r["cpu_step"], r["cpu_step"] / a.step,
                 r["rss_mb"], r["hwm_mb"], r["accepted_step"], r["written_step"], r["file_writes_step"],
                 r["dropped_batches"], r["discarded"], r["write_errors"], r["sent"], r["received"], r["udp_drops"],
                 r["drain"], r["rows"], v["checked"], "" if not v["missing"] else ", %d missing" % v["missing"],
                 v["gaps"], v["gap_files"], v["bad"], v["compared"], v["bad_files"], "**yes**" if r["ok"] else "no"))
    for r in results:
        notes = []
        if r["files"] != r["expected_files"]:
            notes.append("%d files, expected %d" % (r["files"], r["expected_files"]))
        if r["exit"] != 0:
            notes.append("exit status %s after SIGTERM" % r["exit"])
        if r["dropped_warm"]:
            notes.append("%d batches dropped during warm-up" % r["dropped_warm"])
        if r["drift"]:
            notes.append("sampler ticks moved by %d s" % r["drift"])
        if r["log_problems"]:
            notes.append("%d WARN/ERROR log lines, first: %s" % (r["log_problems"], r["first_problems"][0]))
        print("\n%d hosts: CPU s/step by thread: receive %.3f, RRD writer %.3f, the rest (sampler, runtime) %.3f; "
              "bytes written per step %.0f (%.0f write syscalls), largest journal seen %.0f B; "
              "files found evicted and read ahead per step %.0f, page faults from disk per step %.0f (DAMON %s); "
              "warm-up %.0f s, window %.1f steps, cache at window end %.1f steps of samples, one /metrics read "
              "%.3f CPU s, UDP receive buffer %s%s"
              % (r["hosts"], r["recv_cpu"], r["writer_cpu"], max(0.0, r["cpu_step"] - r["recv_cpu"] - r["writer_cpu"]),
                 r["wbytes_step"], r["syscw_step"], r["journal_max"],
                 r["read_ahead_step"], r["majflt_step"], storage.damon(),
                 r["warm"], r["steps"], r["backlog_steps"], r["scrape_cpu"],
                 "%d B" % r["rcvbuf"] if r["rcvbuf"] else "unknown", "; " + "; ".join(notes) if notes else ""))
    if len(results) > 1 or not results[0]["ok"]:
        print("\nLargest H sustained here: %s" % largest(results))


# -- part B: real gmetad ----------------------------------------------------------

def run_gmetad(a, hosts, cl, ports):
    files = hosts * 30 + 60
    rows = a.rows or max(40, a.gmetad_steps + 20)
    tmp = cl.mkdtemp(a.workdir, "storage-scale-gmetad-")
    check_disk(tmp, files)
    root = os.path.join(tmp, "rrds")
    os.mkdir(root)
    src = ports.take()
    stop = threading.Event()
    cl.events.append(stop)
    served = storage.SERVED
    polls = []  # times the source finished sending a document

    def watch():
        seen = served[0]
        while not stop.is_set():
            if served[0] != seen:
                seen = served[0]
                polls.append(time.time())
            time.sleep(0.05)

    threading.Thread(target=storage.serve, args=(src, hosts, storage.header(), stop), daemon=True).start()
    threading.Thread(target=watch, daemon=True).start()
    conf = os.path.join(tmp, "gmetad.conf")
    with open(conf, "w") as f:
        f.write('data_source "%s" %d 127.0.0.1:%d\n' % (CLUSTER, a.step, src))
        f.write('gridname "scale"\nxml_port %d\ninteractive_port %d\n' % (ports.take(), ports.take()))
        f.write('rrd_rootdir "%s"\nsetuid off\nRRAs "RRA:AVERAGE:0.5:1:%d"\n' % (root, rows))
    env = {k: v for k, v in os.environ.items() if k != "RRDCACHED_ADDRESS"}
    glog = os.path.join(tmp, "gmetad.log")
    with open(glog, "w") as lf:
        g = cl.spawn(["gmetad", "-d", "1", "-c", conf], stdin=subprocess.DEVNULL, stdout=lf, stderr=lf, env=env)
    log("part B: gmetad pid %d, %d hosts x 30 metrics = %d files, source port %d, data in %s"
        % (g.pid, hosts, files, src, tmp))

    def alive():
        if g.poll() is not None:
            raise SystemExit("gmetad exited (%s):\n%s" % (g.returncode, log_tail(glog)))

    t_warm, last, polls_at_full = time.time(), -1, None
    while True:
        time.sleep(a.step)
        alive()
        n = count_rrds(root)
        if polls_at_full is None and n >= files and n == last:
            polls_at_full = len(polls)
        last = n
        if polls_at_full is not None and len(polls) >= polls_at_full + 1:
            break  # one whole poll after every file existed
        if time.time() - t_warm > a.warm_max:
            raise SystemExit("gmetad warm-up not done after %d s: %d of %d files" % (a.warm_max, n, files))
        log("warm-up: %d/%d files, %d polls" % (n, files, len(polls)))
    warm = time.time() - t_warm
    cpu0, src0, p0, t0 = ingest.cpu_secs(g.pid), self_cpu(), len(polls), time.time()
    log("measuring %d steps" % a.gmetad_steps)
    time.sleep(a.gmetad_steps * a.step)
    alive()
    cpu1, src1, p1, t1 = ingest.cpu_secs(g.pid), self_cpu(), len(polls), time.time()
    rss, hwm = mem_kb(g.pid)
    # Lag and gaps on a sample of files, read while gmetad still runs.
    rnd = random.Random(a.seed)
    picks = [os.path.join(root, CLUSTER, "node%04d" % rnd.randrange(hosts), "m%02d.rrd" % rnd.randrange(30))
             for _ in range(a.verify_files)]
    now = time.time()
    lags = sorted(now - x for x in (rrd_last(p) for p in picks) if x is not None)
    want_ts = [t for t in range(int(t0) - int(t0) % a.step, int(t1), a.step) if t0 + a.step <= t <= t1 - 2 * a.step]
    gaps = gap_files = missing = 0
    for p in picks:
        rows_ = rrd_fetch(p, a.step, min(want_ts) - a.step, max(want_ts)) if want_ts else {}
        if rows_ is None:
            missing += 1
            continue
        gp, _, _ = verify_series(rows_, want_ts, None)
        gaps, gap_files = gaps + gp, gap_files + (gp > 0)
    cl.stop(g)
    stop.set()
    steps = (t1 - t0) / a.step
    in_window = [x for x in polls if t0 <= x <= t1]
    intervals = sorted(b - x for x, b in zip(in_window, in_window[1:]))
    r = {
        "hosts": hosts, "files": count_rrds(root), "cpu_step": (cpu1 - cpu0) / steps,
        "cpu_poll": (cpu1 - cpu0) / max(1, p1 - p0),
        # From the poll times, not a count (a count over a short window is off by one).
        "polls_step": a.step * (len(in_window) - 1) / (in_window[-1] - in_window[0]) if len(in_window) > 1 else 0.0,
        "interval": intervals[len(intervals) // 2] if intervals else float("nan"),
        "max_interval": intervals[-1] if intervals else float("nan"),
        "lag_med": lags[len(lags) // 2] if lags else float("nan"), "lag_max": lags[-1] if lags else float("nan"),
        "rows": len(want_ts), "checked": len(picks), "missing": missing, "gaps": gaps, "gap_files": gap_files,
        "src_cpu_step": (src1 - src0) / steps, "rss_mb": rss / 1024, "hwm_mb": hwm / 1024, "warm": warm,
        "steps": steps,
    }
    r["ok"] = (r["polls_step"] >= 0.9 and r["max_interval"] <= 1.5 * a.step and r["lag_max"] <= 2 * a.step
               and r["files"] == files and missing == 0 and gaps == 0)
    cl.rmtree(tmp)
    return r


def print_gmetad(a, results):
    print("\n### gmetad 3.7.2 polling a synthetic gmond every %d s (30 metrics per host, window %d steps)\n"
          % (a.step, a.gmetad_steps))
    print("| hosts | metrics/step | RRD files | CPU s/step | CPU s/poll | polls/step | poll interval median / max s "
          "| last update lag median / max s | rows checked (files) | gaps | RSS / peak MB | source CPU s/step | sustained |")
    print("|" + "---|" * 13)
    for r in results:
        print("| %d | %d | %d | %.3f | %.3f | %.2f | %.1f / %.1f | %.0f / %.0f | %d (%d%s) | %d in %d files | %.0f / %.0f "
              "| %.3f | %s |"
              % (r["hosts"], r["hosts"] * 30, r["files"], r["cpu_step"], r["cpu_poll"], r["polls_step"], r["interval"],
                 r["max_interval"], r["lag_med"], r["lag_max"], r["rows"], r["checked"],
                 "" if not r["missing"] else ", %d missing" % r["missing"], r["gaps"], r["gap_files"],
                 r["rss_mb"], r["hwm_mb"], r["src_cpu_step"], "**yes**" if r["ok"] else "no"))
    print("\nLargest H gmetad sustained here: %s" % largest(results))


# -- main ---------------------------------------------------------------------------

def hosts_list(s):
    return [int(x) for x in s.split(",") if x.strip()] if s else []


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--hosts", type=hosts_list, default=[], help="part A: host counts, comma-separated (in turn, "
                    "stopping at the first one not sustained)")
    ap.add_argument("--metrics", type=int, default=30, help="part A: metrics per host (default 30)")
    ap.add_argument("--step", type=int, default=15, help="RRD step and send interval, seconds (default 15)")
    ap.add_argument("--steps", type=int, default=20, help="part A: measured steps (default 20)")
    ap.add_argument("--flush", type=int, default=300, help="part A: [storage] flush_interval_secs (default 300)")
    ap.add_argument("--agg", default=os.path.join(default_bin_dir(), "ganglion-aggregator"),
                    help="aggregator binary (default: $CARGO_TARGET_DIR or <repo>/target, release); udp-blast "
                    "and rrd-export are looked up next to it")
    ap.add_argument("--blast", help="udp-blast binary")
    ap.add_argument("--rrd-export", help="rrd-export binary (for --verify-all)")
    ap.add_argument("--pace", type=float, help="part A: seconds over which one round is sent (default step - 5)")
    ap.add_argument("--meta-pps", type=float, default=50000, help="part A: metadata send rate (default 50000/s)")
    ap.add_argument("--recv-buffer", type=int, default=32 << 20, help="part A: recv_buffer_bytes (default 32 MiB; "
                    "the kernel caps it at net.core.rmem_max)")
    ap.add_argument("--gmetad-hosts", type=hosts_list, default=[], help="part B: host counts for gmetad, "
                    "comma-separated (stops at the first one not sustained)")
    ap.add_argument("--gmetad-steps", type=int, default=8, help="part B: measured steps per H (default 8)")
    ap.add_argument("--keep-going", action="store_true", help="try every H even after one was not sustained")
    ap.add_argument("--rows", type=int, help="rows of the one RRA (default max(40, steps + 20))")
    ap.add_argument("--verify-files", type=int, default=200, help="files checked (default 200)")
    ap.add_argument("--verify-all", action="store_true", help="part A: check every file with rrd-export")
    ap.add_argument("--warm-max", type=int, default=3600, help="give up if warm-up takes longer (s, default 3600)")
    ap.add_argument("--drain-timeout", type=int, default=3600, help="part A: wait this long for the final drain")
    ap.add_argument("--workdir", default=None, help="where RRD trees go (default: the system temp directory)")
    ap.add_argument("--seed", type=int, default=1, help="random file sample")
    ap.add_argument("--forward-vm", action="store_true", help="part A: also forward every metric to a private "
                    "VictoriaMetrics by remote write (forward.py measures the cost alone)")
    a = ap.parse_args()
    if not a.hosts and not a.gmetad_hosts:
        ap.error("give --hosts (part A) and/or --gmetad-hosts (part B)")
    if a.step < 10:
        ap.error("--step must be at least 10 (a round is sent between two sampler ticks)")
    if a.steps < 3 or a.gmetad_steps < 4:
        ap.error("--steps must be at least 3 and --gmetad-steps at least 4")
    rmem = open("/proc/sys/net/core/rmem_max").read().strip()
    if a.hosts and int(rmem) < a.recv_buffer:
        log("note: net.core.rmem_max is %s, so the UDP receive buffer is capped there" % rmem)

    cl, ports = Cleanup(), Ports()
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _exit_on_signal)
    ours, theirs = [], []
    try:
        for h in a.hosts:
            ours.append(run_ours(a, h, cl, ports))
            if not ours[-1]["ok"] and not a.keep_going:
                log("%d hosts not sustained; stopping the series" % h)
                break
        for h in a.gmetad_hosts:
            theirs.append(run_gmetad(a, h, cl, ports))
            if not theirs[-1]["ok"] and not a.keep_going:
                log("gmetad did not sustain %d hosts; stopping the series" % h)
                break
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if cl.procs or cl.dirs:
            log("cleaning up: stopping %d processes, removing %d directories" % (len(cl.procs), len(cl.dirs)))
        cl.all()
        if ours:
            print_ours(a, ours)
        if theirs:
            print_gmetad(a, theirs)


if __name__ == "__main__":
    main()

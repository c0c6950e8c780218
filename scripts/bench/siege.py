#!/usr/bin/env python3
"""The siege: everything clients, peers and faults can do at once, while a steady
load flows, and proof that no sample was lost and the dashboard kept answering.

While H hosts x M metrics arrive every 15 s over UDP (plus one probe metric that
increments every second, sampled into its RRD file every step of 1 s), at once:

  - N idle TCP connections spread over every TCP port (HTTP, the cluster's gmond
    XML port, 8651, 8652, the rrdcached-protocol socket), held open;
  - slowloris clients on HTTP (a header line every 2 s, never finishing);
  - D clients looping gmetad dumps (8651), 8652 queries and gmond-port dumps,
    every document parsed (expat) and counted valid or broken;
  - S clients looping year x every-host /api/series requests;
  - 100 concurrent POST /api/flush, every 10 s;
  - a polled data source that serves a gzip bomb, and one whose document never ends;
  - hostile datagrams (random bytes, truncated messages, names with / .. NUL <&"');
  - with --rrdcached: the real rrdcached stopped and restarted mid-run.

Meanwhile a monitor process opens a fresh connection to the dashboard every
second (GET /api/grid, 1 s timeout) and samples the aggregator's RSS and open
descriptors. Afterwards the aggregator is stopped with SIGTERM (it drains its
write-back cache) and the probe's RRD file is read with rrdtool fetch: every
step of the siege window must hold the probe's value.

Prints a report and a JSON summary (--json FILE); exits 1 when a check fails.

Usage:
  python3 scripts/bench/siege.py [--binary target/release/ganglion-aggregator]
      [--duration 60] [--hosts 1000] [--metrics 30] [--idle 5000]
      [--dumpers 50] [--series 10] [--nofile 1024 | --nofile raised] [--rrdcached]
      [--json out.json]
"""
import argparse
import asyncio
import gzip
import json
import multiprocessing as mp
import os
import random
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import xml.parsers.expat
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = "siege"
PROBE_HOST = "10.9.255.1:probe-host"   # spoofed as gmetric -S does: IP:name
PROBE_NAME = "probe-host"
# A host that appears 10 s into the siege: its file must be created while
# every port is held (the failure the siege was written for: new files
# failing with "Too many open files").
LATE_HOST = "10.9.255.2:late-host"
LATE_NAME = "late-host"
PROBE_METRIC = "probe_seq"


# ---------------------------------------------------------------- XDR (gmetric's messages)

def xdr_str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b + b"\0" * ((4 - len(b) % 4) % 4)


def metadata(host, name, type_name="float", group="siege"):
    return (struct.pack(">I", 128) + xdr_str(host) + xdr_str(name) + struct.pack(">I", 1)
            + xdr_str(type_name) + xdr_str(name) + xdr_str("u") + struct.pack(">III", 3, 60, 0)
            + struct.pack(">I", 2) + xdr_str("GROUP") + xdr_str(group)
            + xdr_str("SPOOF_HOST") + xdr_str(host))


def value_float(host, name, v):
    return (struct.pack(">I", 134) + xdr_str(host) + xdr_str(name) + struct.pack(">I", 1)
            + xdr_str("%.2f") + struct.pack(">f", v))


def value_uint(host, name, v):
    return (struct.pack(">I", 131) + xdr_str(host) + xdr_str(name) + struct.pack(">I", 1)
            + xdr_str("%u") + struct.pack(">I", v))


# ---------------------------------------------------------------- helpers

def free_port(kind=socket.SOCK_STREAM):
    # Below the ephemeral range, so our own 5000 outgoing connections never take it.
    for _ in range(1000):
        p = random.randint(20000, 30000)
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port")


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    except OSError:
        return 0


def open_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


def raise_own_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# ---------------------------------------------------------------- steady load (own process)

def loader(udp_port, hosts, metrics, stop_at, sent_q):
    """Every 15 s each host sends its metrics; every second the probe increments.
    Records (unix second, value) of every probe value sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    dst = ("127.0.0.1", udp_port)
    names = ["m%02d" % k for k in range(metrics)]
    hostnames = ["10.9.%d.%d:load%04d" % (h >> 8, h & 255, h) for h in range(hosts)]
    for h in hostnames:
        for n in names:
            sock.sendto(metadata(h, n), dst)
        time.sleep(0.0005)
    sock.sendto(metadata(PROBE_HOST, PROBE_METRIC, "uint32", "probe"), dst)
    sent, late = [], []
    seq = 0
    late_at = time.time() + 13
    per_tick = max(1, hosts // 15)  # spread the 15 s cycle over its seconds
    cursor = 0
    next_tick = time.time()
    while time.time() < stop_at:
        seq += 1
        now = time.time()
        sock.sendto(value_uint(PROBE_HOST, PROBE_METRIC, seq), dst)
        sent.append((now, seq))
        if seq % 10 == 0:
            sock.sendto(metadata(PROBE_HOST, PROBE_METRIC, "uint32", "probe"), dst)
        if now >= late_at:
            if not late or seq % 10 == 0:
                sock.sendto(metadata(LATE_HOST, PROBE_METRIC, "uint32", "probe"), dst)
            sock.sendto(value_uint(LATE_HOST, PROBE_METRIC, seq), dst)
            late.append((now, seq))
        for _ in range(per_tick):
            h = hostnames[cursor % hosts]
            cursor += 1
            for k, n in enumerate(names):
                sock.sendto(value_float(h, n, float((cursor + k) % 100)), dst)
            if cursor % hosts == 0:
                for n in names[:1]:
                    sock.sendto(metadata(h, n), dst)
        next_tick += 1.0
        time.sleep(max(0.0, next_tick - time.time()))
    sent_q.put((sent, late))


# ---------------------------------------------------------------- monitor (own process)

def monitor(http_port, pid, stop_at, out_q):
    """A fresh dashboard client every second; RSS and descriptors of the aggregator."""
    rows = []
    next_tick = time.time()
    while time.time() < stop_at:
        t0 = time.time()
        status, err = None, None
        try:
            s = socket.create_connection(("127.0.0.1", http_port), timeout=1.0)
            s.settimeout(max(0.05, 1.0 - (time.time() - t0)))
            s.sendall(b"GET /api/grid HTTP/1.1\r\nHost: siege\r\nConnection: close\r\n\r\n")
            head = b""
            while b"\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
            m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
            status = int(m.group(1)) if m else None
            s.close()
        except OSError as e:
            err = type(e).__name__
        lat = time.time() - t0
        rows.append({"t": t0, "status": status, "latency": lat, "error": err,
                     "rss_kb": rss_kb(pid), "fds": open_fds(pid)})
        next_tick += 1.0
        time.sleep(max(0.0, next_tick - time.time()))
    out_q.put(rows)


# ---------------------------------------------------------------- fake polled sources

async def serve_gzip_bomb(port, bomb, stats):
    async def handle(reader, writer):
        stats["bomb_polls"] += 1
        try:
            writer.write(bomb)
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", port)


async def serve_endless(port, stats):
    head = (b'<?xml version="1.0" encoding="ISO-8859-1" standalone="yes"?>\n'
            b'<GANGLIA_XML VERSION="3.7.2" SOURCE="gmond">\n'
            b'<CLUSTER NAME="endless" LOCALTIME="%d" OWNER="x" LATLONG="x" URL="x">\n' % int(time.time()))
    host = (b'<HOST NAME="h%d" IP="10.0.0.1" REPORTED="%d" TN="0" TMAX="20" DMAX="0" LOCATION="x" '
            b'GMOND_STARTED="0" TAGS="">\n<METRIC NAME="x" VAL="1" TYPE="float" UNITS="" TN="0" '
            b'TMAX="60" DMAX="0" SLOPE="both" SOURCE="gmond"></METRIC>\n</HOST>\n')

    async def handle(reader, writer):
        stats["endless_polls"] += 1
        try:
            writer.write(head)
            i = 0
            while True:
                writer.write(b"".join(host % (i + k, int(time.time())) for k in range(200)))
                i += 200
                await writer.drain()
                stats["endless_bytes"] += 200 * len(host)
                await asyncio.sleep(0.01)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", port)


def make_gzip_bomb(inflated_bytes):
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    prefix = (b'<?xml version="1.0" encoding="ISO-8859-1" standalone="yes"?>\n'
              b'<GANGLIA_XML VERSION="3.7.2" SOURCE="gmond">\n<CLUSTER NAME="bomb" LOCALTIME="1" '
              b'OWNER="x" LATLONG="x" URL="x">\n<!-- ')
    parts = [z.compress(prefix)]
    chunk = b" " * (1 << 20)
    for _ in range(inflated_bytes >> 20):
        parts.append(z.compress(chunk))
    parts.append(z.flush())
    return b"".join(parts)


# ---------------------------------------------------------------- attackers (asyncio)

# Attackers come from other loopback addresses than the dashboard client (the
# whole of 127/8 is loopback on Linux), as a hostile client on a network would
# come from another address than the operator's browser.
SRC_MONITOR = "127.0.0.1"
SRC_FLUSH = "127.0.0.3"
SRC_DUMP = "127.0.0.4"
SRC_SERIES = "127.0.0.5"
SRC_SLOWLORIS = "127.0.0.6"
SRC_IDLE = ["127.0.0.%d" % i for i in range(10, 30)]


async def connect(port, src, timeout=30):
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0)), timeout)


async def idle_connections(ports, n, stats, stop):
    socks = []

    async def one(i):
        port = ports[i % len(ports)]
        src = SRC_IDLE[(i // len(ports)) % len(SRC_IDLE)]
        try:
            r, w = await connect(port, src, 5)
            socks.append(w)
            stats["idle_opened"] += 1
        except (OSError, asyncio.TimeoutError):
            stats["idle_refused"] += 1

    # Opened 250 at a time, 50 ms apart: all 5000 within the first seconds
    # (a connection flood, not a SYN flood, which is the kernel's business).
    for first in range(0, n, 250):
        await asyncio.gather(*(one(i) for i in range(first, min(n, first + 250))))
        await asyncio.sleep(0.05)
    await stop.wait()
    alive = 0
    for w in socks:
        if not w.is_closing() and w.transport.get_extra_info("socket") is not None:
            alive += 1
        w.close()
    stats["idle_still_open_at_end"] = alive


async def slowloris(port, n, stats, stop):
    async def one():
        try:
            r, w = await connect(port, SRC_SLOWLORIS)
        except (OSError, asyncio.TimeoutError):
            stats["slowloris_refused"] += 1
            return
        t0 = time.time()
        try:
            w.write(b"GET /api/grid HTTP/1.1\r\nHost: x\r\n")
            await w.drain()
            i = 0
            while not stop.is_set():
                try:
                    data = await asyncio.wait_for(r.read(1024), 2.0)
                    # The server answered (408 or closed): it did not wait forever.
                    stats["slowloris_closed_by_server"] += 1
                    stats["slowloris_closed_after_s"].append(round(time.time() - t0, 1))
                    return
                except asyncio.TimeoutError:
                    pass
                w.write(b"X-Slow-%d: %d\r\n" % (i, i))
                i += 1
                await w.drain()
            stats["slowloris_held_to_end"] += 1
        except OSError:
            stats["slowloris_closed_by_server"] += 1
            stats["slowloris_closed_after_s"].append(round(time.time() - t0, 1))
        finally:
            w.close()
    await asyncio.gather(*(one() for _ in range(n)))


def xml_ok(doc):
    p = xml.parsers.expat.ParserCreate()
    try:
        p.Parse(doc, True)
        return True
    except xml.parsers.expat.ExpatError:
        return False


async def read_all(port, request=None, timeout=30):
    r, w = await connect(port, SRC_DUMP, timeout)
    try:
        if request:
            w.write(request)
            await w.drain()
        return await asyncio.wait_for(r.read(), timeout)
    finally:
        w.close()


async def dumper(ports, stats, stop, bad_dir):
    i = 0
    while not stop.is_set():
        port, req = ports[i % len(ports)]
        i += 1
        try:
            doc = await read_all(port, req)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            stats["xml_errors"] += 1
            await asyncio.sleep(0.2)
            continue
        if not doc:
            stats["xml_empty"] += 1  # refused at a connection cap: closed without a document
            await asyncio.sleep(0.2)
            continue
        if xml_ok(doc):
            stats["xml_valid"] += 1
        else:
            stats["xml_broken"] += 1
            if stats["xml_broken"] <= 3:
                with open(os.path.join(bad_dir, "broken-%d.xml" % stats["xml_broken"]), "wb") as f:
                    f.write(doc)


ERRORS = []  # bodies of unexpected server errors, for the report


async def http_request(port, method, path, src, timeout=30):
    r, w = await connect(port, src, timeout)
    try:
        w.write(b"%s %s HTTP/1.1\r\nHost: siege\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                % (method.encode(), path.encode()))
        await w.drain()
        body = await asyncio.wait_for(r.read(), timeout)
        m = re.match(rb"HTTP/1\.[01] (\d{3})", body)
        status = int(m.group(1)) if m else None
        if status is not None and status >= 500 and status != 503:
            ERRORS.append(body[-300:].decode("latin-1"))
        return status, len(body)
    finally:
        w.close()


async def series_client(port, stats, stop):
    # Every load host (1000 at the default size, the column cap) over a year.
    path = "/api/series?cluster=%s&metric=m00&hosts=^load&start=end-1y&points=600" % CLUSTER
    while not stop.is_set():
        try:
            status, n = await http_request(port, "GET", path, SRC_SERIES)
            stats["series_status"][str(status)] = stats["series_status"].get(str(status), 0) + 1
            stats["series_max_bytes"] = max(stats["series_max_bytes"], n)
        except (OSError, asyncio.TimeoutError):
            stats["series_errors"] += 1
            status = None
        if status in (None, 503):
            await asyncio.sleep(0.5)


async def flush_storm(port, stats, stop, n=100, every=10):
    while not stop.is_set():
        async def one():
            try:
                status, _ = await http_request(port, "POST", "/api/flush", SRC_FLUSH, timeout=120)
                k = str(status)
            except (OSError, asyncio.TimeoutError):
                k = "error"
            stats["flush_status"][k] = stats["flush_status"].get(k, 0) + 1
        await asyncio.gather(*(one() for _ in range(n)))
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass


async def hostile_datagrams(udp_port, stats, stop):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dst = ("127.0.0.1", udp_port)
    names = ["../../etc/passwd", "a/b", "nul\0byte", "<&\"'>", "..", "__SummaryInfo__", "x" * 2000,
             "\xff\xfe", "new\nline"]
    rnd = random.Random(7)
    while not stop.is_set():
        for _ in range(50):
            kind = rnd.randrange(5)
            if kind == 0:
                pkt = os.urandom(rnd.randrange(1, 1400))
            elif kind == 1:
                pkt = metadata(rnd.choice(names), rnd.choice(names))[: rnd.randrange(4, 60)]
            elif kind == 2:
                pkt = struct.pack(">I", 128) + struct.pack(">I", 0xFFFFFFF0) + b"x" * 16
            elif kind == 3:
                h = rnd.choice(names)
                pkt = metadata(h, rnd.choice(names))
                sock.sendto(pkt, dst)
                pkt = value_float(h, rnd.choice(names), 1.0)
            else:
                pkt = struct.pack(">I", rnd.choice([0, 127, 137, 0xFFFFFFFF])) + os.urandom(40)
            try:
                sock.sendto(pkt, dst)
                stats["hostile_datagrams"] += 1
            except OSError:
                pass
        await asyncio.sleep(0.05)


async def rrdcached_restart(rrdcached, at, stats):
    await asyncio.sleep(at)
    rrdcached.restart()
    stats["rrdcached_restarts"] += 1


# ---------------------------------------------------------------- rrdcached

class Rrdcached:
    def __init__(self, tmp, rrd_root):
        self.sock = os.path.join(tmp, "rrdcached.sock")
        self.pidfile = os.path.join(tmp, "rrdcached.pid")
        self.journal = os.path.join(tmp, "rrdcached-journal")
        os.makedirs(self.journal, exist_ok=True)
        self.root = rrd_root
        self.proc = None
        self.start()

    def start(self):
        exe = shutil.which("rrdcached") or "/usr/bin/rrdcached"
        self.proc = subprocess.Popen(
            [exe, "-g", "-l", "unix:" + self.sock, "-p", self.pidfile, "-b", self.root, "-B",
             "-j", self.journal, "-w", "3600", "-z", "1", "-f", "7200", "-F"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(self.sock):
                return
            time.sleep(0.05)
        raise RuntimeError("rrdcached did not create its socket")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # rrdcached writes what it holds on TERM
            self.proc.wait(60)
        for p in (self.sock, self.pidfile):
            if os.path.exists(p):
                os.unlink(p)

    def restart(self):
        self.stop()
        time.sleep(2)
        self.start()


# ---------------------------------------------------------------- main

def config_text(a, ports, rrd_root, tmp, rrdcached, extra):
    bomb_source = "" if a.bomb_mib == 0 else f"""[[data_source]]
name = "bomb"
poll_secs = 5
addresses = ["127.0.0.1:{ports['bomb']}"]
timeout_secs = 5

"""
    cfg = f"""
grid_name = "siege-grid"
rrd_root = "{rrd_root}"
step_secs = 1
rras = ["RRA:AVERAGE:0.5:1:7200", "RRA:AVERAGE:0.5:60:8784"]
trusted_hosts = ["127.0.0.1"]

[[cluster]]
name = "{CLUSTER}"
udp_listen = "127.0.0.1:{ports['udp']}"
xml_listen = "127.0.0.1:{ports['gmond']}"
reverse_dns = false
host_tmax_secs = 20

{bomb_source}[[data_source]]
name = "endless"
poll_secs = 5
addresses = ["127.0.0.1:{ports['endless']}"]
timeout_secs = 5

[xml]
dump_listen = "127.0.0.1:{ports['dump']}"
query_listen = "127.0.0.1:{ports['query']}"

[http]
listen = "127.0.0.1:{ports['http']}"

[storage]
daemon_listen = ["127.0.0.1:{ports['daemon']}"]
"""
    if rrdcached:
        cfg += f'\n[rrdcached]\naddress = "unix:{rrdcached.sock}"\n'
    return cfg + "\n" + extra


def fetch_probe(rrd_root, start, end, name=PROBE_NAME):
    path = os.path.join(rrd_root, CLUSTER, name, PROBE_METRIC + ".rrd")
    if not os.path.exists(path):
        return None, path
    out = subprocess.run(["rrdtool", "fetch", path, "AVERAGE", "-r", "1", "-s", str(start), "-e", str(end)],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*(\d+):\s+(\S+)", line)
        if m:
            v = m.group(2)
            rows.append((int(m.group(1)), None if "nan" in v.lower() else float(v)))
    return rows, path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/ganglion-aggregator"))
    ap.add_argument("--duration", type=int, default=60)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--metrics", type=int, default=30)
    ap.add_argument("--idle", type=int, default=5000)
    ap.add_argument("--slowloris", type=int, default=200)
    ap.add_argument("--dumpers", type=int, default=50)
    ap.add_argument("--series", type=int, default=10)
    ap.add_argument("--flushers", type=int, default=100)
    ap.add_argument("--nofile", default="raised", help="1024 (soft=hard=1024) or raised")
    ap.add_argument("--rrdcached", action="store_true")
    ap.add_argument("--bomb-mib", type=int, default=1024, help="inflated size of the gzip bomb (0: no bomb source)")
    ap.add_argument("--extra-config", default="", help="TOML appended to the aggregator's config")
    # Two polled sources may each hold up to max_document_mb (512 MiB by
    # default) while they read, the bomb's inflate buffer on top; the rest
    # is state and snapshots.
    ap.add_argument("--max-rss-mb", type=int, default=2048)
    ap.add_argument("--max-fds", type=int, default=0, help="0 = the aggregator's soft limit")
    ap.add_argument("--json")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    a = ap.parse_args()

    raise_own_nofile()
    tmp = tempfile.mkdtemp(prefix="siege-")
    rrd_root = os.path.join(tmp, "rrds")
    os.makedirs(rrd_root)
    ports = {k: free_port() for k in ("gmond", "dump", "query", "http", "daemon", "bomb", "endless")}
    ports["udp"] = free_port(socket.SOCK_DGRAM)
    rrdc = Rrdcached(tmp, rrd_root) if a.rrdcached else None
    cfg_path = os.path.join(tmp, "aggregator.toml")
    with open(cfg_path, "w") as f:
        f.write(config_text(a, ports, rrd_root, tmp, rrdc, a.extra_config))

    print("building the gzip bomb (%d MiB inflated)..." % a.bomb_mib, file=sys.stderr)
    bomb = make_gzip_bomb(a.bomb_mib << 20) if a.bomb_mib else b""

    cmd = [a.binary, "--config", cfg_path]
    if a.nofile == "1024":
        cmd = ["prlimit", "--nofile=1024:1024", "--"] + cmd
    log = open(os.path.join(tmp, "aggregator.log"), "wb")
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
    agg = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    result = {"config": vars(a), "checks": {}}
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", ports["http"]), timeout=0.2).close()
                break
            except OSError:
                if agg.poll() is not None:
                    raise RuntimeError("aggregator exited at start: " + open(log.name).read()[-2000:])
                time.sleep(0.05)
        with open("/proc/%d/limits" % agg.pid) as f:
            lim = re.search(r"Max open files\s+(\d+)\s+(\d+)", f.read())
        soft_limit = int(lim.group(1))
        result["aggregator_nofile"] = [soft_limit, int(lim.group(2))]

        t_start = time.time()
        stop_at = t_start + a.duration
        sent_q, mon_q = mp.Queue(), mp.Queue()
        load = mp.Process(target=loader, args=(ports["udp"], a.hosts, a.metrics, stop_at + 3, sent_q))
        mon = mp.Process(target=monitor, args=(ports["http"], agg.pid, stop_at, mon_q))
        load.start()
        # Let the steady load's files exist before the siege starts.
        time.sleep(3)
        mon.start()

        stats = {k: 0 for k in ("idle_opened", "idle_refused", "slowloris_refused",
                                "slowloris_closed_by_server", "slowloris_held_to_end", "xml_valid",
                                "xml_broken", "xml_errors", "xml_empty", "series_errors",
                                "series_max_bytes", "hostile_datagrams", "rrdcached_restarts",
                                "bomb_polls", "endless_polls", "endless_bytes")}
        stats.update(series_status={}, flush_status={}, slowloris_closed_after_s=[])

        async def siege():
            stop = asyncio.Event()
            bomb_srv = await serve_gzip_bomb(ports["bomb"], bomb, stats)
            endless_srv = await serve_endless(ports["endless"], stats)
            xml_ports = [(ports["dump"], None), (ports["query"], b"/?filter=summary\n"),
                         (ports["gmond"], None), (ports["query"], b"/%s\n" % CLUSTER.encode())]
            tasks = [
                idle_connections([ports[k] for k in ("http", "gmond", "dump", "query", "daemon")],
                                 a.idle, stats, stop),
                slowloris(ports["http"], a.slowloris, stats, stop),
                hostile_datagrams(ports["udp"], stats, stop),
                flush_storm(ports["http"], stats, stop, n=a.flushers),
            ]
            tasks += [dumper(xml_ports, stats, stop, tmp) for _ in range(a.dumpers)]
            tasks += [series_client(ports["http"], stats, stop) for _ in range(a.series)]
            if rrdc:
                tasks.append(rrdcached_restart(rrdc, a.duration / 2, stats))
            running = [asyncio.ensure_future(t) for t in tasks]
            await asyncio.sleep(max(0, stop_at - time.time()))
            stop.set()
            # Clients still inside a request (a flush waiting for its pass, a
            # dump being read) get a short grace, then are cancelled.
            done, pending = await asyncio.wait(running, timeout=15)
            for p in pending:
                p.cancel()
            for d in done:
                if d.exception() and not isinstance(d.exception(), asyncio.CancelledError):
                    stats.setdefault("attacker_exceptions", []).append(repr(d.exception()))
            bomb_srv.close()
            endless_srv.close()

        asyncio.run(siege())
        mon_rows = mon_q.get(timeout=30)
        sent, late = sent_q.get(timeout=60)
        load.join()
        mon.join()
        t_end = time.time()

        # Stop: SIGTERM drains the write-back cache into the files (or rrdcached).
        agg.send_signal(signal.SIGTERM)
        agg.wait(180)
        if rrdc:
            rrdc.stop()

        def check_probe(name, values, first):
            """Every step from 5 s after the probe's first value to 2 s before
            its last must hold that second's value (or a neighbour's)."""
            start, end = int(first) + 5, int(values[-1][0]) - 2
            rows, path = fetch_probe(rrd_root, start, end, name)
            by_sec = {int(t): v for t, v in values}
            lost, wrong, checked = [], [], 0
            if rows is None:
                # No file at all: every step of the window is lost.
                lost = ["no file %s" % path] + list(range(start + 1, end + 1))
                return {"steps_checked": len(lost), "lost": len(lost), "wrong": 0,
                        "lost_examples": lost[:10], "wrong_examples": []}
            for t, v in rows:
                if t < start or t > end:
                    continue
                checked += 1
                if v is None:
                    lost.append(t)
                    continue
                near = [by_sec[x] for x in range(t - 3, t + 2) if x in by_sec]
                if near and not (min(near) - 0.01 <= v <= max(near) + 0.01):
                    wrong.append((t, v, near))
            return {"steps_checked": checked, "lost": len(lost), "wrong": len(wrong),
                    "lost_examples": lost[:10], "wrong_examples": wrong[:10]}

        probes = {"probe": check_probe(PROBE_NAME, sent, t_start),
                  "late_probe": check_probe(LATE_NAME, late, late[0][0]) if late else
                  {"steps_checked": 0, "lost": 1, "wrong": 0, "lost_examples": ["never sent"],
                   "wrong_examples": []}}
        answered = [r for r in mon_rows if r["status"] in (200, 503) and r["latency"] <= 1.0]
        slow_or_failed = [r for r in mon_rows if r not in answered]
        max_rss_mb = max((r["rss_kb"] for r in mon_rows), default=0) / 1024
        max_fds = max((r["fds"] for r in mon_rows), default=0)
        fd_bound = a.max_fds or soft_limit
        log.flush()
        text = open(log.name, errors="replace").read()
        panics = len(re.findall(r"panicked at", text))
        discards = re.findall(r"ganglion_rrd_samples_discarded_total\s+(\d+)", text)

        result.update(
            duration_s=round(t_end - t_start, 1),
            probe=probes["probe"], late_probe=probes["late_probe"],
            dashboard={"seconds": len(mon_rows), "answered_within_1s": len(answered),
                       "status_200": sum(1 for r in mon_rows if r["status"] == 200),
                       "status_503": sum(1 for r in mon_rows if r["status"] == 503),
                       "max_latency_s": round(max((r["latency"] for r in mon_rows), default=0), 3),
                       "failures": slow_or_failed[:10]},
            max_rss_mb=round(max_rss_mb, 1), max_open_fds=max_fds, fd_bound=fd_bound,
            aggregator_exit=agg.returncode, panics=panics, stats=stats,
            server_errors=ERRORS[:5])
        checks = {
            "probe_zero_lost": all(p["steps_checked"] > 0 and p["lost"] == 0 for p in probes.values()),
            "probe_no_wrong_value": all(p["wrong"] == 0 for p in probes.values()),
            "xml_all_valid": stats["xml_broken"] == 0 and stats["xml_valid"] > 0,
            "dashboard_every_second": bool(mon_rows) and not slow_or_failed,
            "rss_bounded": max_rss_mb <= a.max_rss_mb,
            "fds_bounded": max_fds <= fd_bound,
            "clean_exit": agg.returncode == 0 and panics == 0,
            "slowloris_closed": stats["slowloris_held_to_end"] == 0,
            # A refusal is 4xx or 503; any other 5xx is a fault.
            "no_server_errors": not ERRORS,
        }
        result["checks"] = checks
    finally:
        if agg.poll() is None:
            agg.kill()
            agg.wait()
        if rrdc:
            rrdc.stop()
        result["scratch"] = tmp
        result["log_tail"] = open(log.name, errors="replace").read()[-3000:]
        passed = bool(result.get("checks")) and all(result["checks"].values())
        if not a.keep and passed:
            shutil.rmtree(tmp, ignore_errors=True)
        elif not a.keep:
            # A failed run keeps its logs and config for the post-mortem, not
            # its RRD tree (gigabytes per run: repeated failures would fill
            # the disk); --keep keeps everything.
            shutil.rmtree(rrd_root, ignore_errors=True)

    report = json.dumps(result, indent=2, default=str)
    if a.json:
        with open(a.json, "w") as f:
            f.write(report)
    print(report)
    failed = [k for k, v in result["checks"].items() if not v]
    print("\nSIEGE %s%s" % ("PASSED" if not failed else "FAILED: ", ", ".join(failed)), file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

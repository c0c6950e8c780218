#!/usr/bin/env python3
"""Side-by-side UDP ingest benchmark: real gmond 3.7.2 vs ganglion-aggregator.

Both receivers get the same pre-encoded workload: H spoofed hosts x 30 float
metrics (metadata first, then value packets, gmetric-style spoofing), blasted
from one core while the receiver is pinned to the other. Reported per receiver:
CPU microseconds per value packet (utime+stime from /proc), and packets dropped
(kernel drops from /proc/net/udp for the receiver's socket).

With --readers N, N clients loop over full XML dumps of the receiver's port
during the blast, and the receive thread's own CPU per packet is reported
beside the process's (the aggregator names its receive threads recv-*): ingest
must not slow down or drop while readers loop.

With --auth, the aggregator also runs with `auth = "required"`, once with an
authenticate-only key and once with an encrypting key (ChaCha20-Poly1305):
udp-blast seals every datagram as it sends it (metadata included), so each
round is fresh traffic, never replays. The table then shows the cost of
authentication per packet beside plain ingest.

Usage: python3 scripts/bench/ingest.py [--hosts 1000] [--rounds 10] [--pps N] [--readers N] [--auth] [--alg A]
Needs a release build (cargo build --release, which builds the `udp-blast`
sender) and gmond installed.
"""
import argparse
import glob
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def xdr_str(s):
    b = s.encode()
    return struct.pack(">I", len(b)) + b + b"\0" * ((4 - len(b) % 4) % 4)


def metadata(host, name):
    return (struct.pack(">I", 128) + xdr_str(host) + xdr_str(name) + struct.pack(">I", 1)
            + xdr_str("float") + xdr_str(name) + xdr_str("u") + struct.pack(">III", 3, 60, 0)
            + struct.pack(">I", 1) + xdr_str("SPOOF_HOST") + xdr_str(host))


def value(host, name, v):
    return (struct.pack(">I", 134) + xdr_str(host) + xdr_str(name) + struct.pack(">I", 1)
            + xdr_str("%.2f") + struct.pack(">f", v))


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_secs(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def recv_thread_cpu(pid):
    """CPU seconds of the threads named recv-* (the aggregator's receive
    threads); None for a process without such threads (gmond)."""
    total, found = 0.0, False
    for t in glob.glob("/proc/%d/task/*" % pid):
        try:
            with open(t + "/comm") as f:
                if not f.read().startswith("recv-"):
                    continue
            with open(t + "/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            found = True
        except OSError:
            pass
    return total if found else None


def reader_loop(port, stop, counts, interval):
    # Each client asks again `interval` s after its last dump ended (a
    # dashboard or gmetad polling in a loop), so the readers' own CPU on the
    # sender's core does not slow the blast down.
    while not stop.is_set():
        try:
            counts.append(len(read_xml(port)))
        except OSError:
            counts.append(-1)
        stop.wait(interval)


def read_xml(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    chunks = []
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


def udp_drops(port):
    total = 0
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        with open(path) as f:
            next(f)
            for line in f:
                parts = line.split()
                if int(parts[1].split(":")[1], 16) == port:
                    total += int(parts[-1])
    return total


def gmond_conf(tmp, port):
    text = subprocess.run(["gmond", "-t"], capture_output=True, text=True, check=True).stdout
    for section in ("udp_send_channel", "udp_recv_channel", "tcp_accept_channel"):
        text = re.sub(r"\n%s \{.*?\n\}" % section, "", text, flags=re.S)
    # Receive only: no collection groups, no modules needed.
    text = re.sub(r"\ncollection_group \{.*?\n\}\n", "\n", text, flags=re.S)
    text = re.sub(r'include \(".*?"\)', "", text)
    text = text.replace("daemonize = yes", "daemonize = no").replace("setuid = yes", "setuid = no")
    mods = glob.glob("/usr/lib/*/ganglia/modcpu.so")
    if mods:
        text = text.replace("globals {", 'globals {\n  module_dir = "%s"' % os.path.dirname(mods[0]), 1)
    text += "\nudp_recv_channel {\n  port = %d\n  bind = 127.0.0.1\n  buffer = 4194304\n}\n" % port
    text += "\ntcp_accept_channel {\n  port = %d\n  bind = 127.0.0.1\n}\n" % port
    path = os.path.join(tmp, "gmond.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def agg_conf(tmp, port, key=None):
    path = os.path.join(tmp, "agg-%d.toml" % port)
    auth = 'auth = "required"\nkey_files = ["%s"]\n' % key if key else ""
    with open(path, "w") as f:
        f.write('grid_name = "bench"\nwrite_rrds = false\nrrd_root = "%s/rrds"\n[[cluster]]\nname = "bench"\n'
                'udp_listen = "127.0.0.1:%d"\nxml_listen = "127.0.0.1:%d"\nreverse_dns = false\n'
                'recv_buffer_bytes = 4194304\n%s[xml]\ndump_listen = ""\nquery_listen = ""\n[http]\nlisten = ""\n'
                % (tmp, port, port, auth))
    return path


def key_file(tmp, name, key_id, encrypt, alg):
    """A key file in the format `ganglion-agent keygen` writes (mode 0600)."""
    path = os.path.join(tmp, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write('key_id = %d\nalg = "%s"\nencrypt = %s\nsecret = "%s"\n'
                % (key_id, alg, "true" if encrypt else "false", os.urandom(32).hex()))
    return path


def seal_args(seal, sender):
    """udp-blast's arguments sealing as sender stream `sender` (none for plain)."""
    return ["--seal", seal, str(sender)] if seal else []


def blast(path, port, rounds, pps=None, seal=None):
    exe = os.path.join(ROOT, "target/release/udp-blast")
    argv = (["taskset", "-c", "1", exe, path, "127.0.0.1:%d" % port, str(rounds)] + ([str(pps)] if pps else [])
            + seal_args(seal, 2))
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    kv = dict(x.split("=") for x in out.split())
    return int(kv["sent"]), float(kv["secs"])


def run(name, argv, port, meta, values, rounds, pps=None, readers=0, interval=0.5, seal=None):
    proc = subprocess.Popen(["taskset", "-c", "0"] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        dst = ("127.0.0.1", port)
        # Metadata paced (~20k/s) so both receivers know every metric before
        # the value blast; otherwise RSS and dump size are not comparable.
        if seal:
            mfile = os.path.join(os.path.dirname(seal), "meta.bin")
            with open(mfile, "wb") as f:
                for p in meta:
                    f.write(struct.pack(">I", len(p)) + p)
            subprocess.run([os.path.join(ROOT, "target/release/udp-blast"), mfile, "127.0.0.1:%d" % port, "1",
                            "20000"] + seal_args(seal, 1), check=True, stdout=subprocess.DEVNULL)
        for i, p in enumerate([] if seal else meta):
            out.sendto(p, dst)
            if i % 500 == 499:
                time.sleep(0.025)
        time.sleep(0.5)
        import threading
        stop, counts = threading.Event(), []
        loops = [threading.Thread(target=reader_loop, args=(port, stop, counts, interval)) for _ in range(readers)]
        for t in loops:
            t.start()
        drops0, cpu0, rcpu0 = udp_drops(port), cpu_secs(proc.pid), recv_thread_cpu(proc.pid)
        sent, send_secs = blast(values, port, rounds, pps, seal)
        time.sleep(1.0)
        drops, cpu = udp_drops(port) - drops0, cpu_secs(proc.pid) - cpu0
        rcpu = recv_thread_cpu(proc.pid)
        rcpu = None if rcpu is None else rcpu - rcpu0
        stop.set()
        for t in loops:
            t.join()
        rss = rss_kb(proc.pid)
        # Full XML dump of everything received, while a paced sender keeps
        # ingest going (the dump must not stall it, nor it the dump).
        bg = subprocess.Popen(["taskset", "-c", "1", os.path.join(ROOT, "target/release/udp-blast"), values,
                               "127.0.0.1:%d" % port, "1000", "100000"] + seal_args(seal, 3),
                              stdout=subprocess.DEVNULL)
        times, size = [], 0
        try:
            for _ in range(5):
                t = time.time()
                size = len(read_xml(port))
                times.append(time.time() - t)
        finally:
            bg.kill()
            bg.wait()
        times.sort()
        return {"name": name, "sent": sent, "drops": drops, "offered_pps": sent / send_secs,
                "cpu_s": cpu, "us_per_pkt": cpu / max(sent - drops, 1) * 1e6, "rss_kb": rss,
                "recv_us_per_pkt": None if rcpu is None else rcpu / max(sent - drops, 1) * 1e6,
                "reader_dumps": len([c for c in counts if c > 0]), "reader_errors": len([c for c in counts if c < 0]),
                "dump_s": times[len(times) // 2], "dump_bytes": size}
    finally:
        proc.terminate()
        proc.wait(10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--pps", type=float, default=None, help="pace the sender (default: as fast as one core can)")
    ap.add_argument("--readers", type=int, default=0, help="clients looping over XML dumps during the blast")
    ap.add_argument("--reader-interval", type=float, default=0.5, help="pause of each reader between dumps (s)")
    ap.add_argument("--only", choices=["gmond", "ganglion"], help="run one receiver")
    ap.add_argument("--auth", action="store_true",
                    help="also run the aggregator with auth = required (authenticate-only, then encrypted)")
    ap.add_argument("--baseline", metavar="BINARY",
                    help="also run this ganglion-aggregator binary (e.g. main's release build), plain, first")
    ap.add_argument("--alg", default="chacha20-poly1305", choices=["chacha20-poly1305", "aes-256-gcm"],
                    help="the keys' algorithm with --auth")
    a = ap.parse_args()
    hosts = ["10.%d.%d.%d:node%05d" % (i >> 16 & 255, i >> 8 & 255, i & 255, i) for i in range(a.hosts)]
    names = ["m%02d" % j for j in range(30)]
    meta = [metadata(h, n) for h in hosts for n in names]
    values = [value(h, n, float(i % 100)) for i, (h, n) in enumerate((h, n) for h in hosts for n in names)]
    vfile = tempfile.NamedTemporaryFile(delete=False)
    for v in values:
        vfile.write(struct.pack(">I", len(v)) + v)
    vfile.close()
    agg = os.path.join(ROOT, "target/release/ganglion-aggregator")
    if not os.path.exists(agg):
        sys.exit("build first: cargo build --release")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        os.sched_setaffinity(0, {1})
        if a.only != "ganglion":
            p = free_port()
            results.append(run("gmond 3.7.2", ["gmond", "-f", "-c", gmond_conf(tmp, p)], p, meta, vfile.name,
                               a.rounds, a.pps, a.readers, a.reader_interval))
        if a.only != "gmond" and a.baseline:
            p = free_port()
            results.append(run("ganglion-aggregator (baseline)", [a.baseline, "--config", agg_conf(tmp, p)], p, meta,
                               vfile.name, a.rounds, a.pps, a.readers, a.reader_interval))
        if a.only != "gmond":
            p = free_port()
            results.append(run("ganglion-aggregator", [agg, "--config", agg_conf(tmp, p)], p, meta, vfile.name,
                               a.rounds, a.pps, a.readers, a.reader_interval))
            if a.auth:
                for label, enc in (("authenticated", False), ("encrypted", True)):
                    kdir = tempfile.mkdtemp(dir=tmp)
                    key = key_file(kdir, "bench.key", 1, enc, a.alg)
                    p = free_port()
                    results.append(run("ganglion-aggregator, %s (%s)" % (label, a.alg),
                                       [agg, "--config", agg_conf(tmp, p, key)], p, meta, vfile.name,
                                       a.rounds, a.pps, a.readers, a.reader_interval, seal=key))
    print("%d hosts x 30 metrics, %d value packets per receiver" % (a.hosts, results[0]["sent"]))
    nmetrics = a.hosts * 30
    if a.readers:
        print("%d clients looping over full XML dumps during the blast" % a.readers)
    print("| receiver | offered pkt/s | dropped | CPU µs per received packet | receive thread µs per packet | dumps read meanwhile | RSS KB | RSS bytes per metric | XML dump s (bytes) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        rt = "-" if r["recv_us_per_pkt"] is None else "%.2f" % r["recv_us_per_pkt"]
        print("| %s | %.0f | %d (%.1f %%) | %.2f | %s | %d (%d errors) | %d | %.0f | %.3f (%d) |" % (r["name"], r["offered_pps"], r["drops"],
              100.0 * r["drops"] / r["sent"], r["us_per_pkt"], rt, r["reader_dumps"], r["reader_errors"], r["rss_kb"],
              r["rss_kb"] * 1024.0 / nmetrics, r["dump_s"], r["dump_bytes"]))
    plain = [r for r in results if r["name"] == "ganglion-aggregator"]
    for r in results:
        if plain and (r["name"].startswith("ganglion-aggregator,") or r["name"].endswith("(baseline)")):
            print("%s / plain: CPU per packet %.2fx" % (r["name"], r["us_per_pkt"] / max(plain[0]["us_per_pkt"], 1e-9)))
    if len(results) < 2 or results[0]["name"] != "gmond 3.7.2":
        return
    g, o = results[0], results[1]
    print("\ngmond / ganglion: CPU per packet %.1fx, RSS %.1fx, XML dump time %.1fx"
          % (g["us_per_pkt"] / max(o["us_per_pkt"], 1e-9), g["rss_kb"] / max(o["rss_kb"], 1),
             g["dump_s"] / max(o["dump_s"], 1e-9)))


if __name__ == "__main__":
    main()

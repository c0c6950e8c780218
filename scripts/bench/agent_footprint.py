#!/usr/bin/env python3
"""Agent footprint side by side with real gmond (deaf, sending its default
metric set): CPU time per minute of steady running (from /proc/PID/schedstat,
nanoseconds) and steady RSS (VmRSS). Both run at once, each sending to its own
UDP sink on loopback. Usage: python3 scripts/bench/agent_footprint.py [SECONDS]
Needs a release build (cargo build --release) and gmond installed."""
import glob
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECS = int(sys.argv[1]) if len(sys.argv) > 1 else 60


def sink():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    count = [0]

    def run():
        while True:
            s.recv(2048)
            count[0] += 1
    threading.Thread(target=run, daemon=True).start()
    return s.getsockname()[1], count


def cpu_ns(pid):
    with open("/proc/%d/schedstat" % pid) as f:
        return int(f.read().split()[0])


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def gmond_conf(tmp, port):
    text = subprocess.run(["gmond", "-t"], capture_output=True, text=True, check=True).stdout
    for section in ("udp_send_channel", "udp_recv_channel", "tcp_accept_channel"):
        text = re.sub(r"\n%s \{.*?\n\}" % section, "", text, flags=re.S)
    text = re.sub(r'include \(".*?"\)', "", text)
    text = text.replace("daemonize = yes", "daemonize = no").replace("setuid = yes", "setuid = no")
    text = text.replace("deaf = no", "deaf = yes").replace("send_metadata_interval = 0", "send_metadata_interval = 60")
    mods = glob.glob("/usr/lib/*/ganglia/modcpu.so")
    if mods:
        text = text.replace("globals {", 'globals {\n  module_dir = "%s"' % os.path.dirname(mods[0]), 1)
    text += "\nudp_send_channel {\n  host = 127.0.0.1\n  port = %d\n}\n" % port
    path = os.path.join(tmp, "gmond.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def main():
    agent = os.path.join(ROOT, "target/release/ganglion-agent")
    with tempfile.TemporaryDirectory() as tmp:
        gport, gcount = sink()
        aport, acount = sink()
        g = subprocess.Popen(["gmond", "-f", "-c", gmond_conf(tmp, gport)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        a = subprocess.Popen([agent, "--send-to", "127.0.0.1:%d" % aport], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(5)  # past start-up (both send everything at start)
            g0, a0 = cpu_ns(g.pid), cpu_ns(a.pid)
            gp0, ap0 = gcount[0], acount[0]
            rss = {"g": [], "a": []}
            for _ in range(SECS):
                time.sleep(1)
                rss["g"].append(rss_kb(g.pid))
                rss["a"].append(rss_kb(a.pid))
            g1, a1 = cpu_ns(g.pid), cpu_ns(a.pid)
            per_min = 60.0 / SECS
            print("%d s steady running, both at once; CPU from /proc/PID/schedstat, RSS = VmRSS" % SECS)
            print("| sender | CPU ms per minute | steady RSS (KB, max) | datagrams sent |")
            print("|---|---|---|---|")
            print("| gmond 3.7.2 (deaf) | %.2f | %d | %d |" % ((g1 - g0) / 1e6 * per_min, max(rss["g"]), gcount[0] - gp0))
            print("| ganglion-agent | %.2f | %d | %d |" % ((a1 - a0) / 1e6 * per_min, max(rss["a"]), acount[0] - ap0))
        finally:
            for p in (g, a):
                p.terminate()
                p.wait(10)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Agent footprint side by side with real gmond (deaf, sending its default
metric set): CPU time per minute of steady running (from /proc/PID/schedstat,
nanoseconds) and steady RSS (VmRSS). Both run at once, each sending to its own
UDP sink on loopback. With --key, a third process runs: the agent with a
key_file (every datagram in the authenticated envelope).
Usage: python3 scripts/bench/agent_footprint.py [SECONDS] [--key]
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
ARGS = [a for a in sys.argv[1:] if a != "--key"]
SECS = int(ARGS[0]) if ARGS else 60
KEY = "--key" in sys.argv[1:]


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
        procs = [g, a]
        if KEY:
            kport, kcount = sink()
            key = os.path.join(tmp, "agent.key")
            subprocess.run([agent, "keygen", "--id", "1", "--out", key], check=True, stdout=subprocess.DEVNULL)
            k = subprocess.Popen([agent, "--key-file", key, "--send-to", "127.0.0.1:%d" % kport],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(k)
        try:
            time.sleep(5)  # past start-up (both send everything at start)
            g0, a0 = cpu_ns(g.pid), cpu_ns(a.pid)
            k0 = cpu_ns(k.pid) if KEY else 0
            gp0, ap0 = gcount[0], acount[0]
            kp0 = kcount[0] if KEY else 0
            rss = {"g": [], "a": [], "k": []}
            for _ in range(SECS):
                time.sleep(1)
                rss["g"].append(rss_kb(g.pid))
                rss["a"].append(rss_kb(a.pid))
                if KEY:
                    rss["k"].append(rss_kb(k.pid))
            g1, a1 = cpu_ns(g.pid), cpu_ns(a.pid)
            k1 = cpu_ns(k.pid) if KEY else 0
            per_min = 60.0 / SECS
            print("%d s steady running, both at once; CPU from /proc/PID/schedstat, RSS = VmRSS" % SECS)
            print("| sender | CPU ms per minute | steady RSS (KB, max) | datagrams sent |")
            print("|---|---|---|---|")
            print("| gmond 3.7.2 (deaf) | %.2f | %d | %d |" % ((g1 - g0) / 1e6 * per_min, max(rss["g"]), gcount[0] - gp0))
            print("| ganglion-agent | %.2f | %d | %d |" % ((a1 - a0) / 1e6 * per_min, max(rss["a"]), acount[0] - ap0))
            if KEY:
                print("| ganglion-agent with key_file | %.2f | %d | %d |"
                      % ((k1 - k0) / 1e6 * per_min, max(rss["k"]), kcount[0] - kp0))
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)


if __name__ == "__main__":
    main()

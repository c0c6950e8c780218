#!/usr/bin/env python3
"""Recaptures the golden datagrams in this directory from the real Ganglia 3.7.2
binaries (Debian's `ganglia-monitor` package: gmond and gmetric).

Every peer runs with its own config in a temp dir and sends to a UDP socket this
script owns on 127.0.0.1; nothing touches Ganglia's default ports. Run it from
anywhere: `python3 proto/tests/data/packets/recapture.py`. It rewrites the
`*.bin` files and `manifest.json` next to itself.
"""
import glob
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.5)
    return s, s.getsockname()[1]


def drain(sock, seconds):
    out, end = [], time.time() + seconds
    while time.time() < end:
        try:
            out.append(sock.recvfrom(65535)[0])
        except socket.timeout:
            pass
    return out


def gmetric_conf(tmp, port):
    path = os.path.join(tmp, "gmetric.conf")
    with open(path, "w") as f:
        f.write("globals {\n}\nudp_send_channel {\n  host = 127.0.0.1\n  port = %d\n}\n" % port)
    return path


def gmond_conf(tmp, name, send_port, recv_port=None, deaf=True):
    """gmond's own default config (`gmond -t`) with our channels swapped in."""
    text = subprocess.run(["gmond", "-t"], capture_output=True, text=True, check=True).stdout
    for section in ("udp_send_channel", "udp_recv_channel", "tcp_accept_channel"):
        text = re.sub(r"\n%s \{.*?\n\}" % section, "", text, flags=re.S)
    text = text.replace("daemonize = yes", "daemonize = no").replace("setuid = yes", "setuid = no")
    # Module paths in `gmond -t` are relative to the build's module_dir.
    mods = glob.glob("/usr/lib/*/ganglia/modcpu.so") + glob.glob("/usr/lib*/ganglia/modcpu.so")
    if mods:
        text = text.replace("globals {", 'globals {\n  module_dir = "%s"' % os.path.dirname(mods[0]), 1)
    # Keep the host's own conf.d (e.g. modpython) out of the capture.
    text = re.sub(r'include \(".*?"\)', "", text)
    text = text.replace("deaf = no", "deaf = %s" % ("yes" if deaf else "no"))
    text += "\nudp_send_channel {\n  host = 127.0.0.1\n  port = %d\n}\n" % send_port
    if recv_port:
        text += "\nudp_recv_channel {\n  port = %d\n  bind = 127.0.0.1\n}\n" % recv_port
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def gmetric(conf, *args):
    subprocess.run(["gmetric", "-c", conf, *args], check=True)


def main():
    captured = []  # (file, source, description, args)
    with tempfile.TemporaryDirectory() as tmp:
        sock, port = listener()
        conf = gmetric_conf(tmp, port)

        def cap_gmetric(stem, desc, args, expect=2):
            gmetric(conf, *args)
            pkts = drain(sock, 0.7)
            assert len(pkts) == expect, (stem, len(pkts))
            names = ["meta", "value"]
            for i, p in enumerate(pkts):
                fname = "gmetric_%s_%s.bin" % (stem, names[i])
                with open(os.path.join(HERE, fname), "wb") as f:
                    f.write(p)
                captured.append({"file": fname, "source": "gmetric 3.7.2", "description": desc, "args": args})

        cap_gmetric("float", "float with units, slope, tmax, group, desc, title",
                    ["-n", "temp_c", "-v", "42.5", "-t", "float", "-u", "Celsius", "-s", "both", "-x", "60",
                     "-d", "0", "-g", "env", "-D", "Room temp", "-T", "Temperature"])
        for t, v in [("int8", "-8"), ("uint8", "200"), ("int16", "-300"), ("uint16", "60000"),
                     ("int32", "-70000"), ("uint32", "4000000000"), ("double", "3.14159265358979"),
                     ("string", "hello world")]:
            cap_gmetric(t, "type %s" % t, ["-n", "m_%s" % t, "-v", v, "-t", t])
        cap_gmetric("spoof", "spoofed host with dmax and cluster",
                    ["-n", "jobs", "-v", "7", "-t", "uint32", "-S", "10.0.0.5:node5", "-d", "300", "-C", "mycluster"])
        cap_gmetric("spoof_heartbeat", "spoofed heartbeat", ["-S", "10.0.0.5:node5", "-H"])
        cap_gmetric("multigroup", "two groups, positive slope",
                    ["-n", "reqs", "-v", "12", "-t", "uint32", "-g", "web,app", "-s", "positive", "-u", "req/s"])
        cap_gmetric("derivative", "derivative slope", ["-n", "bytes_total", "-v", "1e6", "-t", "double",
                                                     "-s", "derivative"])

        # gmond's own metrics: deaf, sending to us. Keep one packet of each kind.
        gconf = gmond_conf(tmp, "gmond-sender.conf", port)
        g = subprocess.Popen(["gmond", "-f", "-c", gconf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            pkts = drain(sock, 4.0)
        finally:
            g.send_signal(signal.SIGTERM)
            g.wait(5)
        wanted = {
            "gmond_meta_cpu_num.bin": (128, b"cpu_num"),
            "gmond_ushort_cpu_num.bin": (129, b"cpu_num"),
            "gmond_uint_heartbeat.bin": (132, b"heartbeat"),
            "gmond_float_load_one.bin": (134, b"load_one"),
            "gmond_float_part_max_used.bin": (134, b"part_max_used"),
            "gmond_double_disk_free.bin": (135, b"disk_free"),
            "gmond_string_os_name.bin": (133, b"os_name"),
            "gmond_meta_load_one.bin": (128, b"load_one"),
        }
        for fname, (mid, name) in wanted.items():
            for p in pkts:
                if int.from_bytes(p[:4], "big") == mid and name in p[:64]:
                    with open(os.path.join(HERE, fname), "wb") as f:
                        f.write(p)
                    captured.append({"file": fname, "source": "gmond 3.7.2",
                                     "description": "gmond's own %s packet (id %d)" % (name.decode(), mid)})
                    break
            else:
                raise SystemExit("gmond sent no %s packet for %s" % (mid, name))

        # Metadata request: a value with no metadata, sent to a listening gmond whose
        # send channel points at us, makes it send a 136.
        rsock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rsock.bind(("127.0.0.1", 0))
        rport = rsock.getsockname()[1]
        rsock.close()
        rconf = gmond_conf(tmp, "gmond-collector.conf", port, recv_port=rport, deaf=False)
        g = subprocess.Popen(["gmond", "-f", "-c", rconf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.0)
            drain(sock, 0.5)
            with open(os.path.join(HERE, "gmetric_string_value.bin"), "rb") as f:
                orphan = f.read()
            out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            out.sendto(orphan, ("127.0.0.1", rport))
            req = None
            for p in drain(sock, 2.0):
                if int.from_bytes(p[:4], "big") == 136:
                    req = p
                    break
        finally:
            g.send_signal(signal.SIGTERM)
            g.wait(5)
        if req is None:
            raise SystemExit("gmond sent no metadata request")
        with open(os.path.join(HERE, "gmond_metadata_request.bin"), "wb") as f:
            f.write(req)
        captured.append({"file": "gmond_metadata_request.bin", "source": "gmond 3.7.2",
                         "description": "metadata request for a value that arrived without metadata"})

    with open(os.path.join(HERE, "manifest.json"), "w") as f:
        json.dump(captured, f, indent=1)
        f.write("\n")
    print("captured %d datagrams" % len(captured))


if __name__ == "__main__":
    main()

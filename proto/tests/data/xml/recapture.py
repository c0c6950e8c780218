#!/usr/bin/env python3
"""Recaptures the golden XML documents in this directory from the real Ganglia
3.7.2 daemons: gmond's XML port, gmetad's dump port (8651-style) and gmetad's
interactive port (`/?filter=summary`). Everything runs with its own config in a
temp dir on free loopback ports. Run: `python3 proto/tests/data/xml/recapture.py`.
"""
import glob
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    while True:
        t = socket.socket()
        t.bind(("127.0.0.1", 0))
        p = t.getsockname()[1]
        t.close()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            u.close()


def read_tcp(port, request=None, timeout=10):
    end = time.time() + timeout
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except OSError:
            if time.time() > end:
                raise
            time.sleep(0.2)
    if request:
        s.sendall(request)
    chunks = []
    while True:
        b = s.recv(65536)
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


def gmond_conf(tmp, port):
    text = subprocess.run(["gmond", "-t"], capture_output=True, text=True, check=True).stdout
    for section in ("udp_send_channel", "udp_recv_channel", "tcp_accept_channel"):
        text = re.sub(r"\n%s \{.*?\n\}" % section, "", text, flags=re.S)
    text = text.replace("daemonize = yes", "daemonize = no").replace("setuid = yes", "setuid = no")
    mods = glob.glob("/usr/lib/*/ganglia/modcpu.so") + glob.glob("/usr/lib*/ganglia/modcpu.so")
    if mods:
        text = text.replace("globals {", 'globals {\n  module_dir = "%s"' % os.path.dirname(mods[0]), 1)
    text = re.sub(r'include \(".*?"\)', "", text)
    text = text.replace('name = "unspecified"', 'name = "testclust"', 1)
    text += "\nudp_send_channel {\n  host = 127.0.0.1\n  port = %d\n}\n" % port
    text += "\nudp_recv_channel {\n  port = %d\n  bind = 127.0.0.1\n}\n" % port
    text += "\ntcp_accept_channel {\n  port = %d\n  bind = 127.0.0.1\n}\n" % port
    path = os.path.join(tmp, "gmond.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def main():
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        gconf = gmond_conf(tmp, port)
        gmond = subprocess.Popen(["gmond", "-f", "-c", gconf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        gmetad = None
        try:
            time.sleep(1.5)
            for args in (
                ["-n", "temp_c", "-v", "42.5", "-t", "float", "-u", "Celsius", "-g", "env", "-D", "Room temp",
                 "-T", "Temperature"],
                ["-n", "jobs", "-v", "7", "-t", "uint32", "-S", "10.0.0.5:node5", "-d", "300", "-C", "mycluster"],
                ["-S", "10.0.0.5:node5", "-H"],
                ["-n", "motd", "-v", "a&b<c>'d'", "-t", "string"],
            ):
                subprocess.run(["gmetric", "-c", gconf, *args], check=True)
            time.sleep(1.0)
            with open(os.path.join(HERE, "gmond.xml"), "wb") as f:
                f.write(read_tcp(port))

            rrds = os.path.join(tmp, "rrds")
            os.mkdir(rrds)
            xml_port, q_port = free_port(), free_port()
            mconf = os.path.join(tmp, "gmetad.conf")
            with open(mconf, "w") as f:
                f.write('data_source "test" 15 127.0.0.1:%d\n' % port)
                f.write('gridname "TestGrid"\nauthority "http://example.test/ganglia/"\n')
                f.write("xml_port %d\ninteractive_port %d\n" % (xml_port, q_port))
                f.write('rrd_rootdir "%s"\nsetuid off\ncase_sensitive_hostnames 0\n' % rrds)
            gmetad = subprocess.Popen(["gmetad", "-d", "1", "-c", mconf],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(6)
            with open(os.path.join(HERE, "gmetad-dump.xml"), "wb") as f:
                f.write(read_tcp(xml_port))
            with open(os.path.join(HERE, "gmetad-summary.xml"), "wb") as f:
                f.write(read_tcp(q_port, b"/?filter=summary\n"))
            with open(os.path.join(HERE, "gmetad-host.http"), "wb") as f:
                f.write(read_tcp(q_port, b"GET /testclust/node5 HTTP/1.0\r\n\r\n"))
        finally:
            for p in (gmetad, gmond):
                if p:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(5)
                    except subprocess.TimeoutExpired:
                        p.kill()
    print("captured gmond.xml, gmetad-dump.xml, gmetad-summary.xml, gmetad-host.http")


if __name__ == "__main__":
    main()

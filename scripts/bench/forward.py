#!/usr/bin/env python3
"""Forwarding cost (issue #18): what `[[forward]] kind = "remote_write"` to a
private VictoriaMetrics adds to ganglion-aggregator's CPU at a million
metrics per 15 s step.

The same load runs twice, one aggregator after the other: without a forward
("off"), then with one remote-write forward to VictoriaMetrics ("rw").
Storage is off in both (write_rrds = false) so the difference is the
forward alone; storage_scale.py --forward-vm runs the zero-loss storage
benchmark with the forward on. Load: H spoofed hosts x M float metrics over
UDP (storage_scale.py's packets and udp-blast): metadata once, then one
round of values per step. After --warm steps, a window of --steps steps:
aggregator CPU (utime + stime) per step, VictoriaMetrics' CPU, the forward's
counters (samples queued, sent, dropped by reason, retries, send time) and
VictoriaMetrics' `vm_rows_inserted_total{type="promremotewrite"}`.

Usage:
  python3 scripts/bench/forward.py --hosts 33334 --metrics 30 --steps 8
Needs: cargo build --release -p ganglion-aggregator and
cargo build --release -p ganglion-tests --bin udp-blast, and Debian's
victoria-metrics. Every process it starts is stopped by PID and its temp
dirs removed, also on Ctrl-C.
"""
import argparse
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import ingest  # noqa: E402
import storage_scale as ss  # noqa: E402  packets, ports, cleanup, readers

log = ss.log


def start_vm(cl, ports, workdir):
    d = cl.mkdtemp(workdir, "forward-vm-")
    port = ports.take()
    p = cl.spawn(["victoria-metrics", "-storageDataPath=" + d, "-httpListenAddr=127.0.0.1:%d" % port,
                  "-retentionPeriod=1d", "-loggerLevel=ERROR"],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while True:
        try:
            if ss.http(port, "GET", "/health")[0] == 200:
                return p, port
        except OSError:
            pass
        if time.time() > deadline:
            raise SystemExit("victoria-metrics did not answer /health")
        time.sleep(0.1)


def vm_rows(port):
    _, body = ss.http(port, "GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith('vm_rows_inserted_total{type="promremotewrite"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def fwd(m, name):
    return m.get('%s{forward="vm"}' % name, 0.0)


def run(a, mode, hosts, cl, ports):
    tmp = cl.mkdtemp(a.workdir, "forward-bench-")
    names = ss.metric_names(a.metrics)
    n = hosts * a.metrics
    vm, vm_port = (None, None)
    if mode == "rw":
        vm, vm_port = start_vm(cl, ports, a.workdir)
    udp_port, http_port = ports.take(udp=True), ports.take()
    conf = os.path.join(tmp, "agg.toml")
    with open(conf, "w") as f:
        f.write('grid_name = "bench"\nrrd_root = "%s"\nwrite_rrds = false\nstep_secs = %d\n'
                % (os.path.join(tmp, "rrds"), a.step))
        f.write('[[cluster]]\nname = "%s"\nudp_listen = "127.0.0.1:%d"\nxml_listen = ""\nreverse_dns = false\n'
                'recv_buffer_bytes = %d\n' % (ss.CLUSTER, udp_port, a.recv_buffer))
        f.write('[xml]\ndump_listen = ""\nquery_listen = ""\n[http]\nlisten = "127.0.0.1:%d"\n' % http_port)
        f.write('[limits]\nmax_hosts_per_cluster = %d\n' % max(100000, hosts + 10))
        if mode == "rw":
            f.write('[[forward]]\nname = "vm"\nkind = "remote_write"\nurl = "http://127.0.0.1:%d/api/v1/write"\n'
                    'queue_max_bytes = %d\nmax_samples_per_send = %d\n'
                    % (vm_port, a.queue_mb << 20, a.batch))
    blast_exe = os.path.join(os.path.dirname(a.agg), "udp-blast")
    pkt_dir = cl.mkdtemp("/dev/shm" if os.access("/dev/shm", os.W_OK) else tmp, "forward-pkts-")
    ids = ss.host_ids(hosts)
    meta = os.path.join(pkt_dir, "meta.bin")
    ss.write_metadata(meta, ids, names)
    rounds = ss.Rounds(ids, names, pkt_dir)
    del ids
    agg_log = os.path.join(tmp, "aggregator.log")
    with open(agg_log, "w") as lf:
        agg = cl.spawn([a.agg, "--config", conf], stdin=subprocess.DEVNULL, stdout=lf, stderr=lf)
    deadline = time.time() + 30
    while True:
        try:
            ss.scrape(http_port)
            break
        except OSError:
            if time.time() > deadline or agg.poll() is not None:
                raise SystemExit("aggregator did not start:\n" + ss.log_tail(agg_log))
            time.sleep(0.2)
    log("%s: %d hosts x %d metrics = %d; metadata" % (mode, hosts, a.metrics, n))
    ss.blast_wait(cl, ss.blast(cl, blast_exe, meta, udp_port, a.meta_pps))
    pps = rounds.n / max(1.0, a.step - 5.0)
    value = [0.0]
    # Rounds start every step on a fixed cadence, 3 s after a boundary
    # (when the forward's pass runs), late rather than skipped.
    t_first = (int(time.time()) // a.step + 1) * a.step + 3

    def send_round():
        t_next = t_first + value[0] * a.step
        value[0] += 1
        time.sleep(max(0.0, t_next - time.time()))
        ss.blast_wait(cl, ss.blast(cl, blast_exe, rounds.write(value[0]), udp_port, pps))
        if agg.poll() is not None:
            raise SystemExit("aggregator exited:\n" + ss.log_tail(agg_log))

    for _ in range(a.warm):
        send_round()
    held = ss.scrape(http_port).get('ganglion_metrics{cluster="%s"}' % ss.CLUSTER, 0)
    m0, cpu0, th0 = ss.scrape(http_port), ingest.cpu_secs(agg.pid), ss.thread_cpu(agg.pid)
    vcpu0 = ingest.cpu_secs(vm.pid) if vm else 0.0
    rows0 = vm_rows(vm_port) if vm else 0.0
    t0 = time.time()
    log("%s: %d metrics held; measuring %d steps" % (mode, held, a.steps))
    qmax = 0.0
    for _ in range(a.steps):
        send_round()
        qmax = max(qmax, fwd(ss.scrape(http_port), "ganglion_forward_queue_bytes"))
    # Let the last pass of the window go out before reading the counters.
    time.sleep(max(0.0, (int(time.time()) // a.step + 1) * a.step + 2 - time.time()))
    steps = (time.time() - t0) / a.step
    cpu1, th1 = ingest.cpu_secs(agg.pid), ss.thread_cpu(agg.pid)
    recv = th1.get("recv-" + ss.CLUSTER, 0) - th0.get("recv-" + ss.CLUSTER, 0)
    vcpu1 = ingest.cpu_secs(vm.pid) if vm else 0.0
    m1 = ss.scrape(http_port)
    rows1 = vm_rows(vm_port) if vm else 0.0
    rss, hwm = ss.mem_kb(agg.pid)
    d = {k: m1.get(k, 0) - m0.get(k, 0) for k in set(m0) | set(m1)}
    dropped = sum(v for k, v in d.items() if k.startswith('ganglion_forward_dropped_total{forward="vm"'))
    lat_n = d.get('ganglion_forward_send_duration_seconds_count{forward="vm"}', 0)
    lat_s = d.get('ganglion_forward_send_duration_seconds_sum{forward="vm"}', 0)
    cl.stop(agg)
    if vm:
        cl.stop(vm)
    cl.rmtree(tmp)
    cl.rmtree(pkt_dir)
    return {
        "mode": mode, "hosts": hosts, "metrics": n, "held": held, "steps": steps,
        "cpu_step": (cpu1 - cpu0) / steps,
        # UDP receive per round; everything else (the forward, snapshots,
        # the runtime) per step of wall time, the forward's cadence.
        "recv_round": recv / a.steps, "rest_step": (cpu1 - cpu0 - recv) / steps, "rss_mb": rss / 1024, "hwm_mb": hwm / 1024,
        "vm_cpu_step": (vcpu1 - vcpu0) / steps,
        "queued_step": d.get('ganglion_forward_samples_total{forward="vm"}', 0) / steps,
        "sent_step": d.get('ganglion_forward_sent_total{forward="vm"}', 0) / steps,
        "vm_rows_step": (rows1 - rows0) / steps,
        "dropped": dropped, "retried": d.get('ganglion_forward_retried_total{forward="vm"}', 0),
        "send_ms": 1000.0 * lat_s / lat_n if lat_n else 0.0, "requests_step": lat_n / steps,
        "queue_max_mb": qmax / 1e6,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=33334)
    ap.add_argument("--metrics", type=int, default=30)
    ap.add_argument("--step", type=int, default=15)
    ap.add_argument("--warm", type=int, default=3, help="steps before the window (default 3)")
    ap.add_argument("--steps", type=int, default=8, help="measured steps (default 8)")
    ap.add_argument("--batch", type=int, default=2000, help="max_samples_per_send (default 2000)")
    ap.add_argument("--queue-mb", type=int, default=64, help="queue_max_bytes in MiB (default 64)")
    ap.add_argument("--modes", default="off,rw", help="off, rw or both (default off,rw)")
    ap.add_argument("--agg", default=os.path.join(ss.default_bin_dir(), "ganglion-aggregator"))
    ap.add_argument("--meta-pps", type=float, default=50000)
    ap.add_argument("--recv-buffer", type=int, default=32 << 20)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    cl, ports = ss.Cleanup(), ss.Ports()
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, ss._exit_on_signal)
    results = []
    try:
        for mode in a.modes.split(","):
            results.append(run(a, mode, a.hosts, cl, ports))
            log(repr(results[-1]))
    finally:
        cl.all()
    print("\n| mode | metrics/step | CPU s/step | cores | UDP receive s/round | rest s/step | RSS / peak MB | VM CPU s/step | queued/step | sent/step "
          "| VM rows/step | dropped | retried | requests/step | mean send ms | queue peak MB |")
    print("|" + "---|" * 16)
    for r in results:
        print("| %s | %d | %.3f | %.3f | %.3f | %.3f | %.0f / %.0f | %.3f | %.0f | %.0f | %.0f | %d | %d | %.0f | %.2f | %.1f |" % (
            r["mode"], r["held"], r["cpu_step"], r["cpu_step"] / a.step, r["recv_round"], r["rest_step"], r["rss_mb"], r["hwm_mb"],
            r["vm_cpu_step"], r["queued_step"], r["sent_step"], r["vm_rows_step"], r["dropped"], r["retried"],
            r["requests_step"], r["send_ms"], r["queue_max_mb"]))
    if len(results) == 2:
        extra = (results[1]["rest_step"] - results[0]["rest_step"]) / a.step
        total = (results[1]["cpu_step"] - results[0]["cpu_step"]) / a.step
        print("\nforwarding adds %.3f of a core outside UDP receive (%.3f in total; target <= 0.15)" % (extra, total))


if __name__ == "__main__":
    main()

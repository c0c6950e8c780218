# ganglion-agent's host for gmond Python metric modules (gmond's modpython
# protocol): imports the module file, calls metric_init(params) once, then on
# every "collect" line from the agent calls each descriptor's call_back(name)
# and answers one JSON line. metric_cleanup() runs when stdin closes.
# Everything the module prints goes to stderr, which the agent logs; stdout
# carries only this protocol.
import importlib.util
import json
import math
import os
import sys

proto = sys.stdout
sys.stdout = sys.stderr


def send(obj):
    proto.write(json.dumps(obj) + "\n")
    proto.flush()


def main():
    path, params = sys.argv[1], json.loads(sys.argv[2])
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    descs = mod.metric_init(params)
    if isinstance(descs, dict):
        descs = [descs]
    if not isinstance(descs, (list, tuple)):
        raise TypeError("metric_init returned %s, not a list of descriptors" % type(descs).__name__)
    out = []
    for d in descs:
        if not isinstance(d, dict) or "name" not in d or not callable(d.get("call_back")):
            raise TypeError("descriptor without name or callable call_back: %r" % (d,))
        out.append({k: (str(v) if not isinstance(v, (int, float, str)) else v)
                    for k, v in d.items() if k != "call_back"})
    send({"descriptors": out})
    for line in sys.stdin:
        if line.strip() != "collect":
            continue
        values = []
        for d in descs:
            try:
                v = d["call_back"](d["name"])
            except Exception as e:  # a failing callback costs only its metric
                values.append({"name": d["name"], "error": "%s: %s" % (type(e).__name__, e)})
                continue
            if isinstance(v, bool) or v is None or (isinstance(v, float) and not math.isfinite(v)):
                values.append({"name": d["name"], "error": "returned %r" % (v,)})
            elif isinstance(v, (int, float, str)):
                values.append({"name": d["name"], "value": v})
            elif isinstance(v, bytes):
                values.append({"name": d["name"], "value": v.decode("utf-8", "replace")})
            else:
                values.append({"name": d["name"], "error": "returned a %s" % type(v).__name__})
        send({"values": values})
    cleanup = getattr(mod, "metric_cleanup", None)
    if callable(cleanup):
        cleanup()


main()

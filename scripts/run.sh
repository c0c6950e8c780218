#!/usr/bin/env bash
# The README's run command: builds in release mode, starts an aggregator with
# the embedded local config (localhost ports, data under ./var/) and a local
# agent sending to it, and prints the dashboard URL. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh build
cargo build --release --locked --bins

mkdir -p var
for port in 8649 8651 8652 8080; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port on 127.0.0.1 is already in use (an earlier run.sh, or Ganglia itself?); stop it first" >&2
    exit 1
  fi
done

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

./target/release/ganglion-aggregator --local 2> >(tee var/aggregator.log >&2) &
pids+=($!)
up=0
for _ in $(seq 1 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then up=1; break; fi
  kill -0 "${pids[0]}" 2>/dev/null || break
  sleep 0.1
done
if [ "$up" -ne 1 ]; then
  echo >&2
  echo "run.sh: the aggregator did not come up on 127.0.0.1:8080 within 10 s; its log (var/aggregator.log) ends with:" >&2
  tail -n 20 var/aggregator.log >&2 || true
  exit 1
fi

./target/release/ganglion-agent --send-to 127.0.0.1:8649 2> >(tee var/agent.log >&2) &
pids+=($!)

cat <<MSG

  Ganglion is running.
    dashboard        http://127.0.0.1:8080/
    gmond XML        127.0.0.1:8649   (e.g. gstat -a -i 127.0.0.1 -p 8649)
    gmetad dump      127.0.0.1:8651
    gmetad queries   127.0.0.1:8652   (e.g. echo /?filter=summary | nc 127.0.0.1 8652)
    send a metric    ./target/release/ganglion-agent send -n temp -v 21.5 -t float --send-to 127.0.0.1:8649
  Data lives under ./var/. Press Ctrl-C to stop.

MSG
wait -n "${pids[@]}"

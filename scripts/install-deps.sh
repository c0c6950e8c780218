#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, without letting
# Debian's maintainer scripts start gmond/gmetad/rrdcached on their default ports.
# Idempotent: packages already present are left alone.
#
#   install-deps.sh build   what `cargo build` needs (librrd headers, bindgen's libclang)
#   install-deps.sh test    that plus every peer the tests run (the default)
set -euo pipefail

BUILD_PKGS=(
  pkg-config librrd-dev libclang-dev clang g++   # rrd-sys (bindgen), libFuzzer's C++ runtime
)
TEST_PKGS=(
  rrdtool rrdcached                          # storage peers
  ganglia-monitor gmetad                     # gmond, gmetric, gmetad, gstat
  libxml2-utils                              # xmllint --valid
  chromium                                   # dashboard browser tests
)

case "${1:-test}" in
  build) PKGS=("${BUILD_PKGS[@]}") ;;
  test) PKGS=("${BUILD_PKGS[@]}" "${TEST_PKGS[@]}") ;;
  *) echo "usage: $0 [build|test]" >&2; exit 2 ;;
esac

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js drives the browser tests (playwright-core). Any node/npm on PATH will
# do; only when there is none do we take Debian's (mixing with another vendor's
# nodejs package would conflict).
if [ "${1:-test}" = test ] && ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
  echo "installing ${missing[*]} with sudo" >&2
fi

# policy-rc.d exit 101 = "action forbidden": postinst scripts may not start services.
policy=/usr/sbin/policy-rc.d
had_policy=0
[ -e "$policy" ] && had_policy=1
if [ $had_policy -eq 0 ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
fi
cleanup() { [ $had_policy -eq 0 ] && $SUDO rm -f "$policy"; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# Belt and braces: if a unit was started anyway (systemd-less containers ignore
# policy-rc.d for some init paths), stop it so default ports stay free.
for svc in ganglia-monitor gmetad rrdcached; do
  $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
for bin in gmond gmetad rrdcached; do
  $SUDO pkill -x "$bin" >/dev/null 2>&1 || true
done

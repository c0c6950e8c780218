#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, without letting
# Debian's maintainer scripts start gmond/gmetad/rrdcached on their default ports.
# Idempotent: packages already present are left alone.
set -euo pipefail

PKGS=(
  pkg-config librrd-dev libclang-dev clang   # rrd-sys (bindgen)
  rrdtool rrdcached                          # storage peers
  ganglia-monitor gmetad                     # gmond, gmetric, gmetad, gstat
  libxml2-utils                              # xmllint --valid
  chromium                                   # dashboard browser tests
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
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

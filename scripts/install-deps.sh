#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, without letting
# Debian's maintainer scripts start gmond/gmetad/rrdcached on their default ports.
# Idempotent: packages already present are left alone.
#
#   install-deps.sh build   what `cargo build` needs (librrd headers, bindgen's libclang)
#   install-deps.sh test    that plus every peer the tests run (the default)
#
# Safe on a machine that already runs Ganglia: it never stops, kills or
# reconfigures a service or process it did not install. Services that come
# with packages it installs are kept from starting (policy-rc.d during the
# install) and, on systemd machines, masked afterwards so a reboot does not
# start them on 8649/8651/8652 either.
#
# The tests drive this script with shims on PATH; these variables let them
# point it at a scratch root (defaults are the real system).
set -euo pipefail

POLICY_RC_D="${GANGLION_POLICY_RC_D:-/usr/sbin/policy-rc.d}"
LOCK_FILE="${GANGLION_INSTALL_LOCK:-/tmp/ganglion-install-deps.lock}"
SYSTEMD_DIR="${GANGLION_SYSTEMD_RUNDIR:-/run/systemd/system}"

BUILD_PKGS=(
  pkg-config librrd-dev libclang-dev clang g++   # rrd-sys (bindgen), libFuzzer's C++ runtime
)
TEST_PKGS=(
  rrdtool rrdcached                          # storage peers
  ganglia-monitor gmetad                     # gmond, gmetric, gmetad, gstat
  libxml2-utils                              # xmllint --valid
  chromium                                   # dashboard browser tests
  iproute2                                   # network namespaces for the multicast tests
  lintian                                    # checks the packages scripts/build-debs.sh builds
  curl                                       # HTTPS and basic-auth client in http_security.rs
  # A private nagios4 for tests/tests/nagios.rs (check_dummy from the plugins). Its
  # mail dependency (bsd-mailx) needs an MTA: see dma below.
  nagios4-core monitoring-plugins-basic
  victoria-metrics prometheus                # [[forward]] remote write / Graphite / scrape targets (tests/tests/forward.rs)
  graphite-carbon python3-whisper            # carbon-cache + whisper-fetch for the Graphite forward
)
# Packages that bring a service of their own, and the units they bring.
declare -A SERVICE_UNITS=(
  [ganglia-monitor]="ganglia-monitor"
  [gmetad]="gmetad"
  [rrdcached]="rrdcached"
  [nagios4-core]="nagios4"
  [victoria-metrics]="victoria-metrics"
  [prometheus]="prometheus"
  [graphite-carbon]="carbon-cache"
)

mode="${1:-test}"
case "$mode" in
  build) PKGS=("${BUILD_PKGS[@]}") ;;
  test) PKGS=("${BUILD_PKGS[@]}" "${TEST_PKGS[@]}") ;;
  list)
    # Every package with the units it brings (if any), one per line: what
    # tests/tests/installer.rs checks against, so the lists live only here.
    for p in "${BUILD_PKGS[@]}" "${TEST_PKGS[@]}"; do echo "$p ${SERVICE_UNITS[$p]:-}"; done
    exit 0 ;;
  *) echo "usage: $0 [build|test|list]" >&2; exit 2 ;;
esac

for tool in dpkg-query apt-get; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-deps.sh: $tool not found; this script installs Debian packages (bookworm or newer)." >&2
    echo "  Install the equivalents of: ${PKGS[*]}" >&2
    exit 1
  fi
done

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
for p in "${PKGS[@]}"; do
  installed "$p" || missing+=("$p")
done
# Node.js drives the browser tests (playwright-core). Any node/npm on PATH will
# do; only when there is none do we take Debian's (mixing with another vendor's
# nodejs package would conflict).
if [ "$mode" = test ] && ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
# nagios4-core needs a mail transport agent (through bsd-mailx); on a machine
# with none, apt would pick exim4, a daemon on port 25 enabled for every boot.
# dma satisfies it with no listener. A machine that has an MTA keeps it: MTAs
# conflict with each other, so dma is only ever added where there is none.
if printf '%s\n' "${missing[@]}" | grep -qx nagios4-core \
  && [ ! -e "${GANGLION_SENDMAIL:-/usr/sbin/sendmail}" ]; then
  missing+=(dma)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
  echo "installing ${missing[*]} with sudo" >&2
fi

# Two runs at once would race on policy-rc.d (one removing it mid-install of the other).
exec 9>"$LOCK_FILE"
flock 9

# Units of service packages this run installs; only these are ever touched.
new_units=()
for p in "${missing[@]}"; do
  if [ -n "${SERVICE_UNITS[$p]:-}" ]; then new_units+=("${SERVICE_UNITS[$p]}"); fi
done

# policy-rc.d exit 101 = "action forbidden": invoke-rc.d and deb-systemd-invoke
# then start nothing. A policy that already forbids (Debian container images ship
# one) is left as it is; one that would allow starts is set aside for the
# install and put back afterwards, byte for byte.
policy_state=kept
if [ -e "$POLICY_RC_D" ]; then
  rc=0
  "$POLICY_RC_D" gmetad start >/dev/null 2>&1 || rc=$?
  if [ "$rc" -ne 101 ]; then
    policy_state=replaced
    $SUDO mv "$POLICY_RC_D" "$POLICY_RC_D.ganglion-saved"
  fi
else
  policy_state=created
fi
if [ "$policy_state" != kept ]; then
  printf '#!/bin/sh\n# written by ganglion install-deps.sh for the length of one install\nexit 101\n' |
    $SUDO tee "$POLICY_RC_D" >/dev/null
  $SUDO chmod 755 "$POLICY_RC_D"
fi
cleanup() {
  case "$policy_state" in
    created) $SUDO rm -f "$POLICY_RC_D" ;;
    replaced) $SUDO mv -f "$POLICY_RC_D.ganglion-saved" "$POLICY_RC_D" ;;
  esac
  return 0
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -qq; then
  echo "install-deps.sh: apt-get update failed; trying to install from the package lists already on this machine" >&2
fi
if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
  echo "install-deps.sh: apt-get install ${missing[*]} failed" >&2
  exit 1
fi

# Keep the units this run installed from starting at boot. A stop is issued for
# exactly these units (systemd may start one despite the policy through socket
# or path activation); nothing else is stopped, and nothing is killed by name.
if [ ${#new_units[@]} -gt 0 ] && [ -d "$SYSTEMD_DIR" ] && command -v systemctl >/dev/null 2>&1; then
  for unit in "${new_units[@]}"; do
    $SUDO systemctl stop "$unit.service" >/dev/null 2>&1 || true
    $SUDO systemctl mask "$unit.service" >/dev/null 2>&1 ||
      echo "install-deps.sh: could not mask $unit.service; it may start at the next boot" >&2
  done
  echo "install-deps.sh: masked ${new_units[*]} (installed as test peers; 'systemctl unmask' to use them as services)" >&2
elif [ ${#new_units[@]} -gt 0 ] && command -v update-rc.d >/dev/null 2>&1; then
  for unit in "${new_units[@]}"; do
    $SUDO update-rc.d "$unit" disable >/dev/null 2>&1 || true
  done
fi
exit 0

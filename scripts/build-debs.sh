#!/usr/bin/env bash
# Builds the Debian packages ganglion-agent and ganglion-aggregator from this
# workspace with dpkg-deb (no extra tooling): binaries, systemd units,
# conffiles under /etc/ganglion, maintainer scripts from packaging/deb/, and
# Depends computed by dpkg-shlibdeps.
#
#   scripts/build-debs.sh [--profile release|debug] [--out DIR] [--no-build]
#
# --profile debug packages the test build (the package test uses it to avoid
# a second, release build); packages for machines use the default, release.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
out=target/debian
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "usage: $0 [--profile release|debug] [--out DIR] [--no-build]" >&2; exit 2 ;;
  esac
done
case "$profile" in
  release) cargo_flags=(--release); bindir=target/release ;;
  debug) cargo_flags=(); bindir=target/debug ;;
  *) echo "build-debs.sh: --profile is release or debug" >&2; exit 2 ;;
esac

if [ "$build" -eq 1 ]; then
  cargo build --locked "${cargo_flags[@]}" -p ganglion-agent -p ganglion-aggregator -p rrd-export -p ganglion-nagios --bins
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
maintainer="Ganglion developers <ganglion@lists.invalid>"
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Depends of the binaries, as dpkg-shlibdeps reads them off the ELF files.
shlibdeps() {
  local d="$work/shlib"
  mkdir -p "$d/debian"
  printf 'Source: ganglion\n\nPackage: x\nArchitecture: any\n' > "$d/debian/control"
  (cd "$d" && dpkg-shlibdeps -O "$@" 2>/dev/null) | sed -n 's/^shlibs:Depends=//p'
}

# $1 package, $2 description line, $3 long description, $4 extra Depends;
# files are staged by the caller into $work/$1.
finish() {
  local pkg="$1" short="$2" long="$3" depends="$4"
  local root="$work/$pkg"
  install -d "$root/DEBIAN" "$root/usr/share/doc/$pkg"
  # Policy's copyright file and a changelog, compressed as lintian expects.
  {
    echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
    echo "Upstream-Name: ganglion"
    echo
    echo "Files: *"
    echo "Copyright: 2025-2026 Ganglion developers"
    echo "License: MIT or Apache-2.0"
    echo " The full texts are in /usr/share/common-licenses/Apache-2.0 and at"
    echo " https://opensource.org/licenses/MIT."
  } > "$root/usr/share/doc/$pkg/copyright"
  {
    echo "$pkg ($version) unstable; urgency=medium"
    echo
    echo "  * Built from the workspace by scripts/build-debs.sh."
    echo
    echo " -- $maintainer  $(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")"
  } | gzip -9n > "$root/usr/share/doc/$pkg/changelog.gz"
  # Tags we keep on purpose, each with its reason (packaging/deb/*.lintian-overrides).
  if [ -f "packaging/deb/$pkg.lintian-overrides" ]; then
    install -D -m 0644 "packaging/deb/$pkg.lintian-overrides" "$root/usr/share/lintian/overrides/$pkg"
  fi
  for s in postinst prerm postrm; do
    if [ -f "packaging/deb/$pkg/$s" ]; then
      # The shared user-creation snippet goes where #COMMON_USER# stands.
      awk -v snip="packaging/deb/common-user.sh" '
        /#COMMON_USER#/ { while ((getline l < snip) > 0) if (l !~ /^#/) print "  " l; close(snip); next }
        { print }' "packaging/deb/$pkg/$s" > "$root/DEBIAN/$s"
      chmod 0755 "$root/DEBIAN/$s"
    fi
  done
  : > "$root/DEBIAN/conffiles"
  if [ -d "$root/etc" ]; then
    (cd "$root" && find etc -type f | sed 's|^|/|') > "$root/DEBIAN/conffiles"
  fi
  [ -s "$root/DEBIAN/conffiles" ] || rm -f "$root/DEBIAN/conffiles"
  local size
  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  {
    echo "Package: $pkg"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: $maintainer"
    echo "Installed-Size: $size"
    echo "Depends: $depends"
    echo "Section: net"
    echo "Priority: optional"
    echo "Homepage: https://github.com/ganglion/ganglion"
    echo "Description: $short"
    echo "$long"
  } > "$root/DEBIAN/control"
  (cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
  find "$root" -type d -exec chmod 0755 {} +
  dpkg-deb --root-owner-group -Zxz --build "$root" "$out/${pkg}_${version}_${arch}.deb" >/dev/null
  echo "$out/${pkg}_${version}_${arch}.deb"
}

stage_bin() { install -D -m 0755 "$1" "$2"; strip --strip-unneeded "$2" 2>/dev/null || true; }

# ganglion-agent
r="$work/ganglion-agent"
stage_bin "$bindir/ganglion-agent" "$r/usr/bin/ganglion-agent"
install -D -m 0644 agent/ganglion-agent.service "$r/lib/systemd/system/ganglion-agent.service"
install -D -m 0644 agent/examples/agent.toml "$r/etc/ganglion/agent.toml"
finish ganglion-agent "Ganglia-compatible metric agent (gmond and gmetric replacement)" \
" Collects gmond's Linux metric set from /proc and sends it as Ganglia XDR
 over UDP to ganglion-aggregator, a gmond collector or gmetad's sources.
 'ganglion-agent send' replaces gmetric; 'ganglion-agent import' translates
 an existing gmond.conf." \
  "$(shlibdeps "$r/usr/bin/ganglion-agent" | sed 's/^$/libc6/'), adduser"

# ganglion-aggregator (with rrd-export)
r="$work/ganglion-aggregator"
stage_bin "$bindir/ganglion-aggregator" "$r/usr/bin/ganglion-aggregator"
stage_bin "$bindir/rrd-export" "$r/usr/bin/rrd-export"
install -D -m 0644 aggregator/ganglion-aggregator.service "$r/lib/systemd/system/ganglion-aggregator.service"
install -D -m 0644 aggregator/examples/aggregator.toml "$r/etc/ganglion/aggregator.toml"
finish ganglion-aggregator "Ganglia-compatible collector, gmetad and dashboard" \
" Receives Ganglia XDR from agents and gmonds, keeps cluster state, writes
 gmetad's RRD tree through librrd, serves gmond/gmetad XML on 8649/8651/8652
 and a web dashboard with a JSON API. 'ganglion-aggregator import' translates
 an existing gmetad.conf. Includes rrd-export, which dumps RRD ranges to
 CSV, JSON or NDJSON." \
  "$(shlibdeps "$r/usr/bin/ganglion-aggregator" "$r/usr/bin/rrd-export"), adduser"

# ganglion-nagios-plugins: check_ganglion where Nagios and Icinga look for
# plugins, so a monitoring server needs only this package.
r="$work/ganglion-nagios-plugins"
stage_bin "$bindir/check_ganglion" "$r/usr/lib/nagios/plugins/check_ganglion"
finish ganglion-nagios-plugins "Nagios/Icinga plugin for Ganglion (check_ganglion)" \
" check_ganglion checks a metric or a host's liveness through a Ganglion
 aggregator's JSON API, with monitoring-plugins thresholds and perfdata;
 it replaces ganglia-web's check_heartbeat.sh and check_metric.sh." \
  "$(shlibdeps "$r/usr/lib/nagios/plugins/check_ganglion")"


#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every check
# CI runs. Idempotent; safe to run again and again.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing build and test dependencies (Debian packages)"
./scripts/install-deps.sh test

step "installing the browser-test driver (playwright-core, from the npm registry)"
npm ci --prefix tests/browser --no-audit --no-fund --silent

# As root, tests that need privileges (tmpfs and bind mounts, network
# namespaces, installing the packages) or a kernel feature fail when it is
# missing instead of reporting SKIPPED; the package and multicast tests need
# root in any case.
if [ "$(id -u)" -eq 0 ]; then
  export GANGLION_REQUIRE_PRIVILEGED=1
fi

# Two cores: keep parallelism bounded so the interop tests' real peers get CPU.
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit, golden, property, CLI, interop with real Ganglia/rrdtool/rrdcached, browser)"
cargo build --workspace --bins --locked
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-2}"

step "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "fuzz target compiles"
cargo build --manifest-path proto/fuzz/Cargo.toml --target-dir target/fuzz --locked

step "all checks passed"

#!/usr/bin/env bash
# The one command that passes every test of Prism on a fresh machine: installs what the
# tests need, checks formatting and lints, runs the whole test suite (both I/O drivers,
# aiortc over WHIP/WHEP, LiveKit's Python SDK, LiveKit's JS SDK in Chromium), and smoke-runs
# the fuzz targets and the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "setup"
scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (io_uring and mmsg drivers are both exercised)"
cargo test --workspace --locked

step "fuzz targets: build and a short run each"
scripts/fuzz.sh smoke

step "benchmark smoke run: every scenario and system for a moment"
scripts/bench.sh --smoke

echo
echo "all tests passed"

#!/usr/bin/env bash
# Agent dispatch latency (room created -> agent joined), p50/p99 over 50 rooms, with
# LiveKit's agent framework (the agents venv from scripts/setup.sh) against a release
# build of prism. Results: bench/results/agent-dispatch-<date>.{json,md}.
#
#   scripts/agent-latency.sh                 build and measure 50 rooms
#   scripts/agent-latency.sh --rooms 10      fewer rooms
#   scripts/agent-latency.sh --prism PATH    an existing binary, nothing built
#   scripts/agent-latency.sh --note TEXT     a note in the report
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
args=("$@")
if [[ " $* " != *" --prism "* ]]; then
    cargo build --release --locked --bin prism
    args+=(--prism "$CARGO_TARGET_DIR/release/prism")
fi
[ -x .venv-agents/bin/python ] || { echo "run scripts/setup.sh first (.venv-agents)" >&2; exit 1; }
exec .venv-agents/bin/python bench/agent_latency.py "${args[@]}"

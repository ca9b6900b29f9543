#!/usr/bin/env bash
# What recording costs (prism-bench record): builds `prism` and `prism-bench` in release
# mode and runs the recording bench with the load side on CPU 0 and `prism serve` (its
# forwarding core included) on CPU 1: forwarding to WHEP viewers with and without every
# track recorded through the Egress API, alternating, several rounds.
#
#   scripts/recbench.sh            the full run (~5 min): results in bench/results/record-*
#   scripts/recbench.sh --smoke    one short round (seconds); target/bench-smoke
# Other arguments go to `prism-bench record` (see `prism-bench record --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p prism-bench -p prism-signaling
pin=(taskset -c 0)
cpus=(--gen-cpu 0 --sut-cpu 1)
if [[ $(nproc --all) -lt 2 ]]; then
    echo "warning: one CPU only; load and server share it" >&2
    pin=()
    cpus=()
fi
"${pin[@]}" target/release/prism-bench record --prism target/release/prism "${cpus[@]}" "$@"

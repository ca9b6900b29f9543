#!/usr/bin/env bash
# Fuzz Prism's parsers with cargo-fuzz (libFuzzer) on the stable toolchain.
#
#   scripts/fuzz.sh smoke          build every target and run each for a few seconds (CI)
#   scripts/fuzz.sh run TARGET [S] run one target for S seconds (default 300)
#   scripts/fuzz.sh list           list the targets
#
# Stable Rust has no sanitizers, so targets run with `-s none`: libFuzzer still finds
# panics, overflows (debug assertions are on) and hangs. With a nightly toolchain, run
# `cargo +nightly fuzz run TARGET` from forwarder/ for AddressSanitizer as well.
set -euo pipefail
cd "$(dirname "$0")/../forwarder"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install --quiet --locked cargo-fuzz
fi

targets() { cargo fuzz list; }

case "${1:-smoke}" in
    list) targets ;;
    smoke)
        secs="${FUZZ_SECONDS:-4}"
        cargo fuzz build -s none --dev
        for t in $(targets); do
            printf '  %-8s ' "$t"
            cargo fuzz run -s none --dev "$t" -- -max_total_time="$secs" -print_final_stats=1 2>&1 \
                | awk '/stat::number_of_executed_units/ {print $2 " runs"}'
        done
        ;;
    run)
        t="${2:?target}"
        cargo fuzz run -s none "$t" -- -max_total_time="${3:-300}"
        ;;
    *) echo "usage: $0 smoke | run TARGET [SECONDS] | list" >&2; exit 2 ;;
esac

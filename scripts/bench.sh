#!/usr/bin/env bash
# Runs Prism's benchmark suite in one command: builds the forwarder and the bench, makes
# sure rtpengine (the peer for the 1:1 relay) is installed, and runs prism-bench with the
# load generator and sinks on CPU 0 and every system under test on CPU 1.
#
#   scripts/bench.sh --smoke    a few seconds per scenario and system (CI; results in
#                               target/bench-smoke, nothing committed), then the
#                               control-plane smoke against `prism serve` (a few joins,
#                               offers and data messages; target/ctlbench-smoke) and
#                               the recording bench's smoke (one short round of
#                               forwarding with and without every track recorded)
#                               and veth mode's smoke (each driver once over a veth pair,
#                               AF_XDP included; root, else skipped with the reason)
#   scripts/bench.sh            the full run: results in bench/results/, README section
#                               regenerated; takes about a quarter of an hour, then veth
#                               mode (about twelve minutes more; root; not when other
#                               arguments select part of the suite)
#   scripts/bench.sh --veth     veth mode only (`prism-bench veth`): the reflector and
#                               Prism on io_uring, mmsg and af_xdp over a veth pair between
#                               two network namespaces; results in bench/results/veth-*
# Other arguments are passed to `prism-bench run` (see `prism-bench --help`), or with
# --veth to `prism-bench veth` (see `prism-bench veth --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

profile=release
veth_only=0
args=()
for a in "$@"; do
    case $a in
    --smoke) profile=smoke; args+=("$a") ;;
    --veth) veth_only=1 ;;
    *) args+=("$a") ;;
    esac
done
set -- ${args[@]+"${args[@]}"}
step "build ($profile)"
build=(-p prism-forwarder -p prism-bench)
[[ $profile == smoke ]] && build+=(-p prism-signaling)
cargo build --profile "$profile" --locked "${build[@]}"

# rtpengine from Debian, installed once; the marker saves the apt round trip next time.
marker=target/.rtpengine-checked
if [[ ! -f $marker ]] || ! command -v rtpengine >/dev/null; then
    if ! command -v rtpengine >/dev/null; then
        step "installing rtpengine-daemon (once)"
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq || true
            apt-get install -y -qq rtpengine-daemon >/dev/null ||
                echo "warning: rtpengine-daemon could not be installed; it will be skipped" >&2
        else
            echo "warning: not root or no apt-get: rtpengine will be skipped" >&2
        fi
    fi
    command -v rtpengine >/dev/null && touch "$marker"
fi

cpus=$(nproc --all)
pin=(taskset -c 0)
sut=(--gen-cpu 0 --sut-cpu 1)
if [[ $cpus -lt 2 ]]; then
    echo "warning: one CPU only; generator and systems under test share it" >&2
    pin=()
    sut=()
fi

start=$(date +%s)
if [[ $veth_only == 1 ]]; then
    # The bench pins itself and each system (it moves between namespaces, so no taskset).
    step "prism-bench veth $*"
    "target/$profile/prism-bench" veth "${sut[@]}" "$@"
    echo "bench.sh: done in $(($(date +%s) - start)) s" >&2
    exit 0
fi
step "prism-bench run $*"
"${pin[@]}" "target/$profile/prism-bench" run "${sut[@]}" "$@"
if [[ $profile == smoke ]]; then
    # The control plane (scripts/ctlbench.sh compares two builds of it).
    step "prism-bench control smoke"
    "${pin[@]}" "target/$profile/prism-bench" control smoke --prism "target/$profile/prism"
    # Recording's cost (prism-bench record): one short round, files checked.
    step "prism-bench record --smoke"
    "${pin[@]}" "target/$profile/prism-bench" record --smoke --prism "target/$profile/prism" "${sut[@]}"
    # The three drivers over a veth pair (AF_XDP included); prints why when it skips.
    step "prism-bench veth --smoke"
    if [[ ${#sut[@]} -gt 0 ]]; then
        "target/$profile/prism-bench" veth --smoke "${sut[@]}"
    else
        echo "skipped: veth mode needs two CPUs" >&2
    fi
elif [[ $# -eq 0 && ${#sut[@]} -gt 0 ]]; then
    # A whole-suite run also measures the drivers over a veth pair (partial runs do not).
    step "prism-bench veth"
    "target/$profile/prism-bench" veth "${sut[@]}"
fi
echo "bench.sh: done in $(($(date +%s) - start)) s" >&2

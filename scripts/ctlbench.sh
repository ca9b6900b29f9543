#!/usr/bin/env bash
# The control-plane comparison in one command. Builds `prism` twice — OLD (default
# 702a58e, the shape with one blocking hub thread for every room) and NEW (default: this
# checkout's working tree) — and prism-bench from this checkout, then runs
# `prism-bench control compare`: both servers on CPU 1, the load on CPU 0, every scenario
# against each build in turn. Results: bench/results/control-<date>.{json,md}.
#
#   scripts/ctlbench.sh                  old 702a58e vs this working tree
#   scripts/ctlbench.sh --new main       old 702a58e vs the main branch
#   scripts/ctlbench.sh --old A --new B  any two revisions
#   scripts/ctlbench.sh --smoke          one server (this tree), a few joins and messages
#
# Revisions are built in temporary git worktrees; their binaries are kept in
# target/ctlbench/prism-<sha>, so a second run builds nothing. Other arguments go to
# `prism-bench control compare` (--rounds N, --scenarios LIST, --out DIR, --note TEXT; see
# `prism-bench control --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

step() { printf '\n==> %s\n' "$*" >&2; }

old=702a58e
new=
smoke=0
pass=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --old) old=$2; shift 2 ;;
        --new) new=$2; shift 2 ;;
        --smoke) smoke=1; shift ;;
        *) pass+=("$1"); shift ;;
    esac
done

cpus=$(nproc --all)
pin=(taskset -c 0)
if [[ $cpus -lt 2 ]]; then
    echo "warning: one CPU only; load and servers share it" >&2
    pin=()
fi

if [[ $smoke == 1 ]]; then
    step "build (smoke profile)"
    cargo build --profile smoke --locked -p prism-signaling --bin prism -p prism-bench --bin prism-bench
    step "prism-bench control smoke"
    exec "${pin[@]}" "$CARGO_TARGET_DIR/smoke/prism-bench" control smoke \
        --prism "$CARGO_TARGET_DIR/smoke/prism" "${pass[@]}"
fi

# prism at a revision, built in a throwaway worktree; prints the binary's path.
bin_dir=$CARGO_TARGET_DIR/ctlbench
build_rev() {
    local sha dir
    sha=$(git rev-parse --verify "$1^{commit}")
    if [[ ! -x $bin_dir/prism-$sha ]]; then
        step "build prism at $1 ($sha)"
        dir=$(mktemp -d "${TMPDIR:-/tmp}/prism-ctlbench-XXXXXX")
        git worktree add --detach "$dir" "$sha" >&2
        # Its own target directory: the worktree's paths differ, so sharing ours would
        # only evict this checkout's build.
        (cd "$dir" && CARGO_TARGET_DIR=$bin_dir/build cargo build --release --locked \
            -p prism-signaling --bin prism >&2)
        mkdir -p "$bin_dir"
        cp "$bin_dir/build/release/prism" "$bin_dir/prism-$sha"
        git worktree remove --force "$dir"
    fi
    echo "$bin_dir/prism-$sha"
}

# "REV (sha)", or just the sha when REV is one.
label() {
    local sha
    sha=$(git rev-parse --short "$1^{commit}")
    if [[ $sha == "$1"* || $1 == "$sha"* ]]; then echo "$sha"; else echo "$1 ($sha)"; fi
}
old_sha=$(git rev-parse --short "$old^{commit}")
old_bin=$(build_rev "$old")

# Server code only: the bench, scripts and docs do not make a build different.
server_paths=(forwarder signaling proto Cargo.lock Cargo.toml)
if [[ -z $new ]]; then
    step "build prism and prism-bench (this checkout)"
    cargo build --release --locked -p prism-signaling --bin prism -p prism-bench --bin prism-bench
    new_bin=$CARGO_TARGET_DIR/release/prism
    new_label="working tree at $(git rev-parse --short HEAD)"
    git diff --quiet HEAD -- "${server_paths[@]}" || new_label+=" (uncommitted changes)"
    same=()
    git diff --quiet "$old_sha" -- "${server_paths[@]}" && same=(--same-code)
else
    new_bin=$(build_rev "$new")
    new_label=$(label "$new")
    step "build prism-bench (this checkout)"
    cargo build --release --locked -p prism-bench
    same=()
    git diff --quiet "$old_sha" "$new" -- "${server_paths[@]}" && same=(--same-code)
fi

step "prism-bench control compare: old $old_sha vs new $new_label"
"${pin[@]}" "$CARGO_TARGET_DIR/release/prism-bench" control compare \
    --old "$old_bin" --old-label "$(label "$old")" \
    --new "$new_bin" --new-label "$new_label" "${same[@]}" "${pass[@]}"

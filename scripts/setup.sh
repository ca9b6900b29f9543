#!/usr/bin/env bash
# Installs what building and testing Prism needs on a fresh Debian machine. Safe to run
# again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# The agent tests (signaling/tests/agents_echo_dispatch.rs) run LiveKit's agent framework
# from PyPI. It pins an older `livekit` (1.1.21) than the test venv's, so it gets a venv of
# its own; the echo agent needs no model and nothing else.
if ! .venv-agents/bin/python -c 'import livekit.agents' 2>/dev/null; then
    [ -x .venv-agents/bin/python ] || python3 -m venv .venv-agents
    .venv-agents/bin/pip install -q --disable-pip-version-check livekit-agents==1.8.9
fi
# The browser tests run LiveKit's JS SDK in Debian's Chromium, driven by playwright-core,
# which never downloads a browser of its own.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v npm >/dev/null || need_apt+=(nodejs npm)
# The deployment tests (NAT; ICE over TCP for a browser whose UDP is dropped) build
# network namespaces with ip and nftables.
command -v ip >/dev/null || need_apt+=(iproute2)
command -v nft >/dev/null || need_apt+=(nftables)
# The AF_XDP WebRTC test (signaling/tests/webrtc_af_xdp.rs) reads /metrics from inside a
# namespace with curl.
command -v curl >/dev/null || need_apt+=(curl)
# The TURN tests (signaling/tests/browser_turn.rs) relay through coturn too.
command -v turnserver >/dev/null || need_apt+=(coturn)
# RTMP ingress: libopus for AAC→Opus (the `opus` crate links it through pkg-config), and
# FFmpeg, the encoder the ingress tests (signaling/tests/ingress_rtmp.rs) push with and
# what the recording tests read and decode the files with (ffprobe, ffmpeg).
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
pkg-config --exists opus 2>/dev/null || need_apt+=(libopus-dev)
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
# Cluster mode: the cluster tests (signaling/tests/cluster_nodes.rs) start their own
# redis-server, and read the directory with redis-cli.
command -v redis-server >/dev/null || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
    else
        echo "missing: ${need_apt[*]} (install them, or run as root)" >&2
        exit 1
    fi
fi
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt 2>/dev/null || true

# The interop tests (signaling/tests/whip_whep_aiortc.rs) drive aiortc, a real Python
# ICE/DTLS/SRTP stack, from the project venv. aioice is pinned because the clients patch
# its host-address lookup to allow loopback.
if ! .venv/bin/python -c 'import aiortc, av' 2>/dev/null; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check \
        aiortc==1.16.0 aioice==0.13.0 av==18.1.0
fi
# The LiveKit interop tests (signaling/tests/livekit_sdk.rs) use LiveKit's own Python SDK
# (its wheel carries the native WebRTC library) and its server API client.
if ! .venv/bin/python -c 'import livekit.rtc, livekit.api' 2>/dev/null; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check \
        livekit==1.2.1 livekit-api==1.2.2
fi
# The browser tests (signaling/tests/browser_livekit.rs) need the exact versions that
# tests/browser/package.json pins (the lock file fixes the rest): reinstalled only when
# node_modules lacks one of them.
browser=signaling/tests/browser
if ! (cd "$browser" && node -e '
    const p = require("./package.json");
    for (const [n, v] of Object.entries(p.dependencies))
        if (require("./node_modules/" + n + "/package.json").version !== v) process.exit(1);
    ' 2>/dev/null); then
    (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "setup: ok"

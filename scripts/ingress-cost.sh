#!/usr/bin/env bash
# The CPU one RTMP ingress session costs Prism: `prism serve` with an ingress created through
# livekit-api, idle for 10 s, then FFmpeg pushing 640x360 H.264 (30 fps, 1 s GOP) and a
# 44.1 kHz AAC sine for 40 s; Prism's own CPU time (utime + stime) is read from /proc over
# 10 s idle and over 30 s of the session (after 8 s of start-up). No subscribers: this is
# the ingress path (RTMP parsing, H.264 packetization, AAC decoding, resampling, Opus
# encoding, the forwarder receiving the RTP).
#
# Usage: scripts/ingress-cost.sh [PRISM_BINARY]   (default target/release/prism)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/prism}
HTTP_PORT=${HTTP_PORT:-7990}
RTMP_PORT=${RTMP_PORT:-19350}
"$BIN" serve --dev --bind "127.0.0.1:$HTTP_PORT" --media-port 0 --cores 0 \
    --rtmp-port "$RTMP_PORT" > /tmp/prism-ingress-cost.log 2>&1 &
PID=$!
trap 'kill $PID' EXIT
for _ in $(seq 100); do
    grep -q "listening on" /tmp/prism-ingress-cost.log && break
    sleep 0.1
done
KEY=$(HTTP_PORT=$HTTP_PORT .venv/bin/python -W ignore - <<'PY'
import asyncio, os
from livekit import api
async def main():
    lk = api.LiveKitAPI(f"http://127.0.0.1:{os.environ['HTTP_PORT']}", "devkey", "secret")
    info = await lk.ingress.create_ingress(
        api.CreateIngressRequest(room_name="cost", participant_identity="cam"))
    print(info.stream_key)
    await lk.aclose()
asyncio.run(main())
PY
)
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
TICK=$(getconf CLK_TCK)
a=$(cpu); sleep 10; b=$(cpu)
echo "idle:        $(( (b - a) * 1000 / TICK / 10 )) ms of CPU per second"
ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=640x360:rate=30 \
    -f lavfi -i sine=f=440 -c:v libx264 -profile:v baseline -tune zerolatency \
    -preset ultrafast -g 30 -c:a aac -t 40 -f flv "rtmp://127.0.0.1:$RTMP_PORT/live/$KEY" &
FF=$!
sleep 8
a=$(cpu); sleep 30; b=$(cpu)
echo "one ingress: $(( (b - a) * 1000 / TICK / 30 )) ms of CPU per second"
wait $FF

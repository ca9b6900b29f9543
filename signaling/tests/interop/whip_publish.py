"""WHIP publisher (RFC 9725) built on aiortc, a real ICE/DTLS/SRTP stack.

Proves that Prism's WHIP endpoint and WebRTC transport accept a standard publisher: the
offer (non-trickle, sendonly Opus audio and VP8/H.264 video) is answered with 201 and a
Location, ICE and DTLS connect against the ice-lite answer, media flows for --seconds, and
DELETE on the Location ends the session. With --relay-loss, media goes through
lossy_relay.py, which drops that fraction of RTP towards Prism.

The video is synthetic: 320x240 at 30 fps, a moving gradient with the frame counter drawn
as 16 black/white blocks in the top rows. The audio is a 440 Hz sine at 48 kHz.

With --until-told it is driven step by step (see `common.event`): it prints
`event: connected {location}` once connected, publishes until told `delete` on stdin (or
the connection closes), then DELETEs, whatever the answer (the tests of a session the
server ended expect 404).

Prints one JSON line: status, connected, packets sent, DELETE status, relay counters.
Exits 0 only if the session connected and DELETE succeeded (with --until-told: was
answered).
"""

import argparse
import asyncio
import fractions
import math
import re
import time

from aiortc import AudioStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc import VideoStreamTrack
from av import AudioFrame, VideoFrame

from common import allow_loopback, commands, event, http, log, resource_url, summary
from lossy_relay import start_relay

WIDTH, HEIGHT = 320, 240
SAMPLE_RATE, SAMPLES = 48_000, 960  # 20 ms


class CounterVideo(VideoStreamTrack):
    """Moving frames whose counter is readable in the pixels."""

    def __init__(self):
        super().__init__()
        self.count = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()  # paces at 30 fps
        frame = VideoFrame(width=WIDTH, height=HEIGHT, format="yuv420p")
        y = frame.planes[0]
        shift = (self.count * 4) & 0xFF
        row = bytes((x + shift) & 0xFF for x in range(y.line_size))
        bits = bytearray(y.line_size)
        for i in range(16):
            level = 235 if self.count >> i & 1 else 16
            bits[i * 20 : (i + 1) * 20] = bytes([level]) * 20
        y.update(bytes(bits) * 16 + row * (HEIGHT - 16))
        for chroma in frame.planes[1:]:
            chroma.update(bytes([128]) * (chroma.line_size * (HEIGHT // 2)))
        frame.pts, frame.time_base = pts, time_base
        self.count += 1
        return frame


class SineAudio(AudioStreamTrack):
    """A 440 Hz tone, 20 ms frames, paced in real time."""

    def __init__(self):
        super().__init__()
        self.sent = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        else:
            wait = self.start + self.sent / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = AudioFrame(format="s16", layout="mono", samples=SAMPLES)
        pcm = bytearray()
        for n in range(self.sent, self.sent + SAMPLES):
            v = int(8000 * math.sin(2 * math.pi * 440 * n / SAMPLE_RATE))
            pcm += v.to_bytes(2, "little", signed=True)
        frame.planes[0].update(bytes(pcm))
        frame.sample_rate = SAMPLE_RATE
        frame.pts, frame.time_base = self.sent, fractions.Fraction(1, SAMPLE_RATE)
        self.sent += SAMPLES
        return frame


CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ )(\S+) (\d+)( typ .*)$", re.I | re.M)


async def route_through_relay(answer: str, loss: float, seed: int):
    """Starts a relay to the answer's first UDP candidate and points every candidate at it."""
    m = CANDIDATE.search(answer)
    if m is None:
        raise RuntimeError("the answer has no UDP candidate")
    relay, (host, port) = await start_relay((m.group(2), int(m.group(3))), loss, seed)
    return relay, CANDIDATE.sub(lambda c: f"{c.group(1)}{host} {port}{c.group(4)}", answer)


async def stats_summary(pc):
    out = {}
    for s in (await pc.getStats()).values():
        if s.type == "outbound-rtp":
            out[f"{s.kind}_packets_sent"] = s.packetsSent
    return out


async def until_told(args, failed: asyncio.Event) -> str:
    """With --until-told: publishes until the driver says `delete` (or closes stdin), the
    connection fails or closes, or --seconds pass. Says which."""
    cmds = await commands()
    told = asyncio.ensure_future(cmds.get())
    closed = asyncio.ensure_future(failed.wait())
    await asyncio.wait([told, closed], timeout=args.seconds, return_when=asyncio.FIRST_COMPLETED)
    ended_by = "told" if told.done() else "connection closed" if closed.done() else "timeout"
    told.cancel()
    closed.cancel()
    return ended_by


async def publish(args, result):
    pc = RTCPeerConnection()
    connected = asyncio.Event()
    failed = asyncio.Event()

    @pc.on("connectionstatechange")
    def _state():
        log("publisher: connection", pc.connectionState)
        if pc.connectionState == "connected":
            connected.set()
        elif pc.connectionState in ("failed", "closed"):
            failed.set()

    pc.addTransceiver(SineAudio(), direction="sendonly")
    pc.addTransceiver(CounterVideo(), direction="sendonly")
    relay = None
    try:
        # aiortc gathers every candidate inside setLocalDescription: the offer is complete.
        await pc.setLocalDescription(await pc.createOffer())
        status, headers, body = await http("POST", args.url, args.token, pc.localDescription.sdp)
        result["status"] = status
        location = headers.get("Location") or headers.get("location")
        if status != 201 or not location:
            result["error"] = f"POST answered {status}: {body[:200]}"
            return
        answer = body
        if args.relay_loss > 0:
            relay, answer = await route_through_relay(answer, args.relay_loss, args.seed)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

        done = asyncio.ensure_future(connected.wait())
        bad = asyncio.ensure_future(failed.wait())
        await asyncio.wait([done, bad], timeout=args.connect_timeout,
                           return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        bad.cancel()
        result["connected"] = connected.is_set()
        if connected.is_set() and args.until_told:
            event("connected", location=location)
            result["ended_by"] = await until_told(args, failed)
            result["state_before_delete"] = pc.connectionState
            result.update(await stats_summary(pc))
        elif connected.is_set():
            await asyncio.sleep(args.seconds)
            result.update(await stats_summary(pc))
        else:
            result["error"] = f"not connected ({pc.connectionState})"

        status, _, _ = await http("DELETE", resource_url(args.url, location), args.token)
        result["delete_status"] = status
    finally:
        if relay is not None:
            result["relay"] = relay.stats
            relay.transport.close()
        await pc.close()


def main():
    ap = argparse.ArgumentParser(description="aiortc WHIP publisher (VP8/H.264 + Opus)")
    ap.add_argument("--url", required=True, help="WHIP endpoint, http://HOST:PORT/whip/ROOM")
    ap.add_argument("--token", help="sent as Authorization: Bearer")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long to publish")
    ap.add_argument("--relay-loss", type=float, default=0.0,
                    help="publish through a relay dropping this fraction of RTP")
    ap.add_argument("--seed", type=int, default=1, help="seed of the relay's drops")
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    ap.add_argument("--until-told", action="store_true",
                    help="once connected, say so (event: connected) and publish until stdin "
                         "says delete (--seconds at most); any DELETE answer is then a success")
    args = ap.parse_args()

    allow_loopback()
    result = {"role": "publisher", "connected": False}
    try:
        asyncio.run(publish(args, result))
    except Exception as e:  # a clean one-line failure for the driver
        result["error"] = f"{type(e).__name__}: {e}"
    summary(**result)
    deleted = result.get("delete_status", 0)
    ok = result.get("connected") and (200 <= deleted < 300 or (args.until_told and deleted > 0))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()

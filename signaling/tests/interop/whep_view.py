"""WHEP viewer built on aiortc, a real ICE/DTLS/SRTP stack.

Proves that a room's published tracks reach a standard WHEP viewer through Prism and
decode: the offer (non-trickle, recvonly audio and video) is answered with 201, ICE and
DTLS connect, and aiortc decodes at least --frames video frames and --audio-frames audio
frames (20 ms each) before --timeout. It also measures how long after the PeerConnection
reports "connected" the first video frame is decoded, which tells whether the server
asks the publisher for a keyframe when a viewer joins.

It also records the RTP header extensions each receiver saw (aiortc parses them with the
ids the answer negotiated): the mids, and how many packets carried abs-send-time and the
audio level, which shows that Prism writes the viewer's own extensions on egress.

Prints one JSON line: video_frames, audio_frames, first_frame_after_connect_s, width,
height, rgb (the mean colour of a recent frame), extensions, and diagnostics. Exits 0 only if both frame targets were reached.
"""

import argparse
import asyncio
import time

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from common import allow_loopback, http, log, mean_rgb, resource_url, summary


async def count_frames(track, result, t, enough):
    """Pulls decoded frames of one remote track until it ends."""
    key = f"{track.kind}_frames"
    try:
        while True:
            frame = await track.recv()
            result[key] += 1
            if track.kind == "video" and result["video_frames"] == 1:
                t["first_frame"] = time.monotonic()
                result["width"], result["height"] = frame.width, frame.height
            if track.kind == "video" and result["video_frames"] % 10 == 1:
                # The mean colour tells which publisher's video this is.
                result["rgb"] = mean_rgb(frame.to_ndarray(format="rgb24").tobytes(), 3)
            enough()
    except MediaStreamError:
        pass


def watch_extensions(pc, result):
    """Wraps each receiver's packet handler (aiortc has no public hook for this) to
    record the header extensions of the packets it gets."""
    for t in pc.getTransceivers():
        seen = {"mid": t.mid, "mids": [], "packets": 0, "abs_send_time": 0, "audio_level": 0}
        result["extensions"][t.kind] = seen
        original = t.receiver._handle_rtp_packet

        async def handle(packet, arrival_time_ms, original=original, seen=seen):
            e = packet.extensions
            seen["packets"] += 1
            if e.mid is not None and e.mid not in seen["mids"]:
                seen["mids"].append(e.mid)
            seen["abs_send_time"] += e.abs_send_time is not None
            seen["audio_level"] += e.audio_level is not None
            return await original(packet, arrival_time_ms)

        t.receiver._handle_rtp_packet = handle


async def view(args, result):
    pc = RTCPeerConnection()
    t = {}
    connected = asyncio.Event()
    done = asyncio.Event()
    tasks = []

    def enough():
        if result["video_frames"] >= args.frames and result["audio_frames"] >= args.audio_frames:
            done.set()

    @pc.on("connectionstatechange")
    def _state():
        log("viewer: connection", pc.connectionState)
        if pc.connectionState == "connected" and "connected" not in t:
            t["connected"] = time.monotonic()
            connected.set()
        elif pc.connectionState in ("failed", "closed"):
            done.set()

    @pc.on("track")
    def _track(track):
        result["tracks"].append(track.kind)
        tasks.append(asyncio.ensure_future(count_frames(track, result, t, enough)))

    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    location = None
    try:
        await pc.setLocalDescription(await pc.createOffer())
        t["post"] = time.monotonic()
        status, headers, body = await http("POST", args.url, args.token, pc.localDescription.sdp)
        result["status"] = status
        location = headers.get("Location") or headers.get("location")
        if status != 201:
            result["error"] = f"POST answered {status}: {body[:200]}"
            return
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        watch_extensions(pc, result)
        try:
            await asyncio.wait_for(done.wait(), args.timeout)
        except asyncio.TimeoutError:
            result["error"] = f"timeout after {args.timeout} s ({pc.connectionState})"
    finally:
        result["connected"] = connected.is_set()
        if "connected" in t:
            result["connect_s"] = round(t["connected"] - t["post"], 3)
        if "connected" in t and "first_frame" in t:
            result["first_frame_after_connect_s"] = round(t["first_frame"] - t["connected"], 3)
        if location:
            status, _, _ = await http("DELETE", resource_url(args.url, location), args.token)
            result["delete_status"] = status
        await pc.close()
        for task in tasks:
            task.cancel()


def main():
    ap = argparse.ArgumentParser(description="aiortc WHEP viewer counting decoded frames")
    ap.add_argument("--url", required=True, help="WHEP endpoint, http://HOST:PORT/whep/ROOM")
    ap.add_argument("--token", help="sent as Authorization: Bearer")
    ap.add_argument("--frames", type=int, default=60, help="video frames to decode")
    ap.add_argument("--audio-frames", type=int, default=50, help="audio frames to decode")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds from POST to done")
    args = ap.parse_args()

    allow_loopback()
    result = {
        "role": "viewer",
        "video_frames": 0,
        "audio_frames": 0,
        "first_frame_after_connect_s": None,
        "width": None,
        "height": None,
        "rgb": None,
        "tracks": [],
        "extensions": {},
    }
    try:
        asyncio.run(view(args, result))
    except Exception as e:  # a clean one-line failure for the driver
        result["error"] = f"{type(e).__name__}: {e}"
    summary(**result)
    ok = result["video_frames"] >= args.frames and result["audio_frames"] >= args.audio_frames
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""A LiveKit SDK participant that stays in its room while the cluster fails under it, run
step by step by the Rust driver (`live_client`) of `cluster_failover.rs`.

It joins once (through the test's load balancer) and never joins again by itself: any
way back into the room after a node dies, stalls or drains is the SDK's own reconnection.
With --publish it publishes a small VP8 video and keeps feeding it; otherwise it
subscribes to everything and counts the video frames it decodes (`rtc.VideoStream`), in
total and since its last reconnection.

Events (stdout, `event: NAME {json}`): `connected` {sid}, `reconnecting`, `reconnected`
{sid}, `track_subscribed`, `disconnected` {reason}, and `report` (when asked):
{sid, frames, frames_since_reconnect, reconnects, state, republished}. Commands (stdin):
`report`, `stop`. It prints one JSON line last.
"""

import argparse
import asyncio
import time

from livekit import rtc

from common import commands, event, feed_video, leave_room, log, run_sdk_client, summary


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--publish", action="store_true")
    ap.add_argument("--size", default="160x120")
    ap.add_argument("--duration", type=float, default=170.0, help="leave after this long at most")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    started = time.monotonic()
    room = rtc.Room()
    stop = asyncio.Event()
    disconnected = asyncio.Event()
    tasks: list = []
    state = {"frames": 0, "since": 0, "reconnects": 0, "republished": 0, "reason": None}

    def at() -> float:
        return round(time.monotonic() - started, 3)

    def sid() -> str:
        # The SDK keeps the room's info current (RoomSidChanged, RoomUpdated).
        return room._info.sid  # noqa: SLF001 (the awaitable `sid` waits for a first one)

    async def count(t: rtc.Track) -> None:
        async for _ in rtc.VideoStream(t):
            state["frames"] += 1
            state["since"] += 1

    @room.on("track_subscribed")
    def on_subscribed(t: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant):
        event("track_subscribed", identity=p.identity, kind=int(t.kind), at_s=at())
        if t.kind == rtc.TrackKind.KIND_VIDEO:
            tasks.append(asyncio.ensure_future(count(t)))

    @room.on("reconnecting")
    def on_reconnecting():
        event("reconnecting", at_s=at())

    @room.on("reconnected")
    def on_reconnected():
        state["reconnects"] += 1
        state["since"] = 0
        event("reconnected", sid=sid(), at_s=at())

    @room.on("local_track_republished")
    def on_republished(pub, previous_sid):
        state["republished"] += 1

    @room.on("disconnected")
    def on_disconnected(reason):
        state["reason"] = str(reason)
        disconnected.set()
        event("disconnected", reason=str(reason), at_s=at())

    cmds = await commands()
    try:
        await room.connect(args.url, args.token, rtc.RoomOptions(auto_subscribe=not args.publish))
    except Exception as e:
        summary(connected=False, error=str(e))
        return
    event("connected", sid=await room.sid, at_s=at())

    if args.publish:
        try:
            src = rtc.VideoSource(width, height)
            track = rtc.LocalVideoTrack.create_video_track("camera", src)
            opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)
            await room.local_participant.publish_track(track, opts)
            tasks.append(asyncio.ensure_future(feed_video(src, stop, width, height, (40, 200, 40))))
            event("published", at_s=at())
        except Exception as e:
            log(f"publish failed: {e}")
            event("publish_failed", error=str(e))

    deadline = started + args.duration
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        cmd = None
        try:
            cmd = await asyncio.wait_for(cmds.get(), timeout=left)
        except asyncio.TimeoutError:
            break
        if cmd is None or cmd == "stop":
            break
        if cmd == "report":
            event(
                "report",
                sid=sid(),
                frames=state["frames"],
                frames_since_reconnect=state["since"],
                reconnects=state["reconnects"],
                republished=state["republished"],
                state=int(room.connection_state),
                disconnected=disconnected.is_set(),
                at_s=at(),
            )
        else:
            log(f"unknown command {cmd!r}")

    was_disconnected = await leave_room(room, stop, disconnected, tasks)
    summary(
        connected=True,
        sid=sid(),
        frames=state["frames"],
        reconnects=state["reconnects"],
        republished=state["republished"],
        disconnected_by_server=was_disconnected,
        reason=state["reason"],
    )


if __name__ == "__main__":
    run_sdk_client(main)

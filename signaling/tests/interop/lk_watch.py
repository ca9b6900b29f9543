"""A LiveKit SDK subscriber that watches other participants, run step by step by the Rust
driver (`live_client`): who is in the room and of which kind (`ParticipantKind`), which
tracks each publishes, which it gets subscribed to, and how many video and audio frames
of each it decodes (`rtc.VideoStream`, `rtc.AudioStream`), with their mean colour.

It joins with auto-subscribe on and waits, as --until says, until every --expect
participant has had --video-frames video and --audio-frames audio frames decoded
(`frames`), or has left the room (`left`), or until told to stop (`told`); at most
--timeout seconds.

Events (stdout, `event: NAME {json}`): `connected` {present}, `participant_connected`,
`track_published`, `track_subscribed`, `track_subscription_failed`, `frames` {identity}
(once an expected participant reached both frame counts), `participant_disconnected`, and
`report` (the state so far, when asked), `stats` {video, audio: packets received and lost,
NACKs sent, as libwebrtc counts them on the subscriber side}, `quality` {quality}.
Commands (stdin): `report`, `stats`, `quality LOW|MEDIUM|HIGH` (asks for that simulcast
layer of every video track it receives), `stop`. It prints the state as one JSON line last.
"""

import argparse
import asyncio
import time

from livekit import rtc

from common import commands, event, leave_room, log, mean_rgb, run_sdk_client, summary


def kind_name(value) -> str:
    try:
        return rtc.ParticipantKind.Name(value)
    except ValueError:
        return str(value)


async def receive_stats(room: rtc.Room) -> dict:
    """Packets received and lost, and NACKs sent, per kind, over every inbound stream."""
    stats = await room.get_rtc_stats()
    out = {k: {"received": 0, "lost": 0, "nacks": 0} for k in ("video", "audio")}
    for s in stats.subscriber_stats:
        if s.WhichOneof("stats") != "inbound_rtp":
            continue
        kind = s.inbound_rtp.stream.kind
        if kind in out:
            out[kind]["received"] += s.inbound_rtp.received.packets_received
            out[kind]["lost"] += s.inbound_rtp.received.packets_lost
            out[kind]["nacks"] += s.inbound_rtp.inbound.nack_count
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--expect", action="append", default=[], help="an identity to wait for")
    ap.add_argument("--video-frames", type=int, default=30)
    ap.add_argument("--audio-frames", type=int, default=50)
    ap.add_argument("--until", choices=["frames", "left", "told"], default="frames")
    ap.add_argument("--timeout", type=float, default=45.0)
    args = ap.parse_args()

    started = time.monotonic()
    room = rtc.Room()
    people: dict = {}
    failures: list = []
    reached: list = []
    left: list = []
    tasks: list = []
    wake = asyncio.Event()
    disconnected = asyncio.Event()

    def at() -> float:
        return round(time.monotonic() - started, 3)

    def person(p: rtc.RemoteParticipant, how: str) -> dict:
        if p.identity not in people:
            people[p.identity] = {
                "sid": p.sid,
                "kind": int(p.kind),
                "kind_name": kind_name(p.kind),
                "arrived": how,
                "left": False,
                "tracks": {},
            }
        return people[p.identity]

    def track(p: rtc.RemoteParticipant, pub: rtc.RemoteTrackPublication) -> dict:
        tracks = person(p, "event")["tracks"]
        if pub.sid not in tracks:
            tracks[pub.sid] = {
                "kind": "video" if pub.kind == rtc.TrackKind.KIND_VIDEO else "audio",
                "source": int(pub.source),
                "mime": pub.mime_type,
                "published_event": False,
                "subscribed": False,
                "frames": 0,
                "rgb": None,
                "width": None,
                "height": None,
            }
        return tracks[pub.sid]

    def check(identity: str) -> None:
        if identity in reached or identity not in people:
            return
        tracks = people[identity]["tracks"].values()
        video = max((t["frames"] for t in tracks if t["kind"] == "video"), default=0)
        audio = max((t["frames"] for t in tracks if t["kind"] == "audio"), default=0)
        if video >= args.video_frames and audio >= args.audio_frames:
            reached.append(identity)
            event("frames", identity=identity, video=video, audio=audio, at_s=at())
            wake.set()

    async def count_video(t: rtc.Track, info: dict, identity: str) -> None:
        async for ev in rtc.VideoStream(t):
            info["frames"] += 1
            if info["frames"] % 10 == 1:
                f = ev.frame.convert(rtc.VideoBufferType.RGBA)
                info["rgb"] = mean_rgb(bytes(f.data), 4)
                info["width"], info["height"] = f.width, f.height
            check(identity)

    async def count_audio(t: rtc.Track, info: dict, identity: str) -> None:
        async for _ in rtc.AudioStream(t):
            info["frames"] += 1
            check(identity)

    @room.on("participant_connected")
    def on_join(p: rtc.RemoteParticipant):
        info = person(p, "event")
        event("participant_connected", identity=p.identity, kind=info["kind"], kind_name=info["kind_name"], at_s=at())

    @room.on("participant_disconnected")
    def on_leave(p: rtc.RemoteParticipant):
        person(p, "event")["left"] = True
        left.append(p.identity)
        event("participant_disconnected", identity=p.identity, at_s=at())
        wake.set()

    @room.on("track_published")
    def on_published(pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant):
        info = track(p, pub)
        info["published_event"] = True
        event("track_published", identity=p.identity, sid=pub.sid, kind=info["kind"], at_s=at())

    @room.on("track_subscribed")
    def on_subscribed(t: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant):
        info = track(p, pub)
        info["subscribed"] = True
        event("track_subscribed", identity=p.identity, sid=pub.sid, kind=info["kind"], at_s=at())
        count = count_video if t.kind == rtc.TrackKind.KIND_VIDEO else count_audio
        tasks.append(asyncio.ensure_future(count(t, info, p.identity)))

    @room.on("track_subscription_failed")
    def on_failed(p: rtc.RemoteParticipant, sid: str, error: str):
        failures.append({"identity": p.identity, "sid": sid, "error": error})
        event("track_subscription_failed", identity=p.identity, sid=sid, error=error)

    @room.on("disconnected")
    def on_disconnected(reason):
        disconnected.set()
        wake.set()

    cmds = await commands()
    try:
        await room.connect(args.url, args.token, rtc.RoomOptions(auto_subscribe=True))
    except Exception as e:
        summary(connected=False, error=str(e))
        return
    # Who was there at join (the JoinResponse's other participants) and their tracks.
    for p in room.remote_participants.values():
        person(p, "join")
        for pub in p.track_publications.values():
            track(p, pub)
    event("connected", identity=room.local_participant.identity, present=sorted(people), at_s=at())

    def state() -> dict:
        return {"participants": people, "subscription_failures": failures, "reached": reached, "left": left}

    def done() -> bool:
        if disconnected.is_set():
            return True
        if args.until == "frames":
            return bool(args.expect) and all(e in reached for e in args.expect)
        if args.until == "left":
            return bool(args.expect) and all(e in left for e in args.expect)
        return False

    deadline = started + args.timeout
    timed_out = False
    nxt = asyncio.ensure_future(cmds.get())
    while not done():
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            timed_out = True
            break
        woken = asyncio.ensure_future(wake.wait())
        await asyncio.wait([nxt, woken], timeout=left_s, return_when=asyncio.FIRST_COMPLETED)
        woken.cancel()
        wake.clear()
        if nxt.done():
            cmd = nxt.result()
            if cmd is None or cmd == "stop":
                break
            if cmd == "report":
                event("report", **state())
            elif cmd == "stats":
                event("stats", **(await receive_stats(room)))
            elif cmd.startswith("quality "):
                q = cmd.split()[1]
                for p in room.remote_participants.values():
                    for pub in p.track_publications.values():
                        if pub.kind == rtc.TrackKind.KIND_VIDEO:
                            pub.set_video_quality(rtc.VideoQuality.Value("VIDEO_QUALITY_" + q))
                event("quality", quality=q)
            else:
                log(f"unknown command {cmd!r}")
            nxt = asyncio.ensure_future(cmds.get())
    nxt.cancel()

    was_disconnected = await leave_room(room, None, disconnected, tasks)
    summary(connected=True, timed_out=timed_out, disconnected_by_server=was_disconnected, **state())


if __name__ == "__main__":
    run_sdk_client(main)

"""A LiveKit SDK publisher, run step by step by the Rust driver (`live_client`), for the
tests of what a publisher controls and is told about its tracks' subscribers.

It joins, optionally restricts who may subscribe to its tracks (--allow-only, with
`LocalParticipant.set_track_subscription_permissions` before publishing), then publishes
VP8 video of one colour (--color, so receivers can tell publishers apart; --simulcast for
layers) and Opus audio,
and keeps them flowing until told to stop.

Events (stdout, `event: NAME {json}`): `connected`, `published` {video, audio} (the track
sids), `local_track_subscribed` {sid} (the server told it that a track got a first
subscriber: `SignalResponse.track_subscribed`), `permissions` {allow_all, allow}.
`stats` {layers, available_outgoing_bitrate} (what libwebrtc sends per simulcast layer, and
its bandwidth estimate, from the SDK's GetStats).
`unpublished` {sid} (after `unpublish video|audio`: the track is unpublished, the
participant stays).
Commands (stdin): `allow-all`, `allow-only ID[,ID…]`, `stats`, `unpublish video|audio`,
`stop` (or stdin closed).
It prints one JSON line last.
"""

import argparse
import asyncio
import time

from livekit import rtc

from common import commands, event, feed_audio, feed_video, leave_room, log, parse_color, run_sdk_client, summary


def permissions(room: rtc.Room, allow: list, record: list) -> None:
    """Lets everyone subscribe (allow empty) or only the named identities."""
    if allow:
        room.local_participant.set_track_subscription_permissions(
            allow_all_participants=False,
            participant_permissions=[
                rtc.ParticipantTrackPermission(participant_identity=who, allow_all=True)
                for who in allow
            ],
        )
    else:
        room.local_participant.set_track_subscription_permissions(allow_all_participants=True)
    record.append({"allow_all": not allow, "allow": allow})
    event("permissions", allow_all=not allow, allow=allow)


async def send_stats(room: rtc.Room) -> None:
    """Reports what the publisher's encoder sends per layer (size, rate, frames, and why
    libwebrtc limits it: bandwidth or CPU) and its send-side bandwidth estimate."""
    stats = await room.get_rtc_stats()
    layers, available = [], 0.0
    for s in stats.publisher_stats:
        kind = s.WhichOneof("stats")
        if kind == "outbound_rtp" and s.outbound_rtp.stream.kind == "video":
            o = s.outbound_rtp.outbound
            layers.append(
                {
                    "rid": o.rid,
                    "width": o.frame_width,
                    "height": o.frame_height,
                    "fps": round(o.frames_per_second, 1),
                    "frames_sent": o.frames_sent,
                    "bytes_sent": s.outbound_rtp.sent.bytes_sent,
                    "target_bitrate": round(o.target_bitrate),
                    "active": o.active,
                    "limited_by": rtc.stats.QualityLimitationReason.Name(o.quality_limitation_reason),
                    "limited_s": {k: round(v, 1) for k, v in o.quality_limitation_durations.items()},
                }
            )
        elif kind == "candidate_pair" and s.candidate_pair.candidate_pair.nominated:
            available = s.candidate_pair.candidate_pair.available_outgoing_bitrate
    layers.sort(key=lambda l: l["rid"])
    event("stats", layers=layers, available_outgoing_bitrate=round(available))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--color", default="200,40,40", help="R,G,B of the video")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--allow-only", default="", help="identities allowed to subscribe, comma-separated")
    ap.add_argument("--simulcast", action="store_true", help="publish the video as simulcast")
    ap.add_argument("--fps", type=float, default=0, help="the top layer's frame rate (else the SDK's preset)")
    ap.add_argument("--duration", type=float, default=60.0, help="leave after this long at most")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    started = time.monotonic()
    room = rtc.Room()
    stop = asyncio.Event()
    tasks: list = []
    subscribed: list = []
    record: list = []
    disconnected = asyncio.Event()

    @room.on("local_track_subscribed")
    def on_local_subscribed(track: rtc.Track):
        subscribed.append({"sid": track.sid, "at_s": round(time.monotonic() - started, 3)})
        event("local_track_subscribed", sid=track.sid)

    @room.on("disconnected")
    def on_disconnected(reason):
        disconnected.set()

    cmds = await commands()
    try:
        await room.connect(args.url, args.token, rtc.RoomOptions(auto_subscribe=False))
    except Exception as e:
        summary(connected=False, error=str(e))
        return
    event("connected", identity=room.local_participant.identity)
    allow = [a for a in args.allow_only.split(",") if a]
    if allow:
        permissions(room, allow, record)

    published = {}
    error = ""
    try:
        vsrc = rtc.VideoSource(width, height)
        vtrack = rtc.LocalVideoTrack.create_video_track("camera", vsrc)
        vopts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=args.simulcast)
        if args.fps:
            vopts.video_encoding.max_framerate = args.fps
            vopts.video_encoding.max_bitrate = 1_500_000
            # No CPU adaptation: on a busy test machine libwebrtc would lower the frame
            # rate and the size, and the test wants what it asked for.
            vopts.degradation_preference = (
                rtc.TrackPublishOptions.DESCRIPTOR.fields_by_name["degradation_preference"]
                .enum_type.values_by_name["DEGRADATION_PREFERENCE_MAINTAIN_FRAMERATE_AND_RESOLUTION"]
                .number
            )
        published["video"] = (await room.local_participant.publish_track(vtrack, vopts)).sid
        asrc = rtc.AudioSource(48000, 1)
        atrack = rtc.LocalAudioTrack.create_audio_track("mic", asrc)
        aopts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        published["audio"] = (await room.local_participant.publish_track(atrack, aopts)).sid
        tasks.append(asyncio.ensure_future(feed_video(vsrc, stop, width, height, parse_color(args.color))))
        tasks.append(asyncio.ensure_future(feed_audio(asrc, stop)))
        event("published", **published)
    except Exception as e:
        error = str(e)
        log(f"publish failed: {e}")
        event("publish_failed", error=error)

    deadline = started + args.duration
    gone = asyncio.ensure_future(disconnected.wait())
    while not disconnected.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        nxt = asyncio.ensure_future(cmds.get())
        await asyncio.wait([nxt, gone], timeout=left, return_when=asyncio.FIRST_COMPLETED)
        if not nxt.done():
            nxt.cancel()
            continue
        cmd = nxt.result()
        if cmd is None or cmd == "stop":
            break
        if cmd.startswith("unpublish "):
            sid = published.get(cmd.split(" ", 1)[1], "")
            await room.local_participant.unpublish_track(sid)
            event("unpublished", sid=sid)
        elif cmd == "stats":
            try:
                await send_stats(room)
            except Exception as e:  # noqa: BLE001 (reported)
                event("stats", error=repr(e))
        elif cmd == "allow-all":
            permissions(room, [], record)
        elif cmd.startswith("allow-only "):
            permissions(room, [a for a in cmd.split(" ", 1)[1].split(",") if a], record)
        else:
            log(f"unknown command {cmd!r}")

    was_disconnected = await leave_room(room, stop, disconnected, tasks)
    summary(
        connected=True,
        published=published,
        publish_error=error,
        local_track_subscribed=subscribed,
        permissions=record,
        disconnected_by_server=was_disconnected,
    )


if __name__ == "__main__":
    run_sdk_client(main)

"""A LiveKit participant, made with LiveKit's own Python SDK (PyPI `livekit`), for the
interop tests in signaling/tests/livekit_sdk.rs.

It joins a room on the server under test and, as asked:
- publishes simulcast VP8 video (from `rtc.VideoSource`, a moving pattern whose size makes
  the SDK send three layers) and Opus audio (from `rtc.AudioSource`, a tone);
- subscribes to everything, counting decoded video frames and audio frames per track;
- sends reliable data messages and records the ones it receives, with the sender's identity
  the server stamped on them;
- records what it is told about the room: mutes (its own tracks' too), room and participant
  metadata and attributes, and why the server disconnected it;
- waits for the file named by --stop-file (or the duration) before leaving.

It prints one JSON line last (see `common.summary`), which the Rust driver parses.
"""

import argparse
import asyncio
import os
import time

from livekit import rtc

from common import feed_audio, leave_room, log, run_sdk_client, summary

WIDTH, HEIGHT = 1280, 720


async def feed_video(source: rtc.VideoSource, stop: asyncio.Event) -> None:
    frame_no = 0
    buf = bytearray(WIDTH * HEIGHT * 4)
    while not stop.is_set():
        # A bar that moves every frame, so the encoder has something to encode.
        shade = (frame_no * 7) % 256
        x0 = (frame_no * 16) % WIDTH
        for y in range(0, HEIGHT, 8):
            row = y * WIDTH * 4
            start = row + x0 * 4
            buf[start : start + 64 * 4] = bytes([shade, 255 - shade, 128, 255]) * 64
        frame = rtc.VideoFrame(WIDTH, HEIGHT, rtc.VideoBufferType.RGBA, bytes(buf))
        source.capture_frame(frame)
        frame_no += 1
        await asyncio.sleep(1 / 30)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--publish", action="store_true")
    ap.add_argument("--send-data", default="", help="a reliable message to send every second")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--stop-file", default="")
    ap.add_argument("--manual-subscribe", action="store_true", help="auto_subscribe off; subscribe by request")
    ap.add_argument("--want-frames", type=int, default=0, help="leave early once reached")
    ap.add_argument(
        "--peers",
        type=int,
        default=0,
        help="with --want-frames: also wait until this many others said they reached it",
    )
    args = ap.parse_args()

    room = rtc.Room()
    stop = asyncio.Event()
    started = time.monotonic()
    video_frames: dict[str, int] = {}
    audio_frames: dict[str, int] = {}
    first_frame_at: list[float] = []
    data: list[dict] = []
    muted_seen: list[str] = []
    speakers_seen: list[str] = []
    events: list[str] = []
    tasks: list[asyncio.Task] = []
    disconnected = asyncio.Event()
    disconnect_reason: list[str] = []
    peers_done: set[str] = set()
    said_done = False

    async def count_video(track: rtc.Track, sid: str) -> None:
        async for _ in rtc.VideoStream(track):
            video_frames[sid] = video_frames.get(sid, 0) + 1
            if not first_frame_at:
                first_frame_at.append(time.monotonic() - started)

    async def count_audio(track: rtc.Track, sid: str) -> None:
        async for _ in rtc.AudioStream(track):
            audio_frames[sid] = audio_frames.get(sid, 0) + 1

    @room.on("track_subscribed")
    def on_track(track: rtc.Track, pub: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant):
        events.append(f"subscribed {who.identity} {pub.sid} {track.kind}")
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            tasks.append(asyncio.ensure_future(count_video(track, pub.sid)))
        else:
            tasks.append(asyncio.ensure_future(count_audio(track, pub.sid)))

    @room.on("active_speakers_changed")
    def on_speakers(speakers):
        for sp in speakers:
            if sp.identity not in speakers_seen:
                speakers_seen.append(sp.identity)

    @room.on("track_muted")
    def on_muted(who, pub):
        muted_seen.append(pub.sid)

    @room.on("room_metadata_changed")
    def on_room_metadata(old, new):
        events.append(f"room_metadata {new}")

    @room.on("participant_metadata_changed")
    def on_metadata(who, old, new):
        events.append(f"metadata {who.identity} {new}")

    @room.on("participant_attributes_changed")
    def on_attributes(changed, who):
        events.append(f"attributes {who.identity} {sorted(changed.items())}")

    @room.on("data_received")
    def on_data(packet: rtc.DataPacket):
        who = packet.participant.identity if packet.participant else ""
        if packet.topic == "prism-test-done":
            peers_done.add(who)
            return
        data.append({"from": who, "data": packet.data.decode(errors="replace"), "topic": packet.topic})

    @room.on("participant_connected")
    def on_join(p):
        events.append(f"joined {p.identity}")

    @room.on("participant_disconnected")
    def on_leave(p):
        events.append(f"left {p.identity}")

    @room.on("disconnected")
    def on_disconnected(reason):
        disconnect_reason.append(str(reason))
        disconnected.set()

    @room.on("track_published")
    def on_published(pub: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant):
        events.append(f"published {who.identity} {pub.sid}")
        if args.manual_subscribe:
            pub.set_subscribed(True)

    opts = rtc.RoomOptions(auto_subscribe=not args.manual_subscribe)
    try:
        await room.connect(args.url, args.token, opts)
    except Exception as e:  # the refusal tests expect this
        summary(connected=False, error=str(e))
        return
    connect_s = time.monotonic() - started
    if args.manual_subscribe:
        for p in room.remote_participants.values():
            for pub in p.track_publications.values():
                pub.set_subscribed(True)
    log(f"connected as {room.local_participant.identity} in {connect_s:.2f}s")
    published = []
    publish_error = ""
    if args.publish:
        try:
            vsrc = rtc.VideoSource(WIDTH, HEIGHT)
            vtrack = rtc.LocalVideoTrack.create_video_track("camera", vsrc)
            vopts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=True)
            vpub = await room.local_participant.publish_track(vtrack, vopts)
            published.append(vpub.sid)
            asrc = rtc.AudioSource(48000, 1)
            atrack = rtc.LocalAudioTrack.create_audio_track("mic", asrc)
            aopts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            apub = await room.local_participant.publish_track(atrack, aopts)
            published.append(apub.sid)
            tasks.append(asyncio.ensure_future(feed_video(vsrc, stop)))
            tasks.append(asyncio.ensure_future(feed_audio(asrc, stop)))
        except Exception as e:
            publish_error = str(e)
            log(f"publish failed: {e}")

    deadline = started + args.duration
    last_data = 0.0
    last_done = 0.0
    while time.monotonic() < deadline and not disconnected.is_set():
        if args.stop_file and os.path.exists(args.stop_file):
            break
        if args.want_frames and video_frames and min(video_frames.values()) >= args.want_frames and audio_frames:
            if args.peers and (not said_done or time.monotonic() - last_done >= 1.0):
                # Said again every second: a reliable message to someone who joins late
                # would otherwise be missed.
                said_done, last_done = True, time.monotonic()
                try:
                    await room.local_participant.publish_data(b"done", reliable=True, topic="prism-test-done")
                except Exception as e:
                    log(f"publish_data failed: {e}")
            if len(peers_done) >= args.peers:
                if args.peers:
                    await asyncio.sleep(0.5)  # let the last "done" leave before we do
                break
        if args.send_data and time.monotonic() - last_data >= 1.0:
            last_data = time.monotonic()
            try:
                await room.local_participant.publish_data(args.send_data.encode(), reliable=True, topic="test")
            except Exception as e:
                log(f"publish_data failed: {e}")
        await asyncio.sleep(0.1)

    remote = {
        p.identity: {
            "sid": p.sid,
            "tracks": {t.sid: {"muted": t.muted, "kind": int(t.kind)} for t in p.track_publications.values()},
        }
        for p in room.remote_participants.values()
    }
    was_disconnected = await leave_room(room, stop, disconnected, tasks)
    summary(
        connected=True,
        connect_s=round(connect_s, 3),
        identity=room.local_participant.identity if not was_disconnected else "",
        published=published,
        publish_error=publish_error,
        video_frames=video_frames,
        audio_frames=audio_frames,
        first_frame_s=round(first_frame_at[0], 3) if first_frame_at else None,
        data=data,
        muted_seen=muted_seen,
        speakers_seen=speakers_seen,
        remote=remote,
        events=events,
        disconnected_by_server=was_disconnected,
        disconnect_reason=disconnect_reason,
    )


if __name__ == "__main__":
    run_sdk_client(main)

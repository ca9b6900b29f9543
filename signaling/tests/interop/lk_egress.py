"""Records a LiveKit SDK publisher through LiveKit's own server API client (PyPI
`livekit-api`, `LiveKitAPI(url, key, secret).egress`), for signaling/tests/egress_record.rs.

With a publisher (lk_publisher.py) in the room, it:
1. waits until RoomService lists the publisher's audio and video tracks (and their
   simulcast layers);
2. asks for what Prism refuses (room composite, web egress, a stream output) and records
   the Twirp errors;
3. starts a track egress of the video (WebM), one of the audio (Ogg), and a participant
   egress of the publisher (WebM, audio and video), all at once;
4. lets them record for --seconds, then stops them (each StopEgress answers once the file
   is final) and lists them.

With --disk-full it instead records the video into --out (a small tmpfs) and waits until
the egress ends, then lists the room's participants. With --start-only it starts a
participant egress into --out (and an HLS one into --out/hls) and exits (the driver
then stops the server).

Every answer is recorded; it prints one JSON line last (see `common.summary`).
"""

import argparse
import asyncio
import os
import time

from google.protobuf.json_format import MessageToDict
from livekit import api

from common import log, summary


async def error_of(coro):
    try:
        await coro
    except api.TwirpError as e:
        return {"code": e.code, "status": e.status, "message": e.message}
    return None


def info(i) -> dict:
    return MessageToDict(i, preserving_proto_field_name=True)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--room", required=True)
    ap.add_argument("--publisher", required=True)
    ap.add_argument("--out", required=True, help="directory for the files")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--start-only", action="store_true", help="start a participant egress into --out and exit")
    ap.add_argument("--disk-full", action="store_true", help="record the video into --out (a small tmpfs) until it fails")
    args = ap.parse_args()
    out: dict = {}
    step = "connect"
    lk = api.LiveKitAPI(args.url, "devkey", "secret")
    try:
        step = "wait for tracks"
        deadline = time.monotonic() + 60
        video = audio = None
        while time.monotonic() < deadline:
            try:
                res = await lk.room.list_participants(api.ListParticipantsRequest(room=args.room))
            except api.TwirpError as e:
                if e.code != "not_found":
                    raise
                res = None
            pub = next((p for p in (res.participants if res else []) if p.identity == args.publisher), None)
            if pub:
                video = next((t for t in pub.tracks if t.type == api.TrackType.VIDEO), None)
                audio = next((t for t in pub.tracks if t.type == api.TrackType.AUDIO), None)
                if video and audio:
                    break
            await asyncio.sleep(0.2)
        if not (video and audio):
            raise RuntimeError("the publisher's tracks never appeared")
        out["layers"] = [{"width": l.width, "height": l.height} for l in video.layers]
        out["video_sid"], out["audio_sid"] = video.sid, audio.sid

        if args.start_only:
            step = "start only"
            started = await lk.egress.start_participant_egress(
                api.ParticipantEgressRequest(
                    room_name=args.room,
                    identity=args.publisher,
                    file_outputs=[api.EncodedFileOutput(filepath=os.path.join(args.out, "sigterm.webm"))],
                )
            )
            out["started"] = info(started)
            hls = await lk.egress.start_participant_egress(
                api.ParticipantEgressRequest(
                    room_name=args.room,
                    identity=args.publisher,
                    segment_outputs=[
                        api.SegmentedFileOutput(
                            filename_prefix=os.path.join(args.out, "hls", "seg"),
                            playlist_name="index.m3u8",
                            segment_duration=2,
                        )
                    ],
                )
            )
            out["hls"] = info(hls)
            out["ok"] = True
            return

        if args.disk_full:
            step = "disk full"
            eg = lk.egress
            started = await eg.start_track_egress(
                api.TrackEgressRequest(
                    room_name=args.room,
                    track_id=video.sid,
                    file=api.DirectFileOutput(filepath=os.path.join(args.out, "full.webm")),
                )
            )
            ended = None
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                res = await eg.list_egress(api.ListEgressRequest(egress_id=started.egress_id))
                if res.items and res.items[0].status not in (api.EgressStatus.EGRESS_STARTING, api.EgressStatus.EGRESS_ACTIVE):
                    ended = res.items[0]
                    break
                await asyncio.sleep(0.2)
            if ended is None:
                raise RuntimeError("the egress never ended")
            out["ended"] = info(ended)
            out["status"] = api.EgressStatus.Name(ended.status)
            # The room carries on: the publisher is still there with its tracks.
            res = await lk.room.list_participants(api.ListParticipantsRequest(room=args.room))
            out["participants_after"] = {p.identity: len(p.tracks) for p in res.participants}
            out["ok"] = True
            return

        step = "refusals"
        eg = lk.egress
        file_out = api.EncodedFileOutput(filepath=os.path.join(args.out, "never.webm"))
        out["refused"] = {
            "room_composite": await error_of(
                eg.start_room_composite_egress(
                    api.RoomCompositeEgressRequest(room_name=args.room, layout="grid", file_outputs=[file_out])
                )
            ),
            "web": await error_of(eg.start_web_egress(api.WebEgressRequest(url="https://example.com", file_outputs=[file_out]))),
            "rtmp": await error_of(
                eg.start_participant_egress(
                    api.ParticipantEgressRequest(
                        room_name=args.room,
                        identity=args.publisher,
                        stream_outputs=[api.StreamOutput(urls=["rtmp://127.0.0.1/live/x"])],
                    )
                )
            ),
            "no_track": await error_of(
                eg.start_track_egress(
                    api.TrackEgressRequest(
                        room_name=args.room, track_id="TR_nope", file=api.DirectFileOutput(filepath="x.webm")
                    )
                )
            ),
            "stop_unknown": await error_of(eg.stop_egress(api.StopEgressRequest(egress_id="EG_nope"))),
        }

        step = "start"
        started = await asyncio.gather(
            eg.start_track_egress(
                api.TrackEgressRequest(
                    room_name=args.room,
                    track_id=video.sid,
                    file=api.DirectFileOutput(filepath=os.path.join(args.out, "video-track.webm")),
                )
            ),
            eg.start_track_egress(
                api.TrackEgressRequest(
                    room_name=args.room,
                    track_id=audio.sid,
                    file=api.DirectFileOutput(filepath=os.path.join(args.out, "audio-track.ogg")),
                )
            ),
            eg.start_participant_egress(
                api.ParticipantEgressRequest(
                    room_name=args.room,
                    identity=args.publisher,
                    file_outputs=[api.EncodedFileOutput(filepath=os.path.join(args.out, "participant.webm"))],
                )
            ),
        )
        out["started"] = [info(i) for i in started]
        ids = [i.egress_id for i in started]
        listed = await eg.list_egress(api.ListEgressRequest(room_name=args.room, active=True))
        out["active"] = sorted(i.egress_id for i in listed.items)

        step = "record"
        await asyncio.sleep(args.seconds)

        step = "stop"
        stopped = await asyncio.gather(*(eg.stop_egress(api.StopEgressRequest(egress_id=i)) for i in ids))
        out["stopped"] = [info(i) for i in stopped]
        out["stop_again"] = await error_of(eg.stop_egress(api.StopEgressRequest(egress_id=ids[0])))
        listed = await eg.list_egress(api.ListEgressRequest(room_name=args.room))
        out["listed"] = {i.egress_id: api.EgressStatus.Name(i.status) for i in listed.items}
        out["ok"] = True
    except Exception as e:  # noqa: BLE001 (reported in the summary)
        log(f"failed at {step}: {e!r}")
        out["ok"] = False
        out["failed_at"] = step
        out["error"] = repr(e)
    finally:
        await lk.aclose()
        summary(**out)


if __name__ == "__main__":
    asyncio.run(main())

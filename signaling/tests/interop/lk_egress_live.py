"""LiveKit's Egress (and Ingress) API through LiveKit's own server API client (PyPI
`livekit-api`), run step by step by signaling/tests/egress_formats.rs.

Commands (stdin, one a line):
- `ingress ROOM IDENTITY`: CreateIngress (RTMP); event `ingress` {info};
- `tracks ROOM IDENTITY`: waits until RoomService lists the participant's audio and video
  tracks; event `tracks` {video, audio, video_mime, layers};
- `track ROOM TRACK_ID PATH`: StartTrackEgress to a file; event `started` {info};
- `participant ROOM IDENTITY PATH [mp4]`: StartParticipantEgress to one file (file type
  MP4 with `mp4`); event `started` {info};
- `hls ROOM IDENTITY PREFIX PLAYLIST LIVE_PLAYLIST SECONDS`: StartParticipantEgress with
  one SegmentedFileOutput; event `started` {info};
- `refusals ROOM IDENTITY`: a segmented output to S3, one with another protocol, and a
  file with segments together; event `refused` {s3, protocol, two} (each {code, message});
- `stop EGRESS_ID`: StopEgress (answered once the output is final); event `stopped` {info};
- `quit`.
A call that fails gives event `failed` {method, code, message}. EgressInfo is printed as
protobuf's JSON mapping (field names as in the .proto).
"""

import argparse
import asyncio
import time

from google.protobuf.json_format import MessageToDict
from livekit import api

from common import commands, event, log, summary


def as_dict(msg) -> dict:
    return MessageToDict(msg, preserving_proto_field_name=True)


async def wait_tracks(lk, room: str, identity: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            res = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        except api.TwirpError as e:
            if e.code != "not_found":
                raise
            res = None
        pub = next((p for p in (res.participants if res else []) if p.identity == identity), None)
        if pub:
            video = next((t for t in pub.tracks if t.type == api.TrackType.VIDEO), None)
            audio = next((t for t in pub.tracks if t.type == api.TrackType.AUDIO), None)
            if video and audio:
                return {
                    "video": video.sid,
                    "audio": audio.sid,
                    "video_mime": video.mime_type,
                    "layers": [{"width": l.width, "height": l.height} for l in video.layers],
                }
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the tracks of {identity} never appeared")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    args = ap.parse_args()
    lk = api.LiveKitAPI(args.url, "devkey", "secret")
    eg = lk.egress
    done = []
    queue = await commands()
    try:
        event("ready")
        while True:
            line = await queue.get()
            if line is None or line == "quit":
                break
            w = line.split()
            method = w[0]
            try:
                if method == "ingress":
                    info = await lk.ingress.create_ingress(
                        api.CreateIngressRequest(
                            input_type=api.IngressInput.RTMP_INPUT,
                            name=f"rtmp into {w[1]}",
                            room_name=w[1],
                            participant_identity=w[2],
                        )
                    )
                    event("ingress", info=as_dict(info))
                elif method == "tracks":
                    event("tracks", **(await wait_tracks(lk, w[1], w[2])))
                elif method == "track":
                    info = await eg.start_track_egress(
                        api.TrackEgressRequest(
                            room_name=w[1], track_id=w[2], file=api.DirectFileOutput(filepath=w[3])
                        )
                    )
                    event("started", info=as_dict(info))
                elif method == "participant":
                    file_type = api.EncodedFileType.MP4 if w[4:] == ["mp4"] else api.EncodedFileType.DEFAULT_FILETYPE
                    info = await eg.start_participant_egress(
                        api.ParticipantEgressRequest(
                            room_name=w[1],
                            identity=w[2],
                            file_outputs=[api.EncodedFileOutput(filepath=w[3], file_type=file_type)],
                        )
                    )
                    event("started", info=as_dict(info))
                elif method == "hls":
                    info = await eg.start_participant_egress(
                        api.ParticipantEgressRequest(
                            room_name=w[1],
                            identity=w[2],
                            segment_outputs=[
                                api.SegmentedFileOutput(
                                    protocol=api.SegmentedFileProtocol.HLS_PROTOCOL,
                                    filename_prefix=w[3],
                                    playlist_name=w[4],
                                    live_playlist_name=w[5],
                                    segment_duration=int(w[6]),
                                )
                            ],
                        )
                    )
                    event("started", info=as_dict(info))
                elif method == "refusals":
                    async def error_of(**outputs):
                        try:
                            await eg.start_participant_egress(
                                api.ParticipantEgressRequest(room_name=w[1], identity=w[2], **outputs)
                            )
                        except api.TwirpError as e:
                            return {"code": e.code, "message": e.message}
                        return None

                    seg = dict(filename_prefix="never", segment_duration=2)
                    event(
                        "refused",
                        s3=await error_of(
                            segment_outputs=[api.SegmentedFileOutput(s3=api.S3Upload(bucket="b"), **seg)]
                        ),
                        protocol=await error_of(segment_outputs=[api.SegmentedFileOutput(protocol=7, **seg)]),
                        two=await error_of(
                            file_outputs=[api.EncodedFileOutput(filepath="never.mp4")],
                            segment_outputs=[api.SegmentedFileOutput(**seg)],
                        ),
                    )
                elif method == "stop":
                    info = await eg.stop_egress(api.StopEgressRequest(egress_id=w[1]))
                    event("stopped", info=as_dict(info))
                else:
                    event("failed", method=method, code="", message="unknown command")
                    continue
                done.append(method)
            except api.TwirpError as e:
                log(f"{method}: {e}")
                event("failed", method=method, code=getattr(e, "code", ""), message=getattr(e, "message", str(e)))
            except Exception as e:  # noqa: BLE001 (reported as an event)
                log(f"{method}: {e!r}")
                event("failed", method=method, code="exception", message=repr(e))
    finally:
        await lk.aclose()
    summary(done=done)


if __name__ == "__main__":
    asyncio.run(main())

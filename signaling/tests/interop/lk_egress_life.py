"""How recordings end and start by themselves, through LiveKit's own server API client
(PyPI `livekit-api`), for signaling/tests/egress_record.rs. Run step by step by the Rust
driver (its `live_client`): it prints `event: NAME {json}` lines and reads commands.

--mode subject (a publisher, lk_publisher.py, is in --room):
  starts a track egress of the publisher's video and a participant egress of the
  publisher, then prints `started` {track, participant} (egress ids). Then, told:
  `wait-track-end`: waits until the track egress has ended, prints `track_ended` {track,
  participant} (their infos at that moment); `wait-participant-end`: the same for the
  participant egress, `participant_ended` {participant}.

--mode auto:
  CreateRoom --room with `egress.participant` (one file per publisher) and `egress.tracks`
  (one file per track), and asks for a room composite auto-egress in another room (the
  refusal is recorded); prints `created` {refused, token} (token: a join token for
  --token-room whose roomConfig asks for track auto-egress). Then, told
  `wait-active N ROOM`: waits until ROOM has N active egresses, prints `active` {items};
  `delete ROOM`: deletes the room, waits until none of its egresses is active, prints
  `ended` {items}.

It prints one JSON line last (see `common.summary`).
"""

import argparse
import asyncio
import os
import time

from google.protobuf.json_format import MessageToDict
from livekit import api

from common import commands, event, log, summary

ACTIVE = (api.EgressStatus.EGRESS_STARTING, api.EgressStatus.EGRESS_ACTIVE, api.EgressStatus.EGRESS_ENDING)


def info(i) -> dict:
    d = MessageToDict(i, preserving_proto_field_name=True)
    d["status"] = api.EgressStatus.Name(i.status)
    return d


async def until(what: str, check, seconds: float = 60.0):
    """Polls `check` (async, returns a value or None) until it returns a value."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = await check()
        if v is not None:
            return v
        await asyncio.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


async def subject(lk: api.LiveKitAPI, args, cmds) -> dict:
    async def tracks():
        try:
            res = await lk.room.list_participants(api.ListParticipantsRequest(room=args.room))
        except api.TwirpError:
            return None
        pub = next((p for p in res.participants if p.identity == args.publisher), None)
        video = pub and next((t for t in pub.tracks if t.type == api.TrackType.VIDEO), None)
        audio = pub and next((t for t in pub.tracks if t.type == api.TrackType.AUDIO), None)
        return (video, audio) if video and audio else None

    video, _ = await until("the publisher's tracks", tracks)
    eg = lk.egress
    track = await eg.start_track_egress(
        api.TrackEgressRequest(
            room_name=args.room,
            track_id=video.sid,
            file=api.DirectFileOutput(filepath=os.path.join(args.out, "until-unpublished.webm")),
        )
    )
    part = await eg.start_participant_egress(
        api.ParticipantEgressRequest(
            room_name=args.room,
            identity=args.publisher,
            file_outputs=[api.EncodedFileOutput(filepath=os.path.join(args.out, "until-left.webm"))],
        )
    )
    event("started", track=track.egress_id, participant=part.egress_id)

    async def get(egress_id):
        res = await eg.list_egress(api.ListEgressRequest(egress_id=egress_id))
        return res.items[0]

    def ended(egress_id):
        async def check():
            i = await get(egress_id)
            return i if i.status not in ACTIVE else None

        return check

    out = {}
    while True:
        cmd = await cmds.get()
        if cmd is None or cmd == "stop":
            break
        if cmd == "wait-track-end":
            t = await until("the track egress to end", ended(track.egress_id))
            p = await get(part.egress_id)
            out["track_ended"] = {"track": info(t), "participant": info(p)}
            event("track_ended", **out["track_ended"])
        elif cmd == "wait-participant-end":
            p = await until("the participant egress to end", ended(part.egress_id))
            out["participant_ended"] = {"participant": info(p)}
            event("participant_ended", **out["participant_ended"])
        else:
            log(f"unknown command {cmd!r}")
    return out


async def auto(lk: api.LiveKitAPI, args, cmds) -> dict:
    out: dict = {}
    await lk.room.create_room(
        api.CreateRoomRequest(
            name=args.room,
            egress=api.RoomEgress(
                participant=api.AutoParticipantEgress(
                    file_outputs=[
                        api.EncodedFileOutput(filepath=os.path.join(args.out, "{room_name}-{publisher_identity}.webm"))
                    ]
                ),
                tracks=api.AutoTrackEgress(filepath=os.path.join(args.out, "{room_name}-{track_id}")),
            ),
        )
    )
    try:
        await lk.room.create_room(
            api.CreateRoomRequest(
                name=args.room + "-composite",
                egress=api.RoomEgress(
                    room=api.RoomCompositeEgressRequest(
                        room_name=args.room + "-composite",
                        file_outputs=[api.EncodedFileOutput(filepath="composite.mp4")],
                    )
                ),
            )
        )
        out["refused"] = None
    except api.TwirpError as e:
        out["refused"] = {"code": e.code, "message": e.message}
    token = (
        api.AccessToken("devkey", "secret")
        .with_identity(args.publisher + "-token")
        .with_grants(api.VideoGrants(room_join=True, room=args.token_room))
        .with_room_config(
            api.RoomConfiguration(
                egress=api.RoomEgress(
                    tracks=api.AutoTrackEgress(filepath=os.path.join(args.out, "{room_name}-{track_id}"))
                )
            )
        )
        .to_jwt()
    )
    event("created", refused=out["refused"], token=token)

    async def listed(room):
        res = await lk.egress.list_egress(api.ListEgressRequest(room_name=room))
        return res.items

    while True:
        cmd = await cmds.get()
        if cmd is None or cmd == "stop":
            break
        parts = cmd.split(" ")
        if parts[0] == "wait-active":
            n, room = int(parts[1]), parts[2]

            async def enough():
                items = [i for i in await listed(room) if i.status in ACTIVE]
                return items if len(items) >= n else None

            items = await until(f"{n} active egresses in {room}", enough)
            out.setdefault("active", {})[room] = [info(i) for i in items]
            event("active", room=room, items=out["active"][room])
        elif parts[0] == "delete":
            room = parts[1]
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))

            async def all_ended():
                items = await listed(room)
                return items if items and all(i.status not in ACTIVE for i in items) else None

            items = await until(f"the egresses of {room} to end", all_ended)
            out.setdefault("ended", {})[room] = [info(i) for i in items]
            event("ended", room=room, items=out["ended"][room])
        else:
            log(f"unknown command {cmd!r}")
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--mode", choices=["subject", "auto"], required=True)
    ap.add_argument("--room", required=True)
    ap.add_argument("--token-room", default="", help="(auto) the room a roomConfig token creates")
    ap.add_argument("--publisher", required=True)
    ap.add_argument("--out", required=True, help="directory for the files")
    args = ap.parse_args()
    cmds = await commands()
    lk = api.LiveKitAPI(args.url, "devkey", "secret")
    out: dict = {}
    try:
        out = await (subject if args.mode == "subject" else auto)(lk, args, cmds)
        out["ok"] = True
    except Exception as e:  # noqa: BLE001 (reported in the summary)
        log(f"failed: {e!r}")
        event("failed", error=repr(e))
        out["ok"] = False
        out["error"] = repr(e)
    finally:
        await lk.aclose()
        summary(**out)


if __name__ == "__main__":
    asyncio.run(main())

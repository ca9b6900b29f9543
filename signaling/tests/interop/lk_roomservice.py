"""Drives the server under test with LiveKit's own server API client (PyPI `livekit-api`,
`LiveKitAPI(url, key, secret).room`), for signaling/tests/livekit_roomservice.rs.

With a publisher and a viewer (lk_client.py) in the room, it:
1. waits until RoomService lists both, with the publisher's video track;
2. lists rooms, gets a participant, updates the room's metadata and the viewer's
   metadata and attributes;
3. mutes the publisher's video track (and checks that unmuting is refused);
4. sends the viewer a data message from the server (the SDK sets a 16-byte nonce; a bad
   one is tested from Rust, since the SDK overwrites it);
5. removes the viewer, then checks what is left;
6. asks for things that do not exist (Twirp not_found);
7. creates and deletes a room of its own, then deletes the test room (the publisher is
   disconnected).

Every answer is recorded; it prints one JSON line last (see `common.summary`). Any
unexpected error fails the script (exit status 1) with the step it failed at.
"""

import argparse
import asyncio
import time

from livekit import api

from common import log, summary


async def error_of(coro):
    """The Twirp error a call ends with, as {code, status, message}; None if it succeeds."""
    try:
        await coro
    except api.TwirpError as e:
        return {"code": e.code, "status": e.status, "message": e.message}
    return None


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--room", required=True)
    ap.add_argument("--publisher", required=True)
    ap.add_argument("--viewer", required=True)
    ap.add_argument("--key", default="devkey")
    ap.add_argument("--secret", default="secret")
    args = ap.parse_args()
    out: dict = {}
    step = "connect"
    lk = api.LiveKitAPI(args.url, args.key, args.secret)
    try:
        rs = lk.room
        step = "wait for participants"
        deadline = time.monotonic() + 30
        video_sid = ""
        while time.monotonic() < deadline:
            try:
                res = await rs.list_participants(api.ListParticipantsRequest(room=args.room))
            except api.TwirpError as e:
                if e.code != "not_found":  # the room appears with its first participant
                    raise
                await asyncio.sleep(0.3)
                continue
            by_id = {p.identity: p for p in res.participants}
            pub = by_id.get(args.publisher)
            if pub and args.viewer in by_id:
                videos = [t.sid for t in pub.tracks if t.type == api.TrackType.VIDEO]
                if videos and len(pub.tracks) >= 2:
                    video_sid = videos[0]
                    break
            await asyncio.sleep(0.3)
        if not video_sid:
            raise RuntimeError("the publisher's video never appeared in ListParticipants")
        out["participants"] = sorted(by_id)
        out["video_sid"] = video_sid
        out["publisher_tracks"] = [t.sid for t in by_id[args.publisher].tracks]

        step = "list rooms"
        rooms = await rs.list_rooms(api.ListRoomsRequest())
        out["rooms"] = {r.name: r.num_participants for r in rooms.rooms}
        named = await rs.list_rooms(api.ListRoomsRequest(names=[args.room, "no-such-room"]))
        out["rooms_named"] = [r.name for r in named.rooms]

        step = "get participant"
        p = await rs.get_participant(api.RoomParticipantIdentity(room=args.room, identity=args.viewer))
        out["viewer_sid"] = p.sid

        step = "update room metadata"
        room = await rs.update_room_metadata(
            api.UpdateRoomMetadataRequest(room=args.room, metadata="room-meta-1")
        )
        out["room_metadata"] = room.metadata

        step = "update participant"
        p = await rs.update_participant(
            api.UpdateParticipantRequest(
                room=args.room,
                identity=args.viewer,
                metadata="viewer-meta-1",
                attributes={"role": "guest"},
            )
        )
        out["viewer_metadata"] = p.metadata
        out["viewer_attributes"] = dict(p.attributes)

        step = "mute"
        muted = await rs.mute_published_track(
            api.MuteRoomTrackRequest(
                room=args.room, identity=args.publisher, track_sid=video_sid, muted=True
            )
        )
        out["muted_track"] = {"sid": muted.track.sid, "muted": muted.track.muted}
        out["unmute_error"] = await error_of(
            rs.mute_published_track(
                api.MuteRoomTrackRequest(
                    room=args.room, identity=args.publisher, track_sid=video_sid, muted=False
                )
            )
        )
        out["mute_missing_track_error"] = await error_of(
            rs.mute_published_track(
                api.MuteRoomTrackRequest(
                    room=args.room, identity=args.publisher, track_sid="TR_nope", muted=True
                )
            )
        )

        step = "send data"
        await rs.send_data(
            api.SendDataRequest(
                room=args.room,
                data=b"hello-from-api",
                kind=api.DataPacket.Kind.RELIABLE,
                topic="api",
                destination_identities=[args.viewer],
            )
        )
        # The viewer records what it receives; give the message time to arrive.
        await asyncio.sleep(2.0)

        step = "remove participant"
        await rs.remove_participant(api.RoomParticipantIdentity(room=args.room, identity=args.viewer))
        res = await rs.list_participants(api.ListParticipantsRequest(room=args.room))
        out["after_remove"] = sorted(p.identity for p in res.participants)

        step = "not found"
        out["missing_participant_error"] = await error_of(
            rs.get_participant(api.RoomParticipantIdentity(room=args.room, identity="nobody"))
        )
        out["missing_room_error"] = await error_of(
            rs.list_participants(api.ListParticipantsRequest(room="no-such-room"))
        )

        step = "create and delete"
        made = await rs.create_room(
            api.CreateRoomRequest(name="made-by-api", empty_timeout=120, max_participants=3, metadata="m")
        )
        out["created"] = {
            "name": made.name,
            "sid": made.sid,
            "empty_timeout": made.empty_timeout,
            "max_participants": made.max_participants,
            "metadata": made.metadata,
        }
        rooms = await rs.list_rooms(api.ListRoomsRequest())
        out["rooms_after_create"] = sorted(r.name for r in rooms.rooms)
        await rs.delete_room(api.DeleteRoomRequest(room="made-by-api"))
        await rs.delete_room(api.DeleteRoomRequest(room=args.room))
        rooms = await rs.list_rooms(api.ListRoomsRequest())
        out["rooms_after_delete"] = sorted(r.name for r in rooms.rooms)
        out["delete_missing_error"] = await error_of(rs.delete_room(api.DeleteRoomRequest(room=args.room)))
        out["ok"] = True
    except Exception as e:  # reported, and the test fails on it
        log(f"RoomService step {step!r} failed: {e!r}")
        out["ok"] = False
        out["failed_step"] = step
        out["error"] = repr(e)
    finally:
        await lk.aclose()
    summary(**out)
    if not out["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())

"""RoomService on every node of a Prism cluster, with LiveKit's own server API client
(PyPI `livekit-api`), for signaling/tests/cluster_nodes.rs.

For a room that lives on one node, with a publisher and a viewer in it, it asks every
node (--url, once per node) to:
1. list rooms (ListRooms must be the same everywhere) and the room's participants;
2. send the viewer a data message naming the node;
3. say what it knows of a room that does not exist (Twirp not_found);
then mutes the publisher's video through --mute-url, removes the viewer through
--remove-url, and lists participants on every node again.

It prints one JSON line last (see `common.summary`); any unexpected error fails it with
the step it failed at.
"""

import argparse
import asyncio
import time

from livekit import api

from common import log, summary


async def error_of(coro):
    try:
        await coro
    except api.TwirpError as e:
        return {"code": e.code, "status": e.status, "message": e.message}
    return None


def rooms_of(res) -> list:
    return sorted([r.name, r.sid, r.num_participants] for r in res.rooms)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", action="append", required=True)
    ap.add_argument("--room", required=True)
    ap.add_argument("--publisher", required=True)
    ap.add_argument("--viewer", required=True)
    ap.add_argument("--mute-url", required=True)
    ap.add_argument("--remove-url", required=True)
    ap.add_argument("--key", default="devkey")
    ap.add_argument("--secret", default="secret")
    args = ap.parse_args()

    out: dict = {"ok": False}
    clients = [api.LiveKitAPI(u, args.key, args.secret) for u in args.url]
    step = "wait for participants"
    try:
        rs0 = clients[0].room
        deadline = time.monotonic() + 40
        video_sid = None
        while time.monotonic() < deadline and not video_sid:
            res = await rs0.list_participants(api.ListParticipantsRequest(room=args.room))
            by_id = {p.identity: p for p in res.participants}
            pub = by_id.get(args.publisher)
            viewer = by_id.get(args.viewer)
            # The viewer connected (ICE and DTLS done), so that data reaches it.
            if pub and viewer and viewer.state == api.ParticipantInfo.ACTIVE:
                videos = [t.sid for t in pub.tracks if t.type == api.TrackType.VIDEO]
                if videos:
                    video_sid = videos[0]
                    break
            await asyncio.sleep(0.3)
        if not video_sid:
            raise RuntimeError("the publisher's video never appeared in ListParticipants")

        step = "every node"
        # ListRooms reads the directory, which owners refresh every two seconds: wait
        # until every node lists the room with both participants.
        deadline = time.monotonic() + 20
        while True:
            lists = [rooms_of(await c.room.list_rooms(api.ListRoomsRequest())) for c in clients]
            counted = all(
                any(r[0] == args.room and r[2] == 2 for r in lst) for lst in lists
            )
            if counted and all(lst == lists[0] for lst in lists) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        out["list_rooms"] = lists
        out["participants"] = []
        out["missing_room"] = []
        for i, c in enumerate(clients):
            res = await c.room.list_participants(api.ListParticipantsRequest(room=args.room))
            out["participants"].append(sorted(p.identity for p in res.participants))
            await c.room.send_data(
                api.SendDataRequest(
                    room=args.room,
                    data=f"via-node-{i}".encode(),
                    kind=api.DataPacket.Kind.RELIABLE,
                    topic="cluster",
                    destination_identities=[args.viewer],
                )
            )
            out["missing_room"].append(
                await error_of(
                    c.room.list_participants(api.ListParticipantsRequest(room="no-such-room"))
                )
            )

        step = "mute"
        mute = api.LiveKitAPI(args.mute_url, args.key, args.secret)
        muted = await mute.room.mute_published_track(
            api.MuteRoomTrackRequest(
                room=args.room, identity=args.publisher, track_sid=video_sid, muted=True
            )
        )
        out["muted"] = {"sid": muted.track.sid, "muted": muted.track.muted, "video": video_sid}
        await mute.aclose()
        # Let the data messages reach the viewer before it is removed.
        await asyncio.sleep(2.0)

        step = "remove"
        remove = api.LiveKitAPI(args.remove_url, args.key, args.secret)
        await remove.room.remove_participant(
            api.RoomParticipantIdentity(room=args.room, identity=args.viewer)
        )
        await remove.aclose()
        out["after_remove"] = []
        for c in clients:
            res = await c.room.list_participants(api.ListParticipantsRequest(room=args.room))
            out["after_remove"].append(sorted(p.identity for p in res.participants))
        out["ok"] = True
    except Exception as e:  # noqa: BLE001 - reported to the driver
        out["error"] = f"{step}: {type(e).__name__}: {e}"
        log(out["error"])
    finally:
        for c in clients:
            await c.aclose()
    summary(**out)


if __name__ == "__main__":
    asyncio.run(main())

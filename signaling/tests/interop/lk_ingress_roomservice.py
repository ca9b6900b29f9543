"""RoomService (LiveKit's server API client, PyPI `livekit-api`) on a WHIP publisher, for
signaling/tests/one_room_model.rs: a WHIP session is a participant of its room like any
other, so the server API lists it and can remove it.

1. waits (at most --wait seconds) until ListParticipants lists --identity with at least
   two tracks, and records how it is listed: identity, kind, state, tracks (sid, type,
   source, mime type);
2. GetParticipant on it;
3. RemoveParticipant on it;
4. ListParticipants again.

Prints one JSON line last; exits 1 with the failed step on an unexpected error.
"""

import argparse
import asyncio
import time

from livekit import api

from common import log, summary


def described(p) -> dict:
    return {
        "identity": p.identity,
        "sid": p.sid,
        "kind": int(p.kind),
        "kind_name": api.ParticipantInfo.Kind.Name(p.kind),
        "state": api.ParticipantInfo.State.Name(p.state),
        "tracks": [
            {
                "sid": t.sid,
                "type": api.TrackType.Name(t.type),
                "source": api.TrackSource.Name(t.source),
                "mime_type": t.mime_type,
            }
            for t in p.tracks
        ],
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--room", required=True)
    ap.add_argument("--identity", required=True, help="the WHIP session's token identity")
    ap.add_argument("--wait", type=float, default=30.0)
    ap.add_argument("--key", default="devkey")
    ap.add_argument("--secret", default="secret")
    args = ap.parse_args()
    out: dict = {"ok": False}
    step = "wait for the WHIP participant"
    lk = api.LiveKitAPI(args.url, args.key, args.secret)
    try:
        rs = lk.room
        deadline = time.monotonic() + args.wait
        listed = []
        while True:
            try:
                res = await rs.list_participants(api.ListParticipantsRequest(room=args.room))
                listed = [described(p) for p in res.participants]
            except api.TwirpError as e:
                if e.code != "not_found":
                    raise
                listed = []
            found = [p for p in listed if p["identity"] == args.identity]
            if found and len(found[0]["tracks"]) >= 2:
                break
            if time.monotonic() > deadline:
                out["listed"] = listed
                raise RuntimeError(
                    f"{args.identity} not listed with two tracks within {args.wait} s; "
                    f"listed: {[p['identity'] for p in listed]}"
                )
            await asyncio.sleep(0.3)  # polling the API: nothing to wait on
        out["listed"] = listed
        out["participant"] = found[0]

        step = "get participant"
        p = await rs.get_participant(api.RoomParticipantIdentity(room=args.room, identity=args.identity))
        out["got"] = described(p)

        step = "remove participant"
        await rs.remove_participant(api.RoomParticipantIdentity(room=args.room, identity=args.identity))

        step = "list after remove"
        res = await rs.list_participants(api.ListParticipantsRequest(room=args.room))
        out["after_remove"] = sorted(p.identity for p in res.participants)
        out["ok"] = True
    except Exception as e:  # reported, and the test fails on it
        log(f"RoomService step {step!r} failed: {e!r}")
        out["failed_step"] = step
        out["error"] = repr(e)
    finally:
        await lk.aclose()
    summary(**out)
    if not out["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())

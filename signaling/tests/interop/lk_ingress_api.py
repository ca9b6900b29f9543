"""LiveKit's Ingress API through LiveKit's own server API client (PyPI `livekit-api`,
`LiveKitAPI().ingress`), run step by step by signaling/tests/ingress_rtmp.rs.

Commands (stdin, one a line):
- `create ROOM IDENTITY [rtmp|whip]`: CreateIngress; event `created` {info};
- `list [ROOM]`: ListIngress; event `listed` {items};
- `update ID ROOM`: UpdateIngress (room name); event `updated` {info};
- `delete ID`: DeleteIngress; event `deleted` {info};
- `remove ROOM IDENTITY`: RoomService RemoveParticipant; event `removed`;
- `stop`.
A call that fails gives event `failed` {method, code, message}. IngressInfo is printed as
protobuf's JSON mapping (field names as in the .proto).
"""

import argparse
import asyncio

from google.protobuf.json_format import MessageToDict
from livekit import api

from common import commands, event, log, summary


def as_dict(msg) -> dict:
    return MessageToDict(msg, preserving_proto_field_name=True)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", default="devkey")
    ap.add_argument("--secret", default="secret")
    args = ap.parse_args()

    lk = api.LiveKitAPI(args.url, args.key, args.secret)
    done = []
    queue = await commands()
    try:
        event("ready")
        while True:
            line = await queue.get()
            if line is None or line == "stop":
                break
            words = line.split()
            method = words[0]
            try:
                if method == "create":
                    kind = words[3] if len(words) > 3 else "rtmp"
                    req = api.CreateIngressRequest(
                        input_type=api.IngressInput.WHIP_INPUT
                        if kind == "whip"
                        else api.IngressInput.RTMP_INPUT,
                        name=f"{kind} into {words[1]}",
                        room_name=words[1],
                        participant_identity=words[2],
                        participant_name=f"{words[2]} (ingress)",
                    )
                    info = await lk.ingress.create_ingress(req)
                    event("created", info=as_dict(info))
                elif method == "list":
                    room = words[1] if len(words) > 1 else ""
                    res = await lk.ingress.list_ingress(api.ListIngressRequest(room_name=room))
                    event("listed", items=[as_dict(i) for i in res.items])
                elif method == "update":
                    info = await lk.ingress.update_ingress(
                        api.UpdateIngressRequest(ingress_id=words[1], room_name=words[2])
                    )
                    event("updated", info=as_dict(info))
                elif method == "delete":
                    info = await lk.ingress.delete_ingress(
                        api.DeleteIngressRequest(ingress_id=words[1])
                    )
                    event("deleted", info=as_dict(info))
                elif method == "remove":
                    await lk.room.remove_participant(
                        api.RoomParticipantIdentity(room=words[1], identity=words[2])
                    )
                    event("removed")
                else:
                    event("failed", method=method, code="", message="unknown command")
                    continue
                done.append(method)
            except api.TwirpError as e:
                log(f"{method}: {e}")
                event("failed", method=method, code=getattr(e, "code", ""), message=getattr(e, "message", str(e)))
    finally:
        await lk.aclose()
    summary(done=done)


if __name__ == "__main__":
    asyncio.run(main())

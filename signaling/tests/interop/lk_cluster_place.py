"""Creates rooms through every node of a Prism cluster with LiveKit's own server API
client (PyPI `livekit-api`), for the placement check of signaling/tests/cluster_nodes.rs.

Room i is created through node i mod N (--url, once per node), one after the other, as
an application spreading its calls over a load balancer would. Each CreateRoom must
succeed; where each room landed is read from Redis by the caller.

It prints one JSON line last (see `common.summary`): the rooms created, the sids, and
the first error if any.
"""

import argparse
import asyncio

from livekit import api

from common import log, summary


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", action="append", required=True)
    ap.add_argument("--rooms", type=int, required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--key", default="devkey")
    ap.add_argument("--secret", default="secret")
    args = ap.parse_args()

    clients = [api.LiveKitAPI(u, args.key, args.secret) for u in args.url]
    out: dict = {"ok": False, "rooms": [], "sids": []}
    try:
        for i in range(args.rooms):
            name = f"{args.prefix}{i}"
            room = await clients[i % len(clients)].room.create_room(
                api.CreateRoomRequest(name=name, empty_timeout=120)
            )
            if room.name != name or not room.sid.startswith("RM_"):
                raise RuntimeError(f"CreateRoom {name} answered {room}")
            out["rooms"].append(name)
            out["sids"].append(room.sid)
        out["ok"] = True
    except Exception as e:  # the summary says what failed
        log("placement:", repr(e))
        out["error"] = repr(e)
    finally:
        for c in clients:
            await c.aclose()
    summary(**out)


if __name__ == "__main__":
    asyncio.run(main())

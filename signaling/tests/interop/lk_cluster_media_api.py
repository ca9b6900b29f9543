"""The Ingress and Egress services of a Prism cluster through nodes that do not own the
room, with LiveKit's own server API client (PyPI `livekit-api`), for
signaling/tests/cluster_nodes.rs.

Ingresses and egresses live on the room's owner: an ingress created through --create-url
must be listed (ListIngress by room) through --list-url, another node, and the egresses
of the room (ListEgress by room) are listed through --list-url too; ListIngress without a
room, and by id alone, through --list-url gathers every node's. The ingress is then
deleted by id alone through --list-url (found on the node that holds it), and an unknown
egress id is stopped: not_found from every node.

It prints one JSON line last (see `common.summary`); any unexpected error fails it with
the step it failed at.
"""

import argparse
import asyncio

from livekit import api

from common import log, summary


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--create-url", required=True)
    ap.add_argument("--list-url", required=True)
    ap.add_argument("--room", required=True)
    ap.add_argument("--key", default="devkey")
    ap.add_argument("--secret", default="secret")
    args = ap.parse_args()

    create = api.LiveKitAPI(args.create_url, args.key, args.secret)
    lister = api.LiveKitAPI(args.list_url, args.key, args.secret)
    out: dict = {"ok": False}
    step = "create ingress"
    try:
        info = await create.ingress.create_ingress(
            api.CreateIngressRequest(
                input_type=api.IngressInput.WHIP_INPUT,
                name="cluster-ingress",
                room_name=args.room,
                participant_identity="cluster-ingress",
            )
        )
        out["ingress_id"] = info.ingress_id
        step = "list ingress"
        res = await lister.ingress.list_ingress(api.ListIngressRequest(room_name=args.room))
        out["listed_ingress"] = sorted(i.ingress_id for i in res.items)
        step = "list every ingress"
        res = await lister.ingress.list_ingress(api.ListIngressRequest())
        out["listed_all_ingress"] = sorted(i.ingress_id for i in res.items)
        res = await lister.ingress.list_ingress(api.ListIngressRequest(ingress_id=info.ingress_id))
        out["listed_by_id"] = sorted(i.ingress_id for i in res.items)
        step = "list egress"
        res = await lister.egress.list_egress(api.ListEgressRequest(room_name=args.room))
        out["listed_egress"] = len(res.items)
        step = "delete ingress by id"
        gone = await lister.ingress.delete_ingress(
            api.DeleteIngressRequest(ingress_id=info.ingress_id)
        )
        out["deleted"] = gone.ingress_id
        res = await create.ingress.list_ingress(api.ListIngressRequest(room_name=args.room))
        out["after_delete"] = sorted(i.ingress_id for i in res.items)
        step = "stop an unknown egress"
        try:
            await lister.egress.stop_egress(api.StopEgressRequest(egress_id="EG_nosuchegress"))
            out["unknown_egress"] = "stopped?"
        except api.TwirpError as e:
            out["unknown_egress"] = e.code
        out["ok"] = True
    except Exception as e:  # the summary says what failed
        log(f"{step}:", repr(e))
        out["error"] = f"{step}: {e!r}"
    finally:
        await create.aclose()
        await lister.aclose()
    summary(**out)


if __name__ == "__main__":
    asyncio.run(main())

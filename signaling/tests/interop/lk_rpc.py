"""RoomService PerformRpc against a method a LiveKit Python SDK participant registered (run
from the test venv, `.venv`). The participant joins, registers `echo` (answers the payload
reversed) and `fail` (raises an `RpcError` with its own code, message and data), then the
server API client of `livekit-api` calls both through the server. `livekit-api` has no
`perform_rpc` helper, so the call goes through its Twirp client with RoomService's own
messages, as its other methods do.

Prints a summary: {answer, error_status, error_code, error_message, missing_status}.
"""

import argparse
import asyncio

from livekit import api, rtc
from livekit.api.room_service import SVC
from livekit.protocol.room import PerformRpcRequest, PerformRpcResponse

from common import event, log, run_sdk_client, summary


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--room", default="rpc")
    args = ap.parse_args()
    http = args.url.replace("ws://", "http://", 1)
    token = (
        api.AccessToken("devkey", "secret")
        .with_identity("callee")
        .with_grants(api.VideoGrants(room_join=True, room=args.room))
        .to_jwt()
    )
    room = rtc.Room()

    async def echo(data: rtc.RpcInvocationData) -> str:
        event("invoked", method="echo", caller=data.caller_identity)
        return data.payload[::-1]

    async def fail(data: rtc.RpcInvocationData) -> str:
        raise rtc.RpcError(2001, "the answer is no", "some data")

    await room.connect(args.url, token)
    room.local_participant.register_rpc_method("echo", echo)
    room.local_participant.register_rpc_method("fail", fail)
    event("joined")

    lkapi = api.LiveKitAPI(http, "devkey", "secret")
    room_svc = lkapi.room

    async def call(method: str, payload: str, identity: str = "callee"):
        return await room_svc._client.request(
            SVC,
            "PerformRpc",
            PerformRpcRequest(
                room=args.room,
                destination_identity=identity,
                method=method,
                payload=payload,
                response_timeout_ms=15000,
            ),
            room_svc._auth_header(api.VideoGrants(room_admin=True, room=args.room)),
            PerformRpcResponse,
        )

    # The publisher transport (and its data channel) may still be connecting.
    answer = None
    for _ in range(100):
        try:
            answer = (await call("echo", "hello agent")).payload
            break
        except api.TwirpError as e:
            if e.code != "failed_precondition":
                raise
            await asyncio.sleep(0.1)
    error = {}
    try:
        await call("fail", "x")
    except api.TwirpError as e:
        error = {"status": e.status, "code": e.code, "message": e.message}
    missing = None
    try:
        await call("echo", "x", identity="nobody")
    except api.TwirpError as e:
        missing = e.status
    log("error:", error)
    await lkapi.aclose()
    await room.disconnect()
    summary(
        answer=answer,
        error_status=error.get("status"),
        error_code=error.get("code"),
        error_message=error.get("message"),
        missing_status=missing,
    )


if __name__ == "__main__":
    run_sdk_client(main)

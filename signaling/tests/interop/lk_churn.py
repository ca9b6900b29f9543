"""Join-and-leave churn with LiveKit's Python SDK, for signaling/tests/livekit_sdk.rs.

For --seconds, rounds of --participants SDK participants join one room at once (each with
its publisher PeerConnection and data channels up, as `Room.connect` waits for), stay about
a second, and leave. Prints one JSON line: rounds, joins, failures.
"""

import argparse
import asyncio
import time

from livekit import api, rtc

from common import log, run_sdk_client, summary


def token(key: str, secret: str, room: str, identity: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room)
    return (
        api.AccessToken(key, secret)
        .with_identity(identity)
        .with_name(identity)
        .with_grants(grants)
        .to_jwt()
    )


async def one(url: str, tok: str, stay: float) -> bool:
    room = rtc.Room()
    try:
        await asyncio.wait_for(room.connect(url, tok, rtc.RoomOptions(auto_subscribe=True)), 20)
        await asyncio.sleep(stay)
        return True
    except Exception as e:  # counted, and the message kept for the report
        log(f"join failed: {e}")
        return False
    finally:
        try:
            await asyncio.wait_for(room.disconnect(), 10)
        except Exception:
            pass


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", default="devkey")
    ap.add_argument("--secret", default="secret")
    ap.add_argument("--room", default="churn")
    ap.add_argument("--participants", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()

    start = time.monotonic()
    rounds = joins = failures = 0
    while time.monotonic() - start < args.seconds:
        toks = [token(args.key, args.secret, args.room, f"p{rounds}-{i}") for i in range(args.participants)]
        results = await asyncio.gather(*(one(args.url, t, 1.0) for t in toks))
        rounds += 1
        joins += sum(results)
        failures += len(results) - sum(results)
        log(f"round {rounds}: {sum(results)}/{len(results)} joined")
        await asyncio.sleep(0.3)
    summary(rounds=rounds, joins=joins, failures=failures, seconds=round(time.monotonic() - start, 1))


if __name__ == "__main__":
    run_sdk_client(main)

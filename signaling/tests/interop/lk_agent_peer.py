"""A LiveKit Python SDK participant that talks to agents (run from the test venv, `.venv`):
it joins a room and publishes a tone on its microphone, and measures the frequency of
every agent's audio it receives (an echo agent sends the tone back). It can ask for agents
the three ways LiveKit offers: its token's `roomConfig.agents` (`--token-agent`),
`CreateRoom` with agents before joining (`--create-room-agent`), and, on command, the
AgentDispatchService API through `livekit-api` (`dispatch NAME`, `list`, `undispatch ID`).

Events (`common.event`): `joined`, `participant` {identity, kind} for everyone already
there or arriving, `tone` {identity, freq} once per audio track (half a second of it, once
it is not silent), `left` {identity, kind}, `dispatched`, `dispatches`, `undispatched`, `error`.
Commands: `dispatch NAME`, `list`, `undispatch ID`, `stop`.
"""

import argparse
import asyncio

from livekit import api, rtc

from common import commands, event, feed_audio, log, run_sdk_client, summary, tone_frequency

RATE = 48000


def kind_name(p) -> str:
    try:
        return rtc.ParticipantKind.Name(p.kind)
    except Exception:
        return str(p.kind)


async def measure(track, identity: str) -> None:
    """The frequency of the track's first half second of sound, after 0.2 s of it (silence
    before the echo starts, and the decoder's ramp-up, are left out)."""
    stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
    samples = []
    heard = 0
    async for ev in stream:
        data = ev.frame.data
        if heard == 0 and max((abs(v) for v in data), default=0) < 1000:
            continue
        heard += len(data)
        if heard <= RATE // 5:
            continue
        samples.extend(data)
        if len(samples) >= RATE // 2:
            break
    await stream.aclose()
    event("tone", identity=identity, freq=round(tone_frequency(samples, RATE), 1))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="ws://host:port")
    ap.add_argument("--room", required=True)
    ap.add_argument("--identity", required=True)
    ap.add_argument("--freq", type=float, default=660.0)
    ap.add_argument("--token-agent", default="")
    ap.add_argument("--create-room-agent", default="")
    ap.add_argument("--departure-timeout", type=int, default=0)
    ap.add_argument("--api-key", default="devkey")
    ap.add_argument("--api-secret", default="secret")
    args = ap.parse_args()

    http = args.url.replace("ws://", "http://", 1)
    lkapi = api.LiveKitAPI(http, args.api_key, args.api_secret)
    if args.create_room_agent:
        await lkapi.room.create_room(
            api.CreateRoomRequest(
                name=args.room,
                departure_timeout=args.departure_timeout,
                agents=[api.RoomAgentDispatch(agent_name=args.create_room_agent)],
            )
        )
    token = (
        api.AccessToken(args.api_key, args.api_secret)
        .with_identity(args.identity)
        .with_grants(api.VideoGrants(room_join=True, room=args.room))
    )
    if args.token_agent:
        token = token.with_room_config(
            api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=args.token_agent)])
        )

    room = rtc.Room()
    tasks = []

    def seen(p) -> None:
        event("participant", identity=p.identity, kind=kind_name(p))

    @room.on("participant_connected")
    def _joined(p):
        seen(p)

    @room.on("participant_disconnected")
    def _left(p):
        event("left", identity=p.identity, kind=kind_name(p))

    @room.on("track_subscribed")
    def _sub(track, pub, p):
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            tasks.append(asyncio.ensure_future(measure(track, p.identity)))

    await room.connect(args.url, token.to_jwt())
    event("joined", room=args.room, identity=args.identity)
    for p in room.remote_participants.values():
        seen(p)
    source = rtc.AudioSource(RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("tone", source)
    await room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    stop = asyncio.Event()
    tasks.append(asyncio.ensure_future(feed_audio(source, stop, args.freq)))

    queue = await commands()
    while True:
        line = await queue.get()
        if line is None or line == "stop":
            break
        cmd, _, arg = line.partition(" ")
        try:
            if cmd == "dispatch":
                d = await lkapi.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=arg, room=args.room)
                )
                event("dispatched", id=d.id, agent_name=d.agent_name)
            elif cmd == "list":
                ds = await lkapi.agent_dispatch.list_dispatch(room_name=args.room)
                event(
                    "dispatches",
                    items=[
                        {
                            "id": d.id,
                            "agent_name": d.agent_name,
                            "jobs": [
                                {
                                    "id": j.id,
                                    "status": j.state.status,
                                    "identity": j.state.participant_identity,
                                }
                                for j in d.state.jobs
                            ],
                        }
                        for d in ds
                    ],
                )
            elif cmd == "undispatch":
                d = await lkapi.agent_dispatch.delete_dispatch(dispatch_id=arg, room_name=args.room)
                event("undispatched", id=d.id)
        except Exception as e:  # reported to the driver, which decides
            log("command failed:", line, repr(e))
            event("error", command=line, error=str(e))

    stop.set()
    for t in tasks:
        t.cancel()
    await room.disconnect()
    await lkapi.aclose()
    summary(ok=True)


if __name__ == "__main__":
    run_sdk_client(main)

"""An echo agent: a `livekit-agents` worker (run from the agents venv, `.venv-agents`) whose
job joins the room, waits for a participant, and publishes back whatever that participant's
microphone sends. It uses only `rtc` (no model, nothing from the network but the server).

It registers on the server's `/agent` like any production agent. The worker reports the
load given by `--load` against `--load-threshold`, so the driver decides which worker has
spare capacity. It prints `event: NAME {json}` lines (`common.event`) for the Rust driver:
`registered` (worker id), `load_reported` (with `--report-load`), `job` (room, identity,
job id) when an agent joins a room, `job_done` when a job ends.

Usage: agent_echo.py --url ws://127.0.0.1:7880 [--agent-name echo] [--load 0.1]
"""

import argparse
import asyncio
import json
import logging
import sys

from livekit import rtc
from livekit.agents import AgentServer, AutoSubscribe, JobContext, JobExecutorType, WorkerType


def event(name: str, **fields) -> None:
    print(f"event: {name} {json.dumps(fields)}", flush=True)


async def echo(ctx: JobContext) -> None:
    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    room = ctx.room
    ctx.add_shutdown_callback(lambda: _done(ctx))
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("echo", source)
    await room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    event(
        "job",
        room=room.name,
        identity=room.local_participant.identity,
        job=ctx.job.id,
        agent_name=ctx.job.agent_name,
        type=int(ctx.job.type),
        for_participant=ctx.job.participant.identity if ctx.job.HasField("participant") else "",
    )
    participant = await ctx.wait_for_participant()
    stream = rtc.AudioStream.from_participant(
        participant=participant,
        track_source=rtc.TrackSource.SOURCE_MICROPHONE,
        sample_rate=48000,
        num_channels=1,
    )
    async for ev in stream:
        await source.capture_frame(ev.frame)


async def _done(ctx: JobContext) -> None:
    event("job_done", room=ctx.room.name, job=ctx.job.id)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--api-key", default="devkey")
    ap.add_argument("--api-secret", default="secret")
    ap.add_argument("--agent-name", default="")
    ap.add_argument("--publisher", action="store_true", help="a job per publisher, not per room")
    ap.add_argument("--load", type=float, default=0.0)
    ap.add_argument("--load-threshold", type=float, default=0.7)
    ap.add_argument(
        "--report-load",
        action="store_true",
        help="print `load_reported` once a status update carrying --load was queued",
    )
    args = ap.parse_args()

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    load = args.load
    server = AgentServer(
        ws_url=args.url,
        api_key=args.api_key,
        api_secret=args.api_secret,
        # Jobs run in this process: no process pool to start on a busy test machine.
        job_executor_type=JobExecutorType.THREAD,
        num_idle_processes=0,
        load_threshold=args.load_threshold,
        load_fnc=lambda: load,
        port=0,
        max_retry=3,
    )
    server.rtc_session(
        echo,
        agent_name=args.agent_name,
        type=WorkerType.PUBLISHER if args.publisher else WorkerType.ROOM,
    )
    server.on("worker_registered", lambda wid, info: event("registered", worker_id=wid))
    if args.report_load:
        # The driver waits for this before creating rooms, so that the server knows every
        # worker's load when it picks one (the first report may still carry 0).
        update = server._update_worker_status
        reported = False

        async def update_and_tell() -> None:
            nonlocal reported
            await update()
            if not reported and server._worker_load == load:
                reported = True
                event("load_reported", load=load)

        server._update_worker_status = update_and_tell
    await server.run(devmode=True)


if __name__ == "__main__":
    asyncio.run(main())

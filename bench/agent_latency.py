"""Agent dispatch latency: how long from a room's creation to its agent's join.

Starts `prism serve --dev` (the binary given) and one `livekit-agents` echo worker
(`signaling/tests/interop/agent_echo.py`), then, one room at a time, creates a room with
RoomService CreateRoom (automatic dispatch), waits for the worker to report the job's agent
in the room, and reads the agent's `joined_at_ms` with ListParticipants. Both ends are the
server's own clock: latency = agent `joined_at_ms` - room `creation_time_ms`, so nothing the
script does (process scheduling, polling) is in the figure. The room is then deleted (the
worker is told its job ended) before the next one.

What the figure includes: the server offering the job, the worker accepting and being
assigned, the worker starting the job (a thread here), and the agent's LiveKit SDK joining
(WebSocket, its `/rtc/v1` attempt and fallback, JoinResponse). It is what a user waits for
before "the agent joined".

Run from the agents venv (it has `livekit-api`): see scripts/agent-latency.sh. Writes
bench/results/agent-dispatch-<date>.{json,md}.
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys

from livekit import api

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def percentile(values, p: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


async def lines(stream, queue: asyncio.Queue, echo):
    while True:
        line = await stream.readline()
        if not line:
            await queue.put(None)
            return
        text = line.decode(errors="replace").rstrip()
        if echo:
            print(text, file=sys.stderr)
        await queue.put(text)


async def next_event(queue: asyncio.Queue, name: str, timeout: float) -> dict:
    prefix = f"event: {name} "
    while True:
        line = await asyncio.wait_for(queue.get(), timeout)
        if line is None:
            raise RuntimeError(f"the worker exited before {name}")
        if line.startswith(prefix):
            return json.loads(line[len(prefix):])


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prism", required=True, help="the prism binary")
    ap.add_argument("--rooms", type=int, default=50)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--note", default="")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    loadavg = open("/proc/loadavg").read().strip()
    port = free_port()
    prism = subprocess.Popen(
        [args.prism, "serve", "--dev", "--bind", f"127.0.0.1:{port}", "--log-level", "warn"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    # Wait for the listening line.
    while True:
        line = prism.stdout.readline().decode()
        if not line:
            raise SystemExit("prism exited")
        if line.startswith("prism: listening on"):
            break
    url = f"ws://127.0.0.1:{port}"
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        os.path.join(ROOT, "signaling", "tests", "interop", "agent_echo.py"),
        "--url",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    events: asyncio.Queue = asyncio.Queue()
    pump = asyncio.ensure_future(lines(worker.stdout, events, args.verbose))
    lk = api.LiveKitAPI(f"http://127.0.0.1:{port}", "devkey", "secret")
    latencies = []
    try:
        await next_event(events, "registered", 60)
        for i in range(args.rooms):
            name = f"latency-{i}"
            room = await lk.room.create_room(api.CreateRoomRequest(name=name))
            job = await next_event(events, "job", 60)
            if job["room"] != name:
                raise RuntimeError(f"job for {job['room']}, expected {name}")
            ps = await lk.room.list_participants(api.ListParticipantsRequest(room=name))
            agent = next(p for p in ps.participants if p.identity == job["identity"])
            latencies.append(agent.joined_at_ms - room.creation_time_ms)
            await lk.room.delete_room(api.DeleteRoomRequest(room=name))
            await next_event(events, "job_done", 60)
    finally:
        await lk.aclose()
        worker.kill()
        await worker.wait()
        pump.cancel()
        prism.kill()
        prism.wait()

    stamp = datetime.datetime.now(datetime.timezone.utc)
    commit = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    try:
        from livekit.agents import __version__ as agents_version
    except Exception:
        agents_version = "unknown"
    result = {
        "what": "agent dispatch latency: room creation_time_ms to agent joined_at_ms (server clock)",
        "date_utc": stamp.strftime("%Y-%m-%d %H:%M"),
        "commit": commit,
        "prism": os.path.abspath(args.prism),
        "livekit_agents": agents_version,
        "rooms": len(latencies),
        "machine": {
            "host": socket.gethostname(),
            "cpu_model": cpu_model(),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "loadavg_at_start": loadavg,
        },
        "note": args.note,
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "min": min(latencies),
            "max": max(latencies),
            "mean": round(statistics.mean(latencies), 1),
        },
        "samples_ms": latencies,
    }
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"agent-dispatch-{stamp.strftime('%Y-%m-%d-%H-%M')}")
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    m = result["machine"]
    lat = result["latency_ms"]
    md = f"""## Agent dispatch latency: {result['date_utc']} UTC

{m['cpu_model']} ({m['cpus']} CPUs), kernel {m['kernel']}, load average at start {m['loadavg_at_start']}.
Prism {commit} (`{result['prism']}`), livekit-agents {agents_version}, one echo worker
(thread executor) on the same machine, {result['rooms']} rooms created one after the other
with CreateRoom (automatic dispatch).

Latency = the agent's `joined_at_ms` minus the room's `creation_time_ms`, both the server's
clock: offer, accept, assignment, job start and the agent SDK's join.

| rooms | p50 ms | p99 ms | min ms | max ms | mean ms |
|---:|---:|---:|---:|---:|---:|
| {result['rooms']} | {lat['p50']:.0f} | {lat['p99']:.0f} | {lat['min']} | {lat['max']} | {lat['mean']} |
"""
    if args.note:
        md += f"\nNote: {args.note}\n"
    with open(base + ".md", "w") as f:
        f.write(md)
    print(md)
    print(f"written: {base}.json, {base}.md")


if __name__ == "__main__":
    asyncio.run(main())

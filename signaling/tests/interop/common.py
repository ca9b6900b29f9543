"""Helpers shared by the interop test clients (aiortc WHIP/WHEP, LiveKit SDK participants).

- `allow_loopback()`: aioice leaves 127.0.0.1 out of its host candidates; the tests run on
  loopback only, so it is made the one host address (or `PRISM_ICE_HOST`, for a client
  in a network namespace of its own). Call it before creating a peer.
- `http()`: one HTTP request (urllib in a thread, so the event loop keeps running ICE).
- `summary()`: the single JSON line each client prints last; the Rust driver parses it.
- `event()` and `commands()`: how a client run step by step by the driver (its
  `live_client`) tells what happened and hears what to do next.
- `run_sdk_client()`: runs a LiveKit SDK client's `main` and leaves without the
  interpreter's teardown, in which the SDK's native library can abort.
- `feed_video()`, `feed_audio()`: synthetic media for LiveKit SDK publishers, the video of
  one colour so that a receiver can tell publishers apart; `mean_rgb()` measures it.
"""

import asyncio
import json
import math
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

import aioice.ice


def allow_loopback() -> None:
    # aioice 0.13 looks the function up as a module global at gather time.
    host = os.environ.get("PRISM_ICE_HOST", "127.0.0.1")
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [host]


def _request(method, url, token, body, timeout):
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        headers["Content-Type"] = "application/sdp"
        data = body.encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode(errors="replace")


async def http(method, url, token=None, body=None, timeout=10.0):
    """Returns (status, headers, text). Connection errors raise OSError."""
    return await asyncio.to_thread(_request, method, url, token, body, timeout)


def resource_url(endpoint: str, location: str) -> str:
    """The session URL from a Location header, which may be relative (RFC 9725 §4.2)."""
    return urllib.parse.urljoin(endpoint, location)


def summary(**fields) -> None:
    print(json.dumps(fields), flush=True)


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


# ---- Driving a client step by step ----------------------------------------------------
# A client started by the Rust driver's `live_client` reads commands, one a line, from
# stdin, and tells what happened as `event: NAME {json}` lines on stdout, which the driver
# waits on. The summary stays the last JSON line.


def event(name: str, **fields) -> None:
    print(f"event: {name} {json.dumps(fields)}", flush=True)


async def commands() -> "asyncio.Queue[str | None]":
    """The lines the driver writes to stdin, stripped; None once stdin is closed (the
    driver is gone: take it as `stop`)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    queue: asyncio.Queue = asyncio.Queue()

    async def pump():
        while True:
            line = await reader.readline()
            if not line:
                await queue.put(None)
                return
            await queue.put(line.decode().strip())

    queue.pump = asyncio.ensure_future(pump())  # kept referenced
    return queue


async def leave_room(room, stop, disconnected: "asyncio.Event", tasks: list) -> bool:
    """Ends a LiveKit SDK client's stay: its feeds stopped (`stop`, an event, if it has
    one), the room left (unless the server already disconnected it), its tasks cancelled.
    Whether the server had disconnected it."""
    if stop is not None:
        stop.set()
    by_server = disconnected.is_set()
    if not by_server:
        await room.disconnect()
    for t in tasks:
        t.cancel()
    return by_server


# ---- Synthetic media for LiveKit SDK publishers ----------------------------------------


def parse_color(text: str) -> tuple:
    r, g, b = (int(v) for v in text.split(","))
    return r, g, b


async def feed_video(source, stop: asyncio.Event, width: int, height: int, color=(0, 0, 0)) -> None:
    """Frames of one colour with a bar that moves every frame (so the encoder has
    something to encode), at 30 fps, into an `rtc.VideoSource`."""
    from livekit import rtc

    frame_no = 0
    background = bytes([*color, 255]) * (width * height)
    while not stop.is_set():
        buf = bytearray(background)
        shade = (frame_no * 7) % 256
        x0 = (frame_no * 16) % max(1, width - 64)
        for y in range(0, height, 8):
            start = (y * width + x0) * 4
            buf[start : start + 64 * 4] = bytes([shade, 255 - shade, 128, 255]) * 64
        source.capture_frame(rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, bytes(buf)))
        frame_no += 1
        await asyncio.sleep(1 / 30)


async def feed_audio(source, stop: asyncio.Event, freq: float = 440.0) -> None:
    """A tone (440 Hz unless told), 10 ms frames at 48 kHz, into an `rtc.AudioSource` (which
    paces it)."""
    from livekit import rtc

    rate, per = 48000, 480
    t = 0
    while not stop.is_set():
        frame = rtc.AudioFrame.create(rate, 1, per)
        data = frame.data
        for i in range(per):
            data[i] = int(8000 * math.sin(2 * math.pi * freq * (t + i) / rate))
        t += per
        await source.capture_frame(frame)


def tone_frequency(samples, rate: int) -> float:
    """The strongest frequency in 16-bit mono samples (an FFT peak, Hann-windowed)."""
    import numpy

    a = numpy.asarray(samples, dtype=numpy.float64)
    a = a * numpy.hanning(len(a))
    spectrum = numpy.abs(numpy.fft.rfft(a))
    spectrum[0] = 0.0
    return float(numpy.argmax(spectrum) * rate / len(a))


def mean_rgb(pixels, channels: int) -> list:
    """The mean colour of packed 8-bit pixels (RGB or RGBA), rounded."""
    import numpy

    a = numpy.frombuffer(pixels, dtype=numpy.uint8).reshape(-1, channels)[:, :3]
    return [round(float(v)) for v in a.mean(axis=0)]


def run_sdk_client(main) -> None:
    """Runs `main()` (a coroutine function) to its end, then exits at once.

    The LiveKit SDK's native library can abort (SIGABRT, "panic in a function that cannot
    unwind") while it tears itself down at interpreter exit, seen under load; by then
    everything worth reporting is printed, so the process leaves without that teardown.
    An exception in `main` still exits with 1, after its traceback."""
    code = 0
    try:
        asyncio.run(main())
    except SystemExit as e:
        if isinstance(e.code, int):
            code = e.code
        elif e.code is not None:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - reported, then the exit code says it failed
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

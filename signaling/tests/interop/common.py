"""Helpers shared by the aiortc WHIP/WHEP test clients.

- `allow_loopback()`: aioice leaves 127.0.0.1 out of its host candidates; the tests run on
  loopback only, so it is made the one host address. Call it before creating a peer.
- `http()`: one HTTP request (urllib in a thread, so the event loop keeps running ICE).
- `summary()`: the single JSON line each client prints last; the Rust driver parses it.
"""

import asyncio
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

import aioice.ice


def allow_loopback() -> None:
    # aioice 0.13 looks the function up as a module global at gather time.
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


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

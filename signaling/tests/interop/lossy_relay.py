"""A UDP relay that drops a fraction of RTP on its way to the server.

Proves nothing by itself: it lets a test show that media survives loss (NACK and
retransmission) where the kernel has no netem. The peer sends to the relay, the relay
forwards from one socket to the server, and the server's replies go back to the last peer
address seen. Only RTP in the peer-to-server direction is dropped: STUN, DTLS and RTCP
(RFC 7983 demultiplexing, RFC 5761 payload types 192..223) pass untouched, as does
everything the server sends. Drops come from a seeded generator so a run can be repeated.
It counts what it dropped, and RTP sent again with an (SSRC, sequence number) already seen:
the retransmissions of a sender without RTX, answering the server's NACKs.

Standalone: python lossy_relay.py --upstream 127.0.0.1:7882 --loss 0.05 [--listen ADDR:PORT]
prints its stats every 5 s. With --listen (run by a Rust test as a `live_client`) it binds
that address (the one the server advertises), prints `event: listening {host, port}`, and
on `stop` (or stdin closed) prints its stats as its last JSON line.
"""

import argparse
import asyncio
import random


def is_rtp(data: bytes) -> bool:
    # First byte 128..191 is RTP or RTCP (RFC 7983); the second byte tells them apart.
    return len(data) >= 12 and 128 <= data[0] <= 191 and not 192 <= data[1] <= 223


class LossyRelay(asyncio.DatagramProtocol):
    def __init__(self, upstream, loss: float, seed: int = 1):
        self.upstream = upstream
        self.loss = loss
        self.rng = random.Random(seed)
        self.peer = None
        self.transport = None
        self.seen = set()  # (ssrc, seq) of the RTP from the peer; small for a test's length
        self.stats = {
            "to_server": 0,
            "dropped_rtp": 0,
            "resent_rtp": 0,
            "to_peer": 0,
            "rtp_by_pt": {},
        }

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if addr == self.upstream:
            if self.peer is not None:
                self.stats["to_peer"] += 1
                self.transport.sendto(data, self.peer)
            return
        self.peer = addr
        if is_rtp(data):
            pt = str(data[1] & 0x7F)
            self.stats["rtp_by_pt"][pt] = self.stats["rtp_by_pt"].get(pt, 0) + 1
            key = (data[8:12], data[2:4])
            if key in self.seen:
                self.stats["resent_rtp"] += 1
            self.seen.add(key)
            if self.rng.random() < self.loss:
                self.stats["dropped_rtp"] += 1
                return
        self.stats["to_server"] += 1
        self.transport.sendto(data, self.upstream)


async def start_relay(upstream, loss: float, seed: int = 1, listen=("127.0.0.1", 0)):
    """Binds on `listen` (127.0.0.1, ephemeral port, unless told). Returns (relay, (host, port))."""
    loop = asyncio.get_running_loop()
    transport, relay = await loop.create_datagram_endpoint(
        lambda: LossyRelay(upstream, loss, seed), local_addr=listen
    )
    return relay, transport.get_extra_info("sockname")


async def _driven(upstream, loss: float, seed: int, listen) -> None:
    from common import commands, event, summary

    cmds = await commands()
    relay, addr = await start_relay(upstream, loss, seed, listen)
    event("listening", host=addr[0], port=addr[1])
    try:
        while True:
            cmd = await cmds.get()
            if cmd is None or cmd == "stop":
                break
    finally:
        relay.transport.close()
        summary(**relay.stats)


async def _main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="HOST:PORT of the server")
    ap.add_argument("--loss", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--listen", default="", help="HOST:PORT to bind (driven by stdin)")
    args = ap.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    if args.listen:
        lhost, lport = args.listen.rsplit(":", 1)
        await _driven((host, int(port)), args.loss, args.seed, (lhost, int(lport)))
        return
    relay, addr = await start_relay((host, int(port)), args.loss)
    print(f"relay on {addr[0]}:{addr[1]} -> {args.upstream}, loss {args.loss}", flush=True)
    try:
        while True:
            await asyncio.sleep(5)
            print(relay.stats, flush=True)
    finally:
        relay.transport.close()


if __name__ == "__main__":
    asyncio.run(_main())

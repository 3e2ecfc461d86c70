"""A WebSocket echo load generator, run as its own process (``python -m bench.loadgen URL ...``).

Built on raw asyncio protocols (uvloop) so that the generator costs as little CPU as possible: frames are
written with an all-zero mask key (valid per RFC 6455 and free to apply) and replies are only framed,
never decoded. Each client keeps its send times in order, so every reply gives one round-trip time.

Phases, printed as JSON lines on stdout (``{"event": "begin"|"end", "phase": ...}`` around each, so the
orchestrator can sample the servers' CPU exactly over a phase):
- ``saturate``: closed loop, every client sends its next message as soon as the previous reply arrives;
- ``paced``: every client sends at a fixed rate (open loop), the latency a user sees below saturation.
"""

import argparse
import asyncio
import base64
import json
import os
import random
import resource
import sys
import time
from collections import deque
from urllib.parse import urlsplit

PAYLOAD_SIZE = 100


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def client_frame(payload: bytes) -> bytes:
    """A masked text frame with the zero mask key (payload < 126 bytes)."""
    return bytes((0x81, 0x80 | len(payload))) + b"\x00\x00\x00\x00" + payload


class Client(asyncio.Protocol):
    def __init__(self, stats: "Stats", request: bytes) -> None:
        self.stats = stats
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.upgraded = asyncio.get_running_loop().create_future()
        self.buffer = b""
        self.handshake_done = False
        self.sent: deque[float] = deque()
        self.closed_loop = False
        self.frame = client_frame(os.urandom(PAYLOAD_SIZE // 2).hex().encode()[:PAYLOAD_SIZE])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def send(self) -> None:
        self.sent.append(time.perf_counter())
        self.transport.write(self.frame)  # type: ignore[union-attr]
        self.stats.sent += 1

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        if not self.handshake_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(buf[:end].decode(errors="replace")))
                return
            self.handshake_done = True
            self.upgraded.set_result(None)
            buf = buf[end + 4 :]
        pos, end = 0, len(buf)
        now = time.perf_counter()
        while end - pos >= 2:
            length = buf[pos + 1] & 0x7F
            header = 2
            if length == 126:
                if end - pos < 4:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            if end - pos < header + length:
                break
            opcode = buf[pos] & 0x0F
            pos += header + length
            if opcode in (1, 2) and self.sent:
                self.stats.record(now - self.sent.popleft())
                if self.closed_loop and self.stats.running:
                    self.send()
            elif opcode == 8:
                self.stats.closed += 1
        self.buffer = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed during handshake"))


class Stats:
    def __init__(self) -> None:
        self.reset()
        self.running = False
        self.closed = 0

    def reset(self) -> None:
        self.sent = 0
        self.received = 0
        self.rtts: list[float] = []

    def record(self, rtt: float) -> None:
        self.received += 1
        self.rtts.append(rtt)

    def summary(self, seconds: float) -> dict[str, float]:
        rtts = sorted(self.rtts)

        def pct(p: float) -> float:
            return rtts[min(len(rtts) - 1, int(p * len(rtts)))] * 1000 if rtts else float("nan")

        return {
            "sent": self.sent,
            "received": self.received,
            "seconds": round(seconds, 3),
            "msgs_per_s": round(self.received / seconds, 1),
            "p50_ms": round(pct(0.50), 3),
            "p99_ms": round(pct(0.99), 3),
        }


async def open_clients(url: str, count: int, stats: Stats) -> list[Client]:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(64)  # handshakes in flight: stay far below the server's accept backlog

    async def one() -> Client:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        async with gate:
            _, client = await loop.create_connection(
                lambda: Client(stats, request), parts.hostname, parts.port or 80
            )
            await asyncio.wait_for(client.upgraded, 30)
            return client

    return list(await asyncio.gather(*(one() for _ in range(count))))


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def run(args: argparse.Namespace) -> None:
    stats = Stats()
    clients = await open_clients(args.url, args.clients, stats)
    emit(event="connected", clients=len(clients))

    # closed loop: as fast as the server answers
    stats.reset()
    stats.running = True
    emit(event="begin", phase="saturate")
    start = time.perf_counter()
    for client in clients:
        client.closed_loop = True
        client.send()
    await asyncio.sleep(args.seconds)
    stats.running = False
    elapsed = time.perf_counter() - start
    emit(event="end", phase="saturate", **stats.summary(elapsed))
    await drain(clients)

    # open loop: a fixed offered rate, spread evenly over the clients
    for client in clients:
        client.closed_loop = False
    stats.reset()
    interval = args.clients / args.rate
    loop = asyncio.get_running_loop()
    emit(event="begin", phase="paced", offered_per_s=args.rate)
    start = time.perf_counter()
    end = loop.time() + args.seconds

    def tick(client: Client) -> None:
        if loop.time() < end:
            client.send()
            loop.call_later(interval, tick, client)

    for client in clients:
        loop.call_later(random.uniform(0, interval), tick, client)
    await asyncio.sleep(args.seconds)
    await drain(clients)
    elapsed = time.perf_counter() - start
    emit(event="end", phase="paced", **stats.summary(elapsed))

    for client in clients:
        client.transport.write(b"\x88\x82\x00\x00\x00\x00\x03\xe8")  # close 1000, zero mask
    await asyncio.sleep(0.5)
    for client in clients:
        client.transport.close()


async def drain(clients: list[Client], deadline: float = 10.0) -> None:
    """Wait until every sent message has come back (bounded)."""
    end = time.monotonic() + deadline
    while any(c.sent for c in clients) and time.monotonic() < end:  # noqa: ASYNC110 (bounded poll)
        await asyncio.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=5000.0, help="offered messages/s in the paced phase")
    args = parser.parse_args()
    raise_fd_limit()
    try:
        import uvloop

        uvloop.run(run(args))
    except ImportError:
        asyncio.run(run(args))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

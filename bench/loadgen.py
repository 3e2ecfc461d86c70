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
import os
import random
import sys
import time
from collections import deque

from bench.measure import percentile
from bench.wsclient import (
    OP_BINARY,
    OP_CLOSE,
    OP_TEXT,
    RawClient,
    client_frame,
    emit,
    open_clients,
    raise_fd_limit,
)

PAYLOAD_SIZE = 100


class Client(RawClient):
    def __init__(self, stats: "Stats", request: bytes) -> None:
        super().__init__(request)
        self.stats = stats
        self.sent: deque[float] = deque()
        self.closed_loop = False
        self.frame = client_frame(os.urandom(PAYLOAD_SIZE // 2).hex().encode()[:PAYLOAD_SIZE])

    def send(self) -> None:
        self.sent.append(time.perf_counter())
        self.transport.write(self.frame)  # type: ignore[union-attr]
        self.stats.sent += 1

    def on_frame(self, opcode: int, buf: bytes, start: int, end: int) -> None:
        if opcode in (OP_TEXT, OP_BINARY) and self.sent:
            self.stats.record(time.perf_counter() - self.sent.popleft())
            if self.closed_loop and self.stats.running:
                self.send()
        elif opcode == OP_CLOSE:
            self.stats.closed += 1


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
        return {
            "sent": self.sent,
            "received": self.received,
            "seconds": round(seconds, 3),
            "msgs_per_s": round(self.received / seconds, 1),
            "p50_ms": round(percentile(self.rtts, 0.50) * 1000, 3),
            "p99_ms": round(percentile(self.rtts, 0.99) * 1000, 3),
        }


async def run(args: argparse.Namespace) -> None:
    stats = Stats()
    clients = await open_clients(args.url, args.clients, lambda request: Client(stats, request))
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
        client.close()
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

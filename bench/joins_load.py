"""The load generator of ``bench joins`` (its own process): open JSON members as fast as ``--in-flight``
allows, each timed from its TCP connect to its ``welcome``; a close before the welcome is a refusal.

Prints one JSON line: joined, refused (by close code), joins/s (over the whole run), welcome p50/p99 ms.
Every member stays open until all have joined or been refused, then all are closed. ``--rooms 1``: one
room; ``--room-size N``: rooms of N (``<prefix>-<i // N>``).
"""

import argparse
import asyncio
import base64
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from bench.measure import percentile
from bench.wsclient import OP_CLOSE, OP_TEXT, RawClient, emit, raise_fd_limit

WELCOME = b'"type":"welcome"'


class Member(RawClient):
    def __init__(self, request: bytes) -> None:
        super().__init__(request)
        self.started = time.perf_counter()
        self.done: asyncio.Future[float | str] = asyncio.get_running_loop().create_future()

    def on_frame(self, opcode: int, buf: bytes, start: int, end: int) -> None:
        if self.done.done():
            return
        if opcode == OP_TEXT and WELCOME in buf[start:end]:
            self.done.set_result(time.perf_counter() - self.started)
        elif opcode == OP_CLOSE:
            code = int.from_bytes(buf[start : start + 2], "big") if end - start >= 2 else 1005
            reason = bytes(buf[start + 2 : end]).decode("utf-8", "replace")
            self.done.set_result(f"{code} {reason}".strip())

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.done.done():
            self.done.set_result("1006")


async def run(
    url: str,
    members: int,
    in_flight: int,
    room_size: int,
    deadline: float,
    hold: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, object]:
    """Open ``members``; ``await hold()`` (if given) once all have joined or been refused; close them."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(in_flight)
    opened: list[Member] = []
    welcomes: list[float] = []
    refused: Counter[str] = Counter()  # close code and reason -> how many

    async def one(i: int) -> None:
        room = parts.path.replace("{room}", str(i // room_size))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {room}?format=json HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        async with gate:
            try:
                _, member = await loop.create_connection(lambda: Member(request), parts.hostname, parts.port)
            except OSError:
                refused["no connection"] += 1
                return
            opened.append(member)
            outcome = await member.done
        if isinstance(outcome, float):
            welcomes.append(outcome)
        else:
            refused[outcome] += 1

    started = time.perf_counter()
    try:
        async with asyncio.timeout(deadline):
            await asyncio.gather(*(one(i) for i in range(members)))
    except TimeoutError:
        refused["deadline"] += members - len(welcomes) - sum(refused.values())
    seconds = time.perf_counter() - started
    if hold is not None:
        await hold()
    for member in opened:
        member.close()
    await asyncio.sleep(0.5)  # the closes go out before the process ends
    ms = [w * 1000 for w in welcomes]
    return {
        "joined": len(welcomes),
        "refused": dict(refused),
        "seconds": seconds,
        "joins_per_s": len(welcomes) / seconds if seconds else 0.0,
        "welcome_p50_ms": percentile(ms, 0.5) if ms else 0.0,
        "welcome_p99_ms": percentile(ms, 0.99) if ms else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url", help="ws://host:port/ws/<prefix>-{room}")
    parser.add_argument("--members", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--room-size", type=int, default=1_000_000_000, help="members per room")
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args()
    raise_fd_limit()
    job = run(args.url, args.members, args.in_flight, args.room_size, args.deadline)
    try:
        import uvloop

        emit(**uvloop.run(job))
    except ImportError:
        emit(**asyncio.run(job))


if __name__ == "__main__":
    main()

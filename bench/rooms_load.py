"""Load generator for bench/rooms.py, run as its own process: ``python -m bench.rooms_load URL ...``.

Opens ``--members`` WebSocket clients into one room (``{i}`` in the URL becomes the member's number), the
first ``--senders`` of them also send. Raw asyncio protocols on uvloop keep its own cost low: frames are
written with the all-zero mask key and only the marker ``@<id>:<send time ns>|`` of each text frame is
read, wherever the server put it. Every delivery gives one end-to-end latency (send to receipt, one clock).

With ``--publish URL`` the messages come from the app's backend instead: ``POST URL`` (the publish API,
``Authorization: Bearer $BENCH_API_KEY``) with the marker as the text, over one keep-alive HTTP client, so
each latency is publish to delivery. Every member then only listens.

Phases (one JSON object on stdout at the end):
- ``paced``: messages at a steady rate, ``--offered`` deliveries per second (rate = offered / members),
  spread round robin over the senders (open loop);
- ``saturate``: closed loop, ``--window`` messages in flight, a message being in flight until every member
  has it (or 2 s have passed: then its missing deliveries count as lost); deliveries per second.
"""

import argparse
import asyncio
import json
import os
import sys
import time

import httpx

from bench.measure import percentile
from bench.wsclient import OP_CLOSE, OP_TEXT, RawClient, client_frame, open_clients, raise_fd_limit

PAYLOAD_SIZE = 100
LOST_AFTER = 2.0  # seconds in flight before a message's missing deliveries count as lost


class Tracker:
    """Deliveries, latencies and what is still in flight."""

    def __init__(self, members: int) -> None:
        self.members = members
        self.deliveries = 0
        self.latencies: list[float] = []
        self.remaining: dict[int, int] = {}  # message id -> deliveries still expected
        self.sent_at: dict[int, float] = {}
        self.lost = 0
        self.closed = 0
        self.window = 0
        self.room_for_more = asyncio.Event()

    def sent(self, msg_id: int) -> None:
        self.remaining[msg_id] = self.members
        self.sent_at[msg_id] = time.monotonic()

    def delivered(self, msg_id: int, latency: float) -> None:
        self.deliveries += 1
        self.latencies.append(latency)
        left = self.remaining.get(msg_id)
        if left is None:
            return
        if left > 1:
            self.remaining[msg_id] = left - 1
            return
        del self.remaining[msg_id]
        del self.sent_at[msg_id]
        if len(self.remaining) < self.window:
            self.room_for_more.set()

    def expire(self) -> None:
        cutoff = time.monotonic() - LOST_AFTER
        for msg_id, at in list(self.sent_at.items()):
            if at < cutoff:
                self.lost += self.remaining.pop(msg_id)
                del self.sent_at[msg_id]


class Member(RawClient):
    def __init__(self, tracker: Tracker, request: bytes) -> None:
        super().__init__(request)
        self.tracker = tracker

    def send(self, msg_id: int) -> None:
        marker = b"@%d:%d|" % (msg_id, time.perf_counter_ns())
        self.tracker.sent(msg_id)
        self.transport.write(client_frame(marker.ljust(PAYLOAD_SIZE, b"x")))  # type: ignore[union-attr]

    def on_frame(self, opcode: int, buf: bytes, start: int, end: int) -> None:
        if opcode == OP_TEXT:
            at = buf.find(b"@", start, end)  # the marker, wherever the server's envelope put it
            if at >= 0:
                bar = buf.find(b"|", at, end)
                msg_id, sent_ns = buf[at + 1 : bar].split(b":")
                self.tracker.delivered(int(msg_id), (time.perf_counter_ns() - int(sent_ns)) / 1e9)
        elif opcode == OP_CLOSE:
            self.tracker.closed += 1


class Publisher:
    """Sends through the publish API: each message one POST, answered 201 once stored."""

    def __init__(self, tracker: Tracker, url: str, key: str) -> None:
        self.tracker = tracker
        self.url = url
        self.http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {key}"},
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            timeout=10.0,
        )
        self.tasks: set[asyncio.Task[None]] = set()
        self.stored = 0
        self.refused: dict[int, int] = {}  # status -> count

    def send(self, msg_id: int) -> None:
        marker = b"@%d:%d|" % (msg_id, time.perf_counter_ns())
        self.tracker.sent(msg_id)
        task = asyncio.create_task(self._post(marker.ljust(PAYLOAD_SIZE, b"x").decode()))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _post(self, text: str) -> None:
        response = await self.http.post(self.url, json={"text": text})
        if response.status_code == 201:
            self.stored += 1
        else:
            self.refused[response.status_code] = self.refused.get(response.status_code, 0) + 1

    async def close(self) -> None:
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=10.0)
        await self.http.aclose()


async def drain(tracker: Tracker, deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while tracker.remaining and time.monotonic() < end:  # noqa: ASYNC110 (bounded poll)
        await asyncio.sleep(0.02)
    tracker.expire()


def phase_result(tracker: Tracker, deliveries: int, seconds: float, sent: int) -> dict[str, float]:
    return {
        "messages": sent,
        "deliveries": deliveries,
        "seconds": round(seconds, 3),
        "deliveries_per_s": round(deliveries / seconds, 1),
        "p50_ms": round(percentile(tracker.latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(tracker.latencies, 0.99) * 1000, 2),
        "lost": tracker.lost,
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    tracker = Tracker(args.members)
    started = time.perf_counter()
    members = await open_clients(args.url, args.members, lambda request: Member(tracker, request))
    connect_s = time.perf_counter() - started
    publisher = None
    if args.publish:
        publisher = Publisher(tracker, args.publish, os.environ.get("BENCH_API_KEY", ""))
        senders: list[Member] | list[Publisher] = [publisher]
    else:
        senders = members[: args.senders]
    loop = asyncio.get_running_loop()
    next_id = 0

    # warm-up: a few messages all the way round, not measured
    for _ in range(5):
        senders[next_id % len(senders)].send(next_id)
        next_id += 1
    await drain(tracker)
    tracker.latencies.clear()
    tracker.lost = 0

    # paced: a steady offered rate
    rate = args.offered / args.members
    count = max(1, int(rate * args.paced_seconds))
    before = tracker.deliveries
    start = loop.time()
    for k in range(count):
        await asyncio.sleep(max(0.0, start + k / rate - loop.time()))
        senders[next_id % len(senders)].send(next_id)
        next_id += 1
    await drain(tracker)
    paced = phase_result(tracker, tracker.deliveries - before, loop.time() - start, count)
    paced["offered_per_s"] = args.offered
    tracker.latencies.clear()
    tracker.lost = 0

    # saturate: closed loop with a window of messages in flight
    tracker.window = args.window
    before = tracker.deliveries
    sent = 0
    start = loop.time()
    end = start + args.seconds
    while loop.time() < end:
        if len(tracker.remaining) >= args.window:
            tracker.room_for_more.clear()
            try:
                await asyncio.wait_for(
                    tracker.room_for_more.wait(), max(0.01, min(LOST_AFTER, end - loop.time()))
                )
            except TimeoutError:
                tracker.expire()
            continue
        senders[next_id % len(senders)].send(next_id)
        next_id += 1
        sent += 1
        if sent % 8 == 0:
            await asyncio.sleep(0)  # let deliveries in
    elapsed = loop.time() - start
    deliveries = tracker.deliveries - before
    await drain(tracker)
    saturate = phase_result(tracker, deliveries, elapsed, sent)
    saturate["window"] = args.window

    published: dict[str, object] = {}
    if publisher is not None:
        await publisher.close()
        published = {"stored": publisher.stored, "refused": publisher.refused}
    for member in members:
        member.close()
    await asyncio.sleep(0.3)
    for member in members:
        member.transport.close()  # type: ignore[union-attr]
    return {
        "members": args.members,
        "senders": args.senders,
        "connect_s": round(connect_s, 2),
        "closed_by_server": tracker.closed,
        "paced": paced,
        "saturate": saturate,
    } | ({"published": published} if published else {})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url", help="ws://host:port/path; {i} in the path becomes the member's number")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the saturated phase")
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="length of the paced phase")
    parser.add_argument("--offered", type=float, default=10_000.0, help="deliveries/s offered when paced")
    parser.add_argument("--window", type=int, default=16, help="messages in flight when saturated")
    parser.add_argument("--publish", help="http://.../api/rooms/<room>/messages: publish through the API")
    args = parser.parse_args()
    raise_fd_limit()
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

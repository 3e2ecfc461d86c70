"""What metrics cost per message, on the CPU, in one process: ``python -m bench.metrics_cost``.

Echo:

The real echo app (``create_app``: FastAPI routing, the ``CountWebSockets`` middleware, the handler
with its tallies) is driven through ASGI with in-memory ``receive``/``send``, once with ``METRICS=true``
and once with ``false``, alternating over several rounds; the figure is process CPU time per message
(``time.process_time``), which a busy machine distorts far less than throughput. It leaves out what both
settings share (uvicorn's protocol, the kernel's socket work): compare the difference with the echo
benchmark's whole cost per message (about 50 us: one core at about 20 000 messages/s).

Rooms (the hot path is the shared hub's fan-out, ``realtime.hub``): one ``Hub`` (policy CUT_OFF) with
``BENCH_METRICS_MEMBERS`` members whose writers only count bytes, ``broadcast`` of a 100-byte frame, with
the service's metrics and without; the figure is CPU time per delivery. Then what a rooms message costs
on its own with metrics on (received and published tallies, two clock reads, the publish-to-store and
fan-out histogram observations), once per message, not per member.
"""

import asyncio
import os
import statistics
import time

from echo_service.app import create_app
from echo_service.settings import EchoSettings
from realtime import metrics
from realtime.frames import text_frame
from realtime.hub import Hub, Policy

MESSAGES = int(os.environ.get("BENCH_METRICS_MESSAGES", "100000"))
ROUNDS = int(os.environ.get("BENCH_METRICS_ROUNDS", "5"))
MEMBERS = int(os.environ.get("BENCH_METRICS_MEMBERS", "100"))
BROADCASTS = int(os.environ.get("BENCH_METRICS_BROADCASTS", "20000"))


class CountingWriter:
    """A ``FrameWriter`` stand-in: takes every frame, never backs up."""

    __slots__ = ("buffered", "open", "written")

    def __init__(self) -> None:
        self.buffered = 0
        self.open = True
        self.written = 0

    def write(self, frame: bytes) -> bool:
        self.written += len(frame)
        return True


def hub_per_delivery(on: bool) -> float:
    """CPU seconds per delivery of one hub broadcasting to MEMBERS members, BROADCASTS times."""
    hub = Hub(Policy.CUT_OFF, 1 << 20, name="bench", service="bench-rooms", metrics_on=on)
    for _ in range(MEMBERS):
        hub.add(CountingWriter())  # type: ignore[arg-type]
    frame = text_frame("x" * 100)
    start = time.process_time()
    for _ in range(BROADCASTS):
        hub.broadcast(frame)
    return (time.process_time() - start) / (BROADCASTS * MEMBERS)


def rooms_message_hooks(messages: int) -> float:
    """CPU seconds per message of the per-message rooms hooks with metrics on (see the docstring)."""
    received = metrics.tally(metrics.MESSAGES_RECEIVED, service="bench-rooms")
    published = metrics.tally(metrics.MESSAGES_PUBLISHED, service="bench-rooms")
    to_store = metrics.child(metrics.PUBLISH_TO_STORE, service="bench-rooms")
    fanout = metrics.child(metrics.FANOUT, service="bench-rooms")
    clock = time.perf_counter
    start = time.process_time()
    for _ in range(messages):
        received.value += 1
        started = clock()
        published.value += 1
        to_store.observe(clock() - started)
        started = clock()
        fanout.observe(clock() - started)
    return (time.process_time() - start) / messages


async def one_session(app, messages: int) -> float:
    """CPU seconds per message for one WebSocket session of ``messages`` 100-byte text frames."""
    frame = {"type": "websocket.receive", "text": "x" * 100}
    queue = (
        [{"type": "websocket.connect"}]
        + [frame] * messages
        + [{"type": "websocket.disconnect", "code": 1000}]
    )
    queue.reverse()

    async def receive():
        return queue.pop()

    async def send(message):
        pass

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/echo",
        "raw_path": b"/echo",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8101),
        "subprotocols": [],
        "state": {},
        "extensions": {},
    }
    start = time.process_time()
    await app(scope, receive, send)
    return (time.process_time() - start) / messages


def main() -> None:
    apps = {
        on: create_app(EchoSettings(bus_url="memory://", metrics=on, service_name=f"bench-{on}"))
        for on in (True, False)
    }
    results: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(ROUNDS):
        for on, app in apps.items():
            results[on].append(asyncio.run(one_session(app, MESSAGES)))
    on, off = (statistics.median(results[k]) * 1e6 for k in (True, False))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"echo app, {MESSAGES} messages x {ROUNDS} rounds, median CPU per message (load average {load}):")
    print("| METRICS | us per message (ASGI app only) |\n|---|---|")
    print(f"| true | {on:.2f} |\n| false | {off:.2f} |")
    print(
        f"metrics cost {on - off:+.2f} us per message; about {100 * (on - off) / 50:+.1f}% of echo's ~50 us"
    )
    hub: dict[bool, list[float]] = {True: [], False: []}
    hooks: list[float] = []
    for _ in range(ROUNDS):
        for flag in (True, False):
            hub[flag].append(hub_per_delivery(flag))
        hooks.append(rooms_message_hooks(MESSAGES))
    on, off = (statistics.median(hub[k]) * 1e9 for k in (True, False))
    per_message = statistics.median(hooks) * 1e6
    print(f"\nrooms hub fan-out, {MEMBERS} members x {BROADCASTS} broadcasts x {ROUNDS} rounds:")
    print("| METRICS | ns per delivery (hub.broadcast) |\n|---|---|")
    print(f"| true | {on:.1f} |\n| false | {off:.1f} |")
    print(f"metrics cost {on - off:+.1f} ns per delivery ({100 * (on - off) / off:+.1f}% of the hub's own)")
    print(f"rooms per-message hooks (once per message, not per member): {per_message:.2f} us per message")


if __name__ == "__main__":
    main()

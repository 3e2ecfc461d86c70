"""What metrics cost echo per message, on the CPU, in one process: ``python -m bench.metrics_cost``.

The real echo app (``create_app``: FastAPI routing, the ``CountWebSockets`` middleware, the handler
with its tallies) is driven through ASGI with in-memory ``receive``/``send``, once with ``METRICS=true``
and once with ``false``, alternating over several rounds; the figure is process CPU time per message
(``time.process_time``), which a busy machine distorts far less than throughput. It leaves out what both
settings share (uvicorn's protocol, the kernel's socket work): compare the difference with the echo
benchmark's whole cost per message (about 50 us: one core at about 20 000 messages/s).
"""

import asyncio
import os
import statistics
import time

from echo_service.app import create_app
from echo_service.settings import EchoSettings

MESSAGES = int(os.environ.get("BENCH_METRICS_MESSAGES", "100000"))
ROUNDS = int(os.environ.get("BENCH_METRICS_ROUNDS", "5"))


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


if __name__ == "__main__":
    main()

"""Room events' webhook path: events/s it sustains to a local receiver, and event-to-receiver lag.

One rooms replica with ``EVENTS_WEBHOOK_URL`` (types ``message``), NATS and a receiver (a small FastAPI
app in this process, verifying every signature with ``standardwebhooks``). Messages are stored through
the publish API (each becomes a ``message`` event).

- throughput: ``BENCH_EVENTS_BACKLOG`` events are recorded while the receiver is down, then it starts:
  events delivered per second until the backlog is drained (the webhook path alone);
- lag: ``BENCH_EVENTS_RATE`` messages a second for ``BENCH_EVENTS_SECONDS``: from the event's ``ts`` (set
  when the message was stored) to its arrival at the receiver, p50 / p99.

    .venv/bin/python -m bench events
    BENCH_EVENTS_BACKLOG=2000 BENCH_EVENTS_SECONDS=5 .venv/bin/python -m bench events

Targets (issue 22): at least 2 000 events/s; lag p99 at most 1 s at 500 events/s offered.
"""

import asyncio
import json
import os
import secrets
import socket
import time

import httpx
import nats
import uvicorn
from devstack.stack import Stack, StackConfig
from fastapi import FastAPI, Request, Response
from rooms_service.signing import new_secret
from standardwebhooks import Webhook

from bench.measure import percentile

BACKLOG = int(os.environ.get("BENCH_EVENTS_BACKLOG", "5000"))
RATE = float(os.environ.get("BENCH_EVENTS_RATE", "500"))
SECONDS = float(os.environ.get("BENCH_EVENTS_SECONDS", "10"))
DEADLINE = 120.0  # seconds any phase may take


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    def __init__(self, secret: str) -> None:
        self.port = free_port()
        self.arrivals: list[tuple[float, float]] = []  # (event ts, arrived at)
        self.seen: set[str] = set()
        self.bad = 0
        verifier = Webhook(secret)
        self.app = FastAPI()

        @self.app.post("/hook")
        async def hook(request: Request) -> Response:
            body = await request.body()
            try:
                verifier.verify(body, dict(request.headers))
            except Exception:
                self.bad += 1
                return Response(status_code=401)
            now = time.time()
            if request.headers["webhook-id"] not in self.seen:
                self.seen.add(request.headers["webhook-id"])
                self.arrivals += [(e["ts"], now) for e in json.loads(body)["events"]]
            return Response(status_code=204)

    async def serve(self) -> tuple[uvicorn.Server, "asyncio.Task[None]"]:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task  # raises why it could not start
            await asyncio.sleep(0.01)
        return server, task


async def publish(client: httpx.AsyncClient, url: str, key: str, count: int, rate: float | None) -> None:
    """``count`` messages through the publish API, at ``rate`` a second (None: as fast as 32 at once)."""
    headers = {"Authorization": f"Bearer {key}"}
    started = time.monotonic()
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with sem:
            answer = await client.post(url, json={"text": f"bench {i}"}, headers=headers)
            answer.raise_for_status()

    tasks = []
    for i in range(count):
        if rate is not None:
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)


async def stored_events(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info("ROOM_EVENTS")
        return int(info.state.messages)
    finally:
        await nc.close()


async def wait_for(check: object, deadline: float) -> None:
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("the bench did not finish in time")
        await asyncio.sleep(0.05)


async def run() -> None:
    secret, key = new_secret(), secrets.token_urlsafe(32)
    receiver = Receiver(secret)
    env = {
        "LOG_LEVEL": "warning",
        "ACCESS_LOG": "false",
        "PUBLISH_API_KEYS": json.dumps([key]),
        "PUBLISH_RATE": "100000",
        "PUBLISH_BURST": "100000",
        "EVENTS_WEBHOOK_URL": f"http://127.0.0.1:{receiver.port}/hook",
        "EVENTS_WEBHOOK_SECRET": secret,
        "EVENTS_WEBHOOK_TYPES": "message",
        "EVENTS_WEBHOOK_RETRY_LIMIT": "0.5",
    }
    with Stack(StackConfig.for_tests("rooms=1", **env)) as stack:
        url = f"http://127.0.0.1:{stack.processes['rooms-1'].port}/api/rooms/bench-events/messages"
        async with httpx.AsyncClient(timeout=10) as client:
            # throughput: a backlog recorded with the receiver down, then drained
            await publish(client, url, key, BACKLOG, None)

            async def recorded() -> bool:
                return await stored_events(stack.bus_url) >= BACKLOG

            await wait_for(recorded, time.monotonic() + DEADLINE)
            server, serving = await receiver.serve()
            started = time.monotonic()

            async def drained() -> bool:
                return len(receiver.arrivals) >= BACKLOG

            await wait_for(drained, started + DEADLINE)
            throughput = BACKLOG / (time.monotonic() - started)
            # lag at the offered rate
            receiver.arrivals.clear()
            count = int(RATE * SECONDS)
            await publish(client, url, key, count, RATE)

            async def arrived() -> bool:
                return len(receiver.arrivals) >= count

            await wait_for(arrived, time.monotonic() + DEADLINE)
            server.should_exit = True
            await serving
    lags = [(arrived - ts) * 1000 for ts, arrived in receiver.arrivals]
    print(
        f"Room events to a webhook: one rooms replica, NATS, a local receiver verifying every signature "
        f"(loopback, a shared 2-core machine); backlog {BACKLOG}, then {RATE:.0f}/s offered for "
        f"{SECONDS:.0f} s; {receiver.bad} bad signatures.\n"
    )
    print("| figure | measured | target |")
    print("|---|---|---|")
    print(f"| webhook throughput, events/s (backlog drained) | {throughput:.0f} | >= 2000 |")
    print(f"| lag p50 ms at {RATE:.0f} events/s | {percentile(lags, 0.5):.0f} | |")
    print(f"| lag p99 ms at {RATE:.0f} events/s | {percentile(lags, 0.99):.0f} | <= 1000 |")


def main() -> None:
    asyncio.run(run())

"""The stats pulse end to end: two stats replicas, two rooms replicas, real NATS, the real gateway."""

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from devstack.stack import Stack
from realtime.pulse import tick_of
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.conftest import make_stack, wait_until_async, ws

INTERVAL = 0.5
DROP_AFTER = 2  # the stats service's default
Pulse = dict[str, Any]


class PulseClient:
    """A /stats client that keeps every frame it receives, in order."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.texts: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in self.conn:
                self.texts.append(str(message))

    @property
    def pulses(self) -> list[Pulse]:
        return [json.loads(t) for t in self.texts]

    def by_tick(self) -> dict[int, str]:
        return {json.loads(t)["tick"]: t for t in self.texts}

    async def first(self, predicate: Callable[[Pulse], bool], what: str, after: int = 0) -> Pulse:
        """The first pulse from index ``after`` on that satisfies ``predicate`` (waits with a deadline)."""

        def found() -> bool:
            return any(predicate(p) for p in self.pulses[after:])

        await wait_until_async(found, what)
        return next(p for p in self.pulses[after:] if predicate(p))

    async def close(self) -> None:
        await self.conn.close()
        await asyncio.wait_for(self._reader, 10)


@contextlib.asynccontextmanager
async def pulse_clients(*urls: str) -> AsyncIterator[list[PulseClient]]:
    clients = [PulseClient(await ws(url)) for url in urls]
    try:
        yield clients
    finally:
        for client in clients:
            await client.close()


def names(pulse: Pulse) -> set[tuple[str, str]]:
    return {(i["service"], i["instance"]) for i in pulse["instances"]}


def replica_url(stack: Stack, name: str) -> str:
    return f"ws://127.0.0.1:{stack.processes[name].port}/stats"


EVERYONE = {
    ("echo", "echo-1"),
    ("rooms", "rooms-1"),
    ("rooms", "rooms-2"),
    ("stats", "stats-1"),
    ("stats", "stats-2"),
    ("gateway", "gateway-1"),
}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with make_stack("stats=2 rooms=2", PULSE_INTERVAL=str(INTERVAL)) as running:
        yield running


async def test_clients_on_both_stats_replicas_get_identical_pulses_one_per_tick(stack: Stack) -> None:
    urls = [replica_url(stack, "stats-1"), replica_url(stack, "stats-2")]
    urls += [f"{stack.gateway_url}/stats"] * 2  # the gateway spreads these over the replicas too
    async with pulse_clients(*urls) as clients:
        full = await clients[0].first(lambda p: names(p) == EVERYONE, "a pulse listing every instance")
        start, end = full["tick"], full["tick"] + 6
        for client in clients:
            await client.first(lambda p: p["tick"] >= end, f"tick {end} to reach every client")

        for client in clients:
            ticks = [p["tick"] for p in client.pulses]
            assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), "a tick doubled or missing"
        views = [client.by_tick() for client in clients]
        for tick in range(start, end + 1):
            texts = {view[tick] for view in views}
            assert len(texts) == 1, f"tick {tick} differs between clients: {texts}"
            pulse = json.loads(texts.pop())
            assert names(pulse) == EVERYONE
            assert pulse["ts"] == pytest.approx(tick * INTERVAL)
            assert 0 <= pulse["cpu"] <= 100
            for entry in pulse["instances"]:
                assert entry["memory"] > 0
                assert entry["cpu"] >= 0
                assert entry["connections"] >= 0


async def test_a_new_client_gets_the_latest_pulse_at_once(stack: Stack) -> None:
    async with pulse_clients(replica_url(stack, "stats-1")) as (old,):
        await old.first(lambda p: True, "a first pulse")
        async with pulse_clients(replica_url(stack, "stats-1")) as (new,):
            connected_in = tick_of(time.time(), INTERVAL)
            first = await new.first(lambda p: True, "the new client's first pulse")
            # A pulse sent at the next tick would carry tick connected_in + 1 or later.
            assert first["tick"] <= connected_in
            await new.conn.send("anything: it is ignored")
            await new.first(lambda p: p["tick"] > first["tick"], "the next tick after a client message")
            await wait_until_async(lambda: first["tick"] in old.by_tick(), "the old client's copy")
            assert old.by_tick()[first["tick"]] == new.texts[0]


async def test_connection_counts_follow_the_clients(stack: Stack) -> None:
    def echo_connections(pulse: Pulse) -> int:
        return next(i["connections"] for i in pulse["instances"] if i["instance"] == "echo-1")

    def gateway_connections(pulse: Pulse) -> int:
        return next((i["connections"] for i in pulse["instances"] if i["instance"] == "gateway-1"), 0)

    async with pulse_clients(f"{stack.gateway_url}/stats") as (watcher,):
        echoes = [await ws(f"{stack.gateway_url}/echo") for _ in range(3)]
        seen = len(watcher.texts)
        # Each instance samples its own count at the tick: under load the gateway's may be a tick behind
        # echo's, so wait for a pulse in which both have seen the three clients.
        await watcher.first(
            lambda p: (
                ("echo", "echo-1") in names(p) and echo_connections(p) == 3 and gateway_connections(p) >= 4
            ),  # three echo clients and the watcher, at least
            "echo-1 to count 3 and gateway-1 at least 4",
            seen,
        )
        for conn in echoes:
            await conn.close()
        seen = len(watcher.texts)
        await watcher.first(
            lambda p: ("echo", "echo-1") in names(p) and echo_connections(p) == 0, "echo-1 to count 0", seen
        )


async def test_a_killed_rooms_replica_drops_out_within_a_few_ticks() -> None:
    with make_stack("stats=2 rooms=2", PULSE_INTERVAL=str(INTERVAL)) as stack:
        async with pulse_clients(f"{stack.gateway_url}/stats", f"{stack.gateway_url}/stats") as clients:
            for client in clients:
                await client.first(lambda p: ("rooms", "rooms-2") in names(p), "rooms-2 in a pulse")
            stack.stop_process("rooms-2", signal.SIGKILL)
            killed_in = tick_of(time.time(), INTERVAL)
            for client in clients:
                gone = await client.first(
                    lambda p: p["tick"] > killed_in and ("rooms", "rooms-2") not in names(p), "rooms-2 to go"
                )
                # its last sample is stamped killed_in at the latest; the window then moves past it
                assert gone["tick"] <= killed_in + DROP_AFTER + 1
                later = await client.first(lambda p, t=gone["tick"]: p["tick"] >= t + 2, "two more ticks")
                after = [p for p in client.pulses if gone["tick"] <= p["tick"] <= later["tick"]]
                assert all(("rooms", "rooms-2") not in names(p) for p in after)
                assert all(("rooms", "rooms-1") in names(p) for p in after)
            same = set(clients[0].by_tick()) & set(clients[1].by_tick())
            assert all(clients[0].by_tick()[t] == clients[1].by_tick()[t] for t in same)


async def test_a_restarted_stats_replica_sends_every_tick_while_it_warms_up() -> None:
    with make_stack("stats=2", PULSE_INTERVAL=str(INTERVAL)) as stack:
        async with pulse_clients(replica_url(stack, "stats-1")) as (reference,):
            await reference.first(lambda p: True, "a first pulse from stats-1")
            stack.stop_process("stats-2")
            stack.start_process("stats-2")
            stack.wait_ready(names=["stats-2"])
            async with pulse_clients(replica_url(stack, "stats-2")) as (fresh,):
                first = await fresh.first(lambda p: True, "a first pulse from the new stats-2")
                await fresh.first(lambda p: p["tick"] >= first["tick"] + 5, "five more ticks")
                ticks = [p["tick"] for p in fresh.pulses]
                assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))
                await wait_until_async(lambda: ticks[-1] in reference.by_tick(), "stats-1 to catch up")
                assert all(reference.by_tick()[t] == fresh.by_tick()[t] for t in ticks)
        log = stack.log_tail("stats-2", 400)
        assert "warming up: relaying peers' pulses" in log
        assert "warm-up over: sending this replica's own pulses" in log

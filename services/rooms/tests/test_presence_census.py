"""The census: replicas learn each other from heartbeats and answer a join's count query in time."""

import asyncio

from realtime.bus import create_bus
from rooms_service.presence import Census

DEADLINE = 5.0


async def test_a_join_waits_for_every_live_replicas_count_and_no_longer() -> None:
    bus = create_bus("memory://")
    await bus.connect()
    heard: list[tuple[str, str, int]] = []
    counts = {"a": {"lobby": 0}, "b": {"lobby": 3}, "c": {"lobby": 1}}

    def census(origin: str, timeout: float = DEADLINE) -> Census:
        return Census(
            bus,
            "rooms",
            origin,
            interval=10.0,
            timeout=timeout,
            local_count=lambda room, o=origin: counts[o].get(room, 0),
            heard=lambda room, o, n, me=origin: heard.append((me, o, n)) if me == "a" else None,
        )

    a, b, c = census("a"), census("b"), census("c")
    tasks = [asyncio.create_task(x.run()) for x in (a, b, c)]
    async with asyncio.timeout(DEADLINE):
        for x in (a, b, c):
            await x.live.wait()
        while a.peers() != {"b", "c"}:  # each start beat is answered: nobody waits a whole interval
            await asyncio.sleep(0.01)
        await a.query("lobby")
    assert sorted(heard) == [("a", "b", 3), ("a", "c", 1)]
    tasks[2].cancel()  # c is gone but still counted live: a query waits only its timeout for it
    a._timeout = 0.2
    heard.clear()
    started = asyncio.get_running_loop().time()
    await a.query("lobby")
    assert asyncio.get_running_loop().time() - started < 1.0
    assert heard == [("a", "b", 3)]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await bus.disconnect()


async def test_replicas_started_before_the_bus_was_up_know_each_other_once_it_is() -> None:
    """A start beat sent while the bus is still connecting is lost; the beat on (re)connect is not."""
    bus = create_bus("memory://")  # not connected yet, like NATS while a service starts

    def census(origin: str) -> Census:
        return Census(
            bus,
            "rooms",
            origin,
            interval=3600.0,
            timeout=DEADLINE,
            local_count=lambda room: 0,
            heard=lambda *_: None,
        )

    a, b = census("a"), census("b")
    tasks = [asyncio.create_task(x.run()) for x in (a, b)]
    async with asyncio.timeout(DEADLINE):
        for x in (a, b):
            await x.live.wait()  # their start beats went nowhere
        assert a.peers() == b.peers() == set()
        await bus.connect()
        while a.peers() != {"b"} or b.peers() != {"a"}:  # long before the next beat, an hour away
            await asyncio.sleep(0.01)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await bus.disconnect()

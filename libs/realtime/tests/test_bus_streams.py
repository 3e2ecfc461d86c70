"""Stored messages, the same on both backends: sequence, dedup, per-subject limits, republish, restart."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from realtime.bus import Bus, StreamSpec, create_bus
from realtime.bus.memory import republished_subject

DEADLINE = 10.0
SPEC = StreamSpec(
    name="T", subjects="t.msg.*", republish_to="t.{{wildcard(1)}}", max_per_subject=3, duplicate_window=60
)


@pytest.fixture(params=["memory", "nats"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "memory":
        the_bus = create_bus("memory://")
    else:
        server = request.getfixturevalue("nats_server")
        the_bus = create_bus(server.url, name="test", connect_timeout=1.0, reconnect_wait=0.1)
    await the_bus.connect()
    async with asyncio.timeout(DEADLINE):
        while not the_bus.ready:
            await asyncio.sleep(0.02)
    yield the_bus
    await the_bus.disconnect()


def test_republished_subject_maps_wildcards() -> None:
    assert republished_subject("rooms.msg.*", "rooms.{{wildcard(1)}}", "rooms.msg.lobby") == "rooms.lobby"


async def test_store_sequences_dedups_and_republishes(bus: Bus) -> None:
    epoch = await bus.ensure_stream(SPEC)
    assert await bus.ensure_stream(SPEC) == epoch  # idempotent: the same history
    async with bus.subscribe("t.a") as live:
        if hasattr(bus, "_nc"):
            await bus._nc.flush()  # type: ignore[attr-defined]
        first = await bus.store("T", "t.msg.a", b"one", msg_id="a/1")
        other = await bus.store("T", "t.msg.b", b"elsewhere")
        again = await bus.store("T", "t.msg.a", b"one again", msg_id="a/1")
        second = await bus.store("T", "t.msg.a", b"two")
        assert (again.seq, again.duplicate) == (first.seq, True)
        assert first.seq < other.seq < second.seq
        heard = [await asyncio.wait_for(anext(live), DEADLINE) for _ in range(2)]
        assert [(m.payload, m.seq, m.last_seq) for m in heard] == [
            (b"one", first.seq, 0),
            (b"two", second.seq, first.seq),  # the previous one of the same subject, not of the stream
        ]
    assert await bus.last_stored("T", "t.msg.a") == second.seq
    assert await bus.last_stored("T", "t.msg.none") == 0
    assert [m.payload for m in await bus.stored_after("T", "t.msg.a", 0, 10)] == [b"one", b"two"]
    assert [m.seq for m in await bus.stored_after("T", "t.msg.a", first.seq, 10)] == [second.seq]
    assert await bus.stored_after("T", "t.msg.a", second.seq, 10) == []
    found = await bus.stored_at("T", other.seq)
    assert found is not None and (found.subject, found.payload) == ("t.msg.b", b"elsewhere")


async def test_history_per_subject_is_bounded(bus: Bus) -> None:
    await bus.ensure_stream(SPEC)
    seqs = [(await bus.store("T", "t.msg.c", str(i).encode())).seq for i in range(5)]
    kept = await bus.stored_after("T", "t.msg.c", 0, 100)
    assert [m.seq for m in kept] == seqs[-3:]
    assert await bus.stored_at("T", seqs[0]) is None
    assert [m.seq for m in await bus.stored_after("T", "t.msg.c", 0, 2)] == seqs[2:4]


async def test_stored_messages_survive_a_server_restart(nats_server) -> None:
    bus = create_bus(nats_server.url, name="test", connect_timeout=1.0, reconnect_wait=0.1)
    await bus.connect()
    async with asyncio.timeout(DEADLINE):
        while not bus.ready:
            await asyncio.sleep(0.02)
        epoch = await bus.ensure_stream(SPEC)
        stored = await bus.store("T", "t.msg.k", b"kept")
        nats_server.process.kill()  # SIGKILL: no chance to flush anything
        nats_server.process.wait()
        nats_server.start()
        while True:
            try:
                again = await bus.ensure_stream(SPEC)
                break
            except Exception:  # JetStream is still recovering its store
                await asyncio.sleep(0.1)
        assert again == epoch  # the same history: the stream was not recreated
        assert [m.payload for m in await bus.stored_after("T", "t.msg.k", 0, 10)] == [b"kept"]
        assert (await bus.store("T", "t.msg.k", b"next")).seq == stored.seq + 1
    await bus.disconnect()

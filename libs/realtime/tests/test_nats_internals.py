"""The nats-py internals the bus builds on, named one by one, so an upgrade that moves one fails here with
its name instead of as a traceback at shutdown.

``realtime/bus/nats.py`` uses nats-py's public API everywhere but one place: closing a client that is
not connected (NATS is away) first drops what nats-py buffered for the lost server (``Client._pending``,
``Client._pending_data_size``), because ``close()`` would write that buffer to a dead transport and raise,
and nats-py has no public call for it. ``libs/realtime/pyproject.toml`` bounds nats-py to the releases
this was checked against: when raising the ceiling, run this file against the new release first.
"""

import asyncio

import nats
from nats.aio.client import Client
from realtime.bus import StreamSpec, create_bus

DEADLINE = 10.0


async def wait_for(predicate, what: str) -> None:
    async with asyncio.timeout(DEADLINE):
        while not predicate():
            await asyncio.sleep(0.02)


def test_the_reconnect_buffer_is_where_the_bus_drops_it() -> None:
    client = Client()
    assert isinstance(client._pending, list), "nats-py: Client._pending is gone"
    assert isinstance(client._pending_data_size, int), "nats-py: Client._pending_data_size is gone"
    client._pending_data_size = 7
    assert client.pending_data_size == 7, "nats-py: pending_data_size no longer reads _pending_data_size"


async def test_shutdown_while_nats_is_away_drops_the_buffer_and_closes(nats_server) -> None:
    bus = create_bus(nats_server.url, name="test", connect_timeout=0.5, reconnect_wait=0.1)
    await bus.connect()
    await wait_for(lambda: bus.ready, "connected")
    nats_server.stop()
    await wait_for(lambda: not bus.ready, "disconnected")
    await bus.publish("while.away", b"x" * 100)  # buffered by nats-py for the server that is gone
    assert bus._nc.pending_data_size > 0
    async with asyncio.timeout(DEADLINE):
        await bus.disconnect()
    assert not bus.ready


async def test_reading_the_history_leaves_no_consumer_behind(nats_server) -> None:
    bus = create_bus(nats_server.url, name="test", connect_timeout=0.5, reconnect_wait=0.1)
    await bus.connect()
    await wait_for(lambda: bus.ready, "connected")
    try:
        await bus.ensure_stream(StreamSpec(name="T", subjects="t.msg.*"))
        for text in (b"one", b"two", b"three"):
            await bus.store("T", "t.msg.a", text)
        assert [m.payload for m in await bus.stored_after("T", "t.msg.a", 1, 10)] == [b"two", b"three"]
        nc = await nats.connect(nats_server.url)
        try:
            assert await nc.jetstream().consumers_info("T") == []
        finally:
            await nc.close()
    finally:
        await bus.disconnect()

"""``Bus.listen``: a handler called once per message, in order, straight from the backend's one queue."""

import asyncio

import pytest
from realtime.bus import Bus, Message, create_bus

DEADLINE = 10.0


async def wait_for(predicate, what: str) -> None:
    async with asyncio.timeout(DEADLINE):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture(params=["memory", "nats"])
async def bus(request, tmp_path):
    if request.param == "memory":
        made = create_bus("memory://")
    else:
        server = request.getfixturevalue("nats_server")
        made = create_bus(server.url, name="test", connect_timeout=0.5, reconnect_wait=0.1)
    await made.connect()
    await wait_for(lambda: made.ready, "connected")
    yield made
    await made.disconnect()


async def test_a_handler_hears_every_message_in_order_and_survives_its_own_errors(bus: Bus) -> None:
    heard: list[bytes] = []

    async def handler(message: Message) -> None:
        if message.payload == b"bad":
            raise ValueError("a handler that fails once")
        await asyncio.sleep(0)  # a handler may await: the next message waits for it
        heard.append(message.payload)

    async with bus.listen("room.a", handler) as subscription:
        for payload in (b"1", b"bad", b"2", b"3"):
            await bus.publish("room.a", payload)
        await wait_for(lambda: len(heard) == 3, "three messages")
        assert heard == [b"1", b"2", b"3"]
        assert subscription.dropped == 0
    await bus.publish("room.a", b"after")  # the block is over: no longer heard
    await asyncio.sleep(0.05)
    assert heard == [b"1", b"2", b"3"]


async def test_nats_calls_the_handler_from_its_own_queue_without_a_copy(nats_server) -> None:
    bus = create_bus(nats_server.url, name="test", connect_timeout=0.5, reconnect_wait=0.1)
    await bus.connect()
    await wait_for(lambda: bus.ready, "connected")
    release = asyncio.Event()
    heard: list[bytes] = []

    async def slow(message: Message) -> None:
        await release.wait()
        heard.append(message.payload)

    try:
        async with bus.listen("room.b", slow, max_pending=4) as subscription:
            for i in range(20):
                await bus.publish("room.b", str(i).encode())
            await wait_for(lambda: subscription.dropped > 0, "drops past max_pending")
            assert subscription._queue.empty()  # nothing copied into the bus's own queue
            release.set()
            await wait_for(lambda: len(heard) + subscription.dropped == 20, "the rest handled")
            assert heard == sorted(heard, key=int)
            assert len(heard) <= 1 + 4  # the one in the handler, then at most max_pending waiting
    finally:
        await bus.disconnect()

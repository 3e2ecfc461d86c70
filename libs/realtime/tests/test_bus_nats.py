"""The NATS bus against a real nats-server: fan-out between instances, readiness, restarts."""

import asyncio

from realtime.bus import Bus, create_bus
from realtime.bus.nats import server_urls

DEADLINE = 10.0


async def wait_for(predicate, what: str) -> None:
    async with asyncio.timeout(DEADLINE):
        while not predicate():
            await asyncio.sleep(0.02)


async def next_payload(sub) -> bytes:
    return (await asyncio.wait_for(anext(sub), DEADLINE)).payload


def nats_bus(url: str) -> Bus:
    return create_bus(url, name="test", connect_timeout=0.5, reconnect_wait=0.1)


def test_several_servers_in_one_url() -> None:
    assert server_urls("nats://a:4222, b:4223") == ["nats://a:4222", "nats://b:4223"]


async def test_two_instances_share_messages(nats_server) -> None:
    one, two = nats_bus(nats_server.url), nats_bus(nats_server.url)
    await one.connect()
    await two.connect()
    await wait_for(lambda: one.ready and two.ready, "both connected")
    async with two.subscribe("rooms.*") as sub:
        await two._nc.flush()  # the SUB has reached the server
        await one.publish("rooms.lobby", b"hello")
        assert await next_payload(sub) == b"hello"
    await one.disconnect()
    await two.disconnect()
    assert not one.ready


async def test_starts_without_a_server_and_connects_when_it_appears(nats_server) -> None:
    nats_server.stop()
    bus = nats_bus(nats_server.url)
    changes: list[bool] = []
    bus.on_ready_change(changes.append)
    await bus.connect()  # returns at once: the service starts, not ready
    assert not bus.ready
    async with bus.subscribe("late") as sub:  # registered before any connection exists
        nats_server.start()
        await wait_for(lambda: bus.ready, "first connection")
        await bus._nc.flush()
        await bus.publish("late", b"works")
        assert await next_payload(sub) == b"works"
    await bus.disconnect()
    assert changes == [True, False]


async def test_server_restart_flips_readiness_and_restores_subscriptions(nats_server) -> None:
    bus = nats_bus(nats_server.url)
    await bus.connect()
    await wait_for(lambda: bus.ready, "connected")
    async with bus.subscribe("pulse.>") as sub:
        await bus._nc.flush()
        nats_server.stop()
        await wait_for(lambda: not bus.ready, "readiness to drop")
        nats_server.start()
        await wait_for(lambda: bus.ready, "reconnected")
        await bus._nc.flush()
        await bus.publish("pulse.x", b"again")
        assert await next_payload(sub) == b"again"
    await bus.disconnect()

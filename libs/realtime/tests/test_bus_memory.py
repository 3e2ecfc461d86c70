import asyncio

import pytest
from realtime.bus import BusUnavailable, create_bus, subject_matches


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("rooms.a", "rooms.a", True),
        ("rooms.a", "rooms.b", False),
        ("rooms.*", "rooms.a", True),
        ("rooms.*", "rooms.a.b", False),
        ("rooms.>", "rooms.a.b", True),
        ("rooms.>", "rooms", False),
        ("*.a", "rooms.a", True),
        ("rooms", "rooms.a", False),
    ],
)
def test_subject_matching_follows_nats_rules(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected


async def test_subscribers_receive_what_is_published_on_their_subject() -> None:
    bus = create_bus("memory://")
    await bus.connect()
    async with bus.subscribe("rooms.a") as a, bus.subscribe("rooms.*") as every:
        await bus.publish("rooms.a", b"one")
        await bus.publish("rooms.b", b"two")
        assert (await asyncio.wait_for(anext(a), 1)).payload == b"one"
        assert [(await asyncio.wait_for(anext(every), 1)).payload for _ in range(2)] == [b"one", b"two"]
    await bus.disconnect()


async def test_leaving_the_block_unsubscribes() -> None:
    bus = create_bus("memory://")
    await bus.connect()
    async with bus.subscribe("x") as sub:
        pass
    await bus.publish("x", b"after")
    assert sub._queue.empty()


async def test_a_stalled_subscriber_drops_instead_of_growing() -> None:
    bus = create_bus("memory://")
    await bus.connect()
    async with bus.subscribe("x", max_pending=3) as sub:
        for i in range(10):
            await bus.publish("x", str(i).encode())
        assert sub.dropped == 7
        assert [(await anext(sub)).payload for _ in range(3)] == [b"0", b"1", b"2"]


async def test_publishing_before_connect_raises() -> None:
    bus = create_bus("memory://")
    with pytest.raises(BusUnavailable):
        await bus.publish("x", b"nope")


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported bus URL"):
        create_bus("redis://localhost")

"""The shared throttle across replicas, two replicas on one in-memory bus: failures published while the
other was not listening (a hung NATS server, a reconnect) are sent again when a bus comes back, and
count once each, from when they happened."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

from realtime.bus.memory import MemoryBus
from rooms_service.guard import FailureThrottle, PasswordGuard, Verdict
from rooms_service.throttle_sync import SharedThrottle, results_subject

SUBJECT = results_subject("rooms")
KEY = ("10.0.0.7", "VIP")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_failure_heard_late_counts_from_when_it_happened() -> None:
    clock = FakeClock()
    throttle = FailureThrottle(max_failures=3, window=60.0, clock=clock)
    throttle.failed(KEY)
    throttle.failed(KEY, age=30.0)  # older than the one already counted: kept in time order
    assert throttle.failed(KEY, age=61.0) == 2  # already out of the window: not counted
    assert throttle.failed(KEY, age=10.0) == 3
    assert throttle.blocked(KEY)
    clock.now += 31.0  # the one 30 s old leaves the window first
    assert not throttle.blocked(KEY)
    assert throttle.failed(KEY, age=61.0) == 2  # out of the window
    assert throttle.failed(KEY, age=5.0) == 3


def replica(bus: MemoryBus, origin: str) -> tuple[PasswordGuard, SharedThrottle]:
    guard = PasswordGuard({"VIP": "secret123"}, FailureThrottle(max_failures=5, window=60.0))
    shared = SharedThrottle(bus, SUBJECT, origin, guard)
    guard.announce = shared.announce
    return guard, shared


@contextlib.asynccontextmanager
async def running(shared: SharedThrottle) -> AsyncIterator[None]:
    task = asyncio.create_task(shared.run())
    await asyncio.sleep(0)  # subscribed
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def two_replicas() -> tuple[
    MemoryBus, tuple[PasswordGuard, SharedThrottle], tuple[PasswordGuard, SharedThrottle]
]:
    """A connected bus and two replicas' guards on it, neither running yet."""
    bus = MemoryBus()
    await bus.connect()
    return bus, replica(bus, "rooms-1"), replica(bus, "rooms-2")


async def settle() -> None:
    for _ in range(20):  # the resend tasks and the subscriptions' deliveries
        await asyncio.sleep(0)


async def test_failures_lost_on_the_bus_are_resent_on_reconnect_and_count_once() -> None:
    bus, (one, shared_one), (two, shared_two) = await two_replicas()
    async with running(shared_one):
        for _ in range(3):  # rooms-2 hears none of these (as if its server hung meanwhile)
            assert await one.check("VIP", KEY[0], "wrong") == Verdict.WRONG
        async with running(shared_two):
            await settle()
            assert await two.check("VIP", KEY[0], "wrong") == Verdict.WRONG  # rooms-1 hears this one
            assert await two.check("VIP", KEY[0], "wrong") == Verdict.WRONG
            await settle()
            assert not two.throttle.blocked(KEY)  # 2 of 5: the 3 lost ones are missing
            assert one.throttle.blocked(KEY)  # 3 + the 2 it heard
            await bus.disconnect()  # rooms-2's bus comes back: it asks for the others' failures again
            await bus.connect()
            await settle()
            assert two.throttle.blocked(KEY)
            assert two.throttle.reached == 1  # what /rooms reports as clients_throttled
            assert await two.check("VIP", KEY[0], "secret123") == Verdict.THROTTLED
            await bus.disconnect()  # and once more: nothing counts twice
            await bus.connect()
            await settle()
            assert len(two.throttle._failures[KEY]) == 5
            assert len(one.throttle._failures[KEY]) == 5
            assert (one.throttle.reached, two.throttle.reached) == (1, 1)


async def test_a_success_clears_the_resend() -> None:
    bus, (one, shared_one), (two, shared_two) = await two_replicas()
    async with running(shared_one):
        assert await one.check("VIP", KEY[0], "wrong") == Verdict.WRONG
        assert await one.check("VIP", KEY[0], "secret123") == Verdict.ALLOWED
        async with running(shared_two):
            await bus.disconnect()
            await bus.connect()
            await settle()
            assert two.throttle._recent(KEY) is None  # the failure before the success is not resent

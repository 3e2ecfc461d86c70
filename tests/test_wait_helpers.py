"""The shared wait helpers: a synchronous poll would stall an async test's event loop, so it refuses there."""

import asyncio

import pytest

from tests.conftest import wait_until, wait_until_async


async def test_sync_wait_until_refuses_inside_an_event_loop() -> None:
    with pytest.raises(RuntimeError, match="wait_until_async"):
        wait_until(lambda: True, "anything")


async def test_async_wait_lets_the_loop_run_while_it_waits() -> None:
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, done.set)  # only runs if the wait yields to the loop
    await wait_until_async(done.is_set, "the timer to fire", deadline=5)


async def test_async_wait_fails_at_its_deadline() -> None:
    with pytest.raises(AssertionError, match="timed out waiting for nothing"):
        await wait_until_async(lambda: False, "nothing", deadline=0.2)


def test_sync_wait_until_works_outside_an_event_loop() -> None:
    wait_until(lambda: True, "anything")

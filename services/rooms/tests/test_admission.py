"""Join admission: at most N joins at once; one that waits past its wait is refused, the rest go on."""

import asyncio

import pytest
from rooms_service.admission import Admission, Busy, waited_since


async def test_a_join_waiting_past_its_wait_is_refused_and_a_freed_turn_is_taken() -> None:
    admission = Admission(in_flight=1, wait=0.05)
    async with admission.turn():
        with pytest.raises(Busy):
            async with admission.turn():
                pass
        assert admission.refused == 1
        waiting = asyncio.create_task(_take(Admission.turn(admission)))
        await asyncio.sleep(0)
    assert await asyncio.wait_for(waiting, 1.0)  # the turn freed inside its wait is taken


async def _take(turn) -> bool:  # type: ignore[no-untyped-def]
    async with turn:
        return True


async def test_a_join_that_waited_its_wait_before_reaching_the_app_is_refused_at_once() -> None:
    admission = Admission(in_flight=10, wait=2.0)
    with pytest.raises(Busy):
        async with admission.turn(waited=2.5):
            pass
    async with admission.turn(waited=1.0):  # a free turn: taken at once
        pass
    assert admission.refused == 1


def test_the_wait_is_read_from_the_gateways_stamp() -> None:
    assert waited_since("t=1000000000000000", now=1_000_000_002.5) == 2.5
    assert waited_since(None) == waited_since("t=x") == waited_since("1000") == 0.0
    assert waited_since("t=2000000000000000", now=1_000_000_000.0) == 0.0  # a clock ahead: no wait

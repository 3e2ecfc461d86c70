"""Join admission: at most N joins at once; one that waits past its wait is refused, the rest go on."""

import asyncio

import pytest
from rooms_service.admission import Admission, Busy


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

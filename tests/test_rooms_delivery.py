"""The rooms' delivery promise end to end: 2 rooms replicas behind the real gateway, a real nats-server.

JSON senders send numbered messages with ids and resend what is unacknowledged after any close; JSON
members resume with ``since``/``epoch`` after any close. Across each fault, every acknowledged message
must reach every member exactly once, in seq order (tests/support/rooms.py checks it).
"""

import json
from collections.abc import Iterator

import pytest
from devstack.stack import Stack
from websockets.asyncio.client import ClientConnection

from tests.conftest import make_stack, recv, ws
from tests.support.rooms import FAULTS, LISTENERS, run_traffic

HISTORY = 20  # ROOM_HISTORY_SIZE of the shared stack below: small, so a test can outrun it


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_every_acknowledged_message_reaches_every_member_once_in_order(fault: str) -> None:
    with make_stack("rooms=2", PRESENCE_INTERVAL="1") as stack:
        result = await run_traffic(stack, f"faults-{fault}", FAULTS[fault](stack))
    verdict = result["verdict"]
    assert verdict.acked > 40, result
    assert result["delivered"], result
    assert verdict.lost == [0] * LISTENERS, result
    assert verdict.duplicated == [0] * LISTENERS, result
    assert verdict.not_recovered == 0, result  # every resume found its since in the history


# --- one stack for the rest ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def rooms_stack() -> Iterator[Stack]:
    with make_stack("rooms=2", ROOM_HISTORY_SIZE=str(HISTORY)) as running:
        yield running


def replica_url(stack: Stack, replica: str) -> str:
    return f"ws://127.0.0.1:{stack.processes[replica].port}"


async def next_of(conn: ClientConnection, *kinds: str) -> dict:
    while True:
        event = json.loads(await recv(conn))
        if event["type"] in kinds:
            return event


async def test_resume_across_a_disconnect_through_the_gateway(rooms_stack: Stack) -> None:
    room = f"{rooms_stack.gateway_url}/ws/resume"
    async with await ws(f"{room}?format=json") as talker:
        await next_of(talker, "welcome")
        async with await ws(f"{room}?format=json") as member:
            welcome = await next_of(member, "welcome")
            await talker.send(json.dumps({"text": "before", "id": "t-0"}))
            last = (await next_of(member, "message"))["seq"]
            assert (await next_of(talker, "ack"))["seq"] == last
        acks = []
        for i in range(1, 6):  # said while the member is away
            await talker.send(json.dumps({"text": f"away {i}", "id": f"t-{i}"}))
            acks.append((await next_of(talker, "ack"))["seq"])
        # it comes back, through the gateway, probably on the other replica
        async with await ws(f"{room}?format=json&since={last}&epoch={welcome['epoch']}") as back:
            again = await next_of(back, "welcome")
            assert again["recovered"] is True and again["epoch"] == welcome["epoch"]
            missed = [await next_of(back, "message") for _ in range(5)]
            assert [m["text"] for m in missed] == [f"away {i}" for i in range(1, 6)]
            assert [m["seq"] for m in missed] == acks
            await talker.send(json.dumps({"text": "live", "id": "t-6"}))
            live = await next_of(back, "message")
            assert live["text"] == "live" and live["seq"] > acks[-1]  # nothing lost or doubled at the seam


async def test_resume_past_the_history_or_on_another_epoch_says_recovered_false(rooms_stack: Stack) -> None:
    room = f"{rooms_stack.gateway_url}/ws/forgetful"
    async with await ws(f"{room}?format=json") as talker:
        welcome = await next_of(talker, "welcome")
        await talker.send(json.dumps({"text": "first", "id": "f-0"}))
        first = (await next_of(talker, "ack"))["seq"]
        for i in range(1, HISTORY + 2):  # more than the room keeps
            await talker.send(json.dumps({"text": f"m{i}", "id": f"f-{i}"}))
            await next_of(talker, "ack")
        epoch = welcome["epoch"]
        async with await ws(f"{room}?format=json&since={first}&epoch={epoch}&history=3") as late:
            told = await next_of(late, "welcome")
            assert told["recovered"] is False  # told, never silently short
            last_three = [(await next_of(late, "message"))["text"] for _ in range(3)]
            assert last_three == [f"m{i}" for i in range(HISTORY - 1, HISTORY + 2)]
        async with await ws(f"{room}?format=json&since={first}&epoch=another-history") as other:
            assert (await next_of(other, "welcome"))["recovered"] is False


async def test_a_resent_id_is_stored_and_delivered_once_on_any_replica(rooms_stack: Stack) -> None:
    one, two = (f"{replica_url(rooms_stack, r)}/ws/dedup?format=json" for r in ("rooms-1", "rooms-2"))
    async with await ws(one) as member, await ws(one) as first_try:
        await next_of(member, "welcome")
        await next_of(first_try, "welcome")
        await first_try.send(json.dumps({"text": "exactly once", "id": "client-7/1"}))
        ack = await next_of(first_try, "ack")
        async with await ws(two) as second_try:  # the same message again, after a reconnect elsewhere
            await next_of(second_try, "welcome")
            await second_try.send(json.dumps({"text": "exactly once", "id": "client-7/1"}))
            assert await next_of(second_try, "ack") == ack
            await second_try.send(json.dumps({"text": "marker", "id": "client-7/2"}))
            heard = [await next_of(member, "message"), await next_of(member, "message")]
            assert (heard[0]["text"], heard[0]["seq"]) == ("exactly once", ack["seq"])
            assert heard[1]["text"] == "marker"  # and nothing in between: the resend was not stored


async def test_welcome_counts_members_on_the_other_replica(rooms_stack: Stack) -> None:
    for attempt in range(3):  # a room new on the joining replica each time
        room = f"census-{attempt}"
        others = [await ws(f"{replica_url(rooms_stack, 'rooms-2')}/ws/{room}") for _ in range(2)]
        try:
            async with await ws(f"{replica_url(rooms_stack, 'rooms-1')}/ws/{room}?format=json") as joiner:
                assert (await next_of(joiner, "welcome"))["count"] == 3
        finally:
            for conn in others:
                await conn.close()

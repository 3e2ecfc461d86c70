"""Room events on JetStream, read the way an app reads them: two rooms replicas, a real nats-server.

The app's lines (docs/howto/events-and-webhooks.md shows them) are ``read_events`` below: its own
durable consumer on the ``ROOM_EVENTS`` stream, acknowledging what it has handled.
"""

import asyncio
import json
import secrets
import signal
import time

import nats
from devstack.stack import Stack

from tests.conftest import make_stack, recv, ws

INTERVAL = 1.0  # PRESENCE_INTERVAL of these stacks: a dead replica's members are gone within 2 of them


async def read_events(nats_url: str, room: str, durable: str, until: int, deadline: float) -> list[dict]:
    """What an app runs (with its own durable name): the events of ``room`` in order, each acked."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(f"rooms.events.{room}", durable=durable, stream="ROOM_EVENTS")
        events: list[dict] = []
        while len(events) < until and time.monotonic() < deadline:
            try:
                batch = await sub.fetch(100, timeout=1.0)
            except TimeoutError:
                continue
            for msg in batch:
                events.append(json.loads(msg.data))
                await msg.ack()
        return events
    finally:
        await nc.close()


def replica_url(stack: Stack, replica: str, room: str) -> str:
    return f"ws://127.0.0.1:{stack.processes[replica].port}/ws/{room}?format=json"


async def until(conn: object, kind: str) -> dict:
    while True:
        event = json.loads(await recv(conn))  # type: ignore[arg-type]
        if event["type"] == kind:
            return event


async def test_events_on_jetstream_occupied_once_with_members_on_both_replicas() -> None:
    room = f"ev-{secrets.token_hex(3)}"
    with make_stack("rooms=2", PRESENCE_INTERVAL=str(INTERVAL)) as stack:
        members, events = [], []
        for period in range(2):
            async with (
                await ws(replica_url(stack, "rooms-1", room)) as one,
                await ws(replica_url(stack, "rooms-2", room)) as two,
            ):
                ids = [(await until(one, "welcome"))["you"], (await until(two, "welcome"))["you"]]
                members.append(ids)
                message = json.dumps({"text": "hello", "id": f"m{period}"})
                await one.send(message)
                acked = await until(one, "ack")
                await two.send(message)  # a resend (its first ack lost, say): stored once, its event once
                assert (await until(two, "ack"))["seq"] == acked["seq"]
            # the period's 7 events: occupied, 2 joined, the message, 2 left, vacated
            events += await read_events(stack.bus_url, room, "app-1", 7, time.monotonic() + 15)
    kinds = [e["type"] for e in events]
    assert kinds.count("occupied") == 2 and kinds.count("vacated") == 2, kinds
    assert kinds[0] == "occupied" and kinds[-1] == "vacated", kinds
    # per period: occupied first, vacated last, both members joined and left in between
    first = kinds[: kinds.index("vacated") + 1]
    assert first.count("occupied") == 1 and sorted(first[1:-1]) == [
        "joined",
        "joined",
        "left",
        "left",
        "message",
    ]
    assert [e["period"] for e in events if e["type"] in ("occupied", "vacated")] == [1, 1, 2, 2]
    joined = {e["member"] for e in events if e["type"] == "joined"}
    assert joined == {m for ids in members for m in ids}
    assert len({e["id"] for e in events}) == len(events)
    message = next(e for e in events if e["type"] == "message")
    assert message["text"] == "hello" and message["message_id"] == "m0" and message["sender"] == "member"
    assert kinds.count("message") == 2  # one a period, the resend's event kept once
    assert all({"id", "type", "ts", "room"} <= e.keys() and e["room"] == room for e in events)


async def test_a_dead_replicas_members_leave_and_the_room_is_vacated_in_time() -> None:
    room = f"ev-{secrets.token_hex(3)}"
    with make_stack("rooms=2", PRESENCE_INTERVAL=str(INTERVAL)) as stack:
        conn = await ws(replica_url(stack, "rooms-1", room))
        member = (await until(conn, "welcome"))["you"]
        # the join is recorded before the replica dies
        deadline = time.monotonic() + 10
        seen = await read_events(stack.bus_url, room, "app-2", 2, deadline)
        assert [e["type"] for e in seen] == ["occupied", "joined"], seen
        await asyncio.to_thread(lambda: stack.stop_process("rooms-1", signal.SIGKILL))
        killed = time.time()
        with_slack = 2 * INTERVAL + 3.0  # 2 intervals, and the reaper's own pace and CI noise
        rest = await read_events(stack.bus_url, room, "app-2", 2, time.monotonic() + with_slack + 5)
        conn.transport.abort()
    assert [e["type"] for e in rest] == ["left", "vacated"], rest
    assert rest[0]["member"] == member
    assert rest[-1]["ts"] - killed <= with_slack, rest

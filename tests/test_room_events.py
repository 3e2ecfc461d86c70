"""Room events on JetStream, read the way an app reads them: two rooms replicas, a real nats-server.

The app runs the lines docs/howto/events-and-webhooks.md shows (its ``read_events``, taken from the page):
its own durable consumer on the ``ROOM_EVENTS`` stream, acknowledging what it has handled.
"""

import asyncio
import contextlib
import json
import re
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from devstack.stack import Stack

from tests.conftest import make_stack, recv, ws

DOC = Path(__file__).parents[1] / "docs" / "howto" / "events-and-webhooks.md"
INTERVAL = 1.0  # PRESENCE_INTERVAL of these stacks: a dead replica's members are gone within 2 of them


def documented_reader() -> Callable[[str, Callable[[dict], Awaitable[None]]], Awaitable[None]]:
    """The page's ``read_events``, taken from its first python block and run as it is written."""
    block = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)[0]
    namespace: dict[str, object] = {}
    exec(compile(block, str(DOC), "exec"), namespace)  # our own docs page, as a reader copies it
    return namespace["read_events"]  # type: ignore[return-value]


class App:
    """An app reading the events with the page's lines, for the whole test: what it has handled."""

    def __init__(self, nats_url: str) -> None:
        self.events: list[dict] = []
        self._task = asyncio.create_task(documented_reader()(nats_url, self._handle))

    async def _handle(self, event: dict) -> None:
        self.events.append(event)

    async def handled(self, count: int, deadline: float) -> list[dict]:
        """Wait until ``count`` events were handled (or ``deadline`` seconds); every one handled so far."""
        end = time.monotonic() + deadline
        while len(self.events) < count and time.monotonic() < end and not self._task.done():
            await asyncio.sleep(0.05)
        if self._task.done():
            self._task.result()  # its error, if it failed
        return list(self.events)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


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
        members, app = [], App(stack.bus_url)
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
            events = await app.handled(7 * (period + 1), 15)
        await app.stop()
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
        app = App(stack.bus_url)
        seen = await app.handled(2, 10)
        assert [e["type"] for e in seen] == ["occupied", "joined"], seen
        await asyncio.to_thread(lambda: stack.stop_process("rooms-1", signal.SIGKILL))
        killed = time.time()
        with_slack = 2 * INTERVAL + 3.0  # 2 intervals, and the reaper's own pace and CI noise
        rest = (await app.handled(4, with_slack + 5))[2:]
        await app.stop()
        conn.transport.abort()
    assert [e["type"] for e in rest] == ["left", "vacated"], rest
    assert rest[0]["member"] == member
    assert rest[-1]["ts"] - killed <= with_slack, rest

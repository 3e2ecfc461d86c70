"""Presence in both forms, end to end: two rooms replicas, a real nats-server, JSON members on both.

A room of at most PRESENCE_EVENTS_MAX_MEMBERS members tells its members each join and leave; above it,
one ``members`` event per PRESENCE_DIFF_INTERVAL with the exact count and who joined and left. The
threshold is 4 here so the test stays small and fast.
"""

import asyncio
import json
from collections.abc import Iterator

import pytest
from devstack.stack import Stack
from websockets.asyncio.client import ClientConnection

from tests.conftest import DEADLINE, make_stack, recv, ws

MOST = 4
INTERVAL = 0.2


@pytest.fixture(scope="module")
def two_replicas() -> Iterator[Stack]:
    env = {"PRESENCE_EVENTS_MAX_MEMBERS": str(MOST), "PRESENCE_DIFF_INTERVAL": str(INTERVAL)}
    with make_stack("rooms=2", **env) as running:
        yield running


def replica_url(stack: Stack, replica: str, room: str) -> str:
    return f"ws://127.0.0.1:{stack.processes[replica].port}/ws/{room}?format=json"


async def event(conn: ClientConnection) -> dict:
    return json.loads(await recv(conn))


async def member(url: str) -> tuple[ClientConnection, str]:
    """A JSON member and its id (from its welcome)."""
    conn = await ws(url)
    welcome = await event(conn)
    assert welcome["type"] == "welcome"
    return conn, welcome["you"]


async def per_member(conn: ClientConnection, kind: str, who: str, count: int) -> None:
    """The next presence event is ``kind`` for ``who`` with the room's ``count``."""
    got = await event(conn)
    assert (got["type"], got.get("member"), got["count"]) == (kind, who, count), got


async def diffs_until(
    conn: ClientConnection, count: int, joined: set[str] = frozenset(), left: set[str] = frozenset()
) -> None:
    """``members`` events (and nothing per member) until the count is ``count``; together they list
    exactly ``joined`` as joined and ``left`` as left."""
    seen_joined: set[str] = set()
    seen_left: set[str] = set()
    last = -1
    async with asyncio.timeout(DEADLINE):
        while last != count or seen_joined != joined or seen_left != left:
            got = await event(conn)
            assert got["type"] == "members", got  # nothing per member once the room is big
            last = got["count"]
            seen_joined |= {e["member"] for e in got.get("joined", [])}
            seen_left |= {e["member"] for e in got.get("left", [])}
            assert seen_joined <= joined and seen_left <= left, got


async def test_presence_turns_into_diffs_above_the_threshold_and_back(two_replicas: Stack) -> None:
    one = replica_url(two_replicas, "rooms-1", "crowd")
    two = replica_url(two_replicas, "rooms-2", "crowd")
    opened: list[ClientConnection] = []
    try:
        watcher, _ = await member(one)
        far, far_id = await member(two)  # watches from the other replica
        opened += [watcher, far]
        await per_member(watcher, "join", far_id, 2)
        small: list[tuple[ClientConnection, str]] = []
        for count, url in ((3, one), (4, two)):  # up to the threshold: one event per member, everywhere
            conn, you = await member(url)
            opened.append(conn)
            small.append((conn, you))
            await per_member(watcher, "join", you, count)
            await per_member(far, "join", you, count)

        big: dict[str, ClientConnection] = {}
        for url in (one, two, one, two):  # above it: diffs
            conn, you = await member(url)
            opened.append(conn)
            big[you] = conn
        await asyncio.gather(diffs_until(watcher, 8, joined=set(big)), diffs_until(far, 8, joined=set(big)))

        gone = list(big)[:3]  # two on rooms-1, one on rooms-2
        for you in gone:
            await big[you].close()
        await asyncio.gather(diffs_until(watcher, 5, left=set(gone)), diffs_until(far, 5, left=set(gone)))
        with pytest.raises(TimeoutError):  # nothing changed: no members event
            await asyncio.wait_for(watcher.recv(), 3 * INTERVAL)

        last_big = list(big)[3]  # 5 -> 4: still a diff (the room was above the threshold before it)
        await big[last_big].close()
        await asyncio.gather(diffs_until(watcher, 4, left={last_big}), diffs_until(far, 4, left={last_big}))
        conn, you = small[1]  # 4 -> 3 (on rooms-2): small again, one event per member
        await conn.close()
        await per_member(watcher, "leave", you, 3)
        await per_member(far, "leave", you, 3)
        again, again_id = await member(two)  # 3 -> 4: a join, told as such
        opened.append(again)
        await per_member(watcher, "join", again_id, 4)
        await per_member(far, "join", again_id, 4)
        crossing, crossing_id = await member(one)  # 4 -> 5: above again, a diff
        opened.append(crossing)
        await diffs_until(watcher, 5, joined={crossing_id})
        await diffs_until(far, 5, joined={crossing_id})
    finally:
        for conn in opened:
            await conn.close()


async def test_a_diff_with_more_members_than_listed_carries_the_count_only() -> None:
    joining = 20
    env = {
        "PRESENCE_EVENTS_MAX_MEMBERS": "0",
        "PRESENCE_DIFF_INTERVAL": "2.0",
        "PRESENCE_DIFF_MAX_LISTED": "2",
    }
    with make_stack("rooms=2", **env) as stack:
        one = replica_url(stack, "rooms-1", "listed")
        two = replica_url(stack, "rooms-2", "listed")
        watcher, _ = await member(one)
        opened = [watcher]
        try:
            opened.append((await member(two))[0])  # rooms-2 opens the room
            # twenty more join on rooms-2 at once: unless they took more than ten intervals (20 s: eight
            # took over 6 s on a loaded machine once), one diff has more than it lists
            opened += [conn for conn, _ in await asyncio.gather(*(member(two) for _ in range(joining)))]
            events = []
            async with asyncio.timeout(DEADLINE):
                while not events or events[-1]["count"] != joining + 2:
                    events.append(await event(watcher))
                    assert events[-1]["type"] == "members", events[-1]
            assert all(len(e.get("joined", [])) <= 2 and len(e.get("left", [])) <= 2 for e in events), events
            assert any("joined" not in e for e in events), events
        finally:
            for conn in opened:
                await conn.close()

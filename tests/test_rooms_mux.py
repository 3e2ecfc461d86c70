"""One connection, many rooms (``/ws``) end to end: two rooms replicas, a real nats-server and the real
gateway, as processes; every client connects through the gateway (which alternates the replicas)."""

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Iterator

import jwt
import pytest
from devstack.stack import Stack
from realtime.close_codes import CloseCode
from realtime_client import Backoff, Closed, Connection, Joined, Message
from websockets.asyncio.client import ClientConnection

from tests.conftest import make_stack, recv, ws

TOKEN_SECRET = "mux-test-secret-of-at-least-32-bytes"
PASSWORDS = {"guarded": "right-password"}


@pytest.fixture(scope="module")
def mux_stack() -> Iterator[Stack]:
    with make_stack("rooms=2", ROOM_PASSWORDS=json.dumps(PASSWORDS), TOKEN_SECRET=TOKEN_SECRET) as running:
        yield running


async def next_frame(conn: ClientConnection, *kinds: str, **fields: object) -> dict:
    """The next frame of one of ``kinds`` with these field values (anything else skipped)."""
    while True:
        event = json.loads(await recv(conn))
        if event["type"] in kinds and all(event.get(k) == v for k, v in fields.items()):
            return event


async def join(conn: ClientConnection, room: str, **fields: object) -> dict:
    await conn.send(json.dumps({"type": "join", "room": room, "ref": room, **fields}))
    return await next_frame(conn, "welcome", "error", ref=room)


async def say(conn: ClientConnection, room: str, text: str, msg_id: str) -> dict:
    """Send and wait for the ack (the message comes back too, on the stream)."""
    await conn.send(json.dumps({"type": "send", "room": room, "text": text, "id": msg_id}))
    return await next_frame(conn, "ack", "error", id=msg_id)


async def origin_of(conn: ClientConnection, room: str, probe: str) -> str:
    """The replica ``conn`` is on: the ``origin`` of a message it sends (the replica that stored it)."""
    await conn.send(json.dumps({"type": "send", "room": room, "text": probe, "id": probe}))
    return (await next_frame(conn, "message", id=probe))["origin"]


async def test_three_rooms_one_refused_delivered_across_replicas_once_in_order(mux_stack: Stack) -> None:
    base = mux_stack.gateway_url
    async with await ws(f"{base}/ws") as sender:
        for room in ("red", "blue"):
            assert (await join(sender, room))["type"] == "welcome"
        refused = await join(sender, "guarded", **{"pass": "wrong"})
        assert (refused["type"], refused["code"], refused["room"]) == (
            "error",
            CloseCode.FORBIDDEN,
            "guarded",
        )
        assert (await join(sender, "guarded", **{"pass": PASSWORDS["guarded"]}))["type"] == "welcome"
        mine = await origin_of(sender, "red", "probe-sender")
        # a second /ws connection on the other replica, and a /ws/{room} text member
        receiver = None
        for attempt in range(4):  # the gateway alternates replicas: at most a few tries
            candidate = await ws(f"{base}/ws")
            await join(candidate, "probe")
            if await origin_of(candidate, "probe", f"probe-{attempt}") != mine:
                receiver = candidate
                break
            await candidate.close()
        assert receiver is not None, "the gateway never chose the other replica"
        async with receiver, await ws(f"{base}/ws/blue") as plain:
            for room in ("red", "blue", "guarded"):
                kwargs = {"pass": PASSWORDS["guarded"]} if room == "guarded" else {}
                assert (await join(receiver, room, **kwargs))["count"] >= 2
            sent: dict[str, list[int]] = {"red": [], "blue": [], "guarded": []}
            for n in range(30):
                room = ("red", "blue", "guarded")[n % 3]
                ack = await say(sender, room, f"{room} {n}", f"m-{n}")
                assert (ack["type"], ack["room"]) == ("ack", room)
                sent[room].append(ack["seq"])
            got: dict[str, list[int]] = {"red": [], "blue": [], "guarded": []}
            while sum(map(len, got.values())) < 30:
                message = await next_frame(receiver, "message")
                if message["room"] in got and message["text"].startswith(message["room"]):
                    assert message["origin"] == mine
                    got[message["room"]].append(message["seq"])
            assert got == sent  # each once, in order, in the right room
            texts = [await recv(plain) for _ in range(10)]  # the /ws/blue member hears the same
            assert texts == [f"blue {n}" for n in range(30) if n % 3 == 1]


async def test_the_room_limit_refuses_the_129th_join_and_the_connection_goes_on(mux_stack: Stack) -> None:
    async with await ws(f"{mux_stack.gateway_url}/ws") as conn:
        for i in range(128):
            await conn.send(json.dumps({"type": "join", "room": f"many-{i}", "ref": i}))
        for i in range(128):
            assert (await next_frame(conn, "welcome", "error", ref=i))["type"] == "welcome"
        await conn.send(json.dumps({"type": "join", "room": "many-128", "ref": 128}))
        refused = await next_frame(conn, "error", ref=128)
        assert (refused["code"], refused["reason"]) == (CloseCode.TOO_MANY, "too many rooms")
        ack = await say(conn, "many-5", "still works", "after-limit")
        assert (ack["type"], ack["room"]) == ("ack", "many-5")
        await conn.send(json.dumps({"type": "leave", "room": "many-0", "ref": "l"}))
        assert await next_frame(conn, "left", "error", ref="l") == {
            "type": "left",
            "room": "many-0",
            "ref": "l",
        }
        assert (await join(conn, "many-128"))["type"] == "welcome"


async def test_a_token_lacking_a_room_is_refused_4001_for_that_join_only(mux_stack: Stack) -> None:
    claims = {"sub": "ada", "name": "Ada", "rooms": ["allowed", "guarded"], "exp": int(time.time()) + 60}
    token = jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")
    async with await ws(f"{mux_stack.gateway_url}/ws?token={token}") as conn:
        assert (await join(conn, "allowed"))["user"] == "ada"
        refused = await join(conn, "not-in-token")
        assert (refused["type"], refused["code"], refused["room"]) == (
            "error",
            CloseCode.INVALID_TOKEN,
            "not-in-token",
        )
        assert (await join(conn, "guarded"))["name"] == "Ada"  # a token member needs no password
        ack = await say(conn, "allowed", "hi", "t-1")
        assert ack["type"] == "ack"


# --- a rooms replica SIGKILLed mid-traffic: the Python client's Connection rejoins every room ------------
ROOMS = ("k-red", "k-blue", "k-green")


async def test_a_replica_killed_mid_traffic_every_room_rejoined_nothing_acked_lost_or_doubled() -> None:
    with make_stack("rooms=2") as stack:
        fast = Backoff(first=0.1, limit=1.0)
        listeners = [Connection(stack.gateway_url, backoff=fast, open_timeout=5) for _ in range(2)]
        sender = Connection(stack.gateway_url, backoff=Backoff(first=0.1, limit=1.0), open_timeout=5)
        got: dict[tuple[int, str], list[Message]] = {(i, r): [] for i in range(2) for r in ROOMS}
        acked: dict[str, dict[str, int]] = {r: {} for r in ROOMS}
        async with listeners[0], listeners[1], sender:
            reading = []
            for i, listener in enumerate(listeners):
                for room in ROOMS:
                    joined = await listener.join(room)
                    reading.append(asyncio.create_task(read_into(joined, got[(i, room)])))
            rooms = {room: await sender.join(room) for room in ROOMS}
            stop = asyncio.Event()

            async def send_to(room: str) -> None:
                n = 0
                sends: list[asyncio.Task[None]] = []
                while not stop.is_set():
                    msg_id = f"{room}-{n}"
                    n += 1
                    sends.append(asyncio.create_task(ack_into(rooms[room], msg_id, acked[room])))
                    await asyncio.sleep(0.05)
                await asyncio.wait(sends, timeout=20)

            sending = [asyncio.create_task(send_to(room)) for room in ROOMS]
            await asyncio.sleep(1.5)
            await asyncio.to_thread(lambda: stack.stop_process("rooms-1", signal.SIGKILL))
            killed_at = sum(map(len, acked.values()))
            async with asyncio.timeout(30):  # traffic flows again in every room
                while sum(map(len, acked.values())) < killed_at + 30:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*sending)
            async with asyncio.timeout(20):  # every listener gets every acknowledged message
                while not all(
                    set(acked[room].values()) <= {m.seq for m in got[(i, room)]}
                    for i in range(2)
                    for room in ROOMS
                ):
                    await asyncio.sleep(0.05)
            for task in reading:
                task.cancel()
            reconnected = [c for c in (*listeners, sender) if c.closes]
            assert reconnected, "the killed replica held none of the connections"
            for connection in reconnected:  # back, and in every room again (a welcome per room per socket)
                assert connection.connects >= 2
                assert all(room.welcomes >= 2 for room in connection.rooms.values())
        for (i, room), messages in got.items():
            ids = [m.id for m in messages]
            seqs = [m.seq for m in messages]
            assert len(ids) == len(set(ids)), (i, room)  # nothing doubled
            assert seqs == sorted(seqs), (i, room)  # in order
            assert all(m.room == room for m in messages)
            assert {m.id: m.seq for m in messages} == acked[room] | {
                m.id: m.seq for m in messages if m.id not in acked[room]
            }  # every acknowledged message, with its acknowledged seq
            assert set(acked[room]) <= set(ids), (i, room)


async def read_into(room: Joined, into: list[Message]) -> None:
    async for message in room:
        into.append(message)


async def ack_into(room: Joined, msg_id: str, into: dict[str, int]) -> None:
    with contextlib.suppress(Closed, asyncio.CancelledError):
        into[msg_id] = await room.send(msg_id, id=msg_id)

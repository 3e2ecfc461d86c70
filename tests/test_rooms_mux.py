"""One connection, many rooms (``/ws``) end to end: two rooms replicas, a real nats-server and the real
gateway, as processes; every client connects through the gateway (which alternates the replicas)."""

import json
import time
from collections.abc import Iterator

import jwt
import pytest
from devstack.stack import Stack
from realtime.close_codes import CloseCode
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

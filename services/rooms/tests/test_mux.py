"""The multiplexed ``/ws`` in one process (memory:// bus, the platform's uvicorn protocol): its frames,
its per-frame errors that leave the connection open, its limits and its connection-level closes."""

import asyncio
import json
import time

import jwt
from realtime.close_codes import CloseCode
from roomsclient import client, close_of, recv, recv_json, served

SECRET = "a-test-secret-of-at-least-32-bytes!!"


async def frames(conn, *want: str) -> dict:  # type: ignore[no-untyped-def]
    """The next frame of one of the types in ``want`` (others skipped)."""
    while True:
        event = json.loads(await recv(conn))
        if event["type"] in want:
            return event


async def both(conn) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    """A sent message as it comes back, and its ack (in whichever order they arrive)."""
    got: dict[str, dict] = {}
    while len(got) < 2:
        event = await frames(conn, "message", "ack")
        got[event["type"]] = event
    return got["message"], got["ack"]


async def join(conn, room: str, ref: object = None, **fields: object) -> dict:  # type: ignore[no-untyped-def]
    await conn.send(json.dumps({"type": "join", "room": room, "ref": ref or room, **fields}))
    return await frames(conn, "welcome", "error")


async def test_join_send_leave_with_refs_acks_and_rooms() -> None:
    async with served() as (_, url), client(f"{url}/ws") as conn:
        one = await join(conn, "one", ref=1)
        assert one["type"] == "welcome" and one["room"] == "one" and one["ref"] == 1 and one["count"] == 1
        two = await join(conn, "two", ref="r2")
        assert two["ref"] == "r2" and two["you"] == one["you"] and two["epoch"] == one["epoch"]
        await conn.send(json.dumps({"type": "send", "room": "two", "text": "hi two", "id": "m1"}))
        message, ack = await both(conn)
        assert (message["room"], message["text"], message["id"]) == ("two", "hi two", "m1")
        assert ack == {"type": "ack", "room": "two", "id": "m1", "seq": message["seq"]}
        await conn.send(json.dumps({"type": "leave", "room": "one", "ref": 9}))
        assert await frames(conn, "left", "error") == {"type": "left", "room": "one", "ref": 9}
        await conn.send(json.dumps({"type": "send", "room": "one", "text": "gone", "id": "m2"}))
        error = await frames(conn, "error")
        assert error == {"type": "error", "room": "one", "id": "m2", "code": 4011, "reason": "not joined"}


async def test_a_wrong_password_costs_only_that_room() -> None:
    async with served(room_passwords={"VIP": "secret123"}) as (_, url), client(f"{url}/ws") as conn:
        assert (await join(conn, "open"))["type"] == "welcome"
        error = await join(conn, "VIP", ref="v", **{"pass": "nope"})
        assert error == {"type": "error", "room": "VIP", "ref": "v", "code": 4003, "reason": "forbidden"}
        assert (await join(conn, "VIP", ref="v2", **{"pass": "secret123"}))["ref"] == "v2"
        await conn.send(json.dumps({"type": "send", "room": "open", "text": "still here", "id": "a"}))
        assert (await frames(conn, "ack"))["room"] == "open"


async def test_per_frame_errors_keep_the_connection_open() -> None:
    async with served() as (_, url), client(f"{url}/ws") as conn:
        await join(conn, "lobby")
        again = await join(conn, "lobby", ref="twice")
        assert (again["code"], again["ref"]) == (CloseCode.ALREADY_JOINED, "twice")
        for bad, code in [
            ({"type": "join", "room": "a.b", "ref": 1}, CloseCode.POLICY_VIOLATION),
            ({"type": "join", "room": "x", "since": "3"}, CloseCode.POLICY_VIOLATION),
            ({"type": "leave", "room": "nowhere", "ref": 2}, CloseCode.NOT_JOINED),
            ({"type": "send", "room": "lobby", "text": 5, "id": "n"}, CloseCode.POLICY_VIOLATION),
        ]:
            await conn.send(json.dumps(bad))
            assert (await frames(conn, "error"))["code"] == code, bad
        await conn.send(json.dumps({"type": "send", "room": "lobby", "text": "fine", "id": "ok"}))
        assert (await frames(conn, "ack"))["id"] == "ok"


async def test_a_ws_member_and_a_room_member_share_messages_presence_and_ack_dedup() -> None:
    async with (
        served() as (app, url),
        client(f"{url}/ws/lobby?format=json") as single,
        client(f"{url}/ws") as many,
    ):
        assert (await recv_json(single))["type"] == "welcome"
        welcome = await join(many, "lobby")
        assert welcome["count"] == 2
        joined = await recv_json(single)
        assert (joined["type"], joined["member"], joined["count"]) == ("join", welcome["you"], 2)
        await single.send(json.dumps({"text": "from /ws/lobby", "id": "same"}))
        first = await frames(many, "message")
        assert first["text"] == "from /ws/lobby"
        # the same id resent over /ws is recognised: acked with the stored seq, stored once
        await many.send(json.dumps({"type": "send", "room": "lobby", "text": "from /ws/lobby", "id": "same"}))
        assert (await frames(many, "ack"))["seq"] == first["seq"]
        await many.send(json.dumps({"type": "send", "room": "lobby", "text": "from /ws", "id": "other"}))
        second, _ = await both(many)
        assert second["text"] == "from /ws" and second["seq"] == first["seq"] + 1
        assert (await frames(single, "message"))["seq"] == first["seq"]
        assert (await frames(single, "message"))["text"] == "from /ws"
        assert app.state.rooms.stats()["members"] == 2


async def test_resume_per_room_with_since_and_epoch() -> None:
    async with served() as (_, url), client(f"{url}/ws") as talker:
        welcome = await join(talker, "a")
        await join(talker, "b")
        for n, room in enumerate(("a", "b", "a")):
            await talker.send(json.dumps({"type": "send", "room": room, "text": f"to {room}", "id": f"{n}"}))
            await both(talker)
        async with client(f"{url}/ws") as back:
            a = await join(back, "a", since=1, epoch=welcome["epoch"])
            assert a["recovered"] is True
            missed = await frames(back, "message")
            assert (missed["room"], missed["seq"]) == ("a", 3)
            b = await join(back, "b", history=5)
            assert b["room"] == "b" and (await frames(back, "message"))["text"] == "to b"


async def test_the_room_limit_refuses_the_next_join_only() -> None:
    async with served(max_rooms_per_connection=3) as (_, url), client(f"{url}/ws") as conn:
        for i in range(3):
            assert (await join(conn, f"r{i}"))["type"] == "welcome"
        refused = await join(conn, "r3")
        assert (refused["code"], refused["reason"]) == (CloseCode.TOO_MANY, "too many rooms")
        await conn.send(json.dumps({"type": "leave", "room": "r0"}))
        await frames(conn, "left")
        assert (await join(conn, "r3"))["type"] == "welcome"


async def test_joins_faster_than_the_rate_are_refused_then_the_connection_closed() -> None:
    async with (
        served(connection_join_rate=0.001, connection_join_burst=2) as (_, url),
        client(f"{url}/ws") as conn,
    ):
        await join(conn, "j0")
        await join(conn, "j1")
        error = await join(conn, "j2")
        assert (error["code"], error["reason"]) == (CloseCode.TOO_MANY, "joining too fast")
        for i in range(3, 20):
            await conn.send(json.dumps({"type": "join", "room": f"j{i}"}))
        assert await close_of(conn) == (CloseCode.POLICY_VIOLATION, "rate limit exceeded")


async def test_connection_abuse_closes() -> None:
    async with served() as (_, url):
        for frame, reason in [
            (b"\x00binary", "text frames only"),
            ("not json", "frames must be JSON"),
            ('["join"]', "unknown frame type"),
            ('{"type":"shout","room":"x"}', "unknown frame type"),
        ]:
            async with client(f"{url}/ws") as conn:
                await conn.send(frame)
                assert await close_of(conn) == (CloseCode.POLICY_VIOLATION, reason)


async def test_a_token_lacking_a_room_is_refused_for_that_join_only() -> None:
    claims = {"sub": "ada", "name": "Ada", "rooms": ["mine"], "exp": int(time.time()) + 60}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    async with (
        served(token_secret=SECRET) as (_, url),
        client(f"{url}/ws?token={token}") as conn,
    ):
        mine = await join(conn, "mine")
        assert (mine["user"], mine["name"]) == ("ada", "Ada")
        other = await join(conn, "other")
        assert (other["code"], other["room"]) == (CloseCode.INVALID_TOKEN, "other")
        await conn.send(json.dumps({"type": "send", "room": "mine", "text": "ok", "id": "t"}))
        assert (await both(conn))[0]["user"] == "ada"
    async with served(token_secret=SECRET) as (_, url), client(f"{url}/ws?token=forged") as conn:
        assert await close_of(conn) == (CloseCode.INVALID_TOKEN, "invalid token")


async def test_the_message_rate_is_the_connections_across_its_rooms() -> None:
    async with (
        served(message_rate=0.001, message_burst=3) as (app, url),
        client(f"{url}/ws") as conn,
    ):
        await join(conn, "r1")
        await join(conn, "r2")
        for n, room in enumerate(("r1", "r2", "r1")):
            await conn.send(json.dumps({"type": "send", "room": room, "text": "x", "id": f"ok-{n}"}))
            await both(conn)
        await conn.send(json.dumps({"type": "send", "room": "r2", "text": "x", "id": "over"}))
        error = await frames(conn, "error")
        assert (error["id"], error["code"], error["reason"]) == (
            "over",
            CloseCode.TOO_MANY,
            "rate limit exceeded",
        )
        for n in range(9):  # ten refusals in a row: the connection is closed
            await conn.send(json.dumps({"type": "send", "room": "r1", "text": "x", "id": f"more-{n}"}))
        assert await close_of(conn) == (CloseCode.POLICY_VIOLATION, "rate limit exceeded")
        async with asyncio.timeout(10):
            while app.state.rooms.stats()["members"]:
                await asyncio.sleep(0.01)  # both memberships gone with the connection


async def test_a_slow_reader_is_cut_off_as_one_connection() -> None:
    chunk = "y" * 30_000
    async with (
        served(send_buffer_limit=64 * 1024, message_rate=10_000, message_burst=10_000) as (app, url),
        client(f"{url}/ws", max_queue=2) as sleeper,  # joins two rooms, then never reads
        client(f"{url}/ws", max_size=None) as talker,
    ):
        await join(sleeper, "slow-a")
        await join(sleeper, "slow-b")
        await join(talker, "slow-a")
        await join(talker, "slow-b")
        sent = 0
        async with asyncio.timeout(30):
            while not app.state.rooms.cut_off:
                room = ("slow-a", "slow-b")[sent % 2]
                await talker.send(
                    json.dumps({"type": "send", "room": room, "text": f"{sent} {chunk}", "id": f"s{sent}"})
                )
                await both(talker)
                sent += 1
            while app.state.rooms.stats()["members"] != 2:  # the sleeper's two memberships are gone
                await asyncio.sleep(0.01)
        assert await close_of(sleeper) == (CloseCode.TRY_AGAIN_LATER, "slow consumer")

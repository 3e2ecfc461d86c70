"""``Connection``: one socket in many rooms, against the real stack (a real nats-server, two rooms
replicas behind the gateway). The replica-kill case is in tests/test_rooms_mux.py."""

import asyncio
import json
import time
from collections.abc import Iterator

import jwt
import pytest
from devstack.stack import Stack, StackConfig
from realtime_client import (
    Backoff,
    Connection,
    Forbidden,
    InvalidToken,
    Joined,
    Message,
    Presence,
    Room,
    RoomClosed,
    SendRefused,
)

DEADLINE = 20.0
PASSWORD = "mux-client-secret"
TOKEN_SECRET = "mux-client-token-secret-0123456789-ab"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    config = StackConfig.for_tests(
        "rooms=2",
        ROOM_PASSWORDS=json.dumps({"guarded": PASSWORD}),
        TOKEN_SECRET=TOKEN_SECRET,
        AUTH_MAX_FAILURES="50",
        MAX_ROOMS_PER_CONNECTION="3",
    )
    with Stack(config) as running:
        yield running


async def next_message(room: object) -> Message:
    return await asyncio.wait_for(anext(aiter(room)), DEADLINE)  # type: ignore[call-overload]


async def test_rooms_on_one_connection_send_and_hear_with_room_handles(stack: Stack) -> None:
    async with (
        Connection(stack.gateway_url, name="Mux") as conn,
        Room(stack.gateway_url, "mx-two") as single,
    ):
        one = await conn.join("mx-one")
        two = await conn.join("mx-two")
        assert one.you == two.you and two.count == 2 and two.welcome is not None
        assert two.welcome.name == "Mux"
        seq = await one.send("to one")
        message = await next_message(one)
        assert (message.seq, message.text, message.room, message.name) == (seq, "to one", "mx-one", "Mux")
        await single.send("from the single socket")
        heard = await next_message(two)
        assert (heard.text, heard.room) == ("from the single socket", "mx-two")
        assert (await next_message(single)).text == "from the single socket"  # its own, first
        await two.send("back", id="back-1")
        assert (await next_message(single)).text == "back"
        assert await two.send("back", id="back-2") > 0


async def test_presence_reaches_the_room_handle(stack: Stack) -> None:
    async with Connection(stack.gateway_url) as watcher, Connection(stack.gateway_url) as guest:
        room = await watcher.join("mx-presence")
        events = room.events()
        await guest.join("mx-presence")
        async with asyncio.timeout(DEADLINE):
            async for event in events:
                if isinstance(event, Presence) and event.type == "join":
                    assert event.count == 2 and event.room == "mx-presence"
                    break


async def test_a_refused_join_raises_and_the_other_rooms_go_on(stack: Stack) -> None:
    async with Connection(stack.gateway_url) as conn:
        lobby = await conn.join("mx-lobby")
        with pytest.raises(Forbidden):
            await conn.join("guarded", password="wrong")
        with pytest.raises(RoomClosed) as invalid:
            await conn.join("no.dots")
        assert invalid.value.code == 1008
        guarded = await conn.join("guarded", password=PASSWORD)
        assert await guarded.send("inside") > 0
        await conn.join("mx-third")
        with pytest.raises(RoomClosed) as too_many:  # MAX_ROOMS_PER_CONNECTION=3 in this stack
            await conn.join("mx-fourth")
        assert (too_many.value.code, too_many.value.reason) == (4029, "too many rooms")
        assert await lobby.send("still here") > 0
        await lobby.leave()
        assert set(conn.rooms) == {"guarded", "mx-third"}
        with pytest.raises(SendRefused) as gone:  # one message refused (an id that is not printable)
            await asyncio.wait_for(conn.rooms["guarded"].send("x", id="\x00"), DEADLINE)
        assert gone.value.code == 1008
        assert {m.text async for m in lobby} <= {"still here"}  # its iterator ends after what it had


async def test_a_token_lacking_a_room_refuses_that_join_only(stack: Stack) -> None:
    claims = {"sub": "ada", "name": "Ada", "rooms": ["mx-mine"], "exp": int(time.time()) + 300}
    token = jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")
    async with Connection(stack.gateway_url, token=lambda: token) as conn:
        mine = await conn.join("mx-mine")
        with pytest.raises(InvalidToken):
            await conn.join("mx-theirs")
        assert (await mine.send("mine")) > 0
        assert (await next_message(mine)).user == "ada"
    # Closed 4001 right after it opens: the open raises when the close came with the handshake's answer
    # (it did on a loaded machine), the first join when it came after; never a retry or a timeout.
    with pytest.raises(InvalidToken):
        async with Connection(stack.gateway_url, token="forged") as refused:
            await refused.join("mx-mine")


async def drop(conn: object) -> None:
    """A network drop as the client sees it: its socket gone without a close frame (1006, reconnect)."""
    conn._conn.transport.abort()  # type: ignore[attr-defined]
    async with asyncio.timeout(DEADLINE):
        while not conn.closes:  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("kind", ["room", "connection"])
async def test_a_hundred_sends_waiting_across_a_reconnect_are_stored_once_without_a_1008(
    stack: Stack, kind: str
) -> None:
    """This stack keeps the default MESSAGE_BURST (40): the backlog goes again paced after the welcome,
    not all at once (which the server closes with 1008, final)."""
    room_id, backlog = f"mx-backlog-{kind}", 100
    slow = Backoff(first=1.0, jitter=0)  # the sends below are all waiting before it comes back
    async with (
        Room(stack.gateway_url, room_id) as listener,
        Connection(stack.gateway_url, backoff=slow) as mux,
    ):
        sender: Room | Joined
        if kind == "room":
            sender = await Room(stack.gateway_url, room_id, backoff=slow).__aenter__()
            await drop(sender)
        else:
            sender = await mux.join(room_id)
            await drop(mux)
        try:
            sends = [asyncio.create_task(sender.send(f"m{n}")) for n in range(backlog)]
            seqs = await asyncio.wait_for(asyncio.gather(*sends), 3 * DEADLINE)
            assert sender.resent == backlog and len(set(seqs)) == backlog
            last = await sender.send("last")
        finally:
            await sender.close()
        heard: list[Message] = []
        while not heard or heard[-1].seq != last:
            heard.append(await next_message(listener))
        texts = [m.text for m in heard]
        assert texts.count("last") == 1 and sorted(texts[:-1]) == sorted(f"m{n}" for n in range(backlog))
        assert all(code != 1008 for code, _ in sender.closes)

"""The rooms app under a real uvicorn in this process (memory:// bus): the FrameWriter hot path."""

import asyncio

from realtime.close_codes import CloseCode
from roomsclient import DEADLINE, close_of, recv, served
from websockets.asyncio.client import connect


async def test_frames_written_once_reach_plain_and_json_members() -> None:
    async with (
        served() as (_, url),
        connect(f"{url}/ws/lobby", compression=None) as plain,
        connect(f"{url}/ws/lobby?format=json", compression=None) as structured,
    ):
        assert '"type":"welcome"' in await recv(structured)
        await plain.send("héllo ✓")
        assert await recv(plain) == "héllo ✓"
        assert '"text":"héllo ✓"' in await recv(structured)


async def test_wrong_password_is_a_visible_4003_not_http_403() -> None:
    async with (
        served(room_passwords={"VIP": "secret123"}) as (_, url),
        connect(f"{url}/ws/VIP?pass=nope", compression=None) as conn,
    ):
        assert await close_of(conn) == (CloseCode.FORBIDDEN, "forbidden")


async def test_oversized_message_closes_1009() -> None:
    async with served() as (_, url), connect(f"{url}/ws/lobby", compression=None, max_size=None) as conn:
        await conn.send("x" * (64 * 1024 + 1))
        assert (await close_of(conn))[0] == CloseCode.MESSAGE_TOO_BIG


async def test_slow_consumer_is_cut_off_and_the_others_get_everything() -> None:
    chunk = "y" * 30_000
    async with (
        served(send_buffer_limit=64 * 1024, message_rate=10_000, message_burst=10_000) as (app, url),
        connect(f"{url}/ws/fire", compression=None, max_queue=2) as sleeper,  # never reads
        connect(f"{url}/ws/fire", compression=None) as reader,
    ):
        sent = 0
        async with asyncio.timeout(DEADLINE * 3):
            while not app.state.rooms.cut_off:
                await reader.send(f"{sent} {chunk}")
                assert await recv(reader) == f"{sent} {chunk}"  # the reader keeps up, in order
                sent += 1
            await reader.send("after")
            assert await recv(reader) == "after"
            while app.state.rooms.stats()["members"] != 1:
                await asyncio.sleep(0.01)
        assert app.state.rooms.stats()["slow_consumers_cut_off"] == 1
        # 1013, a resume code, and the member sees it once it reads its (bounded) backlog
        assert await close_of(sleeper) == (CloseCode.TRY_AGAIN_LATER, "slow consumer")

"""The rooms app under a real uvicorn in this process (memory:// bus): the FrameWriter hot path."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from realtime.close_codes import CloseCode
from realtime.testing import free_port, serving
from rooms_service.app import create_app
from rooms_service.settings import RoomsSettings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

DEADLINE = 10.0


@contextlib.asynccontextmanager
async def served(**overrides: Any) -> AsyncIterator[tuple[Any, str]]:
    settings = RoomsSettings(bus_url="memory://", port=free_port(), access_log=False, **overrides)
    app = create_app(settings)
    async with serving(app, settings, deadline=DEADLINE) as running:
        yield app, running.url


async def recv(conn: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(conn.recv(), DEADLINE)


async def close_of(conn: ClientConnection) -> tuple[int, str]:
    try:
        async with asyncio.timeout(DEADLINE):
            while True:
                await conn.recv()
    except ConnectionClosed as exc:
        return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (CloseCode.ABNORMAL, "")
    raise AssertionError("not closed")


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
        code, reason = await close_of(sleeper)
        assert code in (CloseCode.POLICY_VIOLATION, CloseCode.ABNORMAL)
        if code == CloseCode.POLICY_VIOLATION:
            assert reason == "slow consumer"

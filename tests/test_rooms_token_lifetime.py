"""Token lifetime through the real gateway: a member whose token expires is closed with 4002; the
Python client and realtime.js (under Node: no browser here) refresh through their token callable and
are never closed. Tokens live 3 seconds, so a few refreshes happen within the test."""

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import realtime_client
from devstack.stack import Stack
from realtime.close_codes import CloseCode

from tests.conftest import closed_with, make_stack, next_event, ws

SECRET = "lifetime-system-secret-0123456789-abcdef"
ROOT = Path(__file__).parent.parent
LIFE = 3  # seconds a token lives


def token(user: str = "lee", life: float = LIFE) -> str:
    return jwt.encode({"sub": user, "rooms": "*", "exp": int(time.time() + life)}, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def lifetime_stack() -> Iterator[Stack]:
    with make_stack("rooms=2", TOKEN_SECRET=SECRET) as running:
        yield running


async def test_a_member_whose_token_expires_sees_4002(lifetime_stack: Stack) -> None:
    async with await ws(f"{lifetime_stack.gateway_url}/ws/tl-raw?format=json&token={token()}") as member:
        await next_event(member, "welcome")
        assert await closed_with(member) == (CloseCode.TOKEN_EXPIRED, "token expired")


async def test_the_python_client_refreshes_and_is_never_closed(lifetime_stack: Stack) -> None:
    minted: list[str] = []

    def fresh() -> str:
        minted.append(token())
        return minted[-1]

    async with realtime_client.Room(lifetime_stack.gateway_url, "tl-py", token=fresh) as room:
        await asyncio.sleep(LIFE * 2.5)  # past two tokens' exp
        seq = await asyncio.wait_for(room.send("still here"), 10)
        assert seq >= 1
        assert room.closes == [] and room.connects == 1
        assert room.refreshes >= 2


async def test_a_ws_connection_whose_token_expires_sees_4002(lifetime_stack: Stack) -> None:
    """The multiplexed /ws: the connection's token, refreshed once, then left to expire: 4002."""
    async with await ws(f"{lifetime_stack.gateway_url}/ws?token={token()}") as conn:
        await conn.send(json.dumps({"type": "join", "room": "tl-mux", "ref": "1"}))
        await next_event(conn, "welcome", ref="1")
        await conn.send(json.dumps({"type": "refresh", "token": token(life=LIFE + 1)}))
        await next_event(conn, "refreshed")
        await conn.send(json.dumps({"type": "refresh", "token": token(user="someone-else")}))
        assert (await next_event(conn, "error"))["code"] == CloseCode.INVALID_TOKEN  # the old exp stands
        assert await closed_with(conn) == (CloseCode.TOKEN_EXPIRED, "token expired")


async def test_the_python_connection_refreshes_and_is_never_closed(lifetime_stack: Stack) -> None:
    minted: list[str] = []

    def fresh() -> str:
        minted.append(token())
        return minted[-1]

    async with realtime_client.Connection(lifetime_stack.gateway_url, token=fresh) as conn:
        room = await conn.join("tl-mux-py")
        await asyncio.sleep(LIFE * 2.5)  # past two tokens' exp
        seq = await asyncio.wait_for(room.send("still here"), 10)
        assert seq >= 1
        assert conn.closes == [] and conn.connects == 1
        assert conn.refreshes >= 2


@pytest.mark.parametrize("kind", ["room", "connection"])
def test_realtime_js_refreshes_and_is_never_closed(lifetime_stack: Stack, tmp_path: Path, kind: str) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    module = tmp_path / "realtime.mjs"  # an ES module by its name, as a browser loads it by its type
    shutil.copy(ROOT / "gateway/src/gateway/static/realtime.js", module)
    stay = LIFE * 2.5
    # minted in order, each living LIFE seconds after the moment it is asked for (about)
    tokens = [token(life=LIFE + i * (LIFE - min(30.0, LIFE / 4))) for i in range(6)]
    host = lifetime_stack.gateway_url.removeprefix("ws://")
    env = {**os.environ, "TOKENS": json.dumps(tokens), "SECONDS_TO_STAY": str(stay), "KIND": kind}
    done = subprocess.run(
        [
            node,
            "--experimental-websocket",
            "--no-warnings",
            str(ROOT / "tests/support/js_refresh.mjs"),
            str(module),
            host,
            f"tl-js-{kind}",
        ],
        capture_output=True,
        text=True,
        timeout=stay + 20,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["welcomes"] == 1 and report["finals"] == [], report
    assert not [s for s in report["states"] if s.startswith("reconnecting")], report
    assert report["refreshes"] >= 2 and isinstance(report["seq"], int), report

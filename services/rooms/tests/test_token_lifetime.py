"""A token member is closed with 4002 at its token's exp unless it refreshes (the rooms app alone)."""

import asyncio
import json
import time

import jwt
from realtime.close_codes import CloseCode
from roomsclient import client, close_of, recv_json, served

SECRET = "lifetime-secret-0123456789-abcdef-xyz"


def token(sub: str = "ana", seconds: float = 60, **claims: object) -> str:
    body = {"sub": sub, "rooms": ["lobby"], "exp": int(time.time() + seconds)} | claims
    return jwt.encode(body, SECRET, algorithm="HS256")


async def test_a_member_whose_token_expires_is_closed_with_4002() -> None:
    async with (
        served(token_secret=SECRET) as (_, url),
        client(f"{url}/ws/lobby?format=json&token={token(seconds=2)}") as conn,
    ):
        assert (await recv_json(conn))["type"] == "welcome"
        started = time.monotonic()
        assert await close_of(conn) == (CloseCode.TOKEN_EXPIRED, "token expired")
        assert time.monotonic() - started < 3.5


async def test_a_refresh_moves_the_expiry_on_and_a_bad_one_leaves_it() -> None:
    async with (
        served(token_secret=SECRET) as (_, url),
        client(f"{url}/ws/lobby?format=json&token={token(seconds=2)}") as conn,
    ):
        assert (await recv_json(conn))["type"] == "welcome"
        for bad in (token(sub="eve", seconds=60), token(seconds=60, rooms=["other"]), "not-a-jwt"):
            await conn.send(json.dumps({"type": "refresh", "token": bad}))
            assert await recv_json(conn) == {"type": "error", "code": 4001, "reason": "invalid token"}
        fresh = token(seconds=60)
        await conn.send(json.dumps({"type": "refresh", "token": fresh}))
        refreshed = await recv_json(conn)
        assert refreshed == {
            "type": "refreshed",
            "exp": jwt.decode(fresh, SECRET, algorithms=["HS256"])["exp"],
        }
        await asyncio.sleep(3)  # past the first token's exp
        await conn.send(json.dumps({"text": "still here", "id": "a-1"}))
        assert (await recv_json(conn, skip=("members", "message")))["type"] == "ack"

"""Identity tokens end to end: two rooms replicas behind the real gateway, a real nats-server."""

import json
import time
import urllib.parse
from collections.abc import Iterator

import jwt
import pytest
from devstack.stack import Stack
from realtime.close_codes import CloseCode

from tests.conftest import closed_with, make_stack, next_event, recv, wait_until_async, ws

SECRET = "dev-secret-for-tests-0123456789-abcdef"
ROOM_PASSWORD = "vip-password-1"


def token(**claims: object) -> str:
    body = {"sub": "user-42", "name": "Ada L.", "rooms": ["VIP", "lobby"], "exp": int(time.time()) + 300}
    return jwt.encode(body | claims, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def token_stack() -> Iterator[Stack]:
    with make_stack(
        "rooms=2", TOKEN_SECRET=SECRET, ROOM_PASSWORDS=json.dumps({"VIP": ROOM_PASSWORD})
    ) as running:
        yield running


def replica(stack: Stack, name: str) -> str:
    return f"ws://127.0.0.1:{stack.processes[name].port}"


async def test_a_token_member_is_named_on_every_replica_and_enters_a_guarded_room(token_stack: Stack) -> None:
    member_token = token()
    async with (
        await ws(f"{replica(token_stack, 'rooms-1')}/ws/VIP?format=json&pass={ROOM_PASSWORD}") as one,
        await ws(f"{replica(token_stack, 'rooms-2')}/ws/VIP?format=json&pass={ROOM_PASSWORD}") as two,
        await ws(f"{replica(token_stack, 'rooms-2')}/ws/VIP?pass={ROOM_PASSWORD}") as plain,
    ):
        await next_event(one, "welcome")
        await next_event(two, "welcome")
        async with await ws(f"{token_stack.gateway_url}/ws/VIP?format=json&token={member_token}") as ada:
            welcome = await next_event(ada, "welcome")
            assert (welcome["user"], welcome["name"]) == ("user-42", "Ada L.")
            for other in (one, two):
                join = await next_event(other, "join", member=welcome["you"])
                assert (join["user"], join["name"]) == ("user-42", "Ada L.")
            await ada.send(json.dumps({"text": "hello from Ada", "id": "ada-1"}))
            ack = await next_event(ada, "ack")
            for other in (one, two):
                message = await next_event(other, "message")
                assert (message["text"], message["user"], message["name"], message["seq"]) == (
                    "hello from Ada",
                    "user-42",
                    "Ada L.",
                    ack["seq"],
                )
            assert await recv(plain) == "hello from Ada"  # plain text: unchanged


@pytest.mark.parametrize(
    ("room", "bad"),
    [
        ("lobby", token(exp=int(time.time()) - 10)),  # expired
        ("lobby", jwt.encode({"sub": "x", "rooms": "*", "exp": int(time.time()) + 60}, "f" * 40)),  # forged
        ("lobby", "eyJhbGciOiJub25lIn0.e30."),  # malformed, alg none
        ("ops", token()),  # another room's
        ("VIP", token(rooms=["lobby"])),  # a guarded room it does not name
    ],
)
async def test_refused_tokens_see_4001_through_the_gateway(token_stack: Stack, room: str, bad: str) -> None:
    async with await ws(f"{token_stack.gateway_url}/ws/{room}?format=json&token={bad}") as conn:
        assert await closed_with(conn) == (CloseCode.INVALID_TOKEN, "invalid token")


async def test_a_display_name_is_shown_without_a_user(token_stack: Stack) -> None:
    async with await ws(f"{token_stack.gateway_url}/ws/lobby?format=json&name=Guest%207") as guest:
        welcome = await next_event(guest, "welcome")
        assert welcome["name"] == "Guest 7" and "user" not in welcome
        await guest.send(json.dumps({"text": "hi", "id": "g-1"}))
        message = await next_event(guest, "message")
        assert message["name"] == "Guest 7" and "user" not in message


async def test_tokens_and_the_secret_appear_in_no_log(token_stack: Stack) -> None:
    good, bad = token(), token(exp=int(time.time()) - 10)
    for value, room in ((good, "lobby"), (bad, "lobby"), (good, "ops")):
        async with await ws(f"{token_stack.gateway_url}/ws/{room}?marker=tok&token={value}") as conn:
            await conn.close()
    await wait_until_async(
        lambda: token_stack.all_logs().count("marker=tok") >= 6,  # the gateway's and a replica's line each
        "every connection to be logged",
    )
    logs = token_stack.all_logs()
    for secret in (good, bad, SECRET):
        signature = secret.rsplit(".", 1)[-1]
        assert signature not in logs and urllib.parse.quote(signature) not in logs

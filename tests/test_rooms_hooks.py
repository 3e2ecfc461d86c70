"""The app decides: join and publish hooks through the real gateway, two rooms replicas, a real NATS,
and a real backend app (tests/support/hookapp.py) that verifies every signature with standardwebhooks.

The backend's rules go by room (joins) and text (messages), so one stack serves every case:
rooms ``open-*`` are allowed, ``deny-*`` denied with 4403, ``who-*`` admitted by the app's session
cookie alone (with the user and name the app gives), ``slow-*`` answered after the timeout, ``down-*``
answered 500. Texts with ``badword`` are denied with 4422, ``shout:`` ones replaced in upper case, and
``slow:`` ones answered late the first time each id is seen.
"""

import asyncio
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import realtime_client
from devstack.stack import Stack
from realtime.close_codes import CloseCode
from rooms_service.signing import new_secret

from tests.conftest import closed_with, make_stack, next_event, wait_until_async, ws
from tests.support.api import gateway_client
from tests.support.hookapp import ALLOW, Backend, Slow
from tests.test_asyncapi import assert_valid

SECRET = new_secret()
KEY = "hooks-api-key-5d2e9a71c3"
AUTH = {"Authorization": f"Bearer {KEY}"}
SESSION = "sess-ana-4f1c2b9e77d0"
SESSION_COOKIE = f"theme=dark; session={SESSION}"
TIMEOUT = 1.5  # seconds: generous on a busy 2-core machine; slow answers take 3 times that


def join_rule(body: dict[str, Any]) -> Any:
    room = body["room"]
    if room.startswith("deny-"):
        return {"result": "deny", "code": 4403, "reason": "not on the list"}
    if room.startswith("who-"):
        if f"session={SESSION}" in body["headers"].get("cookie", ""):
            return {"result": "allow", "user": "ana", "name": "Ana from the app"}
        return {"result": "deny", "code": 4401, "reason": "log in first"}
    if room.startswith("slow-"):
        return Slow(TIMEOUT * 3)
    if room.startswith("down-"):
        return 500
    return ALLOW


class PublishRule:
    def __init__(self) -> None:
        self.slowed: set[str] = set()

    def __call__(self, body: dict[str, Any]) -> Any:
        text = body["text"]
        if "badword" in text:
            return {"result": "deny", "code": 4422, "reason": "no bad words"}
        if text.startswith("shout:"):
            return {"result": "allow", "text": text.removeprefix("shout:").upper()}
        if text.startswith("slow:") and body["id"] not in self.slowed:
            self.slowed.add(body["id"])
            return Slow(TIMEOUT * 3)
        return ALLOW


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with Backend(SECRET) as running:
        running.rules = {"join": join_rule, "publish": PublishRule()}
        yield running


@pytest.fixture(scope="module")
def hook_stack(backend: Backend) -> Iterator[Stack]:
    env = {
        "JOIN_HOOK_URL": backend.hook_url("join"),
        "PUBLISH_HOOK_URL": backend.hook_url("publish"),
        "HOOK_SECRET": SECRET,
        "HOOK_TIMEOUT": str(TIMEOUT),
        "PUBLISH_API_KEYS": json.dumps([KEY]),
    }
    with make_stack("rooms=2", **env) as running:
        yield running


def room_url(stack: Stack, room: str, **query: str) -> str:
    return f"{stack.gateway_url}/ws/{room}?{urllib.parse.urlencode({'format': 'json', **query})}"


async def test_an_allowed_join_is_asked_with_the_member_and_its_headers_signed(
    hook_stack: Stack, backend: Backend
) -> None:
    headers = {"Cookie": "a=1", "Authorization": "Bearer app-token-xyz", "User-Agent": "hook-test/1"}
    async with await ws(room_url(hook_stack, "open-1", name="Bo"), additional_headers=headers) as bo:
        welcome = await next_event(bo, "welcome")
        assert welcome["name"] == "Bo" and "user" not in welcome
    (asked,) = backend.asked("join", room="open-1")
    assert (asked["user"], asked["name"]) == (None, "Bo")
    assert asked["address"] == "127.0.0.1"  # the client's, as the gateway forwarded it
    assert asked["headers"] == {
        "cookie": "a=1",
        "authorization": "Bearer app-token-xyz",
        "user-agent": "hook-test/1",
    }
    assert backend.bad_signatures == 0


async def test_a_denied_join_sees_the_apps_code_and_joins_nothing(
    hook_stack: Stack, backend: Backend
) -> None:
    async with await ws(room_url(hook_stack, "open-watch")) as watcher:
        await next_event(watcher, "welcome")
        async with await ws(room_url(hook_stack, "deny-1")) as refused:
            assert await closed_with(refused) == (4403, "not on the list")
        async with httpx.AsyncClient(trust_env=False) as http:
            for replica in hook_stack.replicas("rooms"):
                stats = (await http.get(f"{replica.internal_url}/rooms")).json()
                assert stats["members"] <= 1  # the watcher on one replica; the refused member nowhere


async def test_the_apps_session_cookie_alone_admits_a_member_with_the_apps_identity(
    hook_stack: Stack,
) -> None:
    async with await ws(room_url(hook_stack, "who-1"), additional_headers={"Cookie": SESSION_COOKIE}) as ana:
        welcome = await next_event(ana, "welcome")
        assert (welcome["user"], welcome["name"]) == ("ana", "Ana from the app")
        await ana.send(json.dumps({"text": "hi", "id": "ana-1"}))
        message = await next_event(ana, "message")
        assert (message["user"], message["name"]) == ("ana", "Ana from the app")
    async with await ws(room_url(hook_stack, "who-1")) as stranger:
        assert await closed_with(stranger) == (4401, "log in first")


@pytest.mark.parametrize("room", ["slow-1", "down-1"])
async def test_a_slow_or_broken_hook_refuses_with_1013_and_others_go_on(hook_stack: Stack, room: str) -> None:
    async with await ws(room_url(hook_stack, "open-busy")) as other:
        await next_event(other, "welcome")
        async with await ws(room_url(hook_stack, room)) as waiting:
            await other.send(json.dumps({"text": "still here", "id": f"busy-{room}"}))
            assert (await next_event(other, "ack"))["id"] == f"busy-{room}"  # while the hook is out
            assert await closed_with(waiting) == (CloseCode.TRY_AGAIN_LATER, "try again later")


async def test_publish_hook_denies_replaces_and_the_sender_stays(hook_stack: Stack, backend: Backend) -> None:
    async with (
        await ws(room_url(hook_stack, "open-pub")) as one,
        await ws(room_url(hook_stack, "open-pub")) as two,
    ):
        await next_event(one, "welcome")
        await next_event(two, "welcome")
        await one.send(json.dumps({"text": "a badword here", "id": "p-1"}))
        error = await next_event(one, "error")
        assert error == {"type": "error", "id": "p-1", "code": 4422, "reason": "no bad words"}
        assert_valid("error", error)
        await one.send(json.dumps({"text": "shout:hello", "id": "p-2"}))
        ack = await next_event(one, "ack", id="p-2")
        message = await next_event(two, "message")  # the denied one was never stored
        assert (message["text"], message["seq"]) == ("HELLO", ack["seq"])
        asked = backend.asked("publish", room="open-pub", id="p-2")
        assert asked and asked[0]["text"] == "shout:hello"


async def test_a_slow_publish_hook_stores_nothing_and_a_resend_is_stored_once(hook_stack: Stack) -> None:
    async with await ws(room_url(hook_stack, "open-slowpub")) as one:
        await next_event(one, "welcome")
        send = json.dumps({"text": "slow:please", "id": "s-1"})
        await one.send(send)
        error = await next_event(one, "error")
        assert (error["id"], error["code"]) == ("s-1", CloseCode.TRY_AGAIN_LATER)
        await one.send(send)  # the app answers at once now
        first = await next_event(one, "ack", id="s-1")
        await one.send(send)
        again = await next_event(one, "ack", id="s-1")
        assert first["seq"] == again["seq"]
    async with gateway_client(hook_stack) as api:
        page = (await api.get("/api/rooms/open-slowpub/messages", headers=AUTH)).json()
    assert [m["text"] for m in page["messages"]] == ["slow:please"]


async def test_the_python_client_raises_refused_for_a_denied_send_and_goes_on(hook_stack: Stack) -> None:
    async with realtime_client.Room(hook_stack.gateway_url, "open-client") as room:
        with pytest.raises(realtime_client.Refused) as refused:
            await asyncio.wait_for(room.send("a badword"), 10)
        assert (refused.value.code, refused.value.reason) == (4422, "no bad words")
        assert await asyncio.wait_for(room.send("shout:fine"), 10) >= 1
        message = await asyncio.wait_for(anext(aiter(room)), 10)
        assert message.text == "FINE"


async def test_a_ws_join_the_hook_denies_is_an_error_frame_and_the_connection_goes_on(
    hook_stack: Stack, backend: Backend
) -> None:
    """On the multiplexed /ws, the join hook refuses one join with an ``error`` frame (the app's code),
    the connection stays and joins another room; the publish hook refuses one send with its id."""
    headers = {"Cookie": SESSION_COOKIE}
    async with await ws(f"{hook_stack.gateway_url}/ws", additional_headers=headers) as conn:
        await conn.send(json.dumps({"type": "join", "room": "deny-mux", "ref": "1"}))
        refused = await next_event(conn, "error")
        assert refused == {
            "type": "error",
            "room": "deny-mux",
            "ref": "1",
            "code": 4403,
            "reason": "not on the list",
        }
        assert_valid("error", refused)
        await conn.send(json.dumps({"type": "join", "room": "who-mux", "ref": "2"}))
        welcome = await next_event(conn, "welcome", room="who-mux")
        assert welcome["ref"] == "2"  # the same connection, admitted by the app's session cookie
        assert (welcome["user"], welcome["name"]) == ("ana", "Ana from the app")
        await conn.send(json.dumps({"type": "send", "room": "who-mux", "text": "a badword", "id": "m-1"}))
        denied = await next_event(conn, "error")
        assert (denied["room"], denied["id"], denied["code"]) == ("who-mux", "m-1", 4422)
        await conn.send(json.dumps({"type": "send", "room": "who-mux", "text": "shout:hi", "id": "m-2"}))
        message = await next_event(conn, "message", room="who-mux")
        assert (message["text"], message["id"], message["user"]) == ("HI", "m-2", "ana")
    assert [asked["headers"].get("cookie") for asked in backend.asked("join", room="who-mux")] == [
        SESSION_COOKIE
    ]


async def test_api_publishes_go_through_the_publish_hook(hook_stack: Stack) -> None:
    async with gateway_client(hook_stack) as api:
        denied = await api.post("/api/rooms/open-api/messages", json={"text": "badword"}, headers=AUTH)
        assert denied.status_code == 403 and denied.json()["detail"] == "no bad words"
        replaced = await api.post("/api/rooms/open-api/messages", json={"text": "shout:ok"}, headers=AUTH)
        assert replaced.status_code == 201
        page = (await api.get("/api/rooms/open-api/messages", headers=AUTH)).json()
    assert [m["text"] for m in page["messages"]] == ["OK"]


async def test_hook_metrics_carry_no_room_user_or_url_and_no_secret_reaches_a_log(
    hook_stack: Stack, backend: Backend
) -> None:
    async with await ws(room_url(hook_stack, "who-2"), additional_headers={"Cookie": SESSION_COOKIE}) as ana:
        await next_event(ana, "welcome")
    texts = []
    async with httpx.AsyncClient(trust_env=False) as http:
        for replica in hook_stack.replicas("rooms"):
            texts.append((await http.get(f"{replica.internal_url}/metrics")).text)
    scraped = "\n".join(texts)
    assert 'realtime_hook_calls_total{hook="join",outcome="allow",service="rooms"}' in scraped
    assert "realtime_hook_seconds_bucket" in scraped
    hook_lines = [line for line in scraped.splitlines() if line.startswith("realtime_hook")]
    for line in hook_lines:
        assert "who-" not in line and "ana" not in line and backend.url not in line
    await wait_until_async(lambda: "who-2" in hook_stack.all_logs(), "the join to be logged")
    logs = hook_stack.all_logs()
    for secret in (SECRET, SECRET.removeprefix("whsec_"), SESSION, "app-token-xyz", KEY):
        assert secret not in logs

"""docs/asyncapi.yaml against the code and the running stack (`make asyncapi` validates the document
itself with the official CLI).

- every envelope type rooms send to clients, and every close code the services and the gateway use,
  is in the document, with the same reconnect/final split as ``realtime.close_codes``;
- real frames captured from the stack validate against the document's schemas.
"""

import asyncio
import json
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import realtime_client
import yaml
from devstack.stack import Stack
from jsonschema import Draft7Validator
from realtime.close_codes import FINAL, RECONNECT, CloseCode
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from rooms_service import envelopes, events

from tests.conftest import make_stack, next_event, ws

ROOT = Path(__file__).parent.parent
DOC = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
# Internal only: a replica's heartbeat and its presence diff on NATS, never forwarded to a client as such.
INTERNAL_TYPES = {envelopes.COUNT, envelopes.DIFF}
TOKEN_SECRET = "asyncapi-token-secret-0123456789-abcdef"
API_KEY = "asyncapi-publish-key-7d1e"


def close_table() -> dict[int, dict[str, Any]]:
    return {entry["code"]: entry for entry in DOC["x-close-codes"]}


def validator(schema: str) -> Draft7Validator:
    registry = Registry().with_resource(
        "urn:asyncapi", Resource.from_contents(DOC, default_specification=DRAFT7)
    )
    return Draft7Validator({"$ref": f"urn:asyncapi#/components/schemas/{schema}"}, registry=registry)


def assert_valid(schema: str, frame: dict[str, Any]) -> None:
    errors = [e.message for e in validator(schema).iter_errors(frame)]
    assert not errors, (schema, frame, errors)


def codes_in_use() -> set[CloseCode]:
    """Every ``CloseCode.X`` the services, the gateway and the shared package name in their source."""
    used = set()
    for folder in ("services", "gateway/src", "libs/realtime/src"):
        for path in (ROOT / folder).rglob("*.py"):
            if "/tests/" in str(path):
                continue
            used |= {CloseCode[name] for name in re.findall(r"CloseCode\.([A-Z_]+)", path.read_text())}
    return used


def test_every_envelope_type_rooms_send_is_described() -> None:
    types = {
        value
        for name, value in vars(envelopes).items()
        if name.isupper() and isinstance(value, str) and value not in INTERNAL_TYPES
    }
    assert types == {"message", "join", "leave", "welcome", "members", "ack", "error", "refreshed"}
    schemas = DOC["components"]["schemas"]
    described = {
        s["properties"]["type"]["const"] for s in schemas.values() if "type" in s.get("properties", {})
    }
    assert types <= described
    room_messages = DOC["channels"]["room"]["messages"]
    assert types <= set(room_messages)


def test_every_room_event_type_is_described_and_its_examples_validate() -> None:
    messages = DOC["components"]["messages"]
    refs = [m["$ref"].rsplit("/", 1)[-1] for m in DOC["channels"]["appRoomEvents"]["messages"].values()]
    assert {messages[ref]["name"] for ref in refs} == set(events.TYPES)
    for ref in refs:
        schema = messages[ref]["payload"]["$ref"].rsplit("/", 1)[-1]
        for example in messages[ref].get("examples", []):
            assert_valid(schema, example["payload"])


def test_every_close_code_in_use_is_described_with_the_same_reconnect_split() -> None:
    table = close_table()
    used = codes_in_use()
    assert CloseCode.FORBIDDEN in used and CloseCode.TRY_AGAIN_LATER in used  # the scan works
    assert {int(c) for c in used | RECONNECT | FINAL} <= set(table)
    for code in RECONNECT:
        assert table[code]["client"] == "reconnect", code
    for code in FINAL:
        assert table[code]["client"] == "final", code
    for code, entry in table.items():
        assert entry["name"] == CloseCode(code).name


def test_the_query_parameters_are_described() -> None:
    query = DOC["channels"]["room"]["bindings"]["ws"]["query"]["properties"]
    assert set(query) == {"format", "pass", "since", "epoch", "history", "token", "name"}


# --- real frames from the running stack ------------------------------------------------------------
@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with make_stack(
        "rooms=2",
        PULSE_INTERVAL="0.5",
        PRESENCE_INTERVAL="0.5",
        TOKEN_SECRET=TOKEN_SECRET,
        PUBLISH_API_KEYS=json.dumps([API_KEY]),
    ) as running:
        yield running


async def test_real_room_frames_validate(stack: Stack) -> None:
    room = f"{stack.gateway_url}/ws/asyncapi"
    async with await ws(f"{room}?format=json") as one:
        welcome = await next_event(one, "welcome")
        assert_valid("welcome", welcome)
        async with await ws(f"{room}?format=json") as two:
            assert_valid("welcome", await next_event(two, "welcome"))
            assert_valid("join", await next_event(one, "join"))
            send = {"text": "hello", "id": "asyncapi-1"}
            assert_valid("send", send)
            await two.send(json.dumps(send))
            assert_valid("ack", await next_event(two, "ack"))
            message = await next_event(one, "message")
            assert message["text"] == "hello"
            assert_valid("message", message)
        assert_valid("leave", await next_event(one, "leave"))
        async with await ws(f"{room}?format=json&since={message['seq']}&epoch={welcome['epoch']}") as back:
            resumed = await next_event(back, "welcome")
            assert resumed["recovered"] is True
            assert_valid("welcome", resumed)


async def test_real_frames_with_user_and_name_validate(stack: Stack) -> None:
    """A token member (``user`` and ``name``) and a display-named member (``name`` only): their welcome,
    messages, joins and leaves, as another member receives them, carry the fields and validate."""
    claims = {"sub": "user-7", "name": "Ada L.", "rooms": ["named"], "exp": int(time.time()) + 300}
    token = jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")
    room = f"{stack.gateway_url}/ws/named?format=json"
    async with await ws(room) as watcher:
        await next_event(watcher, "welcome")
        for query, who in (
            (f"&token={token}", {"user": "user-7", "name": "Ada L."}),
            ("&name=Guest", {"name": "Guest"}),
        ):
            async with await ws(room + query) as member:
                welcome = await next_event(member, "welcome")
                join = await next_event(watcher, "join")
                await member.send(json.dumps({"text": "named", "id": f"named-{welcome['you']}"}))
                message = await next_event(watcher, "message")
            leave = await next_event(watcher, "leave")
            for kind, frame in (("welcome", welcome), ("join", join), ("message", message), ("leave", leave)):
                assert {k: frame[k] for k in ("user", "name") if k in frame} == who, (kind, frame)
                assert_valid(kind, frame)


async def test_a_message_from_the_publish_api_validates(stack: Stack) -> None:
    """What members get when the app's backend publishes through the gateway: sender "api", a name."""
    async with await ws(f"{stack.gateway_url}/ws/from-api?format=json") as member:
        await next_event(member, "welcome")
        body = {"text": "order shipped", "name": "shop", "id": "asyncapi-api-1"}
        answer = await asyncio.to_thread(publish, stack, "from-api", body)
        message = await next_event(member, "message")
        assert (message["sender"], message["name"], message["seq"]) == ("api", "shop", answer["seq"])
        assert "user" not in message
        assert_valid("message", message)


def publish(stack: Stack, room: str, body: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(
        stack.http_url + f"/api/rooms/{room}/messages",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
        return json.loads(response.read())


async def test_a_real_members_event_validates(stack: Stack) -> None:
    """Two JSON members on two replicas; one replica dies (SIGKILL, no leave is ever sent), so the other
    member's total changes without a join or leave: a ``members`` event."""
    one, two = (
        f"ws://127.0.0.1:{stack.processes[r].port}/ws/census?format=json" for r in ("rooms-1", "rooms-2")
    )
    async with await ws(one) as here:
        await next_event(here, "welcome")
        other = await ws(two)
        await next_event(other, "welcome")
        assert (await next_event(here, "join"))["count"] == 2
        await asyncio.to_thread(stack.stop_process, "rooms-2", signal.SIGKILL)
        members = await next_event(here, "members")
        assert members["count"] == 1
        assert_valid("members", members)
        await other.close()  # its replica is gone: this only ends the client side
    # Started from this (the main) thread: a process started from a worker thread gets SIGTERM when that
    # thread exits (devstack's PR_SET_PDEATHSIG follows the thread), i.e. when this test's loop closes.
    stack.start_process("rooms-2")
    await asyncio.to_thread(stack.wait_ready, 30.0, ["rooms-2"])


async def test_a_real_pulse_validates(stack: Stack) -> None:
    async with await ws(f"{stack.gateway_url}/stats") as conn:
        async with asyncio.timeout(30):
            pulse = json.loads(await conn.recv())
        assert_valid("pulse", pulse)


async def test_a_real_members_event_with_who_joined_and_left_validates() -> None:
    """A room above PRESENCE_EVENTS_MAX_MEMBERS (0 here): joins and leaves arrive as ``members``
    events with ``joined``/``left`` lists."""
    env = {"PRESENCE_EVENTS_MAX_MEMBERS": "0", "PRESENCE_DIFF_INTERVAL": "0.2"}
    with make_stack("rooms=1", **env) as small:
        url = f"ws://127.0.0.1:{small.processes['rooms-1'].port}/ws/big?format=json"
        async with await ws(url) as here:
            await next_event(here, "welcome")
            async with await ws(url + "&name=Ann") as other:
                you = (await next_event(other, "welcome"))["you"]
                joined = await next_event(here, "members", count=2)
                # (the first member may be listed too: its own join can fall in the same interval)
                assert {"member": you, "name": "Ann"} in joined["joined"] and joined["left"] == []
                assert_valid("members", joined)
            left = await next_event(here, "members", count=1)
            assert left["left"] == [{"member": you, "name": "Ann"}] and left["joined"] == []
            assert_valid("members", left)


def test_a_schema_rejects_what_it_should() -> None:
    """The schemas have teeth: an unknown field or a missing seq fails."""
    assert list(validator("message").iter_errors({"type": "message", "text": "x"}))
    assert list(validator("ack").iter_errors({"type": "ack", "id": "1", "seq": 1, "extra": True}))
    join = {"type": "join", "room": "r", "member": "m", "ts": 1.0, "count": 1}
    assert not list(validator("join").iter_errors(join | {"user": "u", "name": "n"}))
    assert list(validator("join").iter_errors(join | {"user": None}))  # absent, never null
    assert list(validator("join").iter_errors(join | {"name": ""}))


def test_the_clients_follow_the_documents_close_table() -> None:
    """realtime_client and /static/realtime.js carry their own copy of the table: the same split."""
    table = close_table()
    reconnect = {code for code, entry in table.items() if entry["client"] == "reconnect"}
    assert set(realtime_client.RECONNECT) == reconnect
    assert set(realtime_client.FINAL) | {1000} == set(table) - reconnect
    js = (ROOT / "gateway/src/gateway/static/realtime.js").read_text()
    block = re.search(r"RECONNECT_CODES = new Set\(\[(.*?)\]\)", js, re.S)
    assert block is not None
    assert {int(c) for c in re.findall(r"\b(\d{4}),", block.group(1))} == reconnect


# --- /ws: one connection, many rooms ----------------------------------------------------------------
def test_the_multiplexed_channel_describes_every_frame_both_ways() -> None:
    channel = DOC["channels"]["rooms"]
    assert channel["address"] == "/ws"
    assert set(channel["messages"]) == {
        "joinRoom",
        "leaveRoom",
        "sendToRoom",
        "welcome",
        "message",
        "ack",
        "join",
        "leave",
        "members",
        "left",
        "error",
        "refresh",
        "refreshed",
    }
    assert set(channel["bindings"]["ws"]["query"]["properties"]) == {"token", "name"}
    table_codes, app_codes = DOC["components"]["schemas"]["error"]["properties"]["code"]["anyOf"]
    error_codes = set(table_codes["enum"])
    assert error_codes <= set(close_table())
    assert (app_codes["minimum"], app_codes["maximum"]) == (4000, 4999)  # a hook's deny: the app's code


async def test_real_multiplexed_frames_validate(stack: Stack) -> None:
    base = stack.gateway_url
    token = jwt.encode(
        {"sub": "mux", "name": "Mux", "rooms": ["mux-a", "mux-b"], "exp": int(time.time()) + 60},
        TOKEN_SECRET,
        algorithm="HS256",
    )
    async with await ws(f"{base}/ws?token={token}") as conn, await ws(f"{base}/ws") as other:
        join = {"type": "join", "room": "mux-a", "ref": "a1"}
        assert_valid("muxJoin", join)
        await conn.send(json.dumps(join))
        welcome = await next_event(conn, "welcome", ref="a1")
        assert_valid("muxWelcome", welcome)
        await other.send(json.dumps({"type": "join", "room": "mux-a", "ref": 7}))
        assert_valid("muxWelcome", await next_event(other, "welcome", ref=7))
        assert_valid("join", await next_event(conn, "join"))
        send = {"type": "send", "room": "mux-a", "text": "hello", "id": "mux-1"}
        assert_valid("muxSend", send)
        await conn.send(json.dumps(send))
        assert_valid("muxAck", await next_event(conn, "ack", id="mux-1"))
        message = await next_event(other, "message", id="mux-1")
        assert_valid("message", message)
        refused = {"type": "join", "room": "mux-c", "ref": "c1"}  # not in the token's rooms
        await conn.send(json.dumps(refused))
        error = await next_event(conn, "error", ref="c1")
        assert error["code"] == CloseCode.INVALID_TOKEN
        assert_valid("error", error)
        await conn.send(json.dumps({"type": "send", "room": "mux-b", "text": "not joined", "id": "mux-2"}))
        assert_valid("error", await next_event(conn, "error", id="mux-2"))
        leave = {"type": "leave", "room": "mux-a", "ref": "a2"}
        assert_valid("muxLeave", leave)
        await other.send(json.dumps(leave))
        assert_valid("left", await next_event(other, "left", ref="a2"))
        assert_valid("leave", await next_event(conn, "leave"))
        # the connection's token refreshed (issue 21): refreshed with the new exp; a bad one: error 4001
        claims = {"sub": "mux", "rooms": ["mux-a", "mux-b"], "exp": int(time.time()) + 120}
        refresh = {"type": "refresh", "token": jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")}
        assert_valid("refresh", refresh)
        await conn.send(json.dumps(refresh))
        refreshed = await next_event(conn, "refreshed")
        assert refreshed["exp"] == claims["exp"]
        assert_valid("refreshed", refreshed)
        await conn.send(json.dumps({"type": "refresh", "token": "not-a-token"}))
        bad = await next_event(conn, "error", code=CloseCode.INVALID_TOKEN)
        assert "room" not in bad and "id" not in bad
        assert_valid("error", bad)
        # a resume on /ws: since/epoch in the join, recovered in the welcome
        resume = {"type": "join", "room": "mux-a", "ref": "back", "since": 0, "epoch": welcome["epoch"]}
        assert_valid("muxJoin", resume)
        await other.send(json.dumps(resume))
        again = await next_event(other, "welcome", ref="back")
        assert "recovered" in again
        assert_valid("muxWelcome", again)

"""The server API through the real gateway with two rooms replicas and a real nats-server: rooms and
presence counted across replicas, a user disconnected everywhere (the Python client ends with its
error; a ``disconnected`` room event recorded before its ``left``), a room's history removed (a resume
gets ``recovered: false``), a broadcast stored once."""

import asyncio
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator

import httpx
import jwt
import nats
import pytest
import realtime_client
from devstack.stack import Stack
from realtime.close_codes import CloseCode

from tests.conftest import closed_with, make_stack, next_event, recv, ws
from tests.support.api import gateway_client

KEY = "server-api-key-61c0f3ab"
AUTH = {"Authorization": f"Bearer {KEY}"}
TOKEN_SECRET = "server-api-token-secret-0123456789-abcdef"


def token(user: str, name: str | None = None) -> str:
    claims = {"sub": user, "rooms": "*", "exp": int(time.time()) + 300}
    if name:
        claims["name"] = name
    return jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def api_stack() -> Iterator[Stack]:
    with make_stack("rooms=2", PUBLISH_API_KEYS=json.dumps([KEY]), TOKEN_SECRET=TOKEN_SECRET) as running:
        yield running


@pytest.fixture
async def api(api_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(api_stack) as client:
        yield client


def on(stack: Stack, replica: str, room: str, **query: str) -> str:
    query = {"format": "json", **query}
    return f"ws://127.0.0.1:{stack.processes[replica].port}/ws/{room}?{urllib.parse.urlencode(query)}"


async def test_rooms_and_presence_count_members_on_both_replicas(
    api_stack: Stack, api: httpx.AsyncClient
) -> None:
    async with (
        await ws(on(api_stack, "rooms-1", "sa-alpha", token=token("ann", "Ann"))) as ann,
        await ws(on(api_stack, "rooms-2", "sa-alpha", token=token("ben"))) as ben,
        await ws(on(api_stack, "rooms-2", "sa-beta", name="Guest")) as guest,
        await ws(on(api_stack, "rooms-1", "sa-gamma")) as other,
    ):
        ids = [(await next_event(c, "welcome"))["you"] for c in (ann, ben, guest, other)]
        listed = await api.get("/api/rooms", headers=AUTH)
        assert listed.status_code == 200, listed.text
        page = listed.json()
        assert page["complete"] is True
        counts = {r["room"]: r["members"] for r in page["rooms"]}
        assert {k: v for k, v in counts.items() if k.startswith("sa-")} == {
            "sa-alpha": 2,
            "sa-beta": 1,
            "sa-gamma": 1,
        }
        first = (await api.get("/api/rooms", params={"cursor": "sa-", "limit": 2}, headers=AUTH)).json()
        assert [r["room"] for r in first["rooms"]] == ["sa-alpha", "sa-beta"] and first["next"] == "sa-beta"
        second = (
            await api.get("/api/rooms", params={"cursor": first["next"], "limit": 2}, headers=AUTH)
        ).json()
        assert second["rooms"][0]["room"] == "sa-gamma"
        presence = (await api.get("/api/rooms/sa-alpha/presence", headers=AUTH)).json()
        assert presence["count"] == 2 and presence["complete"] is True
        assert sorted((m["member"], m["user"], m["name"]) for m in presence["members"]) == sorted(
            [(ids[0], "ann", "Ann"), (ids[1], "ben", None)]
        )
        assert (await api.get("/api/rooms/bad.room/presence", headers=AUTH)).status_code == 400
        assert (await api.get("/api/rooms")).status_code == 401


async def test_disconnect_closes_the_user_on_every_replica_and_ends_the_python_client(
    api_stack: Stack, api: httpx.AsyncClient
) -> None:
    async with (
        await ws(on(api_stack, "rooms-1", "sa-cut", token=token("zed"))) as one,
        await ws(on(api_stack, "rooms-2", "sa-cut-2", token=token("zed"))) as two,
        await ws(on(api_stack, "rooms-2", "sa-cut", token=token("amy"))) as bystander,
        realtime_client.Room(api_stack.gateway_url, "sa-cut", token=token("zed")) as client,
    ):
        for conn in (one, two, bystander):
            await next_event(conn, "welcome")
        started = time.monotonic()
        answer = await api.post("/api/users/zed/disconnect", headers=AUTH)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"user": "zed", "closed": 3, "complete": True}
        for conn in (one, two):
            assert await closed_with(conn) == (CloseCode.DISCONNECTED, "disconnected by the server")
        assert time.monotonic() - started < 2.0  # the answer came after every replica had closed them
        with pytest.raises(realtime_client.RoomClosed) as ended:
            async with asyncio.timeout(10):
                async for _ in client:
                    pass
        assert (ended.value.code, ended.value.reason) == (4010, "disconnected by the server")
        assert client.connects == 1  # final: it did not come back
        await bystander.send(json.dumps({"text": "still here", "id": "amy-1"}))
        assert (await next_event(bystander, "ack"))["id"] == "amy-1"
    custom = await api.post(
        "/api/users/nobody/disconnect", json={"code": 4099, "reason": "bye"}, headers=AUTH
    )
    assert custom.json()["closed"] == 0
    bad = await api.post("/api/users/zed/disconnect", json={"code": 1000}, headers=AUTH)
    assert bad.status_code == 422


async def room_events(stack: Stack, room: str, count: int, deadline: float) -> list[dict]:
    """The room's events on the ``ROOM_EVENTS`` stream, in order (an ephemeral consumer), up to ``count``."""
    nc = await nats.connect(stack.bus_url)
    try:
        sub = await nc.jetstream().pull_subscribe(f"rooms.events.{room}", stream="ROOM_EVENTS")
        events: list[dict] = []
        while len(events) < count and time.monotonic() < deadline:
            try:
                batch = await sub.fetch(count - len(events), timeout=0.5)
            except TimeoutError:
                continue
            for message in batch:
                events.append(json.loads(message.data))
                await message.ack()
        return events
    finally:
        await nc.close()


async def test_a_disconnect_records_a_disconnected_event_before_the_members_left(
    api_stack: Stack, api: httpx.AsyncClient
) -> None:
    room = "sa-cut-events"
    async with (
        await ws(on(api_stack, "rooms-1", room, token=token("kim", "Kim"))) as kim,
        await ws(on(api_stack, "rooms-2", room, token=token("lee"))) as lee,
    ):
        member = (await next_event(kim, "welcome"))["you"]
        await next_event(lee, "welcome")
        asked = {"code": 4099, "reason": "banned"}
        answer = await api.post("/api/users/kim/disconnect", json=asked, headers=AUTH)
        assert answer.json()["closed"] == 1
        assert await closed_with(kim) == (4099, "banned")
        # occupied, the two joined, kim's disconnected, kim's left (lee stays: no vacated yet)
        events = await room_events(api_stack, room, 5, time.monotonic() + 10)
    kims = [e for e in events if e.get("member") == member]
    assert [e["type"] for e in kims] == ["joined", "disconnected", "left"], events
    joined, disconnected, _ = kims
    assert {k: disconnected[k] for k in ("room", "user", "name", "code", "reason")} == {
        "room": room,
        "user": "kim",
        "name": "Kim",
        "code": 4099,
        "reason": "banned",
    }
    assert disconnected["replica"] == joined["replica"]
    assert {"id", "ts"} <= disconnected.keys()
    assert not any(e["type"] == "disconnected" and e.get("user") == "lee" for e in events)


async def test_removing_a_rooms_history_makes_a_resume_unrecovered(
    api_stack: Stack, api: httpx.AsyncClient
) -> None:
    async with await ws(on(api_stack, "rooms-1", "sa-forget")) as member:
        welcome = await next_event(member, "welcome")
        for i in range(3):
            await api.post("/api/rooms/sa-forget/messages", json={"text": f"m{i}"}, headers=AUTH)
        seen = [await next_event(member, "message") for _ in range(3)]
    removed = await api.delete("/api/rooms/sa-forget/messages", headers=AUTH)
    assert removed.status_code == 204
    page = (await api.get("/api/rooms/sa-forget/messages", headers=AUTH)).json()
    assert page["messages"] == []
    query = {"since": str(seen[1]["seq"]), "epoch": welcome["epoch"]}
    async with await ws(on(api_stack, "rooms-2", "sa-forget", **query)) as back:
        again = await next_event(back, "welcome")
        assert again["recovered"] is False


async def test_a_broadcast_is_stored_in_each_room_once(api_stack: Stack, api: httpx.AsyncClient) -> None:
    body = {"rooms": ["sa-b1", "sa-b2", "sa-b3"], "text": "maintenance at 6", "id": "bc-1", "name": "ops"}
    async with (
        await ws(on(api_stack, "rooms-1", "sa-b1")) as one,
        await ws(on(api_stack, "rooms-2", "sa-b2")) as two,
    ):
        await next_event(one, "welcome")
        await next_event(two, "welcome")
        first = await api.post("/api/broadcast", json=body, headers=AUTH)
        assert first.status_code == 200, first.text
        results = first.json()["results"]
        assert [(r["room"], r["duplicate"]) for r in results] == [(r, False) for r in body["rooms"]]
        for conn, result in ((one, results[0]), (two, results[1])):
            message = await next_event(conn, "message")
            assert (message["text"], message["seq"], message["name"]) == (
                "maintenance at 6",
                result["seq"],
                "ops",
            )
        again = (await api.post("/api/broadcast", json=body, headers=AUTH)).json()["results"]
        assert [(r["seq"], r["duplicate"]) for r in again] == [(r["seq"], True) for r in results]
        await one.send("after")
        assert json.loads(await recv(one))["text"] == "after"  # nothing stored twice before it
    too_many = {"rooms": [f"r{i}" for i in range(101)], "text": "x"}
    assert (await api.post("/api/broadcast", json=too_many, headers=AUTH)).status_code == 422
    bad_room = {"rooms": ["ok", "not.ok"], "text": "x"}
    assert (await api.post("/api/broadcast", json=bad_room, headers=AUTH)).status_code == 400


async def test_the_server_api_is_in_the_gateways_openapi(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    assert "get" in paths["/api/rooms"]
    assert "get" in paths["/api/rooms/{room_id}/presence"]
    assert "post" in paths["/api/users/{user}/disconnect"]
    assert "delete" in paths["/api/rooms/{room_id}/messages"]
    assert "post" in paths["/api/broadcast"]

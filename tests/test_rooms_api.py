"""The rooms HTTP API end to end: two rooms replicas as processes and a real nats-server.

The gateway does not forward ``/api/`` on this branch yet: these tests call the replicas directly (the
through-the-gateway tests come with the forwarding).
"""

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from devstack.stack import Stack
from rooms_service.guard import hash_password

from tests.conftest import DEADLINE, make_stack, next_event, recv, wait_until_async, ws
from tests.support.api import assert_refusals

KEY = "sys-key-3f9a2c71d4"
HASHED_KEY = "sys-hashed-key-8e01b6"  # configured only as a salted hash
WRONG_KEY = "sys-wrong-key-55c2e0"
SECRET_TEXT = "payload-secret-b7d41a"  # a message text that must reach no log
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def api_stack() -> Iterator[Stack]:
    keys = [KEY, hash_password(HASHED_KEY, iterations=10_000)]
    with make_stack("rooms=2", PUBLISH_API_KEYS=json.dumps(keys), ROOM_STORE_TIMEOUT="1") as running:
        yield running


def replica_http(stack: Stack, replica: str) -> str:
    return f"http://127.0.0.1:{stack.processes[replica].port}"


def replica_ws(stack: Stack, replica: str) -> str:
    return f"ws://127.0.0.1:{stack.processes[replica].port}"


@pytest.fixture
async def replicas(api_stack: Stack) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=replica_http(api_stack, "rooms-1"), timeout=DEADLINE) as one,
        httpx.AsyncClient(base_url=replica_http(api_stack, "rooms-2"), timeout=DEADLINE) as two,
    ):
        yield one, two


async def test_a_publish_to_one_replica_reaches_members_on_the_other_and_its_history(
    api_stack: Stack, replicas: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    one, two = replicas
    base = replica_ws(api_stack, "rooms-2")
    async with await ws(f"{base}/ws/news?format=json") as member, await ws(f"{base}/ws/news") as plain:
        welcome = json.loads(await recv(member))
        assert welcome["type"] == "welcome"
        body = {"text": "order 1234 shipped", "name": "shop", "id": "order-1234"}
        answer = await one.post("/api/rooms/news/messages", json=body, headers=AUTH)
        assert answer.status_code == 201, answer.text
        seq = answer.json()["seq"]
        assert answer.json() == {"seq": seq, "duplicate": False} and seq > welcome["seq"]
        event = await next_event(member, "message")
        assert (event["sender"], event["name"], event["text"], event["seq"]) == (
            "api",
            "shop",
            body["text"],
            seq,
        )
        assert event["id"] == "order-1234" and event["origin"] == "rooms-1" and "user" not in event
        assert await recv(plain) == body["text"]
    history = await two.get("/api/rooms/news/messages", params={"since": welcome["seq"]}, headers=AUTH)
    assert history.status_code == 200
    page = history.json()
    assert (page["room"], page["epoch"], page["seq"]) == ("news", welcome["epoch"], seq)
    assert page["messages"] == [event]


async def test_the_same_id_on_both_replicas_is_stored_once(
    api_stack: Stack, replicas: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    one, two = replicas
    body = {"text": "exactly once", "id": "idem-1"}
    first = await one.post("/api/rooms/idem/messages", json=body, headers=AUTH)
    again = await two.post("/api/rooms/idem/messages", json=body, headers=AUTH)
    assert first.status_code == again.status_code == 201
    assert again.json() == {"seq": first.json()["seq"], "duplicate": True}
    page = (await two.get("/api/rooms/idem/messages", headers=AUTH)).json()
    assert [(m["text"], m["seq"]) for m in page["messages"]] == [("exactly once", first.json()["seq"])]
    async with await ws(f"{replica_ws(api_stack, 'rooms-1')}/ws/idem?format=json&history=10") as member:
        assert json.loads(await recv(member))["type"] == "welcome"
        assert (await next_event(member, "message"))["seq"] == first.json()["seq"]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(member.recv(), 0.3)  # and nothing else: stored once


async def test_a_hashed_key_works_and_refusals_have_their_codes(
    replicas: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    one, two = replicas
    hashed = {"Authorization": f"Bearer {HASHED_KEY}"}
    assert (
        await two.post("/api/rooms/codes/messages", json={"text": "h"}, headers=hashed)
    ).status_code == 201
    assert (await two.get("/api/rooms/codes/messages", headers=hashed)).status_code == 200
    await assert_refusals(one, KEY, WRONG_KEY)
    schema = (await one.get("/openapi.json")).json()
    assert "/api/rooms/{room_id}/messages" in schema["paths"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_keys_and_texts_reach_no_log(
    api_stack: Stack, replicas: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    one, two = replicas
    assert (
        await one.post("/api/rooms/quiet/messages", json={"text": SECRET_TEXT}, headers=AUTH)
    ).status_code == 201
    hashed = {"Authorization": f"Bearer {HASHED_KEY}"}
    assert (
        await two.post("/api/rooms/quiet/messages", json={"text": SECRET_TEXT}, headers=hashed)
    ).status_code == 201
    assert (await two.get("/api/rooms/quiet/messages", headers=AUTH)).status_code == 200
    wrong = {"Authorization": f"Bearer {WRONG_KEY}"}
    assert (
        await two.post("/api/rooms/quiet/messages", json={"text": SECRET_TEXT}, headers=wrong)
    ).status_code == 401
    await wait_until_async(
        lambda: (
            "GET /api/rooms/quiet/messages" in api_stack.log_tail("rooms-2", 200)
            and "api: refused 127.0.0.1 (wrong key)" in api_stack.log_tail("rooms-2", 200)
        ),
        "rooms-2 to log the requests",
    )
    logs = api_stack.all_logs()
    assert "POST /api/rooms/quiet/messages" in logs
    for secret in (KEY, HASHED_KEY, WRONG_KEY, SECRET_TEXT):
        assert secret not in logs


async def test_nats_away_past_the_store_timeout_is_503_then_publishing_works_again(
    api_stack: Stack, replicas: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    """Last in this module: it stops NATS (and starts it again)."""
    one, _ = replicas
    await asyncio.to_thread(api_stack.stop_process, "nats", signal.SIGKILL)
    try:
        answer = await one.post("/api/rooms/outage/messages", json={"text": "x", "id": "o-1"}, headers=AUTH)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
        assert (await one.get("/api/rooms/outage/messages", headers=AUTH)).status_code == 503
    finally:
        await asyncio.to_thread(api_stack.start_process, "nats")
        await asyncio.to_thread(api_stack.wait_ready, 30.0, ["nats", "rooms-1"])
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while True:  # the replica reconnects on its own; then the same id is stored (once)
        answer = await one.post("/api/rooms/outage/messages", json={"text": "x", "id": "o-1"}, headers=AUTH)
        if answer.status_code == 201 or loop.time() > end:
            break
    assert answer.status_code == 201, answer.text

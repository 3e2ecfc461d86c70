"""The publish and history API through the real gateway: two rooms replicas, a real nats-server.

What an app's backend does: ``POST``/``GET`` on the gateway's ``/api/...``, balanced over the replicas,
while members on both replicas listen. The refusals keep their status and headers through the gateway,
and neither a key nor a text reaches any log (the gateway's included).
"""

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from devstack.stack import Stack

from tests.conftest import make_stack, next_event, recv, wait_until_async, ws
from tests.support.api import assert_refusals, gateway_client

KEY = "gw-key-0c5d8e2a91"
RATE_KEY = "gw-rate-key-77aa01"  # its own bucket: the rate-limit test empties it
WRONG_KEY = "gw-wrong-key-4411bd"
SECRET_TEXT = "gw-payload-secret-93e1"
AUTH = {"Authorization": f"Bearer {KEY}"}
BURST = 20


@pytest.fixture(scope="module")
def gateway_api_stack() -> Iterator[Stack]:
    env = {
        "PUBLISH_API_KEYS": json.dumps([KEY, RATE_KEY]),
        "PUBLISH_BURST": str(BURST),
        "PUBLISH_RATE": "1",
        "AUTH_MAX_FAILURES": "3",
    }
    with make_stack("rooms=2", **env) as running:
        yield running


@pytest.fixture
async def api(gateway_api_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(gateway_api_stack) as client:
        yield client


def replica_ws(stack: Stack, replica: str) -> str:
    return f"ws://127.0.0.1:{stack.processes[replica].port}"


async def test_publishes_through_the_gateway_reach_members_on_both_replicas_in_one_order(
    gateway_api_stack: Stack, api: httpx.AsyncClient
) -> None:
    async with (
        await ws(f"{replica_ws(gateway_api_stack, 'rooms-1')}/ws/orders?format=json") as one,
        await ws(f"{replica_ws(gateway_api_stack, 'rooms-2')}/ws/orders?format=json") as two,
    ):
        welcome = json.loads(await recv(one))
        assert json.loads(await recv(two))["type"] == "welcome"
        sent = []
        for i in range(6):  # round robin: both replicas store some of them
            answer = await api.post(
                "/api/rooms/orders/messages", json={"text": f"order {i}", "name": "shop"}, headers=AUTH
            )
            assert answer.status_code == 201, answer.text
            sent.append(answer.json()["seq"])
        for member in (one, two):
            got = [await next_event(member, "message") for _ in sent]
            assert [(m["seq"], m["text"], m["name"], m["sender"]) for m in got] == [
                (seq, f"order {i}", "shop", "api") for i, seq in enumerate(sent)
            ]
            assert {m["origin"] for m in got} == {"rooms-1", "rooms-2"}  # the gateway balanced them
    page = await api.get("/api/rooms/orders/messages", params={"since": welcome["seq"]}, headers=AUTH)
    assert page.status_code == 200
    assert [m["seq"] for m in page.json()["messages"]] == sent
    assert page.json()["epoch"] == welcome["epoch"]
    limited = await api.get("/api/rooms/orders/messages", params={"since": sent[1], "limit": 2}, headers=AUTH)
    assert [m["seq"] for m in limited.json()["messages"]] == sent[2:4]


async def test_the_same_id_through_the_gateway_is_stored_once(api: httpx.AsyncClient) -> None:
    body = {"text": "once only", "id": "gw-idem-1"}
    answers = [await api.post("/api/rooms/gw-idem/messages", json=body, headers=AUTH) for _ in range(4)]
    assert {a.status_code for a in answers} == {201}
    seqs = {a.json()["seq"] for a in answers}
    assert len(seqs) == 1
    assert [a.json()["duplicate"] for a in answers] == [False, True, True, True]
    page = (await api.get("/api/rooms/gw-idem/messages", headers=AUTH)).json()
    assert [m["seq"] for m in page["messages"]] == list(seqs)


async def test_refusals_keep_their_status_and_headers_through_the_gateway(api: httpx.AsyncClient) -> None:
    await assert_refusals(api, KEY, WRONG_KEY)


async def test_over_the_rate_a_key_gets_429_and_other_keys_do_not_notice(api: httpx.AsyncClient) -> None:
    rate = {"Authorization": f"Bearer {RATE_KEY}"}
    statuses = []
    for i in range(2 * BURST + 10):  # two replicas, a bucket each
        answer = await api.post("/api/rooms/busy/messages", json={"text": f"m{i}"}, headers=rate)
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            assert answer.headers["retry-after"] == "1"
    assert statuses[:BURST] == [201] * BURST and 429 in statuses
    assert set(statuses) == {201, 429}
    other = await api.post("/api/rooms/busy/messages", json={"text": "fine"}, headers=AUTH)
    assert other.status_code == 201


async def test_the_gateway_documents_the_api_with_its_bearer_scheme(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/openapi.json")).json()
    operations = schema["paths"]["/api/rooms/{room_id}/messages"]
    assert {"get", "post"} <= set(operations)
    schemes = schema["components"]["securitySchemes"]
    assert any(s.get("type") == "http" and s.get("scheme") == "bearer" for s in schemes.values())
    assert all(operations[m].get("security") for m in ("get", "post"))
    docs = await api.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_keys_and_texts_reach_no_log_of_the_gateway_or_the_replicas(
    gateway_api_stack: Stack, api: httpx.AsyncClient
) -> None:
    await api.post("/api/rooms/quiet/messages", json={"text": SECRET_TEXT}, headers=AUTH)
    await api.get("/api/rooms/quiet/messages?marker=gw-quiet", headers=AUTH)
    await api.post(
        "/api/rooms/quiet/messages",
        json={"text": SECRET_TEXT},
        headers={"Authorization": f"Bearer {WRONG_KEY}"},
    )
    await wait_until_async(
        lambda: gateway_api_stack.all_logs().count("marker=gw-quiet") >= 2,  # the gateway's and a replica's
        "the requests to be logged",
    )
    logs = gateway_api_stack.all_logs()
    for secret in (KEY, RATE_KEY, WRONG_KEY, SECRET_TEXT):
        assert secret not in logs


async def test_wrong_keys_from_one_address_are_throttled_with_429(api: httpx.AsyncClient) -> None:
    """Last: it leaves this client's address throttled for the failure window."""
    wrong = {"Authorization": f"Bearer {WRONG_KEY}"}
    statuses = []
    for _ in range(12):  # AUTH_MAX_FAILURES=3 per replica, two replicas
        statuses.append((await api.get("/api/rooms/codes/messages", headers=wrong)).status_code)
    assert statuses[0] == 401 and statuses[-1] == 429
    throttled = await api.get("/api/rooms/codes/messages", headers=AUTH)  # even the right key now waits
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0

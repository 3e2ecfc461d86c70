"""Plain HTTP under /api/ through the real gateway to the rooms replicas (own processes, real nats-server)."""

import itertools
import signal
import uuid
from collections.abc import Iterator

import pytest
from devstack.stack import Stack

from tests.conftest import make_stack, wait_until_async
from tests.support.api import gateway_client

SECRET = "Bearer never-logged-9c2e"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """Two rooms replicas behind the gateway over Unix sockets, as ``make run`` can start them."""
    with make_stack("rooms=2", unix_sockets=True) as running:
        yield running


def seen_by(stack: Stack, marker: str) -> list[str]:
    """The rooms replicas whose access log has a request carrying ``marker``."""
    return [p.name for p in stack.replicas("rooms") if marker in p.log_path.read_text(errors="replace")]


async def test_api_requests_reach_both_rooms_replicas_in_turn(stack: Stack) -> None:
    markers = [f"turn-{uuid.uuid4().hex[:8]}-{i}" for i in range(4)]
    async with gateway_client(stack) as http:
        for marker in markers:
            response = await http.get(f"/api/nonexistent?probe={marker}", headers={"Authorization": SECRET})
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/json"
            assert response.json() == {"detail": "Not Found"}  # the rooms service's own 404
    await wait_until_async(
        lambda: all(seen_by(stack, m) for m in markers), "each request in one replica's access log"
    )
    where = [seen_by(stack, m) for m in markers]
    assert all(len(names) == 1 for names in where), where
    assert {names[0] for names in where} == {"rooms-1", "rooms-2"}, where
    assert all(a != b for a, b in itertools.pairwise(where)), where  # in turn
    assert SECRET.split()[1] not in stack.all_logs()


async def test_rooms_sees_the_client_address_and_the_body_bound_holds(stack: Stack) -> None:
    marker = f"who-{uuid.uuid4().hex[:8]}"
    async with gateway_client(stack) as http:
        await http.get(f"/api/nonexistent?probe={marker}", headers={"X-Forwarded-For": "6.6.6.6"})
        big = await http.post("/api/rooms/lobby/messages", content=b"x" * (1024 * 1024 + 1))
        assert big.status_code == 413
        assert big.json() == {"detail": "request body too large"}
    await wait_until_async(lambda: bool(seen_by(stack, marker)), "the request in a replica's access log")
    (name,) = seen_by(stack, marker)
    line = next(x for x in stack.processes[name].log_path.read_text().splitlines() if marker in x)
    assert "127.0.0.1" in line and "6.6.6.6" not in line  # a client cannot claim another address


async def test_the_gateways_openapi_includes_the_rooms_api_and_docs_answer(stack: Stack) -> None:
    async with gateway_client(stack) as http:
        response = await http.get("/openapi.json")
        docs = await http.get("/docs")
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "gateway"
    assert "forwarded to rooms" in schema["info"]["description"]  # a rooms replica answered
    assert all(path.startswith("/api/") for path in schema.get("paths", {}))
    assert docs.status_code == 200 and "/openapi.json" in docs.text


async def test_a_stopped_replica_is_skipped_and_none_left_is_503() -> None:
    with make_stack("rooms=2") as stack:  # TCP upstreams this time
        stack.stop_process("rooms-1", signal.SIGKILL)
        markers = [f"left-{uuid.uuid4().hex[:8]}-{i}" for i in range(4)]
        async with gateway_client(stack) as http:
            for marker in markers:
                assert (await http.get(f"/api/nonexistent?probe={marker}")).status_code == 404
            await wait_until_async(
                lambda: all(seen_by(stack, m) == ["rooms-2"] for m in markers), "rooms-2 to answer every one"
            )
            stack.stop_process("rooms-2", signal.SIGKILL)
            response = await http.post("/api/rooms/lobby/messages", json={"text": "hi"})
            assert response.status_code == 503
            assert response.headers["retry-after"] == "5"
            assert response.json() == {"detail": "no upstream available"}
            schema = (await http.get("/openapi.json")).json()  # cached from before, or the note
            assert schema["info"]["title"] == "gateway"

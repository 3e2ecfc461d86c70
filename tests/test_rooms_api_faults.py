"""The publish API under faults, through the real gateway: kill -9 of a rooms replica, of nats-server.

A backend publishes through the gateway (each publish sent again with the same id until it is answered
201), a member listens with the Python client (which resumes after any close); every publish answered
201 must reach the member exactly once, in seq order.
"""

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import pytest
from devstack.stack import Stack
from realtime.tasks import cancel_and_wait
from realtime_client import Backoff, Room

from tests.conftest import DEADLINE, make_stack, wait_until_async
from tests.support.api import gateway_client

KEY = "faults-key-51c0e9a7"
AUTH = {"Authorization": f"Bearer {KEY}"}
PUBLISHES, FAULT_AT = 60, 20
GIVE_UP = 3 * DEADLINE  # seconds one publish may keep being refused (NATS restarting, store timeout)


@pytest.fixture(scope="module")
def faults_stack() -> Iterator[Stack]:
    with make_stack("rooms=2", PUBLISH_API_KEYS=json.dumps([KEY]), ROOM_STORE_TIMEOUT="2") as running:
        yield running


@pytest.fixture
async def api(faults_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(faults_stack) as client:
        yield client


async def publish_and_listen(
    stack: Stack, api: httpx.AsyncClient, room: str, fault: Callable[[], Awaitable[None]]
) -> dict[int, int]:
    """Publishes ``PUBLISHES`` messages, the fault running alongside from the ``FAULT_AT``-th on;
    returns how often a publish was refused (by status; 0: the answer was cut off)."""
    received: list[tuple[int, str]] = []
    acked: dict[str, int] = {}
    refused: dict[int, int] = {}

    async def listen(member: Room) -> None:
        async for message in member:
            received.append((message.seq, message.text))

    async def publish(i: int) -> None:
        body = {"text": f"{room} {i}", "id": f"{room}-{i}"}
        loop = asyncio.get_running_loop()
        end = loop.time() + GIVE_UP
        while True:
            try:
                answer = await api.post(f"/api/rooms/{room}/messages", json=body, headers=AUTH)
            except httpx.TransportError:  # the gateway cut the answer off (its replica died mid-answer)
                answer = None
            if answer is not None and answer.status_code == 201:
                acked[body["text"]] = answer.json()["seq"]
                return
            status = answer.status_code if answer is not None else 0
            assert status in (0, 502, 503, 504), answer.text if answer is not None else ""
            refused[status] = refused.get(status, 0) + 1
            assert loop.time() < end, f"publish {i} not stored within {GIVE_UP} s"
            await asyncio.sleep(0.05)  # the backend's own retry pause

    async with Room(stack.gateway_url, room, backoff=Backoff(first=0.1, limit=1.0), open_timeout=5) as member:
        listener = asyncio.create_task(listen(member))
        faulting = None
        for i in range(PUBLISHES):
            if i == FAULT_AT:
                faulting = asyncio.create_task(fault())  # in this thread: see the tests below
            await publish(i)
        await faulting
        await wait_until_async(lambda: len(received) >= len(acked), "every acked publish to arrive")
        await cancel_and_wait(listener)
    assert len(acked) == PUBLISHES
    assert received == sorted((seq, text) for text, seq in acked.items()), refused  # once each, in order
    return refused


async def test_acknowledged_publishes_arrive_once_in_order_across_a_replica_kill(
    faults_stack: Stack, api: httpx.AsyncClient
) -> None:
    # Processes are stopped and started in the main thread: a restarted child dies with the thread
    # that started it (PR_SET_PDEATHSIG).
    async def kill() -> None:
        faults_stack.stop_process("rooms-1", signal.SIGKILL)

    try:
        await publish_and_listen(faults_stack, api, "crash", kill)
    finally:
        faults_stack.start_process("rooms-1")
        faults_stack.wait_ready(names=["rooms-1"])


async def test_acknowledged_publishes_arrive_once_in_order_across_a_nats_kill(
    faults_stack: Stack, api: httpx.AsyncClient
) -> None:
    """NATS gets kill -9, stays away longer than ROOM_STORE_TIMEOUT (2 s) and comes back on its own
    store: publishes meanwhile get 503 and are sent again with the same id."""

    async def kill_and_restart() -> None:
        faults_stack.stop_process("nats", signal.SIGKILL)
        await asyncio.sleep(3.0)  # the outage itself (longer than the store timeout), not a wait
        faults_stack.start_process("nats")  # same port, same store

    try:
        refused = await publish_and_listen(faults_stack, api, "outage", kill_and_restart)
        assert refused.get(503), refused  # the outage was seen: publishes were refused, then resent
    finally:
        faults_stack.wait_ready(names=["nats", "rooms-1", "rooms-2"])

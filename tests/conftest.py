"""Whole-system fixtures: the real stack as separate processes on free loopback ports."""

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from devstack.stack import Stack, StackConfig
from realtime import testing as realtime_testing
from websockets.asyncio.client import ClientConnection, connect

HERE = Path(__file__).parent
DEADLINE = 10.0  # seconds any single expected event may take before the test fails


# The longest modules, longest first (minutes each, measured 2026-12-02). `make test` runs the modules on two
# workers (pytest-xdist, --dist loadfile: a module and its stack stay on one worker); a worker takes the next
# module in collection order when it is free, so starting with the longest keeps the two finishing together.
LONGEST_FIRST = (
    "test_nats_cluster_faults.py",
    "test_room_webhooks.py",
    "test_gateway_system.py",
    "test_rooms_delivery.py",
    "test_readme_commands.py",
    "test_web_browser.py",
    "test_rooms_system.py",
    "test_launcher.py",
    "test_deploy_image_build.py",
    "test_operator_ports.py",
    "test_supervision.py",
    "test_stats_system.py",
    "test_room_events.py",
    "test_metrics.py",
    "test_nats_cluster.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module keeps its order


def make_stack(
    scale: str = "", extra: dict[str, tuple[str, str]] | None = None, unix_sockets: bool = False, **env: str
) -> Stack:
    config = StackConfig.for_tests(scale, **env)
    config.extra_services = extra or {}
    config.unix_sockets = unix_sockets
    # the test-only upstreams live in tests/support
    config.env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])
    return Stack(config)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """One stack per test module: NATS, one replica of each service, the gateway, the closer upstream."""
    with make_stack(extra={"closer": ("tests.support.closer", "/closer")}) as running:
        yield running


async def ws(url: str, **kwargs: object) -> ClientConnection:
    """Open a client WebSocket with a deadline; compression off, as the services run."""
    return await asyncio.wait_for(connect(url, compression=None, open_timeout=DEADLINE, **kwargs), DEADLINE)


async def recv(conn: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(conn.recv(), DEADLINE)


async def next_event(conn: ClientConnection, kind: str, **fields: object) -> dict:
    """The next JSON event of this type (with these field values) a ``format=json`` member receives;
    anything else on the way (presence, other members' joins) is skipped."""
    while True:
        event = json.loads(await recv(conn))
        if event["type"] == kind and all(event.get(k) == v for k, v in fields.items()):
            return event


async def closed_with(conn: ClientConnection) -> tuple[int, str]:
    """Wait for the server's close frame; returns (code, reason) as the client received them."""
    return await realtime_testing.closed_with(conn, DEADLINE)


def wait_until(predicate: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    """For synchronous tests. In an async test it would stall the event loop (and every client and server
    in it) while it polls, so there it refuses: use ``await wait_until_async(...)``."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(f"wait_until({what!r}) inside an event loop: use await wait_until_async(...)")
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


async def wait_until_async(predicate: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    """For async tests: polls between awaits, so the loop keeps serving while it waits."""
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def python() -> str:
    return sys.executable

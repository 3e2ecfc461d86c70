"""Services ride out NATS: kill -9 nats-server with clients connected to every service through the
gateway; every service keeps running; NATS comes back and room messages flow again; then, with NATS
down again, SIGTERM each service: each exits 0 within SHUTDOWN_TIMEOUT (plus a margin) and no log holds
a traceback. Only PIDs this test started (through its own Stack) are signalled."""

import asyncio
import contextlib
import json
import signal
import time
import urllib.error
import urllib.request

import pytest
from devstack.stack import Stack
from websockets.asyncio.client import ClientConnection

from tests.conftest import DEADLINE, make_stack, recv, ws

pytestmark = pytest.mark.timeout(240)

SHUTDOWN_TIMEOUT = 3.0
MARGIN = 4.0  # seconds beyond SHUTDOWN_TIMEOUT a stop may take on a busy 2-core machine
COMEBACK = 60.0  # seconds the services may take to be ready again once NATS is back
SERVICES = ("echo-1", "rooms-1", "stats-1")


def bus_ready(url: str) -> bool | None:
    """The bus check of a service's /readyz (None: it did not answer)."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except OSError:
        return None
    return bool(json.loads(body)["checks"].get("bus"))


async def all_buses(stack: Stack, ready: bool) -> bool:
    found = await asyncio.gather(
        *(asyncio.to_thread(bus_ready, stack.processes[n].health_url) for n in SERVICES)
    )
    return all(f is ready for f in found)


async def wait_buses(stack: Stack, ready: bool, deadline: float) -> None:
    end = time.monotonic() + deadline
    while not await all_buses(stack, ready):
        if time.monotonic() > end:
            states = [await asyncio.to_thread(bus_ready, stack.processes[n].health_url) for n in SERVICES]
            raise AssertionError(f"services' bus not {'up' if ready else 'down'}: {states}")
        await asyncio.sleep(0.1)


async def say_and_hear(sender: ClientConnection, listener: ClientConnection, text: str) -> None:
    """Send until stored (a message sent while a replica is still catching up may be refused 1013 at
    worst; here it must simply arrive), then both hear it."""
    await sender.send(text)
    for conn in (sender, listener):
        async with asyncio.timeout(DEADLINE * 2):
            while await recv(conn) != text:
                pass


async def test_services_ride_out_nats_and_stop_cleanly_while_it_is_down() -> None:
    with make_stack(SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT)) as stack:
        url = stack.gateway_url
        echo = await ws(f"{url}/echo")
        alice = await ws(f"{url}/ws/rideout")
        bob = await ws(f"{url}/ws/rideout")
        pulses = await ws(f"{url}/stats")
        clients = [echo, alice, bob, pulses]
        try:
            await say_and_hear(alice, bob, "before")

            # NATS dies: every service notices, none exits.
            await asyncio.to_thread(stack.stop_process, "nats", signal.SIGKILL)
            await wait_buses(stack, False, DEADLINE)
            for name in (*SERVICES, "gateway"):
                assert stack.processes[name].running, f"{name} exited:\n{stack.log_tail(name)}"
            await echo.send("still here")
            assert await recv(echo) == "Echo: still here"

            # NATS comes back (same store): services ready again, room messages flow.
            stack.start_process("nats")
            await asyncio.to_thread(stack.wait_ready, COMEBACK, ["nats"])
            await wait_buses(stack, True, COMEBACK)
            await asyncio.to_thread(stack.wait_ready, COMEBACK, list(SERVICES))
            carol = await ws(f"{url}/ws/rideout")
            clients.append(carol)
            await say_and_hear(carol, bob, "after")
            await echo.send("again")
            assert await recv(echo) == "Echo: again"

            # NATS dies again; each service is stopped while it is down.
            await asyncio.to_thread(stack.stop_process, "nats", signal.SIGKILL)
            await wait_buses(stack, False, DEADLINE)
            for name in (*SERVICES, "gateway"):
                started = time.monotonic()
                await asyncio.to_thread(stack.stop_process, name, signal.SIGTERM, SHUTDOWN_TIMEOUT + MARGIN)
                took = time.monotonic() - started
                code = stack.processes[name].popen.returncode  # type: ignore[union-attr]
                assert code == 0, f"{name} exited {code}:\n{stack.log_tail(name)}"
                assert took < SHUTDOWN_TIMEOUT + MARGIN, f"{name} took {took:.1f}s to stop"
        finally:
            for conn in clients:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2)
        for name in (*SERVICES, "gateway"):
            log = stack.processes[name].log_path.read_text(errors="replace")
            assert "Traceback" not in log, f"{name} logged a traceback:\n{stack.log_tail(name, 80)}"

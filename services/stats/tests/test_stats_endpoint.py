"""The /stats endpoint under the platform's real uvicorn protocol in this process (memory bus)."""

import asyncio
import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from realtime.testing import free_port, serving
from stats_service.app import create_app
from stats_service.settings import StatsSettings
from websockets.asyncio.client import ClientConnection, connect

DEADLINE = 5.0


@contextlib.asynccontextmanager
async def served(interval: float) -> AsyncIterator[tuple[FastAPI, str]]:
    settings = StatsSettings(
        instance_id="stats-1",
        bus_url="memory://",
        pulse_interval=interval,
        pulse_host="h",
        port=free_port(),
        access_log=False,
    )
    app = create_app(settings)
    async with serving(app, settings, deadline=DEADLINE) as running:
        yield app, running.url


async def recv_json(ws: ClientConnection) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(DEADLINE):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_clients_get_pulses_in_tick_order_listing_this_instance_and_its_clients() -> None:
    def me(pulse: dict) -> list[dict]:
        return [i for i in pulse["instances"] if i["instance"] == "stats-1" and i["connections"] == 1]

    pulses: list[dict] = []
    async with served(0.2) as (_, url), connect(f"{url}/stats", compression=None) as ws:
        while not (pulses and me(pulses[-1])):
            if len(pulses) > 20:
                raise AssertionError("no pulse listed this instance with its one client")
            pulses.append(await recv_json(ws))
    ticks = [p["tick"] for p in pulses]
    assert ticks == sorted(set(ticks)), "a tick doubled or out of order"
    for pulse in pulses:
        assert {"cpu", "tick", "ts", "time", "instances", "hosts", "services"} <= set(pulse)
        assert 0 <= pulse["cpu"] <= 100
    (entry,) = me(pulses[-1])
    assert entry["service"] == "stats"
    assert entry["memory"] > 0


async def test_a_new_client_gets_the_latest_pulse_before_the_next_tick() -> None:
    async with served(3600.0) as (app, url):  # no tick comes during this test
        app.state.hub.publish(7, '{"tick":7}')
        async with connect(f"{url}/stats", compression=None) as ws:
            assert await asyncio.wait_for(ws.recv(), DEADLINE) == '{"tick":7}'


async def test_what_a_client_sends_is_ignored_and_pulses_keep_coming() -> None:
    async with served(0.2) as (_, url), connect(f"{url}/stats", compression=None) as ws:
        first = await recv_json(ws)
        await ws.send("hello?")
        await ws.send(b"\x00\x01")
        second = await recv_json(ws)
        assert second["tick"] > first["tick"]


async def test_a_client_that_disconnects_leaves_the_hub_at_once() -> None:
    async with served(3600.0) as (app, url):
        hub = app.state.hub
        async with connect(f"{url}/stats", compression=None):
            await wait_for(lambda: len(hub.clients) == 1, "the client to join")
        await wait_for(lambda: not hub.clients, "the client to leave")


async def test_readiness_includes_the_pulse_task() -> None:
    async with served(3600.0) as (_, url):
        http = url.replace("ws://", "http://")
        response = await asyncio.to_thread(urllib.request.urlopen, f"{http}/readyz", timeout=DEADLINE)
        with response:
            assert response.status == 200
            assert json.loads(response.read())["checks"] == {"bus": True, "pulse": True}

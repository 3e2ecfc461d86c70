"""The /stats endpoint in one process (memory bus, Starlette's TestClient: the mailbox fallback)."""

import json
import time
from collections.abc import Callable

from fastapi.testclient import TestClient
from stats_service.app import create_app
from stats_service.settings import StatsSettings

DEADLINE = 5.0


def settings(interval: float) -> StatsSettings:
    return StatsSettings(instance_id="stats-1", bus_url="memory://", pulse_interval=interval, pulse_host="h")


def test_clients_get_pulses_in_tick_order_listing_this_instance_and_its_clients() -> None:
    def me(pulse: dict) -> list[dict]:
        return [i for i in pulse["instances"] if i["instance"] == "stats-1" and i["connections"] == 1]

    pulses: list[dict] = []
    with TestClient(create_app(settings(0.2))) as client, client.websocket_connect("/stats") as ws:
        while not (pulses and me(pulses[-1])):
            if len(pulses) > 20:
                raise AssertionError("no pulse listed this instance with its one client")
            pulses.append(json.loads(ws.receive_text()))
    ticks = [p["tick"] for p in pulses]
    assert ticks == sorted(set(ticks)), "a tick doubled or out of order"
    for pulse in pulses:
        assert {"cpu", "tick", "ts", "time", "instances", "hosts", "services"} <= set(pulse)
        assert 0 <= pulse["cpu"] <= 100
    (entry,) = me(pulses[-1])
    assert entry["service"] == "stats"
    assert entry["memory"] > 0


def test_a_new_client_gets_the_latest_pulse_before_the_next_tick() -> None:
    app = create_app(settings(3600.0))  # no tick comes during this test
    with TestClient(app) as client:
        app.state.hub.publish(7, '{"tick":7}')
        with client.websocket_connect("/stats") as ws:
            assert ws.receive_text() == '{"tick":7}'


def test_what_a_client_sends_is_ignored_and_pulses_keep_coming() -> None:
    with TestClient(create_app(settings(0.2))) as client, client.websocket_connect("/stats") as ws:
        first = json.loads(ws.receive_text())
        ws.send_text("hello?")
        ws.send_bytes(b"\x00\x01")
        second = json.loads(ws.receive_text())
        assert second["tick"] > first["tick"]


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_a_client_that_disconnects_leaves_the_hub_at_once() -> None:
    app = create_app(settings(3600.0))
    hub = app.state.hub
    with TestClient(app) as client:
        with client.websocket_connect("/stats"):
            wait_for(lambda: len(hub.clients) == 1, "the client to join")
        wait_for(lambda: not hub.clients, "the client to leave")


def test_readiness_includes_the_pulse_task() -> None:
    with TestClient(create_app(settings(3600.0))) as client:
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json()["checks"] == {"bus": True, "pulse": True}

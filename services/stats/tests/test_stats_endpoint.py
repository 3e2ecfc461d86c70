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


def test_clients_get_one_pulse_per_tick_listing_this_instance_and_its_clients() -> None:
    with TestClient(create_app(settings(0.1))) as client, client.websocket_connect("/stats") as ws:
        pulses = [json.loads(ws.receive_text()) for _ in range(3)]
    ticks = [p["tick"] for p in pulses]
    assert ticks == list(range(ticks[0], ticks[0] + 3))
    for pulse in pulses:
        assert {"cpu", "tick", "ts", "time", "instances", "hosts", "services"} <= set(pulse)
        assert 0 <= pulse["cpu"] <= 100
    me = [i for i in pulses[-1]["instances"] if i["instance"] == "stats-1"]
    assert len(me) == 1
    assert me[0]["service"] == "stats"
    assert me[0]["connections"] == 1
    assert me[0]["memory"] > 0


def test_a_new_client_gets_the_latest_pulse_before_the_next_tick() -> None:
    app = create_app(settings(3600.0))  # no tick comes during this test
    with TestClient(app) as client:
        app.state.hub.publish(7, '{"tick":7}')
        with client.websocket_connect("/stats") as ws:
            assert ws.receive_text() == '{"tick":7}'


def test_what_a_client_sends_is_ignored_and_pulses_keep_coming() -> None:
    with TestClient(create_app(settings(0.1))) as client, client.websocket_connect("/stats") as ws:
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

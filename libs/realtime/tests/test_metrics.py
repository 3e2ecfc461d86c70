"""The session metrics of every service: gauge in and out, opened/closed by route pattern and close code."""

import pytest
from fastapi import WebSocket, WebSocketDisconnect
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from realtime import metrics
from realtime.app import create_service_app
from realtime.close_codes import CloseCode
from realtime.settings import ServiceSettings


def metrics_url(client: TestClient) -> str:
    """``/metrics`` on the app's internal port (the public one answers 404: realtime.operator)."""
    return f"http://testserver:{client.app.state.settings.internal_port}/metrics"


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get(metrics_url(client))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def app_with_rooms(service: str, **options: object):
    app = create_service_app(ServiceSettings(service_name=service, bus_url="memory://", **options))

    @app.websocket("/ws/{room_id}")
    async def room(websocket: WebSocket, room_id: str) -> None:
        await websocket.accept()
        try:
            text = await websocket.receive_text()
            if text == "forbidden":
                await websocket.close(code=CloseCode.FORBIDDEN)
                return
            await websocket.receive_text()  # until the client leaves
        except WebSocketDisconnect:
            return

    return app


def test_gauge_follows_a_client_and_closes_count_by_route_pattern_and_code() -> None:
    with TestClient(app_with_rooms("metrics-a")) as client:
        route = {"service": "metrics-a", "route": "/ws/{room_id}"}
        with client.websocket_connect("/ws/secret-room-1") as ws:
            ws.send_text("hello")
            during = samples(client)
            assert value(during, "realtime_ws_connections_open", **route) == 1
            assert value(during, "realtime_ws_connections_opened_total", **route) == 1
            ws.close(code=1000)
        with client.websocket_connect("/ws/other") as ws:
            ws.send_text("forbidden")
            ws.receive()  # the close frame
        after = samples(client)
        assert value(after, "realtime_ws_connections_open", **route) == 0
        assert value(after, "realtime_ws_connections_opened_total", **route) == 2
        assert value(after, "realtime_ws_connections_closed_total", **route, code="1000") == 1
        assert value(after, "realtime_ws_connections_closed_total", **route, code="4003") == 1
        text = client.get(metrics_url(client)).text
        assert "secret-room-1" not in text and "testclient" not in text


def test_an_unknown_close_code_is_counted_as_other() -> None:
    with TestClient(app_with_rooms("metrics-b")) as client:
        with client.websocket_connect("/ws/r") as ws:
            ws.send_text("x")
            ws.close(code=4321)
        found = samples(client)
        labels = {"service": "metrics-b", "route": "/ws/{room_id}", "code": "other"}
        assert value(found, "realtime_ws_connections_closed_total", **labels) == 1


def test_metrics_off_means_no_endpoint() -> None:
    with TestClient(app_with_rooms("metrics-c", metrics=False)) as client:
        assert client.get(metrics_url(client)).status_code == 404
        assert client.get("/metrics").status_code == 404
        with client.websocket_connect("/ws/r") as ws:
            ws.send_text("x")
        assert client.app.state.websocket_count() == 0


def test_a_tally_reaches_its_counter_when_metrics_are_rendered() -> None:
    counter = metrics.MESSAGES_RECEIVED.labels(service="tally-a")
    found = metrics.tally(metrics.MESSAGES_RECEIVED, service="tally-a")
    before = counter._value.get()
    found.value += 3
    metrics.render()
    found.value += 2
    metrics.render()
    assert counter._value.get() == before + 5
    assert metrics.tally(metrics.MESSAGES_RECEIVED, False, service="tally-b") not in metrics._tallies


def test_refusal_reasons_are_a_fixed_set() -> None:
    assert metrics.refusal("cap") is metrics.refusal("cap")
    with pytest.raises(ValueError):
        metrics.refusal("10.0.0.1")

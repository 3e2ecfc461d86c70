import logging

import pytest
from echo_service.app import create_app
from echo_service.settings import EchoSettings
from fastapi.testclient import TestClient


@pytest.fixture
def client():
    with TestClient(create_app(EchoSettings(bus_url="memory://"))) as test_client:
        yield test_client


def test_text_comes_back_prefixed(client: TestClient) -> None:
    with client.websocket_connect("/echo") as ws:
        ws.send_text("hello")
        assert ws.receive_text() == "Echo: hello"
        ws.send_text("")
        assert ws.receive_text() == "Echo: "


def test_binary_comes_back_as_binary(client: TestClient) -> None:
    with client.websocket_connect("/echo") as ws:
        ws.send_bytes(b"\x00\xffbin")
        assert ws.receive_bytes() == b"\x00\xffbin"


def test_client_disconnect_ends_the_handler_without_an_error(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with client.websocket_connect("/echo") as ws:
        ws.send_text("bye")
        ws.receive_text()
        ws.close(code=1000)
    # a second session proves the app is still healthy after the first one left
    with client.websocket_connect("/echo") as ws:
        ws.send_text("again")
        assert ws.receive_text() == "Echo: again"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_health_endpoints(client: TestClient) -> None:
    assert client.get("/healthz").json()["service"] == "echo"
    assert client.get("/readyz").status_code == 200

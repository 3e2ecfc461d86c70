"""The internal (operator) port: its settings, the door in front of every app, and the real listener."""

import asyncio
import urllib.error
import urllib.request

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from realtime.app import create_service_app
from realtime.operator import operator_route
from realtime.settings import ServiceSettings
from realtime.testing import free_port, serving


def app_with_an_operator_route():
    app = create_service_app(ServiceSettings(service_name="svc", bus_url="memory://", port=8100))

    @operator_route(app, "/census")
    async def census() -> dict[str, int]:
        return {"rooms": 3}

    @app.get("/public")
    async def public() -> dict[str, str]:
        return {"for": "everyone"}

    return app


def test_the_internal_port_defaults_to_port_plus_1000_on_the_same_host() -> None:
    settings = ServiceSettings(host="0.0.0.0", port=8201)
    assert (settings.internal_host, settings.internal_port) == ("0.0.0.0", 9201)
    given = ServiceSettings(port=8201, internal_host="127.0.0.2", internal_port=9999)
    assert (given.internal_host, given.internal_port) == ("127.0.0.2", 9999)


def test_the_internal_port_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "8000")
    monkeypatch.setenv("INTERNAL_PORT", "9100")
    assert ServiceSettings().internal_port == 9100


@pytest.mark.parametrize("options", [{"port": 8000, "internal_port": 8000}, {"port": 65000}])
def test_an_internal_port_that_cannot_work_is_refused(options: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        ServiceSettings(**options)


def test_operator_paths_only_on_the_internal_port_health_on_both() -> None:
    with TestClient(app_with_an_operator_route()) as client:
        internal = "http://testserver:9100"
        for path in ("/metrics", "/census"):
            assert client.get(path).status_code == 404, path
            assert client.get(internal + path).status_code == 200, path
        assert client.get(internal + "/census").json() == {"rooms": 3}
        for path in ("/healthz", "/readyz"):
            assert client.get(path).status_code == 200
            assert client.get(internal + path).status_code == 200
        assert client.get("/public").json() == {"for": "everyone"}
        assert client.get(internal + "/public").status_code == 404
        assert client.get(internal + "/census/").status_code == 404
        # operator routes stay out of the public API description
        assert "/census" not in client.get("/openapi.json").json()["paths"]


async def test_a_served_app_listens_on_both_ports() -> None:
    ports = {"port": free_port(), "internal_port": free_port()}
    settings = ServiceSettings(service_name="svc", bus_url="memory://", **ports)
    app = create_service_app(settings)

    def status(url: str) -> int:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code

    async with serving(app, settings, internal=True) as served:
        public = f"http://127.0.0.1:{settings.port}"
        assert served.internal_url == f"http://127.0.0.1:{settings.internal_port}"
        assert await asyncio.to_thread(status, public + "/metrics") == 404
        assert await asyncio.to_thread(status, served.internal_url + "/metrics") == 200
        assert await asyncio.to_thread(status, served.internal_url + "/healthz") == 200

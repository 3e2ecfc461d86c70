from fastapi.testclient import TestClient
from realtime.app import create_service_app
from realtime.settings import ServiceSettings


def settings() -> ServiceSettings:
    return ServiceSettings(service_name="svc", instance_id="svc-1", bus_url="memory://")


def test_healthz_and_readyz_with_a_connected_bus() -> None:
    with TestClient(create_service_app(settings())) as client:
        assert client.get("/healthz").json() == {"status": "ok", "service": "svc", "instance": "svc-1"}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True, "checks": {"bus": True}}


def test_a_failing_check_makes_readyz_503_and_names_it() -> None:
    app = create_service_app(settings())
    app.state.readiness["warm"] = lambda: False
    with TestClient(app) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"] == {"bus": True, "warm": False}


def test_settings_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("BUS_URL", "")  # empty means unset
    loaded = ServiceSettings()
    assert (loaded.port, loaded.log_level, loaded.bus_url) == (9123, "debug", "nats://127.0.0.1:4222")

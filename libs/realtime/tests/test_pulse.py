"""Per-instance pulse samples: subject tokens, clock-aligned ticks, the sampler, the connection count."""

import asyncio
import time

import pytest
from fastapi import WebSocket
from fastapi.testclient import TestClient
from realtime.app import create_service_app
from realtime.bus import create_bus, safe_token
from realtime.pulse import SAMPLES, Sample, Sampler, sample_subject, tick_of, tick_start
from realtime.settings import ServiceSettings

DEADLINE = 5.0


def a_sample(**changes: object) -> Sample:
    fields = dict(
        service="rooms",
        instance="rooms-1",
        host="h1",
        tick=42,
        interval=0.5,
        cpu=3.5,
        host_cpu=20.0,
        memory=1000,
        connections=7,
    )
    return Sample(**(fields | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "token"),
    [("rooms-1", "rooms-1"), ("a.b", "a_b"), ("*", "_"), (">", "_"), ("x y.z>*", "x_y_z__"), ("", "_")],
)
def test_names_become_single_safe_subject_tokens(name: str, token: str) -> None:
    assert safe_token(name) == token


def test_sample_subject_has_exactly_four_tokens_whatever_the_names() -> None:
    assert sample_subject("rooms", "pod.a*b") == "pulse.sample.rooms.pod_a_b"
    assert len(safe_token("x" * 500)) == 64


@pytest.mark.parametrize("interval", [0.1, 0.5, 1.0, 5.0, 0.3, 0.7])
def test_every_tick_start_falls_in_its_own_tick(interval: float) -> None:
    now = tick_of(time.time(), interval)
    for n in range(now, now + 5000):
        assert tick_of(tick_start(n, interval), interval) == n
        assert tick_of(tick_start(n, interval) - interval / 100, interval) == n - 1


def test_sample_round_trips_through_json() -> None:
    sample = a_sample()
    assert Sample.from_json(sample.to_json()) == sample


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        a_sample().to_json().replace(b'"tick":42', b'"tick":"x"'),
        a_sample(service="").to_json(),
        a_sample(instance="i" * 129).to_json(),
        a_sample(interval=0.0).to_json(),
        a_sample().to_json().replace(b'"cpu":3.5', b'"cpu":NaN'),
    ],
)
def test_malformed_samples_raise_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError):
        Sample.from_json(payload)


async def test_sampler_publishes_its_own_measurements_on_its_subject() -> None:
    bus = create_bus("memory://")
    await bus.connect()
    sampler = Sampler(bus, service="echo", instance="echo.1", host="h", interval=1.0, connections=lambda: 3)
    next_tick = tick_of(time.time(), 1.0) + 1  # its cut-off is in the future: never skipped
    async with bus.subscribe(SAMPLES) as samples:
        assert await sampler.sample_once(next_tick)
        message = await asyncio.wait_for(anext(samples), DEADLINE)
    assert message.subject == "pulse.sample.echo.echo_1"
    sample = Sample.from_json(message.payload)
    assert (sample.service, sample.instance, sample.tick, sample.connections) == (
        "echo",
        "echo.1",
        next_tick,
        3,
    )
    assert sample.memory > 0
    assert 0 <= sample.host_cpu <= 100


async def test_a_sample_taken_too_late_in_its_tick_is_skipped_not_sent() -> None:
    bus = create_bus("memory://")
    await bus.connect()
    sampler = Sampler(bus, service="echo", instance="e", host="h", interval=1.0, connections=lambda: 0)
    async with bus.subscribe(SAMPLES) as samples:
        assert not await sampler.sample_once(tick_of(time.time(), 1.0) - 1)
        assert samples._queue.empty()
    assert sampler.skipped == 1


async def test_a_sampler_without_a_bus_connection_skips_quietly() -> None:
    bus = create_bus("memory://")  # never connected
    sampler = Sampler(bus, service="echo", instance="e", host="h", interval=1.0, connections=lambda: 0)
    assert not await sampler.sample_once(tick_of(time.time(), 1.0) + 1)


async def test_every_service_app_samples_itself_once_per_tick_while_it_runs() -> None:
    bus = create_bus("memory://")
    settings = ServiceSettings(
        service_name="svc", instance_id="svc-1", bus_url="memory://", pulse_interval=0.1
    )
    app = create_service_app(settings, bus=bus)
    async with bus.subscribe(SAMPLES) as samples, app.router.lifespan_context(app):
        first = Sample.from_json((await asyncio.wait_for(anext(samples), DEADLINE)).payload)
        second = Sample.from_json((await asyncio.wait_for(anext(samples), DEADLINE)).payload)
    assert (first.service, first.instance, first.interval) == ("svc", "svc-1", 0.1)
    assert second.tick > first.tick


def test_the_app_counts_its_open_websocket_sessions() -> None:
    settings = ServiceSettings(service_name="svc", instance_id="svc-1", bus_url="memory://")
    app = create_service_app(settings)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        while (await websocket.receive())["type"] != "websocket.disconnect":
            await websocket.send_text(str(app.state.websocket_count()))

    with TestClient(app) as client:
        with client.websocket_connect("/ws") as one:
            one.send_text("?")
            assert one.receive_text() == "1"
            with client.websocket_connect("/ws") as two:
                two.send_text("?")
                assert two.receive_text() == "2"
            one.send_text("?")
            assert one.receive_text() == "1"
        end = time.monotonic() + DEADLINE
        while app.state.websocket_count() != 0:
            if time.monotonic() > end:
                raise AssertionError("the count did not return to 0 after the last client left")
            time.sleep(0.01)


def test_the_pulse_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ServiceSettings(pulse_interval=0)

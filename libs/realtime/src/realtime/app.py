"""The app factory every service builds on: bus in the lifespan, /healthz and /readyz."""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from realtime import metrics
from realtime.bus import Bus, create_bus
from realtime.connections import ConnectionCount, CountWebSockets
from realtime.operator import add_operator_route, guard
from realtime.pulse import Sampler
from realtime.settings import ServiceSettings

# A service's own start-up and shut-down, run inside the bus's lifetime: (app) -> async context manager.
# What it yields (a dict or None) becomes lifespan state, which uvicorn also hands to WebSocket protocols.
ServiceLifespan = Callable[[FastAPI], AbstractAsyncContextManager[dict[str, Any] | None]]


def build_bus(settings: ServiceSettings) -> Bus:
    if settings.bus_url.startswith("memory://"):
        return create_bus(settings.bus_url)
    return create_bus(
        settings.bus_url,
        name=f"{settings.service_name}/{settings.instance_id}",
        connect_timeout=settings.nats_connect_timeout,
        reconnect_wait=settings.nats_reconnect_wait,
        ping_interval=settings.nats_ping_interval,
        max_outstanding_pings=settings.nats_max_outstanding_pings,
        request_timeout=settings.nats_request_timeout,
        randomize=settings.nats_randomize,
        service=settings.service_name,
        metrics_on=settings.metrics,
    )


def create_service_app(
    settings: ServiceSettings,
    *,
    lifespan: ServiceLifespan | None = None,
    bus: Bus | None = None,
    ready_needs_bus: bool = True,
    connections: Callable[[], int] | None = None,
    **fastapi_options: Any,
) -> FastAPI:
    """A FastAPI app whose lifespan connects the bus, then runs the service's own lifespan.

    ``GET /metrics`` serves the Prometheus metrics (realtime.metrics) unless ``METRICS=false``, on the
    internal port only (``INTERNAL_PORT``, realtime.operator); ``/healthz`` and ``/readyz`` on both ports.

    ``app.state.readiness`` holds named checks; /readyz is 200 only when every check passes, and the bus
    is connected unless ``ready_needs_bus`` is False (the gateway routes traffic without NATS).

    Every instance publishes a pulse sample each ``PULSE_INTERVAL`` (realtime.pulse) while the bus is
    connected. Its connection count is the app's open WebSocket sessions (``app.state.websocket_count``),
    unless ``connections`` says otherwise (the gateway counts the sessions it splices).
    """
    websocket_count = ConnectionCount()

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any] | None]:
        the_bus = bus or build_bus(settings)
        app.state.bus = the_bus
        await the_bus.connect()
        sampler = Sampler(
            the_bus,
            service=settings.service_name,
            instance=settings.instance_id,
            host=settings.pulse_host,
            interval=settings.pulse_interval,
            connections=connections or websocket_count,
            metrics_on=settings.metrics,
        )
        app.state.sampler = sampler
        try:
            async with sampler.running(), metrics.flushing():
                if lifespan is None:
                    yield
                else:
                    async with lifespan(app) as state:
                        yield state
        finally:
            await the_bus.disconnect()

    app = FastAPI(title=settings.service_name, lifespan=app_lifespan, **fastapi_options)
    app.state.settings = settings
    app.state.readiness = {}
    app.state.websocket_count = websocket_count
    app.add_middleware(
        CountWebSockets, count=websocket_count, service=settings.service_name, metrics_on=settings.metrics
    )
    guard(app, settings)  # operator routes on INTERNAL_PORT only (realtime.operator)
    if settings.metrics:
        # Prometheus text format; in multiprocess mode (gateway workers) the sum over every worker.
        add_operator_route(app, "/metrics", metrics.metrics_endpoint)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness: the process runs its event loop. Says nothing about NATS on purpose."""
        return {"status": "ok", "service": settings.service_name, "instance": settings.instance_id}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        """Readiness: the bus is connected and every check the service registered passes."""
        the_bus: Bus | None = getattr(app.state, "bus", None)
        checks = {"bus": bool(the_bus and the_bus.ready)} if ready_needs_bus else {}
        checks.update({name: bool(check()) for name, check in app.state.readiness.items()})
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    return app

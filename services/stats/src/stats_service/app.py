"""Stats service: ``/stats`` pushes one pulse per tick, the same on every replica (see aggregate.py).

Every instance of the platform (this one included) publishes a sample each tick (realtime.pulse); this
service collects them, builds the pulse at each tick and sends it to its clients, encoded once.
A client gets the newest pulse as soon as it connects, then one per tick. What a client sends is read
and ignored: ``/stats`` only talks. When a client goes, its handler returns and it leaves the hub at once.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, WebSocket
from realtime.app import create_service_app
from realtime.tasks import cancel_and_wait

from stats_service.aggregate import Aggregator
from stats_service.pulse_hub import PulseHub
from stats_service.settings import StatsSettings
from stats_service.ticker import Ticker


def create_app(settings: StatsSettings | None = None) -> FastAPI:
    settings = settings or StatsSettings()
    hub = PulseHub(
        max_buffered=settings.pulse_max_buffered, service=settings.service_name, metrics_on=settings.metrics
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        aggregator = Aggregator(settings.pulse_interval, settings.pulse_drop_after)
        ticker = Ticker(app.state.bus, aggregator, hub, metrics_on=settings.metrics)
        app.state.aggregator = aggregator
        task = asyncio.create_task(ticker.run(), name="stats-ticker")
        app.state.readiness["pulse"] = lambda: not task.done()  # a dead ticker takes the replica out
        try:
            yield
        finally:
            await cancel_and_wait(task)
            hub.close()

    app = create_service_app(settings, lifespan=lifespan)
    app.state.hub = hub

    @app.websocket("/stats")
    async def stats(websocket: WebSocket) -> None:
        await websocket.accept()
        client = hub.join(websocket)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                # anything a client sends is ignored on purpose: /stats only talks
        finally:
            hub.leave(client)

    return app

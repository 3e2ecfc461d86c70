"""The gateway app: health, readiness, the 4004 answer for WebSocket paths no route matches, plain HTTP
forwarded under the ``HTTP_ROUTES`` prefixes (http_forward.py), and the API docs (api_docs.py).

Routed WebSocket paths never reach this app: ``GatewayWebSocketProtocol`` (splice.py) takes them at the
transport level. The app's lifespan builds the ``Proxy`` and hands it to that protocol as lifespan state.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, WebSocket
from realtime.app import create_service_app
from realtime.close_codes import CloseCode
from realtime.operator import operator_route
from realtime.tasks import cancel_and_wait

from gateway.api_docs import ApiDocs
from gateway.http_forward import Forwarder
from gateway.page import mount_page
from gateway.proxy import Proxy
from gateway.settings import GatewaySettings
from gateway.upstreams import shown


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    proxy = Proxy(settings)
    forwarder = Forwarder(proxy)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, object]]:
        # The first round before serving: a worker of several answers /readyz only once it knows its
        # upstreams (a launcher's readiness check may have reached another worker).
        await proxy.probe()
        probe = asyncio.create_task(proxy.probe_forever(), name="upstream-probe")
        try:
            yield {"proxy": proxy}  # uvicorn passes lifespan state to the WebSocket protocol
        finally:
            await cancel_and_wait(probe)
            await forwarder.aclose()

    # The pulse reports the client sessions the gateway splices (they never reach the FastAPI app).
    # FastAPI's own /openapi.json and /docs are replaced by ApiDocs' (the forwarded APIs included).
    app = create_service_app(
        settings,
        lifespan=lifespan,
        ready_needs_bus=False,
        connections=lambda: proxy.connections,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.proxy = proxy
    app.state.readiness["upstreams"] = lambda: proxy.ready
    mount_page(app)  # the web page at /

    @operator_route(app, "/upstreams")
    async def upstreams() -> dict[str, object]:
        """Which replicas each route has and which answer their health check; ``connections`` counts
        spliced sessions, ``admitted`` every open client connection. On the internal port only: it names
        the internal topology (realtime.operator)."""
        return {
            name: {
                "replicas": [shown(a) for a in pool.addresses or pool.targets],
                "reachable": sorted(shown(a) for a in pool.reachable),
            }
            for name, pool in proxy.pools.items()
        } | {"connections": proxy.connections, "admitted": proxy.admission.total}

    ApiDocs(app, forwarder, proxy.http_routes).mount()
    for prefix, pool in proxy.http_routes.items():  # after the gateway's own routes: those come first
        app.add_route(prefix + "{path:path}", forwarder.route(pool), methods=None, include_in_schema=False)

    @app.websocket("/{path:path}")
    async def unknown_path(websocket: WebSocket, path: str) -> None:
        # Accept first: a close before accept becomes HTTP 403 and the client never sees the code.
        await websocket.accept()
        await websocket.close(code=CloseCode.NOT_FOUND, reason="no such path")

    return app

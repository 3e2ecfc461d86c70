"""A test-only upstream: closes with the code and reason it is asked for, and reports what it saw.

``/closer?code=4003&reason=forbidden`` accepts (with the first offered subprotocol) and closes with that
code. Without ``code`` it echoes what it hears as ``path|query|subprotocol|text|client`` (the client
address it believes, from the gateway's X-Forwarded-For) and logs the close code the client sent, so a
test can prove both directions of the gateway relay.
"""

import logging

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from realtime.app import create_service_app
from realtime.serve import serve
from realtime.settings import ServiceSettings

logger = logging.getLogger("closer")


def create_app(settings: ServiceSettings) -> FastAPI:
    app = create_service_app(settings, ready_needs_bus=False)

    @app.websocket("/closer")
    async def closer(websocket: WebSocket) -> None:
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=offered[0] if offered else None)
        code = websocket.query_params.get("code")
        if code is not None:
            await websocket.close(code=int(code), reason=websocket.query_params.get("reason", ""))
            return
        try:
            while True:
                text = await websocket.receive_text()
                query = websocket.scope["query_string"].decode()
                chosen = offered[0] if offered else ""
                client = websocket.client.host if websocket.client else "-"
                await websocket.send_text(f"{websocket.url.path}|{query}|{chosen}|{text}|{client}")
        except WebSocketDisconnect as exc:
            logger.info("client closed with %s %s", exc.code, exc.reason)

    return app


if __name__ == "__main__":
    settings = ServiceSettings(service_name="closer", bus_url="memory://")
    serve(lambda: create_app(settings), settings)

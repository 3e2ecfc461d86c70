"""Echo service: every text frame comes back as ``Echo: <text>``, binary frames come back as they are."""

import logging

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from realtime.app import create_service_app

from echo_service.settings import EchoSettings

logger = logging.getLogger(__name__)


def create_app(settings: EchoSettings | None = None) -> FastAPI:
    settings = settings or EchoSettings()
    app = create_service_app(settings)

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is not None:
                    await websocket.send_text(f"Echo: {text}")
                else:
                    await websocket.send_bytes(message.get("bytes") or b"")
        except WebSocketDisconnect:
            return  # the client left: nothing to report

    return app

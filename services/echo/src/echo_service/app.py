"""Echo service: every text frame comes back as ``Echo: <text>``, binary frames come back as they are."""

import logging

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from realtime import metrics
from realtime.app import create_service_app

from echo_service.settings import EchoSettings

logger = logging.getLogger(__name__)


def create_app(settings: EchoSettings | None = None) -> FastAPI:
    settings = settings or EchoSettings()
    app = create_service_app(settings)
    # Tallies: per message an attribute add each, flushed into the counters when /metrics is scraped.
    on, service = settings.metrics, settings.service_name
    received = metrics.tally(metrics.MESSAGES_RECEIVED, on, service=service)
    delivered = metrics.tally(metrics.MESSAGES_DELIVERED, on, service=service)
    bytes_out = metrics.tally(metrics.BYTES_OUT, on, service=service)

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                received.value += 1
                text = message.get("text")
                if text is not None:
                    reply = f"Echo: {text}"
                    await websocket.send_text(reply)
                    size = len(reply) if reply.isascii() else len(reply.encode())
                else:
                    data = message.get("bytes") or b""
                    await websocket.send_bytes(data)
                    size = len(data)
                delivered.value += 1
                bytes_out.value += size
        except WebSocketDisconnect:
            return  # the client left: nothing to report

    return app

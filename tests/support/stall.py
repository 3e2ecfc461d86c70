"""A test-only upstream that refuses upgrades in the ways a bad request can make a healthy replica
refuse them, so a test can prove none of them marks the replica down at the gateway.

``/stall/slow`` answers the upgrade only after a minute (the gateway's handshake times out);
``/stall/deny`` closes before accepting (HTTP 403); ``/stall/crash`` raises before accepting (HTTP 500);
``/stall/ok`` accepts and echoes one text message; ``/stall/later`` accepts and closes 1000 after 50 ms
(while the client may still be sending).
"""

import asyncio

from fastapi import FastAPI, WebSocket
from realtime.app import create_service_app
from realtime.serve import serve
from realtime.settings import ServiceSettings


def create_app(settings: ServiceSettings) -> FastAPI:
    app = create_service_app(settings, ready_needs_bus=False)

    @app.websocket("/stall/{mode}")
    async def stall(websocket: WebSocket, mode: str) -> None:
        if mode == "slow":
            await asyncio.sleep(60)
        elif mode == "deny":
            await websocket.close()
            return
        elif mode == "crash":
            raise RuntimeError("stall: crash before accept (on purpose)")
        await websocket.accept()
        if mode == "later":
            await asyncio.sleep(0.05)
            await websocket.close()
            return
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    return app


if __name__ == "__main__":
    settings = ServiceSettings(service_name="stall", bus_url="memory://")
    serve(lambda: create_app(settings), settings)

"""The platform's WebSocket protocol under a real uvicorn: FrameWriter and 1001 on shutdown."""

import asyncio
import contextlib

from fastapi import WebSocket
from realtime.app import create_service_app
from realtime.close_codes import CloseCode
from realtime.frames import text_frame
from realtime.serve import frame_writer
from realtime.settings import ServiceSettings
from realtime.testing import free_port, serving
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

DEADLINE = 10.0


@contextlib.asynccontextmanager
async def running_server():
    settings = ServiceSettings(bus_url="memory://", port=free_port(), access_log=False)
    app = create_service_app(settings)

    @app.websocket("/fast")
    async def fast(websocket: WebSocket) -> None:
        await websocket.accept()
        writer = frame_writer(websocket)
        await websocket.receive_text()
        writer.write(text_frame("pre-encoded"))
        await websocket.receive_text()
        writer.close(CloseCode.POLICY_VIOLATION, "slow consumer")
        await websocket.receive()  # the disconnect

    @app.websocket("/hold")
    async def hold(websocket: WebSocket) -> None:
        await websocket.accept()
        with contextlib.suppress(Exception):
            while True:
                await websocket.receive_text()

    async with serving(app, settings, deadline=DEADLINE) as served:
        yield served.server, served.url


async def test_frame_writer_writes_pre_encoded_frames_and_closes_with_a_code() -> None:
    async with running_server() as (_, url), connect(f"{url}/fast") as client:
        await client.send("go")
        assert await asyncio.wait_for(client.recv(), DEADLINE) == "pre-encoded"
        await client.send("close me")
        try:
            await asyncio.wait_for(client.recv(), DEADLINE)
        except ConnectionClosed as exc:
            assert (exc.rcvd.code, exc.rcvd.reason) == (CloseCode.POLICY_VIOLATION, "slow consumer")
        else:
            raise AssertionError("expected a close")


async def test_shutdown_closes_clients_with_1001() -> None:
    async with running_server() as (server, url), connect(f"{url}/hold") as client:
        server.should_exit = True
        try:
            await asyncio.wait_for(client.recv(), DEADLINE)
        except ConnectionClosed as exc:
            assert (exc.rcvd.code, exc.rcvd.reason) == (CloseCode.GOING_AWAY, "server shutting down")
        else:
            raise AssertionError("expected a close")

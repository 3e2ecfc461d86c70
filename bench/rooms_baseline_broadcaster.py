"""Baseline 2 for bench/rooms.py: encode/broadcaster with ``memory://``, one process, as users write it.

The pattern of broadcaster's README chat example, in FastAPI: each connection runs a receiver that
publishes what it hears and a sender that iterates its own subscription (a queue per subscriber).

    uvicorn bench.rooms_baseline_broadcaster:app --port 9002
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from broadcaster import Broadcast
from fastapi import FastAPI, WebSocket

broadcast = Broadcast("memory://")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await broadcast.connect()
    yield
    await broadcast.disconnect()


app = FastAPI(lifespan=lifespan)


@app.websocket("/ws/{room}")
async def chatroom_ws(websocket: WebSocket, room: str) -> None:
    await websocket.accept()

    async with anyio.create_task_group() as task_group:

        async def receiver() -> None:
            async for message in websocket.iter_text():
                await broadcast.publish(channel=room, message=message)
            task_group.cancel_scope.cancel()

        task_group.start_soon(receiver)
        async with broadcast.subscribe(channel=room) as subscriber:
            async for event in subscriber:
                await websocket.send_text(event.message)

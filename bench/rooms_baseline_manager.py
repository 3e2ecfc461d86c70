"""Baseline 1 for bench/rooms.py: FastAPI's documented ConnectionManager, one process, as users write it.

From the FastAPI docs ("WebSockets", "Handling disconnections and multiple clients"): a list of
connections and a ``broadcast`` that awaits ``send_text`` on each in turn. The endpoint only broadcasts
(the docs' extra "You wrote: ..." personal echo is left out so every member gets each message once).

    uvicorn bench.rooms_baseline_manager:app --port 9001
"""

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: list[WebSocket] = []

    async def connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        self.active_connections.remove(websocket)

    async def send_personal_message(self, message: str, websocket: WebSocket) -> None:
        await websocket.send_text(message)

    async def broadcast(self, message: str) -> None:
        for connection in self.active_connections:
            await connection.send_text(message)


manager = ConnectionManager()


@app.websocket("/ws/{client_id}")
async def websocket_endpoint(websocket: WebSocket, client_id: int) -> None:
    await manager.connect(websocket)
    try:
        while True:
            data = await websocket.receive_text()
            await manager.broadcast(f"Client #{client_id} says: {data}")
    except WebSocketDisconnect:
        manager.disconnect(websocket)

"""``Refused``: a join or a frame turned down with a close code and a reason.

``/ws/{room_id}`` closes its connection with them (a refusal before the member joined, ``room_socket.py``);
``/ws`` answers the frame with an ``error`` carrying them and goes on (``mux.py``)."""

from fastapi import WebSocket


class Refused(Exception):
    """Turned down with ``code`` (a ``CloseCode`` or the app's 4000-4999) and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def close_refused(websocket: WebSocket, code: int, reason: str) -> None:
    """A refusal before anything is joined: accepted first, so it is a close code the client can see
    (never an HTTP 403)."""
    await websocket.accept()
    await websocket.close(code, reason)

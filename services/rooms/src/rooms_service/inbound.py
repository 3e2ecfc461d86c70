"""What a client sends on either WebSocket route, read one frame at a time: the next text frame; a
disconnect ends the reading, a binary frame closes the connection (1008)."""

from collections.abc import Callable
from typing import Any

from fastapi import WebSocket
from realtime.close_codes import CloseCode


async def next_text(websocket: WebSocket, close: Callable[[CloseCode, str], None], binary: str) -> str | None:
    """The next text frame, or None when the client went or sent a binary frame (closed with 1008 and
    the reason ``binary``): the caller stops reading on None."""
    message: dict[str, Any] = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    if text is None:
        close(CloseCode.POLICY_VIOLATION, binary)
    return text

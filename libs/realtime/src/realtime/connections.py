"""How many WebSocket sessions this instance serves right now, counted for every service alike.

``CountWebSockets`` is a pure ASGI middleware that ``create_service_app`` adds: a WebSocket session counts
from the moment the app is handed its scope until the app's handler returns. It touches no message, so
the hot path (``send``/``receive``, ``FrameWriter.write``) costs nothing extra.
"""

from starlette.types import ASGIApp, Receive, Scope, Send


class ConnectionCount:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def __call__(self) -> int:
        return self.value


class CountWebSockets:
    def __init__(self, app: ASGIApp, count: ConnectionCount) -> None:
        self.app = app
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        self.count.value += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.count.value -= 1

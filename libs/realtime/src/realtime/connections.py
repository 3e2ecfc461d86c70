"""How many WebSocket sessions this instance serves right now, counted for every service alike.

``CountWebSockets`` is a pure ASGI middleware that ``create_service_app`` adds: a WebSocket session counts
from the moment the app is handed its scope until the app's handler returns. With metrics on it also
keeps the Prometheus session metrics (realtime.metrics): the open gauge and the opened counter by route
once the app accepts (the route is the matched route's path pattern, which the router leaves in
``scope["route"]``), the closed counter by route and close code when the handler returns (the code of the
app's own ``websocket.close``, else of the ``websocket.disconnect`` it received, else 1000, or 1011 if the
handler raised). Per message that costs one type check in a thin ``send``/``receive`` wrapper; the
broadcast path (``FrameWriter.write``) does not pass through it at all.
"""

from collections.abc import Awaitable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from realtime import metrics
from realtime.close_codes import CloseCode

UNMATCHED = "unmatched"  # route label of a session the router matched to no route


class ConnectionCount:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def __call__(self) -> int:
        return self.value


def route_pattern(scope: Scope) -> str:
    """The matched route's path pattern (``/ws/{room_id}``), never the concrete path."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


class CountWebSockets:
    def __init__(
        self, app: ASGIApp, count: ConnectionCount, *, service: str = "service", metrics_on: bool = True
    ) -> None:
        self.app = app
        self.count = count
        self.service = service
        self.metrics_on = metrics_on
        # Metric children per route, resolved on a route's first session (per session, never per message).
        self._open: dict[str, tuple[Any, Any]] = {}
        self._closed: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        self.count.value += 1
        try:
            if self.metrics_on:
                await self._measured(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            self.count.value -= 1

    async def _measured(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: str | None = None  # set when the app accepts
        code: int | None = None  # the first close code seen: the app's close or the client's disconnect

        async def control(message: Message) -> None:
            nonlocal route, code
            kind = message["type"]
            if kind == "websocket.accept" and route is None:
                route = route_pattern(scope)
                gauge, opened = self._open_children(route)
                gauge.inc()
                opened.inc()
            elif kind == "websocket.close" and code is None:
                code = int(message.get("code", CloseCode.NORMAL))
            await send(message)

        def watched_send(message: Message) -> Awaitable[None]:
            # A data frame goes straight to the server's own send (no extra coroutine per message).
            if message["type"] == "websocket.send":
                return send(message)
            return control(message)

        async def watched_receive() -> Message:
            nonlocal code
            message = await receive()
            if message["type"] == "websocket.disconnect" and code is None:
                code = int(message.get("code", CloseCode.NO_STATUS))
            return message

        failed = False
        try:
            await self.app(scope, watched_receive, watched_send)  # type: ignore[arg-type]
        except BaseException:
            failed = True
            raise
        finally:
            if route is not None:
                if code is None:
                    code = int(CloseCode.INTERNAL_ERROR if failed else CloseCode.NORMAL)
                self._open_children(route)[0].dec()
                self._closed_child(route, metrics.code_label(code)).inc()

    def _open_children(self, route: str) -> tuple[Any, Any]:
        found = self._open.get(route)
        if found is None:
            labels = {"service": self.service, "route": route}
            found = self._open[route] = (metrics.WS_OPEN.labels(**labels), metrics.WS_OPENED.labels(**labels))
        return found

    def _closed_child(self, route: str, code: str) -> Any:
        found = self._closed.get((route, code))
        if found is None:
            found = metrics.WS_CLOSED.labels(service=self.service, route=route, code=code)
            self._closed[(route, code)] = found
        return found

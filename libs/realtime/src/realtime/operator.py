"""Operator endpoints on an internal port of their own, never on the public one (as Centrifugo does).

Every process listens twice: on ``HOST:PORT`` (public: clients, the load balancer, probes) and on
``INTERNAL_HOST:INTERNAL_PORT`` (default ``PORT + 1000``: monitoring and operators). The operator routes
(``/metrics``, the gateway's ``/upstreams``, the rooms' ``/rooms``) answer only on the internal port and
404 on the public one; ``/healthz`` and ``/readyz`` answer on both; everything else (WebSockets, the page,
the HTTP API) only on the public one. Both listeners belong to the same server, so with several gateway
workers each worker accepts on both and any of them renders the multiprocess metrics of all: one scrape.

A request's listener is the local port it arrived on (the ASGI scope's ``server``). A Unix-socket
connection (the gateway reaching a service, ``UDS``) has no port: it is public.
"""

import socket
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from realtime.settings import ServiceSettings

ON_BOTH_PORTS = frozenset(("/healthz", "/readyz"))  # probes use the public port, monitoring the internal


def on_internal_port(scope: Scope, internal_port: int) -> bool:
    server = scope.get("server")
    return server is not None and server[1] == internal_port


class OperatorDoor:
    """ASGI middleware: an operator path on the public port, or anything but an operator path (or a
    health check) on the internal port, is answered 404 before it reaches a route."""

    def __init__(self, app: ASGIApp, *, internal_port: int, paths: set[str]) -> None:
        self.app = app
        self.internal_port = internal_port
        self.paths = paths  # the app's operator paths; routes added later are in it too

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind in ("http", "websocket"):
            internal = on_internal_port(scope, self.internal_port)
            if internal and kind == "websocket":
                await WebSocketClose()(scope, receive, send)  # no WebSockets for operators
                return
            path = scope["path"]
            if kind == "http" and path not in ON_BOTH_PORTS and (path in self.paths) != internal:
                await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def guard(app: FastAPI, settings: ServiceSettings) -> None:
    """Put the door in front of ``app``'s routes; ``operator_route`` names the paths it lets through."""
    app.state.operator_paths = set()
    app.add_middleware(OperatorDoor, internal_port=settings.internal_port, paths=app.state.operator_paths)


def operator_route(app: FastAPI, path: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``@operator_route(app, "/rooms")``: a GET route served on the internal port only."""
    app.state.operator_paths.add(path)
    return app.get(path, include_in_schema=False)


def add_operator_route(app: FastAPI, path: str, endpoint: Callable[..., Any]) -> None:
    """A plain Starlette endpoint (``/metrics``) on the internal port only."""
    app.state.operator_paths.add(path)
    app.add_route(path, endpoint, include_in_schema=False)


def internal_listener(settings: ServiceSettings) -> socket.socket:
    """The internal port's listening socket, bound as uvicorn binds its own (inherited by workers)."""
    host, port = settings.internal_host or settings.host, settings.internal_port
    family = socket.AF_INET6 if host and ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"internal port {host}:{port} (INTERNAL_HOST:INTERNAL_PORT): {exc}") from exc
    sock.set_inheritable(True)
    return sock


def internal_url(settings: ServiceSettings) -> str:
    host = settings.internal_host or settings.host
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{settings.internal_port}"

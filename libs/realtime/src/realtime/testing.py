"""For tests: free loopback ports, and a service's app served by the platform's real uvicorn protocol in
the test's own event loop (so the FrameWriter path, close codes and shutdown behave as in production)."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI

from realtime.heads import BoundedH11Protocol
from realtime.operator import internal_listener, internal_url
from realtime.serve import uvicorn_config
from realtime.settings import ServiceSettings
from realtime.transport import GracefulWebSocketProtocol

_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never the same one twice in this process: the kernel may
    offer a port again once the probe socket closes, before the process it was meant for has bound it."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@dataclass
class Served:
    server: uvicorn.Server
    url: str  # ws://host:port
    internal_url: str | None = None  # http://host:internal_port, when served with ``internal=True``


@contextlib.asynccontextmanager
async def serving(
    app: FastAPI,
    settings: ServiceSettings,
    *,
    ws: type = GracefulWebSocketProtocol,
    http: type = BoundedH11Protocol,
    deadline: float = 10.0,
    internal: bool = False,
) -> AsyncIterator[Served]:
    """Run ``app`` on ``settings.host:settings.port`` until the block ends, then shut it down (``ws``,
    ``http``: the protocols, as ``realtime.serve.serve`` takes them). ``internal``: also listen on the
    internal (operator) port, as ``serve`` does (give the settings a free ``internal_port`` for it)."""
    config = uvicorn_config(lambda: app, settings, ws=ws, http=http)
    server = uvicorn.Server(config)
    sockets = [config.bind_socket(), internal_listener(settings)] if internal else None
    task = asyncio.create_task(server.serve(sockets))
    async with asyncio.timeout(deadline):
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it (a port in use, a failing lifespan)
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
    try:
        operator = internal_url(settings) if internal else None
        yield Served(server, f"ws://{settings.host}:{settings.port}", operator)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, deadline)


async def send_huge_head(
    port: int, request_start: bytes, total: int = 10_000_000, deadline: float = 10.0
) -> tuple[bytes, int]:
    """Send ``request_start`` and then one header value of up to ``total`` bytes, reading while it sends
    as a real client would; returns the first line of the answer and how many value bytes went out
    before it came (a server that buffers the whole head only answers after all of them)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request_start + b"X-Big: ")
    sent = 0
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(deadline):
            while sent < total and not reader.at_eof() and not reader._buffer:  # type: ignore[attr-defined]
                writer.write(b"a" * 65536)
                sent += 65536
                await writer.drain()
                await asyncio.sleep(0)  # let the answer in
    try:
        return await asyncio.wait_for(reader.readline(), deadline), sent
    finally:
        writer.close()


async def closed_with(conn: Any, deadline: float = 10.0) -> tuple[int, str]:
    """Read a websockets client connection until the server's close frame; returns (code, reason) as the
    client received them, or 1006 when the connection ended without one."""
    from websockets.exceptions import ConnectionClosed

    try:
        async with asyncio.timeout(deadline):
            while True:
                await conn.recv()
    except ConnectionClosed as exc:
        if exc.rcvd is None:
            return 1006, ""
        return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("connection did not close")

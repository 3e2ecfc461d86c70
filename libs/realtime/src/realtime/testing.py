"""For tests: free loopback ports, and a service's app served by the platform's real uvicorn protocol in
the test's own event loop (so the FrameWriter path, close codes and shutdown behave as in production)."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from realtime.serve import GracefulWebSocketProtocol, uvicorn_config
from realtime.settings import ServiceSettings

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


@contextlib.asynccontextmanager
async def serving(
    app: FastAPI, settings: ServiceSettings, *, ws: type = GracefulWebSocketProtocol, deadline: float = 10.0
) -> AsyncIterator[Served]:
    """Run ``app`` on ``settings.host:settings.port`` until the block ends, then shut it down."""
    server = uvicorn.Server(uvicorn_config(lambda: app, settings, ws=ws))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(deadline):
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it (a port in use, a failing lifespan)
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
    try:
        yield Served(server, f"ws://{settings.host}:{settings.port}")
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, deadline)

"""Helpers for the rooms tests: the app under the platform's real uvicorn protocol in this process."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from realtime.testing import closed_with, free_port, serving
from rooms_service.app import create_app
from rooms_service.settings import RoomsSettings
from websockets.asyncio.client import ClientConnection, connect

DEADLINE = 10.0


@contextlib.asynccontextmanager
async def served(**overrides: Any) -> AsyncIterator[tuple[FastAPI, str]]:
    overrides.setdefault("bus_url", "memory://")
    overrides.setdefault("access_log", False)
    settings = RoomsSettings(port=free_port(), internal_port=free_port(), **overrides)
    app = create_app(settings)
    async with serving(app, settings, deadline=DEADLINE, internal=True) as running:
        async with asyncio.timeout(DEADLINE):
            while not app.state.rooms.history_ready:
                await asyncio.sleep(0.01)
        yield app, running.url


def client(url: str, **kwargs: Any) -> Any:
    return connect(url, compression=None, open_timeout=DEADLINE, **kwargs)


async def recv(conn: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(conn.recv(), DEADLINE)


async def recv_json(conn: ClientConnection, skip: tuple[str, ...] = ("members",)) -> dict:
    """The next JSON event, ``members`` count updates skipped."""
    while True:
        event = json.loads(await recv(conn))
        if event["type"] not in skip:
            return event


async def close_of(conn: ClientConnection) -> tuple[int, str]:
    return await closed_with(conn, DEADLINE)

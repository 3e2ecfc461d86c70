"""Bounded request heads under a real uvicorn: 431, 414, and the head deadline (realtime.heads)."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from realtime.app import create_service_app
from realtime.settings import ServiceSettings
from realtime.testing import free_port, send_huge_head, serving

DEADLINE = 10.0
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
UPGRADE = (
    b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


@contextlib.asynccontextmanager
async def service(**limits: object) -> AsyncIterator[int]:
    settings = ServiceSettings(bus_url="memory://", port=free_port(), access_log=False, **limits)
    async with serving(create_service_app(settings), settings):
        yield settings.port


async def status_of(port: int, request: bytes) -> int:
    """Send ``request`` and return the HTTP status the server answers with."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(request)
            await writer.drain()
        line = await asyncio.wait_for(reader.readline(), DEADLINE)
        return int(line.split(b" ", 2)[1])
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (HEALTH + b"".join(b"X-%d: 1\r\n" % i for i in range(110)) + b"\r\n", 431),
        (b"GET /ws/" + b"r" * 5000 + b" HTTP/1.1\r\n" + UPGRADE + b"\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Line: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (HEALTH + b"".join(b"X-%d: 1\r\n" % i for i in range(99)) + b"\r\n", 200),
        # what the gateway forwards of a head at its own limits: 100 fields plus its X-Forwarded-*
        (HEALTH + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n", 200),
    ],
    ids=["head-too-large", "too-many-headers", "target-too-long", "field-too-long", "within", "forwarded"],
)
async def test_request_heads_beyond_a_limit_are_refused(request_bytes: bytes, status: int) -> None:
    async with service() as port:
        assert await status_of(port, request_bytes) == status


async def test_a_head_of_megabytes_is_refused_without_reading_it_all() -> None:
    async with service() as port:
        line, sent = await send_huge_head(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert line.startswith(b"HTTP/1.1 431") and sent < 10_000_000


async def test_a_websocket_upgrade_within_limits_still_works() -> None:
    async with service() as port:
        assert await status_of(port, b"GET /nowhere HTTP/1.1\r\n" + UPGRADE + b"\r\n") in (403, 404)


async def test_a_head_not_sent_in_time_is_closed() -> None:
    async with service(handshake_timeout=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        start = time.monotonic()
        answer = await asyncio.wait_for(reader.read(), DEADLINE)
        elapsed = time.monotonic() - start
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408") and 0.4 < elapsed < 3


async def test_an_idle_connection_that_sends_nothing_is_closed() -> None:
    async with service(handshake_timeout=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.wait_for(reader.read(), DEADLINE)  # EOF (after a 408) instead of waiting forever
        writer.close()


async def test_a_kept_alive_connection_gets_the_deadline_for_its_next_head() -> None:
    async with service(handshake_timeout=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), DEADLINE)).startswith(b"HTTP/1.1 200")
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # the second request never finishes its head
        rest = await asyncio.wait_for(reader.read(), DEADLINE)
        writer.close()
        assert b"HTTP/1.1 408" in rest

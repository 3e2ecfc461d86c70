"""The bare WebSocket client every load generator here builds on (each runs in its own process).

Raw asyncio protocols on uvloop keep a generator's own cost low: frames are written with the all-zero
mask key (valid per RFC 6455, and free to apply), the handshake is checked only for its 101, and each
arriving frame is handed to ``on_frame`` as offsets into the received bytes, never decoded or copied.
Pings are answered, so a server's keepalive never closes a long run.
"""

import asyncio
import base64
import json
import os
import resource
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
HANDSHAKES_IN_FLIGHT = 64  # far below any server's accept backlog
# Clients per loopback source address. The gateway caps connections per client address
# (MAX_CONNECTIONS_PER_ADDRESS, 1 000 by default): thousands of bench clients from one address would be
# answered 429. Against a loopback target each block of this many clients connects from its own address
# (127.0.0.100, .101, ...: all of 127.0.0.0/8 is this machine), so every bench runs with the defaults.
CLIENTS_PER_SOURCE = 500
FIRST_SOURCE = 100


def source_address(i: int, host: str | None) -> tuple[str, int] | None:
    """The local address client ``i`` connects from: spread over 127.0.0.x for a loopback target."""
    if host is None or not host.startswith("127."):
        return None
    return (f"127.0.0.{FIRST_SOURCE + i // CLIENTS_PER_SOURCE}", 0)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """A final masked frame with the zero mask key (payload under 126 bytes)."""
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\x00\x00\x00\x00" + payload


def emit(**fields: object) -> None:
    """One JSON line on stdout: how a generator reports to the benchmark that started it."""
    print(json.dumps(fields), flush=True)


class RawClient(asyncio.Protocol):
    """Sends the upgrade request, waits for 101, then splits what arrives into frames."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer = b""
        self.handshake_done = False

    def on_frame(self, opcode: int, buf: bytes, start: int, end: int) -> None:
        """One complete frame: its payload is ``buf[start:end]``."""
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        if not self.handshake_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(buf[:end].decode(errors="replace")))
                return
            self.handshake_done = True
            self.upgraded.set_result(None)
            buf = buf[end + 4 :]
        pos, end = 0, len(buf)
        while end - pos >= 2:
            length, header = buf[pos + 1] & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if end - pos < header + length:
                break
            opcode, start = buf[pos] & 0x0F, pos + header
            pos = start + length
            if opcode == OP_PING:
                self.transport.write(client_frame(buf[start:pos], OP_PONG))  # type: ignore[union-attr]
            else:
                self.on_frame(opcode, buf, start, pos)
        self.buffer = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed during handshake"))

    def close(self) -> None:
        """Send close 1000 (zero-masked); the server answers and hangs up."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame((1000).to_bytes(2, "big"), OP_CLOSE))


Client = TypeVar("Client", bound=RawClient)


async def open_clients(url: str, count: int, factory: Callable[[bytes], Client]) -> list[Client]:
    """``count`` upgraded clients of ``url``, at most HANDSHAKES_IN_FLIGHT handshakes at a time, from
    several loopback source addresses (``source_address``) when ``url`` is on loopback.

    ``{i}`` in the URL's path becomes the client's number (a room per client, say)."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)

    async def one(i: int) -> Client:
        target = parts.path.replace("{i}", str(i)) + (f"?{parts.query}" if parts.query else "")
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        async with gate:
            _, client = await loop.create_connection(
                lambda: factory(request),
                parts.hostname,
                parts.port or 80,
                local_addr=source_address(i, parts.hostname),
            )
            await asyncio.wait_for(client.upgraded, 30)
            return client

    return list(await asyncio.gather(*(one(i) for i in range(count))))

"""The gateway's HTTP/1.1 client for forwarded requests: h11 over asyncio streams, keep-alive per replica.

Why not httpx, which the forwarding used first: on the project's machine the gateway added about 4 ms to
a forwarded publish with httpx and 2.3 to 3.4 ms with this (``python -m bench api``, README), httpx's
share being its per-request machinery (anyio, request and response models, the pool's bookkeeping). The
gateway needs none of what that buys: one request at a time per connection, no redirects, cookies,
proxies, TLS or content decoding. h11, the HTTP parser uvicorn already runs in front, does the protocol;
this file only pools connections and maps failures to what the forwarder answers:
- ``ConnectFailed``: nothing was sent (the replica is marked down, the next one tried);
- ``UpstreamTimeout``: no answer in time (504, never sent again);
- ``UpstreamBroken``: the replica hung up or broke HTTP after the request was sent (502).
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import h11

from gateway.upstreams import UNIX, Address, open_stream, shown

Headers = list[tuple[bytes, bytes]]
READ_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A request as it goes to a replica: end-to-end header fields only (the client adds Host and
    Content-Length)."""

    method: bytes
    target: bytes
    headers: Headers
    body: bytes = b""


class UpstreamError(Exception):
    """A forwarded request failed; the subclass says how far it got."""


class ConnectFailed(UpstreamError):
    """The replica took no connection: nothing was sent."""


class UpstreamTimeout(UpstreamError):
    """The replica did not answer (or send more of its answer) in time."""


class UpstreamBroken(UpstreamError):
    """The replica hung up or broke HTTP after the request was sent."""


class _Connection:
    __slots__ = ("h11", "idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    @property
    def reusable(self) -> bool:
        return self.h11.our_state is h11.IDLE and not self.reader.at_eof() and not self.writer.is_closing()


class UpstreamResponse:
    """A replica's answer: status and header fields now, the body as it arrives (``aiter_raw``), then
    ``aclose()``, which keeps the connection for the next request when the exchange ended cleanly."""

    def __init__(
        self, client: "UpstreamClient", address: Address, conn: _Connection, event: h11.Response
    ) -> None:
        self.status_code = event.status_code
        self.headers: Headers = list(event.headers)
        self._client = client
        self._address = address
        self._conn: _Connection | None = conn
        self._timeout = client.timeout

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        while True:
            event = await self._client._next_event(conn, self._timeout)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:  # the connection closed mid-body
                raise UpstreamBroken("the answer broke off")

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            self._client._release(self._address, conn)
        else:
            conn.close()


class UpstreamClient:
    """Sends requests to replicas (``host:port`` or ``unix:/path``), keeping idle connections for reuse
    for at most ``keepalive_expiry`` seconds (keep it below the services' keep-alive timeout, 5 s)."""

    def __init__(
        self, *, connect_timeout: float, timeout: float, keepalive_expiry: float, max_idle: int
    ) -> None:
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.keepalive_expiry = keepalive_expiry
        self.max_idle = max_idle
        self._idle: dict[Address, list[_Connection]] = {}
        self._pruned_at = 0.0

    async def request(
        self, address: Address, request: Outgoing, answer_within: float | None = None
    ) -> UpstreamResponse:
        """Send one request; returns once the status line and header fields arrived (within
        ``answer_within`` seconds, by default the client's ``timeout``)."""
        deadline = answer_within if answer_within is not None else self.timeout
        conn = self._reuse(address) or await self._connect(address, min(self.connect_timeout, deadline))
        host = b"localhost" if address[0].startswith(UNIX) else shown(address).encode("ascii")
        method, body = request.method, request.body
        fields = [(b"host", host), *request.headers]
        if body or method not in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
            fields.append((b"content-length", b"%d" % len(body)))
        try:
            data = conn.h11.send(h11.Request(method=method, target=request.target, headers=fields))
            if body:
                data += conn.h11.send(h11.Data(data=body))
            data += conn.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:  # a header the client sent that HTTP/1.1 cannot carry
            conn.close()
            raise UpstreamBroken(f"request not sendable: {type(exc).__name__}") from None
        try:
            conn.writer.write(data)  # one write: head and body in one segment
            while True:
                event = await self._next_event(conn, deadline)
                if isinstance(event, h11.Response):
                    return UpstreamResponse(self, address, conn, event)
                if not isinstance(event, h11.InformationalResponse):  # 1xx: keep waiting
                    raise UpstreamBroken("closed before answering")
        except BaseException:
            conn.close()
            raise

    async def _next_event(self, conn: _Connection, within: float) -> object:
        while True:
            try:
                event = conn.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise UpstreamBroken(f"bad HTTP from the upstream: {type(exc).__name__}") from None
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await asyncio.wait_for(conn.reader.read(READ_SIZE), within)
            except TimeoutError:
                raise UpstreamTimeout("no answer in time") from None
            except OSError as exc:
                raise UpstreamBroken(type(exc).__name__) from None
            conn.h11.receive_data(data)  # b"": the peer closed

    async def _connect(self, address: Address, within: float) -> _Connection:
        try:
            async with asyncio.timeout(within):
                reader, writer = await open_stream(address)
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(str(exc) or type(exc).__name__) from None
        return _Connection(reader, writer)

    def _reuse(self, address: Address) -> _Connection | None:
        idle = self._idle.get(address)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.reusable and now - conn.idle_since < self.keepalive_expiry:
                return conn
            conn.close()
        return None

    def _release(self, address: Address, conn: _Connection) -> None:
        self._prune()
        idle = self._idle.setdefault(address, [])
        if not conn.reusable or len(idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def _prune(self) -> None:
        """Close expired idle connections, also of replicas no longer asked (gone with a deploy)."""
        now = time.monotonic()
        if now - self._pruned_at < self.keepalive_expiry:
            return
        self._pruned_at = now
        for address, conns in list(self._idle.items()):
            keep = [c for c in conns if c.reusable and now - c.idle_since < self.keepalive_expiry]
            for conn in conns:
                if conn not in keep:
                    conn.close()
            if keep:
                self._idle[address] = keep
            else:
                del self._idle[address]

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

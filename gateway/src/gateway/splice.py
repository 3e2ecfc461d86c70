"""The gateway's WebSocket transport: forward the upgrade, then splice bytes both ways.

uvicorn hands every WebSocket upgrade to this protocol (``ws=GatewayWebSocketProtocol``) once the
gateway's HTTP protocol (front.py) has admitted it: head limits, caps, RFC 6455 checks and the Origin are
settled before this protocol runs, so a bad request never reaches an upstream. For a routed
path it opens a TCP connection to an upstream replica, forwards the client's upgrade request (path, query
string, subprotocols and extensions unchanged, X-Forwarded-For set) and relays the upstream's 101. From
then on both ends speak the same framing, so bytes are copied as they arrive: no frame is decoded or
re-encoded, close codes and reasons pass through untouched, and TCP flow control carries backpressure
from a slow client to its upstream. The gateway only writes frames of its own:
- 4004 for a path no route matches (served by the FastAPI app's catch-all route);
- 1013 when no replica accepts the connection;
- 1012 when the upstream vanishes mid-session without a close frame (the service restarted);
- 1011 when the upstream answers the upgrade with something that is not a WebSocket;
- 1001 when the gateway itself shuts down.
"""

import asyncio
import logging
import time
from typing import Any

from realtime.close_codes import CloseCode
from realtime.transport import GracefulWebSocketProtocol

from gateway.admission import Ticket
from gateway.frames import FrameTracker, accept_key, close_frame
from gateway.proxy import Proxy, forwarded_headers
from gateway.upstreams import Address, UpstreamPool, open_transport

logger = logging.getLogger("gateway.access")

MAX_RESPONSE_HEAD = 16 * 1024
REQUEST_START = b"x-request-start"
MAX_EARLY_BYTES = 256 * 1024  # client bytes that may arrive before the upstream's 101 is relayed
CLOSE_WAIT = 2.0  # how long to wait for a client's close reply after the gateway closed
# After the upstream's close frame went to the client, a client that keeps sending for AFTER_CLOSE_GRACE
# seconds without answering it is not reading: from then on, every AFTER_CLOSE_BURST bytes the gateway
# stops reading it for AFTER_CLOSE_PAUSE seconds. The client's writes then block, it reads the close and
# answers, as it would against the service directly (which reads slower than the gateway copies);
# without this it waited for the service's 10 s close timeout and saw 1006.
AFTER_CLOSE_GRACE = 0.25
AFTER_CLOSE_BURST = 256 * 1024
AFTER_CLOSE_PAUSE = 0.05


class UpstreamRefused(Exception):
    """This replica did not take this connection (it timed out, hung up, or answered 5xx); try the next
    one. Says nothing about the replica's health: one request cannot mark a replica down."""


class UpstreamUnreachable(UpstreamRefused):
    """No TCP connection to this replica: it is marked down until its health probe answers again."""


class Request:
    """The upgrade request as uvicorn replays it: request line and lower-cased header lines."""

    def __init__(self, raw: bytes) -> None:
        head = raw.split(b"\r\n\r\n", 1)[0]
        lines = head.split(b"\r\n")
        method, target, _ = lines[0].split(b" ", 2)
        self.method = method
        self.target = target  # path and query string, byte for byte as the client sent them
        self.path = target.split(b"?", 1)[0].decode("latin-1")
        self.headers = [tuple(line.split(b": ", 1)) for line in lines[1:] if b": " in line]

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def for_upstream(self, peer: str, trusted: bool) -> bytes:
        headers = forwarded_headers(self.headers, peer, trusted)  # type: ignore[arg-type]
        # When this attempt left the gateway (microseconds, as Heroku and New Relic write it): a replica
        # refuses a join that waited in its queues longer than it may (rooms' ROOM_JOIN_WAIT).
        if not trusted or not any(k == REQUEST_START for k, _ in headers):
            headers = [(k, v) for k, v in headers if k != REQUEST_START]
            headers.append((REQUEST_START, b"t=%d" % (time.time() * 1_000_000)))
        lines = [self.method + b" " + self.target + b" HTTP/1.1"] + [k + b": " + v for k, v in headers]
        return b"\r\n".join(lines) + b"\r\n\r\n"


class UpstreamSide(asyncio.Protocol):
    """The gateway's connection to one upstream replica; reports to the client side it belongs to."""

    def __init__(self, client: "GatewayWebSocketProtocol") -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self._head = bytearray()
        self.upgraded = False
        self.tracker = FrameTracker()  # upstream -> client frames
        self.head_received: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            self.tracker.feed(data)
            self.client.from_upstream(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_RESPONSE_HEAD and not self.head_received.done():
                self.head_received.set_exception(UpstreamRefused("response head too large"))
            return
        head, rest = bytes(self._head[: end + 4]), bytes(self._head[end + 4 :])
        self._head.clear()
        try:
            status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            status = 502
        if status == 101:
            self.upgraded = True
            self.tracker.feed(rest)
            self.client.upstream_upgraded(head + rest)
        if not self.head_received.done():
            self.head_received.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head_received.done():
            self.head_received.set_exception(UpstreamRefused(f"closed during handshake ({exc})"))
        elif self.upgraded:
            self.client.upstream_lost(self.tracker)

    def pause_writing(self) -> None:
        self.client.pause_reading()

    def resume_writing(self) -> None:
        self.client.resume_reading()


class GatewayWebSocketProtocol(asyncio.Protocol):
    """One client WebSocket at the gateway (see the module docstring)."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.proxy: Proxy | None = app_state.get("proxy")
        self.transport: asyncio.Transport | None = None
        self.peer = "-"
        self.request: Request | None = None
        self.upstream: UpstreamSide | None = None
        self.tracker = FrameTracker()  # client -> upstream frames
        self._early = bytearray()
        self._splicing = False
        self._closing = False  # the gateway sent (or is sending) its own close to the client
        self._counted = False
        self._pool: UpstreamPool | None = None  # the upstream being spliced to (for its metrics)
        self._task: asyncio.Task[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._delegate: asyncio.Protocol | None = None  # the ASGI WebSocket for unrouted paths
        self._holds: set[str] = set()  # why the client's reads are paused: "upstream", "after-close"
        self._after_close = 0  # client bytes since the last after-close pause
        self._close_seen_at = 0.0  # when the client was first seen sending after the upstream's close
        self.ticket: Ticket | None = None  # this connection's place in the gateway's counts (front.py)

    # --- transport callbacks from the client side -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "-"
        self.server_state.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._splicing:
            self.tracker.feed(data)
            self.upstream.transport.write(data)  # type: ignore[union-attr]
            if self.upstream.tracker.saw_close and not self.tracker.saw_close:  # type: ignore[union-attr]
                self._slow_down_after_close(len(data))
            return
        if self._delegate is not None:
            self._delegate.data_received(data)
            return
        if self.request is None:
            self._start(data)
            return
        if self._closing:
            self.tracker.feed(data)  # wait for the client's close reply, then hang up
            if self.tracker.saw_close:
                self._hang_up()
            return
        self._early += data
        if len(self._early) > MAX_EARLY_BYTES:
            self._close_client(CloseCode.MESSAGE_TOO_BIG, "too much data before the upstream answered")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ticket is not None:
            self.ticket.release()
        if self._delegate is not None:
            self._delegate.connection_lost(exc)
            return
        self.server_state.connections.discard(self)
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()  # the upstream sees the client go, as it would directly
        self._uncount()

    def pause_writing(self) -> None:
        if self._delegate is not None:
            self._delegate.pause_writing()
        elif self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._delegate is not None:
            self._delegate.resume_writing()
        elif self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    def shutdown(self) -> None:
        """The gateway is stopping: tell the client 1001 (reconnect elsewhere) and the upstream too."""
        if self._delegate is not None:
            self._delegate.shutdown()  # type: ignore[attr-defined]
            return
        upstream = self.upstream
        if not self._splicing or upstream is None:
            if self._task is not None and not self._task.done():
                self._task.cancel()  # still connecting: the client has not had its 101 yet
                self._handshake_and_close(CloseCode.GOING_AWAY, "gateway shutting down")
            return
        self._splicing = False
        if upstream.transport is not None:
            if self.tracker.at_boundary:
                upstream.transport.write(
                    close_frame(CloseCode.GOING_AWAY, "gateway shutting down", masked=True)
                )
            upstream.transport.close()
        if upstream.tracker.at_boundary:
            self._close_client(CloseCode.GOING_AWAY, "gateway shutting down")
        elif self.transport is not None:
            self.transport.close()

    # --- called by the client's own reads and by the upstream side -------------------------------
    def pause_reading(self, reason: str = "upstream") -> None:
        if not self._holds and self.transport is not None:
            self.transport.pause_reading()
        self._holds.add(reason)

    def resume_reading(self, reason: str = "upstream") -> None:
        self._holds.discard(reason)
        if not self._holds and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _slow_down_after_close(self, size: int) -> None:
        loop = asyncio.get_running_loop()
        if not self._close_seen_at:
            self._close_seen_at = loop.time()
        self._after_close += size
        if (
            self._after_close >= AFTER_CLOSE_BURST
            and "after-close" not in self._holds
            and loop.time() - self._close_seen_at > AFTER_CLOSE_GRACE
        ):
            self._after_close = 0
            self.pause_reading("after-close")
            loop.call_later(AFTER_CLOSE_PAUSE, self.resume_reading, "after-close")

    def from_upstream(self, data: bytes) -> None:
        if self.transport is not None and not self._closing:
            self.transport.write(data)

    def upstream_upgraded(self, head_and_frames: bytes) -> None:
        """The upstream said 101: relay it and everything after it, then splice."""
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(head_and_frames)
        self._splicing = True
        self._count()
        if self._early:
            early, self._early = bytes(self._early), bytearray()
            self.data_received(early)

    def upstream_lost(self, upstream_tracker: FrameTracker) -> None:
        """The upstream's TCP connection ended. After a close handshake that is normal; else 1012."""
        self._splicing = False
        self._uncount()
        if self.transport is None or self.transport.is_closing() or self._closing:
            return
        if upstream_tracker.saw_close:
            self.transport.close()  # the close frame went through already: the session is over
        elif upstream_tracker.at_boundary:
            logger.warning("%s - upstream of %s vanished mid-session", self.peer, self._path)
            self._close_client(CloseCode.SERVICE_RESTART, "upstream restarted")
        else:
            self._hang_up()  # cut mid-frame: no valid frame can follow, drop the connection

    # --- handshake -----------------------------------------------------------------------------
    @property
    def _path(self) -> str:
        return self.request.path if self.request is not None else "?"

    def _start(self, raw: bytes) -> None:
        self.request = Request(raw)
        pool = self.proxy.pool_for(self.request.path) if self.proxy is not None else None
        if pool is None:
            self._delegate_to_app(raw)  # the FastAPI app answers unknown paths with 4004
            return
        self._task = asyncio.create_task(self._connect(pool), name=f"upstream {self.request.path}")

    def _delegate_to_app(self, raw: bytes) -> None:
        self.server_state.connections.discard(self)
        delegate = GracefulWebSocketProtocol(
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        self._delegate = delegate
        delegate.connection_made(self.transport)  # type: ignore[arg-type]
        delegate.data_received(raw)

    async def _connect(self, pool: UpstreamPool) -> None:
        proxy, request = self.proxy, self.request
        if proxy is None or request is None:
            return
        self._pool = pool
        settings = proxy.settings
        for address in pool.candidates():
            head = request.for_upstream(self.peer, proxy.trusts(self.peer))  # stamped per attempt
            try:
                status = await self._try_upstream(address, head, settings)
            except UpstreamRefused as exc:
                if isinstance(exc, UpstreamUnreachable):
                    pool.mark(address, False)
                logger.info("%s - upstream %s %s:%d refused (%s)", self.peer, pool.name, *address, exc)
                continue
            except Exception:
                logger.exception("%s - gateway error while connecting %s", self.peer, self._path)
                self._handshake_and_close(CloseCode.INTERNAL_ERROR, "gateway error")
                return
            if status == 101:
                logger.info(
                    '%s - "WebSocket %s" -> %s %s:%d',
                    self.peer,
                    request.target.decode("latin-1"),
                    pool.name,
                    *address,
                )
                return
            logger.warning("%s - upstream %s %s:%d answered %d", self.peer, pool.name, *address, status)
            self._handshake_and_close(CloseCode.INTERNAL_ERROR, "upstream is not a WebSocket")
            return
        logger.warning("%s - no upstream for %s accepted the connection", self.peer, self._path)
        proxy.no_upstream.inc()
        self._handshake_and_close(CloseCode.TRY_AGAIN_LATER, "no upstream available")

    async def _try_upstream(self, address: Address, head: bytes, settings: Any) -> int:
        """Connect to one replica and forward the upgrade; returns the upstream's HTTP status."""
        side = UpstreamSide(self)
        status = 0
        try:
            try:
                async with asyncio.timeout(settings.upstream_connect_timeout):
                    await open_transport(address, lambda: side)
            except (OSError, TimeoutError) as exc:
                raise UpstreamUnreachable(str(exc) or type(exc).__name__) from None
            self.upstream = side
            side.transport.write(head)  # type: ignore[union-attr]
            try:
                async with asyncio.timeout(settings.upstream_handshake_timeout):
                    status = await side.head_received
            except TimeoutError:
                raise UpstreamRefused("handshake timed out") from None
            if status >= 500:
                raise UpstreamRefused(f"HTTP {status}")
            return status
        finally:
            if status != 101:  # refused, cancelled, or not a WebSocket: this replica is done with
                self.upstream = None
                if side.transport is not None:
                    side.transport.close()

    # --- frames of the gateway's own ---------------------------------------------------------
    def _handshake_and_close(self, code: CloseCode, reason: str) -> None:
        """Complete the handshake ourselves so that the client can SEE the close code."""
        if self.transport is None or self.transport.is_closing() or self.request is None:
            return
        key = (self.request.header(b"sec-websocket-key") or b"").decode("latin-1")
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key).encode("ascii") + b"\r\n\r\n"
        )
        self.tracker = FrameTracker()  # what the client sends from now on is framed
        self._early.clear()
        self._close_client(code, reason)

    def _close_client(self, code: CloseCode, reason: str) -> None:
        if self.transport is None or self.transport.is_closing() or self._closing:
            return
        self._closing = True
        self.transport.write(close_frame(code, reason))
        self._close_timer = asyncio.get_running_loop().call_later(CLOSE_WAIT, self._hang_up)

    def _hang_up(self) -> None:
        """End the client's TCP connection; drop what it has not read rather than wait for it forever."""
        if self.transport is None:
            return
        if self.transport.get_write_buffer_size():
            self.transport.abort()  # a client that stopped reading would hold this connection open
        else:
            self.transport.close()

    def _count(self) -> None:
        if not self._counted and self.proxy is not None:
            self._counted = True
            self.proxy.connections += 1
            if self._pool is not None:
                self._pool.splices_open.inc()

    def _uncount(self) -> None:
        if self._counted and self.proxy is not None:
            self._counted = False
            self.proxy.connections -= 1
            if self._pool is not None:
                self._pool.splices_open.dec()

"""Bounded HTTP request heads: every service and the gateway parse requests with this uvicorn protocol.

uvicorn's h11 protocol with the limits a public server needs, all checked before the app (or a
WebSocket protocol, or the gateway's upstream) sees the request:
- the head is never buffered beyond ``max_head_size``: h11 stops at its incomplete-event limit -> 431;
- more than ``max_headers`` header fields, or one field line longer than websockets parses -> 431;
- a request target longer than ``max_target_length`` -> 414;
- a connection that has not sent a complete head ``handshake_timeout`` seconds after it opened (or
  after its previous response) is closed with 408: slow senders cannot hold file descriptors.

A refusal is written with ``Connection: close``; then the write side is shut and whatever the client
still sends is read and dropped for a moment, so that it can read the status instead of a reset.
Subclasses add checks of their own through ``check_request`` (the gateway's caps, origins, RFC 6455).
"""

import asyncio
import http
import logging
from dataclasses import dataclass, replace
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from websockets.http11 import MAX_LINE_LENGTH

logger = logging.getLogger("realtime.heads")

REFUSAL_LINGER = 1.0  # seconds a refused connection may still send (dropped) before it is closed


@dataclass(frozen=True, slots=True)
class HeadLimits:
    max_head_size: int = 16 * 1024
    max_headers: int = 100
    max_target_length: int = 4 * 1024
    handshake_timeout: float = 10.0

    def forwarded(self) -> "HeadLimits":
        """The limits a service behind the gateway applies: room for the X-Forwarded-* fields the
        gateway adds, so that a head the gateway let through is never refused by its upstream."""
        return replace(
            self,
            max_head_size=self.max_head_size + FORWARDING_SLACK_BYTES,
            max_headers=self.max_headers + FORWARDING_SLACK_HEADERS,
        )


FORWARDING_SLACK_HEADERS = 4  # the gateway adds X-Forwarded-For and X-Forwarded-Proto
FORWARDING_SLACK_BYTES = 1024  # ... and may extend a trusted proxy's X-Forwarded-For chain


@dataclass(frozen=True, slots=True)
class Refusal:
    """An HTTP answer instead of the app's: status, a short text, extra headers."""

    status: int
    text: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    content_type: bytes = b"text/plain; charset=utf-8"  # of ``text`` (an HTTP API answers JSON)

    def encode(self) -> bytes:
        body = (self.text + "\n").encode("utf-8")
        phrase = http.HTTPStatus(self.status).phrase.encode("ascii")
        lines = [b"HTTP/1.1 %d %s" % (self.status, phrase)]
        lines += [k + b": " + v for k, v in self.headers]
        lines += [
            b"content-type: " + self.content_type,
            b"content-length: %d" % len(body),
            b"connection: close",
        ]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


def head_refusal(event: h11.Request, limits: HeadLimits) -> Refusal | None:
    """What is wrong with a complete request head, by the limits (None: nothing)."""
    if len(event.target) > limits.max_target_length:
        return Refusal(414, f"request target longer than {limits.max_target_length} bytes")
    if len(event.headers) > limits.max_headers:
        return Refusal(431, f"more than {limits.max_headers} header fields")
    size = len(event.method) + len(event.target) + 12
    for name, value in event.headers:
        line = len(name) + len(value) + 4
        if line > MAX_LINE_LENGTH:
            return Refusal(431, f"a header field longer than {MAX_LINE_LENGTH} bytes")
        size += line
    if size > limits.max_head_size:
        return Refusal(431, f"request head larger than {limits.max_head_size} bytes")
    return None


class _Refused(h11.RemoteProtocolError):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.text, error_status_hint=refusal.status)
        self.refusal = refusal


class _CheckedConnection(h11.Connection):
    """h11's server connection that runs a check on every request head before uvicorn acts on it."""

    def __init__(self, check: Any, max_incomplete_event_size: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_incomplete_event_size)
        self._check = check
        self.refusal: Refusal | None = None

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            if self.refusal is None:
                self.refusal = Refusal(exc.error_status_hint, str(exc))
            raise
        if isinstance(event, h11.Request):
            refusal = self._check(event)
            if refusal is not None:
                self.refusal = refusal
                raise _Refused(refusal)
        return event


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the head limits above (``config.head_limits``, a ``HeadLimits``).

    A service applies them with room for what the gateway adds (``HeadLimits.forwarded``); the gateway's
    own protocol (``behind_gateway = False``) applies them exactly."""

    behind_gateway = True

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits: HeadLimits = getattr(config, "head_limits", None) or HeadLimits()
        self.limits = limits.forwarded() if self.behind_gateway else limits
        self.conn = _CheckedConnection(self.check_request, self.limits.max_head_size)
        self.head_timer: asyncio.TimerHandle | None = None
        self.refused = False

    # --- the head deadline ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        on_unix_socket = isinstance(transport.get_extra_info("sockname"), str)
        if self.behind_gateway and self.client is None and on_unix_socket:
            # A Unix-socket peer has no address; "unix" lets FORWARDED_ALLOW_IPS trust the gateway there, so
            # plain HTTP sees the client the gateway names, as WebSockets do (realtime.serve).
            self.client = ("unix", 0)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # refused: what the client still sends is dropped until the linger ends
        if self.head_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()  # the next request on a kept-alive connection has started
        super().data_received(data)

    def eof_received(self) -> bool | None:
        return None  # close our side too (a refused client that hung up is done)

    def check_request(self, event: h11.Request) -> Refusal | None:
        """A complete head arrived: the deadline is met; refuse it if it breaks a limit."""
        self._cancel_head_timer()
        return head_refusal(event, self.limits)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self.head_timer = self.loop.call_later(self.limits.handshake_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # the app is answering a request: not a slow head
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(Refusal(408, "request head not complete in time").encode())
            self.transport.abort()

    # --- refusals ------------------------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this for every head h11 or ``check_request`` rejects: answer with its status."""
        refusal = self.conn.refusal or Refusal(400, msg)
        if refusal.status >= 500 or refusal.status in (414, 431):
            logger.warning("%s - refused a request head: %d %s", self._peer, refusal.status, refusal.text)
        self.refuse(refusal)

    def refuse(self, refusal: Refusal) -> None:
        self._cancel_head_timer()
        self.refused = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(refusal.encode())
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(REFUSAL_LINGER, transport.abort)
        else:
            transport.close()

    @property
    def _peer(self) -> str:
        return self.client[0] if self.client else "-"

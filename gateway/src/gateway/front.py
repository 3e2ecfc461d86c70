"""The gateway's HTTP protocol: bounded heads (realtime.heads), then admission (admission.py), then the
upgrade goes to ``GatewayWebSocketProtocol`` (splice.py), which is the first to contact an upstream."""

import asyncio
import functools
import json
import logging
import time
from typing import Any
from urllib.parse import unquote

import h11
from realtime.heads import BoundedH11Protocol, Refusal
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.admission import Ticket, header, is_websocket_attempt, reserve_refusal, upgrade_refusal
from gateway.http_forward import PEER
from gateway.proxy import Proxy

logger = logging.getLogger("gateway.admission")

LOG_EVERY = 10.0  # seconds between two log lines about refused connections (a flood is one line)


class RefusalLog:
    """Counts refusals by status and logs them at most once every LOG_EVERY seconds."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.logged_at = 0.0

    def note(self, refusal: Refusal, peer: str) -> None:
        self.counts[refusal.status] = self.counts.get(refusal.status, 0) + 1
        now = time.monotonic()
        if now - self.logged_at >= LOG_EVERY:
            self.logged_at = now
            summary = ", ".join(f"{n} x {status}" for status, n in sorted(self.counts.items()))
            logger.warning("refused connections (last from %s: %s): %s", peer, refusal.text, summary)
            self.counts.clear()


REFUSALS = RefusalLog()

# A refusal's status -> its reason in the refusals metric: the caps (per process, per address, the health
# reserve, a slow sender evicted at the cap), a browser origin, everything else a malformed request
# (RFC 6455 400/426, head limits 414/431, what h11 rejects).
CAP_STATUSES = frozenset((408, 429, 503))
ORIGIN_STATUS = 403
BODY_STATUS = 413  # a forwarded HTTP request's body over HTTP_MAX_BODY: counted as an HTTP answer instead


def refusal_reason(status: int) -> str:
    if status in CAP_STATUSES:
        return "cap"
    return "origin" if status == ORIGIN_STATUS else "malformed"


def body_refusal(proxy: Proxy, event: h11.Request) -> Refusal | None:
    """413 for a forwarded request whose Content-Length is over HTTP_MAX_BODY, before its body is read
    (a refusal lingers, so the client can read it while it still sends). A chunked body is bounded where
    it is read (http_forward.py)."""
    length = header(event, b"content-length")  # h11 has checked that it is a number
    if length is None or int(length) <= proxy.settings.http_max_body:
        return None
    pool = proxy.http_pool_for(unquote(event.target.split(b"?", 1)[0].decode("latin-1")))
    if pool is None:
        return None
    proxy.http_answered(pool, BODY_STATUS)
    detail = json.dumps({"detail": "request body too large"})
    return Refusal(BODY_STATUS, detail, content_type=b"application/json")


async def _keep_peer(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Keep the TCP peer in the scope: uvicorn's proxy headers replace ``client`` with the address a
    trusted proxy names, and forwarding needs to know who connected (to extend or replace the chain)."""
    scope[PEER] = scope.get("client")
    await app(scope, receive, send)


class GatewayHttpProtocol(BoundedH11Protocol):
    behind_gateway = False  # the public door applies the limits exactly

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.proxy: Proxy | None = app_state.get("proxy")
        self.ticket: Ticket | None = None
        self.app = functools.partial(_keep_peer, self.app)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.proxy is None or self.internal:
            return  # operators on the internal port are not clients: no caps, no WebSockets (check_request)
        peer = self.client[0] if self.client else None
        trusted = peer is None or self.proxy.trusts(peer)  # a proxy's clients are known from its head
        self.ticket, refusal = self.proxy.admission.admit(None if trusted else peer)
        self.ticket.evict = self._evicted
        if refusal is not None:
            REFUSALS.note(refusal, self._peer)
            self.refuse(refusal)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ticket is not None:
            self.ticket.release()
        super().connection_lost(exc)

    def _evicted(self) -> None:
        """A newcomer took this slow sender's place at the cap."""
        if self.transport is not None and not self.transport.is_closing():
            self.refused = True
            self._count_refusal(408)
            self.transport.write(Refusal(408, "request head not complete in time").encode())
            self.transport.abort()

    def refuse(self, refusal: Refusal) -> None:
        if not self.refused:  # once per connection
            self._count_refusal(refusal.status)
        super().refuse(refusal)

    def _count_refusal(self, status: int) -> None:
        if self.proxy is not None and status != BODY_STATUS and not self.internal:
            self.proxy.refusals[refusal_reason(status)].inc()

    @property
    def internal(self) -> bool:
        """On the internal (operator) port (realtime.operator), which splices nothing."""
        sockname = self.transport.get_extra_info("sockname") if self.transport else None
        port = self.proxy.settings.internal_port if self.proxy else None
        return isinstance(sockname, tuple) and sockname[1] == port

    def check_request(self, event: h11.Request) -> Refusal | None:
        if self.ticket is not None:
            self.ticket.head_done()
        if self.internal and is_websocket_attempt(event):
            return super().check_request(event) or Refusal(404, "no WebSockets on the internal port")
        refusal = super().check_request(event) or self._admission_refusal(event)
        if refusal is not None and refusal.status in (403, 429, 503):
            REFUSALS.note(refusal, self._peer)
        return refusal

    def _admission_refusal(self, event: h11.Request) -> Refusal | None:
        proxy, ticket = self.proxy, self.ticket
        if proxy is None or ticket is None:
            return None
        if ticket.in_reserve and (refusal := reserve_refusal(event)) is not None:
            return refusal
        if ticket.address is None:
            refusal = proxy.admission.assign(ticket, proxy.client_address(self._peer, event.headers))
            if refusal is not None:
                return refusal
        if is_websocket_attempt(event):
            return upgrade_refusal(event) or proxy.origins.refusal(event)
        return body_refusal(proxy, event)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        """Hand the connection, and its place in the counts, to the WebSocket protocol."""
        ticket, self.ticket = self.ticket, None
        super().handle_websocket_upgrade(event)
        protocol = self.transport.get_protocol()
        if ticket is not None:
            if hasattr(protocol, "ticket"):
                protocol.ticket = ticket  # released in its connection_lost
            else:
                ticket.release()

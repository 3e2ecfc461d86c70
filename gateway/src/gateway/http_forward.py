"""Plain HTTP under the ``HTTP_ROUTES`` prefixes (``/api/`` -> rooms), forwarded to the upstream's replicas.

The request has already passed the gateway's HTTP protocol (front.py): head limits, the connection caps,
and a Content-Length over ``HTTP_MAX_BODY`` (413 there, before a byte of the body is read). Here:
- the body is read up to ``HTTP_MAX_BODY`` (a chunked body over it: 413, the connection then closes) and
  within ``HTTP_FORWARD_TIMEOUT`` (408);
- the replicas are tried in ``UpstreamPool.candidates()`` order, as for WebSockets. A replica that cannot
  be connected to is marked down and the next one tried: nothing was sent, so that is always safe. None
  reachable: 503 with ``Retry-After``;
- once sent, a request is never sent again: it may have been acted on (a publish stored). An upstream
  that does not answer within ``HTTP_FORWARD_TIMEOUT``: 504; one that hangs up or breaks HTTP: 502.
  Neither marks the replica down, nor does any answer it gives (4xx, 5xx): only failed connects and the
  health probe do;
- method, path and query string go unchanged (byte for byte), with the body and the end-to-end header
  fields; hop-by-hop fields are dropped both ways, Host names the upstream, X-Forwarded-For and -Proto
  are set exactly as for a spliced WebSocket (proxy.forwarded_headers). The answer's status, end-to-end
  fields and body come back as the upstream sent them (streamed, not decoded).
No header field is ever logged (an ``Authorization`` goes to the upstream and nowhere else), and the
gateway's own error answers say what happened without echoing anything of the request.

The requests go out through ``upstream_http.UpstreamClient`` (h11 over asyncio streams, idle connections
kept per replica for a short while, so replicas that come and go with DNS leave nothing behind): no cookie
jar, no default header fields, no proxy settings from the environment, none of which a gateway may have.
"""

import asyncio
import logging
import time

from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from gateway.proxy import Proxy, forwarded_headers
from gateway.upstream_http import (
    ConnectFailed,
    Outgoing,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from gateway.upstreams import Address, UpstreamPool, shown

logger = logging.getLogger("gateway.http")

Headers = list[tuple[bytes, bytes]]
PEER = "gateway.peer"  # scope key: the TCP peer, set by front.py before uvicorn's proxy headers apply
RETRY_AFTER = "5"  # seconds a client told "no upstream available" should wait
# Below the services' keep-alive timeout (uvicorn's 5 s): the gateway drops an idle connection before the
# service does, so it never sends a request on a connection the service is closing.
KEEPALIVE_EXPIRY = 2.0
KEEPALIVE_CONNECTIONS = 100  # idle connections kept per replica; open ones are bounded by admission
HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade")
)  # and every Proxy-* field, and every field the Connection header names (RFC 9110 7.6.1)
REQUEST_OWN = frozenset((b"host", b"content-length", b"expect"))  # set anew (or answered) by the gateway
RESPONSE_OWN = frozenset((b"date", b"server"))  # uvicorn writes the gateway's own


def end_to_end(headers: Headers, own: frozenset[bytes]) -> Headers:
    """``headers`` (any case) without hop-by-hop fields and the ones in ``own``; names lower-cased."""
    lowered = [(k.lower(), v) for k, v in headers]
    named = {t.strip().lower() for k, v in lowered if k == b"connection" for t in v.split(b",")}
    return [
        (k, v)
        for k, v in lowered
        if k not in HOP_BY_HOP and k not in own and k not in named and not k.startswith(b"proxy-")
    ]


class Unreachable(Exception):
    """No replica of the upstream took a connection."""


class Forwarder:
    """Sends requests to an upstream's replicas; ``route(pool)`` is the ASGI endpoint of one HTTP route."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        settings = proxy.settings
        self.max_body = settings.http_max_body
        self.client = UpstreamClient(
            connect_timeout=settings.upstream_connect_timeout,
            timeout=settings.http_forward_timeout,
            keepalive_expiry=KEEPALIVE_EXPIRY,
            max_idle=KEEPALIVE_CONNECTIONS,
        )

    def route(self, pool: UpstreamPool) -> "ForwardedRoute":
        return ForwardedRoute(self, pool)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def send(self, pool: UpstreamPool, request: Outgoing) -> tuple[UpstreamResponse, Address]:
        """Send to the first replica that takes a connection; the response's body is still to be read
        (``aiter_raw``, then ``aclose``). Raises ``Unreachable``, or the UpstreamError once it was sent."""
        for address in pool.candidates():
            try:
                return await self.send_to(pool, address, request), address
            except ConnectFailed as exc:
                logger.info("upstream %s %s unreachable (%s)", pool.name, shown(address), exc)
        raise Unreachable(pool.name)

    async def send_to(
        self, pool: UpstreamPool, address: Address, request: Outgoing, answer_within: float | None = None
    ) -> UpstreamResponse:
        """Send to one replica; one that cannot be connected to is marked down (ConnectFailed raised)."""
        try:
            return await self.client.request(address, request, answer_within)
        except ConnectFailed:
            pool.mark(address, False)  # nothing was sent: the next replica may take it
            raise


class ForwardedRoute:
    """The ASGI endpoint of one HTTP route: every method, every path under its prefix."""

    def __init__(self, forwarder: Forwarder, pool: UpstreamPool) -> None:
        self.forwarder = forwarder
        self.pool = pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = await self._forward(scope, receive, send)
        if status is not None:
            self.forwarder.proxy.http_answered(self.pool, status)

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> int | None:
        forwarder, pool = self.forwarder, self.pool
        body = await self._body(receive)
        if isinstance(body, int):
            if body == 0:
                return None  # the client went away
            text = "request body too large" if body == 413 else "request body not received in time"
            await answer(scope, receive, send, body, text, close=True)
            return body
        proxy = forwarder.proxy
        peer = _peer(scope)
        headers = forwarded_headers(end_to_end(scope["headers"], REQUEST_OWN), peer, proxy.trusts(peer))
        target = scope.get("raw_path") or scope["path"].encode("latin-1")
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        request = Outgoing(scope["method"].encode("ascii"), target, headers, body)
        started = time.monotonic()
        try:
            response, address = await forwarder.send(pool, request)
        except Unreachable:
            logger.warning("%s - no replica of %s answered %s", peer, pool.name, scope["path"])
            return await answer(scope, receive, send, 503, "no upstream available", retry_after=True)
        except UpstreamTimeout:
            seconds = time.monotonic() - started
            logger.warning("%s - %s timed out on %s after %.1f s", peer, pool.name, scope["path"], seconds)
            return await answer(scope, receive, send, 504, "upstream timed out")
        except UpstreamError as exc:
            # Only the error's kind: once sent, its text could quote what the request carried.
            logger.warning("%s - %s failed on %s (%s)", peer, pool.name, scope["path"], type(exc).__name__)
            return await answer(scope, receive, send, 502, "upstream failed")
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": end_to_end(response.headers, RESPONSE_OWN),
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except UpstreamError as exc:
            # The status went out already: all that is left is to cut the connection (uvicorn does,
            # seeing the exception), so the client cannot take a part of the body for all of it.
            where, why = f"{pool.name} {shown(address)}", type(exc).__name__
            logger.warning("%s - %s cut its answer to %s (%s)", peer, where, scope["path"], why)
            raise UpstreamCut from None
        finally:
            await response.aclose()
        return response.status_code

    async def _body(self, receive: Receive) -> bytes | int:
        """The request body, or the status to answer instead: 413 over the bound, 408 too slow, 0 gone."""
        limit = self.forwarder.max_body
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.forwarder.proxy.settings.http_forward_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return 0
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        return 413
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            return 408


class UpstreamCut(Exception):
    """The upstream's answer broke off after its status was sent to the client."""


async def answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    detail: str,
    *,
    retry_after: bool = False,
    close: bool = False,
) -> int:
    """The gateway's own JSON answer, ``{"detail": ...}`` as FastAPI writes its errors."""
    headers = {"Retry-After": RETRY_AFTER} if retry_after else {}
    if close:
        headers["Connection"] = "close"  # what is left of the body is not read
    await JSONResponse({"detail": detail}, status_code=status, headers=headers)(scope, receive, send)
    return status


def _peer(scope: Scope) -> str:
    client = scope.get(PEER, scope.get("client"))
    return client[0] if client else "-"  # "-": no address (a Unix socket), as the splice says

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

One httpx transport carries every TCP replica (httpx keeps a connection pool per address, and idle
connections expire, so replicas that come and go with DNS leave nothing behind); each Unix-socket replica
has its own (the transport is bound to the socket's path). Transports rather than ``httpx.AsyncClient``:
a client keeps a cookie jar (one client's cookies would reach another), adds default header fields and
reads proxy settings from the environment, none of which a gateway may do.
"""

import asyncio
import logging
import time

import httpx
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from gateway.proxy import Proxy, forwarded_headers
from gateway.upstreams import UNIX, Address, UpstreamPool, shown

logger = logging.getLogger("gateway.http")
# httpx logs every request at INFO (the access log says it already) and header tuples at DEBUG.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

Headers = list[tuple[bytes, bytes]]
PEER = "gateway.peer"  # scope key: the TCP peer, set by front.py before uvicorn's proxy headers apply
RETRY_AFTER = "5"  # seconds a client told "no upstream available" should wait
# Below the services' keep-alive timeout (uvicorn's 5 s): the gateway drops an idle connection before the
# service does, so it never sends a request on a connection the service is closing.
KEEPALIVE_EXPIRY = 2.0
KEEPALIVE_CONNECTIONS = 100  # idle connections kept per transport; open ones are bounded by admission
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
        self.timeout = httpx.Timeout(settings.http_forward_timeout, connect=settings.upstream_connect_timeout)
        self._transports: dict[str, httpx.AsyncHTTPTransport] = {}  # "tcp" or a Unix socket's path

    def route(self, pool: UpstreamPool) -> "ForwardedRoute":
        return ForwardedRoute(self, pool)

    async def aclose(self) -> None:
        transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            await transport.aclose()

    def _transport(self, address: Address) -> tuple[httpx.AsyncHTTPTransport, str]:
        """The transport for one replica and the origin to name in its URL (and Host)."""
        host, _ = address
        if host.startswith(UNIX):
            key, origin, uds = host, "http://localhost", host[len(UNIX) :]
        else:
            key, origin, uds = "tcp", f"http://{shown(address)}", None
        transport = self._transports.get(key)
        if transport is None:
            limits = httpx.Limits(
                max_connections=None,  # one per client connection in flight, which admission bounds
                max_keepalive_connections=KEEPALIVE_CONNECTIONS,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            )
            transport = httpx.AsyncHTTPTransport(uds=uds, limits=limits, trust_env=False)
            self._transports[key] = transport
        return transport, origin

    async def send(
        self, pool: UpstreamPool, method: bytes, target: bytes, headers: Headers, body: bytes
    ) -> tuple[httpx.Response, Address]:
        """Send to the first replica that takes a connection; the response's body is still to be read
        (``aiter_raw``, then ``aclose``). Raises ``Unreachable``, or what httpx raised once it was sent."""
        for address in pool.candidates():
            try:
                return await self.send_to(pool, address, method, target, headers, body), address
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                logger.info("upstream %s %s unreachable (%s)", pool.name, shown(address), _why(exc))
        raise Unreachable(pool.name)

    async def send_to(
        self,
        pool: UpstreamPool,
        address: Address,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes,
        deadlines: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """Send to one replica; one that cannot be connected to is marked down (httpx's error raised)."""
        transport, origin = self._transport(address)
        url = httpx.URL(origin, raw_path=target)
        extensions = {"timeout": (deadlines or self.timeout).as_dict()}
        request = httpx.Request(method, url, headers=headers, content=body, extensions=extensions)
        try:
            return await transport.handle_async_request(request)
        except (httpx.ConnectError, httpx.ConnectTimeout):
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
        method = scope["method"].encode("ascii")
        started = time.monotonic()
        try:
            response, address = await forwarder.send(pool, method, target, headers, body)
        except Unreachable:
            logger.warning("%s - no replica of %s answered %s", peer, pool.name, scope["path"])
            return await answer(scope, receive, send, 503, "no upstream available", retry_after=True)
        except httpx.TimeoutException:
            seconds = time.monotonic() - started
            logger.warning("%s - %s timed out on %s after %.1f s", peer, pool.name, scope["path"], seconds)
            return await answer(scope, receive, send, 504, "upstream timed out")
        except httpx.HTTPError as exc:
            # Only the error's kind: once sent, its text could quote what the request carried.
            logger.warning("%s - %s failed on %s (%s)", peer, pool.name, scope["path"], type(exc).__name__)
            return await answer(scope, receive, send, 502, "upstream failed")
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": end_to_end(response.headers.raw, RESPONSE_OWN),
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.HTTPError as exc:
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


def _why(exc: Exception) -> str:
    return str(exc) or type(exc).__name__

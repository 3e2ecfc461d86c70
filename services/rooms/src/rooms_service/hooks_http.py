"""The hooks' HTTP client: HTTP/1.1 POSTs over a pool of keep-alive connections to one URL.

Why not httpx: measured on this 2-core machine, an httpx POST to a local app answering at once costs
3 to 12 ms of client work, a request written in one piece on an asyncio stream 0.2 to 0.8 ms; a hook
sits on every join and every message, so that difference is the whole budget (``python -m bench hooks``).
This does only what a hook needs: one URL (http, or https with the system's trust store), a POST with a
small body, the answer's status and body (Content-Length or chunked, at most ``max_body`` bytes).
No redirects, no proxies, no cookies kept. Timeouts are the caller's (``asyncio.timeout``): a call
cancelled midway closes its connection, never returns it to the pool.
"""

import asyncio
import ssl
from urllib.parse import urlsplit

MAX_HEAD = 16 * 1024  # bytes of status line and headers


class HttpError(Exception):
    """The answer could not be read (the message is safe to log: it never holds a URL or a header)."""


class HttpPool:
    def __init__(self, url: str, size: int, max_body: int) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("a hook URL must be http:// or https:// with a host")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        self._head = f"POST {target} HTTP/1.1\r\nhost: {host_header}\r\n".encode("latin-1")
        self._size = size
        self._max_body = max_body
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """``(status, body)``; a kept connection the server had closed meanwhile is retried once on a
        new one (nothing of the answer was read: the app saw no request, or will see the same
        ``webhook-id`` twice)."""
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = b"%s%scontent-length: %d\r\n\r\n%s" % (self._head, extra.encode("latin-1"), len(body), body)
        while self._idle:
            conn = self._idle.pop()
            try:
                return await self._exchange(conn, request)
            except (ConnectionError, asyncio.IncompleteReadError, HttpError) as exc:
                if isinstance(exc, HttpError) or getattr(exc, "partial", b""):
                    raise
                continue  # a stale keep-alive connection: try the next one, then a new one
        conn = await asyncio.open_connection(self._host, self._port, ssl=self._ssl, limit=MAX_HEAD)
        return await self._exchange(conn, request)

    async def _exchange(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes
    ) -> tuple[int, bytes]:
        reader, writer = conn
        keep = False
        try:
            writer.write(request)
            status, length, chunked, keep = _parse_head(await reader.readuntil(b"\r\n\r\n"))
            if chunked:
                body = await self._chunks(reader)
            elif length is not None:
                if length > self._max_body:
                    raise HttpError("answer too large")
                body = await reader.readexactly(length)
            else:  # no length: the body runs to the end of the connection
                keep = False
                body = b""
                while chunk := await reader.read(self._max_body + 1 - len(body)):
                    body += chunk
                    if len(body) > self._max_body:
                        break
            if len(body) > self._max_body:
                raise HttpError("answer too large")
            return status, body
        except asyncio.LimitOverrunError:
            keep = False
            raise HttpError("answer head too large") from None
        except BaseException:
            keep = False
            raise
        finally:
            if keep and len(self._idle) < self._size:
                self._idle.append(conn)
            else:
                writer.close()

    async def _chunks(self, reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise HttpError("bad chunk") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return bytes(body)
            if len(body) + size > self._max_body:
                raise HttpError("answer too large")
            body += await reader.readexactly(size)
            await reader.readexactly(2)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """(status, content-length, chunked, keep-alive) of an HTTP/1.x answer head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError("not an HTTP/1.x answer")
    status = int(parts[1])
    length: int | None = None
    chunked = False
    keep = parts[0] == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            if not value.isdigit():
                raise HttpError("bad content-length")
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value
        elif name == "connection":
            keep = "close" not in value if keep else "keep-alive" in value
    if 100 <= status < 200 or status in (204, 304):
        length = 0
    return status, length, chunked, keep

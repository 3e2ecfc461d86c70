"""The hooks' HTTP client against a real asyncio server on loopback that answers as apps' servers do."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from rooms_service.hooks_http import HttpError, HttpPool


@contextlib.asynccontextmanager
async def answering(*answers: bytes, close_after: int = 0) -> AsyncIterator[tuple[str, list[bytes]]]:
    """Answers requests in turn (one connection or several); ``close_after``: close each connection after
    that many answers (0: keep it)."""
    seen: list[bytes] = []
    queue = list(answers)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while queue:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.startswith(b"content-length")
                )
                seen.append(head + await reader.readexactly(length))
                writer.write(queue.pop(0))
                await writer.drain()
                served += 1
                if close_after and served >= close_after:
                    break
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/hooks/join?x=1", seen


async def test_a_chunked_and_a_sized_answer_over_one_kept_connection() -> None:
    chunked = b'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n'
    sized = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\nno"
    async with answering(chunked, sized) as (url, seen):
        pool = HttpPool(url, 2, 1000)
        assert await pool.post(b'{"q":1}', {"webhook-id": "m1"}) == (200, b'{"a":1}')
        assert await pool.post(b"{}", {}) == (403, b"no")
        await pool.close()
    assert seen[0].startswith(b"POST /hooks/join?x=1 HTTP/1.1\r\n") and b"webhook-id: m1\r\n" in seen[0]
    assert seen[0].endswith(b'\r\n\r\n{"q":1}')


async def test_a_kept_connection_the_server_closed_is_replaced() -> None:
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    async with answering(ok, ok, close_after=1) as (url, seen):
        pool = HttpPool(url, 2, 1000)
        assert await pool.post(b"{}", {}) == (200, b"ok")
        await asyncio.sleep(0.05)  # the server has closed that connection by now
        assert await pool.post(b"{}", {}) == (200, b"ok")
        await pool.close()
    assert len(seen) == 2


async def test_an_answer_over_the_bound_is_refused() -> None:
    big = b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n" + b"x" * 5000
    async with answering(big) as (url, _):
        pool = HttpPool(url, 1, 1000)
        with pytest.raises(HttpError):
            await pool.post(b"{}", {})
        await pool.close()


def test_only_http_urls() -> None:
    with pytest.raises(ValueError):
        HttpPool("ftp://127.0.0.1/x", 1, 10)


async def test_an_answer_without_a_length_runs_to_the_end_of_its_connection() -> None:
    async with answering(b"HTTP/1.0 200 OK\r\n\r\n" + b'{"result":' + b'"allow"}', close_after=1) as (url, _):
        pool = HttpPool(url, 1, 1000)
        assert await pool.post(b"{}", {}) == (200, b'{"result":"allow"}')
        await pool.close()

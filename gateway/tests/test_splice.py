"""The gateway in-process under uvicorn, in front of a real websockets server as its upstream."""

import asyncio
import contextlib
import json
import socket

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.splice import GatewayWebSocketProtocol
from realtime.close_codes import CloseCode
from realtime.testing import free_port, serving
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

DEADLINE = 10.0


async def upstream_handler(conn) -> None:
    """Echo with the request path; ``/close/<code>`` closes with that code; ``/abort`` drops TCP."""
    path = conn.request.path
    if path.startswith("/close/"):
        await conn.close(int(path.rsplit("/", 1)[1]), "as asked")
        return
    async for message in conn:
        if message == "abort":
            conn.transport.abort()
            return
        await conn.send(
            json.dumps({"path": path, "message": message, "xff": conn.request.headers.get("X-Forwarded-For")})
        )


@contextlib.asynccontextmanager
async def gateway_with_upstream():
    upstream = await ws_serve(upstream_handler, "127.0.0.1", 0, compression=None)
    up_port = upstream.sockets[0].getsockname()[1]
    # bound but never listening: refuses every connection, and no other test can take the port meanwhile
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    gw_port = free_port()
    settings = GatewaySettings(
        port=gw_port,
        bus_url="memory://",
        access_log=False,
        upstream_probe_interval=0.2,
        routes={"/echo": "echo", "/close/{code}": "echo", "/abort": "echo", "/dead": "dead"},
        upstreams={"echo": [f"127.0.0.1:{up_port}"], "dead": [f"127.0.0.1:{dead_port}"]},
        http_routes={},
    )
    try:
        async with serving(create_app(settings), settings, ws=GatewayWebSocketProtocol) as running:
            yield running.url
    finally:
        upstream.close()
        await upstream.wait_closed()
        dead.close()


async def close_of(conn) -> tuple[int, str]:
    try:
        async with asyncio.timeout(DEADLINE):
            while True:
                await conn.recv()
    except ConnectionClosed as exc:
        return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")
    raise AssertionError("no close")


async def test_frames_and_query_reach_the_upstream_with_the_client_address() -> None:
    async with gateway_with_upstream() as url, connect(f"{url}/echo?a=1&b=2") as conn:
        await conn.send("hi")
        reply = json.loads(await asyncio.wait_for(conn.recv(), DEADLINE))
        assert reply == {"path": "/echo?a=1&b=2", "message": "hi", "xff": "127.0.0.1"}


async def test_upstream_close_codes_pass_through() -> None:
    async with gateway_with_upstream() as url:
        for code in (4003, 1008, 3000):
            async with connect(f"{url}/close/{code}") as conn:
                assert await close_of(conn) == (code, "as asked")


async def test_upstream_dropping_tcp_mid_session_is_1012() -> None:
    async with gateway_with_upstream() as url, connect(f"{url}/abort") as conn:
        await conn.send("abort")
        assert await close_of(conn) == (CloseCode.SERVICE_RESTART, "upstream restarted")


async def test_no_upstream_is_1013_and_unknown_path_is_4004() -> None:
    async with gateway_with_upstream() as url:
        async with connect(f"{url}/dead") as conn:
            assert await close_of(conn) == (CloseCode.TRY_AGAIN_LATER, "no upstream available")
        async with connect(f"{url}/elsewhere") as conn:
            assert await close_of(conn) == (CloseCode.NOT_FOUND, "no such path")

"""Plain HTTP under /api/ through the gateway in-process (its own HTTP protocol), to real small upstreams."""

import asyncio
import contextlib
import itertools
import json
import logging
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import httpx
import psutil
import pytest
import uvicorn
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from gateway.app import create_app
from gateway.front import GatewayHttpProtocol
from gateway.settings import GatewaySettings
from gateway.splice import GatewayWebSocketProtocol
from prometheus_client import REGISTRY
from pydantic import BaseModel
from realtime.close_codes import CloseCode
from realtime.logs import RedactingFilter
from realtime.serve import unix_listener, uvicorn_config
from realtime.settings import ServiceSettings
from realtime.testing import closed_with, free_port, serving
from websockets.asyncio.client import connect

DEADLINE = 10.0
SECRET = "Bearer s3cret-never-logged-4b1d"
MAX_BODY = 4096
SHORT_TIMEOUT = 0.5  # seconds: /api/slow answers after 1.5


@dataclass
class Upstream:
    name: str
    target: str = ""  # as UPSTREAMS spells it
    hits: dict[str, int] = field(default_factory=dict)  # path -> requests that reached it


class Message(BaseModel):
    text: str


def upstream_app(upstream: Upstream) -> FastAPI:
    app = FastAPI(title=upstream.name)
    bearer = HTTPBearer()

    @app.middleware("http")
    async def count(request: Request, call_next):
        upstream.hits[request.url.path] = upstream.hits.get(request.url.path, 0) + 1
        return await call_next(request)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.api_route("/api/echo/{rest:path}", methods=["GET", "POST", "PUT"], include_in_schema=False)
    async def echo(request: Request) -> Response:
        body = await request.body()
        seen = {
            "instance": upstream.name,
            "method": request.method,
            "raw_path": request.scope["raw_path"].decode(),
            "query": request.scope["query_string"].decode(),
            "body": body.decode(),
            "headers": [[k.decode(), v.decode()] for k, v in request.scope["headers"]],
        }
        response = JSONResponse(seen, status_code=201 if request.method == "POST" else 200)
        response.headers["x-upstream"] = upstream.name
        response.headers["keep-alive"] = "timeout=99"  # hop-by-hop: never reaches the client
        response.headers.append("set-cookie", "a=1")
        response.headers.append("set-cookie", "b=2")
        return response

    @app.get("/api/status/{code}")
    async def status(code: int) -> Response:
        return JSONResponse({"code": code}, status_code=code)

    @app.get("/api/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(1.5)
        return {"slow": "done"}

    @app.get("/api/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for i in range(50):
                yield b"%04d" % i * 1000

        return StreamingResponse(parts(), media_type="text/plain")

    @app.post("/api/rooms/{room_id}/messages", status_code=201)
    async def publish(
        room_id: str, message: Message, key: Annotated[HTTPAuthorizationCredentials, Depends(bearer)]
    ) -> dict[str, int]:
        return {"seq": 1}

    @app.get("/other")
    async def other() -> dict[str, str]:
        return {"not": "forwarded"}

    return app


@contextlib.asynccontextmanager
async def tcp_upstream(name: str) -> AsyncIterator[Upstream]:
    upstream = Upstream(name)
    settings = ServiceSettings(port=free_port(), bus_url="memory://", access_log=False)
    upstream.target = f"127.0.0.1:{settings.port}"
    async with serving(upstream_app(upstream), settings):
        yield upstream


@contextlib.asynccontextmanager
async def unix_upstream(name: str) -> AsyncIterator[Upstream]:
    upstream = Upstream(name)
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / f"{name}.sock")
        upstream.target = f"unix:{path}"
        settings = ServiceSettings(bus_url="memory://", access_log=False)
        server = uvicorn.Server(uvicorn_config(lambda: upstream_app(upstream), settings))
        task = asyncio.create_task(server.serve(sockets=[unix_listener(path)]))
        try:
            async with asyncio.timeout(DEADLINE):
                while not server.started:
                    await asyncio.sleep(0.01)
            yield upstream
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, DEADLINE)


@contextlib.contextmanager
def dead_target() -> Iterator[str]:
    """A port bound but never listening: every connection is refused, and no other test takes it."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{dead.getsockname()[1]}"
    finally:
        dead.close()


@dataclass
class Gateway:
    url: str
    port: int
    app: FastAPI

    @property
    def pool(self):
        return self.app.state.proxy.pools["rooms"]


@contextlib.asynccontextmanager
async def gateway(*targets: str, **overrides: object) -> AsyncIterator[Gateway]:
    options: dict[str, object] = {
        "port": free_port(),
        "bus_url": "memory://",
        "access_log": False,
        "upstream_probe_interval": 5.0,  # probe deadline 2 s: a loaded machine never fails a probe
        "routes": {},
        "upstreams": {"rooms": list(targets)},
        "http_max_body": MAX_BODY,
        # Generous: 20 concurrent answers on a loaded 2-core machine took over 0.5 s once. The tests of
        # the timeout itself set a short one (SHORT_TIMEOUT) against /api/slow's 1.5 s.
        "http_forward_timeout": 10.0,
    }
    settings = GatewaySettings(**(options | overrides))
    app = create_app(settings)
    async with serving(app, settings, ws=GatewayWebSocketProtocol, http=GatewayHttpProtocol):
        yield Gateway(f"http://127.0.0.1:{settings.port}", settings.port, app)


def client(gw: Gateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gw.url, timeout=DEADLINE, trust_env=False)


def forwarded(status: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "realtime_gateway_http_requests_total", {"upstream": "rooms", "status": status}
        )
        or 0.0
    )


async def test_method_path_query_body_and_end_to_end_headers_reach_the_upstream() -> None:
    async with tcp_upstream("a") as up, gateway(up.target) as gw, client(gw) as http:
        response = await http.put(
            "/api/echo/a%2Fb/%7E?x=1&x=2&y=%20",
            content=b"hello body",
            headers=[
                ("Authorization", SECRET),
                ("X-Custom", "1"),
                ("Connection", "keep-alive, X-Hop"),
                ("X-Hop", "named by Connection"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Authorization", "Basic eDp5"),
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Real-IP", "6.6.6.6"),
            ],
        )
    assert response.status_code == 200
    seen = response.json()
    assert (seen["method"], seen["raw_path"], seen["query"], seen["body"]) == (
        "PUT",
        "/api/echo/a%2Fb/%7E",
        "x=1&x=2&y=%20",
        "hello body",
    )
    headers = dict(seen["headers"])
    assert headers["authorization"] == SECRET and headers["x-custom"] == "1"
    assert headers["host"] == up.target and headers["content-length"] == "10"
    assert headers["x-forwarded-for"] == "127.0.0.1" and headers["x-forwarded-proto"] == "http"
    for gone in ("x-hop", "keep-alive", "proxy-authorization", "x-real-ip", "connection"):
        assert gone not in headers, gone
    assert [k for k, _ in seen["headers"]].count("x-forwarded-for") == 1
    # the answer: status, end-to-end fields (both cookies), not the upstream's hop-by-hop ones
    assert response.headers["x-upstream"] == "a"
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert "keep-alive" not in response.headers
    assert len(response.headers.get_list("date")) == 1 and len(response.headers.get_list("server")) == 1


async def test_a_trusted_proxys_chain_is_extended() -> None:
    claimed = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}
    async with (
        tcp_upstream("a") as up,
        gateway(up.target, forwarded_allow_ips=["127.0.0.1"]) as gw,
        client(gw) as http,
    ):
        response = await http.get("/api/echo/x", headers=claimed)
    headers = dict(response.json()["headers"])
    assert headers["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"


async def test_requests_take_turns_over_the_replicas_tcp_and_unix_socket() -> None:
    async with (
        tcp_upstream("a") as a,
        unix_upstream("b") as b,
        gateway(a.target, b.target) as gw,
        client(gw) as http,
    ):
        answers = [(await http.get("/api/echo/turn")).json()["instance"] for _ in range(6)]
    assert sorted(answers) == ["a", "a", "a", "b", "b", "b"]
    assert all(x != y for x, y in itertools.pairwise(answers)), answers


async def test_a_dead_replica_is_skipped_and_marked_down_while_the_live_one_answers() -> None:
    with dead_target() as dead:
        async with tcp_upstream("a") as up, gateway(dead, up.target) as gw, client(gw) as http:
            for _ in range(4):
                response = await http.post("/api/echo/x", content=b"{}")
                assert response.status_code == 201 and response.json()["instance"] == "a"
            assert gw.pool.down == {("127.0.0.1", int(dead.rsplit(":", 1)[1]))}
            assert up.hits["/api/echo/x"] == 4


async def test_no_replica_reachable_is_503_with_retry_after() -> None:
    with dead_target() as one, dead_target() as two:
        async with gateway(one, two) as gw, client(gw) as http:
            response = await http.post("/api/echo/x", content=b"{}", headers={"Authorization": SECRET})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json() == {"detail": "no upstream available"}


async def test_a_request_that_timed_out_is_504_and_never_sent_again() -> None:
    async with (
        tcp_upstream("a") as a,
        tcp_upstream("b") as b,
        gateway(a.target, b.target, http_forward_timeout=SHORT_TIMEOUT) as gw,
        client(gw) as http,
    ):
        response = await http.get("/api/slow")
        assert response.status_code == 504
        assert response.json() == {"detail": "upstream timed out"}
        assert a.hits.get("/api/slow", 0) + b.hits.get("/api/slow", 0) == 1
        assert gw.pool.down == set()  # a slow answer says nothing about the replica's health


async def test_upstream_errors_pass_through_and_never_mark_a_replica_down() -> None:
    before = forwarded("5xx"), forwarded("4xx"), forwarded("2xx")
    async with tcp_upstream("a") as up, gateway(up.target) as gw, client(gw) as http:
        for code in (500, 503, 404, 429):
            response = await http.get(f"/api/status/{code}")
            assert (response.status_code, response.json()) == (code, {"code": code})
        assert (await http.delete("/api/status/200")).status_code == 405  # the upstream decides
        assert (await http.get("/api/nothing/here")).json() == {"detail": "Not Found"}
        assert (await http.get("/api/status/200")).status_code == 200
        assert gw.pool.down == set()
    after = forwarded("5xx"), forwarded("4xx"), forwarded("2xx")
    assert [y - x for x, y in zip(before, after, strict=True)] == [2, 4, 1]


@contextlib.asynccontextmanager
async def hanging_up_upstream() -> AsyncIterator[str]:
    """Healthy by its probe, but hangs up on every other request without an answer."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"GET /healthz "):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_an_upstream_that_hangs_up_is_502_and_stays_up() -> None:
    async with hanging_up_upstream() as target, gateway(target) as gw, client(gw) as http:
        response = await http.post("/api/echo/x", content=b"{}", headers={"Authorization": SECRET})
        assert response.status_code == 502
        assert response.json() == {"detail": "upstream failed"}
        assert gw.pool.down == set()


async def test_a_streamed_answer_arrives_whole() -> None:
    async with tcp_upstream("a") as up, gateway(up.target) as gw, client(gw) as http:
        response = await http.get("/api/stream")
    assert response.status_code == 200
    assert response.content == b"".join(b"%04d" % i * 1000 for i in range(50))


async def test_a_body_over_the_bound_is_413_by_content_length_before_it_is_read() -> None:
    malformed = REGISTRY.get_sample_value("realtime_gateway_refusals_total", {"reason": "malformed"}) or 0.0
    too_large = forwarded("4xx")
    async with tcp_upstream("a") as up, gateway(up.target) as gw:
        async with client(gw) as http:
            response = await http.post("/api/echo/big", content=b"x" * (MAX_BODY + 1))
            assert response.status_code == 413
            assert response.json() == {"detail": "request body too large"}
            assert (await http.post("/api/echo/big", content=b"x" * MAX_BODY)).status_code == 201
        # only the head: the gateway answers without waiting for a body
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"POST /api/echo/big HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000000000\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), DEADLINE)
        writer.close()
        assert status.startswith(b"HTTP/1.1 413 ")
        assert up.hits["/api/echo/big"] == 1
    # an HTTP answer for the route, not a refused upgrade
    assert forwarded("4xx") - too_large == 2
    assert REGISTRY.get_sample_value("realtime_gateway_refusals_total", {"reason": "malformed"}) == malformed


async def test_a_chunked_body_is_read_only_up_to_the_bound_then_413() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"y" * 1024

    async with tcp_upstream("a") as up, gateway(up.target) as gw, client(gw) as http:
        response = await http.post("/api/echo/chunked", content=chunks())
        assert response.status_code == 413
        assert response.json() == {"detail": "request body too large"}
        assert "/api/echo/chunked" not in up.hits


async def test_other_paths_behave_as_before() -> None:
    async with tcp_upstream("a") as up, gateway(up.target) as gw, client(gw) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/nope")).status_code == 404
        assert (await http.get("/other")).status_code == 404  # the upstream has it, but not under /api/
        assert (await http.post("/healthz")).status_code == 405
        assert "/other" not in up.hits
        async with connect(f"ws://127.0.0.1:{gw.port}/api/echo/x") as conn:  # not a WebSocket route
            assert await closed_with(conn) == (CloseCode.NOT_FOUND, "no such path")
        assert "/api/echo/x" not in up.hits


async def test_authorization_never_reaches_a_log(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(RedactingFilter())  # as the services' own log handler has it
    with dead_target() as dead:
        async with (
            tcp_upstream("a") as up,
            gateway(dead, up.target, access_log=True, http_forward_timeout=SHORT_TIMEOUT) as gw,
            client(gw) as http,
        ):
            # as realtime.logs.setup_logging leaves it (a server started with access_log=False turns it off)
            monkeypatch.setattr(logging.getLogger("uvicorn.access"), "propagate", True)
            headers = {"Authorization": SECRET}
            for path in ("/api/echo/x?token=t0ken-in-query", "/api/slow", "/api/status/500"):
                await http.get(path, headers=headers)
            await http.post("/api/echo/x", content=b"z" * (MAX_BODY + 1), headers=headers)
        async with gateway(dead) as gw, client(gw) as http:
            answer = await http.get("/api/echo/x", headers=headers)
            assert SECRET not in answer.text
    assert "GET /api/echo/x" in caplog.text  # the access log was on
    assert SECRET.split()[1] not in caplog.text
    assert "t0ken-in-query" not in caplog.text


async def test_openapi_shows_the_upstreams_paths_and_security_schemes() -> None:
    async with tcp_upstream("a") as up, gateway(up.target) as gw, client(gw) as http:
        schema = (await http.get("/openapi.json")).json()
        docs = await http.get("/docs")
        again = (await http.get("/openapi.json")).json()
    assert set(schema["paths"]) == {
        "/api/status/{code}",
        "/api/slow",
        "/api/stream",
        "/api/rooms/{room_id}/messages",
    }
    publish = schema["paths"]["/api/rooms/{room_id}/messages"]["post"]
    assert publish["security"] == [{"HTTPBearer": []}]
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {"type": "http", "scheme": "bearer"}
    assert publish["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Message"
    }
    assert "Message" in schema["components"]["schemas"]
    assert "forwarded to rooms" in schema["info"]["description"]
    assert docs.status_code == 200 and "/openapi.json" in docs.text and "swagger" in docs.text.lower()
    assert again == schema and up.hits["/openapi.json"] == 1  # cached


async def test_openapi_without_a_reachable_upstream_is_the_gateways_own_with_a_note() -> None:
    with dead_target() as dead:
        async with gateway(dead) as gw, client(gw) as http:
            response = await http.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert not any(path.startswith("/api/") for path in schema["paths"])
    assert "is not shown" in schema["info"]["description"]


def test_http_routes_must_name_a_configured_upstream() -> None:
    settings = GatewaySettings(
        routes={}, upstreams={"echo": ["127.0.0.1:1"]}, http_routes={"/api/": "rooms"}, bus_url="memory://"
    )
    with pytest.raises(ValueError, match=r"HTTP_ROUTES name upstreams with no replicas configured: \[.rooms"):
        create_app(settings)
    with pytest.raises(ValueError, match="must start with /"):
        GatewaySettings(http_routes={"api/": "rooms"})


def test_the_default_http_route_applies_only_where_a_rooms_upstream_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway for one's own upstreams (no ``rooms``) starts: the default /api/ route is the rooms
    API's, so it is there only with a rooms upstream (issue 19); an explicit HTTP_ROUTES is kept as is."""
    monkeypatch.setenv("UPSTREAMS", json.dumps({"chat": ["127.0.0.1:1"]}))
    monkeypatch.setenv("ROUTES", json.dumps({"/chat": "chat"}))
    settings = GatewaySettings(bus_url="memory://")
    assert settings.http_routes == {}
    create_app(settings)  # starts: no route names a missing upstream
    assert GatewaySettings(upstreams={"rooms": ["127.0.0.1:1"]}).http_routes == {"/api/": "rooms"}
    monkeypatch.delenv("UPSTREAMS")
    assert GatewaySettings().http_routes == {"/api/": "rooms"}  # the default upstreams include rooms
    monkeypatch.setenv("UPSTREAMS", json.dumps({"chat": ["127.0.0.1:1"]}))
    monkeypatch.setenv("HTTP_ROUTES", json.dumps({"/api/": "rooms"}))
    with pytest.raises(ValueError, match="HTTP_ROUTES name upstreams with no replicas configured"):
        create_app(GatewaySettings(bus_url="memory://"))


def test_http_routes_setting_reads_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_ROUTES", json.dumps({"/api/": "rooms", "/v2/": "echo"}))
    assert GatewaySettings().http_routes == {"/api/": "rooms", "/v2/": "echo"}


def connections_to(port: int) -> int:
    """This process's established TCP connections to ``port`` (the gateway's, to the test upstream)."""
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


async def test_sequential_requests_reuse_one_upstream_connection() -> None:
    async with tcp_upstream("a") as up, gateway(up.target) as gw, client(gw) as http:
        for _ in range(5):
            assert (await http.post("/api/echo/keep", content=b"{}")).status_code == 201
        assert up.hits["/api/echo/keep"] == 5
        assert connections_to(int(up.target.rsplit(":", 1)[1])) == 1


async def test_concurrent_requests_get_their_own_connections_and_answers() -> None:
    async with tcp_upstream("a") as up, gateway(up.target) as gw, client(gw) as http:
        answers = await asyncio.gather(
            *(http.post(f"/api/echo/c{i}", content=json.dumps({"i": i}).encode()) for i in range(20))
        )
        assert [json.loads(a.json()["body"])["i"] for a in answers] == list(range(20))
        assert [a.json()["raw_path"] for a in answers] == [f"/api/echo/c{i}" for i in range(20)]

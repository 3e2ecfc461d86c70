"""The foundation, end to end: real nats-server, each service its own process, the real gateway."""

import asyncio
import json
import signal
import urllib.parse
import urllib.request

import pytest
from devstack.stack import Stack
from realtime.close_codes import CloseCode
from websockets.exceptions import InvalidStatus

from tests.conftest import DEADLINE, closed_with, make_stack, recv, wait_until_async, ws


async def test_echo_text_through_gateway(stack: Stack) -> None:
    async with await ws(f"{stack.gateway_url}/echo") as conn:
        await conn.send("hello")
        assert await recv(conn) == "Echo: hello"
        await conn.send("zwei wörter ✓")
        assert await recv(conn) == "Echo: zwei wörter ✓"


async def test_echo_binary_comes_back_as_binary(stack: Stack) -> None:
    payload = bytes(range(256)) * 240  # 60 KiB: spans several TCP reads through the splice
    async with await ws(f"{stack.gateway_url}/echo") as conn:
        await conn.send(payload)
        assert await recv(conn) == payload


async def test_oversized_frame_closes_1009_through_gateway(stack: Stack) -> None:
    async with await ws(f"{stack.gateway_url}/echo", max_size=None) as conn:
        await conn.send(b"x" * (64 * 1024 + 1))
        code, _ = await closed_with(conn)
        assert code == CloseCode.MESSAGE_TOO_BIG


async def test_path_query_and_subprotocol_reach_upstream_unchanged(stack: Stack) -> None:
    url = f"{stack.gateway_url}/closer?room=a%20b&x=1&x=2&pass=hunter2"
    async with await ws(url, subprotocols=["chat.v2", "chat.v1"]) as conn:
        assert conn.subprotocol == "chat.v2"
        await conn.send("ping")
        assert await recv(conn) == "/closer|room=a%20b&x=1&x=2&pass=hunter2|chat.v2|ping|127.0.0.1"


@pytest.mark.parametrize(("code", "reason"), [(4003, "forbidden"), (1008, "invalid room id"), (4999, "")])
async def test_upstream_close_code_and_reason_pass_through(stack: Stack, code: int, reason: str) -> None:
    query = urllib.parse.urlencode({"code": code, "reason": reason})
    async with await ws(f"{stack.gateway_url}/closer?{query}") as conn:
        assert await closed_with(conn) == (code, reason)


async def test_client_close_code_reaches_upstream(stack: Stack) -> None:
    async with await ws(f"{stack.gateway_url}/closer") as conn:
        await conn.send("hi")
        await recv(conn)
        await conn.close(code=4321, reason="client says bye")
    await wait_until_async(
        lambda: "client closed with 4321 client says bye" in stack.log_tail("closer-1"),
        "the upstream to log the client's close code",
    )


async def test_unknown_path_closes_4004(stack: Stack) -> None:
    async with await ws(f"{stack.gateway_url}/no/such/path?x=1") as conn:
        assert await closed_with(conn) == (CloseCode.NOT_FOUND, "no such path")


def test_plain_http_to_a_websocket_route_is_not_an_upgrade(stack: Stack) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{stack.http_url}/echo", timeout=5)
    info.value.close()
    assert info.value.code == 404


async def test_secret_query_values_never_reach_logs(stack: Stack) -> None:
    secret = "never-logged-7f3a"  # this test's own connection, so it holds on its own and in any order
    async with await ws(f"{stack.gateway_url}/closer?probe=redaction&pass={secret}") as conn:
        await conn.send("ping")
        assert secret in await recv(conn)  # the upstream did get it
    for process in ("gateway", "closer-1"):
        await wait_until_async(
            lambda p=process: "probe=redaction&pass=***" in stack.log_tail(p, 400),
            f"{process} to log the connection with the secret redacted",
        )
    assert secret not in stack.all_logs()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=DEADLINE) as response:
        return response.read()


def _ready(stack: Stack, url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# Each test below changes the processes, so it runs on a stack of its own.
async def test_connections_balance_across_replicas() -> None:
    with make_stack("echo=2") as stack:
        for i in range(4):
            async with await ws(f"{stack.gateway_url}/echo?probe={i}") as conn:
                await conn.send("x")
                assert await recv(conn) == "Echo: x"
        for replica in ("echo-1", "echo-2"):
            await wait_until_async(
                lambda r=replica: "/echo?probe=" in stack.log_tail(r, 200), f"{replica} to serve one"
            )
        served = [stack.log_tail(r, 200).count('"WebSocket /echo?probe=') for r in ("echo-1", "echo-2")]
        assert served == [2, 2]


async def test_refusing_replica_is_skipped() -> None:
    with make_stack("echo=2") as stack:
        stack.stop_process("echo-1", signal.SIGKILL)
        for i in range(4):  # the gateway has not probed yet: it must skip the dead replica on connect
            async with await ws(f"{stack.gateway_url}/echo?n={i}") as conn:
                await conn.send("still here")
                assert await recv(conn) == "Echo: still here"


async def test_no_reachable_upstream_closes_1013_and_readiness_drops() -> None:
    with make_stack() as stack:
        stack.stop_process("stats-1", signal.SIGKILL)
        async with await ws(f"{stack.gateway_url}/stats") as conn:
            assert await closed_with(conn) == (CloseCode.TRY_AGAIN_LATER, "no upstream available")
        await wait_until_async(
            lambda: not _ready(stack, f"{stack.http_url}/readyz"), "gateway readiness to drop"
        )
        stack.start_process("stats-1")
        await wait_until_async(
            lambda: _ready(stack, f"{stack.http_url}/readyz"), "gateway readiness to return"
        )


async def test_upstream_killed_mid_session_closes_1012() -> None:
    with make_stack() as stack:
        async with await ws(f"{stack.gateway_url}/echo") as conn:
            await conn.send("before")
            assert await recv(conn) == "Echo: before"
            stack.stop_process("echo-1", signal.SIGKILL)
            assert await closed_with(conn) == (CloseCode.SERVICE_RESTART, "upstream restarted")


async def test_upstream_stopping_gracefully_closes_1001() -> None:
    with make_stack() as stack:
        async with await ws(f"{stack.gateway_url}/echo") as conn:
            await conn.send("before")
            assert await recv(conn) == "Echo: before"
            stack.stop_process("echo-1", signal.SIGTERM)
            assert await closed_with(conn) == (CloseCode.GOING_AWAY, "server shutting down")


async def test_gateway_shutdown_closes_clients_1001() -> None:
    with make_stack() as stack:
        async with await ws(f"{stack.gateway_url}/echo") as conn:
            await conn.send("before")
            assert await recv(conn) == "Echo: before"
            stack.processes["gateway"].popen.send_signal(signal.SIGTERM)
            assert await closed_with(conn) == (CloseCode.GOING_AWAY, "gateway shutting down")
        stack.stop_process("gateway")
        # uvicorn re-raises the signal after a graceful shutdown, so the exit status says SIGTERM
        assert stack.processes["gateway"].popen.returncode in (0, -signal.SIGTERM)
        assert "Finished server process" in stack.log_tail("gateway")


async def test_stopped_gateway_refuses_new_connections() -> None:
    with make_stack() as stack:
        stack.stop_process("gateway")
        with pytest.raises((OSError, InvalidStatus)):
            await ws(f"{stack.gateway_url}/echo")


async def test_gateway_workers_share_the_port_report_apart_and_stop_with_1001() -> None:
    with make_stack(GATEWAY_WORKERS="2", PULSE_INTERVAL="0.5") as stack:
        conns = [await ws(f"{stack.gateway_url}/echo?n={i}") for i in range(8)]
        for i, conn in enumerate(conns):
            await conn.send(f"n{i}")
            assert await recv(conn) == f"Echo: n{i}"
        # each worker is an instance of its own in the pulse, and together they hold every client
        async with await ws(f"{stack.gateway_url}/stats") as pulse_conn, asyncio.timeout(DEADLINE * 2):
            while True:
                pulse = json.loads(await recv(pulse_conn))
                workers = [i for i in pulse["instances"] if i["service"] == "gateway"]
                if len(workers) == 2 and sum(w["connections"] for w in workers) == len(conns) + 1:
                    break
        assert all(w["instance"].startswith("gateway-1-p") for w in workers)
        stack.processes["gateway"].popen.send_signal(signal.SIGTERM)
        for conn in conns:
            assert await closed_with(conn) == (CloseCode.GOING_AWAY, "gateway shutting down")


async def test_unix_socket_upstreams_carry_traffic_and_the_client_address() -> None:
    extra = {"closer": ("tests.support.closer", "/closer")}
    with make_stack("echo=2", extra=extra, unix_sockets=True) as stack:
        upstreams = json.loads(stack.processes["gateway"].env["UPSTREAMS"])
        assert all(u.startswith("unix:") for u in upstreams["echo"])
        # /upstreams names them as UPSTREAMS does (unix:/path, no port)
        shown = json.loads(await asyncio.to_thread(_get, f"{stack.internal_url}/upstreams"))
        assert shown["echo"]["replicas"] == upstreams["echo"]
        assert set(shown["echo"]["reachable"]) <= set(upstreams["echo"])
        for i in range(4):
            async with await ws(f"{stack.gateway_url}/echo?u={i}") as conn:
                await conn.send("over a unix socket")
                assert await recv(conn) == "Echo: over a unix socket"
        # the upstream trusts the gateway's X-Forwarded-For on its Unix socket: it sees the real client
        async with await ws(f"{stack.gateway_url}/closer?x=1", subprotocols=["v1"]) as conn:
            await conn.send("who am i")
            assert await recv(conn) == "/closer|x=1|v1|who am i|127.0.0.1"
        # and a mid-session loss is still 1012
        async with await ws(f"{stack.gateway_url}/echo") as conn:
            await conn.send("before")
            await recv(conn)
            for replica in ("echo-1", "echo-2"):
                stack.stop_process(replica, signal.SIGKILL)
            assert await closed_with(conn) == (CloseCode.SERVICE_RESTART, "upstream restarted")

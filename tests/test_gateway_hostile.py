"""The gateway against hostile clients, end to end: real NATS, each service its own process, the gateway.

Small caps and timeouts (set through the environment, as in production) keep every attack to a few
dozen connections and a few seconds. Attackers connect from other loopback addresses (127.0.0.2 ...)
than the normal client (127.0.0.1), so per-address counting is real.
"""

import asyncio
import contextlib
import json
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator

import pytest
from devstack.stack import Stack
from realtime.close_codes import CloseCode
from realtime.testing import send_huge_head
from websockets.exceptions import InvalidStatus

from tests.conftest import DEADLINE, closed_with, make_stack, recv, wait_until, wait_until_async, ws

PER_ADDRESS = 20
MAX_CONNECTIONS = 60
HEALTH_RESERVE = 8
HANDSHAKE_TIMEOUT = 3.0
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with make_stack(
        extra={"stall": ("tests.support.stall", "/stall/{mode}")},
        MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        MAX_CONNECTIONS_PER_ADDRESS=str(PER_ADDRESS),
        HEALTH_RESERVE=str(HEALTH_RESERVE),
        HANDSHAKE_TIMEOUT=str(HANDSHAKE_TIMEOUT),
        ALLOWED_ORIGINS="https://app.example",
        UPSTREAM_HANDSHAKE_TIMEOUT="1.0",
        UPSTREAM_PROBE_INTERVAL="60",  # a replica wrongly marked down would stay down for the test
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def settled(stack: Stack) -> Iterator[None]:
    """Each test starts and ends with no client connection held at the gateway (but its own probe)."""
    yield
    wait_until(lambda: admitted(stack) <= 1, "the gateway to let go of every test connection")


def admitted(stack: Stack) -> int:
    """Client connections the gateway holds (asked on its internal port, which is not one of them); at
    its cap, "more than any"."""
    try:
        with urllib.request.urlopen(f"{stack.internal_url}/upstreams", timeout=DEADLINE) as response:
            return int(json.load(response)["admitted"])
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 503:
            return MAX_CONNECTIONS + HEALTH_RESERVE
        raise


def metrics_status(stack: Stack) -> int:
    """The status of a scrape of the gateway's internal port."""
    with urllib.request.urlopen(f"{stack.internal_url}/metrics", timeout=DEADLINE) as response:
        return response.status


def reachable(stack: Stack, upstream: str) -> list[str]:
    with urllib.request.urlopen(f"{stack.internal_url}/upstreams", timeout=DEADLINE) as response:
        return list(json.load(response)[upstream]["reachable"])


def request(target: bytes, *extra: bytes, method: bytes = b"GET", version: bytes = b"HTTP/1.1") -> bytes:
    head = [method + b" " + target + b" " + version, b"Host: 127.0.0.1"]
    return b"\r\n".join(head + list(extra)) + b"\r\n\r\n"


def upgrade(target: bytes, *extra: bytes) -> bytes:
    return request(target, UPGRADE, b"Sec-WebSocket-Key: " + KEY, *extra)


async def answer(stack: Stack, data: bytes, source: str = "127.0.0.1") -> tuple[int, dict[bytes, bytes]]:
    """Send ``data`` to the gateway from ``source``; the status and headers it answers with."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", stack.config.gateway_port, local_addr=(source, 0)
    )
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await writer.drain()
        async with asyncio.timeout(DEADLINE):
            status = int((await reader.readline()).split(b" ", 2)[1])
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
        return status, headers
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def half_sent(stack: Stack, count: int, source: str) -> AsyncIterator[list[asyncio.StreamReader]]:
    """``count`` connections from ``source`` that start a request head and never finish it."""
    pairs = []
    try:
        for _ in range(count):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", stack.config.gateway_port, local_addr=(source, 0)
            )
            writer.write(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            pairs.append((reader, writer))
        yield [r for r, _ in pairs]
    finally:
        for _, writer in pairs:
            writer.close()


async def echo_works(stack: Stack) -> bool:
    async with await ws(f"{stack.gateway_url}/echo") as conn:
        await conn.send("still here")
        return await recv(conn) == "Echo: still here"


# --- 1. bounded heads, checked before any upstream ------------------------------------------------
@pytest.mark.parametrize(
    ("data", "status"),
    [
        (upgrade(b"/echo?probe=big", b"X-Big: " + b"a" * 20_000), 431),
        (upgrade(b"/echo?probe=many", *(b"X-%d: 1" % i for i in range(100))), 431),
        (upgrade(b"/ws/" + b"r" * 10_000 + b"?probe=long"), 414),
    ],
    ids=["head-too-large", "too-many-headers", "target-too-long"],
)
async def test_oversized_heads_are_refused_before_any_upstream(
    stack: Stack, data: bytes, status: int
) -> None:
    assert (await answer(stack, data))[0] == status
    assert "probe=" not in stack.log_tail("echo-1", 400) + stack.log_tail("rooms-1", 400)


async def test_a_ten_megabyte_head_is_refused_long_before_it_is_all_sent(stack: Stack) -> None:
    line, sent = await send_huge_head(stack.config.gateway_port, b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert line.startswith(b"HTTP/1.1 431") and sent < 10_000_000
    assert (await answer(stack, request(b"/readyz")))[0] == 200


# --- malformed upgrades: the statuses RFC 6455 names, no upstream contacted -----------------------
@pytest.mark.parametrize(
    ("data", "status"),
    [
        (upgrade(b"/echo?probe=post").replace(b"GET", b"POST", 1), 400),
        (upgrade(b"/echo?probe=http10").replace(b"HTTP/1.1", b"HTTP/1.0", 1), 400),
        (request(b"/echo?probe=nokey", UPGRADE), 400),
        (request(b"/echo?probe=shortkey", UPGRADE, b"Sec-WebSocket-Key: c2hvcnQ="), 400),
        (
            request(
                b"/echo?probe=noconn",
                b"Upgrade: websocket",
                b"Sec-WebSocket-Version: 13",
                b"Sec-WebSocket-Key: " + KEY,
            ),
            400,
        ),
        (upgrade(b"/echo?probe=v8").replace(b"Version: 13", b"Version: 8"), 426),
    ],
    ids=["post", "http-1.0", "no-key", "short-key", "no-connection-upgrade", "version-8"],
)
async def test_malformed_upgrades_get_the_status_rfc6455_names(
    stack: Stack, data: bytes, status: int
) -> None:
    got, headers = await answer(stack, data)
    assert got == status
    if status == 426:
        assert headers[b"sec-websocket-version"] == b"13"
    assert "probe=" not in stack.log_tail("echo-1", 400)


# --- 2. the handshake deadline --------------------------------------------------------------------
async def test_half_sent_heads_are_dropped_after_the_handshake_timeout(stack: Stack) -> None:
    start = time.monotonic()
    async with half_sent(stack, 10, "127.0.0.2") as readers:
        ends = await asyncio.wait_for(asyncio.gather(*(r.read() for r in readers)), DEADLINE)
    elapsed = time.monotonic() - start
    assert all(end.startswith(b"HTTP/1.1 408") for end in ends)
    assert HANDSHAKE_TIMEOUT * 0.8 < elapsed < HANDSHAKE_TIMEOUT + 3


# --- 3. connection caps ---------------------------------------------------------------------------
async def test_one_address_over_its_cap_gets_429_and_others_still_connect(stack: Stack) -> None:
    async with half_sent(stack, PER_ADDRESS, "127.0.0.2"):
        status, headers = await answer(stack, upgrade(b"/echo"), source="127.0.0.2")
        assert status == 429 and headers[b"retry-after"].isdigit()
        assert await echo_works(stack)  # another address is not affected
    await wait_until_async(lambda: admitted(stack) <= 1, "the half-sent connections to be released")
    assert (await answer(stack, upgrade(b"/echo"), source="127.0.0.2"))[0] == 101


async def test_at_the_process_cap_health_still_answers_and_others_get_503(stack: Stack) -> None:
    sources = [f"127.0.0.{i}" for i in range(3, 3 + MAX_CONNECTIONS // PER_ADDRESS)]
    async with contextlib.AsyncExitStack() as held:
        for source in sources:  # MAX_CONNECTIONS sessions, no address over its own cap
            for _ in range(PER_ADDRESS):
                await held.enter_async_context(await ws(f"{stack.gateway_url}/echo", local_addr=(source, 0)))
        assert (await answer(stack, request(b"/healthz")))[0] == 200
        assert (await answer(stack, request(b"/readyz")))[0] == 200
        status, headers = await answer(stack, upgrade(b"/echo"))
        assert status == 503 and headers[b"retry-after"].isdigit()
        for _ in range(HEALTH_RESERVE):  # the reserve, full: kept-alive health checks
            reader, writer = await asyncio.open_connection("127.0.0.1", stack.config.gateway_port)
            held.callback(writer.close)
            writer.write(request(b"/healthz"))
            assert (await asyncio.wait_for(reader.readline(), DEADLINE)).startswith(b"HTTP/1.1 200")
        assert (await answer(stack, request(b"/healthz")))[0] == 503  # refused before its head is read
        # Operators are not clients: the internal port still answers a scrape with the gateway full.
        assert await asyncio.to_thread(admitted, stack) >= MAX_CONNECTIONS
        assert await asyncio.to_thread(metrics_status, stack) == 200
    await wait_until_async(lambda: admitted(stack) <= 1, "the held connections to be released")
    assert await echo_works(stack)


async def test_at_the_process_cap_a_newcomer_takes_the_place_of_the_oldest_slow_sender(stack: Stack) -> None:
    sources = [f"127.0.0.{i}" for i in range(3, 3 + MAX_CONNECTIONS // PER_ADDRESS)]
    async with contextlib.AsyncExitStack() as held:
        readers = []
        for source in sources:  # the cap, all of it half-sent heads
            readers += await held.enter_async_context(half_sent(stack, PER_ADDRESS, source))
        assert await echo_works(stack)
        assert (await asyncio.wait_for(readers[0].read(), DEADLINE)).startswith(b"HTTP/1.1 408")
        assert (await answer(stack, request(b"/healthz")))[0] == 200
    await wait_until_async(lambda: admitted(stack) <= 1, "the held connections to be released")


# --- 4. readiness cannot be flipped from outside --------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("slow", CloseCode.TRY_AGAIN_LATER),
        ("crash", CloseCode.TRY_AGAIN_LATER),
        ("deny", CloseCode.INTERNAL_ERROR),
    ],
)
async def test_a_refused_or_timed_out_upgrade_never_marks_a_replica_down(
    stack: Stack, mode: str, code: int
) -> None:
    async with await ws(f"{stack.gateway_url}/stall/{mode}") as conn:
        assert (await closed_with(conn))[0] == code
    assert reachable(stack, "stall") and (await answer(stack, request(b"/readyz")))[0] == 200
    async with await ws(f"{stack.gateway_url}/stall/ok") as conn:
        await conn.send("ok")
        assert await recv(conn) == "ok"


async def test_long_room_ids_never_take_the_gateway_out_of_service(stack: Stack) -> None:
    for length in (200, 3_000, 10_000):
        room = "r" * length
        start = time.monotonic()
        try:
            async with await ws(f"{stack.gateway_url}/ws/{room}") as conn:
                assert (await closed_with(conn))[0] == CloseCode.POLICY_VIOLATION  # invalid room id
        except InvalidStatus as exc:
            assert exc.response.status_code == 414
        assert time.monotonic() - start < 2
        assert (await answer(stack, request(b"/readyz")))[0] == 200
    assert reachable(stack, "rooms")


# --- 5. origins -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("origin", "status"),
    [
        (None, 101),
        ("https://app.example", 101),  # listed in ALLOWED_ORIGINS
        ("http://127.0.0.1:{port}", 101),  # the gateway's own origin
        ("http://evil.example", 403),
        ("http://127.0.0.1:1", 403),  # the right host on another port is another origin
        ("null", 403),
    ],
)
async def test_only_the_gateways_own_or_listed_origins_may_open_a_websocket(
    stack: Stack, origin: str | None, status: int
) -> None:
    extra = [] if origin is None else [b"Origin: " + origin.format(port=stack.config.gateway_port).encode()]
    host = b"Host: 127.0.0.1:%d" % stack.config.gateway_port
    data = upgrade(b"/echo", *extra).replace(b"Host: 127.0.0.1", host, 1)
    assert (await answer(stack, data))[0] == status


# --- 6. secrets never logged, however spelled -----------------------------------------------------
SPELLINGS = ["pass", "%70ass", "PASS", "Pa%73s", "pass+", "password", "token", "api_key"]


async def test_secret_query_values_never_reach_any_log_however_spelled(stack: Stack) -> None:
    secrets = []
    for i, key in enumerate(SPELLINGS):
        secret = f"hunter{i}x{i}"
        secrets.append(secret)
        for target in (f"/ws/lobby?{key}={secret}&{key}=again{secret}", f"/echo?x=1&{key}={secret}"):
            async with await ws(f"{stack.gateway_url}{target}") as conn:
                await conn.close()
        await answer(stack, upgrade(f"/echo?{key}={secret}".encode(), b"Origin: http://evil.example"))
    await wait_until_async(
        lambda: stack.all_logs().count("?x=1&") >= len(SPELLINGS) * 2,  # the gateway's and echo's lines
        "every connection to be logged",
    )
    logs = stack.all_logs()
    for secret in secrets:
        assert secret not in logs and urllib.parse.quote(secret) not in logs


# --- 7. close handshakes through the gateway as fast as without it --------------------------------
async def close_time(url: str, payload: bytes, *, reads: bool = True) -> float:
    """The upstream closes 50 ms after accepting while the client keeps sending: time to fully closed.
    With ``reads=False`` the client never yields between sends, so it reads only when a send blocks."""
    conn = await ws(url)
    start = time.monotonic()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(DEADLINE * 2):
            while True:
                await conn.send(payload)
                if reads:
                    await asyncio.sleep(0)
    await asyncio.wait_for(conn.wait_closed(), DEADLINE * 2)
    assert conn.close_code == CloseCode.NORMAL
    return time.monotonic() - start


@pytest.mark.parametrize("size", [10, 1_000, 30_000])
async def test_a_close_while_the_client_sends_is_as_fast_through_the_gateway(stack: Stack, size: int) -> None:
    direct = f"ws://127.0.0.1:{stack.processes['stall-1'].port}/stall/later"
    through = f"{stack.gateway_url}/stall/later"
    direct_time = min([await close_time(direct, b"x" * size) for _ in range(3)])
    gateway_time = min([await close_time(through, b"x" * size) for _ in range(3)])
    assert gateway_time < direct_time + 0.25, (direct_time, gateway_time)


async def test_a_client_that_only_writes_still_finishes_its_close_before_the_service_gives_up(
    stack: Stack,
) -> None:
    # It took the service's 10 s close timeout and ended in 1006: the gateway copies faster than the
    # service parses, so the client's sends never blocked and it never read the close.
    assert await close_time(f"{stack.gateway_url}/stall/later", b"x" * 1_000, reads=False) < 6

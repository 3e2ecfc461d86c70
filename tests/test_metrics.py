"""``GET /metrics`` on the gateway and every service (on each one's internal port), against the real stack.

Every endpoint parses with prometheus-client's own parser and defines every platform metric; the
connection gauge follows a client in and out; counters move with traffic; no label carries a room id, a
client address or a password; with GATEWAY_WORKERS=2 one scrape covers both workers. Rooms: received,
published, delivered, bytes and both latency histograms; stats: pulses built and their lag; gateway: splices
open per upstream, refusals by reason (a refused origin, a malformed upgrade); NATS connected everywhere.
"""

import asyncio
import json
import socket
import urllib.request
from collections.abc import Iterator

import pytest
from devstack.stack import Stack
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from realtime import metrics
from realtime.frames import text_frame
from websockets.exceptions import InvalidStatus

from tests.conftest import DEADLINE, closed_with, make_stack, recv, wait_until, wait_until_async, ws

pytestmark = pytest.mark.timeout(120)

ROOM = "metrics-room-zq7"
PASSWORD = "metrics-pass-x41"
WRONG = "wrong-pass-k93"
# Every label name a platform metric may have (bounded values, see realtime.metrics).
ALLOWED_LABELS = {"service", "route", "code", "reason", "upstream"}
PLATFORM_METRICS = {
    m._name  # the family name (a counter's samples add _total)
    for m in vars(metrics).values()
    if hasattr(m, "_name") and getattr(m, "_name", "").startswith("realtime_")
}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # A 1 s pulse: stats builds its first pulse within a few seconds.
    with make_stack(ROOM_PASSWORDS=json.dumps({"VIP": PASSWORD}), PULSE_INTERVAL="1") as running:
        yield running


def scrape(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


def endpoints(stack: Stack) -> dict[str, str]:
    """Every process with a /metrics (NATS has its own monitoring instead): name -> URL, on its internal
    port (the public one answers 404: tests/test_operator_ports.py)."""
    return {
        name: f"{process.internal_url}/metrics" for name, process in stack.processes.items() if name != "nats"
    }


def samples(url: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(scrape(url)[1]) for s in family.samples]


def value(url: str, name: str, **labels: str) -> float:
    return sum(s.value for s in samples(url) if s.name == name and s.labels == labels)


def test_every_endpoint_parses_and_defines_every_metric(stack: Stack) -> None:
    assert len(PLATFORM_METRICS) >= 25
    for name, url in endpoints(stack).items():
        content_type, text = scrape(url)
        assert content_type.startswith("text/plain; version=0.0.4"), name
        families = {f.name for f in text_string_to_metric_families(text)}
        assert families >= PLATFORM_METRICS, f"{name} misses {PLATFORM_METRICS - families}"


async def test_connection_gauge_follows_a_client_in_and_out(stack: Stack) -> None:
    echo = endpoints(stack)["echo-1"]
    route = {"service": "echo", "route": "/echo"}
    closed_before = value(echo, "realtime_ws_connections_closed_total", **route, code="1000")
    assert value(echo, "realtime_ws_connections_open", **route) == 0
    conn = await ws(f"{stack.gateway_url}/echo")
    await conn.send("in")
    assert await recv(conn) == "Echo: in"
    assert value(echo, "realtime_ws_connections_open", **route) == 1
    await conn.close(code=1000)
    await wait_until_async(
        lambda: value(echo, "realtime_ws_connections_open", **route) == 0, "the gauge back at 0"
    )
    closed_after = value(echo, "realtime_ws_connections_closed_total", **route, code="1000")
    assert closed_after == closed_before + 1


async def test_counters_move_with_traffic(stack: Stack) -> None:
    echo = endpoints(stack)["echo-1"]
    service = {"service": "echo"}
    names = (
        "realtime_messages_received_total",
        "realtime_messages_delivered_total",
        "realtime_bytes_out_total",
    )
    before = [value(echo, n, **service) for n in names]
    async with await ws(f"{stack.gateway_url}/echo") as conn:
        for text in ("one", "two", "three"):
            await conn.send(text)
            await recv(conn)
        await conn.send(b"\x00\x01")
        await recv(conn)
    after = [value(echo, n, **service) for n in names]
    sent_bytes = sum(len(f"Echo: {t}") for t in ("one", "two", "three")) + 2
    assert [a - b for a, b in zip(after, before, strict=True)] == [4, 4, sent_bytes]


async def test_rooms_counters_and_histograms_move_with_traffic(stack: Stack) -> None:
    rooms = endpoints(stack)["rooms-1"]
    service = {"service": "rooms"}
    names = (
        "realtime_messages_received_total",
        "realtime_messages_published_total",
        "realtime_messages_delivered_total",
        "realtime_bytes_out_total",
        "realtime_publish_to_store_seconds_count",
        "realtime_fanout_seconds_count",
    )
    before = [value(rooms, n, **service) for n in names]
    texts = ("first", "second", "third")
    async with (
        await ws(f"{stack.gateway_url}/ws/{ROOM}-t") as alice,
        await ws(f"{stack.gateway_url}/ws/{ROOM}-t") as bob,
    ):
        for text in texts:
            await alice.send(text)
            for member in (alice, bob):
                assert await recv(member) == text
    after = [value(rooms, n, **service) for n in names]
    frames = sum(len(text_frame(t)) for t in texts)
    # Two members hear each message: the fan-out writes it twice, each frame whole.
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 3, 6, 2 * frames, 3, 3]


async def test_stats_builds_pulses_and_counts_their_lag(stack: Stack) -> None:
    stats = endpoints(stack)["stats-1"]
    async with await ws(f"{stack.gateway_url}/stats") as client:
        # The first pulse a client gets may be relayed or the newest one at once; wait for built ones.
        await wait_until_async(
            lambda: value(stats, "realtime_pulses_built_total") >= 1, "a pulse built", deadline=30
        )
        assert json.loads(await recv(client))["tick"] > 0
        await wait_until_async(
            lambda: value(stats, "realtime_pulse_lag_seconds_count") >= 1, "a pulse lag observed"
        )
        assert value(stats, "realtime_messages_delivered_total", service="stats") >= 1
        assert value(stats, "realtime_bytes_out_total", service="stats") > 0


async def test_gateway_splices_open_follow_a_client_in_and_out(stack: Stack) -> None:
    gateway = endpoints(stack)["gateway"]
    upstream = {"upstream": "echo"}
    assert value(gateway, "realtime_gateway_splices_open", **upstream) == 0
    conn = await ws(f"{stack.gateway_url}/echo")
    await conn.send("in")
    assert await recv(conn) == "Echo: in"
    assert value(gateway, "realtime_gateway_splices_open", **upstream) == 1
    await conn.close()
    await wait_until_async(
        lambda: value(gateway, "realtime_gateway_splices_open", **upstream) == 0, "no splice open"
    )
    assert value(gateway, "realtime_gateway_replicas_up", upstream="rooms") == 1


def malformed_upgrade(port: int) -> bytes:
    """An upgrade without Sec-WebSocket-Key: the gateway answers 400 itself. Returns its status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(
            b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        return sock.recv(4096).split(b"\r\n", 1)[0]


async def test_gateway_refusals_count_by_reason(stack: Stack) -> None:
    gateway = endpoints(stack)["gateway"]
    before = {r: value(gateway, "realtime_gateway_refusals_total", reason=r) for r in metrics.REFUSAL_REASONS}
    with pytest.raises(InvalidStatus) as refused:
        await ws(f"{stack.gateway_url}/echo", origin="https://evil.example")
    assert refused.value.response.status_code == 403
    status = await asyncio.to_thread(malformed_upgrade, stack.config.gateway_port)
    assert b" 400 " in status, status
    after = {r: value(gateway, "realtime_gateway_refusals_total", reason=r) for r in metrics.REFUSAL_REASONS}
    assert {r: after[r] - before[r] for r in after} == {
        "cap": 0,
        "origin": 1,
        "malformed": 1,
        "no_upstream": 0,
    }


def test_nats_connected_is_1_everywhere(stack: Stack) -> None:
    for name, url in endpoints(stack).items():
        service = stack.processes[name].env["SERVICE_NAME"]
        assert value(url, "realtime_nats_connected", service=service) == 1, name
        # A sample can catch a publish between nats-py's flushes (a heartbeat: a few hundred bytes);
        # connected, the buffer drains: the gauge comes back to 0.
        wait_until(
            lambda: value(url, "realtime_nats_pending_bytes", service=service) == 0,
            f"{name}: realtime_nats_pending_bytes back to 0",
        )


async def test_no_label_carries_a_room_id_an_address_or_a_password(stack: Stack) -> None:
    # A room member, a wrong password and a right one, so rooms has sessions and refusals to count.
    async with await ws(f"{stack.gateway_url}/ws/{ROOM}") as member:
        await member.send("hello")
        assert await recv(member) == "hello"
        wrong = await ws(f"{stack.gateway_url}/ws/VIP?pass={WRONG}")
        assert (await closed_with(wrong))[0] == 4003
        async with await ws(f"{stack.gateway_url}/ws/VIP?pass={PASSWORD}") as vip:
            await vip.send("vip")
            assert await recv(vip) == "vip"
        rooms = endpoints(stack)["rooms-1"]
        route = {"service": "rooms", "route": "/ws/{room_id}"}
        assert value(rooms, "realtime_ws_connections_open", **route) == 1
        assert value(rooms, "realtime_ws_connections_closed_total", **route, code="4003") >= 1
    forbidden = (ROOM, "VIP", PASSWORD, WRONG, "127.0.0.1", "unix")
    forbidden += tuple(p.env["INSTANCE_ID"] for p in stack.processes.values() if "INSTANCE_ID" in p.env)
    for name, url in endpoints(stack).items():
        text = scrape(url)[1]
        for word in (ROOM, PASSWORD, WRONG):
            assert word not in text, f"{word} in {name}'s metrics"
        for family in text_string_to_metric_families(text):
            if not family.name.startswith("realtime_"):
                continue
            for sample in family.samples:
                assert set(sample.labels) <= ALLOWED_LABELS | {"le"}, (name, sample)
                for label, label_value in sample.labels.items():
                    assert not any(word in label_value for word in forbidden), (name, label, label_value)


async def test_with_two_gateway_workers_one_scrape_covers_both() -> None:
    with make_stack(GATEWAY_WORKERS="2") as running:
        url = f"{running.internal_url}/metrics"
        labels = {"service": "gateway", "route": "/{path:path}", "code": "4004"}
        before = value(url, "realtime_ws_connections_closed_total", **labels)
        for _ in range(20):  # the kernel spreads these over both workers
            conn = await ws(f"{running.gateway_url}/no-such-path")
            assert (await closed_with(conn))[0] == 4004
        # A session counts as closed when its handler returns, just after the client has the close.
        total = before + 20
        await wait_until_async(
            lambda: value(url, "realtime_ws_connections_closed_total", **labels) == total, "20 closes"
        )
        # Several scrapes land on either worker; each sums the files of both.
        for _ in range(6):
            assert value(url, "realtime_ws_connections_closed_total", **labels) == before + 20
        # Multiprocess mode: the per-process collectors (gc, process) are not in the sum.
        assert "python_gc_objects_collected_total" not in scrape(url)[1]

"""The gateway under attack: what a normal client and the health checks see while anonymous clients try
to exhaust it (slowloris, huge heads, long room ids, connection churn).

One stack (real NATS, each service its own process, the gateway) with small caps set through the
environment, as an operator would, so the whole suite runs in about two minutes on loopback. Attackers
connect from other loopback addresses (127.0.0.2 ...) than the normal client (127.0.0.1).

    .venv/bin/python -m bench hostile
    BENCH_ATTACK_SECONDS=10 BENCH_CYCLES=20000 .venv/bin/python -m bench hostile
"""

import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field

import psutil
from devstack.stack import Stack, StackConfig
from websockets.asyncio.client import connect

from bench.measure import percentile

PER_ADDRESS = int(os.environ.get("BENCH_PER_ADDRESS", "100"))
MAX_CONNECTIONS = int(os.environ.get("BENCH_MAX_CONNECTIONS", "400"))
HANDSHAKE_TIMEOUT = float(os.environ.get("BENCH_HANDSHAKE_TIMEOUT", "2"))
ATTACK_SECONDS = float(os.environ.get("BENCH_ATTACK_SECONDS", "8"))
CYCLES = int(os.environ.get("BENCH_CYCLES", "20000"))
HEADS = 30
HEAD_BYTES = 10 * 1024 * 1024
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
CLOSE_1000 = b"\x88\x82\x00\x00\x00\x00\x03\xe8"  # a masked close frame, code 1000, zero mask key


def upgrade_head(target: str, host: str = "127.0.0.1") -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY.decode()}\r\n\r\n"
    ).encode()


@dataclass
class Row:
    attack: str
    measured: str
    result: str
    target: str = ""


@dataclass
class Probe:
    """A normal client during an attack: one new WebSocket and one echo every ``interval`` seconds."""

    url: str
    latencies: list[float] = field(default_factory=list)
    failures: int = 0

    async def run(self, until: float, interval: float = 0.05) -> None:
        while time.monotonic() < until:
            start = time.monotonic()
            try:
                async with asyncio.timeout(5):
                    async with connect(self.url, compression=None, open_timeout=5) as conn:
                        await conn.send("ping")
                        if await conn.recv() != "Echo: ping":
                            raise RuntimeError("wrong echo")
                self.latencies.append(time.monotonic() - start)
            except Exception:
                self.failures += 1
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - start)))

    @property
    def success(self) -> float:
        total = len(self.latencies) + self.failures
        return 100.0 * len(self.latencies) / total if total else float("nan")

    @property
    def p99_ms(self) -> float:
        return 1000 * percentile(self.latencies, 0.99)


async def http_status(port: int, path: str) -> int:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(2):
            line = await reader.readline()
        return int(line.split(b" ", 2)[1])
    except (OSError, TimeoutError, IndexError, ValueError):
        return 0
    finally:
        writer.close()


async def poll_health(port: int, path: str, until: float, interval: float = 0.1) -> list[int]:
    statuses = []
    while time.monotonic() < until:
        start = time.monotonic()
        statuses.append(await http_status(port, path))
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - start)))
    return statuses


async def slowloris(port: int, sources: list[str], per_source: int, seconds: float) -> list[float]:
    """Keep ``per_source`` half-sent requests open from each source, trickling a header line every
    second and reopening each one the gateway drops, for ``seconds`` after every one was opened once
    (then it prints "ready"); returns how long each accepted one lived."""
    lived: list[float] = []
    pending = len(sources) * per_source
    until = float("inf")

    def opened_once() -> None:
        nonlocal pending, until
        pending -= 1
        if pending == 0:
            until = time.monotonic() + seconds
            print("ready", flush=True)

    async def one(source: str) -> None:
        first = True
        while time.monotonic() < until:
            opened = time.monotonic()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
            except OSError:
                await asyncio.sleep(0.1)
                continue
            if first:
                first = False
                opened_once()
            try:
                writer.write(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                while time.monotonic() < until:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1):
                            data = await reader.read(4096)
                            if data.startswith(b"HTTP/1.1 408") or not data:
                                lived.append(time.monotonic() - opened)
                                break
                            if data.startswith(b"HTTP/1.1 4") or data.startswith(b"HTTP/1.1 5"):
                                await asyncio.sleep(0.2)  # refused at once: try again shortly
                                break
                    writer.write(b"X-a: b\r\n")
            except OSError:
                pass
            finally:
                writer.close()

    await asyncio.gather(*(one(s) for s in sources for _ in range(per_source)))
    return lived


async def attack_slowloris(stack: Stack, label: str, sources: list[str], per_source: int) -> list[Row]:
    """The attackers run in a process of their own, so that they do not slow the normal client's loop."""
    port = stack.config.gateway_port
    argv = [sys.executable, "-m", "bench.hostile", "slowloris", str(port), ",".join(sources), str(per_source)]
    attacker = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    assert attacker.stdout is not None
    await asyncio.wait_for(attacker.stdout.readline(), 60)  # "ready": every attacker is in place
    until = time.monotonic() + ATTACK_SECONDS
    probe = Probe(f"{stack.gateway_url}/echo")
    health, _ = await asyncio.gather(poll_health(port, "/healthz", until), probe.run(until))
    out, _ = await attacker.communicate()
    lived = json.loads(out)
    healthy = 100.0 * sum(s == 200 for s in health) / max(1, len(health))
    return [
        Row(label, "normal client: new WebSocket + echo, success", f"{probe.success:.0f}%"),
        Row(label, "normal client: connect + echo p99", f"{probe.p99_ms:.1f} ms"),
        Row(label, "/healthz answering 200", f"{healthy:.0f}%", "100%"),
        Row(label, "half-sent request dropped after (median)", f"{percentile(lived, 0.5):.1f} s"),
    ]


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 1e6


async def big_heads(port: int) -> None:
    """30 concurrent upgrade requests, each with one 10 MB header, sent until the server stops them."""

    async def one() -> None:
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nX-Big: ")
            chunk, sent = b"a" * 65536, 0
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(20):
                    while sent < HEAD_BYTES and not reader.at_eof():
                        writer.write(chunk)
                        sent += len(chunk)
                        await writer.drain()
            writer.close()

    await asyncio.gather(*(one() for _ in range(HEADS)))


async def attack_big_heads(stack: Stack) -> list[Row]:
    rows = []
    for name, port in (("gateway", stack.config.gateway_port), ("echo-1", stack.processes["echo-1"].port)):
        pid = stack.processes[name].pid
        assert pid is not None
        before, peak = rss_mb(pid), 0.0
        task = asyncio.create_task(big_heads(port))
        while not task.done():
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.02)
        await task
        target = "gateway" if name == "gateway" else "echo service (direct)"
        rows.append(
            Row(
                f"{HEADS} x 10 MB heads at the {target}",
                f"{name} RSS growth",
                f"{peak - before:.1f} MB",
                "< 50 MB",
            )
        )
    return rows


async def attack_long_room_ids(stack: Stack) -> list[Row]:
    port = stack.config.gateway_port
    until = time.monotonic() + ATTACK_SECONDS
    answers: list[int] = []

    async def attacker() -> None:
        room = "r" * 10_000
        while time.monotonic() < until:
            start = time.monotonic()
            with contextlib.suppress(OSError, TimeoutError):
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
                writer.write(upgrade_head(f"/ws/{room}"))
                async with asyncio.timeout(5):
                    line = await reader.readline()
                answers.append(int(line.split(b" ", 2)[1]) if line else 0)
                writer.close()
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - start)))

    polls, _ = await asyncio.gather(poll_health(port, "/readyz", until), attacker())
    ready = 100.0 * sum(s == 200 for s in polls) / max(1, len(polls))
    seen = ", ".join(f"{n} x {s}" for s, n in sorted({s: answers.count(s) for s in answers}.items()))
    return [
        Row("10 000-char room ids at 10/s", "/readyz polls answering 200", f"{ready:.0f}%", "100%"),
        Row("10 000-char room ids at 10/s", "what the attacker got", seen),
    ]


async def cycles(port: int, count: int, concurrency: int = 50) -> int:
    """``count`` connect/close cycles: 1 of 4 a WebSocket opened and closed through the gateway to the echo
    service, 3 of 4 a bare TCP connect and close (admission, the head timer and the counts each time)."""
    failures = 0
    numbers = iter(range(count))

    async def worker() -> None:
        nonlocal failures
        for n in numbers:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                if n % 4 == 0:
                    writer.write(upgrade_head("/echo"))
                    async with asyncio.timeout(5):
                        await reader.readuntil(b"\r\n\r\n")
                        writer.write(CLOSE_1000)
                        await reader.read()  # the close reply, then EOF
                writer.close()
                await writer.wait_closed()
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                failures += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures


async def attack_churn(stack: Stack) -> list[Row]:
    port, pid = stack.config.gateway_port, stack.processes["gateway"].pid
    assert pid is not None
    process = psutil.Process(pid)
    await cycles(port, 2_000)  # warm up: first-use allocations are not a leak
    await asyncio.sleep(1)
    rss, fds = process.memory_info().rss, process.num_fds()
    start = time.monotonic()
    failures = await cycles(port, CYCLES)
    elapsed = time.monotonic() - start
    await asyncio.sleep(HANDSHAKE_TIMEOUT + 1)  # anything half-closed has been dropped by now
    rss_delta = (process.memory_info().rss - rss) / 1e6
    fd_delta = process.num_fds() - fds
    label = f"{CYCLES} connect/close cycles ({elapsed:.0f} s, {failures} failed)"
    return [
        Row(label, "gateway RSS delta", f"{rss_delta:+.1f} MB", "0 (no leak)"),
        Row(label, "gateway open fd delta", f"{fd_delta:+d}", "0"),
    ]


async def baseline(stack: Stack) -> list[Row]:
    probe = Probe(f"{stack.gateway_url}/echo")
    await probe.run(time.monotonic() + 3)
    return [Row("none (baseline)", "normal client: connect + echo p99", f"{probe.p99_ms:.1f} ms")]


async def run(stack: Stack) -> list[Row]:
    rows = await baseline(stack)
    rows += await attack_slowloris(
        stack, f"slowloris, 1 address, {2 * PER_ADDRESS} conns (2 x cap)", ["127.0.0.2"], 2 * PER_ADDRESS
    )
    for total, name in ((MAX_CONNECTIONS, "process cap"), (MAX_CONNECTIONS * 5 // 4, "1.25 x process cap")):
        sources = [f"127.0.0.{10 + i}" for i in range(-(-total // PER_ADDRESS))]
        label = f"slowloris, {len(sources)} addresses, {total} conns ({name})"
        rows += await attack_slowloris(stack, label, sources, total // len(sources))
    rows += await attack_big_heads(stack)
    rows += await attack_long_room_ids(stack)
    rows += await attack_churn(stack)
    return rows


def main() -> None:
    config = StackConfig.for_tests(
        MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        MAX_CONNECTIONS_PER_ADDRESS=str(PER_ADDRESS),
        HANDSHAKE_TIMEOUT=str(HANDSHAKE_TIMEOUT),
        ACCESS_LOG="false",  # 20 000 cycles would be 20 000 log lines per process
    )
    print(
        f"caps: MAX_CONNECTIONS={MAX_CONNECTIONS} MAX_CONNECTIONS_PER_ADDRESS={PER_ADDRESS} "
        f"HANDSHAKE_TIMEOUT={HANDSHAKE_TIMEOUT:g}s; attacks {ATTACK_SECONDS:g}s each; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n",
        flush=True,
    )
    with Stack(config) as stack:
        rows = asyncio.run(run(stack))
    print("| attack | measured | result | target |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row.attack} | {row.measured} | {row.result} | {row.target} |")


def attacker_main(argv: list[str]) -> None:
    """``python -m bench.hostile slowloris PORT SOURCES PER_SOURCE``: prints "ready" once every attacker
    is connected, then after ATTACK_SECONDS how long each half-sent request lived (JSON)."""
    port, sources, per_source = int(argv[1]), argv[2].split(","), int(argv[3])
    lived = asyncio.run(slowloris(port, sources, per_source, ATTACK_SECONDS + 0.5))
    print(json.dumps(lived))


if __name__ == "__main__":
    if sys.argv[1:2] == ["slowloris"]:
        attacker_main(sys.argv[1:])
    else:
        main()

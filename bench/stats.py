"""The stats pulse at 5 000 clients through the gateway: how long after each tick the last client has it.

A stack with one stats replica runs on free loopback ports; a load generator (this module again, with
``--loadgen``, in its own process) opens the clients through the gateway, paced so that no accept backlog
overflows, and records when each pulse arrives at each client. For every measured tick: the time from
the tick (``tick * PULSE_INTERVAL`` on the wall clock, the moment the replica builds it) to the first and
to the last client's receipt; then p50/p99 over the ticks, and the stats replica's (and the gateway's) CPU
time per pulse, read from /proc over exactly the measured ticks (sampling and idle costs included).

    make bench                      # every suite
    .venv/bin/python -m bench stats
    BENCH_STATS_CLIENTS=5000 BENCH_STATS_TICKS=10 BENCH_STATS_INTERVAL=1 .venv/bin/python -m bench stats
"""

import argparse
import asyncio
import base64
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from urllib.parse import urlsplit

CLIENTS = int(os.environ.get("BENCH_STATS_CLIENTS", "5000"))
TICKS = int(os.environ.get("BENCH_STATS_TICKS", "10"))
INTERVAL = float(os.environ.get("BENCH_STATS_INTERVAL", "1"))
TARGET_MS = 250.0
RUN_DEADLINE = 300.0  # seconds: the whole suite, connecting included


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


# --- the load generator (its own process) ------------------------------------------------------------
class Receipts:
    """Per tick: how many clients got it, the first and the last arrival (wall clock)."""

    def __init__(self) -> None:
        self.count: dict[int, int] = {}
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.doubled = 0
        self.closed = 0

    def record(self, tick: int, at: float) -> None:
        if tick in self.count:
            self.count[tick] += 1
            self.last[tick] = max(self.last[tick], at)
            self.first[tick] = min(self.first[tick], at)
        else:
            self.count[tick], self.first[tick], self.last[tick] = 1, at, at


class PulseClient(asyncio.Protocol):
    """A bare WebSocket client: handshake, then it only frames what arrives and reads the tick."""

    def __init__(self, receipts: Receipts, request: bytes) -> None:
        self.receipts = receipts
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.upgraded = asyncio.get_running_loop().create_future()
        self.buffer = b""
        self.handshake_done = False
        self.last_tick = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buffer + data if self.buffer else data
        if not self.handshake_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(buf[:end].decode(errors="replace")))
                return
            self.handshake_done = True
            self.upgraded.set_result(None)
            buf = buf[end + 4 :]
        pos, end = 0, len(buf)
        while end - pos >= 2:
            length, header = buf[pos + 1] & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if end - pos < header + length:
                break
            opcode = buf[pos] & 0x0F
            if opcode == 1:  # a pulse: {"tick":N,...}
                start = pos + header + 8
                tick = int(buf[start : buf.index(b",", start)])
                if tick <= self.last_tick:
                    self.receipts.doubled += 1
                self.last_tick = tick
                self.receipts.record(tick, now)
            elif opcode == 8:
                self.receipts.closed += 1
            pos += header + length
        self.buffer = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed during handshake"))


async def open_clients(url: str, count: int, receipts: Receipts) -> list[PulseClient]:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(64)  # handshakes in flight: far below any accept backlog

    async def one() -> PulseClient:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        async with gate:
            _, client = await loop.create_connection(
                lambda: PulseClient(receipts, request), parts.hostname, parts.port or 80
            )
            await asyncio.wait_for(client.upgraded, 30)
            return client

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def generate(args: argparse.Namespace) -> None:
    receipts = Receipts()
    clients = await open_clients(args.url, args.clients, receipts)
    emit(event="connected", clients=len(clients))
    interval = args.interval
    first = int(time.time() // interval) + 2  # the first whole tick with every client in place
    last = first + args.ticks - 1
    await asyncio.sleep(max(0.0, (first - 0.5) * interval - time.time()))
    emit(event="begin")
    await asyncio.sleep(max(0.0, (last + 0.5) * interval - time.time()))
    emit(event="end", seconds=args.ticks * interval)
    await asyncio.sleep(0.5 * interval)  # stragglers of the last tick still count
    ticks = []
    for tick in range(first, last + 1):
        start = tick * interval
        got = receipts.count.get(tick, 0)
        ticks.append(
            {
                "tick": tick,
                "received": got,
                "first_ms": (receipts.first[tick] - start) * 1000 if got else None,
                "last_ms": (receipts.last[tick] - start) * 1000 if got else None,
            }
        )
    emit(event="result", ticks=ticks, doubled=receipts.doubled, closed=receipts.closed)
    for client in clients:
        if client.transport is not None:
            client.transport.write(b"\x88\x82\x00\x00\x00\x00\x03\xe8")  # close 1000, zero mask
    await asyncio.sleep(0.5)
    for client in clients:
        if client.transport is not None:
            client.transport.close()


def loadgen_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stats --loadgen")
    parser.add_argument("url")
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--ticks", type=int, default=TICKS)
    parser.add_argument("--interval", type=float, default=INTERVAL)
    args = parser.parse_args(argv)
    raise_fd_limit()
    try:
        import uvloop
    except ImportError:
        asyncio.run(generate(args))
    else:
        uvloop.run(generate(args))


# --- the orchestrator ----------------------------------------------------------------------------------
def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    import psutil

    times = {name: psutil.Process(pid).cpu_times() for name, pid in pids.items()}
    return {name: t.user + t.system for name, t in times.items()}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def run_loadgen(url: str, pids: dict[str, int]) -> tuple[dict, dict[str, float]]:
    """One load-generator process against ``url``: its per-tick result and each server's CPU seconds."""
    argv = [sys.executable, "-m", "bench.stats", "--loadgen", url]
    argv += ["--clients", str(CLIENTS), "--ticks", str(TICKS), "--interval", str(INTERVAL)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    pids = pids | {"loadgen": proc.pid}
    events: dict[str, dict] = {}
    before: dict[str, float] = {}
    cpu: dict[str, float] = {}
    deadline = time.monotonic() + RUN_DEADLINE
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            event = json.loads(line)
            events[event["event"]] = event
            if event["event"] == "begin":
                before = cpu_seconds(pids)
            elif event["event"] == "end":
                after = cpu_seconds(pids)
                cpu = {n: after[n] - before[n] for n in pids}
                cpu["load"] = os.getloadavg()[0]
            if time.monotonic() > deadline:
                raise RuntimeError("the stats benchmark ran past its deadline")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0 or "result" not in events:
        raise RuntimeError(f"the stats load generator failed ({proc.returncode})")
    return events["result"], cpu


def main() -> None:
    from devstack.stack import Stack, StackConfig

    raise_fd_limit()  # the stack's processes inherit it: the gateway holds two sockets per client
    level = os.environ.get("BENCH_LOG_LEVEL", "warning")
    config = StackConfig.for_tests(
        "stats=1", PULSE_INTERVAL=str(INTERVAL), ACCESS_LOG="false", LOG_LEVEL=level
    )
    rows = []
    with Stack(config) as stack:
        stats = stack.processes["stats-1"]
        pids = {"stats": stats.pid, "gateway": stack.processes["gateway"].pid}
        targets = {
            "through the gateway": f"{stack.gateway_url}/stats",
            "direct to the replica": f"ws://127.0.0.1:{stats.port}/stats",
        }
        for name, url in targets.items():
            print(
                f"stats: {CLIENTS} clients {name}, {TICKS} ticks of {INTERVAL:g} s",
                file=sys.stderr,
                flush=True,
            )
            rows.append((name, *run_loadgen(url, pids)))
    print_table(rows)


def print_table(rows: list[tuple[str, dict, dict[str, float]]]) -> None:
    print(
        f"Stats pulse, {CLIENTS} /stats clients, one stats replica, PULSE_INTERVAL={INTERVAL:g} s, "
        f"{TICKS} ticks per row (2-core machine shared with other work; load generator in its own process).\n"
    )
    print(
        "| clients | pulses received / expected | tick to first client p50 ms | tick to last client "
        "p50 / p99 / max ms | CPU ms per pulse: stats / gateway / load generator | machine load average |"
    )
    print("|---|---|---|---|---|---|")
    verdicts = []
    for name, result, cpu in rows:
        ticks = result["ticks"]
        lasts = [t["last_ms"] for t in ticks if t["last_ms"] is not None]
        firsts = [t["first_ms"] for t in ticks if t["first_ms"] is not None]
        received = sum(t["received"] for t in ticks)
        print(
            f"| {CLIENTS} {name} | {received} / {CLIENTS * len(ticks)} | {statistics.median(firsts):.1f} | "
            f"{statistics.median(lasts):.1f} / {percentile(lasts, 0.99):.1f} / {max(lasts):.1f} | "
            f"{cpu['stats'] * 1000 / len(ticks):.0f} / {cpu['gateway'] * 1000 / len(ticks):.0f} / "
            f"{cpu['loadgen'] * 1000 / len(ticks):.0f} | {cpu['load']:.1f} |"
        )
        ok = max(lasts) <= TARGET_MS and received == CLIENTS * len(ticks) and not result["doubled"]
        verdicts.append(
            f"{name}: {'met' if ok else 'MISSED'} (worst {max(lasts):.1f} ms, "
            f"{result['doubled']} doubled, {result['closed']} closed)"
        )
    print(
        f"\nevery client within {TARGET_MS:.0f} ms of every tick, one pulse per tick: " + "; ".join(verdicts)
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--loadgen"]:
        loadgen_main(sys.argv[2:])
    else:
        main()

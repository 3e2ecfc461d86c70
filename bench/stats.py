"""The stats pulse at 5 000 clients through the gateway: how long after each tick the last client has it.

The stack is the default configuration, what ``make run`` starts (``StackConfig.like_make_run``: one
replica each, ``GATEWAY_WORKERS=auto``, Unix-socket upstreams), on free loopback ports; a load
generator (this module again, with ``--loadgen``, in its own process) opens the clients through the
gateway, paced so that no accept backlog overflows, and records when each pulse arrives at each client.
The clients come from several loopback addresses (500 each), so the gateway's default per-address cap
(1 000) holds. For every measured tick: the time from the tick (``tick * PULSE_INTERVAL`` on the wall
clock, the moment the replica builds it) to the first and to the last client's receipt; then p50/p99
over the ticks, and the CPU time of the stats replica and of the gateway (its workers included) per
pulse and per pulse per client, read from /proc over exactly the measured ticks (sampling and idle
costs included).

    make bench                      # every suite
    .venv/bin/python -m bench stats
    BENCH_STATS_CLIENTS=5000 BENCH_STATS_TICKS=10 BENCH_STATS_INTERVAL=1 .venv/bin/python -m bench stats
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

from bench.measure import cpu_seconds, percentile
from bench.wsclient import OP_CLOSE, OP_TEXT, RawClient, emit, open_clients, raise_fd_limit

CLIENTS = int(os.environ.get("BENCH_STATS_CLIENTS", "5000"))
TICKS = int(os.environ.get("BENCH_STATS_TICKS", "10"))
INTERVAL = float(os.environ.get("BENCH_STATS_INTERVAL", "1"))
TARGET_MS = 80.0  # issue 26: the last of 5 000 clients within 80 ms of the tick, at the worst tick
RUN_DEADLINE = 300.0  # seconds: the whole suite, connecting included


# --- the load generator (its own process) ------------------------------------------------------------
class Receipts:
    """Per tick: how many clients got it, the first and the last arrival (wall clock)."""

    def __init__(self) -> None:
        self.count: dict[int, int] = {}
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.doubled = 0
        self.closed = 0
        self.close_codes: dict[int, int] = {}  # close code the server sent -> clients

    def record(self, tick: int, at: float) -> None:
        if tick in self.count:
            self.count[tick] += 1
            self.last[tick] = max(self.last[tick], at)
            self.first[tick] = min(self.first[tick], at)
        else:
            self.count[tick], self.first[tick], self.last[tick] = 1, at, at


class PulseClient(RawClient):
    """Only reads the tick of each pulse (the JSON starts ``{"tick":N,``) and when it arrived."""

    def __init__(self, receipts: Receipts, request: bytes) -> None:
        super().__init__(request)
        self.receipts = receipts
        self.last_tick = -1

    def on_frame(self, opcode: int, buf: bytes, start: int, end: int) -> None:
        if opcode == OP_TEXT:
            at = time.time()
            tick = int(buf[start + 8 : buf.index(b",", start + 8)])
            if tick <= self.last_tick:
                self.receipts.doubled += 1
            self.last_tick = tick
            self.receipts.record(tick, at)
        elif opcode == OP_CLOSE:
            self.receipts.closed += 1
            code = int.from_bytes(buf[start : start + 2], "big") if end - start >= 2 else 1005
            self.receipts.close_codes[code] = self.receipts.close_codes.get(code, 0) + 1


async def generate(args: argparse.Namespace) -> None:
    receipts = Receipts()
    clients = await open_clients(args.url, args.clients, lambda request: PulseClient(receipts, request))
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
    emit(
        event="result",
        ticks=ticks,
        doubled=receipts.doubled,
        closed=receipts.closed,
        close_codes=receipts.close_codes,
    )
    for client in clients:
        client.close()
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
    # The default configuration, as `make run` starts it (GATEWAY_WORKERS=auto, Unix-socket upstreams),
    # on free ports; only the pulse interval is shortened so that ten ticks take ten seconds.
    config = StackConfig.like_make_run(PULSE_INTERVAL=str(INTERVAL), ACCESS_LOG="false", LOG_LEVEL=level)
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
        "p50 / p99 / max ms | CPU ms per pulse: stats / gateway / load generator | "
        "CPU µs per pulse per client: stats / gateway | machine load average |"
    )
    print("|---|---|---|---|---|---|---|")
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
            f"{cpu['loadgen'] * 1000 / len(ticks):.0f} | "
            f"{cpu['stats'] * 1e6 / len(ticks) / CLIENTS:.1f} / "
            f"{cpu['gateway'] * 1e6 / len(ticks) / CLIENTS:.1f} | "
            f"{cpu['load']:.1f} |"
        )
        ok = max(lasts) <= TARGET_MS and received == CLIENTS * len(ticks) and not result["doubled"]
        verdicts.append(
            f"{name}: {'met' if ok else 'MISSED'} (worst {max(lasts):.1f} ms, "
            f"{result['doubled']} doubled, {result['closed']} closed"
            + (f" with codes {result['close_codes']}" if result["close_codes"] else "")
            + ")"
        )
    print(
        f"\nevery client within {TARGET_MS:.0f} ms of every tick, one pulse per tick: " + "; ".join(verdicts)
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--loadgen"]:
        loadgen_main(sys.argv[2:])
    else:
        main()

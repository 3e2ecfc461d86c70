"""Echo round trips at 1 000 concurrent clients: direct to the echo service vs through the gateway.

Both targets run in the same stack, in the same run, alternating (direct, gateway, direct, gateway) so
that drift on a shared machine hits both alike. The load generator is its own process (bench/loadgen.py).
For each phase the servers' CPU is read from /proc over exactly that phase.

    make bench            # every suite
    .venv/bin/python -m bench echo
    BENCH_CLIENTS=1000 BENCH_SECONDS=5 BENCH_ROUNDS=2 BENCH_RATE=5000 .venv/bin/python -m bench echo
"""

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field

from devstack.stack import Stack, StackConfig

from bench.measure import cpu_seconds

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "1000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
RATE = float(os.environ.get("BENCH_RATE", "5000"))


@dataclass
class Result:
    target: str
    phases: dict[str, list[dict]] = field(default_factory=dict)


def run_loadgen(url: str, pids: dict[str, int]) -> dict[str, dict]:
    """One load-generator process against ``url``; returns each phase's numbers plus server CPU %."""
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        url,
        "--clients",
        str(CLIENTS),
        "--seconds",
        str(SECONDS),
        "--rate",
        str(RATE),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    phases: dict[str, dict] = {}
    begun: dict[str, dict[str, float]] = {}
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            event = json.loads(line)
            if event["event"] == "begin":
                begun[event["phase"]] = cpu_seconds(pids | {"loadgen": proc.pid})
            elif event["event"] == "end":
                after = cpu_seconds(pids | {"loadgen": proc.pid})
                before = begun[event["phase"]]
                secs = event["seconds"]
                event["cpu_pct"] = {n: round(100 * (after[n] - before[n]) / secs) for n in after}
                phases[event["phase"]] = event
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed with {proc.returncode}")
    return phases


def median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def main() -> None:
    config = StackConfig.for_tests("", ACCESS_LOG="false", LOG_LEVEL="warning")
    with Stack(config) as stack:
        echo = stack.processes["echo-1"]
        pids = {"echo": echo.pid, "gateway": stack.processes["gateway"].pid}
        targets = {
            "direct": f"ws://127.0.0.1:{echo.port}/echo",
            "gateway": f"{stack.gateway_url}/echo",
        }
        runs: dict[str, list[dict[str, dict]]] = {name: [] for name in targets}
        for round_no in range(ROUNDS):
            for name, url in targets.items():
                print(f"round {round_no + 1}/{ROUNDS}: {name} ...", file=sys.stderr, flush=True)
                runs[name].append(run_loadgen(url, pids))
    print_table(runs)


def print_table(runs: dict[str, list[dict[str, dict]]]) -> None:
    sat = {n: [r["saturate"] for r in rs] for n, rs in runs.items()}
    paced = {n: [r["paced"] for r in rs] for n, rs in runs.items()}
    print(
        f"Echo, {CLIENTS} concurrent clients, 100-byte text frames, {SECONDS:g} s per phase, "
        f"median of {ROUNDS} alternating rounds (2-core machine, load generator in its own process).\n"
    )
    print(
        "| target | saturated msgs/s | saturated p50 / p99 ms | paced p50 / p99 ms at "
        f"{RATE:g}/s offered | CPU % echo / gateway / loadgen (saturated) |"
    )
    print("|---|---|---|---|---|")
    for name in runs:
        cpu = sat[name][-1]["cpu_pct"]
        gw_cpu = cpu["gateway"] if name == "gateway" else 0
        print(
            f"| {name} | {median(sat[name], 'msgs_per_s'):,.0f} | "
            f"{median(sat[name], 'p50_ms'):.2f} / {median(sat[name], 'p99_ms'):.2f} | "
            f"{median(paced[name], 'p50_ms'):.3f} / {median(paced[name], 'p99_ms'):.3f} | "
            f"{cpu['echo']} / {gw_cpu} / {cpu['loadgen']} |"
        )
    ratio = median(sat["gateway"], "msgs_per_s") / median(sat["direct"], "msgs_per_s")
    added = median(paced["gateway"], "p50_ms") - median(paced["direct"], "p50_ms")
    print(
        f"\nthrough the gateway: {ratio:.2f}x the direct throughput (target >= 0.85x); "
        f"added p50 at {RATE:g}/s offered: {added:+.3f} ms (target < 0.5 ms)"
    )

"""``python -m bench joins``: how fast members can join, into one big room and into rooms of 10.

The stack ``make run`` starts (one rooms replica, the gateway with GATEWAY_WORKERS=auto reaching it over a
Unix socket, a real nats-server; BENCH_JOINS_SCALE for others, e.g. ``rooms=2``; BENCH_JOINS_STACK=tests
for the tests' stack: one gateway process, TCP upstreams), JSON members opened through the gateway by one
load generator process (bench/joins_load.py) as fast as 20 or 200 joins in flight allow: joins/s over the
whole run, refusals (by close code), and each member's time from its TCP connect to its ``welcome``
(p50/p99). Every member of a row stays until the row ends. Bounded: each load run has a deadline; every
process is stopped.

    .venv/bin/python -m bench joins
    BENCH_JOINS_MEMBERS=5000 BENCH_JOINS_SCALE=rooms=2 .venv/bin/python -m bench joins
    BENCH_JOINS_ENV="PRESENCE_EVENTS_MAX_MEMBERS=100000" .venv/bin/python -m bench joins  # every join told
"""

import json
import os
import subprocess
import sys

from devstack.stack import Stack, StackConfig

MEMBERS = int(os.environ.get("BENCH_JOINS_MEMBERS", "3000"))
SCALE = os.environ.get("BENCH_JOINS_SCALE", "")
STACK = os.environ.get("BENCH_JOINS_STACK", "make run")  # or "tests"
IN_FLIGHT = [int(n) for n in os.environ.get("BENCH_JOINS_IN_FLIGHT", "200,20").split(",")]
WHERE = [
    w
    for w in (("one room", MEMBERS), ("rooms of 10", 10))
    if w[0] in os.environ.get("BENCH_JOINS_WHERE", "one room,rooms of 10")
]
LOAD_DEADLINE = 180.0  # seconds for one load generator run


def run_load(url: str, in_flight: int, room_size: int) -> dict:
    argv = [sys.executable, "-m", "bench.joins_load", url, "--members", str(MEMBERS)]
    argv += ["--in-flight", str(in_flight), "--room-size", str(room_size), "--deadline", str(LOAD_DEADLINE)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=LOAD_DEADLINE + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    # every member comes from 127.0.0.1: the gateway's per-address cap (1 000) would refuse the rest
    env = {"LOG_LEVEL": "warning", "ACCESS_LOG": "false", "MAX_CONNECTIONS_PER_ADDRESS": "100000"}
    env |= dict(e.split("=", 1) for e in os.environ.get("BENCH_JOINS_ENV", "").split() if "=" in e)
    rows: list[tuple[str, dict]] = []
    config = StackConfig.for_tests if STACK == "tests" else StackConfig.like_make_run
    with Stack(config(SCALE, **env)) as stack:
        for n, in_flight in enumerate(IN_FLIGHT):
            for where, size in WHERE:
                name = f"{where}, {in_flight} in flight"
                print(f"{name} ...", file=sys.stderr, flush=True)
                room = f"big{n}" if size == MEMBERS else f"small{n}-{{room}}"
                rows.append((name, run_load(f"{stack.gateway_url}/ws/{room}", in_flight, size)))
    print(
        f"{MEMBERS} JSON members per row through the gateway ({SCALE or 'one rooms replica'}; the stack "
        f"{'of the tests' if STACK == 'tests' else 'make run starts'}), opened as "
        "fast as the joins in flight allow; loopback, load generator in its own process, a shared 2-core "
        "machine.\n"
    )
    print("| where they join | joins/s | refused | welcome p50 / p99 ms |")
    print("|---|---|---|---|")
    for name, r in rows:
        refused = sum(r["refused"].values())
        codes = ", ".join(f"{c}: {k}" for c, k in sorted(r["refused"].items()))
        print(
            f"| {name} | {r['joins_per_s']:.0f} | {refused} of {MEMBERS}{f' ({codes})' if codes else ''} | "
            f"{r['welcome_p50_ms']:.0f} / {r['welcome_p99_ms']:.0f} |"
        )

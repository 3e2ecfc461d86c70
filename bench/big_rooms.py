"""``python -m bench big_rooms``: does one message reach a room of 10 000 as fast as the room's size says?

The stack ``make run`` starts (one rooms replica, the gateway with GATEWAY_WORKERS=auto, a real
nats-server), one room per row of BENCH_BIG_ROOMS members (1 000 then 10 000), JSON members opened through
the gateway by one load generator process (bench/rooms_load.py), all listening. Messages come from the
publish API through the gateway at BENCH_BIG_ROOMS_RATE (2) per second for BENCH_BIG_ROOMS_SECONDS (10),
the same rate in every row; each delivery gives one publish-to-delivery latency. Above 100 members a room
sends presence as periodic ``members`` diffs, so filling a room of 10 000 puts no presence backlog in
front of its messages: the last column says whether p99 stayed within the smaller room's p99 scaled by
size (at most 1.0x). Bounded: each load run has a deadline; every process is stopped.

    .venv/bin/python -m bench big_rooms
    BENCH_BIG_ROOMS=1000,5000 .venv/bin/python -m bench big_rooms
"""

import json
import os
import secrets
import subprocess
import sys

from devstack.stack import Stack, StackConfig

SIZES = [int(n) for n in os.environ.get("BENCH_BIG_ROOMS", "1000,10000").split(",")]
RATE = float(os.environ.get("BENCH_BIG_ROOMS_RATE", "2"))  # messages per second into the room
SECONDS = float(os.environ.get("BENCH_BIG_ROOMS_SECONDS", "10"))
LOAD_DEADLINE = 240.0  # seconds for one load generator run, its 10 000 connects included


def run_load(url: str, publish: str, members: int, key: str) -> dict:
    argv = [sys.executable, "-m", "bench.rooms_load", url, "--members", str(members), "--senders", "1"]
    # paced: RATE messages/s to every member; the saturated phase is cut to a second (not reported here)
    argv += ["--paced-seconds", str(SECONDS), "--offered", str(RATE * members), "--seconds", "1"]
    argv += ["--window", "1", "--publish", publish]
    env = os.environ | {"BENCH_API_KEY": key}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=LOAD_DEADLINE, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    key = secrets.token_urlsafe(32)
    # every member comes from 127.0.0.1: the gateway's per-address cap (1 000) would refuse the rest
    env = {"LOG_LEVEL": "warning", "ACCESS_LOG": "false", "MAX_CONNECTIONS_PER_ADDRESS": "100000"}
    env |= {"PUBLISH_API_KEYS": json.dumps([key]), "PUBLISH_RATE": "100000", "PUBLISH_BURST": "100000"}
    rows: list[tuple[int, dict]] = []
    with Stack(StackConfig.like_make_run("", **env)) as stack:
        for size in SIZES:
            print(f"a room of {size} ...", file=sys.stderr, flush=True)
            room = f"big-{size}"
            publish = f"{stack.http_url}/api/rooms/{room}/messages"
            rows.append((size, run_load(f"{stack.gateway_url}/ws/{room}?format=json", publish, size, key)))
    print(
        f"One room per row, JSON members through the gateway (the stack make run starts), {RATE:g} "
        f"messages/s from the publish API for {SECONDS:g} s; publish-to-delivery latency at every member; "
        "loopback, load generator in its own process, a shared 2-core machine.\n"
    )
    print("| members | connect s | deliveries | lost | p50 ms | p99 ms | p99 / (first row's p99 x size) |")
    print("|---|---|---|---|---|---|---|")
    first_size, first = rows[0]
    for size, r in rows:
        paced = r["paced"]
        scaled = first["paced"]["p99_ms"] * size / first_size
        ratio = paced["p99_ms"] / scaled if scaled else float("nan")
        print(
            f"| {size:,} | {r['connect_s']:.1f} | {paced['deliveries']:,} | {paced['lost']} | "
            f"{paced['p50_ms']:.1f} | {paced['p99_ms']:.1f} | {ratio:.2f}x |"
        )

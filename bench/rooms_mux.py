"""Many rooms on one connection: ``BENCH_MUX_MEMBERS`` (1 000) members, each in ``BENCH_MUX_ROOMS`` (10)
rooms, over one ``/ws`` connection each, against the same members with one ``/ws/{room}`` connection
per room (10 each), in the same run, each on a fresh stack (2 rooms replicas, the gateway as one process
or ``BENCH_MUX_GATEWAY_WORKERS``, NATS). One sender per room. Reported: saturated deliveries/s, paced
p50/p99 at ``BENCH_MUX_OFFERED`` deliveries/s, and the memory per member at the gateway and at the
replicas (resident memory after every member has its welcomes, minus before they connected, over the
members).

    .venv/bin/python -m bench rooms          # this row is printed after the one-room table
    .venv/bin/python -m bench.rooms_mux      # this row alone
    BENCH_MUX_MEMBERS=200 .venv/bin/python -m bench.rooms_mux
    BENCH_MUX_GATEWAY_WORKERS=2 .venv/bin/python -m bench.rooms_mux   # 10 000 sockets: two gateway processes

Targets (issue 20): memory per member at least 5x lower than 10 sockets; deliveries/s at least 0.9x;
paced p99 no worse than 1.1x. Every member is a JSON member (``/ws`` speaks JSON only), so presence
(each join reaches every member of the room) is part of the connect in both modes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from devstack.stack import Stack, StackConfig

MEMBERS = int(os.environ.get("BENCH_MUX_MEMBERS", "1000"))
ROOMS = int(os.environ.get("BENCH_MUX_ROOMS", "10"))
SECONDS = float(os.environ.get("BENCH_MUX_SECONDS", "5"))
PACED_SECONDS = float(os.environ.get("BENCH_MUX_PACED_SECONDS", "10"))
OFFERED = float(os.environ.get("BENCH_MUX_OFFERED", "10000"))
WINDOW = int(os.environ.get("BENCH_MUX_WINDOW", "16"))
# Seconds until every member has its welcomes: presence makes a join cost the room's size (each join
# reaches every member), so connecting grows with members squared.
CONNECT_DEADLINE = float(os.environ.get("BENCH_MUX_CONNECT_DEADLINE", "120"))
LOAD_DEADLINE = 600.0  # seconds for one load generator run, connecting included
# Gateway processes in both modes. One holds at most (open-file limit - 288) / 2 connections: with a limit of
# 20 000 files that is 9 856, fewer than 1 000 members x 10 sockets; BENCH_MUX_GATEWAY_WORKERS=2 fits them.
GATEWAY_WORKERS = os.environ.get("BENCH_MUX_GATEWAY_WORKERS", "1")
MODES = {"mux": "one /ws connection per member", "sockets": f"{ROOMS} /ws/{{room}} connections per member"}


def rss(pid: int) -> int:
    """Resident bytes of a process and its descendants (the gateway's workers, uvicorn's children)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(
                int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")
            )
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total


def memory(stack: Stack) -> dict[str, int]:
    gateway = stack.processes["gateway"].pid
    replicas = [p.pid for p in stack.replicas("rooms")]
    return {
        "gateway": rss(gateway) if gateway else 0,
        "replicas": sum(rss(pid) for pid in replicas if pid),
    }


def run_mode(mode: str) -> dict:
    env = {"LOG_LEVEL": "warning", "ACCESS_LOG": "false", "MESSAGE_RATE": "100000", "MESSAGE_BURST": "100000"}
    env |= {"GATEWAY_WORKERS": GATEWAY_WORKERS, "MAX_CONNECTIONS_PER_ADDRESS": str(MEMBERS * ROOMS + 100)}
    with Stack(StackConfig.for_tests("rooms=2", **env)) as stack:
        before = memory(stack)
        argv = [sys.executable, "-m", "bench.rooms_mux_load", stack.gateway_url, "--mode", mode]
        argv += ["--members", str(MEMBERS), "--rooms", str(ROOMS), "--seconds", str(SECONDS)]
        argv += ["--paced-seconds", str(PACED_SECONDS), "--offered", str(OFFERED), "--window", str(WINDOW)]
        argv += ["--connect-deadline", str(CONNECT_DEADLINE)]
        load = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert load.stdin is not None and load.stdout is not None
            first = load.stdout.readline()  # {"connected": n}: every member has its welcomes
            if not first:
                raise RuntimeError("the load generator ended before its members were connected")
            after = memory(stack)
            load.stdin.write("go\n")
            load.stdin.flush()
            out, _ = load.communicate(timeout=LOAD_DEADLINE)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait(5)
        if load.returncode != 0:
            raise RuntimeError(f"load generator failed ({load.returncode})")
        result = json.loads(out.strip().splitlines()[-1])
        result["memory_per_member"] = {k: (after[k] - before[k]) / MEMBERS for k in after}
        return result


def main() -> None:
    results = {}
    for mode in MODES:
        print(f"{MODES[mode]} ...", file=sys.stderr, flush=True)
        results[mode] = run_mode(mode)
    print_table(results)


def print_table(results: dict[str, dict]) -> None:
    print(
        f"\n{MEMBERS:,} members, each in {ROOMS} rooms, one sender per room, 100-byte messages; paced "
        f"{PACED_SECONDS:g} s at {OFFERED:,.0f} deliveries/s, saturated {SECONDS:g} s (window {WINDOW}); "
        f"2 rooms replicas, the gateway in {GATEWAY_WORKERS} process(es), NATS; a shared 2-core machine "
        "(ratios matter).\n"
    )
    print(
        "| members connect with | sockets | saturated deliveries/s | paced p50 / p99 ms "
        "| KB per member at the gateway | KB per member at the replicas | lost |"
    )
    print("|---|---|---|---|---|---|---|")
    for mode, r in results.items():
        sat, paced, mem = r["saturate"], r["paced"], r["memory_per_member"]
        print(
            f"| {MODES[mode]} | {r['sockets']:,} | {sat['deliveries_per_s']:,.0f} | "
            f"{paced['p50_ms']:.1f} / {paced['p99_ms']:.1f} | {mem['gateway'] / 1024:.1f} | "
            f"{mem['replicas'] / 1024:.1f} | {sat['lost'] + paced['lost']} |"
        )
    mux, sockets = results["mux"], results["sockets"]
    memory_ratio = sum(sockets["memory_per_member"].values()) / max(
        1.0, sum(mux["memory_per_member"].values())
    )
    throughput = mux["saturate"]["deliveries_per_s"] / sockets["saturate"]["deliveries_per_s"]
    p99 = mux["paced"]["p99_ms"] / sockets["paced"]["p99_ms"]
    print(
        f"\n/ws against {ROOMS} sockets: memory per member {memory_ratio:.1f}x lower (target >= 5x: "
        f"{'met' if memory_ratio >= 5 else 'NOT met'}), deliveries/s {throughput:.2f}x (target >= 0.9x: "
        f"{'met' if throughput >= 0.9 else 'NOT met'}), paced p99 {p99:.2f}x (target <= 1.1x: "
        f"{'met' if p99 <= 1.1 else 'NOT met'})."
    )


if __name__ == "__main__":
    main()

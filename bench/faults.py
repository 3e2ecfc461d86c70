"""``python -m bench faults``: the rooms' delivery promise under faults, measured, not just asserted.

For each fault a fresh stack (2 rooms replicas, the gateway, a real nats-server), 2 senders at
20 messages/s each that resend what is unacknowledged after any close, 4 members that resume with
``since`` after any close, all of them the Python client ``realtime_client.Room`` (the same traffic as
tests/test_rooms_delivery.py, from tests/support/rooms.py).
Per fault: messages acknowledged, lost and duplicated per member, the longest pause between two
deliveries to one member, how long the fault action took (NATS down 1 s and back; a gateway stop and
start; two replica restarts one after the other), and the time from its end until messages flow again
(new acks, and every member hearing them). Bounded: each run has deadlines; every process is stopped after.

The ``nats-*`` rows run on one 3-node JetStream cluster (``SCALE="nats=3 rooms=2"``, the rooms stream on
R3; tests/support/cluster.py): the stream leader (found through /jsz) and a follower SIGKILLed and brought
back, the leader SIGSTOPped for 30 s, a rolling restart of the three nodes, two nodes lost at once, and,
where root may make network namespaces, one node cut off for 20 s. For these the longest pause between two
acknowledgements says how long sends hung (at most 10 s while the stream has a quorum).

    .venv/bin/python -m bench faults
    BENCH_FAULTS=nats-leader-sigkill,nats-leader-sigstop-30s .venv/bin/python -m bench faults
"""

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable

from devstack.stack import Stack, StackConfig

from tests.support import partition
from tests.support.cluster import CLUSTER_ENV, CLUSTER_FAULTS, PulseWatch, wait_current
from tests.support.rooms import FAULTS, LISTENERS, RATE, SENDERS, Verdict, run_traffic

PARTITION = "nats-node-cut-off-20s"  # root only: each node in its own network namespace
ALL = [*FAULTS, *CLUSTER_FAULTS, PARTITION]
CHOSEN = [f for f in os.environ.get("BENCH_FAULTS", ",".join(ALL)).split(",") if f]


def one(fault: str) -> dict:
    config = StackConfig.for_tests("rooms=2", LOG_LEVEL="warning", ACCESS_LOG="false", PRESENCE_INTERVAL="1")
    with Stack(config) as stack:
        return asyncio.run(run_traffic(stack, f"bench-{fault}", FAULTS[fault](stack)))


async def watched(stack: Stack, fault: str, action: Callable[[], Awaitable[None]]) -> dict:
    """The traffic and the fault, with a /stats client counting the pulse's ticks meanwhile."""
    async with PulseWatch(stack) as pulse:
        result = await run_traffic(stack, f"bench-{fault}", action)
    return result | {"pulse": (len(pulse.ticks), pulse.skipped)}


def on_a_cluster(faults: list[str]) -> dict[str, dict]:
    """Every cluster fault on one 3-node cluster, one after the other, each in its own room."""
    results: dict[str, dict] = {}
    config = StackConfig.for_tests("nats=3 rooms=2", LOG_LEVEL="warning", ACCESS_LOG="false", **CLUSTER_ENV)
    with Stack(config) as stack:
        wait_current(stack, 60)
        for fault in faults:
            print(f"{fault} ...", file=sys.stderr, flush=True)
            action = CLUSTER_FAULTS[fault](stack)
            results[fault] = asyncio.run(watched(stack, fault, action))
            results[fault]["report"] = getattr(action, "report", {})
    return results


def main() -> None:
    results: dict[str, dict] = {}
    for fault in [f for f in CHOSEN if f in FAULTS]:
        print(f"{fault} ...", file=sys.stderr, flush=True)
        results[fault] = one(fault)
    results |= on_a_cluster([f for f in CHOSEN if f in CLUSTER_FAULTS])
    skipped = None
    if PARTITION in CHOSEN:
        skipped = partition.unavailable()
        if skipped is None:
            print(f"{PARTITION} ...", file=sys.stderr, flush=True)
            r = partition.run()
            fields = {k.removeprefix("verdict_"): r.pop(k) for k in list(r) if k.startswith("verdict_")}
            results[PARTITION] = r | {"verdict": Verdict(**fields)}
    print(
        f"{SENDERS} senders x {RATE:g} messages/s into one room, {LISTENERS} members, all through the "
        "gateway; senders resend unacknowledged messages after a close, members resume with since.\n"
    )
    print(
        "| fault | acknowledged | lost per member | duplicated per member | longest delivery gap s "
        "| longest ack gap s | fault action s | flowing again s after it | closes seen | resends |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for fault, r in results.items():
        v = r["verdict"]
        closes = sorted({c for each in r["listener_closes"] + r["sender_closes"] for c in each})
        gaps = f"{v.longest_gap:.2f} | {r['ack_gap_s']:.2f}"
        print(
            f"| {fault} | {v.acked} | {v.lost} | {v.duplicated} | {gaps} | "
            f"{r['fault_s']:.2f} | {r['flow_again_s'] - r['fault_s']:.2f} | {closes or '-'} | {r['resent']} |"
        )
    pulses = [
        f"{fault} {r['pulse'][0]} ({r['pulse'][1]} skipped)" for fault, r in results.items() if "pulse" in r
    ]
    if pulses:
        print("\nStats pulse ticks heard (1 s interval) during each cluster row: " + "; ".join(pulses) + ".")
    for fault, r in results.items():
        if r.get("report", {}).get("moved_s") is not None:
            report = r["report"]
            print(
                f"\n{fault}: rooms-1 sat on the hung or cut-off {report['node']}; seen on another node after "
                f"{report['moved_s']:.1f} s."
            )
    if skipped is not None:
        print(f"\n{PARTITION}: skipped: {skipped}")

"""``python -m bench faults``: the rooms' delivery promise under faults, measured, not just asserted.

For each fault a fresh stack (2 rooms replicas, the gateway, a real nats-server), 2 senders at
20 messages/s each that resend what is unacknowledged after any close, 4 members that resume with
``since`` after any close, all of them the Python client ``realtime_client.Room`` (the same traffic as
tests/test_rooms_delivery.py, from tests/support/rooms.py).
Per fault: messages acknowledged, lost and duplicated per member, the longest pause between two
deliveries to one member, how long the fault action took (NATS down 1 s and back; a gateway stop and
start; two replica restarts one after the other), and the time from its end until messages flow again
(new acks, and every member hearing them). Bounded: each run has deadlines; every process is stopped after.

    .venv/bin/python -m bench faults
"""

import asyncio
import os
import sys

from devstack.stack import Stack, StackConfig

from tests.support.rooms import FAULTS, LISTENERS, RATE, SENDERS, run_traffic

CHOSEN = [f for f in os.environ.get("BENCH_FAULTS", ",".join(FAULTS)).split(",") if f]


def one(fault: str) -> dict:
    config = StackConfig.for_tests("rooms=2", LOG_LEVEL="warning", ACCESS_LOG="false", PRESENCE_INTERVAL="1")
    with Stack(config) as stack:
        return asyncio.run(run_traffic(stack, f"bench-{fault}", FAULTS[fault](stack)))


def main() -> None:
    results: dict[str, dict] = {}
    for fault in CHOSEN:
        print(f"{fault} ...", file=sys.stderr, flush=True)
        results[fault] = one(fault)
    print(
        f"{SENDERS} senders x {RATE:g} messages/s into one room, {LISTENERS} members, all through the "
        "gateway; senders resend unacknowledged messages after a close, members resume with since.\n"
    )
    print(
        "| fault | acknowledged | lost per member | duplicated per member | longest delivery gap s "
        "| fault action s | flowing again s after it | closes members saw | resends |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for fault, r in results.items():
        v = r["verdict"]
        closes = sorted({c for each in r["listener_closes"] for c in each})
        print(
            f"| {fault} | {v.acked} | {v.lost} | {v.duplicated} | {v.longest_gap:.2f} | "
            f"{r['fault_s']:.2f} | {r['flow_again_s'] - r['fault_s']:.2f} | {closes or '-'} | {r['resent']} |"
        )

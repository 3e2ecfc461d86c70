"""``python -m bench faults``: the rooms' delivery promise under faults, measured, not just asserted.

For each fault a fresh stack (2 rooms replicas, the gateway, a real nats-server), 2 senders at
20 messages/s each that resend what is unacknowledged after any close, 4 members that resume with
``since`` after any close, all of them the Python client ``realtime_client.Room`` (the same traffic as
tests/test_rooms_delivery.py, from tests/support/rooms.py).
Per fault: messages acknowledged, lost and duplicated per member, the longest pause between two
deliveries to one member, how long the fault action took (NATS down 1 s and back; a gateway stop and
start; two replica restarts one after the other), and the time from its end until messages flow again
(new acks, and every member hearing them). Bounded: each run has deadlines; every process is stopped after.

Reconnect storms (``bench/storm.py``): one room of BENCH_STORM_MEMBERS (5 000) members, and as many in
rooms of 10, through the gateway; the gateway SIGKILLed and restarted; the time until the last member is
back (its welcome), and whether each got the message published to its room meanwhile, once.

    .venv/bin/python -m bench faults
    BENCH_FAULTS= BENCH_STORM_MEMBERS=2000 .venv/bin/python -m bench faults   # the storms only, smaller
"""

import asyncio
import json
import os
import secrets
import sys

from devstack.stack import Stack, StackConfig

from bench.storm import storm
from tests.support.rooms import FAULTS, LISTENERS, RATE, SENDERS, run_traffic

CHOSEN = [f for f in os.environ.get("BENCH_FAULTS", ",".join(FAULTS)).split(",") if f]
STORM_MEMBERS = int(os.environ.get("BENCH_STORM_MEMBERS", "5000"))
STORMS = {"one room": STORM_MEMBERS, "rooms of 10": 10}  # room size
CHOSEN_STORMS = [s for s in os.environ.get("BENCH_STORMS", ",".join(STORMS)).split(",") if s]


def one(fault: str) -> dict:
    config = StackConfig.for_tests("rooms=2", LOG_LEVEL="warning", ACCESS_LOG="false", PRESENCE_INTERVAL="1")
    with Stack(config) as stack:
        return asyncio.run(run_traffic(stack, f"bench-{fault}", FAULTS[fault](stack)))


def one_storm(room_size: int) -> dict:
    key = secrets.token_urlsafe(32)
    env = {"LOG_LEVEL": "warning", "ACCESS_LOG": "false", "MAX_CONNECTIONS_PER_ADDRESS": "100000"}
    env |= {"PUBLISH_API_KEYS": json.dumps([key]), "PUBLISH_RATE": "100000", "PUBLISH_BURST": "100000"}
    with Stack(StackConfig.for_tests("rooms=2", **env)) as stack:
        return asyncio.run(storm(stack, STORM_MEMBERS, room_size, key))


def main() -> None:
    storms: dict[str, dict] = {}
    for name in CHOSEN_STORMS:
        print(f"storm: {name} ...", file=sys.stderr, flush=True)
        storms[name] = one_storm(STORMS[name])
    results: dict[str, dict] = {}
    for fault in CHOSEN:
        print(f"{fault} ...", file=sys.stderr, flush=True)
        results[fault] = one(fault)
    if storms:
        print(
            f"Reconnect storms: {STORM_MEMBERS} JSON members through the gateway (2 rooms replicas), the "
            "gateway SIGKILLed and restarted; members resume with since after a jittered backoff; one "
            "message per room published through a replica while the gateway is away.\n"
        )
        print(
            "| where the members are | members | gateway ready after the kill s | last member back after "
            "the kill s | joins refused on the way back | lost | duplicated | welcomes not recovered |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name, r in storms.items():
            print(
                f"| {name} | {r['members']} | {r['gateway_back_s']:.2f} | {r['back_s']:.2f} | "
                f"{r['refused']} | {r['lost']} | "
                f"{r['duplicated']} | "
                f"{r['unrecovered']} |"
            )
        print()
    if not results:
        return
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

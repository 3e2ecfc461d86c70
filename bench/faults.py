"""``python -m bench faults``: the rooms' delivery promise under faults, measured, not just asserted.

For each fault a fresh stack (2 rooms replicas, the gateway, a real nats-server), 2 senders at
20 messages/s each that resend what is unacknowledged after any close, 4 members that resume with
``since`` after any close, all of them the Python client ``realtime_client.Room`` (the same traffic as
tests/test_rooms_delivery.py, from tests/support/rooms.py).
Per fault: messages acknowledged, lost and duplicated per member, the longest pause between two
deliveries to one member, how long the fault action took (NATS down 1 s and back; a gateway stop and
start; two replica restarts one after the other), and the time from its end until messages flow again
(new acks, and every member hearing them). Bounded: each run has deadlines; every process is stopped after.

Reconnect storms (``bench/storm.py``): one room of BENCH_STORM_MEMBERS (5 000) members, as many in
rooms of 10, and both at once (10 000), through the gateway (``make run``'s stack with 2 rooms replicas;
BENCH_STORMS chooses); the gateway SIGKILLed and restarted; the time until the last member is
back (its welcome), and whether each got the message published to its room meanwhile, once.

The ``nats-*`` rows run on one 3-node JetStream cluster (``SCALE="nats=3 rooms=2"``, the rooms stream on
R3; tests/support/cluster.py): the stream leader (found through /jsz) and a follower SIGKILLed and brought
back, the leader SIGSTOPped for 30 s, a rolling restart of the three nodes, two nodes lost at once, and,
where root may make network namespaces, one node cut off for 20 s. For these the longest pause between two
acknowledgements says how long sends hung (at most 10 s while the stream has a quorum).

    .venv/bin/python -m bench faults
    BENCH_FAULTS=nats-leader-sigkill,nats-leader-sigstop-30s .venv/bin/python -m bench faults
    BENCH_FAULTS= BENCH_STORM_MEMBERS=2000 .venv/bin/python -m bench faults   # the storms only, smaller
"""

import asyncio
import json
import os
import secrets
import sys
from collections.abc import Awaitable, Callable

from devstack.stack import Stack, StackConfig

from bench.storm import storm
from tests.support import partition
from tests.support.cluster import CLUSTER_ENV, CLUSTER_FAULTS, PulseWatch, wait_current
from tests.support.rooms import FAULTS, LISTENERS, RATE, SENDERS, Verdict, run_traffic

PARTITION = "nats-node-cut-off-20s"  # root only: each node in its own network namespace
ALL = [*FAULTS, *CLUSTER_FAULTS, PARTITION]
CHOSEN = [f for f in os.environ.get("BENCH_FAULTS", ",".join(ALL)).split(",") if f]
STORM_MEMBERS = int(os.environ.get("BENCH_STORM_MEMBERS", "5000"))
# (members, room size) groups; "both at once" is issue 24's target: 10 000 members, half in one room
STORMS = {
    "one room": [(STORM_MEMBERS, STORM_MEMBERS)],
    "rooms of 10": [(STORM_MEMBERS, 10)],
    "both at once": [(STORM_MEMBERS, STORM_MEMBERS), (STORM_MEMBERS, 10)],
}
CHOSEN_STORMS = [s for s in os.environ.get("BENCH_STORMS", ",".join(STORMS)).split(",") if s]


def one(fault: str) -> dict:
    config = StackConfig.for_tests("rooms=2", LOG_LEVEL="warning", ACCESS_LOG="false", PRESENCE_INTERVAL="1")
    with Stack(config) as stack:
        return asyncio.run(run_traffic(stack, f"bench-{fault}", FAULTS[fault](stack)))


def one_storm(groups: list[tuple[int, int]]) -> dict:
    """The stack make run starts, with two rooms replicas: GATEWAY_WORKERS=auto (two on two cores), so
    10 000 members fit in the gateway (a member costs it two files, a process may open 20 000)."""
    key = secrets.token_urlsafe(32)
    env = {"LOG_LEVEL": "warning", "ACCESS_LOG": "false", "MAX_CONNECTIONS_PER_ADDRESS": "100000"}
    env |= {"PUBLISH_API_KEYS": json.dumps([key]), "PUBLISH_RATE": "100000", "PUBLISH_BURST": "100000"}
    with Stack(StackConfig.like_make_run("rooms=2", **env)) as stack:
        return asyncio.run(storm(stack, groups, key))


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
    storms: dict[str, dict] = {}
    for name in CHOSEN_STORMS:
        print(f"storm: {name} ...", file=sys.stderr, flush=True)
        storms[name] = one_storm(STORMS[name])
    results: dict[str, dict] = {}
    for fault in [f for f in CHOSEN if f in FAULTS]:
        print(f"{fault} ...", file=sys.stderr, flush=True)
        results[fault] = one(fault)
    on_cluster = [f for f in CHOSEN if f in CLUSTER_FAULTS]
    if on_cluster:  # (the storms alone start no cluster)
        results |= on_a_cluster(on_cluster)
    skipped = None
    if PARTITION in CHOSEN:
        skipped = partition.unavailable()
        if skipped is None:
            print(f"{PARTITION} ...", file=sys.stderr, flush=True)
            r = partition.run()
            fields = {k.removeprefix("verdict_"): r.pop(k) for k in list(r) if k.startswith("verdict_")}
            results[PARTITION] = r | {"verdict": Verdict(**fields)}
    if storms:
        print(
            "Reconnect storms: JSON members through the gateway (make run's stack, 2 rooms replicas), the "
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
    if not results and skipped is None:
        return
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

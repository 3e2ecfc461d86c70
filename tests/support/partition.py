"""A network partition without a reset: each NATS node in its own network namespace, one cut off for 20 s.

Root only (``ip netns``); elsewhere ``unavailable()`` says why and the test and bench row are skipped.
Everything stays inside namespaces made here and removed after: a hub namespace holds a bridge
(10.231.0.254/24), the services, the gateway and the traffic (this module run as ``python -m``, inside
the hub); node k lives in its own namespace at 10.231.0.k, linked to the bridge by a veth pair. Taking
the hub's end of node k's link down cuts node k off from the other two nodes and from every replica at
once, without a reset: its TCP connections just stop carrying anything. Bringing it up heals it.

    python -m tests.support.partition     # as root: one run, the result as JSON on the last line
"""

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from devstack.stack import Stack, StackConfig

from tests.support.cluster import (
    CLUSTER_ENV,
    COMEBACK,
    HUNG_CLIENT,
    connected_node,
    followers,
    move_leader,
    wait_current,
)
from tests.support.cluster_events import events_of
from tests.support.presence_throttle import (
    FAILURE_WINDOW,
    Watchers,
    guarded_rooms,
    presence_and_throttle_after,
    with_checks_during,
)
from tests.support.rooms import run_traffic

NODES = 3
SUBNET = "10.231.0"
CUT_FOR = 20.0  # seconds node k stays cut off
FAULT = "nats-node-cut-off-20s"
RUN_TIMEOUT = 240.0  # the whole run in the hub, stack start to stop
ROOT = Path(__file__).resolve().parents[2]


def unavailable() -> str | None:
    """Why this machine cannot run the partition (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns); run as root to include the partition fault"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    probe = f"rtprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True, text=True, check=True, timeout=10)


@contextlib.contextmanager
def namespaces() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(hub namespace, [(node namespace, node address)]); all of them removed on the way out."""
    tag = f"rt{os.getpid()}"
    hub = f"{tag}-hub"
    nodes = [(f"{tag}-n{k}", f"{SUBNET}.{k}") for k in range(1, NODES + 1)]
    made: list[str] = []
    try:
        for name in [hub, *(ns for ns, _ in nodes)]:
            _ip("netns", "add", name)
            made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "addr", "add", f"{SUBNET}.254/24", "dev", "br0")
        _ip("-n", hub, "link", "set", "br0", "up")
        for k, (ns, address) in enumerate(nodes, start=1):
            _ip("-n", hub, "link", "add", f"veth{k}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", hub, "link", "set", f"veth{k}", "master", "br0")
            _ip("-n", hub, "link", "set", f"veth{k}", "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        yield hub, nodes
    finally:
        for name in reversed(made):  # a namespace's veth ends go with it
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def cut_off(stack: Stack, hub: str, seconds: float = CUT_FOR) -> Callable[[], Awaitable[None]]:
    """Node rooms-1 is connected to (made the stream leader first) loses its link for ``seconds``."""
    report: dict[str, float | str] = {}

    async def fault() -> None:
        node = await asyncio.to_thread(connected_node, stack, HUNG_CLIENT)
        assert isinstance(node, str), f"{HUNG_CLIENT} is not connected to any node"
        await move_leader(stack, node)
        link = f"veth{stack.nats_names.index(node) + 1}"
        report["node"] = node
        await asyncio.to_thread(_ip, "-n", hub, "link", "set", link, "down")
        cut = time.monotonic()
        try:
            others = followers(stack, node)
            while time.monotonic() - cut < seconds:  # cut off this long (the fault itself)
                if "moved_s" not in report and await asyncio.to_thread(
                    connected_node, stack, HUNG_CLIENT, others
                ):
                    report["moved_s"] = time.monotonic() - cut
                await asyncio.sleep(0.2)
        finally:
            await asyncio.to_thread(_ip, "-n", hub, "link", "set", link, "up")
        await asyncio.to_thread(wait_current, stack, COMEBACK)

    fault.report = report  # type: ignore[attr-defined]
    return fault


async def traffic_and_checks(stack: Stack, fault: Callable[[], Awaitable[None]]) -> dict:
    """The traffic through the cut, with presence and the password throttle checked during and after it
    (tests/support/presence_throttle.py); what they saw under ``presence_and_throttle``."""
    seen: dict[str, object] = {}
    async with Watchers(stack, "presence-partition") as watchers:
        result = await run_traffic(
            stack, "partition", with_checks_during(stack, FAULT, fault, watchers, seen)
        )
        await presence_and_throttle_after(stack, FAULT, watchers, seen)
    result["events"] = await events_of(stack, "partition", result)
    return result | {"presence_and_throttle": seen}


def in_the_hub(hub: str, nodes: list[tuple[str, str]]) -> dict:
    """Inside the hub namespace: the cluster stack, the traffic and the cut; the result as a dict."""
    guards = {
        "ROOM_PASSWORDS": json.dumps(guarded_rooms([FAULT])),
        "AUTH_FAILURE_WINDOW": str(FAILURE_WINDOW),
    }
    env = CLUSTER_ENV | guards
    config = StackConfig.for_tests("nats=3 rooms=2", LOG_LEVEL="warning", ACCESS_LOG="false", **env)
    config.nats_netns = nodes
    with Stack(config) as stack:
        wait_current(stack, 60)
        fault = cut_off(stack, hub)
        result = asyncio.run(traffic_and_checks(stack, fault))
    verdict = result.pop("verdict")
    result |= {f"verdict_{k}": v for k, v in vars(verdict).items()} | {"report": fault.report}  # type: ignore[attr-defined]
    return result


def run() -> dict:
    """Make the namespaces, run ``in_the_hub`` there as its own process, remove them; its result."""
    with namespaces() as (hub, nodes):
        argv = [
            "ip",
            "netns",
            "exec",
            hub,
            sys.executable,
            "-m",
            "tests.support.partition",
            hub,
            json.dumps(nodes),
        ]
        env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False, env=env, cwd=ROOT
        )
    if done.returncode != 0:
        raise RuntimeError(
            f"the partition run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    if len(sys.argv) == 3:  # inside the hub
        hub_name, places = sys.argv[1], [tuple(p) for p in json.loads(sys.argv[2])]
        print(json.dumps(in_the_hub(hub_name, places)), flush=True)  # type: ignore[arg-type]
    else:
        reason = unavailable()
        print(json.dumps({"skipped": reason}) if reason else json.dumps(run()))

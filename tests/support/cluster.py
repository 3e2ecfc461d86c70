"""A JetStream cluster of the stack (``SCALE="nats=3"``) as the fault tests and ``bench faults`` see it.

Who leads the rooms stream is asked of the nodes' monitoring endpoint (``/jsz``), never guessed; the
faults are signals to node processes (SIGKILL, SIGSTOP/SIGCONT, SIGTERM and a start), run in a thread
so the traffic on the event loop keeps going.
"""

import json
import time
import urllib.error
import urllib.request

from devstack.stack import Stack

STREAM = "ROOMS"
ASK_TIMEOUT = 1.0  # a stopped node does not answer: never wait long for one


def jsz(stack: Stack, node: str) -> dict | None:
    """One node's /jsz with stream details, or None if it does not answer."""
    url = f"{stack.nats_node(node).monitor_url}/jsz?streams=true"
    try:
        with urllib.request.urlopen(url, timeout=ASK_TIMEOUT) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def stream_cluster(stack: Stack, node: str, stream: str = STREAM) -> dict | None:
    """The stream's cluster block (leader, replicas) as ``node`` reports it."""
    found = jsz(stack, node)
    for account in (found or {}).get("account_details", []):
        for detail in account.get("stream_detail", []):
            if detail.get("name") == stream:
                return detail.get("cluster")
    return None


def stream_leader(stack: Stack, among: list[str] | None = None, stream: str = STREAM) -> str | None:
    """The node leading ``stream`` as reported by a node that answers and knows one."""
    for node in among or stack.nats_names:
        cluster = stream_cluster(stack, node, stream)
        if cluster and cluster.get("leader") and stack.processes[node].running:
            return cluster["leader"]
    return None


def wait_for_leader(
    stack: Stack, timeout: float, *, not_on: str | None = None, stream: str = STREAM
) -> tuple[str, float]:
    """Wait until the stream has a leader (other than ``not_on``) that says so itself; (node, seconds)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        for node in stack.nats_names:
            if node == not_on:
                continue
            cluster = stream_cluster(stack, node, stream)
            if cluster and cluster.get("leader") == node:
                return node, time.monotonic() - started
        time.sleep(0.1)
    raise TimeoutError(f"no leader for {stream} within {timeout} s (not on {not_on})")


def wait_current(stack: Stack, timeout: float, stream: str = STREAM) -> float:
    """Wait until the stream's leader sees every other replica current (caught up); seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        for node in stack.nats_names:
            cluster = stream_cluster(stack, node, stream)
            replicas = (cluster or {}).get("replicas") or []
            if (
                cluster
                and cluster.get("leader") == node
                and len(replicas) == len(stack.nats_names) - 1
                and all(r.get("current") for r in replicas)
            ):
                return time.monotonic() - started
        time.sleep(0.1)
    raise TimeoutError(f"{stream}'s replicas not all current within {timeout} s")


def followers(stack: Stack, leader: str) -> list[str]:
    return [node for node in stack.nats_names if node != leader]

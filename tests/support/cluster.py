"""A JetStream cluster of the stack (``SCALE="nats=3"``) as the fault tests and ``bench faults`` see it.

Who leads the rooms stream is asked of the nodes' monitoring endpoint (``/jsz``), never guessed; the
faults are signals to node processes (SIGKILL, SIGSTOP/SIGCONT, SIGTERM and a start), run in a thread
so the traffic on the event loop keeps going.
"""

import asyncio
import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import nats
import websockets
from devstack.stack import Stack

STREAM = "ROOMS"
COMEBACK = 60.0  # seconds a node may take to be back and current with the stream
ELECTION = 30.0  # seconds a new leader may take
ASK_TIMEOUT = 1.0  # a stopped node does not answer: never wait long for one
HUNG_CLIENT = "rooms/rooms-1"  # the NATS client name of the rooms replica that sits on the hung node
HELD_DOWN = 3.0  # seconds a killed node stays down before it is started again
LOST_FOR = 14.0  # seconds two nodes stay lost: longer than ROOM_STORE_TIMEOUT (10 s), so sends are refused
# What a cluster stack runs with besides its scale: senders resend their whole backlog at once after a
# reconnect (hundreds of messages after a 10 s stall), more than the default burst of 40 a member may send.
# The pulse ticks every second so that a skipped tick shows within a fault.
CLUSTER_ENV = {"PRESENCE_INTERVAL": "1", "MESSAGE_BURST": "2000", "PULSE_INTERVAL": "1"}


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


def connected_node(stack: Stack, client: str, among: list[str] | None = None) -> str | None:
    """The node a service replica's NATS client is connected to (its name is ``<service>/<instance>``),
    from the nodes' /connz; None if no node that answers has it."""
    for node in among or stack.nats_names:
        url = f"{stack.nats_node(node).monitor_url}/connz?limit=1024"
        try:
            with urllib.request.urlopen(url, timeout=ASK_TIMEOUT) as response:
                connections = json.load(response).get("connections") or []
        except (urllib.error.URLError, OSError, ValueError):
            continue
        if any(c.get("name") == client for c in connections):
            return node
    return None


async def move_leader(stack: Stack, to: str, stream: str = STREAM) -> None:
    """Ask JetStream to elect ``to`` as the stream's leader (its own step-down with a preferred peer)."""
    servers = [node.url for node in stack.nats_nodes]
    client = await nats.connect(servers=servers, connect_timeout=2, max_reconnect_attempts=0)
    try:
        deadline = time.monotonic() + ELECTION
        while await _in_thread(lambda: stream_leader(stack, stream=stream)) != to:
            assert time.monotonic() < deadline, f"{stream}'s leader did not move to {to}"
            request = json.dumps({"placement": {"preferred": to}}).encode()
            with contextlib.suppress(Exception):  # an election under way answers with an error: ask again
                await client.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", request, timeout=2)
            await asyncio.sleep(1.0)
    finally:
        await client.close()


# --- faults: each an async action on a running cluster (tests/support/rooms.py's FAULTS shape) -------------


# A node started again must outlive the event loop that started it: PR_SET_PDEATHSIG ends a child with
# the thread that started it, and asyncio.run() ends its worker threads. This one lives with the process.
_STARTER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cluster-starter")


async def _in_thread(action: Callable[[], object]) -> object:
    return await asyncio.to_thread(action)


async def _start(stack: Stack, node: str) -> None:
    await asyncio.get_running_loop().run_in_executor(_STARTER, stack.start_process, node)


async def _bring_back(stack: Stack, *nodes: str) -> None:
    for node in nodes:
        await _start(stack, node)  # same ports, same store
    await _in_thread(lambda: stack.wait_ready(COMEBACK, list(nodes)))
    await _in_thread(lambda: wait_current(stack, COMEBACK))


def kill_leader(stack: Stack) -> Callable[[], Awaitable[None]]:
    """SIGKILL the node leading the rooms stream; a follower takes over; the node is started again later."""

    async def fault() -> None:
        leader = await _in_thread(lambda: stream_leader(stack))
        assert isinstance(leader, str), "no stream leader before the fault"
        await _in_thread(lambda: stack.stop_process(leader, signal.SIGKILL))
        await _in_thread(lambda: wait_for_leader(stack, ELECTION, not_on=leader))
        await asyncio.sleep(HELD_DOWN)  # running on two nodes for a while (the fault, not a wait)
        await _bring_back(stack, leader)

    return fault


def kill_follower(stack: Stack) -> Callable[[], Awaitable[None]]:
    """SIGKILL a node that follows the rooms stream; the leader keeps its quorum; started again later."""

    async def fault() -> None:
        leader = await _in_thread(lambda: stream_leader(stack))
        assert isinstance(leader, str), "no stream leader before the fault"
        follower = followers(stack, leader)[0]
        await _in_thread(lambda: stack.stop_process(follower, signal.SIGKILL))
        await asyncio.sleep(HELD_DOWN)
        await _bring_back(stack, follower)

    return fault


def stop_leader(stack: Stack, seconds: float = 30.0) -> Callable[[], Awaitable[None]]:
    """SIGSTOP the leader for ``seconds`` (a hung VM: its sockets stay open, nothing answers), then SIGCONT.

    The leader is first moved (by JetStream's own step-down) to the node rooms-1 is connected to, so a
    service really sits on the hung node; ``fault.report["moved_s"]`` says when rooms-1 was seen on another
    node, ``fault.report["node"]`` which node hung."""
    report: dict[str, float | str] = {}

    async def fault() -> None:
        node = await _in_thread(lambda: connected_node(stack, HUNG_CLIENT))
        assert isinstance(node, str), f"{HUNG_CLIENT} is not connected to any node"
        await move_leader(stack, node)
        pid = stack.processes[node].pid
        assert pid is not None
        report["node"] = node
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            others = followers(stack, node)
            while time.monotonic() - stopped < seconds:  # hung this long (the fault itself)
                if "moved_s" not in report and await _in_thread(
                    lambda: connected_node(stack, HUNG_CLIENT, others)
                ):
                    report["moved_s"] = time.monotonic() - stopped
                await asyncio.sleep(0.2)
        finally:
            os.kill(pid, signal.SIGCONT)
        await _in_thread(lambda: wait_current(stack, COMEBACK))

    fault.report = report  # type: ignore[attr-defined]
    return fault


def rolling_restart_nodes(stack: Stack) -> Callable[[], Awaitable[None]]:
    """An upgrade: each node in turn stopped (SIGTERM), started, and current again before the next."""

    async def fault() -> None:
        for node in stack.nats_names:
            await _in_thread(lambda n=node: stack.stop_process(n, signal.SIGTERM))
            await _bring_back(stack, node)

    return fault


def lose_two_nodes(stack: Stack, seconds: float = LOST_FOR) -> Callable[[], Awaitable[None]]:
    """SIGKILL two of three nodes at once (no quorum: nothing can be stored); one returns after
    ``seconds``, then the other."""

    async def fault() -> None:
        leader = await _in_thread(lambda: stream_leader(stack))
        assert isinstance(leader, str), "no stream leader before the fault"
        lost = [leader, followers(stack, leader)[0]]
        for node in lost:
            await _in_thread(lambda n=node: stack.stop_process(n, signal.SIGKILL))
        await asyncio.sleep(seconds)  # no quorum this long (the fault itself)
        await _start(stack, lost[1])
        await _in_thread(lambda: wait_for_leader(stack, ELECTION))
        await _bring_back(stack, lost[0])

    return fault


CLUSTER_FAULTS: dict[str, Callable[[Stack], Callable[[], Awaitable[None]]]] = {
    "nats-leader-sigkill": kill_leader,
    "nats-follower-sigkill": kill_follower,
    "nats-leader-sigstop-30s": stop_leader,
    "nats-rolling-restart": rolling_restart_nodes,
    "nats-two-nodes-lost": lose_two_nodes,
}


# --- the stats pulse while a fault runs -----------------------------------------------------------------
class PulseWatch:
    """A /stats client through the gateway that records every pulse's tick while a fault runs: a tick
    skipped (say while the stats replica's node is hung or an election runs) is counted, not hidden.
    It reconnects after any close, as a dashboard does."""

    def __init__(self, stack: Stack) -> None:
        self.url = f"{stack.gateway_url}/stats"
        self.ticks: list[int] = []
        self.times: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "PulseWatch":
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError, TimeoutError, websockets.ConnectionClosed):
                async with websockets.connect(self.url, compression=None, open_timeout=5) as conn:
                    async for raw in conn:
                        tick = json.loads(raw).get("tick")
                        if isinstance(tick, int) and (not self.ticks or tick > self.ticks[-1]):
                            self.ticks.append(tick)
                            self.times.append(time.monotonic())
            await asyncio.sleep(0.2)

    @property
    def skipped(self) -> int:
        """Ticks between the first and the last one heard that never came."""
        return (self.ticks[-1] - self.ticks[0] + 1 - len(self.ticks)) if self.ticks else 0

    def ticking_after(self, moment: float) -> bool:
        return bool(self.times) and self.times[-1] > moment

"""What the join and publish hooks add: per join and per message, hooks on (a local backend answering at
once) against off, the two alternating in one run.

Two stacks side by side (NATS and one rooms replica each): one without hooks, one with JOIN_HOOK_URL
and PUBLISH_HOOK_URL (signed with HOOK_SECRET) pointing at ``bench.hook_backend`` in its own process.
A client in this process talks to each replica directly (the gateway's cost is the same for both):
a join is timed from the connect to the welcome, a message from its send to its ack (stored). Rounds
alternate off / on so drift on a shared machine hits both alike. Target: at most 2 ms added p50.

    .venv/bin/python -m bench hooks
    BENCH_HOOKS_COUNT=200 BENCH_HOOKS_ROUNDS=3 .venv/bin/python -m bench hooks
"""

import base64
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

from devstack.stack import Stack, StackConfig
from realtime.testing import free_port
from websockets.sync.client import connect

from bench.measure import percentile

COUNT = int(os.environ.get("BENCH_HOOKS_COUNT", "200"))
ROUNDS = int(os.environ.get("BENCH_HOOKS_ROUNDS", "3"))
DEADLINE = 10.0


@contextlib.contextmanager
def backend() -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "bench.hook_backend:app", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    process = subprocess.Popen(argv, start_new_session=True)
    try:
        deadline = time.monotonic() + 60  # importing FastAPI on a busy machine takes seconds
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the hook backend did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(DEADLINE)


def welcome(conn) -> dict:
    while True:
        event = json.loads(conn.recv(DEADLINE))
        if event["type"] == "welcome":
            return event


def joins(port: int, room: str) -> list[float]:
    """Milliseconds from connect to welcome, one join after another."""
    latencies = []
    for _ in range(COUNT):
        started = time.perf_counter()
        with connect(f"ws://127.0.0.1:{port}/ws/{room}?format=json", compression=None) as conn:
            welcome(conn)
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def messages(port: int, room: str) -> list[float]:
    """Milliseconds from a send to its ack, one message after another."""
    latencies = []
    with connect(f"ws://127.0.0.1:{port}/ws/{room}?format=json", compression=None) as conn:
        welcome(conn)
        for i in range(COUNT):
            msg_id = f"{room}-{time.monotonic_ns()}-{i}"
            started = time.perf_counter()
            conn.send(json.dumps({"text": f"bench {i}", "id": msg_id}))
            while True:
                event = json.loads(conn.recv(DEADLINE))
                if event["type"] == "ack" and event["id"] == msg_id:
                    break
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def main() -> None:
    base = {
        "LOG_LEVEL": "warning",
        "ACCESS_LOG": "false",
        "MESSAGE_RATE": "100000",
        "MESSAGE_BURST": "100000",
    }
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    results = {kind: {"off": [], "on": []} for kind in ("join", "message")}
    with backend() as url:
        hooked = base | {
            "JOIN_HOOK_URL": f"{url}/hooks/join",
            "PUBLISH_HOOK_URL": f"{url}/hooks/publish",
            "HOOK_SECRET": secret,
        }
        with (
            Stack(StackConfig.for_tests("rooms=1", **base)) as off,
            Stack(StackConfig.for_tests("rooms=1", **hooked)) as on,
        ):
            ports = {"off": off.processes["rooms-1"].port, "on": on.processes["rooms-1"].port}
            for port in ports.values():  # warm up: the first room opened, the first connections made
                joins(port, "bench-warm")
                messages(port, "bench-warm")
            for r in range(ROUNDS):
                for mode, port in ports.items():
                    results["join"][mode] += joins(port, f"bench-hooks-{r}")
                    results["message"][mode] += messages(port, f"bench-hooks-{r}")
    print(
        f"Hooks on (a local backend answering allow at once, signed requests) against off: {COUNT} "
        f"sequential joins and {COUNT} acknowledged messages per mode and round, {ROUNDS} alternating "
        "rounds, straight to one rooms replica (loopback, a shared 2-core machine).\n"
    )
    print("| per | off p50 / p99 ms | on p50 / p99 ms | added p50 / p99 ms |")
    print("|---|---|---|---|")
    for kind, by_mode in results.items():
        off_ms, on_ms = by_mode["off"], by_mode["on"]
        p50 = statistics.median(on_ms) - statistics.median(off_ms)
        p99 = percentile(on_ms, 0.99) - percentile(off_ms, 0.99)
        print(
            f"| {kind} | {statistics.median(off_ms):.2f} / {percentile(off_ms, 0.99):.2f} | "
            f"{statistics.median(on_ms):.2f} / {percentile(on_ms, 0.99):.2f} | {p50:+.2f} / {p99:+.2f} |"
        )

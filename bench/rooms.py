"""Chat rooms at 1 000 members: the rooms service behind the gateway, over NATS (first exactly what
``make run`` starts, the row ``default (make run)``, then 2 replicas in three gateway shapes) against two
single-process baselines written as users write them today, and the strongest peer, in the same run:

- ``bench/rooms_baseline_manager.py``: FastAPI's documented ConnectionManager (sequential ``send_text``);
- ``bench/rooms_baseline_broadcaster.py``: encode/broadcaster, ``memory://`` (a queue and task per member);
- ``bench/node/server.js``: ``Node ws (1 process)``, the ws README's broadcast server with bufferutil
  (pinned by bench/node/package-lock.json; this bench runs ``npm ci`` there when the lock changed; the row
  is skipped when ``node``/``npm`` are not on PATH).

Each target in turn (never two at once), one load generator process (bench/rooms_load.py) per target:
1 000 members in one room, 10 of them sending 100-byte messages. Paced: 10 000 deliveries/s offered
(10 messages/s, 10 s), end-to-end latency p50/p99. Saturated: closed loop with 16 messages in flight,
deliveries per second. Bounded: every process started here is stopped, each load run has a deadline.

Publishing from a backend (our fast configuration only): the same 1 000 members, and the messages come
from the publish API through the gateway's HTTP path (``POST /api/rooms/<room>/messages``, one keep-alive
client), paced and saturated as above: publishes/s, and publish-to-delivery latency at every member.

Catch-up (our fast configuration only): a JSON member leaves, 1 000 messages are stored meanwhile, and it
comes back through the gateway with ``since``: the time from its connect until it has all 1 000.

    make bench                      # every suite
    .venv/bin/python -m bench rooms
    BENCH_ROOMS_MEMBERS=1000 BENCH_ROOMS_SECONDS=5 BENCH_ROOMS_PACED_SECONDS=10 BENCH_ROOMS_OFFERED=10000 \
        .venv/bin/python -m bench rooms
"""

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from devstack.stack import Stack, StackConfig, free_port
from websockets.asyncio.client import connect

from bench import rooms_mux

MEMBERS = int(os.environ.get("BENCH_ROOMS_MEMBERS", "1000"))
SENDERS = int(os.environ.get("BENCH_ROOMS_SENDERS", "10"))
SECONDS = float(os.environ.get("BENCH_ROOMS_SECONDS", "5"))
PACED_SECONDS = float(os.environ.get("BENCH_ROOMS_PACED_SECONDS", "10"))
OFFERED = float(os.environ.get("BENCH_ROOMS_OFFERED", "10000"))
WINDOW = int(os.environ.get("BENCH_ROOMS_WINDOW", "16"))
LOAD_DEADLINE = 240.0  # seconds for one load generator run, connecting included
MISSED = int(os.environ.get("BENCH_ROOMS_MISSED", "1000"))  # messages a member catches up on

BASELINES = {
    "FastAPI ConnectionManager (1 process)": ("bench.rooms_baseline_manager:app", "/ws/{i}"),
    "broadcaster memory:// (1 process)": ("bench.rooms_baseline_broadcaster:app", "/ws/bench"),
}
# The strongest peer, in the same run: a one-process Node ws broadcast server (bench/node/server.js, ws and
# bufferutil pinned by bench/node/package-lock.json, installed here with npm ci into bench/node only).
NODE = "Node ws (1 process)"
NODE_DIR = Path(__file__).with_name("node")
# Our rows: (rooms replicas, gateway worker processes, gateway->service over Unix sockets); None: exactly
# what `make run` starts (StackConfig.like_make_run: one replica each, GATEWAY_WORKERS=auto, Unix sockets).
# Each relayed frame costs the gateway a send to the client; over TCP the service's send to the gateway
# costs about as much again.
DEFAULT = "default (make run)"
OURS = "rooms: 2 replicas + gateway (2 workers, Unix-socket upstreams) + NATS"
OURS_WORKERS: dict[str, tuple[str, str, bool] | None] = {
    DEFAULT: None,
    OURS: ("rooms=2", "2", True),
    "rooms: 2 replicas + gateway (2 workers, TCP upstreams) + NATS": ("rooms=2", "2", False),
    "rooms: 2 replicas + gateway (1 process, TCP upstreams) + NATS": ("rooms=2", "1", False),
}


PUBLISHING = "publish API through the gateway's HTTP path (same stack as the first row)"


def run_load(url: str, publish: str | None = None, env: dict[str, str] | None = None) -> dict:
    argv = [
        sys.executable,
        "-m",
        "bench.rooms_load",
        url,
        "--members",
        str(MEMBERS),
        "--senders",
        str(SENDERS),
    ]
    argv += ["--seconds", str(SECONDS), "--paced-seconds", str(PACED_SECONDS)]
    argv += ["--offered", str(OFFERED), "--window", str(WINDOW)]
    if publish is not None:
        argv += ["--publish", publish]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=LOAD_DEADLINE,
        check=False,
        env=os.environ | (env or {}),
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def wait_listening(port: int, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {deadline}s")


def run_baseline(app: str, path: str) -> dict:
    """One uvicorn process with its defaults (as users start it), stopped by its PID afterwards."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    server = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        wait_listening(port)
        return run_load(f"ws://127.0.0.1:{port}{path}")
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)


def run_ours(shape: tuple[str, str, bool] | None, catch_up: bool = False) -> dict:
    """One of our rows: ``shape`` is (scale, gateway workers, Unix sockets), or None for make run's own."""
    env = {"LOG_LEVEL": "warning", "ACCESS_LOG": "false", "MESSAGE_RATE": "100000", "MESSAGE_BURST": "100000"}
    key = secrets.token_urlsafe(32)
    env |= {"PUBLISH_API_KEYS": json.dumps([key]), "PUBLISH_RATE": "100000", "PUBLISH_BURST": "100000"}
    env["ROOM_HISTORY_SIZE"] = str(2 * MISSED)  # the member's last seen message stays in the history
    if shape is None:
        config = StackConfig.like_make_run(**env)
    else:
        scale, gateway_workers, unix_sockets = shape
        config = StackConfig.like_make_run(scale, GATEWAY_WORKERS=gateway_workers, **env)
        config.unix_sockets = unix_sockets
    with Stack(config) as stack:
        result = run_load(f"{stack.gateway_url}/ws/bench")
        if catch_up:
            result["catch_up_s"] = asyncio.run(measure_catch_up(stack.gateway_url, MISSED))
            publish = f"{stack.http_url}/api/rooms/bench-api/messages"
            print(f"{PUBLISHING} ...", file=sys.stderr, flush=True)
            result["publishing"] = run_load(
                f"{stack.gateway_url}/ws/bench-api", publish=publish, env={"BENCH_API_KEY": key}
            )
        return result


async def measure_catch_up(base: str, missed: int, deadline: float = 60.0) -> float:
    """Seconds from a member's reconnect (with ``since``) until it has the ``missed`` messages."""
    room = f"{base}/ws/catch-up?format=json"
    async with asyncio.timeout(deadline):
        async with connect(room, compression=None) as member:
            welcome = json.loads(await member.recv())
        async with connect(room, compression=None, max_size=None) as sender:
            await sender.recv()  # its welcome
            for i in range(missed):
                await sender.send(json.dumps({"text": f"missed {i}", "id": f"catch-up-{i}"}))
            acked = 0
            while acked < missed:  # every one stored (its own echoes come too)
                if json.loads(await sender.recv())["type"] == "ack":
                    acked += 1
        started = time.perf_counter()
        query = f"&since={welcome['seq']}&epoch={welcome['epoch']}"
        async with connect(room + query, compression=None, max_size=None) as back:
            told = json.loads(await back.recv())
            if told.get("recovered") is not True:
                raise RuntimeError(f"catch-up: not recovered: {told}")
            got = 0
            while got < missed:
                if json.loads(await back.recv())["type"] == "message":
                    got += 1
            return time.perf_counter() - started


def node_installed() -> str | None:
    """``npm ci`` into bench/node from its lock when the lock changed since the last install; the path of
    ``node``, or None (with the reason on stderr) when Node.js is not on this machine."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        print(f"{NODE}: skipped, node and npm are not on PATH", file=sys.stderr, flush=True)
        return None
    lock = (NODE_DIR / "package-lock.json").read_bytes()
    stamp = NODE_DIR / "node_modules" / ".installed-lock"
    if not stamp.exists() or stamp.read_bytes() != lock:
        print(
            f"{NODE}: npm ci in {NODE_DIR} (pinned by its package-lock.json) ...", file=sys.stderr, flush=True
        )
        subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            stdout=sys.stderr,  # npm's "added 3 packages" is progress, not a result
            check=True,
            timeout=300,
        )
        stamp.write_bytes(lock)
    return node


def run_node(node: str) -> dict:
    """The Node ws broadcast server in one process, stopped by its PID afterwards."""
    port = free_port()
    server = subprocess.Popen(
        [node, str(NODE_DIR / "server.js"), str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        started = json.loads(server.stdout.readline() or "{}")  # type: ignore[union-attr]
        if started.get("bufferutil") != "native":
            raise RuntimeError(f"{NODE}: ws runs without its native bufferutil addon: {started}")
        wait_listening(port)
        return run_load(f"ws://127.0.0.1:{port}/ws/bench")
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        if server.stdout is not None:
            server.stdout.close()


def main() -> None:
    results: dict[str, dict] = {}
    for name, shape in OURS_WORKERS.items():
        print(f"{name} ...", file=sys.stderr, flush=True)
        results[name] = run_ours(shape, catch_up=name == OURS)
        if "publishing" in results[name]:
            results[PUBLISHING] = results[name].pop("publishing")
    for name, (app, path) in BASELINES.items():
        print(f"{name} ...", file=sys.stderr, flush=True)
        results[name] = run_baseline(app, path)
    node = node_installed()
    if node is not None:
        print(f"{NODE} ...", file=sys.stderr, flush=True)
        results[NODE] = run_node(node)
    print_table(results)
    if os.environ.get("BENCH_ROOMS_MUX", "1") != "0":  # many rooms on one connection (bench/rooms_mux.py)
        rooms_mux.main()


def print_table(results: dict[str, dict]) -> None:
    print(
        f"One room, {MEMBERS} members, {SENDERS} senders, 100-byte messages; paced {PACED_SECONDS:g} s, "
        f"saturated {SECONDS:g} s; "
        "loopback, load generator in its own process, a shared 2-core machine (noisy: ratios matter).\n"
    )
    print(
        f"| server | saturated deliveries/s (window {WINDOW}) | saturated p50 / p99 ms | "
        f"paced p50 / p99 ms at {OFFERED:,.0f} deliveries/s | lost |"
    )
    print("|---|---|---|---|---|")
    for name, r in results.items():
        sat, paced = r["saturate"], r["paced"]
        print(
            f"| {name} | {sat['deliveries_per_s']:,.0f} | {sat['p50_ms']:.1f} / {sat['p99_ms']:.1f} | "
            f"{paced['p50_ms']:.1f} / {paced['p99_ms']:.1f} | {sat['lost'] + paced['lost']} |"
        )
    if PUBLISHING in results:
        sat, paced, published = (results[PUBLISHING][k] for k in ("saturate", "paced", "published"))
        rate = sat["messages"] / sat["seconds"]
        print(
            f"\nPublishing through the gateway's HTTP path: {rate:,.0f} publishes/s saturated "
            f"(window {WINDOW}, each to {MEMBERS:,} members), publish-to-delivery p50 / p99 "
            f"{paced['p50_ms']:.1f} / {paced['p99_ms']:.1f} ms paced at {OFFERED / MEMBERS:,.0f} "
            f"publishes/s; {published['stored']:,} answered 201, refused: {published['refused'] or 'none'}."
        )
    if "catch_up_s" in results[OURS]:
        print(
            f"\nCatch-up through the gateway ({OURS}): a member back with `since` had its {MISSED:,} "
            f"missed messages after {results[OURS]['catch_up_s'] * 1000:.0f} ms."
        )
    for ours_name in OURS_WORKERS:  # the publishing row is ours too, but not a like-for-like baseline race
        ours = results[ours_name]
        print(f"\n{ours_name}:")
        for name in [*BASELINES, NODE]:
            if name not in results:
                continue
            base = results[name]
            throughput = ours["saturate"]["deliveries_per_s"] / base["saturate"]["deliveries_per_s"]
            p99 = ours["paced"]["p99_ms"] / base["paced"]["p99_ms"]
            print(f"- vs {name}: {throughput:.2f}x the saturated deliveries/s, {p99:.2f}x the paced p99")
    print("\n" + "\n".join(verdicts(results)))


def verdicts(results: dict[str, dict]) -> list[str]:
    """The issue's targets, in this run: the default against ConnectionManager, the fastest against Node."""
    manager = results["FastAPI ConnectionManager (1 process)"]
    default = results[DEFAULT]
    fastest_name = max(OURS_WORKERS, key=lambda n: results[n]["saturate"]["deliveries_per_s"])
    fastest = results[fastest_name]

    def ratio(a: dict, b: dict, phase: str, key: str) -> float:
        return a[phase][key] / b[phase][key]

    lines = []
    throughput, p99 = (
        ratio(default, manager, "saturate", "deliveries_per_s"),
        ratio(default, manager, "paced", "p99_ms"),
    )
    lines.append(
        f"- target: {DEFAULT} >= 2x ConnectionManager's saturated deliveries/s ({throughput:.2f}x: "
        f"{'met' if throughput >= 2.0 else 'NOT met'}) with paced p99 <= ConnectionManager's "
        f"({p99:.2f}x: {'met' if p99 <= 1.0 else 'NOT met'})"
    )
    if NODE in results:
        node = results[NODE]
        throughput, p99 = (
            ratio(fastest, node, "saturate", "deliveries_per_s"),
            ratio(fastest, node, "paced", "p99_ms"),
        )
        lines.append(
            f"- target: the fastest of ours ({fastest_name}) >= 1.0x {NODE}'s saturated deliveries/s "
            f"({throughput:.2f}x: {'met' if throughput >= 1.0 else 'NOT met'}) with paced p99 <= 1.1x "
            f"Node's ({p99:.2f}x: {'met' if p99 <= 1.1 else 'NOT met'})"
        )
    else:
        lines.append(f"- target against {NODE}: not measured (no Node.js on this machine)")
    return lines

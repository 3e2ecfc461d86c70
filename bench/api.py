"""The publish API's cost per request: straight to a rooms replica against through the gateway.

One rooms replica, NATS and the gateway; a raw keep-alive socket client (no HTTP library of its own in
the figures) sends requests one after another and times each from its first byte out to the last byte of
the answer: a publish (stored in JetStream), a history read, and a 404 (the HTTP path alone). Direct and
through the gateway alternate over the rounds, so drift on a shared machine hits both alike.

    .venv/bin/python -m bench api
    BENCH_API_REQUESTS=300 BENCH_API_ROUNDS=2 .venv/bin/python -m bench api
"""

import json
import os
import secrets
import socket
import statistics
import time
from collections.abc import Callable

from devstack.stack import Stack, StackConfig

from bench.measure import percentile

REQUESTS = int(os.environ.get("BENCH_API_REQUESTS", "300"))
ROUNDS = int(os.environ.get("BENCH_API_ROUNDS", "2"))
DEADLINE = 10.0  # seconds for one answer


def post(key: str) -> Callable[[int], bytes]:
    def request(i: int) -> bytes:
        body = json.dumps({"text": f"bench {i}"}).encode()
        head = (
            "POST /api/rooms/bench-api/messages HTTP/1.1\r\nHost: bench\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    return request


def history(key: str) -> Callable[[int], bytes]:
    head = f"GET /api/rooms/bench-api/messages?limit=1 HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}"
    return lambda i: (head + "\r\n\r\n").encode()


def not_found(i: int) -> bytes:
    return b"GET /api/nothing-here HTTP/1.1\r\nHost: bench\r\n\r\n"


def timed(port: int, make: Callable[[int], bytes], expect: bytes) -> list[float]:
    """Milliseconds per request over one keep-alive connection."""
    latencies = []
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(REQUESTS):
            started = time.perf_counter()
            conn.sendall(make(i))
            answer = read_answer(conn)
            latencies.append((time.perf_counter() - started) * 1000)
            if not answer.startswith(expect):
                raise RuntimeError(f"unexpected answer: {answer[:80]!r}")
    return latencies


def read_answer(conn: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        data += chunk
        head, found, body = data.partition(b"\r\n\r\n")
        if not found:
            continue
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        if len(body) >= length:
            return data


def main() -> None:
    key = secrets.token_urlsafe(32)
    env = {"LOG_LEVEL": "warning", "ACCESS_LOG": "false", "PUBLISH_API_KEYS": json.dumps([key])}
    env |= {"PUBLISH_RATE": "100000", "PUBLISH_BURST": "100000"}
    kinds = {
        "publish (201)": (post(key), b"HTTP/1.1 201"),
        "history, limit 1 (200)": (history(key), b"HTTP/1.1 200"),
        "unknown path (404)": (not_found, b"HTTP/1.1 404"),
    }
    results: dict[str, dict[str, list[float]]] = {k: {"direct": [], "gateway": []} for k in kinds}
    with Stack(StackConfig.for_tests("rooms=1", **env)) as stack:
        ports = {"direct": stack.processes["rooms-1"].port, "gateway": stack.processes["gateway"].port}
        for _ in range(ROUNDS):
            for kind, (make, expect) in kinds.items():
                for target, port in ports.items():
                    results[kind][target] += timed(port, make, expect)
    print(
        f"The HTTP API, {REQUESTS} sequential requests per kind, target and round, {ROUNDS} alternating "
        "rounds, one keep-alive raw socket client (TCP, loopback, a shared 2-core machine).\n"
    )
    print("| request | direct p50 / p99 ms | through the gateway p50 / p99 ms | added p50 ms |")
    print("|---|---|---|---|")
    for kind, by_target in results.items():
        direct, gateway = by_target["direct"], by_target["gateway"]
        added = statistics.median(gateway) - statistics.median(direct)
        print(
            f"| {kind} | {statistics.median(direct):.2f} / {percentile(direct, 0.99):.2f} | "
            f"{statistics.median(gateway):.2f} / {percentile(gateway, 0.99):.2f} | {added:+.2f} |"
        )

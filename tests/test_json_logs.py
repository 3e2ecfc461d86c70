"""LOG_FORMAT=json in a real service process: every line it writes is one JSON object, secrets redacted."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest
from realtime.testing import free_port

from tests.conftest import DEADLINE, recv, wait_until, ws

pytestmark = pytest.mark.timeout(60)

SECRET = "json-log-secret-5q2"
KEYS = {"time", "level", "logger", "message", "service", "instance"}


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


async def echo_once(url: str) -> None:
    async with await ws(url) as conn:
        await conn.send("hi")
        assert await recv(conn) == "Echo: hi"


def test_every_line_is_json_with_request_fields_and_no_secret() -> None:
    port = free_port()
    env = os.environ | {
        "LOG_FORMAT": "json",
        "PORT": str(port),
        "INTERNAL_PORT": str(free_port()),  # PORT + 1000 may be taken on a busy machine
        "BUS_URL": "memory://",
        "SERVICE_NAME": "echo",
        "INSTANCE_ID": "echo-json-1",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "echo_service"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthy(f"{base}/healthz"), "the echo service to answer")
        with urllib.request.urlopen(f"{base}/healthz?token={SECRET}&x=1", timeout=DEADLINE):
            pass
        asyncio.run(echo_once(f"ws://127.0.0.1:{port}/echo?pass={SECRET}"))
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(DEADLINE)
    lines = output.splitlines()
    assert lines, "the service wrote nothing"
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    for record in records:
        assert set(record) >= KEYS, record
        assert (record["service"], record["instance"]) == ("echo", "echo-json-1")
    assert SECRET not in output
    requests = [r for r in records if "path" in r]
    access = next(r for r in requests if r["path"].startswith("/healthz?token="))
    assert access["path"] == "/healthz?token=***&x=1"
    assert (access["method"], access["status"], access["logger"]) == ("GET", 200, "uvicorn.access")
    assert access["client"].startswith("127.0.0.1:")
    handshake = next(r for r in requests if r["path"].startswith("/echo"))
    assert handshake["path"] == "/echo?pass=***"
    assert any(r["message"].startswith("Started server process") for r in records)

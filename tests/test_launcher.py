"""``make run``'s launcher as a user runs it: it comes up, serves echo, and Ctrl-C/SIGTERM leaves nothing."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from devstack.stack import free_port

from tests.conftest import DEADLINE, recv, wait_until_async, ws

pytestmark = pytest.mark.timeout(120)
SECRET = "launcher-secret-5d1c"


def alive(pid: int) -> bool:
    """Running, and not just a zombie waiting to be reaped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Launcher:
    def __init__(self, tmp: Path, via_shell: bool = False, **env: str) -> None:
        self.port = free_port()
        full_env = (
            os.environ
            | {
                "PORT": str(self.port),
                "NATS_PORT": str(free_port()),
                "NATS_MONITOR_PORT": str(free_port()),
                "STACK_LOG_DIR": str(tmp / "logs"),
                "SCALE": "echo=2",
                "ROOM_PASSWORDS": json.dumps({"VIP": SECRET}),
            }
            | env
        )
        full_env["STACK_FREE_PORTS"] = "1"  # the fixed ports may be in use by a developer's `make run`
        argv = [sys.executable, "-m", "devstack"]
        if via_shell:  # a parent that stays in between, as make does
            argv = ["sh", "-c", f"{sys.executable} -m devstack; true"]
        self.process = subprocess.Popen(
            argv,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.up = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with self.process.stdout:  # type: ignore[union-attr]
            for line in self.process.stdout:  # type: ignore[union-attr]
                self.lines.append(line)
                if "realtime stack is up" in line:
                    self.up.set()

    def pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"pid (\d+)", "".join(self.lines))]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_launcher_serves_echo_and_stops_everything(tmp_path: Path, sig: int) -> None:
    logs = tmp_path / "logs"  # what an earlier run with more replicas left behind
    logs.mkdir()
    stale = [logs / "rooms-3.log", logs / "echo-1.log", logs / "rooms-3.sock"]
    for path in stale:
        path.write_text("an earlier run\n")
    launcher = Launcher(tmp_path)
    try:
        assert launcher.up.wait(60), "".join(launcher.lines[-40:])
        assert not any(p.exists() for p in stale[::2]), "logs or sockets of an earlier run's replicas"
        assert "an earlier run" not in (logs / "echo-1.log").read_text()
        # JetStream data is where the README says: <log folder>/jetstream (the cleanup leaves it alone)
        assert (logs / "jetstream").is_dir()
        assert not (logs / "jetstream" / "jetstream").exists()
        async with await ws(f"ws://127.0.0.1:{launcher.port}/echo") as conn:
            await conn.send("hello")
            assert await recv(conn) == "Echo: hello"
        # the secret travels: a member joins the guarded room with it and says so
        async with await ws(f"ws://127.0.0.1:{launcher.port}/ws/VIP?pass={SECRET}") as conn:
            await conn.send("in the guarded room")
            assert await recv(conn) == "in the guarded room"
        # the launcher prints every process's log lines: the gateway's and the replica's access-log
        # lines for that connection show up, redacted
        await wait_until_async(
            lambda: sum("/ws/VIP?pass=***" in line for line in launcher.lines) >= 2,
            "the gateway and rooms access-log lines of the guarded connection",
        )
        children = launcher.pids()
        assert len(children) == 6  # gateway, nats, echo x2, rooms, stats
        launcher.process.send_signal(sig)
        assert launcher.process.wait(DEADLINE * 2) == 0
    finally:
        if launcher.process.poll() is None:
            launcher.process.kill()
            launcher.process.wait(DEADLINE)
        launcher.reader.join(DEADLINE)
    deadline = time.monotonic() + DEADLINE
    while any(alive(p) for p in children):
        assert time.monotonic() < deadline, "a child process outlived the launcher"
        await asyncio.sleep(0.05)
    assert "stopped." in "".join(launcher.lines)
    assert SECRET not in "".join(launcher.lines)  # settings pass through, secrets never print


async def test_launcher_stops_everything_when_its_parent_is_killed(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path, via_shell=True)
    try:
        assert launcher.up.wait(60), "".join(launcher.lines[-40:])
        launcher_pid = psutil.Process(launcher.process.pid).children()[0].pid
        everything = [launcher_pid, *launcher.pids()]
        launcher.process.kill()  # SIGKILL: the shell (think `make run`) cannot pass anything on
        launcher.process.wait(DEADLINE)
        deadline = time.monotonic() + DEADLINE * 2
        while any(alive(p) for p in everything):
            assert time.monotonic() < deadline, "the stack outlived the launcher's parent"
            await asyncio.sleep(0.05)
    finally:
        if launcher.process.poll() is None:
            launcher.process.kill()
            launcher.process.wait(DEADLINE)
        launcher.reader.join(DEADLINE)
    assert "stopped." in "".join(launcher.lines)

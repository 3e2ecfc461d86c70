"""``make run``'s launcher as a user runs it: it comes up, serves echo, and Ctrl-C/SIGTERM leaves nothing."""

import asyncio
import json
import signal
import time
from pathlib import Path

import psutil
import pytest
from gateway.cores import auto_workers

from tests.conftest import DEADLINE, recv, wait_until_async, ws
from tests.support.launcher import Launcher, alive

pytestmark = pytest.mark.timeout(120)
SECRET = "launcher-secret-5d1c"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_launcher_serves_echo_and_stops_everything(tmp_path: Path, sig: int) -> None:
    logs = tmp_path / "logs"  # what an earlier run with more replicas left behind
    logs.mkdir()
    stale = [logs / "rooms-3.log", logs / "echo-1.log", logs / "rooms-3.sock"]
    for path in stale:
        path.write_text("an earlier run\n")
    launcher = Launcher(tmp_path, SCALE="echo=2", ROOM_PASSWORDS=json.dumps({"VIP": SECRET}))
    try:
        launcher.wait_for_line("realtime stack is up", 60)
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
        children = list(launcher.pids().values())
        assert len(children) == 6  # gateway, nats, echo x2, rooms, stats
        # The default is the fast path: every replica on a Unix socket the gateway connects to, and one
        # gateway worker per usable core (GATEWAY_WORKERS=auto).
        assert {p.name for p in logs.glob("*.sock")} == {
            "echo-1.sock",
            "echo-2.sock",
            "rooms-1.sock",
            "stats-1.sock",
        }
        workers = auto_workers()
        if workers > 1:
            gateway = psutil.Process(launcher.pids()["gateway"])
            await wait_until_async(
                lambda: (
                    len([c for c in gateway.children() if "spawn_main" in " ".join(c.cmdline())]) == workers
                ),
                f"{workers} gateway workers",
            )
        assert any("workers auto" in line for line in launcher.lines)
        launcher.process.send_signal(sig)
        assert launcher.process.wait(DEADLINE * 2) == 0
    finally:
        launcher.stop(DEADLINE)
    deadline = time.monotonic() + DEADLINE
    while any(alive(p) for p in children):
        assert time.monotonic() < deadline, "a child process outlived the launcher"
        await asyncio.sleep(0.05)
    assert "stopped." in "".join(launcher.lines)
    assert SECRET not in "".join(launcher.lines)  # settings pass through, secrets never print


async def test_launcher_stops_everything_when_its_parent_is_killed(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path, via_shell=True, SCALE="echo=2", ROOM_PASSWORDS=json.dumps({"VIP": SECRET}))
    try:
        launcher.wait_for_line("realtime stack is up", 60)
        launcher_pid = psutil.Process(launcher.process.pid).children()[0].pid
        everything = [launcher_pid, *launcher.pids().values()]
        launcher.process.kill()  # SIGKILL: the shell (think `make run`) cannot pass anything on
        launcher.process.wait(DEADLINE)
        deadline = time.monotonic() + DEADLINE * 2
        while any(alive(p) for p in everything):
            assert time.monotonic() < deadline, "the stack outlived the launcher's parent"
            await asyncio.sleep(0.05)
    finally:
        launcher.stop(DEADLINE)
    assert "stopped." in "".join(launcher.lines)

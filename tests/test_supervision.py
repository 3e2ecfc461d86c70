"""``make run`` supervises: kill -9 a rooms replica, nats-server, the gateway in turn, under the launcher.

Each time the rest stay up, the killed process comes back (logged with how it ended), room messages flow
again through the gateway, a JetStream stream survives the NATS restart (same store), and an echo client
connected through the gateway is never disconnected by a rooms replica or NATS dying. SIGTERM to the
launcher then leaves no process behind, restarted ones included. Only PIDs this test started are
signalled.
"""

import asyncio
import os
import signal
import time
from pathlib import Path

import nats
import pytest
from devstack.stack import RestartPolicy, Stack, StackConfig, how_it_ended
from nats.js.api import StreamConfig
from realtime.backoff import Backoff
from websockets.asyncio.client import ClientConnection

from tests.conftest import DEADLINE, recv, wait_until, wait_until_async, ws
from tests.support.launcher import Launcher, alive

pytestmark = pytest.mark.timeout(300)

COMEBACK = 90.0  # seconds a killed process may take to be ready again (a busy 2-core machine is slow)


async def room_members(url: str, room: str, count: int = 2) -> list[ClientConnection]:
    return [await ws(f"{url}/ws/{room}") for _ in range(count)]


async def messages_flow(url: str, room: str, text: str) -> None:
    """Two fresh members of ``room``, through the gateway: a message one sends reaches both."""
    deadline = time.monotonic() + COMEBACK
    while True:
        members: list[ClientConnection] = []
        try:
            members = await room_members(url, room)
            await members[0].send(text)
            assert [await recv(m) for m in members] == [text, text]
            return
        except (OSError, AssertionError, TimeoutError, Exception):  # a replica still warming up
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            for member in members:
                await member.close()


async def stored_in_jetstream(nats_url: str) -> None:
    """A file-stored stream with one message, as a room's history will be."""
    client = await nats.connect(nats_url, connect_timeout=DEADLINE, max_reconnect_attempts=0)
    try:
        js = client.jetstream()
        await js.add_stream(StreamConfig(name="SUPERVISION", subjects=["supervision.kept"], storage="file"))
        await js.publish("supervision.kept", b"still here", timeout=DEADLINE)
    finally:
        await client.close()


async def jetstream_kept(nats_url: str) -> bytes:
    client = await nats.connect(nats_url, connect_timeout=DEADLINE, max_reconnect_attempts=0)
    try:
        message = await client.jetstream().get_msg("SUPERVISION", 1)
        return message.data or b""
    finally:
        await client.close()


async def echo_answers(conn: ClientConnection, text: str) -> None:
    await conn.send(text)
    assert await recv(conn) == f"Echo: {text}"


async def test_killed_processes_come_back_and_the_rest_stay_up(tmp_path: Path) -> None:
    # Two rooms replicas, two gateway workers, Unix sockets: the settings make run offers keep working.
    launcher = Launcher(
        tmp_path, SCALE="rooms=2", GATEWAY_WORKERS="2", STACK_UNIX_SOCKETS="1", STACK_QUIET="1"
    )
    url = f"ws://127.0.0.1:{launcher.port}"
    try:
        launcher.wait_for_line("realtime stack is up", 90)
        launcher.wait_for_line("Ctrl-C stops everything", 10)
        first = launcher.pids()
        assert set(first) == {"gateway", "nats", "echo-1", "rooms-1", "rooms-2", "stats-1"}
        launcher.note_descendants()
        await messages_flow(url, "lobby", "before")
        nats_url = f"nats://127.0.0.1:{launcher.nats_port}"
        await stored_in_jetstream(nats_url)

        killed: set[str] = set()
        async with await ws(f"{url}/echo") as echo:
            await echo_answers(echo, "hello")
            for victim in ("rooms-1", "nats"):
                killed.add(victim)
                mark = len(launcher.lines)
                os.kill(launcher.pids()[victim], signal.SIGKILL)
                launcher.wait_for_line(
                    rf"devstack: {victim} \(pid \d+\) exited unexpectedly at [\d:]+: killed by SIGKILL; "
                    r"restarting in [\d.]+ s",
                    DEADLINE,
                    mark,
                )
                await echo_answers(echo, f"during {victim}")  # not disconnected, still answered
                launcher.wait_for_line(rf"devstack: {victim} is back at [\d:]+: pid \d+", COMEBACK, mark)
                launcher.note_descendants()
                if victim == "nats":  # the same -sd store: what JetStream held is still there
                    assert await jetstream_kept(nats_url) == b"still here"
                await messages_flow(url, "lobby", f"after {victim}")
                await echo_answers(echo, f"after {victim}")
                now = launcher.pids()
                assert now[victim] != first[victim]
                for name, pid in now.items():
                    assert name in killed or pid == first[name], f"{name} was restarted"
                    assert alive(pid), f"{name} is not running"

        mark = len(launcher.lines)
        os.kill(launcher.pids()["gateway"], signal.SIGKILL)
        launcher.wait_for_line(r"devstack: gateway \(pid \d+\) exited unexpectedly", DEADLINE, mark)
        launcher.wait_for_line(r"devstack: gateway is back at [\d:]+: pid \d+", COMEBACK, mark)
        launcher.note_descendants()
        async with await ws(f"{url}/echo") as echo:
            await echo_answers(echo, "gateway is back")
        await messages_flow(url, "lobby", "after gateway")
        for name in ("echo-1", "rooms-2", "stats-1"):
            assert launcher.pids()[name] == first[name], f"{name} was restarted"

        launcher.note_descendants()
        launcher.process.send_signal(signal.SIGTERM)
        assert launcher.process.wait(DEADLINE * 3) == 0
    finally:
        launcher.stop(DEADLINE)
    everything = launcher.seen | set(launcher.pids().values())
    await wait_until_async(
        lambda: not any(alive(p) for p in everything), "every process to be gone", DEADLINE * 2
    )
    assert "stopped." in "".join(launcher.lines)


def test_a_process_stopped_on_purpose_stays_stopped_and_a_crash_restarts(tmp_path: Path) -> None:
    config = StackConfig.for_tests()
    config.log_dir = tmp_path
    stack = Stack(config)
    with stack:
        stack.start_supervisor(RestartPolicy(first_delay=0.1))
        old = stack.kill("echo-1")
        wait_until(
            lambda: any(e.name == "echo-1" and e.kind == "back" for e in stack.events), "echo back", COMEBACK
        )
        exited = next(e for e in stack.events if e.name == "echo-1" and e.kind == "exited")
        assert exited.detail == "killed by SIGKILL"
        assert stack.processes["echo-1"].pid != old
        stack.stop_process("stats-1")
        rounds = stack.supervised_rounds
        wait_until(lambda: stack.supervised_rounds >= rounds + 5, "five supervision rounds")
        assert not stack.processes["stats-1"].running
        stack.start_process("stats-1")
        assert stack.processes["stats-1"].running


def test_how_a_process_ended_is_named() -> None:
    assert how_it_ended(-signal.SIGKILL) == "killed by SIGKILL"
    assert how_it_ended(3) == "exit code 3"
    assert RestartPolicy().delay(0) == 0.5 and RestartPolicy().delay(10) == 10.0


def test_restart_delays_come_from_the_one_backoff_with_jitter() -> None:
    backoff = RestartPolicy(first_delay=1.0, max_delay=4.0, jitter=0.25).backoff()
    assert isinstance(backoff, Backoff)
    delays = [backoff.next() for _ in range(4)]
    for delay, plain in zip(delays, [1.0, 2.0, 4.0, 4.0], strict=True):
        assert 0.75 * plain <= delay <= 1.25 * plain

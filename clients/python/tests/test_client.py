"""The client against the real stack: a real nats-server, rooms and stats replicas behind the gateway.

Faults are real: a rooms replica is SIGKILLed, nats-server is SIGKILLed and started again on the same
port and store. Every wait has a deadline.
"""

import asyncio
import json
import signal
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from devstack.stack import Stack, StackConfig
from realtime_client import Backoff, Forbidden, Gap, Message, Presence, Pulse, Room, RoomClosed

DEADLINE = 20.0
PASSWORD = "client-secret-1"


def make_stack(**env: str) -> Stack:
    return Stack(
        StackConfig.for_tests(
            "rooms=2",
            ROOM_PASSWORDS=json.dumps({"guarded": PASSWORD}),
            PULSE_INTERVAL="0.5",
            PRESENCE_INTERVAL="1",
            **env,
        )
    )


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """One stack for the tests that break nothing."""
    with make_stack() as running:
        yield running


@pytest.fixture
def own_stack() -> Iterator[Stack]:
    """A stack of the test's own, for a fault. (A process the fault restarts from a worker thread gets
    SIGTERM when that thread exits, at the end of the test's event loop: devstack's PR_SET_PDEATHSIG
    follows the thread. So a restarted nats-server would not outlive the test that restarted it.)"""
    with make_stack() as running:
        yield running


def opened(stack: Stack) -> float:
    """WebSocket sessions the rooms replicas have accepted so far (their /metrics)."""
    total = 0.0
    for replica in stack.replicas("rooms"):
        if not replica.running:
            continue
        with urllib.request.urlopen(f"http://127.0.0.1:{replica.port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        for line in text.splitlines():
            if line.startswith("realtime_ws_connections_opened_total{") and 'service="rooms"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


async def numbered_traffic(stack: Stack, room: str, fault: Callable[[], None], count: int = 60) -> None:
    """One client sends ``count`` numbered messages (each acked) while another receives; the fault
    happens in the middle. The receiver must get each one once, in order."""
    async with Room(stack.gateway_url, room) as receiver, Room(stack.gateway_url, room) as sender:
        got: list[Message] = []

        async def receive() -> None:
            async for message in receiver:
                got.append(message)
                if len(got) == count:
                    return

        receiving = asyncio.create_task(receive())
        seqs = []
        async with asyncio.timeout(90):
            for i in range(count):
                if i == count // 3:
                    await asyncio.to_thread(fault)
                seqs.append(await sender.send(f"n{i}"))
                await asyncio.sleep(0.02)
            await receiving
        assert [m.text for m in got] == [f"n{i}" for i in range(count)]
        assert [m.seq for m in got] == seqs == sorted(set(seqs))
        assert receiver.gaps == [] and sender.gaps == []


async def test_send_returns_the_stored_seq_and_every_member_hears_it(stack: Stack) -> None:
    async with Room(stack.gateway_url, "plain") as one, Room(stack.gateway_url, "plain") as two:
        seq = await asyncio.wait_for(one.send("hello"), DEADLINE)
        async with asyncio.timeout(DEADLINE):
            heard = [await anext(aiter(r)) for r in (one, two)]
        assert [(m.seq, m.text, m.id) for m in heard] == [(seq, "hello", heard[0].id)] * 2
        assert heard[0].sender == one.you


async def test_presence_events_and_the_member_count(stack: Stack) -> None:
    async with Room(stack.gateway_url, "presence") as watcher:
        events = watcher.events()
        async with Room(stack.gateway_url, "presence"):
            async with asyncio.timeout(DEADLINE):
                while not (isinstance(e := await anext(events), Presence) and e.type == "join"):
                    pass
            assert e.count == 2 and watcher.count == 2
        async with asyncio.timeout(DEADLINE):
            while not (isinstance(e := await anext(events), Presence) and e.type == "leave"):
                pass
        assert e.count == 1


async def test_messages_survive_a_rooms_replica_sigkill(own_stack: Stack) -> None:
    stack = own_stack
    victim = "rooms-1"

    def kill_and_restart() -> None:
        stack.stop_process(victim, signal.SIGKILL)
        stack.start_process(victim)
        stack.wait_ready(names=[victim])

    await numbered_traffic(stack, "replica-kill", kill_and_restart)


async def test_messages_survive_a_nats_sigkill_and_restart(own_stack: Stack) -> None:
    stack = own_stack

    def kill_and_restart() -> None:
        stack.stop_process("nats", signal.SIGKILL)
        stack.start_process("nats")  # same port, same store
        stack.wait_ready(names=["nats"])

    await numbered_traffic(stack, "nats-kill", kill_and_restart)


async def test_a_wrong_password_raises_at_once_and_never_retries(stack: Stack) -> None:
    before = opened(stack)
    room = Room(stack.gateway_url, "guarded", password="wrong")
    with pytest.raises(Forbidden) as raised:
        await asyncio.wait_for(room.__aenter__(), DEADLINE)
    assert raised.value.code == 4003 and raised.value.reason == "forbidden"
    await asyncio.sleep(1.5)  # longer than the first backoff: a retry would have happened by now
    assert room.connects == 1
    assert opened(stack) - before == 1  # the server saw one session, not more
    await room.close()


async def test_the_right_password_joins(stack: Stack) -> None:
    async with Room(stack.gateway_url, "guarded", password=PASSWORD) as room:
        assert await asyncio.wait_for(room.send("in"), DEADLINE) > 0


async def test_an_invalid_room_id_is_final(stack: Stack) -> None:
    with pytest.raises(RoomClosed) as raised:
        async with Room(stack.gateway_url, "no.dots"):
            pass
    assert (raised.value.code, raised.value.reason) == (1008, "invalid room id")


async def test_history_then_live(stack: Stack) -> None:
    async with Room(stack.gateway_url, "history") as talker:
        sent = [await talker.send(f"h{i}") for i in range(3)]
    async with Room(stack.gateway_url, "history", history=2) as late:
        async with asyncio.timeout(DEADLINE):
            got = [await anext(aiter(late)) for _ in range(2)]
        assert [m.seq for m in got] == sent[1:]


async def test_pulse_yields_successive_ticks(stack: Stack) -> None:
    ticks = []
    async with asyncio.timeout(DEADLINE):
        async for pulse in Pulse(stack.gateway_url):
            assert {"tick", "ts", "cpu", "services", "instances"} <= set(pulse)
            ticks.append(pulse["tick"])
            if len(ticks) == 3:
                break
    assert ticks == sorted(set(ticks))


async def test_a_resume_past_the_history_is_a_gap_then_live_again() -> None:
    """The member's replica dies; while it is away more messages are stored than the room keeps; the
    client comes back, is told ``recovered: false`` (a ``Gap``), and goes on with live messages."""
    with make_stack(ROOM_HISTORY_SIZE="5") as stack:
        replica = {r: f"ws://127.0.0.1:{stack.processes[r].port}" for r in ("rooms-1", "rooms-2")}
        gaps: list[Gap] = []
        away = Room(replica["rooms-1"], "gappy", backoff=Backoff(first=2.0, jitter=0.0), on_gap=gaps.append)
        async with away, Room(replica["rooms-2"], "gappy") as talker:
            first = await talker.send("before")
            events = away.events()
            async with asyncio.timeout(DEADLINE):
                while not isinstance(e := await anext(events), Message):
                    pass
            assert e.seq == first
            await asyncio.to_thread(stack.stop_process, "rooms-1", signal.SIGKILL)
            for i in range(8):  # more than the room keeps, said while the member is away
                await asyncio.wait_for(talker.send(f"away {i}"), DEADLINE)
            await asyncio.to_thread(stack.start_process, "rooms-1")
            async with asyncio.timeout(DEADLINE * 2):
                while not isinstance(e := await anext(events), Gap):
                    pass
                assert e.since == first and gaps == [e] == away.gaps
                live = await talker.send("live")
                while not isinstance(e := await anext(events), Message) or e.text != "live":
                    pass
            assert e.seq == live

"""The client against the real stack: a real nats-server, rooms and stats replicas behind the gateway.

Faults are real: a rooms replica is SIGKILLed, nats-server is SIGKILLed and started again on the same
port and store. Every wait has a deadline.
"""

import asyncio
import json
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

import jwt
import pytest
from devstack.stack import Stack, StackConfig
from realtime_client import (
    Backoff,
    Forbidden,
    Gap,
    InvalidToken,
    Message,
    Presence,
    Pulse,
    Room,
    RoomClosed,
)

DEADLINE = 20.0
PASSWORD = "client-secret-1"
TOKEN_SECRET = "client-token-secret-0123456789-abcdef"
E = TypeVar("E")


def make_stack(**env: str) -> Stack:
    return Stack(
        StackConfig.for_tests(
            "rooms=2",
            ROOM_PASSWORDS=json.dumps({"guarded": PASSWORD}),
            TOKEN_SECRET=TOKEN_SECRET,
            # the module's few refusals (a wrong password, refused tokens) all come from 127.0.0.1
            AUTH_MAX_FAILURES="50",
            PULSE_INTERVAL="0.5",
            PRESENCE_INTERVAL="1",
            **env,
        )
    )


def mint(user: str = "ada", name: str = "Ada L.", ttl: float = 300, key: str = TOKEN_SECRET) -> str:
    """An identity token as the app's login would make one (HS256, every room)."""
    claims = {"sub": user, "name": name, "rooms": "*", "exp": int(time.time() + ttl)}
    return jwt.encode(claims, key, algorithm="HS256")


class Minter:
    """A token callable that mints a fresh token at each call and counts the calls."""

    def __init__(self, user: str, name: str) -> None:
        self.user, self.name = user, name
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return mint(self.user, self.name)


class AsyncMinter(Minter):
    async def __call__(self) -> str:  # type: ignore[override]
        await asyncio.sleep(0)  # as a login call would
        return super().__call__()


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
        with urllib.request.urlopen(f"{replica.internal_url}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        for line in text.splitlines():
            if line.startswith("realtime_ws_connections_opened_total{") and 'service="rooms"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


def members_on(stack: Stack) -> dict[str, int]:
    """Local members per running rooms replica (its ``/rooms`` counters)."""
    found = {}
    for replica in stack.replicas("rooms"):
        if replica.running:
            with urllib.request.urlopen(f"{replica.internal_url}/rooms", timeout=5) as reply:
                found[replica.name] = json.load(reply)["members"]
    return found


async def numbered_traffic(
    stack: Stack,
    room: str,
    fault: Callable[[], None],
    count: int = 60,
    receiver: Room | None = None,
    sender: Room | None = None,
) -> list[Message]:
    """One client sends ``count`` numbered messages (each acked) while another receives; the fault
    happens in the middle. The receiver must get each one once, in order. Returns what it got."""
    receiver = receiver or Room(stack.gateway_url, room)
    sender = sender or Room(stack.gateway_url, room)
    async with receiver, sender:
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
        return got


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


# --- identity tokens and display names -----------------------------------------------------------
async def next_event(events: AsyncIterator[object], kind: type[E], **fields: object) -> E:
    """The next event of this class (with these attribute values); others pass by."""
    async with asyncio.timeout(DEADLINE):
        while True:
            event = await anext(events)
            if isinstance(event, kind) and all(getattr(event, k) == v for k, v in fields.items()):
                return event


async def test_a_token_members_messages_and_presence_carry_its_user_and_name(stack: Stack) -> None:
    async with Room(stack.gateway_url, "named", name="Guest 7") as guest:
        assert guest.welcome is not None
        assert (guest.welcome.user, guest.welcome.name) == (None, "Guest 7")
        seen = guest.events()
        async with Room(stack.gateway_url, "named", token=mint(), name="ignored with a token") as ada:
            assert ada.welcome is not None
            assert (ada.welcome.user, ada.welcome.name) == ("ada", "Ada L.")
            join = await next_event(seen, Presence, type="join", member=ada.you)
            assert (join.user, join.name) == ("ada", "Ada L.")
            seq = await asyncio.wait_for(ada.send("hello from Ada"), DEADLINE)
            heard = await next_event(seen, Message, seq=seq)
            assert (heard.text, heard.sender, heard.user, heard.name) == (
                "hello from Ada",
                ada.you,
                "ada",
                "Ada L.",
            )
            reply = await asyncio.wait_for(guest.send("hi Ada"), DEADLINE)
            back = await next_event(ada.events(), Message, seq=reply)
            assert (back.user, back.name) == (None, "Guest 7")
            assert "user" not in back.data
            ada_id = ada.you
        leave = await next_event(seen, Presence, type="leave", member=ada_id)
        assert (leave.user, leave.name) == ("ada", "Ada L.")


@pytest.mark.parametrize("bad", ["expired", "forged"])
async def test_a_refused_token_raises_invalid_token_after_one_attempt(stack: Stack, bad: str) -> None:
    value = mint(ttl=-30) if bad == "expired" else mint(key="f" * 40)
    calls = []
    before = opened(stack)
    room = Room(stack.gateway_url, "lobby", token=lambda: calls.append(1) or value)
    with pytest.raises(InvalidToken) as raised:
        await asyncio.wait_for(room.__aenter__(), DEADLINE)
    assert (raised.value.code, raised.value.reason) == (4001, "invalid token")
    await asyncio.sleep(1.5)  # longer than the first backoff: a retry would have happened by now
    assert room.connects == 1 and len(calls) == 1
    assert opened(stack) - before == 1  # the replicas saw one session, not more
    with pytest.raises(InvalidToken):  # and every later use says the same at once
        await room.send("x")
    with pytest.raises(InvalidToken):
        await anext(aiter(room))
    assert room.connects == 1
    await room.close()


async def test_a_token_callable_that_raises_ends_the_session_with_its_error(stack: Stack) -> None:
    def login() -> str:
        raise PermissionError("the login refused")

    room = Room(stack.gateway_url, "lobby", token=login)
    with pytest.raises(PermissionError):
        await asyncio.wait_for(room.__aenter__(), DEADLINE)
    assert room.connects == 0
    await room.close()


async def test_a_callable_token_is_called_again_at_each_reconnect(own_stack: Stack) -> None:
    """Both members get their token from a callable (one sync, one async); a replica with a member on it
    is SIGKILLed mid-traffic. Each reconnect asks the callable for a fresh token, and nothing is lost
    or doubled."""
    stack = own_stack
    alice, bob = AsyncMinter("alice", "Alice"), Minter("bob", "Bob")
    receiver = Room(stack.gateway_url, "token-kill", token=alice)
    sender = Room(stack.gateway_url, "token-kill", token=bob)

    def kill_and_restart() -> None:
        victim = next(name for name, members in members_on(stack).items() if members > 0)
        stack.stop_process(victim, signal.SIGKILL)
        stack.start_process(victim)
        stack.wait_ready(names=[victim])

    got = await numbered_traffic(stack, "token-kill", kill_and_restart, receiver=receiver, sender=sender)
    assert {(m.user, m.name) for m in got} == {("bob", "Bob")}
    assert (alice.calls, bob.calls) == (receiver.connects, sender.connects)
    assert receiver.welcomes + sender.welcomes >= 3  # at least one of them came back
    assert [c for c, _ in receiver.closes + sender.closes if c == 4001] == []


async def test_a_token_refused_at_a_reconnect_ends_the_iterator_and_pending_sends(own_stack: Stack) -> None:
    """The first token is good; by the reconnect after its replica is SIGKILLed, the app hands out a
    forged one: the gateway takes the client to the other replica, which closes with 4001, and the
    iterator and a send waiting for its ack raise ``InvalidToken``; nothing is tried again."""
    stack = own_stack
    tokens = iter([mint()])
    room = Room(stack.gateway_url, "refused-later", token=lambda: next(tokens, mint(key="f" * 40)))
    async with room:
        victim = next(name for name, members in members_on(stack).items() if members > 0)
        await asyncio.to_thread(stack.stop_process, victim, signal.SIGKILL)
        sending = asyncio.create_task(room.send("never stored"))
        with pytest.raises(InvalidToken):
            async with asyncio.timeout(DEADLINE):
                async for _ in room:
                    pass
        with pytest.raises(InvalidToken):
            await asyncio.wait_for(sending, DEADLINE)
        connects = room.connects
        assert room.closes[-1] == (4001, "invalid token")
        await asyncio.sleep(1.5)
        assert room.connects == connects

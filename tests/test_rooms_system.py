"""Rooms end to end: two rooms replicas, a real nats-server and the real gateway, as processes."""

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from devstack.stack import Stack
from realtime.close_codes import CloseCode
from rooms_service.guard import hash_password
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.conftest import DEADLINE, closed_with, make_stack, recv, wait_until_async, ws

PASSWORD = "secret123"
WRONG = "not-the-pass-77"
VAULT_PASSWORD = "vault-pw-hashed"  # configured only as a salted hash


@pytest.fixture(scope="module")
def rooms_stack() -> Iterator[Stack]:
    passwords = {"VIP": PASSWORD, "vault": hash_password(VAULT_PASSWORD, iterations=10_000)}
    with make_stack("rooms=2", ROOM_PASSWORDS=json.dumps(passwords)) as running:
        yield running


def replica_url(stack: Stack, replica: str) -> str:
    return f"ws://127.0.0.1:{stack.processes[replica].port}"


def http_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.loads(response.read())


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def room_stats(stack: Stack, replica: str) -> dict:
    return http_json(f"{stack.processes[replica].internal_url}/rooms")  # an operator path


def nats_room_subjects(stack: Stack) -> dict[str, list[str]]:
    """Every rooms replica's NATS subscriptions, from the server's own monitoring endpoint."""
    connz = http_json(f"http://127.0.0.1:{stack.config.nats_monitor_port}/connz?subs=detail")
    subjects: dict[str, list[str]] = {}
    for conn in connz.get("connections") or []:
        name = conn.get("name", "")
        if name.startswith("rooms/"):
            details = conn.get("subscriptions_list_detail") or []
            subjects[name.split("/", 1)[1]] = sorted(d["subject"] for d in details)
    return subjects


def is_service_subject(subject: str) -> bool:
    """A replica's own subscriptions, not a room's: the shared throttle, presence, the server API."""
    return subject == "rooms.auth.results" or subject.startswith(("rooms.presence.", "rooms.control."))


async def recv_n(conn: ClientConnection, n: int) -> list[str | bytes]:
    return [await recv(conn) for _ in range(n)]


async def test_members_on_different_replicas_see_each_others_messages(rooms_stack: Stack) -> None:
    async with (
        await ws(f"{replica_url(rooms_stack, 'rooms-1')}/ws/lobby") as one,
        await ws(f"{replica_url(rooms_stack, 'rooms-2')}/ws/lobby") as two,
        await ws(f"{rooms_stack.gateway_url}/ws/lobby") as via_gateway,
        await ws(f"{rooms_stack.gateway_url}/ws/elsewhere") as other_room,
    ):
        members = (one, two, via_gateway)
        for i, sender in enumerate(members):
            for k in range(3):
                await sender.send(f"from {i} #{k}")
        for member in members:
            heard = await recv_n(member, 9)
            for i in range(3):  # every message exactly once, each sender's in the order it sent them
                assert [m for m in heard if str(m).startswith(f"from {i} ")] == [
                    f"from {i} #{k}" for k in range(3)
                ]
        await other_room.send("marker")
        assert await recv(other_room) == "marker"  # the first thing the other room hears is its own
        for member in members:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(member.recv(), 0.3)  # nothing more, in particular no "marker"


async def test_one_subscription_per_room_per_replica_dropped_after_the_last_member(
    rooms_stack: Stack,
) -> None:
    url1 = f"{replica_url(rooms_stack, 'rooms-1')}/ws/subs-check"
    conns = [await ws(url1) for _ in range(3)]
    try:
        await conns[0].send("hi")
        for conn in conns:
            assert await recv(conn) == "hi"
        subjects = nats_room_subjects(rooms_stack)
        assert subjects["rooms-1"].count("rooms.subs-check") == 1  # three members, one subscription
        assert "rooms.subs-check" not in subjects["rooms-2"]  # no local member there, no interest
    finally:
        for conn in conns:
            await conn.close()
    await wait_until_async(lambda: room_stats(rooms_stack, "rooms-1")["members"] == 0, "the members to leave")
    await wait_until_async(
        lambda: "rooms.subs-check" not in nats_room_subjects(rooms_stack)["rooms-1"],
        "the replica to drop the room's subscription",
    )


@pytest.mark.parametrize("query", ["", f"?pass={WRONG}", "?pass=", "?password=secret123"])
async def test_wrong_or_missing_password_shows_4003_through_gateway(rooms_stack: Stack, query: str) -> None:
    async with await ws(f"{rooms_stack.gateway_url}/ws/VIP{query}") as conn:
        assert await closed_with(conn) == (CloseCode.FORBIDDEN, "forbidden")


async def test_right_password_joins_and_open_room_needs_none(rooms_stack: Stack) -> None:
    async with (
        await ws(f"{rooms_stack.gateway_url}/ws/VIP?pass={PASSWORD}") as vip,
        await ws(f"{rooms_stack.gateway_url}/ws/open-room") as open_room,
    ):
        await vip.send("vip hello")
        assert await recv(vip) == "vip hello"
        await open_room.send("open hello")
        assert await recv(open_room) == "open hello"


async def test_hashed_password_and_throttle_through_gateway(rooms_stack: Stack) -> None:
    async with await ws(f"{rooms_stack.gateway_url}/ws/vault?pass={VAULT_PASSWORD}&format=json") as conn:
        assert json.loads(await recv(conn))["type"] == "welcome"
    for _ in range(5):  # AUTH_MAX_FAILURES: 5 a minute per (client address, room), counted on any replica
        async with await ws(f"{rooms_stack.gateway_url}/ws/vault?pass={WRONG}") as conn:
            assert await closed_with(conn) == (CloseCode.FORBIDDEN, "forbidden")
    # then even the right password is refused without being checked, on both replicas (the gateway
    # alternates them, and the replicas share their check results over NATS)
    for _ in range(2):
        async with await ws(f"{rooms_stack.gateway_url}/ws/vault?pass={VAULT_PASSWORD}") as conn:
            assert await closed_with(conn) == (CloseCode.FORBIDDEN, "forbidden")
    assert "refused 127.0.0.1 (throttled password)" in rooms_stack.all_logs()


async def test_oversized_message_closes_1009_through_gateway(rooms_stack: Stack) -> None:
    async with (
        await ws(f"{rooms_stack.gateway_url}/ws/big", max_size=None) as conn,
        await ws(f"{rooms_stack.gateway_url}/ws/big") as other,
    ):
        await conn.send("x" * (64 * 1024 + 1))
        code, _ = await closed_with(conn)
        assert code == CloseCode.MESSAGE_TOO_BIG
        await other.send("still fine")
        assert await recv(other) == "still fine"


@pytest.mark.parametrize("path", ["a.b", "*", "%3E", "rooms.%3E", "a%20b", "x" * 65, "a%2Eb"])
async def test_invalid_room_id_gets_1008_and_hears_nothing(rooms_stack: Stack, path: str) -> None:
    async with await ws(f"{rooms_stack.gateway_url}/ws/lobby") as chatter:
        await chatter.send("talking in the lobby")
        async with await ws(f"{rooms_stack.gateway_url}/ws/{path}") as conn:
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(conn.recv(), DEADLINE)  # the very first thing is the close
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (
                CloseCode.POLICY_VIOLATION,
                "invalid room id",
            )
        assert await recv(chatter) == "talking in the lobby"
    for subjects in nats_room_subjects(rooms_stack).values():
        rooms = [s for s in subjects if s.startswith("rooms.") and not is_service_subject(s)]
        assert not [s for s in rooms if "*" in s or ">" in s or s.count(".") != 1 or " " in s]


async def next_event(conn: ClientConnection, counts: list[int] | None = None) -> dict:
    """The next JSON event other than a ``members`` count update (those come whenever totals converge);
    the counts those updates carried are appended to ``counts``."""
    while True:
        event = json.loads(await recv(conn))
        if event["type"] != "members":
            return event
        if counts is not None:
            counts.append(event["count"])


async def test_json_members_see_presence_across_replicas(rooms_stack: Stack) -> None:
    async with await ws(f"{replica_url(rooms_stack, 'rooms-1')}/ws/presence?format=json") as watcher:
        welcome = await next_event(watcher)
        assert (welcome["type"], welcome["count"]) == ("welcome", 1)
        async with await ws(f"{replica_url(rooms_stack, 'rooms-2')}/ws/presence?format=json") as guest:
            joined = await next_event(watcher)
            assert (joined["type"], joined["count"]) == ("join", 2)
            guest_counts: list[int] = []
            greeting = await next_event(guest, guest_counts)
            assert greeting["type"] == "welcome" and greeting["you"] == joined["member"]
            await guest.send("hello from replica 2")
            message = await next_event(watcher)
            assert message["type"] == "message" and message["text"] == "hello from replica 2"
            assert message["sender"] == joined["member"] and message["seq"] > 0 and "seq" not in joined
            echoed = await next_event(guest, guest_counts)
            assert (echoed["seq"], echoed["ts"]) == (message["seq"], message["ts"])  # same on both replicas
            # the guest's replica learns the watcher from rooms-1's answer to its join: the count converges
            while greeting["count"] != 2 and guest_counts[-1:] != [2]:
                update = json.loads(await recv(guest))  # recv has a deadline
                assert update["type"] == "members"
                guest_counts.append(update["count"])
        left = await next_event(watcher)
        assert (left["type"], left["count"], left["member"]) == ("leave", 1, joined["member"])


async def test_passwords_never_reach_any_log(rooms_stack: Stack) -> None:
    # the tests above connected with these passwords too; this one does as well, so it stands alone
    async with await ws(f"{rooms_stack.gateway_url}/ws/VIP?pass={WRONG}") as conn:
        assert (await closed_with(conn))[0] == CloseCode.FORBIDDEN
    async with await ws(f"{rooms_stack.gateway_url}/ws/VIP?format=json&pass={PASSWORD}") as conn:
        assert json.loads(await recv(conn))["type"] == "welcome"
    await wait_until_async(
        lambda: "pass=***" in rooms_stack.log_tail("gateway", 2000), "the gateway to log a connection"
    )
    logs = rooms_stack.all_logs()
    assert "/ws/VIP?pass=***" in logs
    assert PASSWORD not in logs
    assert WRONG not in logs


async def closed_with_after_backlog(conn: ClientConnection, deadline: float = 60.0) -> tuple[int, str]:
    """Read a (long) backlog to its end; returns the close code and reason the server sent."""
    try:
        async with asyncio.timeout(deadline):
            async for _ in conn:
                pass
    except ConnectionClosed:
        pass
    received = conn.protocol.close_rcvd
    assert received is not None, "the connection ended without a close frame (1006)"
    return received.code, received.reason


# Each test below needs a stack of its own.
async def test_client_that_never_reads_is_cut_off_while_others_keep_up() -> None:
    with make_stack("rooms=2", MESSAGE_RATE="5000", MESSAGE_BURST="5000") as stack:
        room = f"{stack.gateway_url}/ws/firehose"
        async with (
            await ws(room, max_queue=4) as sleeper,  # connects, then never reads
            await ws(f"{replica_url(stack, 'rooms-1')}/ws/firehose", max_size=None) as reader,
            await ws(f"{replica_url(stack, 'rooms-2')}/ws/firehose", max_size=None) as sender,
        ):
            chunk = "x" * 32_000
            cut_off = False

            def any_cut_off() -> bool:
                return any(room_stats(stack, r)["slow_consumers_cut_off"] for r in ("rooms-1", "rooms-2"))

            async def read_all(until: str) -> int:
                expected = 0
                while True:
                    text = await recv(reader)
                    if text == until:
                        return expected
                    assert text == f"{expected} {chunk}"
                    expected += 1

            async def drain(conn: ClientConnection) -> None:
                async for _ in conn:  # the sender hears its own messages too and must keep up
                    pass

            reading = asyncio.create_task(read_all("done"))
            draining = asyncio.create_task(drain(sender))
            sent = 0
            async with asyncio.timeout(60):
                while not cut_off:
                    for _ in range(20):
                        await sender.send(f"{sent} {chunk}")
                        sent += 1
                    cut_off = await asyncio.to_thread(any_cut_off)
                for _ in range(50):  # the others go on at full speed after the cut-off
                    await sender.send(f"{sent} {chunk}")
                    sent += 1
                await sender.send("done")
                assert await reading == sent  # every message, in order, nothing lost
            draining.cancel()
            assert "slow consumer cut off" in stack.all_logs()
            await wait_until_async(
                lambda: sum(room_stats(stack, r)["members"] for r in ("rooms-1", "rooms-2")) == 2,
                "the slow member to be removed",
            )
            # it reads its bounded backlog, then sees 1013 (resume), through the gateway
            assert await closed_with_after_backlog(sleeper) == (CloseCode.TRY_AGAIN_LATER, "slow consumer")


async def test_nats_restart_restores_room_subscriptions_without_reconnecting() -> None:
    with make_stack("rooms=2") as stack:
        readyz = [f"http://127.0.0.1:{stack.processes[r].port}/readyz" for r in ("rooms-1", "rooms-2")]
        async with (
            await ws(f"{replica_url(stack, 'rooms-1')}/ws/sturdy") as one,
            await ws(f"{replica_url(stack, 'rooms-2')}/ws/sturdy") as two,
        ):
            await one.send("before")
            assert await recv(one) == "before" and await recv(two) == "before"

            stack.stop_process("nats")
            await wait_until_async(lambda: not any(ready(u) for u in readyz), "readiness to turn false")
            stack.start_process("nats")
            stack.wait_ready(names=["nats"])
            await wait_until_async(lambda: all(ready(u) for u in readyz), "readiness to return", deadline=20)

            await two.send("after from 2")
            await one.send("after from 1")
            for conn in (one, two):
                assert sorted([await recv(conn), await recv(conn)]) == ["after from 1", "after from 2"]


async def test_stopping_replica_says_1001_and_the_others_see_its_members_leave() -> None:
    with make_stack("rooms=2") as stack:
        async with (
            await ws(f"{replica_url(stack, 'rooms-1')}/ws/drain?format=json") as stays,
            await ws(f"{replica_url(stack, 'rooms-2')}/ws/drain") as goes,
        ):
            assert (await next_event(stays))["type"] == "welcome"
            joined = await next_event(stays)
            assert (joined["type"], joined["count"]) == ("join", 2)
            stack.stop_process("rooms-2")  # SIGTERM: a graceful stop
            assert await closed_with(goes) == (CloseCode.GOING_AWAY, "server shutting down")
            left = await next_event(stays)
            assert (left["type"], left["member"], left["count"]) == ("leave", joined["member"], 1)


async def test_a_crashed_replicas_members_stop_counting_within_two_presence_intervals() -> None:
    with make_stack("rooms=2", PRESENCE_INTERVAL="0.5") as stack:
        async with (
            await ws(f"{replica_url(stack, 'rooms-1')}/ws/crash?format=json") as stays,
            await ws(f"{replica_url(stack, 'rooms-2')}/ws/crash"),
        ):
            assert (await next_event(stays))["type"] == "welcome"
            assert (await next_event(stays))["count"] == 2
            stack.stop_process("rooms-2", signal.SIGKILL)  # no leave is ever announced
            killed = time.monotonic()
            counts: list[int] = []
            async with asyncio.timeout(DEADLINE):
                while counts[-1:] != [1]:
                    event = json.loads(await recv(stays))
                    assert event["type"] == "members"
                    counts.append(event["count"])
            # 2 x PRESENCE_INTERVAL, plus a little for a busy shared machine's scheduling
            assert time.monotonic() - killed < 2 * 0.5 + 0.4

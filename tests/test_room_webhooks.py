"""Room events' webhooks end to end: two rooms replicas behind the gateway, a real nats-server, and a
real receiver (tests/support/webhook_receiver.py) verifying every signature with ``standardwebhooks``.

What must hold, across each fault: every event recorded on the stream reaches the receiver, exactly
once after dedup by ``webhook-id``, in the stream's order per room; ``occupied`` / ``vacated`` once per
occupancy period with members on both replicas.
"""

import asyncio
import json
import secrets
import signal
import time
from collections.abc import Awaitable, Callable

import nats
import pytest
from devstack.stack import Stack
from nats.js.api import AckPolicy, ConsumerConfig
from rooms_service.signing import new_secret

from tests.conftest import make_stack, recv, ws
from tests.support.rooms import kill_and_restart_nats
from tests.support.webhook_receiver import Receiver

SECRET = new_secret()
RECEIVER_DOWN = 30.0  # seconds, the figure (each fault case makes its own stack: +22 s over 8 s)
TRAFFIC = 6.0  # seconds of members joining, sending and leaving


def env(receiver: Receiver, types: str = "occupied,vacated,joined,left,message") -> dict[str, str]:
    return {
        "EVENTS_WEBHOOK_URL": receiver.url,
        "EVENTS_WEBHOOK_SECRET": SECRET,
        "EVENTS_WEBHOOK_TYPES": types,
        "EVENTS_WEBHOOK_BATCH": "20",
        "EVENTS_WEBHOOK_RETRY_LIMIT": "1",
        "EVENTS_WEBHOOK_TIMEOUT": "2",
        "PRESENCE_INTERVAL": "1",
    }


async def stored(nats_url: str) -> list[dict]:
    """Every event on the stream, in stream order (a throwaway durable read to the end)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        name = f"check-{secrets.token_hex(4)}"
        unacked = ConsumerConfig(ack_policy=AckPolicy.NONE)
        sub = await js.pull_subscribe("rooms.events.*", durable=name, stream="ROOM_EVENTS", config=unacked)
        events: list[dict] = []
        while True:
            try:
                batch = await sub.fetch(500, timeout=0.5)
            except TimeoutError:
                break
            if not batch:
                break
            events += [json.loads(m.data) for m in batch]
            if batch[-1].metadata.num_pending == 0:
                break
        await js.delete_consumer("ROOM_EVENTS", name)
        return events
    finally:
        await nc.close()


async def until(conn: object, kind: str) -> dict:
    while True:
        event = json.loads(await recv(conn))  # type: ignore[arg-type]
        if event["type"] == kind:
            return event


async def converged(stack: Stack, receiver: Receiver, deadline: float) -> tuple[list[dict], list[dict]]:
    """Wait until the receiver holds every stored event and nothing else; returns (stored, received)."""
    while True:
        events = await stored(stack.bus_url)
        if {e["id"] for e in events} == {e["id"] for e in receiver.events} or time.monotonic() > deadline:
            return events, receiver.events
        print(f"stored {len(events)}, received {len(receiver.events)}")
        await asyncio.sleep(1.0)


def by_room(events: list[dict]) -> dict[str, list[str]]:
    rooms: dict[str, list[str]] = {}
    for event in events:
        rooms.setdefault(event["room"], []).append(event["id"])
    return rooms


async def test_occupied_and_vacated_once_per_period_with_members_on_both_replicas() -> None:
    room = f"wh-{secrets.token_hex(3)}"
    async with Receiver(SECRET) as receiver:
        with make_stack("rooms=2", **env(receiver, types="occupied,vacated,joined,left")) as stack:
            for period in (1, 2):
                urls = [
                    f"ws://127.0.0.1:{stack.processes[r].port}/ws/{room}?format=json"
                    for r in ("rooms-1", "rooms-2")
                ]
                async with await ws(urls[0]) as one, await ws(urls[1]) as two:
                    await until(one, "welcome")
                    await until(two, "welcome")
                deadline = time.monotonic() + 20
                while not any(e["type"] == "vacated" and e.get("period") == period for e in receiver.events):
                    assert time.monotonic() < deadline, receiver.events
                    await asyncio.sleep(0.1)
    kinds = [e["type"] for e in receiver.events if e["room"] == room]
    assert kinds[0] == "occupied" and kinds[-1] == "vacated", kinds
    assert kinds.count("occupied") == 2 and kinds.count("vacated") == 2, kinds
    assert kinds.count("joined") == 4 and kinds.count("left") == 4, kinds
    assert receiver.bad_signatures == 0


async def traffic(stack: Stack, stop: float, rooms: list[str]) -> int:
    """Members join a room through the gateway, send one message, leave; again, until ``stop``."""
    done = 0

    async def member(room: str) -> None:
        nonlocal done
        while time.monotonic() < stop:
            try:
                async with await ws(f"{stack.gateway_url}/ws/{room}?format=json") as conn:
                    await until(conn, "welcome")
                    await conn.send(json.dumps({"text": "hi", "id": secrets.token_hex(4)}))
                    await until(conn, "ack")
                    done += 1
                await asyncio.sleep(0.3)  # a few sessions a second per member: a chat, not a flood
            except Exception:  # the fault: a broken connection or a 1013; the member comes back
                await asyncio.sleep(0.2)

    await asyncio.gather(*(member(rooms[i % len(rooms)]) for i in range(6)))
    return done


def stop_receiver(receiver: Receiver) -> Callable[[Stack], Awaitable[None]]:
    async def fault(stack: Stack) -> None:
        await receiver.stop()
        await asyncio.sleep(RECEIVER_DOWN)  # the receiver is away this long (the fault itself)
        await receiver.start()

    return fault


async def kill_delivering_replica(stack: Stack) -> None:
    nc = await nats.connect(stack.bus_url)
    try:
        kv = await nc.jetstream().key_value("ROOM_EVENTS_WEBHOOK")
        holder = (await kv.get("lease")).value.decode()
    finally:
        await nc.close()
    await asyncio.to_thread(lambda: stack.stop_process(holder, signal.SIGKILL))


async def kill_nats(stack: Stack) -> None:
    await kill_and_restart_nats(stack)()


async def nothing(stack: Stack) -> None:
    pass


FAULTS = [
    "receiver-down",
    "replica-sigkill",
    "nats-sigkill-restart",  # acks forgotten by the crash: redelivered batches keep their webhook-id
    "receiver-500-every-third",
]


@pytest.mark.timeout(150)  # a stack of 2 replicas, traffic across the fault, then every event delivered
@pytest.mark.parametrize("fault", FAULTS)
async def test_every_recorded_event_reaches_the_receiver_once_in_order(fault: str) -> None:
    rooms = [f"wf-{secrets.token_hex(3)}-{i}" for i in range(3)]
    async with Receiver(SECRET, fail_every=3 if fault == "receiver-500-every-third" else 0) as receiver:
        with make_stack("rooms=2", **env(receiver)) as stack:
            actions = {
                "receiver-down": stop_receiver(receiver),
                "replica-sigkill": kill_delivering_replica,
                "nats-sigkill-restart": kill_nats,
                "receiver-500-every-third": nothing,
            }
            stop = time.monotonic() + TRAFFIC + (RECEIVER_DOWN if fault == "receiver-down" else 0)
            sending = asyncio.create_task(traffic(stack, stop, rooms))
            await asyncio.sleep(2.0)  # mid-traffic, with deliveries under way
            await actions[fault](stack)
            print(f"fault {fault} done")
            sent = await sending
            print(f"traffic done: {sent}")
            started = time.monotonic()
            events, received = await converged(stack, receiver, started + 60)
            took = time.monotonic() - started
            print(f"converged in {took:.1f}s; {receiver.calls} calls, {receiver.repeats} repeats")
    assert sent > 10
    assert receiver.bad_signatures == 0
    ours = [e for e in events if e["room"] in rooms]
    assert {e["type"] for e in ours} >= {"occupied", "joined", "message", "left", "vacated"}
    got = [e for e in received if e["room"] in rooms]
    twice = {e["id"] for e in got if [g["id"] for g in got].count(e["id"]) > 1}
    where = {w: [e["id"] for e in b] for w, b in receiver.batches.items() if twice & {e["id"] for e in b}}
    assert not twice, f"delivered twice under different webhook-ids: {where}"
    assert by_room(got) == by_room(ours)  # every recorded event, once, in the stream's order per room
    if fault == "receiver-500-every-third":
        assert receiver.calls >= 3

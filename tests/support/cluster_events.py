"""The room events stream through the cluster faults (issue 23 asks it of the events of issue 22): every
acknowledged message has its ``message`` event in ``ROOM_EVENTS``, once, read as an app reads it (a consumer
of its own on ``rooms.events.<room>``)."""

import asyncio
import json
import time

import nats
from devstack.stack import Stack
from nats.js.errors import ServiceUnavailableError
from realtime.bus.nats import server_urls

EVENTS_DEADLINE = 20.0  # seconds for the events of what was acknowledged to be in the stream
STREAM, SUBJECT = "ROOM_EVENTS", "rooms.events.{room}"


async def message_event_seqs(stack: Stack, room: str, acked: list[int]) -> tuple[list[int], int]:
    """The seqs of the room's ``message`` events in stream order, read to the end once every acknowledged
    seq is among them (or the deadline passed: the caller's assertion says what is missing); and the
    stream's replicas."""
    nc = await nats.connect(servers=server_urls(stack.bus_url), connect_timeout=2)
    durable = f"check-{room}"
    deadline = time.monotonic() + EVENTS_DEADLINE
    try:
        js = nc.jetstream()
        while True:  # just healed, a node may answer 503 "JetStream temporarily unavailable": again
            try:
                replicas = (await js.stream_info(STREAM)).config.num_replicas or 1
                sub = await js.pull_subscribe(SUBJECT.format(room=room), durable=durable, stream=STREAM)
                break
            except (ServiceUnavailableError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        seqs: list[int] = []
        while time.monotonic() < deadline:
            try:
                batch = await sub.fetch(200, timeout=1.0)
            except TimeoutError:  # nothing more for now: done once every acknowledged seq is there
                if set(acked) <= set(seqs):
                    break
                continue
            except ServiceUnavailableError:
                await asyncio.sleep(0.5)
                continue
            for msg in batch:
                event = json.loads(msg.data)
                if event["type"] == "message":
                    seqs.append(event["seq"])
                await msg.ack()
        await js.delete_consumer(STREAM, durable)
        return seqs, replicas
    finally:
        await nc.close()


async def events_of(stack: Stack, room: str, result: dict) -> dict:
    """What the stream holds of the acknowledged messages of ``result`` (run_traffic's)."""
    acked = result["acked_seqs"]
    seqs, replicas = await message_event_seqs(stack, room, acked)
    missing = sorted(set(acked) - set(seqs))
    doubled = sorted({seq for seq in seqs if seqs.count(seq) > 1})
    return {"messages": len(seqs), "missing": missing, "doubled": doubled, "replicas": replicas}


async def assert_events_recorded_once(stack: Stack, room: str, result: dict) -> None:
    result["events"] = await events_of(stack, room, result)
    assert_events_once(result)


def assert_events_once(result: dict) -> None:
    events = result["events"]
    assert events["replicas"] == 3, events  # R3, as the rooms stream on this cluster
    assert events["messages"] >= len(result["acked_seqs"]) > 0, events
    assert not events["missing"] and not events["doubled"], events

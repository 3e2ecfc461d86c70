"""What travels on a room's NATS subject, and the JSON envelopes ``?format=json`` clients receive.

On the subject (one JSON object per NATS message, ``origin`` is the publishing replica):
- ``message``: room, sender, text, ts (server time, seconds since the epoch), seq, origin. JSON clients
  get these bytes exactly as published, so a message is encoded once, by the replica that received it.
- ``join`` / ``leave``: room, member, ts, seq, origin, local (that replica's member count after it).
- ``count``: room, seq, origin, local: a replica's heartbeat, and its answer to a join from a replica
  it did not know yet. Never forwarded as such; clients get ``members`` when the room's total changes.

``seq`` is the room's Lamport clock: a replica stamps what it publishes with one more than the highest
seq it has sent or seen in that room. Every member of every replica sees the same seq for a message,
seqs from one sender only grow, and a message sent after seeing another has a higher seq; two replicas
publishing at the same moment may use the same seq ((seq, origin) is unique and orders them).
"""

import json
import time
from typing import Any

MESSAGE = "message"
JOIN = "join"
LEAVE = "leave"
COUNT = "count"
WELCOME = "welcome"
MEMBERS = "members"


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def message(room: str, sender: str, text: str, seq: int, origin: str) -> bytes:
    event = {"type": MESSAGE, "room": room, "sender": sender, "text": text, "ts": time.time(), "seq": seq}
    event["origin"] = origin
    return encode(event)


def membership(kind: str, room: str, member: str, seq: int, origin: str, local: int) -> bytes:
    event = {"type": kind, "room": room, "member": member, "ts": time.time(), "seq": seq, "origin": origin}
    event["local"] = local
    return encode(event)


def count(room: str, seq: int, origin: str, local: int) -> bytes:
    return encode({"type": COUNT, "room": room, "seq": seq, "origin": origin, "local": local})


def decode(payload: bytes) -> dict[str, Any]:
    """A subject message as a dict; ValueError for anything that is not one of ours."""
    event = json.loads(payload)
    if not isinstance(event, dict) or event.get("type") not in (MESSAGE, JOIN, LEAVE, COUNT):
        raise ValueError("not a rooms event")
    if not isinstance(event.get("seq"), int) or not isinstance(event.get("origin"), str):
        raise ValueError("rooms event without seq or origin")
    return event


def for_client(event: dict[str, Any], total: int) -> str:
    """A join or leave as JSON clients see it: the replica's bookkeeping replaced by the room's total."""
    return json.dumps(
        {
            "type": event["type"],
            "room": event.get("room"),
            "member": event.get("member"),
            "ts": event.get("ts"),
            "seq": event["seq"],
            "count": total,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def members(room: str, total: int) -> str:
    return json.dumps({"type": MEMBERS, "room": room, "count": total}, separators=(",", ":"))


def welcome(room: str, member: str, total: int, seq: int) -> str:
    return json.dumps(
        {"type": WELCOME, "room": room, "you": member, "count": total, "seq": seq}, separators=(",", ":")
    )

"""What rooms store and publish, and the JSON envelopes ``?format=json`` clients receive.

Stored (the room's history, one JetStream message per room message, on ``<prefix>.msg.<room>``):
- ``message``: room, sender, text, ts (server time, seconds since the epoch), origin (the replica that
  received it), when the sender gave one its ``id``, and who sent it when known: ``user`` (an identity
  token's ``sub``) and ``name`` (the token's name, a display name, or the publish API's name). The
  stream's sequence is not inside (it is given when stored): each replica splices ``"seq":N`` in once,
  so JSON clients get ``{...,"origin":...,"seq":N}``, encoded once per replica, the same bytes for
  every local member.

Published on core NATS (ephemeral, on the room's subject ``<prefix>.<room>``, with the republished
stored messages):
- ``join`` / ``leave``: room, member, ts, origin, local (that replica's member count after it), and the
  member's ``user`` and ``name`` when known;
- ``count``: room, origin, local: a replica's heartbeat. Never forwarded as such; clients get
  ``members`` when the room's total changes;
- ``diff``: room, origin, local, and the members that joined and left on that replica since its last
  diff (``joined``/``left`` lists of {member, user, name}, absent when there were too many to list): a
  replica's joins and leaves in a room above ``PRESENCE_EVENTS_MAX_MEMBERS``, one per
  ``PRESENCE_DIFF_INTERVAL`` (``docs/explanation/presence.md``). Clients get them merged in ``members``.
Presence events carry no ``seq``: clients resume on message seqs only.
"""

import json
import time
from typing import Any

MESSAGE = "message"
JOIN = "join"
LEAVE = "leave"
COUNT = "count"
DIFF = "diff"
WELCOME = "welcome"
MEMBERS = "members"
ACK = "ack"
ERROR = "error"
REFRESHED = "refreshed"


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _who(event: dict[str, Any], user: str | None, name: str | None) -> dict[str, Any]:
    """``user`` and ``name`` added when known (absent, never null, otherwise)."""
    if user is not None:
        event["user"] = user
    if name is not None:
        event["name"] = name
    return event


def message(
    room: str,
    sender: str,
    text: str,
    origin: str,
    msg_id: str | None = None,
    *,
    user: str | None = None,
    name: str | None = None,
) -> bytes:
    """The stored body of one message (no seq yet)."""
    event: dict[str, Any] = {"type": MESSAGE, "room": room, "sender": sender, "text": text}
    event["ts"] = time.time()
    event["origin"] = origin
    if msg_id is not None:
        event["id"] = msg_id
    return encode(_who(event, user, name))


def with_seq(stored: bytes, seq: int) -> bytes:
    """A stored body as JSON clients get it: ``"seq"`` spliced in before the closing brace."""
    return b'%s,"seq":%d}' % (stored[:-1], seq)


def stored_text(stored: bytes) -> str | None:
    """The text of a stored message; None for anything that is not one of ours."""
    try:
        event = json.loads(stored)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("type") != MESSAGE or not isinstance(event.get("text"), str):
        return None
    return event["text"]


def membership(
    kind: str, room: str, member: str, origin: str, local: int, user: str | None, name: str | None
) -> bytes:
    event = {"type": kind, "room": room, "member": member, "ts": time.time(), "origin": origin}
    event["local"] = local
    return encode(_who(event, user, name))


def count(room: str, origin: str, local: int) -> bytes:
    return encode({"type": COUNT, "room": room, "origin": origin, "local": local})


def decode(payload: bytes) -> dict[str, Any]:
    """A presence event as a dict; ValueError for anything that is not one of ours."""
    event = json.loads(payload)
    if not isinstance(event, dict) or event.get("type") not in (JOIN, LEAVE, COUNT, DIFF):
        raise ValueError("not a rooms presence event")
    if not isinstance(event.get("origin"), str):
        raise ValueError("rooms event without origin")
    return event


def for_client(event: dict[str, Any], total: int) -> str:
    """A join or leave as JSON clients see it: the replica's bookkeeping replaced by the room's total."""
    shown = {
        "type": event["type"],
        "room": event.get("room"),
        "member": event.get("member"),
        "ts": event.get("ts"),
        "count": total,
    }
    user, name = event.get("user"), event.get("name")
    shown = _who(shown, user if isinstance(user, str) else None, name if isinstance(name, str) else None)
    return json.dumps(shown, separators=(",", ":"), ensure_ascii=False)


def diff(room: str, origin: str, local: int, lists: tuple[list[Any], list[Any]] | None) -> bytes:
    event: dict[str, Any] = {"type": DIFF, "room": room, "origin": origin, "local": local}
    if lists is not None:
        event["joined"], event["left"] = lists
    return encode(event)


def members(room: str, total: int, lists: tuple[list[Any], list[Any]] | None = None) -> str:
    """The room's total; with ``lists``, the members that joined and left since the last ``members``
    (a room above ``PRESENCE_EVENTS_MAX_MEMBERS``); without, the count alone."""
    event: dict[str, Any] = {"type": MEMBERS, "room": room, "count": total}
    if lists is not None:
        event["joined"], event["left"] = lists
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def welcome(
    room: str,
    member: str,
    total: int,
    seq: int,
    epoch: str,
    recovered: bool | None,
    user: str | None = None,
    name: str | None = None,
    ref: str | int | None = None,
) -> str:
    event: dict[str, Any] = {"type": WELCOME, "room": room, "you": member, "count": total, "seq": seq}
    if ref is not None:  # a ``/ws`` join's ref: the welcome answers that frame
        event["ref"] = ref
    event["epoch"] = epoch
    if recovered is not None:
        event["recovered"] = recovered
    return json.dumps(_who(event, user, name), separators=(",", ":"), ensure_ascii=False)


def ack(msg_id: str, seq: int, room: str | None = None) -> str:
    """``{"type":"ack","id":I,"seq":S}``; on ``/ws`` (``room`` given) ``{"type":"ack","room":R,...}``."""
    event: dict[str, Any] = {"type": ACK, "room": room} if room is not None else {"type": ACK}
    event["id"], event["seq"] = msg_id, seq
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def error(msg_id: str | None, code: int, reason: str) -> str:
    """One frame refused without closing: ``{"type":"error","id":I,"code":C,"reason":R}`` (no ``id``
    when the frame had none); ``code`` from the close-code table or an app's 4000-4999."""
    event: dict[str, Any] = {"type": ERROR}
    if msg_id is not None:
        event["id"] = msg_id
    event["code"] = code
    event["reason"] = reason
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def refreshed(exp: float | None) -> str:
    return json.dumps({"type": REFRESHED, "exp": exp}, separators=(",", ":"))


def parse_refresh(text: str) -> str | None:
    """The token of a ``{"type":"refresh","token":T}`` frame from a JSON member; None for anything else
    (cheap for every other frame: only one that mentions "refresh" is parsed)."""
    if not text.startswith("{") or '"refresh"' not in text:
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("type") != "refresh" or "text" in event:
        return None
    token = event.get("token")
    return token if isinstance(token, str) else ""


def parse_send(text: str) -> tuple[str, str | None]:
    """What a JSON-format client sent: ``{"text": ..., "id": ...}`` gives (text, id); any other frame is
    the text itself, without an id."""
    if not text.startswith("{"):
        return text, None
    try:
        event = json.loads(text)
    except ValueError:
        return text, None
    if not isinstance(event, dict) or not isinstance(event.get("text"), str):
        return text, None
    msg_id = event.get("id")
    if msg_id is not None and not (
        isinstance(msg_id, str) and 0 < len(msg_id) <= 128 and msg_id.isprintable()
    ):
        raise ValueError("id must be a printable string of at most 128 characters")
    return event["text"], msg_id

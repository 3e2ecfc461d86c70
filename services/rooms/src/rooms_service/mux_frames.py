"""Reading and writing the frames of ``/ws`` (``mux.py``): each field of a client frame checked, a bad one
a ``Refused`` 1008 for that frame alone, and the server's frames encoded."""

import json
from typing import Any

from realtime.close_codes import CloseCode

from rooms_service.membership import Resume
from rooms_service.refused import Refused
from rooms_service.room_ids import InvalidRoomId, validate_room_id

MAX_REF = 64  # characters of a string ``ref``
MAX_ID = 128  # characters of a message ``id`` (as on /ws/{room_id})


def room(frame: dict[str, Any], max_length: int) -> str:
    room_id = frame.get("room")
    if not isinstance(room_id, str):
        raise Refused(CloseCode.POLICY_VIOLATION, "invalid room id")
    try:
        validate_room_id(room_id, max_length)
    except InvalidRoomId:
        raise Refused(CloseCode.POLICY_VIOLATION, "invalid room id") from None
    return room_id


def valid_ref(ref: object) -> bool:
    if isinstance(ref, bool):
        return False
    if isinstance(ref, int):
        return abs(ref) < 2**53
    return isinstance(ref, str) and len(ref) <= MAX_REF


def ref(frame: dict[str, Any]) -> None:
    if "ref" in frame and not valid_ref(frame["ref"]):
        raise Refused(
            CloseCode.POLICY_VIOLATION, f"ref must be a string of at most {MAX_REF} characters or an integer"
        )


def _count(frame: dict[str, Any], key: str, digits: int) -> int | None:
    value = frame.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**digits:
        raise Refused(CloseCode.POLICY_VIOLATION, f"{key} must be a non-negative integer")
    return value


def resume(frame: dict[str, Any], most: int) -> Resume:
    """A join's ``since``/``epoch``/``history``, checked as ``/ws/{room_id}`` checks its query."""
    ref(frame)
    since = _count(frame, "since", 20)
    history = _count(frame, "history", 9)
    epoch = frame.get("epoch")
    if epoch is not None and not (isinstance(epoch, str) and len(epoch) <= 64):
        raise Refused(CloseCode.POLICY_VIOLATION, "epoch must be a string of at most 64 characters")
    return Resume(since=since, epoch=epoch, history=min(history, most) if history is not None else 0)


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def msg_id(frame: dict[str, Any]) -> str | None:
    """A send's ``id``: a printable string of at most ``MAX_ID`` characters, or none."""
    value = frame.get("id")
    if value is not None and not (
        isinstance(value, str) and 0 < len(value) <= MAX_ID and value.isprintable()
    ):
        raise Refused(CloseCode.POLICY_VIOLATION, "id must be a printable string of at most 128 characters")
    return value


def error(frame: dict[str, Any], refused: Refused, room_id_max_length: int) -> str:
    """The ``error`` frame answering ``frame``: its room, ref or id when it had them (and valid)."""
    answer: dict[str, Any] = {"type": "error"}
    room_id = frame.get("room")
    if isinstance(room_id, str) and len(room_id) <= room_id_max_length:
        answer["room"] = room_id
    given_ref = frame.get("ref")
    if frame.get("type") in ("join", "leave") and valid_ref(given_ref):
        answer["ref"] = given_ref
    given_id = frame.get("id")
    if frame.get("type") == "send" and isinstance(given_id, str) and len(given_id) <= MAX_ID:
        answer["id"] = given_id
    answer["code"], answer["reason"] = int(refused.code), refused.reason
    return encode(answer)


def left(frame: dict[str, Any], room_id: str) -> str:
    """The ``left`` answering a leave, with its ``ref``."""
    answer: dict[str, Any] = {"type": "left", "room": room_id}
    if "ref" in frame:
        answer["ref"] = frame["ref"]
    return encode(answer)

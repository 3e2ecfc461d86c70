"""Room ids: a short safe alphabet, checked before an id ever becomes a NATS subject token."""

from realtime.bus import is_safe_token


class InvalidRoomId(ValueError):
    """The id is empty, too long or has a character outside [A-Za-z0-9_-]."""


def validate_room_id(room_id: str, max_length: int) -> str:
    if not 0 < len(room_id) <= max_length or not is_safe_token(room_id):
        raise InvalidRoomId("invalid room id")
    return room_id


def room_subject(prefix: str, room_id: str) -> str:
    """The one subject a room's traffic travels on; ``room_id`` must have been validated."""
    if not is_safe_token(room_id):
        raise InvalidRoomId("invalid room id")
    return f"{prefix}.{room_id}"

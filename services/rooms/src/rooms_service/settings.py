"""The rooms service's settings (pydantic-settings): passwords, room ids, limits, presence."""

import json
from pathlib import Path

from pydantic import Field, field_validator
from realtime.settings import ServiceSettings


class RoomsSettings(ServiceSettings):
    service_name: str = "rooms"
    port: int = 8201

    # Room id -> password (plain text or a salted hash, see guard.py); a room not listed is open.
    room_passwords: dict[str, str] = {}
    # A JSON file of the same shape (a mounted Kubernetes Secret); its entries win over ROOM_PASSWORDS.
    room_passwords_file: Path | None = None

    room_id_max_length: int = Field(default=64, ge=1, le=128)

    # Failed password attempts per (client address, room) inside the window before every further
    # attempt is refused without checking, until the window has passed.
    auth_max_failures: int = Field(default=5, ge=1)
    auth_failure_window: float = Field(default=60.0, gt=0)

    # Per connection: a token bucket of ``message_rate`` messages a second with ``message_burst`` tokens.
    message_rate: float = Field(default=20.0, gt=0)
    message_burst: int = Field(default=40, ge=1)
    # Bytes a member may leave unread in its outgoing buffer before it is cut off as a slow consumer.
    send_buffer_limit: int = Field(default=1024 * 1024, ge=64 * 1024)

    # Events from NATS a replica may hold for one room before it drops (and logs) the newest: a bound on
    # memory when a replica cannot keep up with a room (with WS_MAX_SIZE 64 KiB: at most 64 MiB a room).
    room_queue_limit: int = Field(default=1024, ge=16)

    subject_prefix: str = "rooms"
    # Seconds between presence heartbeats (each replica's member count per room); a replica that has
    # not been heard for three intervals no longer counts.
    presence_interval: float = Field(default=10.0, gt=0)

    @field_validator("subject_prefix")
    @classmethod
    def _plain_prefix(cls, value: str) -> str:
        if not value or any(c in value for c in " *>\t\r\n") or value.startswith(".") or value.endswith("."):
            raise ValueError("subject_prefix must be a plain NATS subject without wildcards")
        return value

    def passwords(self) -> dict[str, str]:
        """ROOM_PASSWORDS merged with ROOM_PASSWORDS_FILE (read at start: restart for a rotated Secret)."""
        merged = dict(self.room_passwords)
        if self.room_passwords_file is not None:
            data = json.loads(self.room_passwords_file.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in data.items()
            ):
                raise ValueError(f"{self.room_passwords_file} must hold a JSON object of room id -> password")
            merged.update(data)
        return merged

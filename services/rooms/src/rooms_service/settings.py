"""The rooms service's settings (pydantic-settings): passwords, API keys, room ids, limits, presence."""

import json
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict
from realtime.bus import is_safe_token
from realtime.settings import ServiceSettings


class RoomsSettings(ServiceSettings):
    # A malformed value is refused without echoing it: it may be a password or an API key.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    service_name: str = "rooms"
    port: int = 8201

    # Room id -> password (plain text or a salted hash, see guard.py); a room not listed is open.
    room_passwords: dict[str, str] = {}
    # A JSON file of the same shape (a mounted Kubernetes Secret); its entries win over ROOM_PASSWORDS.
    room_passwords_file: Path | None = None

    room_id_max_length: int = Field(default=64, ge=1, le=128)

    # Identity tokens (tokens.py): HS256 JWTs checked with TOKEN_SECRET (at least 32 bytes), RS256 or
    # ES256 ones with TOKEN_PUBLIC_KEY (PEM; or TOKEN_PUBLIC_KEY_FILE). Neither set: tokens are refused.
    token_secret: SecretStr | None = None
    token_public_key: str | None = None
    token_public_key_file: Path | None = None
    # When set, a token's ``aud`` / ``iss`` must be this.
    token_audience: str | None = None
    token_issuer: str | None = None
    # Seconds of clock difference allowed when checking ``exp`` (and ``nbf``/``iat``).
    token_leeway: float = Field(default=0.0, ge=0, le=300)
    # Members without a token may pick a display name (?name=, unverified: shown without ``user``).
    room_display_names: bool = True

    # Keys of the HTTP API (api.py, ``Authorization: Bearer <key>``): a JSON list of plain keys or salted
    # hashes (as passwords); none: the API answers 401 to everyone. Also from a JSON file (a Secret).
    publish_api_keys: list[str] = []
    publish_api_keys_file: Path | None = None
    # Per key and per replica: a token bucket of ``publish_rate`` requests a second, ``publish_burst`` saved.
    publish_rate: float = Field(default=200.0, gt=0)
    publish_burst: int = Field(default=400, ge=1)

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
    # not been heard for 1.5 intervals no longer counts (gone within 2 intervals of its death).
    presence_interval: float = Field(default=10.0, gt=0)
    # Seconds a join waits for the other replicas' member counts before it greets with what it has.
    presence_query_timeout: float = Field(default=0.5, gt=0, le=5)

    # The room history (a JetStream stream, file storage): messages kept per room, and for how long.
    room_history_size: int = Field(default=1000, ge=1)
    room_history_ttl: float = Field(default=86_400.0, gt=0)
    # The most messages ``?history=N`` may ask for.
    room_history_max: int = Field(default=100, ge=0)
    # Seconds a message id is remembered: a resend with the same id inside it is stored once.
    room_dedup_window: float = Field(default=120.0, gt=0)
    # Copies of the history (JetStream replicas): 1 on one NATS server, 3 on a 3-node cluster.
    room_stream_replicas: int = Field(default=1, ge=1, le=5)
    room_stream_name: str = "ROOMS"
    # Seconds a send may keep retrying to store its message (NATS restarting) before the sender is told
    # 1013 "messaging unavailable" (it resends after reconnecting: the message id makes that safe).
    room_store_timeout: float = Field(default=10.0, gt=0)
    # Seconds a member cut off as a slow consumer (1013) keeps its connection to read its backlog and
    # the close frame before the connection is dropped.
    slow_consumer_close_deadline: float = Field(default=60.0, gt=0)

    # The app's hooks (hooks.py): asked before a member is admitted and before a message is stored.
    join_hook_url: str | None = Field(
        default=None,
        description="URL the rooms service POSTs each join to (after the password or token check); the app "
        "answers allow (optionally with user and name) or deny with a close code 4000-4999. "
        "Unset: no join hook",
    )
    publish_hook_url: str | None = Field(
        default=None,
        description="URL the rooms service POSTs each message to before it is stored; the app answers allow, "
        "allow with a replacement text, or deny. Unset: no publish hook",
    )
    publish_hook_api: bool = Field(
        default=True, description="whether messages from the publish API also go through the publish hook"
    )
    hook_timeout: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="seconds a hook call may take (waiting for a free slot included) before it counts "
        "as failed",
    )
    join_hook_fail_open: bool = Field(
        default=False,
        description="admit a member when the join hook fails (timeout, non-200, unreadable answer); false: "
        "the member is refused with 1013 (try again later)",
    )
    hook_secret: SecretStr | None = Field(
        default=None,
        description="Standard Webhooks secret (whsec_ followed by the base64 of 24 to 64 random bytes) that "
        "signs every hook request (webhook-signature); unset: requests are sent unsigned",
    )
    hook_concurrency: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="hook calls one replica makes at once, per hook (join, publish); more wait for a slot "
        "within HOOK_TIMEOUT",
    )

    @field_validator("join_hook_url", "publish_hook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("a hook URL must start with http:// or https://")
        return value

    @field_validator("subject_prefix")
    @classmethod
    def _plain_prefix(cls, value: str) -> str:
        if not value or any(c in value for c in " *>\t\r\n") or value.startswith(".") or value.endswith("."):
            raise ValueError("subject_prefix must be a plain NATS subject without wildcards")
        return value

    @field_validator("room_stream_name")
    @classmethod
    def _plain_stream_name(cls, value: str) -> str:
        if not is_safe_token(value):
            raise ValueError("room_stream_name must be letters, digits, '_' or '-'")
        return value

    def public_key(self) -> str | None:
        """TOKEN_PUBLIC_KEY, or the PEM in TOKEN_PUBLIC_KEY_FILE (read at start)."""
        if self.token_public_key_file is not None:
            return self.token_public_key_file.read_text(encoding="ascii")
        return self.token_public_key

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

    def api_keys(self) -> list[str]:
        """PUBLISH_API_KEYS and then PUBLISH_API_KEYS_FILE's (read at start: restart for a rotated Secret)."""
        keys = list(self.publish_api_keys)
        if self.publish_api_keys_file is not None:
            data = json.loads(self.publish_api_keys_file.read_text(encoding="utf-8"))
            if not isinstance(data, list) or not all(isinstance(k, str) for k in data):
                raise ValueError(f"{self.publish_api_keys_file} must hold a JSON list of API keys")
            keys += data
        return keys

"""The rooms service's settings (pydantic-settings): room ids, limits, presence, history, events and hooks;
passwords, tokens and API keys are ``access_settings.py``'s."""

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict
from realtime.bus import is_safe_token
from realtime.settings import ServiceSettings

from rooms_service.access_settings import AccessSettings


class RoomsSettings(AccessSettings, ServiceSettings):
    """Everything the rooms service reads; who may come in is ``AccessSettings`` (``access_settings.py``)."""

    # A malformed value is refused without echoing it: it may be a password or an API key.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    service_name: str = "rooms"
    """Name in logs, in NATS connection names and in pulse samples."""
    port: int = 8201
    """Port to listen on."""

    room_id_max_length: int = Field(default=64, ge=1, le=128)
    """Longest room id (ids are `[A-Za-z0-9_-]`); longer closes with 1008."""

    # Per connection: a token bucket of ``message_rate`` messages a second with ``message_burst`` tokens.
    message_rate: float = Field(default=20.0, gt=0)
    """Messages a second one connection may send (token bucket); over it closes with 1008."""
    message_burst: int = Field(default=40, ge=1)
    """Messages a connection may send at once before the rate applies."""
    # Bytes a member may leave unread in its outgoing buffer before it is cut off as a slow consumer.
    send_buffer_limit: int = Field(default=1024 * 1024, ge=64 * 1024)
    """Unread outgoing bytes per connection before it is cut off as a slow consumer (1013); at least 65536."""

    # Events from NATS a replica may hold for one room before it drops (and logs) the newest: a bound on
    # memory when a replica cannot keep up with a room (with WS_MAX_SIZE 64 KiB: at most 64 MiB a room).
    room_queue_limit: int = Field(default=1024, ge=16)
    """Events a replica may hold for one room before it drops the newest (logged; stored messages dropped
    here are filled from the store).
    """

    subject_prefix: str = "rooms"
    """NATS subject prefix: a room's subject is `<prefix>.<room_id>`, its stored messages
    `<prefix>.msg.<room_id>`.
    """
    # Seconds between presence heartbeats (each replica's member count per room); a replica that has
    # not been heard for 1.5 intervals no longer counts (gone within 2 intervals of its death).
    presence_interval: float = Field(default=10.0, gt=0)
    """Seconds between presence heartbeats; a replica silent for 1.5 intervals stops counting (gone within
    2).
    """
    # Seconds a join waits for the other replicas' member counts before it greets with what it has.
    presence_query_timeout: float = Field(default=0.5, gt=0, le=5)
    """Seconds a join into a room new on its replica waits for the other replicas' counts."""
    room_joins_in_flight: int = Field(default=200, ge=1)
    """The most joins this replica works on at once (admission, welcome, catch-up); the others wait for
    their turn.
    """
    room_join_wait: float = Field(default=2.5, gt=0)
    """Seconds a join may wait for its turn, counted from when the gateway sent it (`X-Request-Start`),
    before it is refused with 1013 `server busy` (clients back off and come back). With a join's own
    bounded work (at most 2 s for its room's bus confirmation, PRESENCE_QUERY_TIMEOUT for the census) it
    stays within the gateway's UPSTREAM_HANDSHAKE_TIMEOUT (5 s), so the client gets the replica's answer,
    not the gateway's timeout.
    """
    presence_events_max_members: int = Field(default=100, ge=0)
    """The most members (across all replicas) a room may have for its members to get one `join` or `leave`
    event per member; above it they get a `members` event per PRESENCE_DIFF_INTERVAL instead (the count,
    who joined and who left), so a join costs the same in a room of 10 or of 10 000.
    """
    presence_diff_interval: float = Field(default=1.0, gt=0, le=60)
    """Seconds between two `members` events of a room above PRESENCE_EVENTS_MAX_MEMBERS (sent only when
    something changed); also how often each replica announces its joins and leaves there, as one diff.
    """
    presence_diff_max_listed: int = Field(default=100, ge=0)
    """The most members one `members` event lists as joined (and as left); when more joined or left in one
    interval, the event carries the room's count only.
    """

    # The room history (a JetStream stream, file storage): messages kept per room, and for how long.
    room_history_size: int = Field(default=1000, ge=1)
    """Messages kept per room (JetStream `max_msgs_per_subject`); a `since` older than that gets `recovered:
    false`.
    """
    room_history_ttl: float = Field(default=86_400.0, gt=0)
    """Seconds a message is kept (JetStream `max_age`)."""
    # The most messages ``?history=N`` may ask for.
    room_history_max: int = Field(default=100, ge=0)
    """The most messages `?history=N` gives."""
    # Seconds a message id is remembered: a resend with the same id inside it is stored once.
    room_dedup_window: float = Field(default=120.0, gt=0)
    """Seconds a message id is remembered: a resend inside it is stored once (JetStream `duplicate_window`).
    """
    # Copies of the history (JetStream replicas): 1 on one NATS server, 3 on a 3-node cluster.
    room_stream_replicas: int = Field(default=1, ge=1, le=5)
    """Copies of the history (JetStream replicas): 1 on one server, 3 on the prod overlay's 3-node cluster."""
    room_stream_name: str = "ROOMS"
    """The JetStream stream's name."""
    # Seconds a send may keep retrying to store its message (NATS restarting) before the sender is told
    # 1013 "messaging unavailable" (it resends after reconnecting: the message id makes that safe).
    room_store_timeout: float = Field(default=10.0, gt=0)
    """Seconds a send retries storing while NATS is away before the sender gets 1013."""
    # Seconds a member cut off as a slow consumer (1013) keeps its connection to read its backlog and
    # the close frame before the connection is dropped.
    slow_consumer_close_deadline: float = Field(default=60.0, gt=0)
    """Seconds a member cut off as a slow consumer keeps its connection to read its backlog and the 1013
    before it is dropped; also how long a catching-up member may take to read its backlog.
    """
    # The multiplexed /ws (one connection, many rooms).
    max_rooms_per_connection: int = Field(
        default=128,
        ge=1,
        le=4096,
        description="Rooms one /ws connection may be in at once; the next join gets an error frame 4029.",
    )
    connection_join_rate: float = Field(
        default=10.0,
        gt=0,
        description="Joins per second one /ws connection may make (refused ones count); over it, error 4029.",
    )
    connection_join_burst: int = Field(
        default=160,
        ge=1,
        description="Joins a /ws connection may make at once: above MAX_ROOMS_PER_CONNECTION so a client "
        "that reconnects can rejoin every room it had in one go.",
    )

    # Room events (events.py) on their own stream, and webhooks delivering them (webhooks.py).
    events_stream_name: str = "ROOM_EVENTS"
    """The JetStream stream of room events (`joined`, `left`, `occupied`, `vacated`, `message`), subjects
    `<prefix>.events.<room_id>`; needs a NATS bus (with `memory://` no events are recorded).
    """
    events_retention: float = Field(default=86_400.0, gt=0)
    """Seconds an event is kept in the events stream (JetStream `max_age`): how far an app can replay, and
    how long an undelivered webhook is retried.
    """
    events_webhook_url: str | None = None
    """When set, events are POSTed there in signed batches (Standard Webhooks) from one durable consumer
    shared by all replicas; never logged.
    """
    events_webhook_types: str = "occupied,vacated,joined,left"
    """Comma-separated event types the webhook gets (`message` is opt-in)."""
    events_webhook_batch: int = Field(default=100, ge=1, le=1000)
    """Most events in one webhook request."""
    events_webhook_secret: SecretStr | None = None
    """Key signing the webhook requests: `whsec_` + base64 of 24 to 64 bytes; unset: unsigned."""
    events_webhook_timeout: float = Field(default=10.0, gt=0)
    """Seconds a webhook request may take before it counts as failed (and is retried)."""
    events_webhook_retry_limit: float = Field(default=60.0, gt=0)
    """Longest pause, in seconds, between retries of a failing webhook request (exponential backoff)."""
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

"""The bus interface every backend implements, and the subscription both hand out."""

import asyncio
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from realtime.lograte import worth_logging
from realtime.tasks import cancel_and_wait

logger = logging.getLogger(__name__)


class BusUnavailable(RuntimeError):
    """Publishing is impossible right now (never connected, or closed)."""


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    payload: bytes
    # A stored message republished by its stream to subscribers (see StreamSpec.republish_to): its stream
    # sequence and the previous sequence stored on the same subject (0: the first). 0/0 for plain messages.
    seq: int = 0
    last_seq: int = 0


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A stream of stored messages (NATS JetStream; a list in memory://), created or updated at start."""

    name: str
    subjects: str  # e.g. "rooms.msg.*": what is stored
    # Once stored, each message is also published here (NATS subject-mapping syntax, e.g.
    # "rooms.{{wildcard(1)}}"), with ``seq`` and ``last_seq``: subscribers see stored messages live.
    republish_to: str | None = None
    max_per_subject: int = 1000
    max_age: float = 86_400.0  # seconds
    duplicate_window: float = 120.0  # seconds a message id is remembered
    replicas: int = 1
    max_msg_size: int = -1


@dataclass(frozen=True, slots=True)
class Stored:
    seq: int
    subject: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class StoreAck:
    seq: int
    duplicate: bool  # the message id was stored before: ``seq`` is the first one's


# What one subject token built from outside data may hold: letters, digits, '_' and '-'. No '.', '*',
# '>' or whitespace, so a name from a client or a config file can never widen a subscription.
SAFE_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9_-]")


def is_safe_token(name: str) -> bool:
    return SAFE_TOKEN.fullmatch(name) is not None


def safe_token(name: str, max_length: int = 64) -> str:
    """``name`` made into a safe subject token: every other character becomes '_'."""
    return _UNSAFE_CHAR.sub("_", name)[:max_length] or "_"


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` is one or more tokens."""
    p_tokens, s_tokens = pattern.split("."), subject.split(".")
    for i, token in enumerate(p_tokens):
        if token == ">":
            return len(s_tokens) > i
        if i >= len(s_tokens) or (token != "*" and token != s_tokens[i]):
            return False
    return len(p_tokens) == len(s_tokens)


# What ``Bus.listen`` calls for each message, one at a time, in the order they arrived.
Handler = Callable[["Message"], Awaitable[None]]


class Subscription:
    """An async iterator of messages with a bounded queue: a stalled reader drops, never grows.

    A subscription made by ``Bus.listen`` has a ``handler`` instead of a reader: the backend calls it for
    each message from the one queue it keeps anyway (nats-py's own, for NATS; this one, for memory://)."""

    def __init__(self, subject: str, max_pending: int, handler: Handler | None = None) -> None:
        self.subject = subject
        self.max_pending = max_pending
        self.handler = handler
        self.dropped = 0
        self._queue: asyncio.Queue[Message] = asyncio.Queue(max_pending)

    def deliver(self, message: Message) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.missed()

    def missed(self) -> None:
        """One message dropped because the reader is not keeping up (counted, logged now and then)."""
        self.dropped += 1
        if worth_logging(self.dropped):
            logger.warning("subscription %s is not keeping up: %d dropped", self.subject, self.dropped)

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Message:
        return await self._queue.get()


class Bus(ABC):
    """publish(subject, payload); ``async with bus.subscribe(subject) as sub: async for msg in sub``."""

    def __init__(self) -> None:
        self._ready_listeners: list[Callable[[bool], None]] = []

    @property
    @abstractmethod
    def ready(self) -> bool:
        """True while publishing and receiving work."""

    @abstractmethod
    async def connect(self) -> None:
        """Start connecting; returns without waiting for a server that is not there yet."""

    @abstractmethod
    async def disconnect(self) -> None:
        """Deliver what is in flight, then close."""

    @abstractmethod
    async def publish(self, subject: str, payload: bytes) -> None: ...

    @abstractmethod
    async def _add(self, subscription: Subscription) -> None: ...

    # --- stored messages (a stream): raise BusUnavailable (or the backend's error) when impossible ---
    @abstractmethod
    async def ensure_stream(self, spec: StreamSpec) -> str:
        """Create the stream, or update it to ``spec``; returns its epoch, a name for this stream's
        history that changes when the stream is recreated (its sequence numbers then start again)."""

    @abstractmethod
    async def store(self, stream: str, subject: str, payload: bytes, msg_id: str | None = None) -> StoreAck:
        """Store one message; a ``msg_id`` seen within the duplicate window is stored once."""

    @abstractmethod
    async def last_stored(self, stream: str, subject: str) -> int:
        """The sequence of the newest message stored on ``subject`` (0: none)."""

    @abstractmethod
    async def stored_at(self, stream: str, seq: int) -> Stored | None:
        """The stored message with sequence ``seq``, or None if it is gone (or never was)."""

    @abstractmethod
    async def stored_after(self, stream: str, subject: str, after: int, limit: int) -> list[Stored]:
        """Up to ``limit`` messages stored on ``subject`` with a sequence above ``after``, oldest first."""

    async def purge(self, stream: str, subject: str) -> None:
        """Remove every message stored on ``subject`` (the stream's sequence goes on)."""
        raise BusUnavailable(f"{type(self).__name__} cannot purge")

    @abstractmethod
    async def _remove(self, subscription: Subscription) -> None: ...

    def on_ready_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(ready)`` whenever readiness flips (lost or regained the server)."""
        self._ready_listeners.append(listener)

    def _ready_changed(self, ready: bool) -> None:
        for listener in self._ready_listeners:
            listener(ready)

    @asynccontextmanager
    async def subscribe(self, subject: str, max_pending: int = 4096) -> AsyncIterator[Subscription]:
        """Receive every message published on ``subject`` (wildcards allowed) while the block runs."""
        subscription = Subscription(subject, max_pending)
        await self._add(subscription)
        try:
            yield subscription
        finally:
            await self._remove(subscription)

    # True when the backend calls a ``listen`` handler itself, from the queue it keeps anyway.
    calls_handlers = False

    @asynccontextmanager
    async def listen(
        self, subject: str, handler: Handler, max_pending: int = 4096
    ) -> AsyncIterator[Subscription]:
        """``await handler(message)`` for every message on ``subject``, one at a time and in order, while
        the block runs: the hot path (a room's stored messages). No second queue: a NATS backend calls
        the handler from nats-py's own subscription queue, at most ``max_pending`` messages deep (beyond
        that, messages are dropped and counted on ``dropped``). A handler that raises is logged; the
        next message is handled as usual."""
        subscription = Subscription(subject, max_pending, handler)
        await self._add(subscription)
        pump = None
        if not self.calls_handlers:
            pump = asyncio.create_task(_pump(subscription, handler), name=f"listen {subject}")
        try:
            yield subscription
        finally:
            await cancel_and_wait(pump)
            await self._remove(subscription)


async def _pump(subscription: Subscription, handler: Handler) -> None:
    """For a backend that does not call handlers itself: the subscription's queue, read by one task."""
    async for message in subscription:
        try:
            await handler(message)
        except Exception:
            logger.exception("subscription %s: the handler failed", subscription.subject)

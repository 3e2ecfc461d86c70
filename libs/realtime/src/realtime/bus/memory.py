"""One-process bus: for a single instance and for a service's own unit tests.

Streams live in a list per stream, with the same rules as JetStream's: per-subject and age limits,
message-id deduplication within a window, and republishing with ``seq``/``last_seq``.
"""

import re
import secrets
import time
from collections.abc import Callable

from realtime.bus.base import (
    Bus,
    BusUnavailable,
    Message,
    StoreAck,
    Stored,
    StreamSpec,
    Subscription,
    subject_matches,
)

_WILDCARD = re.compile(r"\{\{\s*wildcard\((\d+)\)\s*\}\}")


def republished_subject(source_pattern: str, destination: str, subject: str) -> str:
    """``rooms.msg.*`` -> ``rooms.{{wildcard(1)}}`` maps ``rooms.msg.lobby`` to ``rooms.lobby``."""
    tokens = subject.split(".")
    wild = [tokens[i] for i, t in enumerate(source_pattern.split(".")) if t == "*"]
    return _WILDCARD.sub(lambda m: wild[int(m.group(1)) - 1], destination)


class _Stream:
    def __init__(self, spec: StreamSpec, clock: Callable[[], float]) -> None:
        self.spec = spec
        self.epoch = secrets.token_hex(8)
        self.seq = 0
        self.messages: list[tuple[Stored, float]] = []  # oldest first, with the time stored
        self.ids: dict[str, tuple[int, float]] = {}  # msg id -> (seq, when)
        self.clock = clock

    def prune(self) -> None:
        now = self.clock()
        cutoff = now - self.spec.max_age
        self.messages = [(m, at) for m, at in self.messages if at >= cutoff]
        window = now - self.spec.duplicate_window
        self.ids = {k: v for k, v in self.ids.items() if v[1] >= window}

    def add(self, subject: str, payload: bytes, msg_id: str | None) -> tuple[StoreAck, int]:
        self.prune()
        if msg_id is not None and msg_id in self.ids:
            return StoreAck(self.ids[msg_id][0], True), 0
        last = self.last(subject)
        self.seq += 1
        now = self.clock()
        self.messages.append((Stored(self.seq, subject, payload), now))
        if msg_id is not None:
            self.ids[msg_id] = (self.seq, now)
        same = [m for m, _ in self.messages if m.subject == subject]
        if len(same) > self.spec.max_per_subject:
            drop = {m.seq for m in same[: len(same) - self.spec.max_per_subject]}
            self.messages = [(m, at) for m, at in self.messages if m.seq not in drop]
        return StoreAck(self.seq, False), last

    def last(self, subject: str) -> int:
        for m, _ in reversed(self.messages):
            if m.subject == subject:
                return m.seq
        return 0


class MemoryBus(Bus):
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._connected = False
        self._subscriptions: set[Subscription] = set()
        self._streams: dict[str, _Stream] = {}
        self._clock = clock

    @property
    def ready(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        self._connected = True
        self._ready_changed(True)

    async def disconnect(self) -> None:
        self._connected = False
        self._ready_changed(False)

    async def publish(self, subject: str, payload: bytes) -> None:
        if not self._connected:
            raise BusUnavailable("memory bus is not connected")
        self._deliver(Message(subject, payload))

    def _deliver(self, message: Message) -> None:
        for subscription in list(self._subscriptions):
            if subject_matches(subscription.subject, message.subject):
                subscription.deliver(message)

    async def _add(self, subscription: Subscription) -> None:
        self._subscriptions.add(subscription)

    async def _remove(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    # --- streams ----------------------------------------------------------------------------
    def _stream(self, name: str) -> _Stream:
        if not self._connected:
            raise BusUnavailable("memory bus is not connected")
        try:
            return self._streams[name]
        except KeyError:
            raise BusUnavailable(f"no stream {name!r}") from None

    async def ensure_stream(self, spec: StreamSpec) -> str:
        if not self._connected:
            raise BusUnavailable("memory bus is not connected")
        stream = self._streams.get(spec.name)
        if stream is None:
            stream = self._streams[spec.name] = _Stream(spec, self._clock)
        stream.spec = spec
        return stream.epoch

    async def store(self, stream: str, subject: str, payload: bytes, msg_id: str | None = None) -> StoreAck:
        s = self._stream(stream)
        if not subject_matches(s.spec.subjects, subject):
            raise BusUnavailable(f"stream {stream!r} does not store {subject!r}")
        ack, last = s.add(subject, payload, msg_id)
        if not ack.duplicate and s.spec.republish_to is not None:
            target = republished_subject(s.spec.subjects, s.spec.republish_to, subject)
            self._deliver(Message(target, payload, ack.seq, last))
        return ack

    async def last_stored(self, stream: str, subject: str) -> int:
        s = self._stream(stream)
        s.prune()
        return s.last(subject)

    async def stored_at(self, stream: str, seq: int) -> Stored | None:
        s = self._stream(stream)
        s.prune()
        return next((m for m, _ in s.messages if m.seq == seq), None)

    async def purge(self, stream: str, subject: str) -> None:
        s = self._stream(stream)
        s.messages = [(m, at) for m, at in s.messages if m.subject != subject]

    async def stored_after(self, stream: str, subject: str, after: int, limit: int) -> list[Stored]:
        s = self._stream(stream)
        s.prune()
        return [m for m, _ in s.messages if m.subject == subject and m.seq > after][:limit]

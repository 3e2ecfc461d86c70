"""The rooms' history: one stream (NATS JetStream) holding every room's stored messages.

A message is stored before it is delivered: it goes to ``<prefix>.msg.<room>``, and the stream, once it
has stored it, republishes it with its sequence (``seq``, the same for every member and replica) to the
room's subject ``<prefix>.<room>``, where the rooms' listeners hear it (``delivery.py``). The stream's
``epoch`` names this history: a stream recreated (its storage lost) has a new epoch and starts its
sequences again, so a client's ``since`` means something only together with the epoch it came with.

Storing is retried with the same message id (``Nats-Msg-Id``, the dedup key) while NATS is away, up to
ROOM_STORE_TIMEOUT, so a retry is never stored twice. Reading serves the gap fills of the listeners, the
catch-up of a joining member (``backlog``) and the publish API's history (``read``).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from realtime import metrics
from realtime.backoff import Backoff
from realtime.bus import Bus, StoreAck, Stored, StreamSpec

from rooms_service.membership import Resume
from rooms_service.room_ids import room_subject
from rooms_service.settings import RoomsSettings

logger = logging.getLogger(__name__)


class HistoryUnavailable(RuntimeError):
    """The room history (the stream) is not reachable yet."""


class History:
    """The stream, its epoch once known, storing with retry, and every read of stored messages."""

    def __init__(self, bus: Bus, settings: RoomsSettings) -> None:
        self._bus = bus
        self._prefix = f"{settings.subject_prefix}.msg"
        self._size = settings.room_history_size
        self._store_timeout = settings.room_store_timeout
        self.stream = settings.room_stream_name
        self.spec = StreamSpec(
            name=self.stream,
            subjects=f"{self._prefix}.*",
            republish_to=f"{settings.subject_prefix}.{{{{wildcard(1)}}}}",
            max_per_subject=settings.room_history_size,
            max_age=settings.room_history_ttl,
            duplicate_window=settings.room_dedup_window,
            replicas=settings.room_stream_replicas,
        )
        self.epoch: str | None = None  # known once the stream exists
        self._ready = asyncio.Event()
        self.published = metrics.tally(
            metrics.MESSAGES_PUBLISHED, settings.metrics, service=settings.service_name
        )
        # Reads in flight, shared by every caller asking the same (a reconnect storm: a room's members
        # resume from the same seq, and one read serves them all). Nothing is kept once it is answered.
        self._reading: dict[tuple[object, ...], asyncio.Future[Any]] = {}

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def subject(self, room_id: str) -> str:
        """Where a room's messages are stored; ``room_id`` must have been validated."""
        return room_subject(self._prefix, room_id)

    # --- the stream and its epoch ---------------------------------------------------------------
    async def keep(self, *, lost: Callable[[], Awaitable[None]], kept: Callable[[], None]) -> None:
        """Forever: make sure the stream exists (at start, and again after every reconnect, in case the
        server lost it), then call ``kept()`` (the rooms look for what they could not hear meanwhile).
        A new epoch means the history is gone: ``lost()`` first (members are sent away to resume)."""
        reconnected = asyncio.Event()
        self._bus.on_ready_change(lambda ready: reconnected.set() if ready else None)
        while True:
            await self._ensure(lost)
            kept()
            await reconnected.wait()
            reconnected.clear()

    async def _ensure(self, lost: Callable[[], Awaitable[None]]) -> None:
        backoff = Backoff(first=0.1, limit=2.0)
        while True:
            try:
                epoch = await self._bus.ensure_stream(self.spec)
                break
            except Exception as exc:  # not connected yet, or JetStream still recovering its store
                logger.info("room history not available yet (%s)", type(exc).__name__)
                await asyncio.sleep(backoff.next())
        if self.epoch is not None and epoch != self.epoch:
            logger.warning("room history was recreated (epoch %s -> %s): members resume", self.epoch, epoch)
            await lost()
        self.epoch = epoch
        self._ready.set()

    # --- storing --------------------------------------------------------------------------------
    async def store(self, subject: str, payload: bytes, key: str) -> StoreAck:
        """Store with the message id ``key``, retried with the same key while NATS is away, up to
        ROOM_STORE_TIMEOUT (then the last error is raised), so a retry is never stored twice."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._store_timeout
        backoff: Backoff | None = None  # made on the first failure: the usual store costs nothing more
        while True:
            try:
                ack = await self._bus.store(self.stream, subject, payload, key)
                self.published.value += 1
                return ack
            except Exception as exc:
                # At most 0.25 s apart: after a JetStream leader election the store lands within a quarter
                # second of the new leader, not up to a second later (docs/howto/nats-cluster.md).
                backoff = backoff or Backoff(first=0.05, limit=0.25)
                delay = backoff.next()
                if loop.time() + delay > deadline:
                    raise
                logger.debug("%s: store failed (%s); retrying", subject, type(exc).__name__)
                await asyncio.sleep(delay)

    # --- reading --------------------------------------------------------------------------------
    async def after(self, subject: str, seq: int, limit: int | None = None) -> list[Stored]:
        """Up to ``limit`` (ROOM_HISTORY_SIZE) messages stored on ``subject`` after ``seq``, oldest first."""
        limit = limit or self._size
        return await self._shared(("after", subject, seq, limit), self._bus.stored_after, subject, seq, limit)

    async def _shared(self, key: tuple[object, ...], read: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """``await read(stream, *args)``, or the same read already in flight (the result is shared: its
        callers only read it)."""
        pending = self._reading.get(key)
        if pending is None:
            pending = self._reading[key] = asyncio.ensure_future(read(self.stream, *args))
            pending.add_done_callback(lambda _: self._reading.pop(key, None))
        return await asyncio.shield(pending)

    async def last(self, subject: str) -> int:
        """The newest seq stored on ``subject`` (0: none)."""
        return await self._bus.last_stored(self.stream, subject)

    async def backlog(self, subject: str, resume: Resume) -> tuple[bool | None, list[Stored]]:
        """What a joining JSON member gets before the live stream: whether its ``since`` could be
        honoured (None: it did not ask) and the stored messages it missed (``since``) or asked for
        (``history``: the last N)."""
        size = self._size
        recovered: bool | None = None
        backlog: list[Stored] = []
        if resume.since is not None:
            recovered = False
            if resume.epoch == self.epoch:
                if resume.since == 0:  # it saw the room empty: complete unless the history filled up
                    backlog = await self.after(subject, 0, size)
                    recovered = len(backlog) < size
                else:  # its last message is still stored, so is everything after it
                    found = await self._shared(("at", resume.since), self._bus.stored_at, resume.since)
                    if found is not None and found.subject == subject:
                        recovered = True
                        backlog = await self.after(subject, resume.since, size)
        if not recovered:
            backlog = []
            if resume.history:
                backlog = (await self.after(subject, 0, size))[-resume.history :]
        return recovered, backlog

    async def purge(self, room_id: str) -> None:
        """Remove every stored message of a room (the server API's DELETE)."""
        await self._bus.purge(self.stream, self.subject(room_id))

    async def read(self, room_id: str, after: int, limit: int) -> tuple[int, list[Stored]]:
        """The publish API's read: up to ``limit`` stored messages of a room (open here or not) after seq
        ``after``, oldest first, and the room's newest stored seq, read after them (a last message
        below it: there is more)."""
        subject = self.subject(room_id)
        stored = await self._bus.stored_after(self.stream, subject, after, limit)
        return await self._bus.last_stored(self.stream, subject), stored

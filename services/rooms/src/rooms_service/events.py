"""Room events for the app: recorded on a JetStream stream (``ROOM_EVENTS``), one subject per room.

Every event is a JSON object with ``id`` (unique; also the stored message's ``Nats-Msg-Id``, so a
replica racing another to record the same thing stores it once), ``type``, ``ts`` (seconds since the
epoch) and ``room``, and:

- ``joined`` / ``left``: ``member``, ``replica``, and ``user`` / ``name`` when known. ``left`` is also
  recorded for the members of a replica that died (by any live replica, within 2 presence intervals);
- ``occupied`` / ``vacated``: the room's first member arrived / its last member left, across all
  replicas, with ``period`` (1, 2, ...): exactly one of each per occupancy period;
- ``message``: a message was stored: ``seq``, ``text``, ``sender`` (``member`` or ``api``),
  ``member``, ``message_id`` (the sender's id, when it gave one), ``user`` / ``name`` when known;
- ``disconnected``: the server API disconnected a member (``POST /api/users/{user}/disconnect``):
  ``member``, ``user``, ``name`` when known, ``replica``, ``code`` and ``reason``; recorded before the
  ``left`` that follows.

Who is in a room across replicas is kept in JetStream too, so a crash loses nothing: each member is one
message on ``<prefix>.members.<replica>.<room>.<member>`` (stream ``<events stream>_MEMBERS``, purged at
its leave), and each room's occupancy state (occupied or not, and its period) is a key of the key-value
bucket ``<events stream>_OCCUPANCY``, changed only by compare-and-set. After each join and leave the
replica *settles* the room: if the state disagrees with the members, it records the transition with the
id ``<room>.<type>.<period>`` and sets the state; racing replicas record the same id (stored once) and
one of them sets the state. A replica that dies leaves its members' messages behind: every replica looks
for members of replicas no longer alive and records their ``left`` (and the ``vacated`` that follows).

Each replica records its events in order from one queue, retrying while NATS is away; the join and the
message paths only enqueue.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from realtime.backoff import Backoff
from realtime.bus import Bus, StreamSpec, safe_token
from realtime.lograte import worth_logging

from rooms_service.membership import Membership
from rooms_service.settings import RoomsSettings

logger = logging.getLogger(__name__)

JOINED, LEFT, OCCUPIED, VACATED, MESSAGE = "joined", "left", "occupied", "vacated", "message"
DISCONNECTED = "disconnected"
TYPES = (JOINED, LEFT, OCCUPIED, VACATED, MESSAGE, DISCONNECTED)
REAPS_PER_INTERVAL = 2  # dead replicas are looked for this often per presence interval

Job = Callable[[], Awaitable[None]]


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _event(kind: str, room: str, event_id: str, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"id": event_id, "type": kind, "ts": time.time(), "room": room}
    event.update({k: v for k, v in fields.items() if v is not None})
    return event


class Recorder:
    """Records this replica's room events (see the module's docstring). ``peers()`` names the other live
    replicas (the presence census). ``run()`` is the background work; the rest only enqueue."""

    def __init__(self, bus: Bus, settings: RoomsSettings, peers: Callable[[], set[str]]) -> None:
        self._bus = bus
        self.enabled = hasattr(bus, "jetstream")  # a NATS bus: memory:// records nothing
        self.origin = settings.instance_id
        self._me = safe_token(self.origin)
        self._peers = peers
        self._interval = settings.presence_interval
        prefix = settings.subject_prefix
        self.stream = settings.events_stream_name
        self._events = f"{prefix}.events"
        self._members = f"{prefix}.members"
        self.spec = StreamSpec(
            name=self.stream,
            subjects=f"{self._events}.*",
            max_per_subject=-1,
            max_age=settings.events_retention,
            # At least the messages' own window: a resend inside it records its message's event again
            # (the first try's may never have been recorded), and this keeps that event once.
            duplicate_window=max(120.0, settings.room_dedup_window),
            replicas=settings.room_stream_replicas,
        )
        self.members_spec = StreamSpec(
            name=f"{self.stream}_MEMBERS",
            subjects=f"{self._members}.>",
            max_per_subject=1,
            max_age=0,
            replicas=settings.room_stream_replicas,
        )
        self.bucket = f"{self.stream}_OCCUPANCY"
        self._replicas = settings.room_stream_replicas
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._kv: Any = None
        self._started = time.monotonic()
        self.ready = asyncio.Event()
        self.failures = 0
        self.epoch = ""
        self._local: set[str] = set()  # members joined through this process (not yet left)

    # --- what the engine calls (never waits) ----------------------------------------------------
    def joined(self, member: Membership) -> None:
        if self.enabled:
            self._local.add(member.id)
            self._queue.put_nowait(lambda: self._joined(member))

    def left(self, member: Membership) -> None:
        if self.enabled:
            self._local.discard(member.id)
            self._queue.put_nowait(
                lambda: self._left(member.room_id, member.id, member.user, member.name, self._me)
            )

    def disconnected(self, member: Membership, code: int, reason: str | None) -> None:
        if self.enabled:
            room = member.room_id
            event = _event(
                DISCONNECTED, room, f"{room}.disconnected.{member.id}", member=member.id,
                user=member.user, name=member.name, replica=self.origin, code=code, reason=reason or None,
            )  # fmt: skip
            self._queue.put_nowait(lambda: self._record(event))

    def message(
        self,
        room: str,
        epoch: str,
        seq: int,
        text: str,
        member: str,
        msg_id: str | None,
        user: str | None,
        name: str | None,
    ) -> None:
        if not self.enabled:
            return
        sender = "api" if member == "api" else "member"
        event = _event(
            MESSAGE, room, f"{room}.message.{epoch}.{seq}", seq=seq, text=text, sender=sender,
            member=member if sender == "member" else None, message_id=msg_id, user=user, name=name,
        )  # fmt: skip
        self._queue.put_nowait(lambda: self._record(event))

    # --- the background work --------------------------------------------------------------------
    async def run(self) -> None:
        """Forever: the streams and bucket made (again after a reconnect), then every queued job in
        order, each retried until it is done; and, alongside, the search for dead replicas' members."""
        if not self.enabled:
            logger.info("room events need a NATS bus: none are recorded")
            return
        await self._retry(self._ensure)
        self.ready.set()
        async with asyncio.TaskGroup() as jobs:
            jobs.create_task(self._reaper(), name="events reaper")
            while True:
                job = await self._queue.get()
                await self._retry(job)

    async def _retry(self, job: Job) -> None:
        backoff: Backoff | None = None
        while True:
            try:
                await job()
                return
            except Exception as exc:  # NATS away or JetStream recovering: the same job again
                self.failures += 1
                backoff = backoff or Backoff(first=0.05, limit=2.0)
                if worth_logging(self.failures):
                    logger.warning("room events: could not record (%s); retrying", type(exc).__name__)
                await asyncio.sleep(backoff.next())
                with contextlib.suppress(Exception):
                    await self._ensure()

    async def _ensure(self) -> None:
        self.epoch = await self._bus.ensure_stream(self.spec)  # names the stream's life (webhook ids)
        await self._bus.ensure_stream(self.members_spec)
        js = self._bus.jetstream()  # type: ignore[attr-defined]
        from nats.js.api import KeyValueConfig, StorageType

        try:
            self._kv = await js.key_value(self.bucket)
        except Exception:
            config = KeyValueConfig(
                bucket=self.bucket, history=1, storage=StorageType.FILE, replicas=self._replicas
            )
            self._kv = await js.create_key_value(config)

    def _js(self) -> Any:
        return self._bus.jetstream()  # type: ignore[attr-defined]

    async def _record(self, event: dict[str, Any]) -> None:
        subject = f"{self._events}.{event['room']}"
        await self._bus.store(self.stream, subject, encode(event), event["id"])

    def _member_subject(self, replica: str, room: str, member: str) -> str:
        return f"{self._members}.{replica}.{room}.{member}"

    async def _joined(self, member: Membership) -> None:
        room = member.room_id
        who = {"user": member.user, "name": member.name, "replica": self.origin}
        subject = self._member_subject(self._me, room, member.id)
        await self._bus.store(self.members_spec.name, subject, encode(who), f"join.{member.id}")
        await self._settle(room)
        event = _event(JOINED, room, f"{room}.joined.{member.id}", member=member.id, **who)
        await self._record(event)

    async def _left(self, room: str, member: str, user: str | None, name: str | None, replica: str) -> None:
        origin = self.origin if replica == self._me else replica
        event = _event(
            LEFT, room, f"{room}.left.{member}", member=member, user=user, name=name, replica=origin
        )
        await self._record(event)
        await self._js().purge_stream(
            self.members_spec.name, subject=self._member_subject(replica, room, member)
        )
        await self._settle(room)

    # --- occupancy ------------------------------------------------------------------------------
    async def _present(self, room: str) -> bool:
        info = await self._js().stream_info(
            self.members_spec.name, subjects_filter=f"{self._members}.*.{room}.*"
        )
        return bool(info.state.subjects)

    async def _settle(self, room: str) -> None:
        """Until the room's occupancy state agrees with its members: record the transition (its id
        deterministic), then compare-and-set the state."""
        while True:
            try:
                entry = await self._kv.get(room)
                state, revision = json.loads(entry.value or b"{}"), entry.revision
            except KeyNotFoundError:
                state, revision = {}, None
            occupied, period = bool(state.get("occupied")), int(state.get("period", 0))
            present = await self._present(room)
            if present == occupied:
                return
            if present:
                period += 1
            kind = OCCUPIED if present else VACATED
            await self._record(_event(kind, room, f"{room}.{kind}.{period}", period=period))
            value = encode({"occupied": present, "period": period})
            try:
                if revision is None:
                    await self._kv.create(room, value)
                else:
                    await self._kv.update(room, value, last=revision)
            except KeyWrongLastSequenceError:
                continue  # another replica moved it first: look again
            except Exception as exc:
                if "wrong last sequence" not in str(exc):
                    raise

    # --- dead replicas --------------------------------------------------------------------------
    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(self._interval / REAPS_PER_INTERVAL)
            if time.monotonic() - self._started < 2 * self._interval:
                continue  # just started: the census does not know the live replicas yet
            try:
                await self._reap()
            except Exception as exc:
                logger.info("room events: could not look for dead replicas (%s)", type(exc).__name__)

    async def _reap(self) -> None:
        live = {safe_token(p) for p in self._peers()} | {self._me}
        info = await self._js().stream_info(self.members_spec.name, subjects_filter=f"{self._members}.>")
        for subject in info.state.subjects or {}:
            replica, room, member = subject[len(self._members) + 1 :].split(".", 2)
            if replica in live and (replica != self._me or member in self._local):
                continue  # alive (a member of this replica's id it does not hold: a previous life's)
            try:
                found = await self._js().get_last_msg(self.members_spec.name, subject)
                who = json.loads(found.data or b"{}")
            except NotFoundError:
                continue
            user, name, origin = who.get("user"), who.get("name"), who.get("replica", replica)
            logger.info("room %s: a member of replica %s, gone, has left", room, origin)
            self._queue.put_nowait(
                lambda r=room, m=member, u=user, n=name, p=replica: self._left(r, m, u, n, p)
            )

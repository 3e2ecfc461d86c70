"""The rooms of one replica: stored messages delivered in seq order, encode-once fan-out, presence.

Messages are stored before they are delivered: a member's message goes into the room's history (a
JetStream stream, ``<prefix>.msg.<room>``), and the stream republishes it, with its sequence, to the
room's subject ``<prefix>.<room>``, where presence events travel too. A message from the publish API
(``api.py``) is stored the same way, by any replica, whether or not it has the room open. A room exists
on a replica while it has local members; its first member subscribes the replica to that subject (one
subscription per room per replica, never one per member), its last one unsubscribes it.

Each room has one listener task that delivers stored messages strictly in seq order, each once: a
message whose ``last_seq`` (the room's previous stored seq) is above what the replica delivered reveals
a gap (NATS restarted, the subscription dropped some, a republish was lost), which it fills from the
store first. After a reconnect, and at every presence beat, it also checks the store for what it has not
seen. So members that stay connected lose nothing across NATS trouble: it costs latency only.

Delivery is encode-once: each message is framed at most twice per replica (plain text, JSON envelope)
and the same bytes go to every live member through the shared hub (``realtime.hub``, policy CUT_OFF:
1013 "slow consumer"). A member joins the hub only once it has everything up to the room's delivered
seq: after its welcome it is written its missed messages (``since``) or the last N (``history``) from
the store, then handed over to the live stream by seq, with nothing lost or doubled at the seam.
"""

import asyncio
import contextlib
import logging
import secrets
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from fastapi import WebSocket
from realtime import metrics
from realtime.bus import Bus, Message, StoreAck, Stored, StreamSpec, Subscription
from realtime.close_codes import CloseCode
from realtime.frames import OP_TEXT, encode_frame, text_frame
from realtime.hub import Hub, Policy
from realtime.serve import FrameWriter
from realtime.tasks import cancel_and_wait

from rooms_service import envelopes
from rooms_service.presence import EXPIRY_INTERVALS, Census, Presence
from rooms_service.room_ids import room_subject
from rooms_service.settings import RoomsSettings

logger = logging.getLogger(__name__)

JOIN_CONFIRM_TIMEOUT = 2.0  # seconds a join waits for its own announcement to come back over the bus
CHECK = Message("", b"")  # put in a room's queue: "look in the store for what this replica missed"
PRUNES_PER_BEAT = 4  # presence is pruned this many times per interval: a dead replica goes in time
BACKLOG_POLL = 0.01  # seconds between looks at a catching-up member's unread bytes
API_SENDER = "api"  # the sender of messages stored through the publish API (member ids are 12 hex digits)


class HistoryUnavailable(RuntimeError):
    """The room history (the stream) is not reachable yet."""


@dataclass(eq=False, slots=True)
class Member:
    id: str
    websocket: WebSocket
    writer: FrameWriter
    json: bool  # ?format=json: envelopes and presence events; else plain text messages only
    seq: int = 0  # before it is live: the highest message seq it has (or does not need)
    sent: int = 0  # messages it sent, for the ids of those sent without one
    user: str | None = None  # its identity token's ``sub``
    name: str | None = None  # the token's name, or the display name it chose (``?name=``)


@dataclass(frozen=True, slots=True)
class Resume:
    """What a JSON client asked for at connect: ``since``/``epoch`` to resume, ``history`` to catch up."""

    since: int | None = None
    epoch: str | None = None
    history: int = 0


@dataclass(eq=False)
class Room:
    id: str
    subject: str  # core NATS: presence events and the stream's republished messages
    stored_subject: str  # where its messages are stored
    presence: Presence
    json_hub: Hub
    text_hub: Hub
    members: dict[str, Member] = field(default_factory=dict)
    delivered: int = 0  # the highest message seq this replica has delivered in this room
    waiting: set[Member] = field(default_factory=set)  # have everything to ``seq``: live after it
    last_total: int = 0
    joining: dict[str, "asyncio.Future[None]"] = field(default_factory=dict)  # member -> join echo
    subscription: Subscription | None = None
    _subscribing: AbstractAsyncContextManager[Subscription] | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def total(self) -> int:
        return self.presence.total(len(self.members))

    def hub_of(self, member: Member) -> Hub:
        return self.json_hub if member.json else self.text_hub

    def go_live(self, member: Member) -> None:
        """The member has every message to ``member.seq``: it joins the live stream after that seq."""
        if member.seq <= self.delivered:
            self.hub_of(member).add(member.writer)
        else:  # it already has messages this replica has not delivered yet: live from the next one
            self.waiting.add(member)

    def remove(self, member: Member) -> None:
        self.members.pop(member.id, None)
        self.waiting.discard(member)
        self.hub_of(member).discard(member.writer)

    def check(self) -> None:
        if self.subscription is not None:
            self.subscription.deliver(CHECK)

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        if self._subscribing is not None:
            await self._subscribing.__aexit__(None, None, None)
            self._subscribing = None
            self.subscription = None


class Rooms:
    """Every room with local members on this replica; ``origin`` names the replica on the subject."""

    def __init__(self, bus: Bus, settings: RoomsSettings) -> None:
        self._bus = bus
        self._settings = settings
        self.origin = settings.instance_id
        prefix = settings.subject_prefix
        self.stream = settings.room_stream_name
        self.spec = StreamSpec(
            name=self.stream,
            subjects=f"{prefix}.msg.*",
            republish_to=f"{prefix}.{{{{wildcard(1)}}}}",
            max_per_subject=settings.room_history_size,
            max_age=settings.room_history_ttl,
            duplicate_window=settings.room_dedup_window,
            replicas=settings.room_stream_replicas,
        )
        self.epoch: str | None = None  # known once the stream exists
        self._rooms: dict[str, Room] = {}
        self._lock = asyncio.Lock()  # joins and leaves; the message path never takes it
        self._cut_off_before = 0  # slow consumers cut off in rooms that have closed since
        self._history_ready = asyncio.Event()
        on, service = settings.metrics, settings.service_name
        self.published = metrics.tally(metrics.MESSAGES_PUBLISHED, on, service=service)
        self.fanout_seconds = metrics.child(metrics.FANOUT, on, service=service)
        self._metrics_on = on
        self.census = Census(
            bus,
            prefix,
            self.origin,
            interval=settings.presence_interval,
            timeout=settings.presence_query_timeout,
            local_count=self._local_count,
            heard=self._heard,
        )

    @property
    def cut_off(self) -> int:
        hubs = [h for r in self._rooms.values() for h in (r.json_hub, r.text_hub)]
        return self._cut_off_before + sum(h.cut_off for h in hubs)

    def stats(self) -> dict[str, int]:
        return {
            "rooms": len(self._rooms),
            "subscriptions": sum(1 for r in self._rooms.values() if r.subscription is not None),
            "members": sum(len(r.members) for r in self._rooms.values()),
            "slow_consumers_cut_off": self.cut_off,
        }

    # --- the history (stream) ------------------------------------------------------------------
    async def keep_history(self) -> None:
        """Forever: make sure the stream exists (at start, and again after every reconnect, in case the
        server lost it); a new epoch means the history is gone: members are sent away to resume."""
        reconnected = asyncio.Event()
        self._bus.on_ready_change(lambda ready: reconnected.set() if ready else None)
        while True:
            await self._ensure_stream()
            for room in list(self._rooms.values()):
                room.check()  # anything stored while this replica could not hear it
            await reconnected.wait()
            reconnected.clear()

    async def _ensure_stream(self) -> None:
        delay = 0.1
        while True:
            try:
                epoch = await self._bus.ensure_stream(self.spec)
                break
            except Exception as exc:  # not connected yet, or JetStream still recovering its store
                logger.info("room history not available yet (%s)", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if self.epoch is not None and epoch != self.epoch:
            logger.warning("room history was recreated (epoch %s -> %s): members resume", self.epoch, epoch)
            await self._history_lost()
        self.epoch = epoch
        self._history_ready.set()

    async def _history_lost(self) -> None:
        async with self._lock:
            rooms = list(self._rooms.values())
        for room in rooms:
            room.delivered = 0
            for member in list(room.members.values()):
                member.writer.close(CloseCode.SERVICE_RESTART, "history reset", abort_after=5.0)

    @property
    def history_ready(self) -> bool:
        return self._history_ready.is_set()

    # --- membership ---------------------------------------------------------------------------
    async def join(self, room_id: str, member: Member) -> Room:
        """Subscribe on the first local member, announce the join, and wait (bounded) until the
        announcement comes back over the bus (the subscription is live at the server), and, for a room
        new to this replica, until the other replicas told their counts."""
        if self.epoch is None:
            raise HistoryUnavailable("the room history is not available yet")
        async with self._lock:
            room = self._rooms.get(room_id)
            opened = room is None
            if room is None:
                room = await self._open(room_id)
                self._rooms[room_id] = room
            room.members[member.id] = member
            echo = room.joining[member.id] = asyncio.get_running_loop().create_future()
            try:
                await self._publish_membership(room, envelopes.JOIN, member)
            except Exception:
                room.joining.pop(member.id, None)
                await self._drop(room, member)
                raise
        try:
            await asyncio.wait_for(echo, JOIN_CONFIRM_TIMEOUT)
        except TimeoutError:  # the bus is reconnecting: the subscription is live once it is back
            logger.info("room %s: join not confirmed by the bus within %.1fs", room_id, JOIN_CONFIRM_TIMEOUT)
        finally:
            room.joining.pop(member.id, None)
        if opened:
            await self.census.query(room_id)
        return room

    async def _open(self, room_id: str) -> Room:
        settings = self._settings
        prefix = settings.subject_prefix
        expiry = EXPIRY_INTERVALS * settings.presence_interval
        hubs = [
            Hub(
                Policy.CUT_OFF,
                settings.send_buffer_limit,
                close_deadline=settings.slow_consumer_close_deadline,
                name=f"room {room_id}",
                service=settings.service_name,
                metrics_on=settings.metrics,
            )
            for _ in range(2)
        ]
        room = Room(
            room_id,
            room_subject(prefix, room_id),
            self._stored_subject(room_id),
            Presence(expiry),
            *hubs,
        )
        room._subscribing = self._bus.subscribe(room.subject, max_pending=settings.room_queue_limit)
        room.subscription = await room._subscribing.__aenter__()
        try:
            # After the SUB (the server handles one connection's commands in order): anything stored
            # later reaches the subscription, anything before is at most this seq.
            room.delivered = await self._bus.last_stored(self.stream, room.stored_subject)
        except BaseException:
            await room.close()
            raise
        room._task = asyncio.create_task(self._listen(room, room.subscription), name=f"room {room_id}")
        return room

    async def greet(self, room: Room, member: Member, resume: Resume) -> None:
        """After the handshake: a JSON member gets its welcome (id, count, the room's seq and epoch,
        and whether its ``since`` could be honoured), then what it missed or asked for, then the live
        stream. A plain member just goes live."""
        if not member.json:
            member.seq = room.delivered
            room.go_live(member)
            return
        recovered: bool | None = None
        backlog: list[Stored] = []
        size = self._settings.room_history_size
        if resume.since is not None:
            recovered = False
            if resume.epoch == self.epoch:
                if resume.since == 0:  # it saw the room empty: complete unless the history filled up
                    backlog = await self._stored_after(room, 0, size)
                    recovered = len(backlog) < size
                else:  # its last message is still stored, so is everything after it
                    found = await self._bus.stored_at(self.stream, resume.since)
                    if found is not None and found.subject == room.stored_subject:
                        recovered = True
                        backlog = await self._stored_after(room, resume.since, size)
        if not recovered:
            backlog = []
            if resume.history:
                backlog = (await self._stored_after(room, 0, size))[-resume.history :]
        seq = room.delivered
        welcome = envelopes.welcome(
            room.id, member.id, room.total, seq, self.epoch or "", recovered, member.user, member.name
        )
        member.writer.write(text_frame(welcome))
        if recovered:
            member.seq = resume.since or 0
        elif backlog:
            member.seq = backlog[0].seq - 1
        else:
            member.seq = seq
        await self._catch_up_member(room, member, backlog)

    async def _catch_up_member(self, room: Room, member: Member, backlog: list[Stored]) -> None:
        """Write ``backlog``, then whatever the room delivered meanwhile, then hand over to live."""
        while True:
            for stored in backlog:
                if stored.seq > member.seq:
                    await self._write_backlog(room, member, stored)
                    member.seq = stored.seq
            if member.seq >= room.delivered or not member.writer.open:
                break
            backlog = await self._stored_after(room, member.seq, self._settings.room_history_size)
            if not backlog:  # what the room delivered is no longer stored (aged out): nothing to add
                member.seq = room.delivered
        if member.writer.open and room.members.get(member.id) is member:
            room.go_live(member)

    async def _write_backlog(self, room: Room, member: Member, stored: Stored) -> None:
        """One stored message to one member, waiting (bounded) while it reads what it has."""
        frame = self._json_frame(stored.seq, stored.payload)
        writer = member.writer
        writer.write(frame)
        limit = self._settings.send_buffer_limit
        if writer.buffered <= limit:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.slow_consumer_close_deadline
        while writer.open and writer.buffered > limit // 2:
            if loop.time() > deadline:
                room.hub_of(member).close_slow(writer)
                return
            await asyncio.sleep(BACKLOG_POLL)

    async def _stored_after(self, room: Room, after: int, limit: int) -> list[Stored]:
        return await self._bus.stored_after(self.stream, room.stored_subject, after, limit)

    async def leave(self, room: Room, member: Member) -> None:
        async with self._lock:
            if room.members.get(member.id) is not member:
                return
            try:
                await self._publish_membership(room, envelopes.LEAVE, member)
            except Exception as exc:  # the bus is gone: the others' presence heartbeat expires it
                logger.info("room %s: could not announce a leave (%s)", room.id, type(exc).__name__)
            await self._drop(room, member)

    async def _drop(self, room: Room, member: Member) -> None:
        room.remove(member)
        if not room.members and self._rooms.get(room.id) is room:
            del self._rooms[room.id]
            self._cut_off_before += room.json_hub.cut_off + room.text_hub.cut_off
            await room.close()

    async def _publish_membership(self, room: Room, kind: str, member: Member) -> None:
        local = len(room.members) - (1 if kind == envelopes.LEAVE else 0)
        payload = envelopes.membership(kind, room.id, member.id, self.origin, local, member.user, member.name)
        await self._bus.publish(room.subject, payload)

    def _local_count(self, room_id: str) -> int:
        room = self._rooms.get(room_id)
        return len(room.members) if room is not None else 0

    def _heard(self, room_id: str, origin: str, local: int) -> None:
        room = self._rooms.get(room_id)
        if room is not None and origin != self.origin:
            room.presence.heard(origin, local)

    # --- messages -----------------------------------------------------------------------------
    async def say(self, room: Room, member: Member, text: str, msg_id: str | None = None) -> StoreAck:
        """Store one member's message (it reaches every member through the stream)."""
        member.sent += 1
        key = f"{room.id}/{msg_id}" if msg_id is not None else f"{room.id}/{member.id}/{member.sent}"
        payload = envelopes.message(
            room.id, member.id, text, self.origin, msg_id, user=member.user, name=member.name
        )
        return await self._store(room.id, room.stored_subject, payload, key)

    async def publish(
        self, room_id: str, text: str, msg_id: str | None = None, *, name: str | None = None
    ) -> StoreAck:
        """Store one message from the publish API (sender ``"api"``) in a room this replica need not
        have open; stored exactly like a member's, with the key ``<room>/api/<id>`` (or a random one)."""
        key = f"{room_id}/api/{msg_id}" if msg_id is not None else f"{room_id}/api/~{secrets.token_hex(12)}"
        payload = envelopes.message(room_id, API_SENDER, text, self.origin, msg_id, name=name)
        return await self._store(room_id, self._stored_subject(room_id), payload, key)

    async def _store(self, room_id: str, subject: str, payload: bytes, key: str) -> StoreAck:
        """Store with the message id ``key``, retried with the same key while NATS is away, up to
        ROOM_STORE_TIMEOUT (then the last error is raised), so a retry is never stored twice."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.room_store_timeout
        delay = 0.05
        while True:
            try:
                ack = await self._bus.store(self.stream, subject, payload, key)
                self.published.value += 1
                return ack
            except Exception as exc:
                if loop.time() + delay > deadline:
                    raise
                logger.debug("room %s: store failed (%s); retrying", room_id, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def history(self, room_id: str, after: int, limit: int) -> tuple[int, list[Stored]]:
        """Up to ``limit`` stored messages of a room (open here or not) after seq ``after``, oldest first,
        and the room's newest stored seq, read after them (a last message below it: there is more)."""
        subject = self._stored_subject(room_id)
        stored = await self._bus.stored_after(self.stream, subject, after, limit)
        return await self._bus.last_stored(self.stream, subject), stored

    def _stored_subject(self, room_id: str) -> str:
        return room_subject(f"{self._settings.subject_prefix}.msg", room_id)

    async def heartbeat(self) -> None:
        """Forever: forget silent replicas (telling members the new total), announce this replica and
        its count of every room, and look in the store for anything a room missed."""
        interval = self._settings.presence_interval
        for beat in range(1 << 62):
            await asyncio.sleep(interval / PRUNES_PER_BEAT)
            for room in list(self._rooms.values()):
                if room.presence.prune() and room.total != room.last_total:
                    room.last_total = room.total
                    room.json_hub.broadcast(text_frame(envelopes.members(room.id, room.total)))
            if beat % PRUNES_PER_BEAT:
                continue
            await self.census.beat()
            for room in list(self._rooms.values()):
                payload = envelopes.count(room.id, self.origin, len(room.members))
                with contextlib.suppress(Exception):  # not connected: the next beat tries again
                    await self._bus.publish(room.subject, payload)
                room.check()

    async def close(self) -> None:
        async with self._lock:
            rooms, self._rooms = list(self._rooms.values()), {}
        for room in rooms:
            await room.close()

    # --- delivery: one listener task per room -------------------------------------------------
    async def _listen(self, room: Room, subscription: Subscription) -> None:
        async for message in subscription:
            try:
                if message.seq:
                    await self._on_stored(room, message)
                elif message is CHECK:
                    await self._fill(room)
                else:
                    await self._on_presence(room, message.payload)
            except Exception as exc:  # a failed fill is retried at the next check; the room goes on
                logger.warning("room %s: delivery step failed (%s: %s)", room.id, type(exc).__name__, exc)

    async def _on_stored(self, room: Room, message: Message) -> None:
        if message.seq <= room.delivered:
            return  # delivered already (by a fill)
        started = time.perf_counter() if self._metrics_on else 0.0
        if message.last_seq > room.delivered:
            await self._fill(room)  # raises if the store is unreachable: then nothing past the gap
            if message.seq <= room.delivered:
                return
        self._deliver(room, message.seq, message.payload)
        if self._metrics_on:
            self.fanout_seconds.observe(time.perf_counter() - started)

    async def _fill(self, room: Room) -> None:
        """Deliver, in order, what the store has after what this replica delivered in the room."""
        batch = self._settings.room_history_size
        while True:
            stored = await self._stored_after(room, room.delivered, batch)
            for each in stored:
                if each.seq > room.delivered:
                    self._deliver(room, each.seq, each.payload)
            if len(stored) < batch:
                return

    def _json_frame(self, seq: int, payload: bytes) -> bytes:
        return encode_frame(OP_TEXT, envelopes.with_seq(payload, seq))

    def _deliver(self, room: Room, seq: int, payload: bytes) -> None:
        """One stored message to every live local member: framed at most twice, written once each."""
        if room.waiting:
            for member in [m for m in room.waiting if seq > m.seq]:
                room.waiting.discard(member)
                room.hub_of(member).add(member.writer)
        room.delivered = seq
        if room.json_hub:
            room.json_hub.broadcast(self._json_frame(seq, payload))
        if room.text_hub:
            text = envelopes.stored_text(payload)
            if text is not None:
                room.text_hub.broadcast(text_frame(text))

    async def _on_presence(self, room: Room, payload: bytes) -> None:
        try:
            event = envelopes.decode(payload)
        except ValueError:
            logger.warning("room %s: ignored a malformed event", room.id)
            return
        kind = event["type"]
        origin = event["origin"]
        if origin == self.origin and kind == envelopes.JOIN:
            echo = room.joining.get(event.get("member"))  # type: ignore[arg-type]
            if echo is not None and not echo.done():
                echo.set_result(None)
        if origin != self.origin:
            unknown = not room.presence.knows(origin)
            local = event.get("local")
            room.presence.heard(origin, local if isinstance(local, int) else 0)
            if kind == envelopes.JOIN and unknown and room.members:  # a replica new to the room: answer
                answer = envelopes.count(room.id, self.origin, len(room.members))
                with contextlib.suppress(Exception):
                    await self._bus.publish(room.subject, answer)
        total = room.total
        if kind in (envelopes.JOIN, envelopes.LEAVE):
            room.last_total = total
            room.json_hub.broadcast(text_frame(envelopes.for_client(event, total)))
        elif total != room.last_total:
            room.last_total = total
            room.json_hub.broadcast(text_frame(envelopes.members(room.id, total)))

"""Delivery: each open room's listener, a joining member's catch-up, and the hubs that write.

A room is open on a replica while it has local members: its first member subscribes the replica to the
room's subject ``<prefix>.<room>`` (one subscription per room per replica, never one per member), its
last one unsubscribes it. The subscription is a ``Bus.listen``: nats-py's own queue hands each message
straight to ``Delivery._on_message``, with no second queue in between.

A room delivers stored messages strictly in seq order, each once: a message whose ``last_seq`` (the
room's previous stored seq) is above what the replica delivered reveals a gap (NATS restarted, the
subscription dropped some, a republish was lost), which is filled from the history first. After a
reconnect, and at every presence beat, a ``check`` also looks in the history for what the room has not
seen. So members that stay connected lose nothing across NATS trouble: it costs latency only. Presence
events on the same subject go to the ``Roster`` (``presence.py``).

Delivery is encode-once: each message is framed at most twice per replica (plain text, JSON envelope)
and the same bytes go to every live member through the room's hub (``realtime.hub``, policy CUT_OFF:
1013 "slow consumer"). A member joins the hub only once it has everything up to the room's delivered
seq: it is written its backlog first (``catch_up``), then handed over to the live stream by seq, with
nothing lost or doubled at the seam.
"""

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from realtime import metrics
from realtime.bus import Bus, Message, Stored, Subscription
from realtime.frames import OP_TEXT, encode_frame, text_frame
from realtime.hub import Hub, Policy
from realtime.tasks import cancel_and_wait

from rooms_service import envelopes
from rooms_service.history import History
from rooms_service.membership import Membership
from rooms_service.room_ids import room_subject
from rooms_service.settings import RoomsSettings

logger = logging.getLogger(__name__)

BACKLOG_POLL = 0.01  # seconds between looks at a catching-up member's unread bytes


@dataclass(eq=False)
class Room:
    """One room open on this replica: its local members, its two hubs and where its stream is."""

    id: str
    subject: str  # core NATS: presence events and the stream's republished messages
    stored_subject: str  # where its messages are stored
    json_hub: Hub
    text_hub: Hub
    members: dict[str, Membership] = field(default_factory=dict)
    delivered: int = 0  # the highest message seq this replica has delivered in this room
    waiting: set[Membership] = field(default_factory=set)  # have everything to ``seq``: live after it
    subscription: Subscription | None = None
    # The listener's stored messages and the history checks, one at a time.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    check_wanted: bool = False
    _checking: asyncio.Task[None] | None = None
    _listening: AbstractAsyncContextManager[Subscription] | None = None

    def add(self, member: Membership) -> None:
        """Count ``member`` here and give it its hub (it hears nothing until ``go_live``)."""
        self.members[member.id] = member
        member.hub = self.json_hub if member.json else self.text_hub

    def go_live(self, member: Membership) -> None:
        """The member has every message to ``member.seq``: it joins the live stream after that seq."""
        if member.seq <= self.delivered:
            self.hub_of(member).add(member.writer)
        else:  # it already has messages this replica has not delivered yet: live from the next one
            self.waiting.add(member)

    def remove(self, member: Membership) -> None:
        self.members.pop(member.id, None)
        self.waiting.discard(member)
        self.hub_of(member).discard(member.writer)

    def hub_of(self, member: Membership) -> Hub:
        return self.json_hub if member.json else self.text_hub


class Delivery:
    """Opens and closes rooms' listeners and delivers their stored messages to local members."""

    def __init__(
        self,
        bus: Bus,
        settings: RoomsSettings,
        history: History,
        heard: Callable[[str, bytes], Awaitable[None]],
    ) -> None:
        self._bus = bus
        self._settings = settings
        self._history = history
        self._heard = heard  # a presence event on a room's subject: the Roster's
        self.cut_off_closed = 0  # slow consumers cut off in rooms that have closed since
        on = settings.metrics
        self.fanout_seconds = metrics.child(metrics.FANOUT, on, service=settings.service_name)
        self._metrics_on = on

    def _hubs(self, room_id: str) -> list[Hub]:
        s = self._settings
        return [
            Hub(
                Policy.CUT_OFF,
                s.send_buffer_limit,
                close_deadline=s.slow_consumer_close_deadline,
                name=f"room {room_id}",
                service=s.service_name,
                metrics_on=s.metrics,
            )
            for _ in range(2)
        ]

    async def open(self, room_id: str) -> Room:
        """Subscribe to the room, and learn the seq it is at (what is stored later reaches the listener)."""
        subject = room_subject(self._settings.subject_prefix, room_id)
        room = Room(room_id, subject, self._history.subject(room_id), *self._hubs(room_id))
        handler = functools.partial(self._on_message, room)
        room._listening = self._bus.listen(room.subject, handler, max_pending=self._settings.room_queue_limit)
        room.subscription = await room._listening.__aenter__()
        try:
            # After the SUB (the server handles one connection's commands in order): anything stored
            # later reaches the subscription, anything before is at most this seq.
            room.delivered = await self._history.last(room.stored_subject)
        except BaseException:
            await self.close(room)
            raise
        return room

    async def close(self, room: Room) -> None:
        self.cut_off_closed += room.json_hub.cut_off + room.text_hub.cut_off
        await cancel_and_wait(room._checking)
        listening, room._listening = room._listening, None
        room.subscription = None
        if listening is not None:
            await listening.__aexit__(None, None, None)

    def check(self, room: Room) -> None:
        """Look in the history for what the room missed (after the step the listener is in)."""
        if room.subscription is None:
            return
        room.check_wanted = True
        if room._checking is None or room._checking.done():
            room._checking = asyncio.create_task(self._checks(room), name=f"room {room.id} check")

    async def _checks(self, room: Room) -> None:
        while room.check_wanted:  # checks asked for while one runs: one more after it
            room.check_wanted = False
            async with room.lock:
                try:
                    await self._fill(room)
                except Exception as exc:  # retried at the next check; the room goes on
                    logger.warning("room %s: history check failed (%s: %s)", room.id, type(exc).__name__, exc)

    # --- the listener: what arrives on the room's subject ---------------------------------------
    async def _on_message(self, room: Room, message: Message) -> None:
        seq = message.seq
        if not seq:
            await self._heard(room.id, message.payload)
            return
        if seq <= room.delivered:
            return  # delivered already (by a fill)
        started = time.perf_counter() if self._metrics_on else 0.0
        async with room.lock:
            try:
                if message.last_seq > room.delivered:
                    await self._fill(room)  # raises if the store is unreachable: then nothing past the gap
                if seq > room.delivered:
                    self._deliver(room, seq, message.payload)
            except Exception as exc:  # a failed fill is retried at the next check; the room goes on
                logger.warning("room %s: delivery step failed (%s: %s)", room.id, type(exc).__name__, exc)
                return
        if self._metrics_on:
            self.fanout_seconds.observe(time.perf_counter() - started)

    async def _fill(self, room: Room) -> None:
        """Deliver, in order, what the history has after what this replica delivered in the room."""
        batch = self._settings.room_history_size
        while True:
            stored = await self._history.after(room.stored_subject, room.delivered, batch)
            for each in stored:
                if each.seq > room.delivered:
                    self._deliver(room, each.seq, each.payload)
            if len(stored) < batch:
                return

    def _deliver(self, room: Room, seq: int, payload: bytes) -> None:
        """One stored message to every live local member: framed at most twice, written once each."""
        if room.waiting:
            for member in [m for m in room.waiting if seq > m.seq]:
                room.waiting.discard(member)
                room.hub_of(member).add(member.writer)
        room.delivered = seq
        if room.json_hub:
            room.json_hub.broadcast(_json_frame(seq, payload))
        if room.text_hub:
            text = envelopes.stored_text(payload)
            if text is not None:
                room.text_hub.broadcast(text_frame(text))

    # --- a joining member's catch-up ------------------------------------------------------------
    async def catch_up(self, room: Room, member: Membership, backlog: list[Stored]) -> None:
        """Write ``backlog`` (after ``member.seq``), then whatever the room delivered meanwhile, then
        hand the member over to the live stream."""
        while True:
            for stored in backlog:
                if stored.seq > member.seq:
                    await self._write_backlog(member, stored)
                    member.seq = stored.seq
            if member.seq >= room.delivered or not member.writer.open:
                break
            backlog = await self._history.after(room.stored_subject, member.seq)
            if not backlog:  # what the room delivered is no longer stored (aged out): nothing to add
                member.seq = room.delivered
        if member.writer.open and room.members.get(member.id) is member:
            room.go_live(member)

    async def _write_backlog(self, member: Membership, stored: Stored) -> None:
        """One stored message to one member, waiting (bounded) while it reads what it has."""
        member.send(_json_frame(stored.seq, stored.payload), force=True)
        writer = member.writer
        limit = self._settings.send_buffer_limit
        if writer.buffered <= limit:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.slow_consumer_close_deadline
        while writer.open and writer.buffered > limit // 2:
            if loop.time() > deadline:
                if member.hub is not None:
                    member.hub.close_slow(writer)
                return
            await asyncio.sleep(BACKLOG_POLL)


def _json_frame(seq: int, payload: bytes) -> bytes:
    return encode_frame(OP_TEXT, envelopes.with_seq(payload, seq))

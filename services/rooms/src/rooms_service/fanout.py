"""The rooms of one replica: membership, one NATS subscription per room, encode-once fan-out.

A room exists on a replica while it has local members. The first local member subscribes the replica
to the room's subject, the last one to leave unsubscribes it. Every event on the subject is decoded
once, turned into at most two frames (plain text, JSON envelope) and the same bytes are written to every
local member with its ``FrameWriter``. A member whose unread backlog passes the limit is cut off with
1008 "slow consumer": no per-member queue, no per-member task, nothing that grows.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from fastapi import WebSocket
from realtime.bus import Bus, Subscription
from realtime.close_codes import CloseCode
from realtime.frames import OP_TEXT, encode_frame, text_frame
from realtime.serve import FrameWriter

from rooms_service import envelopes
from rooms_service.presence import Presence
from rooms_service.room_ids import room_subject
from rooms_service.settings import RoomsSettings

logger = logging.getLogger(__name__)

JOIN_CONFIRM_TIMEOUT = 2.0  # seconds a join waits for its own announcement to come back over the bus

Deliver = Callable[["Room", bytes], Awaitable[None]]


@dataclass(eq=False, slots=True)
class Member:
    id: str
    websocket: WebSocket
    writer: FrameWriter | None  # None under TestClient: the slow path (await send_text) is used
    json: bool  # ?format=json: envelopes and presence events; else plain text messages only


@dataclass(eq=False)
class Room:
    id: str
    subject: str
    presence: Presence
    members: dict[str, Member] = field(default_factory=dict)
    clock: int = 0  # the room's Lamport clock (see envelopes.py)
    last_total: int = 0
    joining: dict[str, "asyncio.Future[None]"] = field(default_factory=dict)  # member -> join echo
    _subscription: AbstractAsyncContextManager[Subscription] | None = None
    _task: asyncio.Task[None] | None = None

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def saw(self, seq: int) -> None:
        if seq > self.clock:
            self.clock = seq

    @property
    def total(self) -> int:
        return self.presence.total(len(self.members))

    async def open(self, bus: Bus, deliver: Deliver, queue_limit: int) -> None:
        self._subscription = bus.subscribe(self.subject, max_pending=queue_limit)
        subscription = await self._subscription.__aenter__()
        self._task = asyncio.create_task(self._listen(subscription, deliver), name=f"room {self.id}")

    async def _listen(self, subscription: Subscription, deliver: Deliver) -> None:
        async for message in subscription:
            try:
                await deliver(self, message.payload)
            except Exception:  # one bad event must not end the room's delivery
                logger.exception("room %s: delivering an event failed", self.id)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._subscription is not None:
            await self._subscription.__aexit__(None, None, None)
            self._subscription = None


class Rooms:
    """Every room with local members on this replica; ``origin`` names the replica on the subject."""

    def __init__(self, bus: Bus, settings: RoomsSettings) -> None:
        self._bus = bus
        self._settings = settings
        self.origin = settings.instance_id
        self._rooms: dict[str, Room] = {}
        self._lock = asyncio.Lock()  # joins and leaves; the message path never takes it
        self.cut_off = 0  # slow consumers cut off since start

    def stats(self) -> dict[str, int]:
        return {
            "rooms": len(self._rooms),
            "subscriptions": sum(1 for r in self._rooms.values() if r._subscription is not None),
            "members": sum(len(r.members) for r in self._rooms.values()),
            "slow_consumers_cut_off": self.cut_off,
        }

    # --- membership ---------------------------------------------------------------------------
    async def join(self, room_id: str, member: Member) -> Room:
        """Subscribe on the first local member, announce the join, and wait (bounded) until the
        announcement comes back over the bus: from then on this replica's subscription is live at the
        server, so everything published after the client's handshake completes reaches it."""
        async with self._lock:
            room = self._rooms.get(room_id)
            if room is None:
                expiry = 3 * self._settings.presence_interval
                room = Room(room_id, room_subject(self._settings.subject_prefix, room_id), Presence(expiry))
                await room.open(self._bus, self._deliver, self._settings.room_queue_limit)
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
        return room

    async def greet(self, room: Room, member: Member) -> None:
        """After the handshake: a JSON member learns its id, the room's count and the current seq."""
        if member.json:
            await self._send_one(member, envelopes.welcome(room.id, member.id, room.total, room.clock))

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
        room.members.pop(member.id, None)
        if not room.members and self._rooms.get(room.id) is room:
            del self._rooms[room.id]
            await room.close()

    async def _publish_membership(self, room: Room, kind: str, member: Member) -> None:
        local = len(room.members) - (1 if kind == envelopes.LEAVE else 0)
        payload = envelopes.membership(kind, room.id, member.id, room.tick(), self.origin, local)
        await self._bus.publish(room.subject, payload)

    # --- messages -----------------------------------------------------------------------------
    async def say(self, room: Room, member: Member, text: str) -> None:
        payload = envelopes.message(room.id, member.id, text, room.tick(), self.origin)
        await self._bus.publish(room.subject, payload)

    async def heartbeat(self) -> None:
        """Forever: forget silent replicas and announce this replica's count of every room."""
        while True:
            await asyncio.sleep(self._settings.presence_interval)
            for room in list(self._rooms.values()):
                room.presence.prune()
                payload = envelopes.count(room.id, room.tick(), self.origin, len(room.members))
                with contextlib.suppress(Exception):  # not connected: the next beat tries again
                    await self._bus.publish(room.subject, payload)

    async def close(self) -> None:
        async with self._lock:
            rooms, self._rooms = list(self._rooms.values()), {}
        for room in rooms:
            await room.close()

    # --- delivery: called once per event per replica ------------------------------------------
    async def _deliver(self, room: Room, payload: bytes) -> None:
        try:
            event = envelopes.decode(payload)
        except ValueError:
            logger.warning("room %s: ignored a malformed event", room.id)
            return
        room.saw(event["seq"])
        kind = event["type"]
        if kind == envelopes.MESSAGE:
            text = event.get("text")
            if isinstance(text, str):
                await self._fan_out(room, text, payload)
            return
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
                answer = envelopes.count(room.id, room.tick(), self.origin, len(room.members))
                with contextlib.suppress(Exception):
                    await self._bus.publish(room.subject, answer)
        total = room.total
        if kind in (envelopes.JOIN, envelopes.LEAVE):
            room.last_total = total
            await self._fan_out(room, None, envelopes.for_client(event, total).encode("utf-8"))
        elif total != room.last_total:
            room.last_total = total
            await self._fan_out(room, None, envelopes.members(room.id, total).encode("utf-8"))

    async def _fan_out(self, room: Room, text: str | None, envelope: bytes) -> None:
        """Encode once, write the same bytes to every local member; cut off whoever is too far behind."""
        plain = text_frame(text) if text is not None else None
        wrapped = encode_frame(OP_TEXT, envelope)
        limit = self._settings.send_buffer_limit
        slow_path: list[Member] = []
        for member in room.members.values():
            frame = wrapped if member.json else plain
            if frame is None:
                continue
            writer = member.writer
            if writer is None:
                slow_path.append(member)
            elif writer.write(frame) and writer.buffered > limit:
                self._cut_off(room, member, writer)
        for member in slow_path:
            data = envelope.decode("utf-8") if member.json else text
            with contextlib.suppress(Exception):  # the member left meanwhile
                await member.websocket.send_text(data)  # type: ignore[arg-type]

    async def _send_one(self, member: Member, data: str) -> None:
        if member.writer is not None:
            member.writer.write(text_frame(data))
        else:
            await member.websocket.send_text(data)

    def _cut_off(self, room: Room, member: Member, writer: FrameWriter) -> None:
        self.cut_off += 1
        unread = writer.buffered
        logger.info("room %s: member %s cut off: slow consumer, %d bytes unread", room.id, member.id, unread)
        writer.close(CloseCode.POLICY_VIOLATION, "slow consumer")

"""The rooms engine of one replica: a thin coordinator over its three parts.

- ``history.py`` (``History``): the stream that stores every room's messages, its epoch, storing with
  retry, and every read (gap fills, catch-up, the publish API's history);
- ``presence.py`` (``Roster``, with ``census.py``): who is in each room across replicas, joins and
  leaves announced and heard, the heartbeat;
- ``delivery.py`` (``Delivery``): each open room's listener, gap fills, a joining member's catch-up and
  the hubs that write encoded frames to members.

The engine knows memberships (``membership.py``), not sockets: a membership is one member of one room,
and every frame it gets goes through its room's hub. ``docs/explanation/rooms-engine.md`` follows one
message through the parts.
"""

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

from realtime.bus import Bus, StoreAck, Stored
from realtime.close_codes import CloseCode
from realtime.frames import text_frame

from rooms_service import envelopes
from rooms_service.delivery import Delivery, Room
from rooms_service.events import Recorder
from rooms_service.history import History, HistoryUnavailable
from rooms_service.membership import Membership, Resume
from rooms_service.presence import Roster
from rooms_service.room_ids import room_subject
from rooms_service.settings import RoomsSettings

logger = logging.getLogger(__name__)

NOTHING_TO_RESUME = Resume()
API_SENDER = "api"  # the sender of messages stored through the publish API (member ids are 12 hex digits)


class NotAdmitted(RuntimeError):
    """A membership could not join (no history yet, NATS away): nothing was joined, nothing to undo."""


class Rooms:
    """Every room with local members on this replica. The API the routes build on:

    - ``await join(membership, resume, accept=None)``: admit the membership (its room opened here if it
      was not, the replica's subscription confirmed live at the server once, the join announced (on
      its own in a small room, in the next presence diff in a big one), the other replicas' counts
      known when it opened the room), then ``await accept()`` if given (``/ws/{room}`` completes its
      handshake here: the client hears the room from that moment), then the welcome (JSON members),
      the catch-up asked for by ``resume``, and the live stream. Raises ``NotAdmitted`` when it could
      not be admitted; any later error is raised as is, with the membership still joined (``leave``).
    - ``await leave(membership)``: announce the leave; the room's last local member closes it here.
      Safe to call for a membership that is not (or no longer) joined.
    - ``await send(membership, text, msg_id=None) -> StoreAck``: store one member's message (it reaches
      every member, this one included, through the stream), then ack it (``msg_id`` given) with its seq.
    - ``await publish(room_id, text, msg_id=None, name=None) -> StoreAck``: store a message from the
      publish API in a room, open on this replica or not.
    - ``await history(room_id, after, limit) -> (newest seq, [Stored])``: the publish API's read.

    Background work, run by the app's lifespan: ``keep_history()``, ``heartbeat()``, ``census.run()``;
    then ``close()``. ``origin`` names the replica on the bus.
    """

    def __init__(self, bus: Bus, settings: RoomsSettings) -> None:
        self.origin = settings.instance_id
        self._rooms: dict[str, Room] = {}
        # One lock per room for its joins and leaves (a room's opening round trips hold up only its own
        # joins, never another room's); the message path never takes it. Room id -> (lock, users).
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._prefix = settings.subject_prefix
        self._history = History(bus, settings)
        self._presence = Roster(bus, settings, local_count=self._local_count, tell=self._tell)
        self._delivery = Delivery(bus, settings, self._history, self._presence.heard)
        self.census = self._presence.census
        self.events = Recorder(bus, settings, self.census.peers)  # events.py: the app's room events

    # --- what the routes and probes read ------------------------------------------------------
    @property
    def epoch(self) -> str | None:
        return self._history.epoch

    @property
    def history_ready(self) -> bool:
        return self._history.ready

    @property
    def cut_off(self) -> int:
        hubs = [h for r in self._rooms.values() for h in (r.json_hub, r.text_hub)]
        return self._delivery.cut_off_closed + sum(h.cut_off for h in hubs)

    def stats(self) -> dict[str, int]:
        return {
            "rooms": len(self._rooms),
            "subscriptions": sum(1 for r in self._rooms.values() if r.subscription is not None),
            "members": sum(len(r.members) for r in self._rooms.values()),
            "slow_consumers_cut_off": self.cut_off,
        }

    # --- what the server API reads (server_api.py, control.py) -----------------------------------
    def local_counts(self) -> dict[str, int]:
        """Each room with members on this replica, and how many."""
        return {room_id: len(room.members) for room_id, room in self._rooms.items() if room.members}

    def local_members(self, room_id: str | None = None) -> list[Membership]:
        """This replica's memberships (of one room, or of all)."""
        if room_id is None:
            rooms = list(self._rooms.values())
        else:
            room = self._rooms.get(room_id)
            rooms = [room] if room is not None else []
        return [m for room in rooms for m in room.members.values()]

    async def forget_history(self, room_id: str) -> None:
        """Remove a room's stored messages (members resuming from before get ``recovered: false``)."""
        await self._history.purge(room_id)

    # --- joining and leaving ------------------------------------------------------------------
    async def join(
        self,
        member: Membership,
        resume: Resume = NOTHING_TO_RESUME,
        accept: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        try:
            room, opened = await self._admit(member)
        except Exception as exc:
            raise NotAdmitted(type(exc).__name__) from exc
        self.events.joined(member)
        await self._presence.confirmed(member)
        if opened:
            await self.census.query(room.id)
        if accept is not None:
            await accept()
        await self._welcome(room, member, resume)

    @contextlib.asynccontextmanager
    async def _locked(self, room_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(room_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[room_id]

    async def _admit(self, member: Membership) -> tuple[Room, bool]:
        if self._history.epoch is None:
            raise HistoryUnavailable("the room history is not available yet")
        async with self._locked(member.room_id):
            room = self._rooms.get(member.room_id)
            opened = room is None
            if room is None:
                room = await self._open(member.room_id)
            room.add(member)
            try:
                await self._presence.announce_join(member)
            except Exception:
                await self._drop(room, member)
                raise
        return room, opened

    async def _open(self, room_id: str) -> Room:
        self._presence.open(room_id, room_subject(self._prefix, room_id))
        try:
            room = await self._delivery.open(room_id)
        except BaseException:
            self._presence.close(room_id)
            raise
        self._rooms[room_id] = room
        return room

    async def _welcome(self, room: Room, member: Membership, resume: Resume) -> None:
        """A JSON member gets its welcome (id, count, the room's seq and epoch, and whether its ``since``
        could be honoured), then what it missed or asked for, then the live stream. A plain member just
        goes live."""
        if not member.json:
            member.seq = room.delivered
            room.go_live(member)
            return
        recovered, backlog = await self._history.backlog(room.stored_subject, resume)
        seq = room.delivered
        total, epoch = self._presence.total(room.id), self._history.epoch or ""
        who = (member.user, member.name)
        welcome = envelopes.welcome(room.id, member.id, total, seq, epoch, recovered, *who, ref=member.ref)
        member.send(text_frame(welcome))
        if recovered:
            member.seq = resume.since or 0
        elif backlog:
            member.seq = backlog[0].seq - 1
        else:
            member.seq = seq
        await self._delivery.catch_up(room, member, backlog)

    async def leave(self, member: Membership) -> None:
        async with self._locked(member.room_id):
            room = self._rooms.get(member.room_id)
            if room is None or room.members.get(member.id) is not member:
                return
            room.remove(member)  # out of its hub first: a member does not hear its own leave
            await self._presence.announce_leave(member)
            self.events.left(member)
            await self._close_if_empty(room)

    async def _drop(self, room: Room, member: Membership) -> None:
        room.remove(member)
        await self._close_if_empty(room)

    async def _close_if_empty(self, room: Room) -> None:
        if not room.members and self._rooms.get(room.id) is room:
            del self._rooms[room.id]
            self._presence.close(room.id)
            await self._delivery.close(room)

    # --- messages -----------------------------------------------------------------------------
    async def send(self, member: Membership, text: str, msg_id: str | None = None) -> StoreAck:
        stored = await self.say(member, text, msg_id)
        if msg_id is not None:
            room = member.room_id if member.multiplexed else None
            member.send(text_frame(envelopes.ack(msg_id, stored.seq, room)))
        return stored

    async def say(self, member: Membership, text: str, msg_id: str | None = None) -> StoreAck:
        """``send`` without the ack: store one member's message with the dedup key ``<room>/<id>`` (or
        ``<room>/<member>/<n>`` for one sent without an id)."""
        member.sent += 1
        room_id = member.room_id
        key = f"{room_id}/{msg_id}" if msg_id is not None else f"{room_id}/{member.id}/{member.sent}"
        payload = envelopes.message(
            room_id, member.id, text, self.origin, msg_id, user=member.user, name=member.name
        )
        room = self._rooms.get(room_id)
        subject = room.stored_subject if room is not None else self._history.subject(room_id)
        stored = await self._history.store(subject, payload, key)
        # Also for a duplicate: the first try may have been stored with its ack lost (a hung NATS node),
        # so its event never recorded. The event's id is the stored seq's: the events stream keeps it once.
        who = (member.user, member.name)
        self.events.message(room_id, self.epoch or "", stored.seq, text, member.id, msg_id, *who)
        return stored

    async def publish(
        self, room_id: str, text: str, msg_id: str | None = None, *, name: str | None = None
    ) -> StoreAck:
        """Store one message from the publish API (sender ``"api"``) in a room this replica need not
        have open; stored exactly like a member's, with the key ``<room>/api/<id>`` (or a random one)."""
        key = f"{room_id}/api/{msg_id}" if msg_id is not None else f"{room_id}/api/~{secrets.token_hex(12)}"
        payload = envelopes.message(room_id, API_SENDER, text, self.origin, msg_id, name=name)
        stored = await self._history.store(self._history.subject(room_id), payload, key)
        self.events.message(room_id, self.epoch or "", stored.seq, text, API_SENDER, msg_id, None, name)
        return stored

    async def history(self, room_id: str, after: int, limit: int) -> tuple[int, list[Stored]]:
        return await self._history.read(room_id, after, limit)

    # --- background work ----------------------------------------------------------------------
    async def keep_history(self) -> None:
        """Forever: the stream kept (see ``History.keep``); after each (re)connect, rooms check it."""
        await self._history.keep(lost=self._history_lost, kept=self._check_all)

    async def heartbeat(self) -> None:
        """Forever: presence beats (see ``Roster.heartbeat``); at each, rooms check the history."""
        await self._presence.heartbeat(self._check_all)

    async def _history_lost(self) -> None:
        rooms = list(self._rooms.values())
        for room in rooms:
            room.delivered = 0
            for member in list(room.members.values()):
                member.writer.close(CloseCode.SERVICE_RESTART, "history reset", abort_after=5.0)

    def _check_all(self) -> None:
        for room in list(self._rooms.values()):
            self._delivery.check(room)

    def _local_count(self, room_id: str) -> int:
        room = self._rooms.get(room_id)
        return len(room.members) if room is not None else 0

    def _tell(self, room_id: str, frame: bytes) -> None:
        room = self._rooms.get(room_id)
        if room is not None:
            room.json_hub.broadcast(frame)

    async def close(self) -> None:
        rooms, self._rooms = list(self._rooms.values()), {}
        for room in rooms:
            self._presence.close(room.id)
            await self._delivery.close(room)

"""Who is in a room across replicas: soft state built from the replicas' own announcements.

Every replica announces its local member count of a room with each join and leave and repeats its
counts every presence interval (the heartbeat); a replica not heard from for 1.5 intervals (it crashed)
stops counting, so a dead replica's members are gone from the totals within 2 intervals. The ``Roster``
does this for every room open on this replica: it announces, hears the others' announcements (the
room's listener hands them over, ``delivery.py``) and tells the room's JSON members the new totals.

A count must also be right at join, when a replica opens a room it had no member in: the ``Census``
(``census.py``) asks every live replica for its count of that room.
"""

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from realtime.bus import Bus
from realtime.frames import text_frame

from rooms_service import envelopes
from rooms_service.census import EXPIRY_INTERVALS, Census
from rooms_service.membership import Membership
from rooms_service.settings import RoomsSettings

logger = logging.getLogger(__name__)

JOIN_CONFIRM_TIMEOUT = 2.0  # seconds a join waits for its own announcement to come back over the bus
PRUNES_PER_BEAT = 4  # presence is pruned this many times per interval: a dead replica goes in time


class Presence:
    __slots__ = ("_clock", "_expiry", "_remote")

    def __init__(self, expiry: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._expiry = expiry
        self._clock = clock
        self._remote: dict[str, tuple[int, float]] = {}  # other replica -> (its local count, heard at)

    def knows(self, origin: str) -> bool:
        return origin in self._remote

    def heard(self, origin: str, local_count: int) -> None:
        if local_count > 0:
            self._remote[origin] = (local_count, self._clock())
        else:
            self._remote.pop(origin, None)

    def prune(self) -> bool:
        """Forget replicas not heard from in time; True if any was forgotten."""
        cutoff = self._clock() - self._expiry
        stale = [origin for origin, (_, at) in self._remote.items() if at < cutoff]
        for origin in stale:
            del self._remote[origin]
        return bool(stale)

    def total(self, local_count: int) -> int:
        return local_count + sum(count for count, _ in self._remote.values())


@dataclass(eq=False)
class _Room:
    subject: str  # the room's core NATS subject: presence events travel with its stored messages
    presence: Presence
    last_total: int = 0  # the total its JSON members were last told
    joining: dict[str, "asyncio.Future[None]"] = field(default_factory=dict)  # member -> its join echo


class Roster:
    """Presence for every room open on this replica: this replica's announcements (join, leave, its
    count at every beat), what it hears from the others, the totals its JSON members are told (through
    ``tell(room_id, frame)``, the room's JSON hub), and the ``census`` for rooms it opens."""

    def __init__(
        self,
        bus: Bus,
        settings: RoomsSettings,
        *,
        local_count: Callable[[str], int],
        tell: Callable[[str, bytes], None],
    ) -> None:
        self._bus = bus
        self.origin = settings.instance_id
        self._interval = settings.presence_interval
        self._local_count = local_count
        self._tell = tell
        self._rooms: dict[str, _Room] = {}
        self.census = Census(
            bus,
            settings.subject_prefix,
            self.origin,
            interval=settings.presence_interval,
            timeout=settings.presence_query_timeout,
            local_count=local_count,
            heard=self._heard,
        )

    def open(self, room_id: str, subject: str) -> None:
        self._rooms[room_id] = _Room(subject, Presence(EXPIRY_INTERVALS * self._interval))

    def close(self, room_id: str) -> None:
        self._rooms.pop(room_id, None)

    def total(self, room_id: str) -> int:
        room = self._rooms.get(room_id)
        local = self._local_count(room_id)
        return room.presence.total(local) if room is not None else local

    def _heard(self, room_id: str, origin: str, local: int) -> None:
        room = self._rooms.get(room_id)
        if room is not None and origin != self.origin:
            room.presence.heard(origin, local)

    # --- joins and leaves -----------------------------------------------------------------------
    async def announce_join(self, member: Membership) -> "asyncio.Future[None]":
        """Announce ``member`` (already counted locally); the future completes when the announcement
        comes back over the bus (this replica's subscription to the room is live at the server)."""
        room = self._rooms[member.room_id]
        echo = room.joining[member.id] = asyncio.get_running_loop().create_future()
        try:
            await self._announce(room, envelopes.JOIN, member)
        except BaseException:
            room.joining.pop(member.id, None)
            raise
        return echo

    async def confirmed(self, member: Membership, echo: "asyncio.Future[None]") -> None:
        """Wait (bounded) for a join's echo; a bus that is reconnecting confirms it once it is back."""
        try:
            await asyncio.wait_for(echo, JOIN_CONFIRM_TIMEOUT)
        except TimeoutError:
            logger.info(
                "room %s: join not confirmed by the bus within %.1fs", member.room_id, JOIN_CONFIRM_TIMEOUT
            )
        finally:
            room = self._rooms.get(member.room_id)
            if room is not None:
                room.joining.pop(member.id, None)

    async def announce_leave(self, member: Membership) -> None:
        """Announce that ``member`` (still counted locally) leaves; a bus that is gone is only logged:
        the others' heartbeat expiry removes this replica's count in time."""
        room = self._rooms.get(member.room_id)
        if room is None:
            return
        try:
            await self._announce(room, envelopes.LEAVE, member)
        except Exception as exc:
            logger.info("room %s: could not announce a leave (%s)", member.room_id, type(exc).__name__)

    async def _announce(self, room: _Room, kind: str, member: Membership) -> None:
        local = self._local_count(member.room_id) - (1 if kind == envelopes.LEAVE else 0)
        payload = envelopes.membership(
            kind, member.room_id, member.id, self.origin, local, member.user, member.name
        )
        await self._bus.publish(room.subject, payload)

    # --- what this replica hears ----------------------------------------------------------------
    async def heard(self, room_id: str, payload: bytes) -> None:
        """A presence event on the room's subject (join, leave or count, from any replica)."""
        room = self._rooms.get(room_id)
        if room is None:
            return
        try:
            event = envelopes.decode(payload)
        except ValueError:
            logger.warning("room %s: ignored a malformed event", room_id)
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
            count = self._local_count(room_id)
            if kind == envelopes.JOIN and unknown and count:  # a replica new to the room: answer
                with contextlib.suppress(Exception):
                    await self._bus.publish(room.subject, envelopes.count(room_id, self.origin, count))
        total = self.total(room_id)
        if kind in (envelopes.JOIN, envelopes.LEAVE):
            room.last_total = total
            self._tell(room_id, text_frame(envelopes.for_client(event, total)))
        elif total != room.last_total:
            room.last_total = total
            self._tell(room_id, text_frame(envelopes.members(room_id, total)))

    # --- the heartbeat --------------------------------------------------------------------------
    async def heartbeat(self, beaten: Callable[[], None]) -> None:
        """Forever: forget silent replicas (telling members the new total), announce this replica and
        its count of every room, then ``beaten()`` (the rooms look in the store for what they missed)."""
        for beat in itertools.count():
            await asyncio.sleep(self._interval / PRUNES_PER_BEAT)
            for room_id, room in list(self._rooms.items()):
                if room.presence.prune():
                    total = self.total(room_id)
                    if total != room.last_total:
                        room.last_total = total
                        self._tell(room_id, text_frame(envelopes.members(room_id, total)))
            if beat % PRUNES_PER_BEAT:
                continue
            await self.census.beat()
            for room_id, room in list(self._rooms.items()):
                payload = envelopes.count(room_id, self.origin, self._local_count(room_id))
                with contextlib.suppress(Exception):  # not connected: the next beat tries again
                    await self._bus.publish(room.subject, payload)
            beaten()

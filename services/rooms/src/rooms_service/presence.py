"""Who is in a room across replicas: soft state built from the replicas' own announcements.

Every replica announces its local member count of a room with each join and leave and repeats its
counts every presence interval (the heartbeat); a replica not heard from for 1.5 intervals (it crashed)
stops counting, so a dead replica's members are gone from the totals within 2 intervals. The ``Roster``
does this for every room open on this replica: it announces, hears the others' announcements (the
room's listener hands them over, ``delivery.py``) and tells the room's JSON members the new totals.

A count must also be right at join, when a replica opens a room it had no member in: the ``Census``
(``census.py``) asks every live replica for its count of that room.

Two forms, chosen by the room's size (``docs/explanation/presence.md``): while a room has at most
``PRESENCE_EVENTS_MAX_MEMBERS`` members (across replicas), each join and leave is announced on the bus
and told to the members as it happens (``join``/``leave``). Above it, a replica gathers its joins and
leaves in a ``Diff`` (``presence_diff.py``) and announces them as one ``diff`` per
``PRESENCE_DIFF_INTERVAL``; what every replica hears is gathered the same way and told to its members as
one ``members`` event (the count, who joined, who left) per interval, only when something changed. So a
join costs the same in a room of 10 or of 10 000: no frame per member per join, no round trip per join
(a join waits for the bus only when its replica opens the room: its subscription confirmed live once).
"""

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable

from realtime.bus import Bus
from realtime.frames import text_frame

from rooms_service import envelopes
from rooms_service.census import EXPIRY_INTERVALS, Census
from rooms_service.membership import Membership
from rooms_service.presence_diff import Diff, entry
from rooms_service.room_presence import Presence, RoomPresence
from rooms_service.settings import RoomsSettings

logger = logging.getLogger(__name__)

JOIN_CONFIRM_TIMEOUT = 2.0  # seconds a join waits for its room's subscription to be confirmed live
PRUNES_PER_BEAT = 4  # presence is pruned this many times per interval: a dead replica goes in time


class Roster:
    """Presence for every room open on this replica: this replica's announcements (join, leave or a
    diff, its count at every beat), what it hears from the others, what its JSON members are told
    (through ``tell(room_id, frame)``, the room's JSON hub), and the ``census`` for rooms it opens."""

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
        self._most = settings.presence_events_max_members
        self._diff_interval = settings.presence_diff_interval
        self._cap = settings.presence_diff_max_listed
        self._local_count = local_count
        self._tell = tell
        self._rooms: dict[str, RoomPresence] = {}
        self._changed: set[str] = set()  # rooms with a diff to send or to tell
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
        live = asyncio.get_running_loop().create_future()
        expiry = EXPIRY_INTERVALS * self._interval
        self._rooms[room_id] = RoomPresence(subject, Presence(expiry), Diff(self._cap), Diff(self._cap), live)

    def close(self, room_id: str) -> None:
        room = self._rooms.pop(room_id, None)
        if room is not None and not room.live.done():
            room.live.cancel()

    def total(self, room_id: str) -> int:
        room = self._rooms.get(room_id)
        local = self._local_count(room_id)
        return room.presence.total(local) if room is not None else local

    def _heard(self, room_id: str, origin: str, local: int) -> None:
        room = self._rooms.get(room_id)
        if room is not None and origin != self.origin:
            room.presence.heard(origin, local)

    # --- joins and leaves -----------------------------------------------------------------------
    async def announce_join(self, member: Membership) -> None:
        """Announce ``member`` (already counted locally): on the bus now while the room is small (or
        its subscription not yet confirmed: the announcement confirms it), else in the next diff."""
        room = self._rooms[member.room_id]
        if room.live.done() and self.total(member.room_id) > self._most:
            self._gather(member.room_id, room, member, envelopes.JOIN)
            return
        await self._announce(member.room_id, room, envelopes.JOIN, member)

    async def confirmed(self, member: Membership) -> None:
        """Wait (bounded) until the room's subscription is confirmed live; a join into a room already
        confirmed does not wait. A bus that is reconnecting confirms it once it is back."""
        room = self._rooms.get(member.room_id)
        if room is None or room.live.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(room.live), JOIN_CONFIRM_TIMEOUT)
        except TimeoutError:
            logger.info(
                "room %s: join not confirmed by the bus within %.1fs", member.room_id, JOIN_CONFIRM_TIMEOUT
            )
        except asyncio.CancelledError:
            if not room.live.cancelled():  # the room closed meanwhile: nothing to wait for
                raise

    async def announce_leave(self, member: Membership) -> None:
        """Announce that ``member`` (no longer counted locally) left: on the bus now while the room is
        small (or it was this replica's last member there), else in the next diff. A bus that is gone
        is only logged: the others' heartbeat expiry removes this replica's count in time."""
        room = self._rooms.get(member.room_id)
        if room is None:
            return
        local = self._local_count(member.room_id)
        if room.live.done() and local > 0 and self.total(member.room_id) + 1 > self._most:
            self._gather(member.room_id, room, member, envelopes.LEAVE)
            return
        await self._announce(member.room_id, room, envelopes.LEAVE, member)

    def _gather(self, room_id: str, room: RoomPresence, member: Membership, kind: str) -> None:
        """A join or leave in a big room: into this replica's next diff and its members' next event."""
        shown = entry(member.id, member.user, member.name)
        for diff in (room.mine, room.told):
            (diff.join if kind == envelopes.JOIN else diff.leave)(shown)
        self._changed.add(room_id)

    async def _announce(self, room_id: str, room: RoomPresence, kind: str, member: Membership) -> None:
        if room.mine.changed:  # what this replica gathered goes first: the others hear it in order
            await self._send_diff(room_id, room)
        local = self._local_count(room_id)
        payload = envelopes.membership(kind, room_id, member.id, self.origin, local, member.user, member.name)
        try:
            await self._bus.publish(room.subject, payload)
        except Exception as exc:
            if kind == envelopes.JOIN:  # not joined after all: nobody is told
                raise
            logger.info("room %s: could not announce a leave (%s)", room_id, type(exc).__name__)
        # Its own members are told now, not when it comes back over the bus: a joining member is not
        # in its hub yet and a leaving one no longer is, so neither hears itself. A leave is told here
        # even when the bus is away.
        self._heard_one(room_id, room, envelopes.decode(payload))

    async def _send_diff(self, room_id: str, room: RoomPresence) -> None:
        lists = room.mine.lists()
        room.mine.clear()
        payload = envelopes.diff(room_id, self.origin, self._local_count(room_id), lists)
        try:
            await self._bus.publish(room.subject, payload)
        except Exception as exc:  # the count comes right with the next heartbeat; the lists are lost
            logger.info("room %s: could not announce a presence diff (%s)", room_id, type(exc).__name__)

    def _tell_diff(self, room_id: str, room: RoomPresence) -> None:
        """What was gathered for this replica's members, as one ``members`` event (if anything changed)."""
        if not room.told.changed:
            return
        lists = room.told.lists()
        room.told.clear()
        if lists == ([], []):  # only the count moved
            lists = None
        total = room.last_total = self.total(room_id)
        self._tell(room_id, text_frame(envelopes.members(room_id, total, lists)))

    def _count_changed(self, room_id: str, room: RoomPresence) -> None:
        """The total moved without a join or leave (a heartbeat, a replica gone): told now in a small
        room, with the next diff in a big one."""
        total = self.total(room_id)
        if total == room.last_total:
            return
        if total > self._most or room.told.changed:
            room.told.changed = True
            self._changed.add(room_id)
            return
        room.last_total = total
        self._tell(room_id, text_frame(envelopes.members(room_id, total)))

    # --- what this replica hears ----------------------------------------------------------------
    async def heard(self, room_id: str, payload: bytes) -> None:
        """A presence event on the room's subject (join, leave, diff or count, from any replica)."""
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
        if origin == self.origin:
            if not room.live.done():
                room.live.set_result(None)
            return  # its own members were told when it announced; its own count changes nothing
        else:
            unknown = not room.presence.knows(origin)
            local = event.get("local")
            room.presence.heard(origin, local if isinstance(local, int) else 0)
            count = self._local_count(room_id)
            if kind in (envelopes.JOIN, envelopes.DIFF) and unknown and count:  # a replica new to the room
                with contextlib.suppress(Exception):
                    await self._bus.publish(room.subject, envelopes.count(room_id, self.origin, count))
        if kind == envelopes.DIFF:
            room.told.merge(event.get("joined"), event.get("left"))
            self._changed.add(room_id)
        elif kind in (envelopes.JOIN, envelopes.LEAVE):
            self._heard_one(room_id, room, event)
        else:
            self._count_changed(room_id, room)

    def _heard_one(self, room_id: str, room: RoomPresence, event: dict) -> None:
        """One member's join or leave (the total already counts it): told as such while the room is
        small (before and after it), else gathered into the next ``members`` event."""
        joined = event["type"] == envelopes.JOIN
        total = self.total(room_id)
        if max(total, total + (-1 if joined else 1)) > self._most:
            shown = entry(str(event.get("member")), event.get("user"), event.get("name"))
            (room.told.join if joined else room.told.leave)(shown)
            self._changed.add(room_id)
            return
        self._tell_diff(room_id, room)  # what was gathered before this event goes first
        room.last_total = total
        self._tell(room_id, text_frame(envelopes.for_client(event, total)))

    # --- the heartbeat and the diffs -------------------------------------------------------------
    async def heartbeat(self, beaten: Callable[[], None]) -> None:
        """Forever: the presence beats (see ``_beats``) and, every ``PRESENCE_DIFF_INTERVAL``, the big
        rooms' diffs (see ``_diffs``)."""
        async with asyncio.TaskGroup() as jobs:
            jobs.create_task(self._beats(beaten), name="presence beats")
            jobs.create_task(self._diffs(), name="presence diffs")

    async def _diffs(self) -> None:
        """Forever: for each room where something changed, this replica's diff to the others, then one
        ``members`` event to its members. The work is per room that changed, never per member."""
        while True:
            await asyncio.sleep(self._diff_interval)
            changed, self._changed = self._changed, set()
            for room_id in changed:
                room = self._rooms.get(room_id)
                if room is None:
                    continue
                try:
                    if room.mine.changed:
                        await self._send_diff(room_id, room)
                    self._tell_diff(room_id, room)
                except Exception:  # one room's trouble stops neither the others nor the heartbeat
                    logger.exception("room %s: presence diff failed", room_id)

    async def _beats(self, beaten: Callable[[], None]) -> None:
        """Forever: forget silent replicas (telling members the new total), announce this replica and
        its count of every room, then ``beaten()`` (the rooms look in the store for what they missed)."""
        for beat in itertools.count():
            await asyncio.sleep(self._interval / PRUNES_PER_BEAT)
            for room_id, room in list(self._rooms.items()):
                if room.presence.prune():
                    self._count_changed(room_id, room)
            if beat % PRUNES_PER_BEAT:
                continue
            await self.census.beat()
            for room_id, room in list(self._rooms.items()):
                payload = envelopes.count(room_id, self.origin, self._local_count(room_id))
                with contextlib.suppress(Exception):  # not connected: the next beat tries again
                    await self._bus.publish(room.subject, payload)
            beaten()
